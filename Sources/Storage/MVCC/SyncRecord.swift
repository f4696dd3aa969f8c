#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// Commits without fdatasync that stay safe across a system crash (MVCCOptions.syncEachWrite = false).
//
// LMDB with MDB_NOSYNC writes a commit's pages and then its meta page into the page cache; the kernel
// may write them back in any order, so after a system crash the newest meta page can point at pages
// that never reached the disk. LMDB 0.9.24 has no MDB_PREVSNAPSHOT to open the previous meta instead.
// The store gets the same effect with three rules:
//
// 1. At most one commit is not synced: a commit waits until the previous one is synced
//    (`MVCCStore.sync`, normally already done by the server's background sync). So the older of the
//    two meta pages always describes a snapshot whose pages are all on disk.
// 2. That snapshot is intact even if the newest commit's pages are not: LMDB never reuses a page that
//    the previous snapshot still uses. A transaction with id N reuses only pages freed by transactions
//    below N-1 (mdb_find_oldest starts at N-1, mdb_page_alloc takes free-list records with ids below
//    it), and a page freed by transaction F is in no snapshot from F on: so neither snapshot N-1 nor
//    snapshot N-2 is touched by N, and the open transaction after N touches neither N-1 nor N.
// 3. After each sync the synced transaction id is written to `<db file>-synced` (this file's
//    `SyncRecord`, fdatasynced) before the next commit may start. On open, if the newest meta page
//    names the transaction after the recorded one, that one may be incomplete on disk: its meta page
//    is overwritten with the older one (`LMDBMetaPages.revertNewest`), and the store opens at the
//    recorded snapshot. Its applied Raft index is older; the server replays the rest from the WAL,
//    which it releases only after a sync (and so after a record) covering it. After a process crash
//    without a system crash the newest snapshot was complete, and dropping it is merely redundant work.
//
// A newest meta more than one transaction past the record cannot come from these rules: other commits
// were made by a writer that keeps no record (a Keel from before this file, or one run with
// KEEL_BACKEND_SYNC_EACH_COMMIT=1 is not that: it removes the record; mdb tools), and such a writer
// syncs its own commits. Open then takes the file as it is (reverting would pick a snapshot the
// record does not describe) and says so (`MVCCStore.openedAfterCommitsWithoutRecord`).

/// The id of the last synced LMDB transaction of one data file, in two alternating 64-byte slots (512
/// bytes apart, so a torn write of one leaves the other): magic, sequence, txn id, CRC-32C.
struct SyncRecord {
    static let magic: UInt64 = 0x314E_5953_4C45_454B   // "KEELSYN1" little-endian
    static let slotSize = 512
    let path: String
    private let fd: Int32
    private var sequence: UInt64

    static func path(forDataFile file: String) -> String { file + "-synced" }

    /// The newest valid slot's transaction id, nil when the file is missing or has no valid slot.
    static func read(path: String) -> UInt64? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        return readSlots(fd).max { $0.sequence < $1.sequence }?.txnID
    }

    /// Opens (creating) the record file for writing; the sequence continues from what it holds.
    init(path: String) throws(MVCCError) {
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .storage("open \(path): \(String(cString: strerror(errno)))") }
        self.path = path
        self.fd = fd
        sequence = Self.readSlots(fd).map(\.sequence).max() ?? 0
    }

    func close() { Glibc.close(fd) }

    /// Records `txnID` as synced: written into the older slot, then fdatasynced.
    mutating func write(txnID: UInt64) throws(MVCCError) {
        sequence += 1
        var slot = [UInt8](repeating: 0, count: 28)
        put(&slot, 0, Self.magic)
        put(&slot, 8, sequence)
        put(&slot, 16, txnID)
        let crc = CRC32C.checksum(Array(slot[0..<24]))
        for i in 0..<4 { slot[24 + i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
        let offset = off_t(Int(sequence & 1) * Self.slotSize)
        let n = slot.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, offset) }
        guard n == slot.count else { throw .storage("write \(path): \(n < 0 ? String(cString: strerror(errno)) : "short write")") }
        guard fdatasync(fd) == 0 else { throw .storage("fdatasync \(path): \(String(cString: strerror(errno)))") }
    }

    private static func readSlots(_ fd: Int32) -> [(sequence: UInt64, txnID: UInt64)] {
        var out: [(UInt64, UInt64)] = []
        for s in 0..<2 {
            var b = [UInt8](repeating: 0, count: 28)
            let n = b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(s * slotSize)) }
            guard n == b.count, get(b, 0) == magic else { continue }
            let crc = CRC32C.checksum(Array(b[0..<24]))
            let stored = (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[24 + $1]) << (8 * UInt32($1)) }
            guard crc == stored else { continue }
            out.append((get(b, 8), get(b, 16)))
        }
        return out
    }

    private func put(_ b: inout [UInt8], _ at: Int, _ v: UInt64) {
        for i in 0..<8 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }

    private static func get(_ b: [UInt8], _ at: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) }
    }
}

/// LMDB 0.9's two meta pages (pages 0 and 1 of the data file), read and rewritten without LMDB, while
/// no environment has the file open. Layout on 64-bit Linux: a 16-byte page header, then MDB_meta:
/// magic (u32), version (u32), address, map size, two 48-byte MDB_db (the first one's md_pad holds the
/// page size), last page, txn id: 136 bytes.
enum LMDBMetaPages {
    static let pageHeader = 16
    static let metaSize = 136
    static let magic: UInt32 = 0xBEEF_C0DE

    struct Meta { var slot: Int; var txnID: UInt64; var bytes: [UInt8] }

    /// Both meta pages of `path`; throws when the file is not an LMDB 0.9 data file this layout fits.
    static func read(_ fd: Int32, path: String) throws(MVCCError) -> (metas: [Meta], pageSize: Int) {
        var first = [UInt8](repeating: 0, count: pageHeader + metaSize)
        guard pread(fd, &first, first.count, 0) == first.count else { throw .storage("mvcc: \(path): no meta page") }
        let pageSize = Int(u32(first, pageHeader + 24))
        guard pageSize >= 512, pageSize <= 65536, pageSize & (pageSize - 1) == 0 else {
            throw .storage("mvcc: \(path): unexpected page size \(pageSize) in the meta page")
        }
        var metas: [Meta] = []
        for slot in 0..<2 {
            var b = [UInt8](repeating: 0, count: metaSize)
            guard pread(fd, &b, metaSize, off_t(slot * pageSize + pageHeader)) == metaSize,
                  u32(b, 0) == magic, u32(b, 4) == 1 else {
                throw .storage("mvcc: \(path): meta page \(slot) is not LMDB 0.9's")
            }
            let txn = (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[128 + $1]) << (8 * UInt64($1)) }
            metas.append(Meta(slot: slot, txnID: txn, bytes: b))
        }
        return (metas, pageSize)
    }

    /// The newest meta page's transaction id (what LMDB would open).
    static func newestTxnID(path: String) throws(MVCCError) -> UInt64 {
        let fd = try openFile(path, O_RDONLY)
        defer { Glibc.close(fd) }
        return try read(fd, path: path).metas.map(\.txnID).max() ?? 0
    }

    /// Makes LMDB open the older snapshot: the newest meta page is overwritten with the older one
    /// (both then name the same transaction; LMDB's next commit writes the overwritten slot again),
    /// and the file is fdatasynced. Returns the transaction id LMDB opens from now on.
    @discardableResult
    static func revertNewest(path: String) throws(MVCCError) -> UInt64 {
        let fd = try openFile(path, O_RDWR)
        defer { Glibc.close(fd) }
        let (metas, pageSize) = try read(fd, path: path)
        let newer = metas[0].txnID >= metas[1].txnID ? metas[0] : metas[1]
        let older = metas[1 - newer.slot]
        let n = older.bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, metaSize, off_t(newer.slot * pageSize + pageHeader)) }
        guard n == metaSize, fdatasync(fd) == 0 else {
            throw .storage("mvcc: \(path): rewriting meta page \(newer.slot): \(String(cString: strerror(errno)))")
        }
        return older.txnID
    }

    private static func openFile(_ path: String, _ flags: Int32) throws(MVCCError) -> Int32 {
        let fd = Glibc.open(path, flags | O_CLOEXEC)
        guard fd >= 0 else { throw .storage("open \(path): \(String(cString: strerror(errno)))") }
        return fd
    }

    private static func u32(_ b: [UInt8], _ at: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[at + $1]) << (8 * UInt32($1)) }
    }
}
