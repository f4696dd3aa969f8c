#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// On-disk format
// --------------
// A WAL directory holds `LOCK` (flock) and segment files `<seq:16 hex>-<firstIndex:16 hex>.wal`,
// preallocated to `segmentSize` bytes (zeros past the written data). Records are 8-byte aligned:
//
//   0  u32 LE  payload length
//   4  u8      type (1 entry, 2 hard state, 3 snapshot marker)
//   5  u8      flags (bit 0: last record of its batch)
//   6  u16     zero
//   8  u32 LE  CRC32C of bytes 0..<8, bytes 12..<16 and the payload
//   12 u32 LE  batch number (one per append; wraps)
//   16 payload, then zeros up to the next multiple of 8
//
// entry payload: index u64 LE, term u64 LE, data. hard state: term, vote, commit (u64 LE each).
// snapshot marker: index u64 LE, term u64 LE.
// A header of 16 zero bytes marks the end of the written data in a preallocated segment.
//
// Recovery: records are read in segment order until the end of data. A bad record (impossible
// length, unknown type, CRC mismatch, or zeros where data should be) in the LAST segment is a torn
// tail if no valid record of a LATER batch follows it (pages of the one unsynced batch may reach
// disk in any order): the tail is zeroed from the bad record on, synced, and reported. Anything
// else (a bad record in an earlier segment, or a later batch after the bad spot) is
// `WALError.corrupt(file:offset:reason:)`, never a silent skip.

public struct WALEntry: Sendable, Hashable {
    public var index: UInt64
    public var term: UInt64
    public var data: [UInt8]
    public init(index: UInt64, term: UInt64, data: [UInt8]) {
        self.index = index; self.term = term; self.data = data
    }
}

public struct HardState: Sendable, Hashable {
    public var term: UInt64
    public var vote: UInt64
    public var commit: UInt64
    public init(term: UInt64 = 0, vote: UInt64 = 0, commit: UInt64 = 0) {
        self.term = term; self.vote = vote; self.commit = commit
    }
}

public struct WALSnapshotMarker: Sendable, Hashable {
    public var index: UInt64
    public var term: UInt64
    public init(index: UInt64, term: UInt64) { self.index = index; self.term = term }
}

public enum WALRecordType: UInt8, Sendable {
    case entry = 1
    case hardState = 2
    case snapshot = 3
}

public enum WALError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Damage before the tail: the file and byte offset of the first bad record.
    case corrupt(file: String, offset: Int, reason: String)
    /// Segment sequence numbers are not consecutive (a file is missing).
    case missingSegment(after: String)
    /// Entries do not follow each other (index gap) at file/offset.
    case indexGap(file: String, offset: Int, expected: UInt64, found: UInt64)
    /// The WAL failed an earlier write or sync; it must be reopened (recovery decides what survived).
    case failed
    case closed

    public var description: String {
        switch self {
        case let .corrupt(file, offset, reason): "wal: corrupt record in \(file) at offset \(offset): \(reason)"
        case let .missingSegment(after): "wal: missing segment after \(after)"
        case let .indexGap(file, offset, expected, found):
            "wal: entry index gap in \(file) at offset \(offset): expected \(expected), found \(found)"
        case .failed: "wal: an earlier write failed; reopen the WAL"
        case .closed: "wal: closed"
        }
    }
}

/// What recovery found.
public struct WALReplay: Sendable {
    /// Entries after the snapshot marker's index, in index order (later writes of an index win).
    public var entries: [WALEntry] = []
    public var hardState: HardState?
    public var snapshot: WALSnapshotMarker?
    /// Set when a torn or corrupt tail was cut off: which file, from which offset, how many bytes.
    public var truncatedTail: (file: String, offset: Int, bytes: Int, reason: String)?
    public var segments: Int = 0
}

public struct WALOptions: Sendable {
    public var segmentSize: Int = 64 << 20
    /// fdatasync after every append (turn off only in benchmarks that measure the write path).
    public var sync: Bool = true
    /// Maximum payload of one record.
    public var maxRecordSize: Int = 64 << 20
    public init(segmentSize: Int = 64 << 20, sync: Bool = true) {
        self.segmentSize = segmentSize; self.sync = sync
    }
}

/// The Raft write-ahead log. Not thread-safe by design: one owner (the Raft loop's WAL writer)
/// confines it; it is not Sendable.
public final class WAL {
    struct Segment { var seq: UInt64; var firstIndex: UInt64; var name: String }

    public let directory: String
    public let options: WALOptions
    private var lock: DirectoryLock?
    private var segments: [Segment] = []
    private var fd: Int32 = -1
    private var offset = 0            // write offset in the last segment
    private var batch: UInt32 = 0     // last batch number written
    private var lastIndex: UInt64 = 0
    private var lastHardState: HardState?
    private var lastSnapshot: WALSnapshotMarker?
    private var failed = false
    private var buffer: [UInt8] = []

    static let headerSize = 16

    /// Opens (creating if needed) the WAL in `directory`, recovers it and returns what it holds.
    public static func open(directory: String, options: WALOptions = WALOptions()) throws -> (WAL, WALReplay) {
        let wal = WAL(directory: directory, options: options)
        let replay = try wal.recover()
        return (wal, replay)
    }

    private init(directory: String, options: WALOptions) {
        self.directory = directory
        self.options = options
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    public func close() {
        if fd >= 0 { Glibc.close(fd); fd = -1 }
        lock?.release(); lock = nil
    }

    public var segmentCount: Int { segments.count }
    public var lastWrittenIndex: UInt64 { lastIndex }

    // MARK: appending

    /// Appends entries (and a hard state) as one batch: one write, one fdatasync. When it returns,
    /// the batch is durable. An entry whose index is not after the last one replaces that suffix on
    /// replay (Raft's conflicting-entries rule).
    public func append(entries: [WALEntry], hardState: HardState? = nil) throws {
        guard !failed else { throw WALError.failed }
        guard fd >= 0 else { throw WALError.closed }
        if entries.isEmpty && hardState == nil { return }
        buffer.removeAll(keepingCapacity: true)
        let batchNo = batch &+ 1
        var recs: [(WALRecordType, (inout [UInt8]) -> Void)] = []
        for e in entries {
            recs.append((.entry, { b in Self.put64(&b, e.index); Self.put64(&b, e.term); b.append(contentsOf: e.data) }))
        }
        if let hs = hardState {
            recs.append((.hardState, { b in Self.put64(&b, hs.term); Self.put64(&b, hs.vote); Self.put64(&b, hs.commit) }))
        }
        var size = 0
        for e in entries { size += Self.recordSize(16 + e.data.count) }
        if hardState != nil { size += Self.recordSize(24) }
        try writeBatch(recs, size: size, batchNo: batchNo, firstIndex: entries.first?.index)
        if let last = entries.last { lastIndex = last.index }
        if let hs = hardState { lastHardState = hs }
    }

    /// Records that a snapshot at (index, term) is durable elsewhere. Entries up to index are then
    /// no longer replayed; call `releaseBefore(index)` afterwards to delete old segments.
    public func saveSnapshotMarker(_ marker: WALSnapshotMarker) throws {
        guard !failed else { throw WALError.failed }
        guard fd >= 0 else { throw WALError.closed }
        try writeBatch([(.snapshot, { b in Self.put64(&b, marker.index); Self.put64(&b, marker.term) })],
                       size: Self.recordSize(16), batchNo: batch &+ 1, firstIndex: nil)
        lastSnapshot = marker
        if marker.index > lastIndex { lastIndex = marker.index }
    }

    /// Deletes whole segments all of whose entries have index < `index` (never the last segment).
    /// The directory is fsynced after removals.
    public func releaseBefore(_ index: UInt64) throws {
        var removed = false
        while segments.count >= 2 && segments[1].firstIndex <= index {
            let path = directory + "/" + segments[0].name
            if unlink(path) < 0 && errno != ENOENT { throw StorageIOError(operation: "unlink", path: path, errno: errno) }
            segments.removeFirst()
            removed = true
        }
        if removed { try FileIO.fsyncDir(directory) }
    }

    private func writeBatch(_ recs: [(WALRecordType, (inout [UInt8]) -> Void)], size: Int, batchNo: UInt32,
                            firstIndex: UInt64?) throws {
        var total = size
        var carry: [(WALRecordType, (inout [UInt8]) -> Void)] = []
        if offset + size > options.segmentSize && offset > 0 {
            // New segment: it begins with the latest snapshot marker and hard state so that older
            // segments can be deleted without losing them.
            if let s = lastSnapshot {
                carry.append((.snapshot, { b in Self.put64(&b, s.index); Self.put64(&b, s.term) }))
                total += Self.recordSize(16)
            }
            if let hs = lastHardState {
                carry.append((.hardState, { b in Self.put64(&b, hs.term); Self.put64(&b, hs.vote); Self.put64(&b, hs.commit) }))
                total += Self.recordSize(24)
            }
            try createSegment(seq: (segments.last?.seq ?? 0) + 1, firstIndex: firstIndex ?? lastIndex + 1)
        }
        buffer.reserveCapacity(total)
        let all = carry + recs
        for (i, (type, fill)) in all.enumerated() {
            let start = buffer.count
            buffer.append(contentsOf: repeatElement(0, count: Self.headerSize))
            fill(&buffer)
            let len = buffer.count - start - Self.headerSize
            guard len <= options.maxRecordSize else {
                buffer.removeAll(keepingCapacity: true)
                throw StorageIOError(operation: "append (record of \(len) bytes exceeds limit)", path: directory, errno: EFBIG)
            }
            Self.encodeHeader(&buffer, at: start, length: len, type: type, last: i == all.count - 1, batch: batchNo)
            let pad = (8 - (buffer.count & 7)) & 7
            if pad > 0 { buffer.append(contentsOf: repeatElement(0, count: pad)) }
        }
        let path = directory + "/" + segments[segments.count - 1].name
        do {
            try buffer.withUnsafeBytes { try FileIO.pwriteAll(fd, $0, at: offset, path: path) }
            if options.sync { try FileIO.check(fdatasync(fd), "fdatasync", path) }
        } catch {
            // A partial write or failed sync leaves the file's state unknown (after a failed fsync the
            // kernel may have dropped the dirty pages): stop accepting writes; recovery decides.
            failed = true
            throw error
        }
        offset += buffer.count
        batch = batchNo
    }

    static func recordSize(_ payload: Int) -> Int { (headerSize + payload + 7) & ~7 }

    static func put64(_ b: inout [UInt8], _ v: UInt64) {
        withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) }
    }

    static func encodeHeader(_ b: inout [UInt8], at start: Int, length: Int, type: WALRecordType, last: Bool, batch: UInt32) {
        b.withUnsafeMutableBytes { raw in
            let p = raw.baseAddress! + start
            p.storeBytes(of: UInt32(length).littleEndian, as: UInt32.self)
            p.storeBytes(of: type.rawValue, toByteOffset: 4, as: UInt8.self)
            p.storeBytes(of: last ? 1 : 0, toByteOffset: 5, as: UInt8.self)
            p.storeBytes(of: UInt16(0), toByteOffset: 6, as: UInt16.self)
            p.storeBytes(of: batch.littleEndian, toByteOffset: 12, as: UInt32.self)
            let crc = recordCRC(UnsafeRawBufferPointer(start: p, count: headerSize + length))
            p.storeBytes(of: crc.littleEndian, toByteOffset: 8, as: UInt32.self)
        }
    }

    static func recordCRC(_ rec: UnsafeRawBufferPointer) -> UInt32 {
        var c = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: rec[0..<8]))
        c = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: rec[12..<16]), continuing: c)
        return CRC32C.checksum(UnsafeRawBufferPointer(rebasing: rec[16...]), continuing: c)
    }

    // MARK: segments

    static func segmentName(seq: UInt64, firstIndex: UInt64) -> String {
        hex16(seq) + "-" + hex16(firstIndex) + ".wal"
    }

    static func hex16(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    static func parseSegmentName(_ name: String) -> (UInt64, UInt64)? {
        guard name.hasSuffix(".wal"), name.utf8.count == 37 else { return nil }
        let parts = name.dropLast(4).split(separator: "-")
        guard parts.count == 2, let a = UInt64(parts[0], radix: 16), let b = UInt64(parts[1], radix: 16) else { return nil }
        return (a, b)
    }

    /// Creates a preallocated segment under a temporary name, syncs it, renames it into place and
    /// syncs the directory. On failure (e.g. ENOSPC) the temporary file is removed and nothing changes.
    private func createSegment(seq: UInt64, firstIndex: UInt64) throws {
        let name = Self.segmentName(seq: seq, firstIndex: firstIndex)
        let tmp = directory + "/" + name + ".tmp"
        let path = directory + "/" + name
        let nfd = try FileIO.open(tmp, O_RDWR | O_CREAT | O_TRUNC)
        do {
            let rc = posix_fallocate(nfd, 0, off_t(options.segmentSize))
            if rc != 0 { throw StorageIOError(operation: "fallocate", path: tmp, errno: rc) }
            try FileIO.check(fsync(nfd), "fsync", tmp)
            try FileIO.check(rename(tmp, path), "rename", tmp)
            try FileIO.fsyncDir(directory)
        } catch {
            Glibc.close(nfd)
            unlink(tmp)
            throw error
        }
        if fd >= 0 { Glibc.close(fd) }
        fd = nfd
        offset = 0
        segments.append(Segment(seq: seq, firstIndex: firstIndex, name: name))
    }

    // MARK: recovery

    private func recover() throws -> WALReplay {
        lock = try DirectoryLock(directory: directory)
        var replay = WALReplay()
        var names: [String] = []
        for name in try FileIO.listDir(directory) {
            if name.hasSuffix(".wal.tmp") { unlink(directory + "/" + name); continue }
            if let (seq, first) = Self.parseSegmentName(name) {
                segments.append(Segment(seq: seq, firstIndex: first, name: name))
                names.append(name)
            }
        }
        segments.sort { $0.seq < $1.seq }
        for i in segments.indices.dropFirst() where segments[i].seq != segments[i - 1].seq + 1 {
            throw WALError.missingSegment(after: segments[i - 1].name)
        }
        if segments.isEmpty {
            try createSegment(seq: 1, firstIndex: 1)
            return replay
        }
        replay.segments = segments.count
        var entries: [WALEntry] = []
        for (si, seg) in segments.enumerated() {
            let isLast = si == segments.count - 1
            let path = directory + "/" + seg.name
            let sfd = try FileIO.open(path, O_RDWR)
            var keepOpen = false
            defer { if !keepOpen { Glibc.close(sfd) } }
            let bytes = try FileIO.readAll(sfd, path: path)
            var pos = 0
            var lastBatch: UInt32? = nil
            var lastWasBatchEnd = true
            var badReason: String? = nil
            // Pass 1: parse records up to the end of data or the first bad record.
            var recs: [(type: WALRecordType, payload: Range<Int>, pos: Int, batchEnd: Bool)] = []
            bytes.withUnsafeBytes { raw in
                while true {
                    switch Self.parseRecord(raw, at: pos, maxRecord: options.maxRecordSize) {
                    case .end: return
                    case let .bad(reason): badReason = reason; return
                    case let .record(type, flags, batchNo, payload, next):
                        let ps = payload.baseAddress! - raw.baseAddress!
                        recs.append((type, ps..<(ps + payload.count), pos, flags & 1 != 0))
                        lastBatch = batchNo
                        lastWasBatchEnd = flags & 1 != 0
                        pos = next
                    }
                }
            }
            // Records of a batch whose last record is missing are part of a torn write too.
            var applyCount = recs.count
            let badPos = pos
            if !lastWasBatchEnd {
                let keep = (recs.lastIndex { $0.batchEnd }).map { $0 + 1 } ?? 0
                applyCount = keep
                if badReason == nil { badReason = "incomplete batch" }
                pos = recs[keep].pos
            }
            if let reason = badReason {
                // The batch a torn write could belong to: the one after the last complete batch.
                let tornBatch: UInt32? = lastBatch.map { lastWasBatchEnd ? $0 &+ 1 : $0 }
                let laterBatch: Bool = bytes.withUnsafeBytes { raw in
                    var p = (recs.last.map { Self.recordEnd($0) } ?? pos) + 8
                    p = max(p, pos + 8)
                    while p + Self.headerSize <= raw.count {
                        if case let .record(_, _, b, _, _) = Self.parseRecord(raw, at: p, maxRecord: options.maxRecordSize) {
                            if let t = tornBatch {
                                if Int32(bitPattern: b &- t) > 0 { return true }
                            } else {
                                return true   // nothing valid before: any valid record later means damage
                            }
                        }
                        p += 8
                    }
                    return false
                }
                if !isLast || laterBatch {
                    throw WALError.corrupt(file: path, offset: badPos, reason: reason)
                }
                // Torn tail: zero from the first torn record to the end of the non-zero data, then sync.
                var end = bytes.count
                while end > pos && bytes[end - 1] == 0 { end -= 1 }
                let zeros = [UInt8](repeating: 0, count: end - pos)
                try zeros.withUnsafeBytes { try FileIO.pwriteAll(sfd, $0, at: pos, path: path) }
                try FileIO.check(fdatasync(sfd), "fdatasync", path)
                replay.truncatedTail = (file: path, offset: pos, bytes: end - pos, reason: reason)
            }
            // Pass 2: apply the complete batches.
            try bytes.withUnsafeBytes { raw in
                for r in recs[..<applyCount] {
                    let payload = UnsafeRawBufferPointer(rebasing: raw[r.payload])
                    switch r.type {
                    case .entry:
                        let idx = Self.get64(payload, 0), term = Self.get64(payload, 8)
                        if let last = entries.last, idx <= last.index {
                            let keep = entries.firstIndex { $0.index >= idx } ?? entries.count
                            entries.removeSubrange(keep...)
                        } else if let last = entries.last, idx != last.index + 1 {
                            throw WALError.indexGap(file: path, offset: r.pos, expected: last.index + 1, found: idx)
                        }
                        entries.append(WALEntry(index: idx, term: term, data: [UInt8](UnsafeRawBufferPointer(rebasing: payload[16...]))))
                    case .hardState:
                        replay.hardState = HardState(term: Self.get64(payload, 0), vote: Self.get64(payload, 8),
                                                     commit: Self.get64(payload, 16))
                    case .snapshot:
                        let m = WALSnapshotMarker(index: Self.get64(payload, 0), term: Self.get64(payload, 8))
                        if replay.snapshot == nil || m.index >= replay.snapshot!.index {
                            replay.snapshot = m
                            entries.removeAll { $0.index <= m.index }
                        }
                    }
                }
            }
            if isLast {
                keepOpen = true
                fd = sfd
                offset = pos
                if let b = lastBatch { batch = b }
            }
        }
        lastHardState = replay.hardState
        lastSnapshot = replay.snapshot
        if let s = replay.snapshot { entries.removeAll { $0.index <= s.index } }
        replay.entries = entries
        lastIndex = max(entries.last?.index ?? 0, replay.snapshot?.index ?? 0)
        return replay
    }

    enum Parsed {
        case end
        case bad(String)
        case record(WALRecordType, UInt8, UInt32, UnsafeRawBufferPointer, Int)
    }

    static func parseRecord(_ raw: UnsafeRawBufferPointer, at pos: Int, maxRecord: Int) -> Parsed {
        let remaining = raw.count - pos
        if remaining <= 0 { return .end }
        if remaining < headerSize {
            return raw[pos...].allSatisfy { $0 == 0 } ? .end : .bad("truncated record header")
        }
        let p = raw.baseAddress! + pos
        let len = Int(UInt32(littleEndian: p.loadUnaligned(as: UInt32.self)))
        let typeByte = p.load(fromByteOffset: 4, as: UInt8.self)
        if len == 0 && typeByte == 0 {
            // End of written data, if the rest of the header is zero too.
            for i in 0..<headerSize where p.load(fromByteOffset: i, as: UInt8.self) != 0 {
                return .bad("zero length record with non-zero header")
            }
            return .end
        }
        guard let type = WALRecordType(rawValue: typeByte) else { return .bad("unknown record type \(typeByte)") }
        guard len <= maxRecord, len <= remaining - headerSize else { return .bad("record length \(len) past end of file") }
        let minLen = type == .hardState ? 24 : 16
        guard len >= minLen, type != .hardState || len == 24, type != .snapshot || len == 16 else {
            return .bad("bad payload length \(len) for record type \(type)")
        }
        let rec = UnsafeRawBufferPointer(start: p, count: headerSize + len)
        let stored = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        guard recordCRC(rec) == stored else { return .bad("CRC32C mismatch") }
        let flags = p.load(fromByteOffset: 5, as: UInt8.self)
        let batchNo = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
        let next = pos + recordSize(len)
        return .record(type, flags, batchNo, UnsafeRawBufferPointer(start: p + headerSize, count: len), next)
    }

    static func recordEnd(_ r: (type: WALRecordType, payload: Range<Int>, pos: Int, batchEnd: Bool)) -> Int {
        r.pos + recordSize(r.payload.count)
    }

    static func get64(_ b: UnsafeRawBufferPointer, _ off: Int) -> UInt64 {
        UInt64(littleEndian: b.loadUnaligned(fromByteOffset: off, as: UInt64.self))
    }
}
