import KeelAPI

/// Options of an MVCC store.
public struct MVCCOptions: Sendable {
    /// etcd's --quota-backend-bytes (default 2 GiB; 0 also means the default, as in etcd; negative:
    /// no quota). A Put / Txn with puts / LeaseGrant that would take the DB file beyond it is applied
    /// (as etcd does, so every member stays identical) and then throws `.noSpace`; the server raises
    /// the NOSPACE alarm.
    public var quotaBackendBytes: Int64 = 2 << 30
    /// LMDB map size: the most the DB file can ever grow to (virtual address space only, the file is
    /// sparse). 0 (default): 4x the quota, at least 8 GiB (64 GiB without a quota). When it is really
    /// full, the whole write{} throws `.noSpace` and commits nothing.
    public var mapSize: Int = 0
    /// Revision entries examined per compaction step (one step per write{} while a compaction is
    /// pending; etcd's --experimental-compaction-batch-limit is 1,000 per batch).
    public var compactionBatch: Int = 10_000
    /// true (default): every write{} is one LMDB commit with one fdatasync of its data pages
    /// (MDB_NOMETASYNC): an OS crash loses at most the last commit and never corrupts the file.
    /// false: MDB_NOSYNC: a commit only writes the pages into the OS page cache, and `sync()` (call
    /// it from another thread right after a commit) makes them durable and records it. A commit
    /// waits for the previous one's sync (doing it if nobody has), so at most the newest commit is
    /// unsynced, and open drops it unless its sync was recorded: after a crash (process or OS) the
    /// store may be one commit older than before it, never damaged (SyncRecord.swift). Use it when
    /// another log (the Raft WAL) holds every write since the last `sync()`, released only after one.
    public var syncEachWrite: Bool = true
    /// Values longer than this many bytes are written into the revision-ordered table, not into the
    /// key-major one (MVCCStore.swift, "Tables"). Where a value lives changes nothing that reads see
    /// (Range, history, HashKV); `hash()`, Keel's hash of the stored bytes, depends on it, so members
    /// of a cluster keep the default. Other values are for tests that write both record kinds.
    public var inlineValueLimit: Int = Self.defaultInlineValueLimit
    public static let defaultInlineValueLimit = 64
    /// Default false here; the server turns it on for the stores it creates. A store *created* with this keeps only the latest version of
    /// each short key in the key-major table, and every revs entry of a short key is a full record
    /// that points at the key's previous version (MVCCStore.swift, "Latest-only key table"). Reads,
    /// history, compaction and HashKV are the same as in the default layout; a put rewrites fewer
    /// key-table pages once keys have many versions. The choice is recorded in the store (sys
    /// "format" = 2) at creation; an existing store keeps its layout whatever this says.
    public var latestOnlyKeyTable: Bool = false
    public init(quotaBackendBytes: Int64 = 2 << 30, mapSize: Int = 0, compactionBatch: Int = 10_000,
                syncEachWrite: Bool = true, inlineValueLimit: Int = Self.defaultInlineValueLimit) {
        self.quotaBackendBytes = quotaBackendBytes
        self.mapSize = mapSize
        self.compactionBatch = compactionBatch
        self.syncEachWrite = syncEachWrite
        self.inlineValueLimit = inlineValueLimit
    }
    var effectiveQuota: Int64 { quotaBackendBytes == 0 ? 2 << 30 : quotaBackendBytes }
    var effectiveMapSize: Int {
        if mapSize > 0 { return mapSize }
        let q = effectiveQuota
        return q < 0 ? 64 << 30 : max(Int(q) * 4, 8 << 30)
    }
}

/// Errors of the MVCC store. `message` is etcd's exact text.
public enum MVCCError: Error, Sendable, Equatable, CustomStringConvertible {
    /// "etcdserver: mvcc: required revision has been compacted" (gRPC OutOfRange)
    case compacted(compactRevision: Int64)
    /// "etcdserver: mvcc: required revision is a future revision" (OutOfRange)
    case futureRevision
    /// "etcdserver: key not found" (InvalidArgument): put with ignore_value / ignore_lease on a missing key
    case keyNotFound
    /// "etcdserver: requested lease not found" (NotFound)
    case leaseNotFound
    /// "etcdserver: lease already exists" (FailedPrecondition)
    case leaseExists
    /// "etcdserver: duplicate key given in txn request" (InvalidArgument)
    case duplicateKey
    /// "etcdserver: mvcc: database space exceeded" (ResourceExhausted)
    case noSpace
    /// LMDB / I/O failure, with the library's text.
    case storage(String)

    public var message: String {
        switch self {
        case .compacted: "etcdserver: mvcc: required revision has been compacted"
        case .futureRevision: "etcdserver: mvcc: required revision is a future revision"
        case .keyNotFound: "etcdserver: key not found"
        case .leaseNotFound: "etcdserver: requested lease not found"
        case .leaseExists: "etcdserver: lease already exists"
        case .duplicateKey: "etcdserver: duplicate key given in txn request"
        case .noSpace: "etcdserver: mvcc: database space exceeded"
        case .storage(let s): s
        }
    }
    public var description: String { message }
}

public struct LeaseRecord: Sendable, Hashable {
    public var id: Int64
    public var ttl: Int64
    /// Remaining TTL from the last checkpoint (0 = none recorded).
    public var remainingTTL: Int64
    public init(id: Int64, ttl: Int64, remainingTTL: Int64 = 0) {
        self.id = id; self.ttl = ttl; self.remainingTTL = remainingTTL
    }
}

/// Where a range ends, with etcd's conventions for range_end.
enum RangeEnd: Equatable {
    case single                 // range_end empty: just `key`
    case unbounded              // range_end "\0": every key >= key
    case before([UInt8])        // [key, range_end)

    init(_ rangeEnd: [UInt8]) {
        if rangeEnd.isEmpty { self = .single }
        else if rangeEnd == [0] { self = .unbounded }
        else { self = .before(rangeEnd) }
    }
}

/// Record encodings (all integers big endian where they are part of an LMDB key, so that byte
/// order is revision order; little endian inside values).
enum Rec {
    static let put: UInt8 = 0
    static let tombstone: UInt8 = 1
    /// A put whose value is stored in its revs entry, not in the key-table record (see `putRef`).
    static let putRef: UInt8 = 2
    /// Revs entries of short keys in a latest-only store (`fullRevValue`): a put, a tombstone.
    static let fullPut: UInt8 = 3
    static let fullTombstone: UInt8 = 4

    /// Values longer than this are stored once, in the revision-ordered `revs` table, instead of in
    /// the key-major table (`putRef`). The key table takes random inserts: every put copies a leaf
    /// page and its branch pages at commit, and the bigger its entries the more pages it has (1 KiB
    /// values fit three to a page). `revs` only ever grows at its end. Small values stay inline:
    /// they cost the key table little and save a second lookup per read.
    static let inlineValueLimit = MVCCOptions.defaultInlineValueLimit

    /// The longest user key the key-major table holds (LMDB's key limit minus 16 revision bytes);
    /// longer keys go to the long-key tables (LongKeys.swift).
    static let maxUserKey = LMDBEnv.maxKeySize - 16

    @inline(__always)
    static func appendBE(_ v: UInt64, to b: inout [UInt8]) {
        withUnsafeBytes(of: v.bigEndian) { b.append(contentsOf: $0) }
    }
    @inline(__always)
    static func appendLE(_ v: Int64, to b: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) }
    }
    @inline(__always)
    static func be(_ p: UnsafeRawBufferPointer, _ o: Int) -> UInt64 {
        UInt64(bigEndian: p.loadUnaligned(fromByteOffset: o, as: UInt64.self))
    }
    @inline(__always)
    static func le(_ p: UnsafeRawBufferPointer, _ o: Int) -> Int64 {
        Int64(littleEndian: p.loadUnaligned(fromByteOffset: o, as: Int64.self))
    }

    static func keyTableKey(_ key: [UInt8], _ main: Int64, _ sub: Int64) -> [UInt8] {
        var b = key
        b.reserveCapacity(key.count + 16)
        appendBE(UInt64(bitPattern: main), to: &b)
        appendBE(UInt64(bitPattern: sub), to: &b)
        return b
    }
    /// A search key after every revision of `key`.
    static func pastKey(_ key: UnsafeRawBufferPointer) -> [UInt8] {
        var b = Array(key)
        b.append(contentsOf: repeatElement(0xFF, count: 16))
        return b
    }
    static func revKey(_ main: Int64, _ sub: Int64) -> [UInt8] {
        var b: [UInt8] = []
        b.reserveCapacity(16)
        appendBE(UInt64(bitPattern: main), to: &b)
        appendBE(UInt64(bitPattern: sub), to: &b)
        return b
    }
    static func leaseKey(_ id: Int64) -> [UInt8] {
        var b: [UInt8] = []
        appendBE(UInt64(bitPattern: id), to: &b)
        return b
    }

    /// Value of the key-major table (and of longRevs): put(1) ‖ create(8) ‖ version(8) ‖ lease(8) ‖ value
    /// for a value of up to `inlineValueLimit` bytes; putRef(1) ‖ create ‖ version ‖ lease ‖ sub(8) for a
    /// longer one, whose bytes are in the revs entry (main, sub); or [tombstone].
    static func putValue(create: Int64, version: Int64, lease: Int64, sub: Int64, value: [UInt8],
                         inlineLimit: Int = inlineValueLimit) -> [UInt8] {
        var b: [UInt8] = []
        let inline = value.count <= inlineLimit
        b.reserveCapacity(25 + (inline ? value.count : 8))
        b.append(inline ? put : putRef)
        appendLE(create, to: &b); appendLE(version, to: &b); appendLE(lease, to: &b)
        if inline { b.append(contentsOf: value) } else { appendLE(sub, to: &b) }
        return b
    }

    /// Value of the revs table: flag(1) ‖ user key for a tombstone or an inline put; for a putRef,
    /// putRef(1) ‖ key length(4 LE) ‖ user key ‖ value.
    static func revValue(flag: UInt8, key: [UInt8], value: [UInt8]) -> [UInt8] {
        var b: [UInt8] = []
        if flag != putRef {
            b.reserveCapacity(1 + key.count)
            b.append(flag)
            b.append(contentsOf: key)
            return b
        }
        b.reserveCapacity(5 + key.count + value.count)
        b.append(putRef)
        withUnsafeBytes(of: UInt32(key.count).littleEndian) { b.append(contentsOf: $0) }
        b.append(contentsOf: key)
        b.append(contentsOf: value)
        return b
    }

    /// Revs entry of a short key in a latest-only store: fullPut(1) ‖ key length (4 LE) ‖ key ‖
    /// previous version of the key (main, sub: 8 LE each; 0, 0 = none) ‖ create ‖ version ‖ lease (8 LE
    /// each) ‖ value; or fullTombstone(1) ‖ key length ‖ key ‖ previous version. The previous version
    /// is the key's newest one before this, a tombstone included.
    static func fullRevValue(tombstone: Bool, key: [UInt8], prevMain: Int64, prevSub: Int64,
                             create: Int64 = 0, version: Int64 = 0, lease: Int64 = 0, value: [UInt8] = []) -> [UInt8] {
        var b: [UInt8] = []
        b.reserveCapacity(21 + key.count + (tombstone ? 0 : 24 + value.count))
        b.append(tombstone ? fullTombstone : fullPut)
        withUnsafeBytes(of: UInt32(key.count).littleEndian) { b.append(contentsOf: $0) }
        b.append(contentsOf: key)
        appendLE(prevMain, to: &b); appendLE(prevSub, to: &b)
        if !tombstone {
            appendLE(create, to: &b); appendLE(version, to: &b); appendLE(lease, to: &b)
            b.append(contentsOf: value)
        }
        return b
    }

    static func isFull(_ v: UnsafeRawBufferPointer) -> Bool { v.first == fullPut || v.first == fullTombstone }

    /// A parsed `fullRevValue` (pointers into the entry).
    struct FullRev {
        var key: UnsafeRawBufferPointer
        var prevMain: Int64
        var prevSub: Int64
        var tombstone: Bool
        /// The version as a key-table put record (flag put, value inline), or [tombstone]: what reads
        /// of the key table get, so one decoder serves both.
        var record: [UInt8]
    }

    static func parseFull(_ v: UnsafeRawBufferPointer) throws(MVCCError) -> FullRev {
        let k = try revEntryKey(v)
        let o = 5 + k.count
        let tomb = v[0] == fullTombstone
        guard v.count >= o + 16 + (tomb ? 0 : 24) else { throw .storage("mvcc: corrupt revision entry") }
        var record: [UInt8]
        if tomb {
            record = [tombstone]
        } else {
            record = [put]
            record.append(contentsOf: UnsafeRawBufferPointer(rebasing: v[(o + 16)...]))
        }
        return FullRev(key: k, prevMain: le(v, o), prevSub: le(v, o + 8), tombstone: tomb, record: record)
    }

    /// The user key of a revs entry.
    static func revEntryKey(_ v: UnsafeRawBufferPointer) throws(MVCCError) -> UnsafeRawBufferPointer {
        guard let flag = v.first else { throw .storage("mvcc: empty revision entry") }
        if flag != putRef && flag != fullPut && flag != fullTombstone { return UnsafeRawBufferPointer(rebasing: v[1...]) }
        guard v.count >= 5 else { throw .storage("mvcc: corrupt revision entry") }
        let n = Int(UInt32(littleEndian: v.loadUnaligned(fromByteOffset: 1, as: UInt32.self)))
        guard v.count >= 5 + n else { throw .storage("mvcc: corrupt revision entry") }
        return UnsafeRawBufferPointer(rebasing: v[5..<(5 + n)])
    }

    /// The value bytes of a putRef or fullPut revs entry.
    static func revEntryValue(_ v: UnsafeRawBufferPointer) throws(MVCCError) -> UnsafeRawBufferPointer {
        let k = try revEntryKey(v)
        let o = 5 + k.count + (v[0] == fullPut ? 40 : 0)
        guard v.count >= o else { throw .storage("mvcc: corrupt revision entry") }
        return UnsafeRawBufferPointer(rebasing: v[o...])
    }

    /// Splits a key-table LMDB key into (user key, main, sub).
    @inline(__always)
    static func splitKey(_ k: UnsafeRawBufferPointer) -> (key: UnsafeRawBufferPointer, main: Int64, sub: Int64) {
        let n = k.count - 16
        return (UnsafeRawBufferPointer(rebasing: k[0..<n]),
                Int64(bitPattern: be(k, n)), Int64(bitPattern: be(k, n + 8)))
    }

    static func isTombstone(_ v: UnsafeRawBufferPointer) -> Bool { v.first == tombstone }

    /// Decodes a put record into a KeyValue (keysOnly: no value bytes copied). A putRef record's value
    /// comes from `revs`, the revs table of the same transaction (nil only with keysOnly).
    /// `revEntry`: the version's revs entry when the caller is on it already (history walks): a
    /// putRef value is taken from it instead of being looked up again. `values`: a scan's cursor on
    /// revs, used instead of a lookup through `revs` (ranges).
    static func decode(key: UnsafeRawBufferPointer, mod: Int64, value v: UnsafeRawBufferPointer,
                       keysOnly: Bool = false, revs: LMDBTxn?,
                       revEntry: UnsafeRawBufferPointer? = nil,
                       values: RevisionValues? = nil) throws(MVCCError) -> Mvccpb.KeyValue {
        guard v.count >= 25, v[0] == put || (v[0] == putRef && v.count == 33) else {
            throw .storage("mvcc: corrupt record for key \(Array(key))")
        }
        var kv = Mvccpb.KeyValue()
        kv.key = Array(key)
        kv.modRevision = mod
        kv.createRevision = le(v, 1)
        kv.version = le(v, 9)
        kv.lease = le(v, 17)
        if keysOnly { return kv }
        if v[0] == put {
            if v.count > 25 { kv.value = Array(UnsafeRawBufferPointer(rebasing: v[25...])) }
        } else if let e = revEntry, e.first == putRef {
            kv.value = Array(try revEntryValue(e))
        } else if let values {
            kv.value = try values.value(main: mod, sub: le(v, 25), key: key)
        } else {
            guard let t = revs else { throw .storage("mvcc: a value stored by revision needs the transaction") }
            kv.value = try t.revisionValue(main: mod, sub: le(v, 25), key: key)
        }
        return kv
    }

    /// Bytewise compare of a stored key with a bound.
    @inline(__always)
    static func compare(_ a: UnsafeRawBufferPointer, _ b: [UInt8]) -> Int {
        b.withUnsafeBytes { bb in
            let n = min(a.count, bb.count)
            if n > 0 {
                let c = memcmp(a.baseAddress!, bb.baseAddress!, n)
                if c != 0 { return Int(c) }
            }
            return a.count == bb.count ? 0 : (a.count < bb.count ? -1 : 1)
        }
    }

    static func equal(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        a.count == b.count && (a.count == 0 || memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
