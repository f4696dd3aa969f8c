#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// Snapshot files: `<index:16 hex>-<term:16 hex>.snap` in one directory.
//   magic "KSNP" | u32 version (1) | u64 index | u64 term | u32 conf state length | conf state
//   | u64 data length | data | u32 CRC32C of everything before it        (integers little endian)
// Written to `<name>.tmp`, fsynced, renamed, directory fsynced: a crash leaves either the old set
// or the new complete file, never a half file under a final name.

public struct SnapshotMetadata: Sendable, Hashable {
    public var index: UInt64
    public var term: UInt64
    /// Opaque bytes (the Raft layer's encoded ConfState).
    public var confState: [UInt8]
    public init(index: UInt64, term: UInt64, confState: [UInt8] = []) {
        self.index = index; self.term = term; self.confState = confState
    }
}

public struct StoredSnapshot: Sendable, Hashable {
    public var metadata: SnapshotMetadata
    public var data: [UInt8]
}

public enum SnapshotError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalid(file: String, reason: String)
    public var description: String {
        switch self { case let .invalid(file, reason): "snapshot \(file): \(reason)" }
    }
}

public struct Snapshotter: Sendable {
    public let directory: String
    static let magic: [UInt8] = Array("KSNP".utf8)

    public init(directory: String) throws {
        self.directory = directory
        try FileIO.mkdirs(directory)
    }

    static func name(_ m: SnapshotMetadata) -> String { WAL.hex16(m.index) + "-" + WAL.hex16(m.term) + ".snap" }

    /// Writes a snapshot durably (temp file, fsync, rename, directory fsync).
    public func save(_ metadata: SnapshotMetadata, data: [UInt8]) throws {
        var b: [UInt8] = []
        b.reserveCapacity(40 + metadata.confState.count + data.count)
        b += Self.magic
        withUnsafeBytes(of: UInt32(1).littleEndian) { b += $0 }
        withUnsafeBytes(of: metadata.index.littleEndian) { b += $0 }
        withUnsafeBytes(of: metadata.term.littleEndian) { b += $0 }
        withUnsafeBytes(of: UInt32(metadata.confState.count).littleEndian) { b += $0 }
        b += metadata.confState
        withUnsafeBytes(of: UInt64(data.count).littleEndian) { b += $0 }
        b += data
        let crc = CRC32C.checksum(b)
        withUnsafeBytes(of: crc.littleEndian) { b += $0 }
        let path = directory + "/" + Self.name(metadata)
        let tmp = path + ".tmp"
        let fd = try FileIO.open(tmp, O_WRONLY | O_CREAT | O_TRUNC)
        do {
            try b.withUnsafeBytes { try FileIO.pwriteAll(fd, $0, at: 0, path: tmp) }
            try FileIO.check(fsync(fd), "fsync", tmp)
            close(fd)
            try FileIO.check(rename(tmp, path), "rename", tmp)
            try FileIO.fsyncDir(directory)
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
    }

    /// Snapshot file names, newest (highest index) first.
    public func list() throws -> [String] {
        try FileIO.listDir(directory).filter { $0.hasSuffix(".snap") }.sorted(by: >)
    }

    public func read(file: String) throws -> StoredSnapshot {
        let path = directory + "/" + file
        let fd = try FileIO.open(path, O_RDONLY)
        defer { close(fd) }
        let b = try FileIO.readAll(fd, path: path)
        func bad(_ r: String) -> SnapshotError { .invalid(file: path, reason: r) }
        guard b.count >= 40, Array(b[0..<4]) == Self.magic else { throw bad("not a snapshot file") }
        let stored = b.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: b.count - 4, as: UInt32.self)) }
        guard CRC32C.checksum(Array(b[..<(b.count - 4)])) == stored else { throw bad("CRC32C mismatch") }
        return try b.withUnsafeBytes { raw throws(SnapshotError) in
            func u64(_ o: Int) -> UInt64 { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
            let version = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
            guard version == 1 else { throw bad("unsupported version \(version)") }
            let index = u64(8), term = u64(16)
            let csLen = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 24, as: UInt32.self)))
            guard 28 + csLen + 8 <= b.count - 4 else { throw bad("conf state length out of range") }
            let cs = Array(b[28..<(28 + csLen)])
            let dLen = u64(28 + csLen)
            let dStart = 36 + csLen
            guard dLen == UInt64(b.count - 4 - dStart) else { throw bad("data length mismatch") }
            return StoredSnapshot(metadata: SnapshotMetadata(index: index, term: term, confState: cs),
                                  data: Array(b[dStart..<(b.count - 4)]))
        }
    }

    /// The newest snapshot that validates, and the files that did not (reported, left in place).
    public func loadNewest() throws -> (snapshot: StoredSnapshot?, invalid: [SnapshotError]) {
        var invalid: [SnapshotError] = []
        for f in try list() {
            do { return (try read(file: f), invalid) } catch let e as SnapshotError { invalid.append(e) }
        }
        return (nil, invalid)
    }

    /// Deletes all but the `keep` newest snapshot files (and stray temp files), then syncs the directory.
    public func prune(keep: Int) throws {
        var removed = false
        for f in try FileIO.listDir(directory) where f.hasSuffix(".snap.tmp") {
            unlink(directory + "/" + f); removed = true
        }
        for f in try list().dropFirst(max(keep, 1)) {
            let p = directory + "/" + f
            if unlink(p) < 0 && errno != ENOENT { throw StorageIOError(operation: "unlink", path: p, errno: errno) }
            removed = true
        }
        if removed { try FileIO.fsyncDir(directory) }
    }
}
