import GRPC
import KeelAPI
import Logging
import NIOPosix
import Storage

#if canImport(Glibc)
import Glibc
#endif

/// Keel's own version and the etcd versions it reports (/version, Maintenance.Status): the
/// etcd API it speaks is v3.5's (Protos/ are etcd v3.5's).
public enum KeelVersion {
    public static let keel = "0.1.0"
    public static let etcdAPI = "3.5"
    public static let etcdServer = "3.5.0"
    public static let etcdCluster = "3.5.0"
}

/// etcdserverpb.Maintenance.
public struct MaintenanceService: GRPCService {
    let core: KeelCore
    public init(core: KeelCore) { self.core = core }

    /// Snapshot stream chunk size (etcd sends 32 KiB blobs).
    static let chunkSize = 32 * 1024

    public var methods: [ServerMethod] {
        [
            .unary(Etcdserverpb.Maintenance.alarm) { req, _ in try await self.alarm(req) },
            .unary(Etcdserverpb.Maintenance.status) { _, _ in await self.status() },
            .unary(Etcdserverpb.Maintenance.defragment) { _, _ in try await self.defragment() },
            .unary(Etcdserverpb.Maintenance.hash) { _, _ in
                try await self.core.visibilityBarrier()
                return try self.hash()
            },
            .unary(Etcdserverpb.Maintenance.hashKV) { req, _ in
                try await self.core.visibilityBarrier()
                return try self.hashKV(req)
            },
            .serverStreaming(Etcdserverpb.Maintenance.snapshot) { _, writer, _ in
                try await self.snapshot { try await writer.send($0) }
            },
            .unary(Etcdserverpb.Maintenance.moveLeader) { req, _ in try await self.moveLeader(req) },
            .unary(Etcdserverpb.Maintenance.downgrade) { _, _ in
                // etcd 3.4 has no Downgrade RPC; 3.5's needs cluster version management Keel lacks.
                throw GRPCStatus(.unimplemented, "keel: downgrade is not supported")
            },
        ]
    }

    public func alarm(_ r: Etcdserverpb.AlarmRequest) async throws(GRPCStatus) -> Etcdserverpb.AlarmResponse {
        switch r.action {
        case .activate, .deactivate:
            let result = try await core.propose(.alarm(r))
            switch result {
            case .alarm(var resp):
                resp.header = core.header(revision: resp.header?.revision ?? core.currentRevision)
                return resp
            case .failed(let s): throw s
            default: throw GRPCStatus(.internal, "keel: unexpected apply result")
            }
        default:
            // GET (and unknown actions, as etcd's alarm store answers them): the raised alarms.
            var resp = Etcdserverpb.AlarmResponse()
            resp.alarms = await core.alarms()
            resp.header = core.header()
            return resp
        }
    }

    public func status() async -> Etcdserverpb.StatusResponse {
        var s = Etcdserverpb.StatusResponse()
        s.header = core.header()
        s.version = KeelVersion.etcdServer
        s.dbSize = core.store.dbSize
        s.dbSizeInUse = core.store.dbSizeInUse
        s.leader = core.shared.currentLeader
        s.raftIndex = core.shared.committed
        s.raftTerm = core.shared.currentTerm
        // Applied, committed to LMDB or still in the apply loop's group commit (etcd's applied index).
        s.raftAppliedIndex = max(core.shared.applied, core.shared.answeredIndex.load(ordering: .relaxed))
        s.errors = await core.alarms().map(Self.alarmText)
        s.isLearner = core.membership().member(core.shared.memberID)?.isLearner ?? false
        return s
    }

    /// etcd prints an alarm with gogoproto's compact text: "memberID:<id> alarm:NOSPACE ".
    static func alarmText(_ a: Etcdserverpb.AlarmMember) -> String {
        "memberID:\(a.memberID) alarm:\(a.alarm.protoName ?? String(a.alarm.rawValue)) "
    }

    public func defragment() async throws(GRPCStatus) -> Etcdserverpb.DefragmentResponse {
        // On the apply loop: no write transaction runs while the file is rewritten and switched.
        let store = core.store
        do {
            try await core.onApplyLoop { () throws in try store.defragment() }
        } catch let e as MVCCError {
            throw EtcdError.from(e)
        } catch {
            throw GRPCStatus(.internal, "\(error)")
        }
        var resp = Etcdserverpb.DefragmentResponse()
        resp.header = core.header()
        return resp
    }

    public func hash() throws(GRPCStatus) -> Etcdserverpb.HashResponse {
        do throws(MVCCError) {
            var resp = Etcdserverpb.HashResponse()
            let rev = core.store.revision
            resp.hash_ = try core.store.hash()
            resp.header = core.header(revision: rev)
            return resp
        } catch {
            throw EtcdError.from(error)
        }
    }

    public func hashKV(_ r: Etcdserverpb.HashKVRequest) throws(GRPCStatus) -> Etcdserverpb.HashKVResponse {
        do throws(MVCCError) {
            let h = try core.store.hashKV(revision: r.revision)
            var resp = Etcdserverpb.HashKVResponse()
            resp.hash_ = h.hash
            resp.compactRevision = h.compactRevision
            resp.header = core.header(revision: h.revision)
            return resp
        } catch {
            throw EtcdError.from(error)
        }
    }

    /// etcd: only the leader transfers, only to a voting member; it waits until the transferee
    /// leads (or fails with etcd's "leader transfer took too long"). Moving to itself is a no-op.
    public func moveLeader(_ r: Etcdserverpb.MoveLeaderRequest) async throws(GRPCStatus) -> Etcdserverpb.MoveLeaderResponse {
        let shared = core.shared
        if shared.currentLeader != shared.memberID { throw EtcdError.notLeader }
        guard let target = core.membership().member(r.targetID), !target.isLearner else { throw EtcdError.badLeaderTransferee }
        if r.targetID != shared.memberID {
            if let err = await core.transferLeadership(to: r.targetID) { throw err }
            // etcd waits up to the request timeout, polling every tick.
            let tick = max(1, core.config.heartbeatIntervalMs)
            let rounds = (5000 + 2 * core.config.electionTimeoutMs) / tick
            var moved = false
            for _ in 0..<rounds {
                if shared.currentLeader == r.targetID { moved = true; break }
                do { try await Task.sleep(for: .milliseconds(tick)) } catch { throw EtcdError.stopped }
            }
            if !moved { throw GRPCStatus(.unavailable, "etcdserver: request timed out, leader transfer took too long") }
        }
        var resp = Etcdserverpb.MoveLeaderResponse()
        resp.header = core.header()
        return resp
    }

    /// Streams a consistent copy of the backend as etcd does: chunks with remaining_bytes, then
    /// one last message whose blob is the SHA-256 of everything before it.
    public func snapshot(send: (Etcdserverpb.SnapshotResponse) async throws -> Void) async throws {
        let dir = core.config.resolvedDataDir + "/member/snap"
        var template = Array((dir + "/keel-snapshot-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw GRPCStatus(.internal, "snapshot: cannot create a temp file in \(dir)") }
        let path = String(cString: template)
        unlink(path)  // the open descriptor keeps it; nothing is left behind on any exit
        defer { close(fd) }
        // Everything applied so far is in the copy (etcd force-commits its backend first too).
        _ = try? await core.onApplyLoop {}
        let store = core.store
        // The copy is blocking I/O: run it on NIO's blocking thread pool, not a cooperative thread.
        do {
            try await NIOThreadPool.singleton.runIfActive { () throws in try store.writeSnapshot(to: fd) }
        } catch let e as MVCCError {
            throw EtcdError.from(e)
        }
        let size = Int(lseek(fd, 0, SEEK_END))
        guard size >= 0 else { throw GRPCStatus(.internal, "snapshot: lseek failed") }
        core.logger.info("sending database snapshot", metadata: ["bytes": "\(size)"])
        var sha = SHA256()
        var offset = 0
        var chunk = [UInt8](repeating: 0, count: Self.chunkSize)
        let header = core.header()
        while offset < size {
            let want = min(Self.chunkSize, size - offset)
            // Page-cache reads of a just-written file; each chunk waits for the client anyway.
            let n = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(offset)) }
            guard n > 0 else { throw GRPCStatus(.internal, "snapshot: read failed at \(offset)") }
            offset += n
            var resp = Etcdserverpb.SnapshotResponse()
            resp.header = header
            resp.remainingBytes = UInt64(size - offset)
            resp.blob = Array(chunk[0..<n])
            sha.update(resp.blob)
            try await send(resp)
        }
        var last = Etcdserverpb.SnapshotResponse()
        last.header = header
        last.remainingBytes = 0
        last.blob = sha.finalize()
        try await send(last)
        core.logger.info("sent database snapshot", metadata: ["bytes": "\(size)"])
    }
}

/// `keel --restore FILE`: a Maintenance.Snapshot stream saved to a file (e.g. by
/// `etcdctl snapshot save`): the backend copy followed by its SHA-256.
public enum SnapshotFile {
    /// Checks the trailing SHA-256 and returns the size of the backend part.
    public static func verify(path: String) throws(StartupError) -> Int {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw StartupError("cannot open snapshot \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let size = Int(lseek(fd, 0, SEEK_END))
        guard size > 32 else { throw StartupError("snapshot \(path) is too small (\(size) bytes)") }
        let body = size - 32
        var sha = SHA256()
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        var off = 0
        while off < body {
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, min(1 << 20, body - off), off_t(off)) }
            guard n > 0 else { throw StartupError("cannot read snapshot \(path)") }
            buf.withUnsafeBytes { sha.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            off += n
        }
        var trailer = [UInt8](repeating: 0, count: 32)
        _ = trailer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 32, off_t(body)) }
        guard sha.finalize() == trailer else {
            throw StartupError("snapshot \(path): sha256 mismatch (not a complete snapshot stream)")
        }
        return body
    }

    /// Restores `file` into a new data dir (refuses an existing one, as etcdctl snapshot restore).
    /// The restored backend keeps its keys, revisions and leases; Raft starts a fresh log, so the
    /// applied index is reset, and the member/cluster identity comes from this node's flags.
    static func restore(file: String, dataDir: String, logger: Logger) throws {
        var st = stat()
        if stat(dataDir, &st) == 0 { throw StartupError("data-dir \"\(dataDir)\" exists; --restore needs a new one") }
        let body = try verify(path: file)
        let memberDir = dataDir + "/member"
        for d in [dataDir, memberDir, memberDir + "/db"] {
            guard mkdir(d, 0o700) == 0 else { throw StartupError("cannot create \(d): \(String(cString: strerror(errno)))") }
        }
        // The backend part without the trailer, as a file for MVCCStore.restore.
        let tmp = memberDir + "/restore.tmp"
        let src = open(file, O_RDONLY)
        let dst = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard src >= 0, dst >= 0 else { throw StartupError("cannot copy snapshot \(file)") }
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        var off = 0
        while off < body {
            let n = buf.withUnsafeMutableBytes { pread(src, $0.baseAddress, min(1 << 20, body - off), off_t(off)) }
            guard n > 0, buf.withUnsafeBytes({ pwrite(dst, $0.baseAddress, n, off_t(off)) }) == n else {
                close(src); close(dst); throw StartupError("cannot copy snapshot \(file)")
            }
            off += n
        }
        close(src); fsync(dst); close(dst)
        defer { unlink(tmp) }
        do {
            try MVCCStore.restore(snapshotFile: tmp, into: memberDir + "/db")
            let store = try MVCCStore.open(directory: memberDir + "/db")
            defer { store.close() }
            let present = [MetaKey.identity, MetaKey.alarms, MetaKey.membership].filter { (try? store.meta($0)) != nil }
            try store.write { (t: inout MVCCWriteTxn) throws(MVCCError) in
                t.setAppliedIndex(0)
                for k in present { t.setMeta(k, nil) }
            }
            try store.sync()
            logger.info("restored snapshot", metadata: ["file": "\(file)", "revision": "\(store.revision)", "data-dir": "\(dataDir)"])
        } catch {
            throw StartupError("restore from \(file) failed: \(error.message)")
        }
    }
}
