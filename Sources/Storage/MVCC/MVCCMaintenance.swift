#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLMDB
import KeelAPI

extension LMDBTxn {
    /// etcd's HashByRev (v3.5 mvcc/hash.go), byte for byte: CRC-32C of the bucket name "key", then
    /// for each stored revision <= `rev` in revision order, etcd's revision key (main BE ‖ '_' ‖ sub BE,
    /// plus 't' for a tombstone) and the marshaled mvccpb.KeyValue (a tombstone: only the key).
    /// Revisions <= the compacted revision count only if they are still the newest version of their
    /// key at `rev` and not tombstones (etcd's `keep` set), so members that compacted at different
    /// moments agree.
    func hashKV(rev: Int64, compactRev: Int64) throws(MVCCError) -> UInt32 {
        var crc = CRC32C.checksum(Array("key".utf8))
        let rc = try cursor(env.revs)
        let kc = try cursor(env.keys)
        var e = try rc.first()
        var k: [UInt8] = []
        while let cur = e {
            let main = Int64(bitPattern: Rec.be(cur.key, 0)), sub = Int64(bitPattern: Rec.be(cur.key, 8))
            if main > rev { break }
            let uk = Array(cur.value[1...])
            let tomb = cur.value[0] == Rec.tombstone
            guard let rec = try kc.seek(Rec.keyTableKey(uk, main, sub)) else {
                throw .storage("mvcc: revision \(main).\(sub) missing from the key table")
            }
            var kv = Mvccpb.KeyValue()
            if tomb { kv.key = uk } else { kv = try Rec.decode(key: Rec.splitKey(rec.key).key, mod: main, value: rec.value) }
            var include = true
            if main <= compactRev {
                if tomb { include = false } else if let n = try kc.next() {
                    let ns = Rec.splitKey(n.key)
                    if ns.main <= rev && Rec.compare(ns.key, uk) == 0 { include = false }
                }
            }
            if include {
                k.removeAll(keepingCapacity: true)
                Rec.appendBE(UInt64(bitPattern: main), to: &k)
                k.append(UInt8(ascii: "_"))
                Rec.appendBE(UInt64(bitPattern: sub), to: &k)
                if tomb { k.append(UInt8(ascii: "t")) }
                crc = CRC32C.checksum(k, continuing: crc)
                crc = CRC32C.checksum(kv.serializedBytes(), continuing: crc)
            }
            e = try rc.next()
        }
        return crc
    }

    /// CRC-32C over every entry (LMDB key and value) of the keys, revs, leases, leaseKeys and meta
    /// tables, in that order (the store-internal counters are left out, like etcd's consistent index).
    func hashAll() throws(MVCCError) -> UInt32 {
        var crc: UInt32 = 0
        for dbi in [env.keys, env.revs, env.leases, env.leaseKeys, env.meta] {
            let c = try cursor(dbi)
            var e = try c.first()
            while let cur = e {
                crc = CRC32C.checksum(cur.key, continuing: crc)
                crc = CRC32C.checksum(cur.value, continuing: crc)
                e = try c.next()
            }
        }
        return crc
    }

    /// Pages on LMDB's free list (reusable, not in use by the current data).
    func freePages() throws(MVCCError) -> Int {
        let c = try cursor(0)   // FREE_DBI
        var n = 0
        var e = try c.first()
        while let cur = e {
            if cur.value.count >= MemoryLayout<Int>.size {
                n += cur.value.loadUnaligned(as: Int.self)   // an IDL: count, then page numbers
            }
            e = try c.next()
        }
        return n
    }
}

extension MVCCStore {
    /// Maintenance.Hash: CRC-32C of the whole key space, history, leases and meta records (Keel's
    /// own definition: etcd hashes its bbolt file, which no other implementation can reproduce).
    public func hash() throws(MVCCError) -> UInt32 {
        try currentEnv().read { (t) throws(MVCCError) in try t.hashAll() }
    }

    /// Maintenance.HashKV (etcd's semantics and bytes, see LMDBTxn.hashKV). revision 0 = current.
    /// Returns the hash, the compacted revision and the current store revision (for the header).
    /// `.compacted` when 0 < revision <= compacted revision, `.futureRevision` beyond the current.
    public func hashKV(revision: Int64) throws(MVCCError) -> (hash: UInt32, compactRevision: Int64, revision: Int64) {
        try currentEnv().read { (t) throws(MVCCError) in
            let (cur, compact) = try t.revisions()
            if revision > 0 && revision <= compact { throw .compacted(compactRevision: compact) }
            if revision > cur { throw .futureRevision }
            let rev = revision <= 0 ? cur : revision
            return (try t.hashKV(rev: rev, compactRev: compact), compact, cur)
        }
    }

    /// Bytes of the DB file that LMDB has allocated (its highest page; the file never shrinks
    /// except by `defragment`).
    public var dbSize: Int64 {
        guard let env = try? currentEnv() else { return 0 }
        return Int64((env.info.lastPage + 1) * env.pageSize)
    }

    /// Bytes in use by live pages: dbSize minus the pages on LMDB's free list.
    public var dbSizeInUse: Int64 {
        guard let env = try? currentEnv(),
              let free = try? env.read({ (t) throws(MVCCError) in try t.freePages() }) else { return 0 }
        return Int64((env.info.lastPage + 1 - free) * env.pageSize)
    }

    /// Writes a consistent, compacted copy of the store (an LMDB file) to `fd` (from its current
    /// offset). Concurrent reads and writes go on; the copy is one snapshot. The caller fsyncs `fd`.
    public func writeSnapshot(to fd: Int32) throws(MVCCError) {
        try LMDB.check(mdb_env_copyfd2(try currentEnv().env, fd, UInt32(MDB_CP_COMPACT)), "snapshot copy")
    }

    /// Installs a snapshot file (made by `writeSnapshot`) as the store in `directory`, replacing what
    /// was there. The store must not be open. Validated (opened, counters read) before it replaces
    /// anything; crash-safe (temp file, fsync, rename, directory fsync).
    public static func restore(snapshotFile: String, into directory: String) throws(MVCCError) {
        let lock: DirectoryLock
        do { lock = try DirectoryLock(directory: directory) } catch { throw .storage("\(error)") }
        defer { lock.release() }
        let names: [String]
        do { names = try FileIO.listDir(directory) } catch { throw .storage("\(error)") }
        var gen: UInt64 = 0
        for n in names where n.hasPrefix("db-") && n.hasSuffix(".mdb") && n.count == 23 {
            if let g = UInt64(n.dropFirst(3).prefix(16), radix: 16) { gen = max(gen, g) }
        }
        let final = directory + "/" + dbName(gen + 1)
        let tmp = final + ".tmp"
        do {
            let src = try FileIO.open(snapshotFile, O_RDONLY)
            defer { Glibc.close(src) }
            let bytes = try FileIO.readAll(src, path: snapshotFile)
            let dst = try FileIO.open(tmp, O_WRONLY | O_CREAT | O_TRUNC)
            defer { Glibc.close(dst) }
            try bytes.withUnsafeBytes { try FileIO.pwriteAll(dst, $0, at: 0, path: tmp) }
            try FileIO.check(fsync(dst), "fsync", tmp)
        } catch let e as StorageIOError {
            unlink(tmp)
            throw e.isNoSpace ? .noSpace : .storage("\(e)")
        } catch {
            unlink(tmp)
            throw .storage("\(error)")
        }
        do throws(MVCCError) {
            let env = try LMDBEnv(path: tmp, mapSize: 1 << 30)
            _ = try env.read { (t) throws(MVCCError) in try t.revisions() }
        } catch {
            unlink(tmp); unlink(tmp + "-lock")
            throw .storage("mvcc: not a valid snapshot (\(snapshotFile)): \(error.message)")
        }
        unlink(tmp + "-lock")
        guard rename(tmp, final) == 0 else {
            let e = errno
            unlink(tmp)
            throw .storage("rename \(tmp): \(String(cString: strerror(e)))")
        }
        do { try FileIO.fsyncDir(directory) } catch { throw .storage("\(error)") }
        for n in names where n.hasPrefix("db-") && n != dbName(gen + 1) { unlink(directory + "/" + n) }
    }

    /// Rewrites the DB compactly into a new file and switches to it (etcd's defrag): dbSize shrinks
    /// to about dbSizeInUse. Reads may go on (they finish on the old file, which is deleted when the
    /// last of them ends). Writes should be paused by the caller (the apply loop): a write that
    /// commits while the copy runs makes the copy stale, and defragment then throws
    /// `.storage("mvcc: writes during defragment ...")` after 3 attempts; no write is ever lost.
    public func defragment() throws(MVCCError) {
        for _ in 0..<3 {
            let old = try currentEnv()
            let gen = generation
            let before = old.lastTxnID
            let final = directory + "/" + Self.dbName(gen + 1)
            let tmp = final + ".tmp"
            let fd: Int32
            do { fd = try FileIO.open(tmp, O_WRONLY | O_CREAT | O_TRUNC) } catch { throw .storage("\(error)") }
            let rc = mdb_env_copyfd2(old.env, fd, UInt32(MDB_CP_COMPACT))
            let syncRC = rc == 0 ? fsync(fd) : 0
            let syncErr = errno
            Glibc.close(fd)
            if rc != 0 { unlink(tmp); try LMDB.check(rc, "defragment copy") }
            if syncRC != 0 { unlink(tmp); try LMDB.check(syncErr, "defragment fsync") }
            // Block writers on the old file while we switch: begin a write txn there.
            var wtxn: OpaquePointer?
            try LMDB.check(mdb_txn_begin(old.env, nil, 0, &wtxn))
            if old.lastTxnID != before {
                mdb_txn_abort(wtxn)
                unlink(tmp)
                continue
            }
            let new: LMDBEnv
            do throws(MVCCError) {
                guard rename(tmp, final) == 0 else { throw .storage("rename \(tmp): \(String(cString: strerror(errno)))") }
                do { try FileIO.fsyncDir(directory) } catch { throw .storage("\(error)") }
                new = try LMDBEnv(path: final, mapSize: options.effectiveMapSize)
            } catch {
                mdb_txn_abort(wtxn)
                unlink(tmp); unlink(final); unlink(final + "-lock")
                throw error
            }
            swap(to: new, generation: gen + 1)
            old.removeOnClose.store(true, ordering: .releasing)
            mdb_txn_abort(wtxn)
            return
        }
        throw .storage("mvcc: writes during defragment (3 attempts); pause writes and retry")
    }
}

extension LMDBEnv {
    var lastTxnID: Int {
        var i = MDB_envinfo()
        mdb_env_info(env, &i)
        return Int(i.me_last_txnid)
    }
}
