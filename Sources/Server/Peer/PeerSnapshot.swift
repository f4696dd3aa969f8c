// Snapshot transfer over raftpb.Raft/SendSnapshot: the sender streams a file in chunks, the
// receiver rebuilds it in `snapshotDir` and checks it (see PeerTransport.swift).
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GRPC
import KeelAPI
import Logging
import NIOCore
import NIOPosix
import Raft
import Storage

/// A file error with the system's text.
struct PeerFileError: Error, Sendable, CustomStringConvertible {
    var description: String
    init(_ what: String, _ path: String, errno e: Int32 = errno) {
        description = "\(what) \(path): \(String(cString: strerror(e)))"
    }
}

/// Blocking file calls, run on NIO's thread pool (never on an event loop or the cooperative pool).
struct PeerFile: Sendable {
    let fd: Int32
    let path: String

    static func openForReading(_ path: String) async throws -> (PeerFile, Int) {
        try await NIOThreadPool.singleton.runIfActive {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw PeerFileError("cannot open", path) }
            var st = stat()
            guard fstat(fd, &st) == 0 else {
                let e = errno
                close(fd)
                throw PeerFileError("cannot stat", path, errno: e)
            }
            return (PeerFile(fd: fd, path: path), Int(st.st_size))
        }
    }

    static func create(_ path: String) async throws -> PeerFile {
        try await NIOThreadPool.singleton.runIfActive {
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw PeerFileError("cannot create", path) }
            return PeerFile(fd: fd, path: path)
        }
    }

    /// Exactly `count` bytes at `offset` (fewer only at the end of the file).
    func read(at offset: Int, count: Int) async throws -> [UInt8] {
        let fd = self.fd, path = self.path
        return try await NIOThreadPool.singleton.runIfActive {
            var out = [UInt8](repeating: 0, count: count)
            var done = 0
            while done < count {
                let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw PeerFileError("cannot read", path)
                }
                if n == 0 { break }
                done += n
            }
            if done < count { out.removeLast(count - done) }
            return out
        }
    }

    func write(_ bytes: [UInt8], at offset: Int) async throws {
        let fd = self.fd, path = self.path
        try await NIOThreadPool.singleton.runIfActive {
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, bytes.count - done, off_t(offset + done)) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw PeerFileError("cannot write", path)
                }
                done += n
            }
        }
    }

    func sync() async throws {
        let fd = self.fd, path = self.path
        try await NIOThreadPool.singleton.runIfActive {
            guard fsync(fd) == 0 else { throw PeerFileError("cannot fsync", path) }
        }
    }

    func closeFile() {
        _ = close(fd)
    }

    /// rename(2), then fsync of the directory so the new name is durable.
    static func rename(_ from: String, to: String, syncDirectory dir: String) async throws {
        try await NIOThreadPool.singleton.runIfActive {
            guard Glibc.rename(from, to) == 0 else { throw PeerFileError("cannot rename", from) }
            let d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if d >= 0 {
                _ = fsync(d)
                _ = close(d)
            }
        }
    }

    /// Removes `incoming-*.part` files a previous run left in `dir` (transfers cut by a crash).
    static func removeStaleParts(in dir: String) -> Int {
        guard let d = opendir(dir) else { return 0 }
        defer { closedir(d) }
        var removed = 0
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if name.hasPrefix("incoming-") && name.hasSuffix(".part") && unlink("\(dir)/\(name)") == 0 { removed += 1 }
        }
        return removed
    }

    static func remove(_ path: String) {
        _ = unlink(path)
    }
}

/// Sender side of one snapshot transfer.
struct SnapshotSender: Sendable {
    let transport: PeerTransport

    func run(_ message: Raft.Message, file: String, urls: [ServerURL]) async {
        let to = message.to
        let counters = transport.counters
        var failure: String? = "no valid peer URL"
        // The peer's URLs in turn while the connection itself fails (nothing was sent yet).
        for url in urls {
            var config = GRPCClient.Configuration(host: url.bindHost, port: url.port)
            config.http2 = transport.options.http2
            // A connection of its own: the snapshot's DATA frames never share a connection
            // window with the raft stream.
            let client = GRPCClient(configuration: config, group: transport.group)
            var connectFailed = false
            do {
                let ack = try await stream(message, file: file, client: client)
                failure = ack.ok ? nil : "peer refused the snapshot: \(ack.error)"
            } catch {
                failure = "\(error)"
                if let st = error as? GRPCStatus {
                    if st.code == .unavailable && st.message.hasPrefix("connect to ") { connectFailed = true }
                    if st.code == .failedPrecondition { transport.peerRefused(to, st.message) }
                }
            }
            await client.close()
            if !connectFailed || Task.isCancelled { break }
        }
        if let failure {
            counters.snapshotsFailed.add(1, ordering: .relaxed)
            transport.logger.warning("snapshot send failed", metadata: [
                "peer": "\(hex(to))", "index": "\(message.snapshot?.metadata.index ?? 0)", "error": "\(failure)"])
            transport.handlers.snapshotStatus(to, true)
            transport.reportUnreachable(to)
        } else {
            counters.snapshotsSent.add(1, ordering: .relaxed)
            transport.logger.info("snapshot sent", metadata: [
                "peer": "\(hex(to))", "index": "\(message.snapshot?.metadata.index ?? 0)"])
            transport.handlers.snapshotStatus(to, false)
        }
    }

    private func stream(_ message: Raft.Message, file: String, client: GRPCClient) async throws -> Raftpb.SnapshotAck {
        let (f, size) = try await PeerFile.openForReading(file)
        defer { f.closeFile() }
        var head = message
        if var s = head.snapshot {
            s.data = []
            head.snapshot = s
        }
        let chunkSize = max(transport.options.snapshotChunkSize, 1)
        let counters = transport.counters
        let from = transport.localID
        return try await client.clientStreaming(Raftpb.Raft.sendSnapshot,
                                                options: CallOptions(metadata: transport.identity)) { writer in
            var offset = 0
            var crc: UInt32 = 0
            repeat {
                let n = min(chunkSize, size - offset)
                let data = try await f.read(at: offset, count: n)
                guard data.count == n else {
                    throw GRPCStatus(.dataLoss, "snapshot file \(file) shrank while being sent")
                }
                var chunk = Raftpb.SnapshotChunk()
                chunk.from = from
                chunk.to = head.to
                chunk.offset = UInt64(offset)
                if offset == 0 {
                    chunk.message = PeerWire.encode(head)
                    chunk.metadata = head.snapshot.map { PeerWire.encode($0.metadata) }
                    chunk.size = UInt64(size)
                }
                crc = CRC32C.checksum(data, continuing: crc)
                chunk.data = data
                offset += n
                if offset == size {
                    chunk.last = true
                    chunk.crc32c = crc
                }
                try await writer.send(chunk)  // waits under HTTP/2 back-pressure
                counters.snapshotBytesSent.add(n, ordering: .relaxed)
            } while offset < size
        }
    }
}

extension PeerTransport {
    /// Receiver side of raftpb.Raft/SendSnapshot.
    func receiveSnapshot(_ chunks: RequestStream<Raftpb.SnapshotChunk>, _ ctx: ServerContext) async throws -> Raftpb.SnapshotAck {
        try checkCluster(ctx)
        var it = chunks.makeAsyncIterator()
        guard let first = try await it.next() else {
            throw refuse(GRPCStatus(.invalidArgument, "keel: empty snapshot stream"))
        }
        guard first.offset == 0, let head = first.message else {
            throw refuse(GRPCStatus(.invalidArgument, "keel: the first snapshot chunk has no snapshot message"))
        }
        let message: Raft.Message
        do {
            message = try PeerWire.decode(head)
        } catch {
            throw refuse(GRPCStatus(.invalidArgument, "keel: snapshot message: \(error)"))
        }
        guard message.type == .snapshot, let snap = message.snapshot else {
            throw refuse(GRPCStatus(.invalidArgument, "keel: snapshot stream carries a \(message.type) message"))
        }
        guard message.to == localID else {
            throw refuse(GRPCStatus(.invalidArgument,
                                    "keel: snapshot for member \(hex(message.to)) sent to member \(hex(localID))"))
        }
        let size = first.size
        _ = mkdir(snapshotDir, 0o700)
        // Written as `.part`, renamed to `.snap` once complete and synced: a member that dies
        // mid-transfer leaves only a `.part`, which the next transport start removes.
        let path = "\(snapshotDir)/incoming-\(hex(message.from))-\(snap.metadata.term)-\(snap.metadata.index)-"
            + "\(hex(UInt64.random(in: 1...UInt64.max))).snap"
        let part = path + ".part"
        let file: PeerFile
        do {
            file = try await PeerFile.create(part)
        } catch {
            throw refuse(GRPCStatus(.internal, "keel: \(error)"))
        }
        var written: UInt64 = 0
        do {
            var crc: UInt32 = 0
            var chunk = first
            while true {
                guard chunk.offset == written else {
                    throw GRPCStatus(.invalidArgument,
                                     "keel: snapshot chunk at offset \(chunk.offset), expected offset \(written)")
                }
                guard written + UInt64(chunk.data.count) <= size else {
                    throw GRPCStatus(.invalidArgument, "keel: snapshot data beyond its announced size \(size)")
                }
                if !chunk.data.isEmpty {
                    try await file.write(chunk.data, at: Int(written))
                    crc = CRC32C.checksum(chunk.data, continuing: crc)
                    written += UInt64(chunk.data.count)
                }
                if chunk.last {
                    guard written == size else {
                        throw GRPCStatus(.invalidArgument, "keel: snapshot ended at \(written) of \(size) bytes")
                    }
                    guard crc == chunk.crc32c else {
                        throw GRPCStatus(.dataLoss, "keel: snapshot CRC-32C mismatch")
                    }
                    break
                }
                guard let next = try await it.next() else {
                    throw GRPCStatus(.invalidArgument, "keel: snapshot stream ended before its last chunk")
                }
                chunk = next
            }
            try await file.sync()
            file.closeFile()
            try await PeerFile.rename(part, to: path, syncDirectory: snapshotDir)
        } catch {
            file.closeFile()
            PeerFile.remove(part)
            let st = (error as? GRPCStatus) ?? GRPCStatus(.internal, "keel: \(error)")
            logger.warning("incoming snapshot refused", metadata: ["peer": "\(hex(message.from))", "error": "\(st)"])
            throw refuse(st)
        }
        counters.snapshotsReceived.add(1, ordering: .relaxed)
        logger.info("snapshot received", metadata: ["peer": "\(hex(message.from))", "index": "\(snap.metadata.index)",
                                                   "bytes": "\(written)"])
        let ok = await handlers.receiveSnapshot(message, path)
        var ack = Raftpb.SnapshotAck()
        ack.ok = ok
        if !ok { ack.error = "snapshot not applied by member \(hex(localID))" }
        return ack
    }

    private func refuse(_ st: GRPCStatus) -> GRPCStatus {
        counters.snapshotsRefused.add(1, ordering: .relaxed)
        return st
    }
}
