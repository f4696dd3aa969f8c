#if canImport(Glibc)
import Glibc
#endif
import KeelAPI
@testable import Storage

/// MVCCStore.open, retried while the directory lock is held by a process this test binary just
/// spawned (a child of posix_spawn holds copies of our fds, LOCK included, until its exec closes
/// them: other suites spawn helpers in parallel). A real second owner still fails after 100 tries.
func openStore(_ dir: String, _ options: MVCCOptions = MVCCOptions(quotaBackendBytes: 2 << 30, mapSize: 256 << 20))
    throws(MVCCError) -> MVCCStore {
    var attempt = 0
    while true {
        do { return try MVCCStore.open(directory: dir, options: options) } catch {
            attempt += 1
            guard case .storage(let m) = error, m.contains("in use"), attempt < 100 else { throw error }
            usleep(10_000)
        }
    }
}

/// A store in a fresh temporary directory.
final class TestStore {
    let dir: TempDir
    var store: MVCCStore

    let options: MVCCOptions

    init(_ options: MVCCOptions = MVCCOptions(quotaBackendBytes: 2 << 30, mapSize: 256 << 20)) throws {
        dir = TempDir("keel-mvcc")
        self.options = options
        store = try openStore(dir.path, options)
    }

    func reopen(_ options: MVCCOptions? = nil) throws {
        store.close()
        store = try openStore(dir.path, options ?? self.options)
    }

    deinit {
        store.close()
        dir.cleanup()
    }

    @discardableResult
    func put(_ k: String, _ v: String, lease: Int64 = 0) throws -> Etcdserverpb.PutResponse {
        try store.write { (w) throws(MVCCError) in try w.put(putReq(k, v, lease: lease)) }
    }

    @discardableResult
    func del(_ k: String, _ end: String? = nil) throws -> Etcdserverpb.DeleteRangeResponse {
        var d = Etcdserverpb.DeleteRangeRequest()
        d.key = b(k)
        if let end { d.rangeEnd = b(end) }
        return try store.write { (w) throws(MVCCError) in try w.deleteRange(d) }
    }

    func get(_ k: String, _ end: String? = nil, rev: Int64 = 0, _ configure: (inout Etcdserverpb.RangeRequest) -> Void = { _ in })
        throws -> Etcdserverpb.RangeResponse {
        var r = Etcdserverpb.RangeRequest()
        r.key = b(k)
        if let end { r.rangeEnd = b(end) }
        r.revision = rev
        configure(&r)
        return try store.range(r)
    }

    func keys(_ r: Etcdserverpb.RangeResponse) -> [String] { r.kvs.map { s($0.key) } }
}

func b(_ s: String) -> [UInt8] { Array(s.utf8) }
func s(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }

func putReq(_ k: String, _ v: String, lease: Int64 = 0, prevKv: Bool = false) -> Etcdserverpb.PutRequest {
    var p = Etcdserverpb.PutRequest()
    p.key = b(k); p.value = b(v); p.lease = lease; p.prevKv = prevKv
    return p
}

func rangeReq(_ k: String, _ end: String? = nil) -> Etcdserverpb.RangeRequest {
    var r = Etcdserverpb.RangeRequest()
    r.key = b(k)
    if let end { r.rangeEnd = b(end) }
    return r
}

func delReq(_ k: String, _ end: String? = nil, prevKv: Bool = false) -> Etcdserverpb.DeleteRangeRequest {
    var d = Etcdserverpb.DeleteRangeRequest()
    d.key = b(k)
    if let end { d.rangeEnd = b(end) }
    d.prevKv = prevKv
    return d
}

/// Runs `body` expecting an MVCCError; returns it (nil if nothing was thrown).
func mvccError(_ body: () throws -> Void) -> MVCCError? {
    do { try body(); return nil } catch let e as MVCCError { return e } catch { return .storage("unexpected \(error)") }
}

/// Writes a snapshot of `store` into `dir` and restores it into `dir`/restored (returned).
func snapshotAndRestore(_ store: MVCCStore, in dir: TempDir) throws -> String {
    let file = dir.path + "/snap.mdb"
    let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    defer { close(fd) }
    try store.writeSnapshot(to: fd)
    let restored = dir.path + "/restored"
    try MVCCStore.restore(snapshotFile: file, into: restored)
    return restored
}
