#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLMDB
import KeelAPI

// Keys longer than 495 bytes (etcd has no key length limit; LMDB keys are at most 511 bytes).
//
// Keys of up to `Rec.maxUserKey` = 495 bytes ("short" keys) are stored exactly as before: key-major
// table `keys` (key ‖ main ‖ sub), `leaseKeys` (lease ‖ key). Nothing about them changed, so old
// data directories need no migration and the short-key paths do the same work as before (a range
// checks once, with mdb_stat, whether the long-key table has any entry at all).
//
// A longer key K gets a store-wide id (sys "longNextID", allocated in apply order, so every member
// assigns the same ids) and lives in two tables of its own:
//   longKeys   K[0..<495] ‖ h(K[495...]) (8 BE) ‖ id (8 BE)  -> K[495...]        (511-byte LMDB key)
//   longRevs   id (8 BE) ‖ main (8 BE) ‖ sub (8 BE)          -> record, exactly as in `keys`
// and, when it has a lease, `leaseKeys` holds lease (8 BE) ‖ K[0..<495] ‖ id (8 BE) -> K[495...]
// (511 bytes, while a short key's entry is at most 8 + 495 = 503 bytes: the length tells them apart).
// `revs` (main ‖ sub -> flag ‖ full key) is unchanged: its value holds the full key of any length, so
// history, compaction and HashKV see every key in revision order as before.
//
// Lookup of K: seek longKeys to K[0..<495] ‖ h, compare the stored suffixes of the (normally one)
// entries with that prefix and hash: collisions of h cost a step, never correctness.
// Order: for a short key s and a long key K with P = K[0..<495]: s < K iff s <= P (bytewise). So all
// long keys sharing P sort right after the short key P (if any) and before the next short key, and
// longKeys (ordered by P first) visits these groups in key order; inside one group the entries are in
// hash order, so a scan loads the group and sorts it by suffix. Range/prefix/from-key scans merge the
// short-key cursor with this ordered stream of long keys (`LongKeyStream`); versions of a long key
// are found in longRevs exactly as the key table finds a short key's (seek past the revision, step
// back). A group costs memory and a sort per scan that reaches it, proportional to how many long
// keys share their first 495 bytes (for ordinary data: one).
// When compaction removes the last version of a long key (its tombstone), its longKeys entry goes too.

enum LongKey {
    /// Bytes of a long key kept in the longKeys / leaseKeys LMDB key (= the longest short key).
    static let prefixLength = Rec.maxUserKey
    /// Length of K[0..<495] ‖ h (a lookup key).
    static let lookupKeyLength = prefixLength + 8
    /// Length of a longKeys LMDB key: K[0..<495] ‖ h ‖ id.
    static let indexKeyLength = prefixLength + 16

    @inline(__always)
    static func isLong(_ key: [UInt8]) -> Bool { key.count > prefixLength }

    /// FNV-1a 64 of the suffix: spreads the keys of one prefix group (collisions are handled).
    static func hash(_ suffix: ArraySlice<UInt8>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in suffix { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return h
    }

    /// K[0..<495] ‖ h(suffix): where the entries of K (and of any key with the same prefix and hash) start.
    static func lookupKey(_ key: [UInt8]) -> [UInt8] {
        var b = Array(key[..<prefixLength])
        b.reserveCapacity(indexKeyLength)
        Rec.appendBE(hash(key[prefixLength...]), to: &b)
        assert(b.count == lookupKeyLength)
        return b
    }

    static func indexKey(_ key: [UInt8], id: UInt64) -> [UInt8] {
        var b = lookupKey(key)
        Rec.appendBE(id, to: &b)
        return b
    }

    static func revKey(_ id: UInt64, _ main: Int64, _ sub: Int64) -> [UInt8] {
        var b: [UInt8] = []
        b.reserveCapacity(24)
        Rec.appendBE(id, to: &b)
        Rec.appendBE(UInt64(bitPattern: main), to: &b)
        Rec.appendBE(UInt64(bitPattern: sub), to: &b)
        return b
    }

    /// leaseKeys entry of a long key: lease ‖ K[0..<495] ‖ id (the value is K[495...]).
    static func leaseEntry(_ lease: Int64, _ key: [UInt8], id: UInt64) -> [UInt8] {
        var b = Rec.leaseKey(lease)
        b.reserveCapacity(8 + prefixLength + 8)
        b.append(contentsOf: key[..<prefixLength])
        Rec.appendBE(id, to: &b)
        return b
    }

    static let leaseEntryLength = 8 + prefixLength + 8

    /// The full key of a longKeys entry (prefix from the LMDB key, suffix from the value).
    static func fullKey(_ e: LMDBCursor.Entry) -> [UInt8] {
        var k = Array(UnsafeRawBufferPointer(rebasing: e.key[..<prefixLength]))
        k.append(contentsOf: e.value)
        return k
    }

    static func id(ofIndexEntry k: UnsafeRawBufferPointer) -> UInt64 { Rec.be(k, prefixLength + 8) }

    /// A search key just after every revision <= atRev of long key `id`.
    static func boundKey(_ id: UInt64, _ atRev: Int64) -> [UInt8] {
        revKey(id, atRev &+ 1, 0)
    }

    @inline(__always)
    static func owner(_ revEntry: UnsafeRawBufferPointer) -> UInt64? {
        revEntry.count == 24 ? Rec.be(revEntry, 0) : nil
    }
}

enum VersionNeighbor { case none, prev, next }

extension CursorRef {
    /// Moves to the neighbouring entry (`.none`: stays, returns nil).
    func step(_ n: VersionNeighbor) throws(MVCCError) -> LMDBCursor.Entry? {
        switch n {
        case .none: return nil
        case .prev: return try prev()
        case .next: return try next()
        }
    }
}

/// A version found by `LMDBTxn.version`: its record (pointing into LMDB's page), its exact LMDB key
/// (key table or longRevs), and the neighbouring version of the same key when asked for.
struct StoredVersion {
    var record: UnsafeRawBufferPointer
    var exact: [UInt8]
    var longID: UInt64?
    var neighbor: (main: Int64, record: UnsafeRawBufferPointer)?
}

/// Runs `body` on the bytes of `a` (typed throws through `withUnsafeBytes`).
@inline(__always)
func withBytes<T>(_ a: [UInt8], _ body: (UnsafeRawBufferPointer) throws(MVCCError) -> T) throws(MVCCError) -> T {
    let r: Result<T, MVCCError> = a.withUnsafeBytes { p in
        do throws(MVCCError) { return .success(try body(p)) } catch { return .failure(error) }
    }
    return try r.get()
}

extension LMDBTxn {
    /// The id of long key `key` (nil when it has no stored version).
    func longKeyID(_ key: [UInt8]) throws(MVCCError) -> UInt64? {
        let c = try cursor(env.longKeys)
        let look = LongKey.lookupKey(key)
        var e = try c.seek(look)
        let suffix = key[LongKey.prefixLength...]
        while let cur = e, cur.key.count == LongKey.indexKeyLength,
              look.withUnsafeBytes({ memcmp($0.baseAddress!, cur.key.baseAddress!, LongKey.lookupKeyLength) == 0 }) {
            if cur.value.elementsEqual(suffix) { return LongKey.id(ofIndexEntry: cur.key) }
            e = try c.next()
        }
        return nil
    }

    /// The newest version <= atRev of long key `id` (positions `c` on it), nil when there is none.
    func latestLong(_ c: CursorRef, _ id: UInt64, atRev: Int64) throws(MVCCError)
        -> (main: Int64, record: UnsafeRawBufferPointer)? {
        let e: LMDBCursor.Entry? = try c.seek(LongKey.boundKey(id, atRev)) == nil ? try c.last() : try c.prev()
        guard let x = e, LongKey.owner(x.key) == id else { return nil }
        return (Int64(bitPattern: Rec.be(x.key, 8)), x.value)
    }

    /// One stored version (main, sub) of `key`, found through the key table (short key, cursor `kc`)
    /// or longRevs (long key, cursor `lc`); the cursor is left on it. `neighbor`: also the version
    /// just before (`.prev`) or after (`.next`) it when it belongs to the same key (the cursor then
    /// moves there). Throws when the version is missing (the tables disagree).
    func version(_ kc: CursorRef, _ lc: CursorRef, key: [UInt8], main: Int64, sub: Int64, neighbor: VersionNeighbor)
        throws(MVCCError) -> StoredVersion {
        if LongKey.isLong(key) {
            guard let id = try longKeyID(key) else { throw .storage("mvcc: long key of revision \(main).\(sub) has no id") }
            let exact = LongKey.revKey(id, main, sub)
            guard let here = try lc.seek(exact), LongKey.owner(here.key) == id, Rec.be(here.key, 8) == UInt64(bitPattern: main),
                  Rec.be(here.key, 16) == UInt64(bitPattern: sub) else {
                throw .storage("mvcc: revision \(main).\(sub) missing from the long-key table")
            }
            var v = StoredVersion(record: here.value, exact: exact, longID: id)
            if let n = try lc.step(neighbor), LongKey.owner(n.key) == id { v.neighbor = (Int64(bitPattern: Rec.be(n.key, 8)), n.value) }
            return v
        }
        let exact = Rec.keyTableKey(key, main, sub)
        guard let here = try kc.seek(exact), Rec.splitKey(here.key).main == main, Rec.splitKey(here.key).sub == sub,
              Rec.compare(Rec.splitKey(here.key).key, key) == 0 else {
            throw .storage("mvcc: revision \(main).\(sub) missing from the key table")
        }
        var v = StoredVersion(record: here.value, exact: exact, longID: nil)
        if let n = try kc.step(neighbor) {
            let ns = Rec.splitKey(n.key)
            if Rec.compare(ns.key, key) == 0 { v.neighbor = (ns.main, n.value) }
        }
        return v
    }

    /// Whether long key `id` has any stored version left.
    func longHasVersions(_ id: UInt64) throws(MVCCError) -> Bool {
        let c = try cursor(env.longRevs)
        guard let e = try c.seek(LongKey.revKey(id, 0, 0)) else { return false }
        return LongKey.owner(e.key) == id
    }

    /// The leaseKeys entry of (lease, key), nil for a long key that has no id.
    func leaseEntryKey(_ lease: Int64, _ key: [UInt8]) throws(MVCCError) -> [UInt8]? {
        if !LongKey.isLong(key) { return Rec.leaseKey(lease) + key }
        guard let id = try longKeyID(key) else { return nil }
        return LongKey.leaseEntry(lease, key, id: id)
    }
}

/// Long keys in [start, end) in key order (candidates: the caller checks which are live at its
/// revision), one prefix group (keys sharing their first 495 bytes) loaded and sorted at a time.
/// Owns two cursors (longKeys, longRevs) when the store has long keys, none otherwise. Must not
/// outlive its transaction, nor see a write in it (it keeps pointers into LMDB's pages).
struct LongKeyStream: ~Copyable {
    private let idx: OpaquePointer?
    /// A cursor on longRevs for the caller's version lookups (nil when the stream is empty from the start).
    let revs: CursorRef?
    private let start: [UInt8]
    private let end: RangeEnd
    private var entry: LMDBCursor.Entry?        // next unread longKeys entry
    /// The loaded group: its 495-byte prefix, and (suffix, id) per key in key order. The suffixes
    /// point into LMDB's pages (valid for the transaction; nothing is written while a scan runs), so
    /// loading a group allocates nothing per key.
    private var prefix: [UInt8] = []
    private var group: [(suffix: UnsafeRawBufferPointer, id: UInt64)] = []
    private var pos = 0
    private var current: (key: [UInt8], id: UInt64)?     // group[pos] as a full key, built once
    private var exhausted: Bool

    /// A stream over the long keys >= start (before `end`); empty without a cursor when the store has
    /// no long key at all (the short-key paths stay as they were).
    init(_ t: LMDBTxn, start: [UInt8], end: RangeEnd) throws(MVCCError) {
        var a: OpaquePointer?, b: OpaquePointer?
        var first: LMDBCursor.Entry?
        if try t.entries(t.env.longKeys) > 0 {
            try LMDB.check(mdb_cursor_open(t.txn, t.env.longKeys, &a))
            do throws(MVCCError) {
                try LMDB.check(mdb_cursor_open(t.txn, t.env.longRevs, &b))
                // long keys >= start are in the groups with prefix >= start[0..<495] (see the file comment)
                first = try CursorRef(c: a!).seek(Array(start.prefix(LongKey.prefixLength)))
            } catch {
                mdb_cursor_close(a)
                if let b { mdb_cursor_close(b) }
                throw error
            }
        }
        self.start = start
        self.end = end
        idx = a
        revs = b.map { CursorRef(c: $0) }
        entry = first
        exhausted = first == nil
    }

    deinit {
        if let idx { mdb_cursor_close(idx) }
        if let revs { mdb_cursor_close(revs.c) }
    }

    /// True when no long key remains (cheap: the short-key loop checks it per key).
    var isEmpty: Bool { exhausted && pos >= group.count }

    /// The next long key in range, without consuming it.
    mutating func peek() throws(MVCCError) -> (key: [UInt8], id: UInt64)? {
        if let current { return current }
        while pos >= group.count {
            if exhausted { return nil }
            try loadGroup()
        }
        let e = group[pos]
        let k = prefix + Array(e.suffix)
        current = (k, e.id)
        return current
    }

    mutating func advance() { pos += 1; current = nil }

    /// Compares prefix ‖ suffix with `bound`, without building the key.
    private static func compare(_ prefix: UnsafeRawBufferPointer, _ suffix: UnsafeRawBufferPointer,
                                _ bound: [UInt8]) -> Int {
        bound.withUnsafeBytes { b in
            let n = min(prefix.count, b.count)
            if n > 0 {
                let c = memcmp(prefix.baseAddress!, b.baseAddress!, n)
                if c != 0 { return Int(c) }
            }
            if b.count <= prefix.count { return 1 }        // bound is a prefix of the key (the suffix is never empty)
            return bytewise(suffix, UnsafeRawBufferPointer(rebasing: b[prefix.count...]))
        }
    }

    /// Bytewise order of two byte strings (a proper prefix first).
    private static func bytewise(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int {
        let n = min(a.count, b.count)
        if n > 0 {
            let c = memcmp(a.baseAddress!, b.baseAddress!, n)
            if c != 0 { return Int(c) }
        }
        return a.count == b.count ? 0 : (a.count < b.count ? -1 : 1)
    }

    private mutating func loadGroup() throws(MVCCError) {
        group.removeAll(keepingCapacity: true)
        pos = 0
        current = nil
        guard let idx, let first = entry else { exhausted = true; return }
        let c = CursorRef(c: idx)
        let p = UnsafeRawBufferPointer(rebasing: first.key[..<LongKey.prefixLength])
        prefix = Array(p)
        var e: LMDBCursor.Entry? = first
        var pastEnd = false, read = false
        let (start, end) = (self.start, self.end)
        while let cur = e, cur.key.count == LongKey.indexKeyLength, memcmp(p.baseAddress!, cur.key.baseAddress!, LongKey.prefixLength) == 0 {
            if case .before(let endKey) = end, Self.compare(p, cur.value, endKey) >= 0 {
                pastEnd = true          // later groups have larger prefixes: all past the end too
            } else if Self.compare(p, cur.value, start) >= 0 {
                group.append((cur.value, LongKey.id(ofIndexEntry: cur.key)))
            }
            read = true
            e = try c.next()
        }
        // an entry that is not a longKeys entry (never written by this code) is an error, not a loop
        if !read { throw .storage("mvcc: malformed longKeys entry") }
        entry = e
        if pastEnd || e == nil { exhausted = true }
        if group.count > 1 { group.sort { Self.bytewise($0.suffix, $1.suffix) < 0 } }
    }
}
