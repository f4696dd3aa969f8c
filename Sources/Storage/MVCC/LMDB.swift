#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLMDB
import Synchronization

// A thin layer over Debian's liblmdb 0.9: one environment (file) with the MVCC tables, read and
// write transactions, and cursors. Everything returned by a cursor points into LMDB's pages and is
// valid only inside its transaction (and, in a write transaction, until the next write).

/// The LMDB environment and its tables. Sendable because LMDB itself makes an environment safe to
/// use from any thread: it is opened with MDB_NOTLS (read transactions are not tied to a thread,
/// so a read may run on any executor), write transactions are serialized by LMDB's writer mutex,
/// and the handles below never change after `open`. The environment is closed when the last
/// reference goes away (the store swaps in a new one after `defragment`, while readers that still
/// hold the old one finish on it).
final class LMDBEnv: Sendable {
    nonisolated(unsafe) let env: OpaquePointer
    let path: String
    let pageSize: Int
    /// key ‖ main(8 BE) ‖ sub(8 BE) -> record (custom comparator: key bytes first, then revision).
    let keys: MDB_dbi
    /// main(8 BE) ‖ sub(8 BE) -> flag(1) ‖ key.
    let revs: MDB_dbi
    /// Store-internal values: revision, compacted revision, applied index.
    let sys: MDB_dbi
    /// Caller's meta records (members, cluster id ...): UTF-8 name -> bytes.
    let meta: MDB_dbi
    /// lease id (8 BE, as UInt64 bit pattern) -> ttl(8 LE) ‖ remainingTTL(8 LE).
    let leases: MDB_dbi
    /// lease id (8 BE) ‖ key -> empty: the keys attached to a lease (key <= 495 bytes); for a longer
    /// key: lease id (8 BE) ‖ key[0..<495] ‖ long-key id (8 BE) -> key[495...] (511 bytes, see LongKeys.swift).
    let leaseKeys: MDB_dbi
    /// Keys longer than 495 bytes (LongKeys.swift): key[0..<495] ‖ hash(key[495...]) (8 BE) ‖ id (8 BE)
    /// -> key[495...]. One entry per distinct long key that has versions.
    let longKeys: MDB_dbi
    /// Versions of long keys: id (8 BE) ‖ main (8 BE) ‖ sub (8 BE) -> the same record as `keys`.
    let longRevs: MDB_dbi
    /// The layout of the key-major table: 1, every version of a key; 2, only its latest, older
    /// versions reached through the revs entries (sys "format"; missing = 1).
    let format: Int64
    var latestOnly: Bool { format >= 2 }
    /// Delete the file when this environment closes (set on the old file after defragment).
    let removeOnClose = Atomic<Bool>(false)
    /// Serializes syncs of this file (held across the fdatasync) and, once commits skip the
    /// fdatasync (`MVCCStore.prepareSyncing`), holds its sync record (SyncRecord.swift).
    let syncState = Mutex<SyncState>(SyncState())
    /// The last transaction id a sync covered (SyncRecord.swift, rule 1).
    let syncedTxn = Atomic<Int>(0)
    /// MDB_NOSYNC is on: commits write into the page cache only.
    let noSync = Atomic<Bool>(false)
    /// A sync of this file failed: after a failed fdatasync the kernel may have dropped the dirty
    /// pages it could not write and a later one may succeed without them, so no later sync may be
    /// trusted (nor recorded) and no commit may follow (the WAL's rule too). Reopening decides.
    let syncFailed = Atomic<Bool>(false)

    struct SyncState: ~Copyable {
        var record: SyncRecord?
    }

    static let maxKeySize = 511

    /// Opened with MDB_NOMETASYNC (each commit fdatasyncs its pages); `MVCCStore` turns MDB_NOSYNC on
    /// in `prepareSyncing` once the file is synced and recorded.
    /// `latestOnlyIfNew`: a file without any revision yet becomes a latest-only store (sys "format"
    /// = 2, `MVCCOptions.latestOnlyKeyTable`); otherwise the file's recorded format decides.
    init(path: String, mapSize: Int, readOnly: Bool = false, latestOnlyIfNew: Bool = false) throws(MVCCError) {
        var e: OpaquePointer?
        try LMDB.check(mdb_env_create(&e))
        guard let env = e else { throw .storage("mdb_env_create returned no environment") }
        do throws(MVCCError) {
            try LMDB.check(mdb_env_set_maxdbs(env, 16))
            try LMDB.check(mdb_env_set_maxreaders(env, 1024))
            try LMDB.check(mdb_env_set_mapsize(env, mapSize))
            var flags = UInt32(MDB_NOTLS | MDB_NOSUBDIR | MDB_NOMETASYNC | MDB_NORDAHEAD)
            if readOnly { flags |= UInt32(MDB_RDONLY) }
            try LMDB.check(mdb_env_open(env, path, flags, 0o644), path)
            // Clear reader slots of dead processes (a SIGKILLed reader would otherwise pin old
            // pages and make the file grow).
            var dead: Int32 = 0
            _ = mdb_reader_check(env, &dead)
        } catch {
            mdb_env_close(env)
            throw error
        }
        self.env = env
        self.path = path
        var st = MDB_stat()
        mdb_env_stat(env, &st)
        pageSize = Int(st.ms_psize)
        // Open (create) the tables in one write transaction and register the comparator.
        var txn: OpaquePointer?
        var handles: [MDB_dbi] = []
        do throws(MVCCError) {
            try LMDB.check(mdb_txn_begin(env, nil, readOnly ? UInt32(MDB_RDONLY) : 0, &txn))
            for name in ["keys", "revs", "sys", "meta", "leases", "leaseKeys", "longKeys", "longRevs"] {
                var dbi: MDB_dbi = 0
                try LMDB.check(mdb_dbi_open(txn, name, readOnly ? 0 : UInt32(MDB_CREATE), &dbi), "open table \(name)")
                handles.append(dbi)
            }
            try LMDB.check(mdb_set_compare(txn, handles[0], keyTableCompare))
            format = try Self.storeFormat(txn!, sys: handles[2], revs: handles[1], create: latestOnlyIfNew && !readOnly)
            try LMDB.check(mdb_txn_commit(txn))
        } catch {
            if txn != nil { mdb_txn_abort(txn) }
            mdb_env_close(env)
            throw error
        }
        keys = handles[0]; revs = handles[1]; sys = handles[2]
        meta = handles[3]; leases = handles[4]; leaseKeys = handles[5]
        longKeys = handles[6]; longRevs = handles[7]
    }

    /// sys "format" of the file; with `create`, a file without revisions gets format 2.
    private static func storeFormat(_ txn: OpaquePointer, sys: MDB_dbi, revs: MDB_dbi, create: Bool) throws(MVCCError) -> Int64 {
        let (rc, stored) = sysValue(txn, sys, "format")
        if rc == 0 {
            guard let v = stored, v.count == 8 else { throw .storage("mvcc: corrupt store format record") }
            return v.withUnsafeBytes { Rec.le($0, 0) }
        }
        guard rc == MDB_NOTFOUND else { try LMDB.check(rc, "read the store format"); return 1 }
        guard create else { return 1 }
        var st = MDB_stat()
        try LMDB.check(mdb_stat(txn, revs, &st))
        guard st.ms_entries == 0, sysValue(txn, sys, "rev").rc == MDB_NOTFOUND else { return 1 }
        var two: [UInt8] = []
        Rec.appendLE(2, to: &two)
        var name = Array("format".utf8)
        let put = name.withUnsafeMutableBytes { nb in
            two.withUnsafeMutableBytes { tb in
                var k = MDB_val(mv_size: nb.count, mv_data: nb.baseAddress)
                var v = MDB_val(mv_size: tb.count, mv_data: tb.baseAddress)
                return mdb_put(txn, sys, &k, &v, 0)
            }
        }
        try LMDB.check(put, "write the store format")
        return 2
    }

    /// mdb_get of a sys entry: (return code, a copy of the value when found).
    private static func sysValue(_ txn: OpaquePointer, _ sys: MDB_dbi, _ name: String) -> (rc: Int32, value: [UInt8]?) {
        var n = Array(name.utf8)
        return n.withUnsafeMutableBytes { nb in
            var k = MDB_val(mv_size: nb.count, mv_data: nb.baseAddress)
            var v = MDB_val()
            let rc = mdb_get(txn, sys, &k, &v)
            guard rc == 0 else { return (rc, nil) }
            return (rc, Array(UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size)))
        }
    }

    deinit {
        syncState.withLock { $0.record?.close() }
        mdb_env_close(env)
        if removeOnClose.load(ordering: .acquiring) {
            unlink(path)
            unlink(path + "-lock")
            unlink(SyncRecord.path(forDataFile: path))
        }
    }

    /// Runs `body` in a read-only transaction (one consistent snapshot).
    func read<T>(_ body: (LMDBTxn) throws(MVCCError) -> T) throws(MVCCError) -> T {
        var t: OpaquePointer?
        try LMDB.check(mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &t))
        let txn = LMDBTxn(env: self, txn: t!)
        defer { mdb_txn_abort(t) }
        return try body(txn)
    }

    /// (file size in bytes as LMDB's last used page says, page size)
    var info: (lastPage: Int, mapSize: Int) {
        var i = MDB_envinfo()
        mdb_env_info(env, &i)
        return (Int(i.me_last_pgno), Int(i.me_mapsize))
    }
}

/// Comparator of the key-major table: LMDB key = user key ‖ 16 revision bytes. Orders by user key
/// (bytewise, shorter prefix first), then by revision, so that all versions of one key are adjacent
/// and in revision order, and keys are in etcd's order.
let keyTableCompare: @convention(c) (UnsafePointer<MDB_val>?, UnsafePointer<MDB_val>?) -> Int32 = { a, b in
    let an = a!.pointee.mv_size, bn = b!.pointee.mv_size
    let ap = a!.pointee.mv_data!, bp = b!.pointee.mv_data!
    let ak = an >= 16 ? an - 16 : 0, bk = bn >= 16 ? bn - 16 : 0
    let c = memcmp(ap, bp, min(ak, bk))
    if c != 0 { return c }
    if ak != bk { return ak < bk ? -1 : 1 }
    let r = memcmp(ap + ak, bp + bk, min(an - ak, bn - bk))
    if r != 0 { return r }
    return an == bn ? 0 : (an < bn ? -1 : 1)
}

/// A transaction handle (read or write); the owner begins and ends it.
struct LMDBTxn {
    let env: LMDBEnv
    let txn: OpaquePointer

    func get(_ dbi: MDB_dbi, _ key: [UInt8]) throws(MVCCError) -> [UInt8]? {
        try getInPlace(dbi, key).map { Array($0) }
    }

    /// The value of `key` as it lies in LMDB's page: valid until the transaction writes or ends.
    func getInPlace(_ dbi: MDB_dbi, _ key: [UInt8]) throws(MVCCError) -> UnsafeRawBufferPointer? {
        var k = MDB_val(), v = MDB_val()
        let rc = key.withUnsafeBytes { kb in
            k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
            return mdb_get(txn, dbi, &k, &v)
        }
        if rc == MDB_NOTFOUND { return nil }
        try LMDB.check(rc)
        return UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size)
    }

    func put(_ dbi: MDB_dbi, _ key: [UInt8], _ value: [UInt8]) throws(MVCCError) {
        try LMDB.check(rawPut(dbi, key, value, flags: 0))
    }

    /// A put of a key greater than every key of the table, as the revs table's are (revisions only
    /// grow): with MDB_APPEND, LMDB fills the last page before it starts a new one, where an ordinary
    /// insert at the end splits the page in half. Falls back to an ordinary put when the key is not
    /// the greatest.
    func append(_ dbi: MDB_dbi, _ key: [UInt8], _ value: [UInt8]) throws(MVCCError) {
        let rc = rawPut(dbi, key, value, flags: UInt32(MDB_APPEND))
        try LMDB.check(rc == MDB_KEYEXIST ? rawPut(dbi, key, value, flags: 0) : rc)
    }

    private func rawPut(_ dbi: MDB_dbi, _ key: [UInt8], _ value: [UInt8], flags: UInt32) -> Int32 {
        key.withUnsafeBytes { kb in
            value.withUnsafeBytes { vb in
                var k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
                var v = MDB_val(mv_size: vb.count, mv_data: UnsafeMutableRawPointer(mutating: vb.baseAddress))
                return mdb_put(txn, dbi, &k, &v, flags)
            }
        }
    }

    /// Deletes a key; false when it was not there.
    @discardableResult
    func del(_ dbi: MDB_dbi, _ key: [UInt8]) throws(MVCCError) -> Bool {
        let rc = key.withUnsafeBytes { kb in
            var k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
            return mdb_del(txn, dbi, &k, nil)
        }
        if rc == MDB_NOTFOUND { return false }
        try LMDB.check(rc)
        return true
    }

    func cursor(_ dbi: MDB_dbi) throws(MVCCError) -> LMDBCursor {
        var c: OpaquePointer?
        try LMDB.check(mdb_cursor_open(txn, dbi, &c))
        return LMDBCursor(c: c!)
    }

    func entries(_ dbi: MDB_dbi) throws(MVCCError) -> Int {
        var st = MDB_stat()
        try LMDB.check(mdb_stat(txn, dbi, &st))
        return Int(st.ms_entries)
    }
}

/// A cursor; closed on deinit (before its transaction ends: cursors are local to one call).
struct LMDBCursor: ~Copyable {
    let c: OpaquePointer
    deinit { mdb_cursor_close(c) }

    typealias Entry = (key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer)

    func op(_ o: MDB_cursor_op) throws(MVCCError) -> Entry? { try ref.op(o) }

    /// First entry >= key.
    func seek(_ key: UnsafeRawBufferPointer) throws(MVCCError) -> Entry? {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val()
        let rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)
        if rc == MDB_NOTFOUND { return nil }
        try LMDB.check(rc)
        return (UnsafeRawBufferPointer(start: k.mv_data, count: k.mv_size),
                UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size))
    }

    func seek(_ key: [UInt8]) throws(MVCCError) -> Entry? { try ref.seek(key) }

    func next() throws(MVCCError) -> Entry? { try op(MDB_NEXT) }
    func prev() throws(MVCCError) -> Entry? { try op(MDB_PREV) }
    func last() throws(MVCCError) -> Entry? { try op(MDB_LAST) }
    func first() throws(MVCCError) -> Entry? { try op(MDB_FIRST) }

    /// Deletes the current entry; `next()` then returns the entry that followed it.
    func deleteCurrent() throws(MVCCError) { try ref.deleteCurrent() }

    /// A non-owning handle (for holders that cannot store a ~Copyable cursor, e.g. optionally).
    var ref: CursorRef { CursorRef(c: c) }
}

/// A cursor that someone else closes (see `LMDBCursor.ref`, `LongKeyStream`).
struct CursorRef {
    let c: OpaquePointer

    func op(_ o: MDB_cursor_op) throws(MVCCError) -> LMDBCursor.Entry? {
        var k = MDB_val(), v = MDB_val()
        let rc = mdb_cursor_get(c, &k, &v, o)
        if rc == MDB_NOTFOUND { return nil }
        try LMDB.check(rc)
        return (UnsafeRawBufferPointer(start: k.mv_data, count: k.mv_size),
                UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size))
    }

    func seek(_ key: [UInt8]) throws(MVCCError) -> LMDBCursor.Entry? {
        var k = MDB_val(), v = MDB_val()
        let rc = key.withUnsafeBytes { kb in
            k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
            return mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)
        }
        if rc == MDB_NOTFOUND { return nil }
        try LMDB.check(rc)
        return (UnsafeRawBufferPointer(start: k.mv_data, count: k.mv_size),
                UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size))
    }

    func next() throws(MVCCError) -> LMDBCursor.Entry? { try op(MDB_NEXT) }
    func prev() throws(MVCCError) -> LMDBCursor.Entry? { try op(MDB_PREV) }
    func last() throws(MVCCError) -> LMDBCursor.Entry? { try op(MDB_LAST) }
    func deleteCurrent() throws(MVCCError) { try LMDB.check(mdb_cursor_del(c, 0)) }
}

enum LMDB {
    static func check(_ rc: Int32, _ context: String = "") throws(MVCCError) {
        if rc == 0 { return }
        if rc == MDB_MAP_FULL || rc == ENOSPC || rc == EFBIG || rc == EDQUOT { throw .noSpace }
        let text = String(cString: mdb_strerror(rc))
        throw .storage(context.isEmpty ? "lmdb: \(text)" : "lmdb: \(context): \(text)")
    }

    /// A commit's check. LMDB reports a short write of its pages as EIO, and a write that runs
    /// into a full disk or the file-size limit is short when its first bytes still fit: then the
    /// error is a full disk (`.noSpace`), as when the write had not fit at all. An EIO with room
    /// left is an I/O error.
    static func checkCommit(_ rc: Int32, file: String) throws(MVCCError) {
        if rc == EIO && outOfSpace(file) { throw .noSpace }
        try check(rc, "commit")
    }

    /// True when the file system of `file` has less than 1 MiB left for it, or the file has reached
    /// the process's file-size limit (RLIMIT_FSIZE) to within 1 MiB.
    static func outOfSpace(_ file: String) -> Bool {
        let margin: UInt64 = 1 << 20
        var fs = statvfs()
        if statvfs(file, &fs) == 0, UInt64(fs.f_bavail) * UInt64(fs.f_frsize) < margin { return true }
        var lim = rlimit()
        var st = stat()
        if getrlimit(Int32(RLIMIT_FSIZE.rawValue), &lim) == 0, lim.rlim_cur != rlim_t.max, stat(file, &st) == 0,
           UInt64(st.st_size) + margin >= UInt64(lim.rlim_cur) { return true }
        return false
    }
}
