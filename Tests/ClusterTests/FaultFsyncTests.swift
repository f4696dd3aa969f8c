// Disk fault: fsync errors on one member. An LD_PRELOAD shim (C, compiled here with the toolchain's
// clang or the system cc; skipped without one) makes fsync/fdatasync of that member's files whose path
// contains KEEL_FAILSYNC_MATCH fail with EIO while the file KEEL_FAILSYNC_TRIGGER exists. Keel's WAL
// and its LMDB backend call libc's fdatasync, so the shim sees them (etcd is a Go binary making raw
// system calls: no reference run here). The member must stop serving rather than diverge: a failed WAL
// fsync stops its Raft loop, a failed backend sync its apply loop (after a failed fsync the page
// cache's state is unknown, so nothing later may be trusted). The others go on; after the trigger is
// removed and the member restarts, it catches up exactly.
import Foundation
import GRPC
import KeelAPI
import KeelTestSupport
import Testing

@Suite("Fsync faults", .serialized,
       .enabled(if: ClusterServer.keel.isAvailable && FailSyncShim.library != nil,
                "needs keel, etcdctl 3.4 and a C compiler for the LD_PRELOAD shim"))
struct FaultFsyncTests {
    @Test("keel: failing WAL fsyncs stop a member, the others go on, it catches up after a restart",
          .timeLimit(.minutes(5)))
    func walFsyncFails() async throws {
        try await FsyncFailureRun(match: "/wal/", label: "fsync wal").run()
    }

    @Test("keel: failing backend syncs stop a member, the others go on, it catches up after a restart",
          .timeLimit(.minutes(5)))
    func backendSyncFails() async throws {
        try await FsyncFailureRun(match: ".mdb", label: "fsync backend").run()
    }

    @Test("keel: kill -9 while a commit's sync hangs: the restart drops that commit and the WAL replays it",
          .timeLimit(.minutes(3)))
    func killWhileACommitIsUnsynced() async throws {
        let lib = try #require(FailSyncShim.library)
        let dir = try makeTempDirectory(prefix: "keel-hangsync")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let trigger = dir + "/armed"
        // Only reads force a commit (no 100 ms group timer): a second commit would wait for the hanging
        // sync (at most one unsynced commit) and block the apply loop, so exactly one must happen.
        var options = LocalCluster.Options(extraArguments: ["--backend-batch-interval", "1h"])
        options.environments = [0: ["LD_PRELOAD": lib, "KEEL_FAILSYNC_MATCH": ".mdb", "KEEL_FAILSYNC_TRIGGER": trigger,
                                    "KEEL_FAILSYNC_HANG": "1"]]
        try await LocalCluster.with(.keel, members: 1, options: options) { c in
            let client = GRPCClient(host: "127.0.0.1", port: c.slots[0].clientPort)
            defer { Task { await client.close() } }
            let opts = CallOptions(timeout: .seconds(10))
            var revisions: [String: Int64] = [:]
            func put(_ k: String) async throws {
                var p = Etcdserverpb.PutRequest()
                p.key = Array(k.utf8); p.value = Array("v-\(k)".utf8)
                revisions[k] = try await client.unary(Etcdserverpb.KV.put, p, options: opts).header?.revision ?? 0
            }
            func serializableRead() async throws {   // makes the apply loop commit what it answered
                var r = Etcdserverpb.RangeRequest()
                r.key = Array("hang/".utf8); r.rangeEnd = Array("hang0".utf8); r.serializable = true
                _ = try await client.unary(Etcdserverpb.KV.range, r, options: opts)
            }
            func counter(_ name: String) throws -> Int {
                let body = try plainHTTPGet(port: c.slots[0].clientPort, path: "/metrics").body
                let line = body.split(separator: "\n").first { $0.hasPrefix(name + " ") }
                return Int(line?.split(separator: " ").last ?? "") ?? -1
            }
            for i in 0..<20 { try await put("hang/a\(i)") }
            try await serializableRead()
            // Every commit so far synced (bounded wait), then the next sync hangs.
            for _ in 0..<100 {
                if try counter("keel_disk_backend_sync_duration_seconds_count")
                    >= counter("etcd_disk_backend_commit_duration_seconds_count") { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(FileManager.default.createFile(atPath: trigger, contents: Data()))
            for i in 0..<20 { try await put("hang/b\(i)") }
            try await serializableRead()        // this commit's sync hangs
            for i in 0..<5 { try await put("hang/c\(i)") }   // applied and answered, never committed
            await c.kill(0)
            try FileManager.default.removeItem(atPath: trigger)
            try await c.restart(0)
            let log = await c.log(0)
            #expect(log.contains("the newest commit was not synced before the last stop"), "\(log.suffix(2000))")
            var r = Etcdserverpb.RangeRequest()
            r.key = Array("hang/".utf8); r.rangeEnd = Array("hang0".utf8)
            let got = try await client.unary(Etcdserverpb.KV.range, r, options: opts)
            var found: [String: Int64] = [:]
            for kv in got.kvs { found[String(decoding: kv.key, as: UTF8.self)] = kv.modRevision }
            #expect(found == revisions, "\(revisions.count) acknowledged, \(found.count) found")
            #expect(got.header?.revision == revisions.values.max())
        }
    }
}

struct FsyncFailureRun {
    let match: String
    let label: String
    let victim = 2

    func run() async throws {
        let lib = try #require(FailSyncShim.library)
        let dir = try makeTempDirectory(prefix: "keel-failsync")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let trigger = dir + "/armed"
        var options = LocalCluster.Options(heartbeatMillis: 100, electionMillis: 1000)
        options.environments = [victim: ["LD_PRELOAD": lib, "KEEL_FAILSYNC_MATCH": match, "KEEL_FAILSYNC_TRIGGER": trigger]]
        try await LocalCluster.with(.keel, members: 3, options: options) { c in
            let clients = c.slots.map { GRPCClient(host: "127.0.0.1", port: $0.clientPort) }
            defer { let cs = clients; Task { for x in cs { await x.close() } } }
            // Healthy first: writes through every member reach the victim too.
            let before = await writeUntilDown(c, clients: clients, victim: victim, limit: 50,
                                              key: { Array("fsync/k\($0 % 16)".utf8) }, value: { Array("before-\($0)".utf8) })
            #expect(!before.down && before.acked.count == 50, "the victim must serve before the fault")
            #expect(FileManager.default.createFile(atPath: trigger, contents: Data()))
            let during = await writeUntilDown(c, clients: clients, victim: victim, limit: 3000,
                                              key: { Array("fsync/k\($0 % 16)".utf8) }, value: { Array("during-\($0)".utf8) })
            print("[\(label)] \(during.writes) writes after arming, \(during.acked.count) acknowledged; \(await victimState(c, victim))")
            #expect(during.down, "m\(victim) still serves after \(during.writes) writes with failing fsyncs")
            let log = await c.log(victim)
            #expect(log.contains("WAL append failed") || log.contains("backend sync failed")
                    || log.contains("store write failed"), "no fsync failure in m\(victim)'s log")
            // The write numbers of the two phases overlap: tell them apart by revision order.
            let acked = before.acked.map { ($0, "before") } + during.acked.map { ($0, "during") }
            let values = Dictionary(acked.map { ($0.0.revision, Array("\($0.1)-\($0.0.value ?? 0)".utf8)) },
                                    uniquingKeysWith: { a, _ in a })
            try await othersGoOnThenCatchUp(c, clients: clients, victim: victim, acked: acked.map(\.0), label: label,
                                            expected: { values[$0.revision] ?? [] }) {
                try FileManager.default.removeItem(atPath: trigger)
            }
        }
    }
}

/// The LD_PRELOAD library, compiled once per test process into a temp dir (nil without a compiler).
enum FailSyncShim {
    static let source = """
        #define _GNU_SOURCE
        #include <dlfcn.h>
        #include <errno.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        #include <unistd.h>

        static int failing(int fd);

        /* KEEL_FAILSYNC_HANG=1: instead of failing, block until the trigger file is gone. */
        static int hang(int fd) {
            const char *h = getenv("KEEL_FAILSYNC_HANG");
            if (!h || strcmp(h, "1") != 0 || !failing(fd)) return 0;
            while (failing(fd)) usleep(10000);
            return 1;
        }

        static int failing(int fd) {
            const char *trigger = getenv("KEEL_FAILSYNC_TRIGGER"), *match = getenv("KEEL_FAILSYNC_MATCH");
            if (!trigger || !match || access(trigger, F_OK) != 0) return 0;
            char link[64], path[4096];
            snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
            ssize_t n = readlink(link, path, sizeof path - 1);
            if (n < 0) return 0;
            path[n] = 0;
            return strstr(path, match) != NULL;
        }

        static int faulty(int fd, int (*real)(int)) {
            if (!hang(fd) && failing(fd)) { errno = EIO; return -1; }
            return real(fd);
        }

        int fdatasync(int fd) {
            static int (*real)(int);
            if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
            return faulty(fd, real);
        }

        int fsync(int fd) {
            static int (*real)(int);
            if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
            return faulty(fd, real);
        }
        """

    static let library: String? = {
        guard let cc = ["clang", "cc", "gcc"].lazy.compactMap({ try? ChildProcess.resolveExecutable($0) }).first,
              let dir = try? makeTempDirectory(prefix: "keel-failsync-shim") else { return nil }
        let src = dir + "/failsync.c", lib = dir + "/libfailsync.so"
        guard FileManager.default.createFile(atPath: src, contents: Data(source.utf8)),
              let p = try? ChildProcess.spawn(cc, ["-shared", "-fPIC", "-O1", "-o", lib, src, "-ldl"]) else { return nil }
        // A synchronous wait (this is a static initializer), bounded.
        for _ in 0..<6000 where p.exitStatus == nil { usleep(10_000) }
        guard p.exitStatus == .exited(0) else { p.kill(); return nil }
        return lib
    }()

}
