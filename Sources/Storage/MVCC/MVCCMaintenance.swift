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
        let lc = try cursor(env.longRevs)
        var e = try rc.first()
        var k: [UInt8] = []
        while let cur = e {
            let main = Int64(bitPattern: Rec.be(cur.key, 0)), sub = Int64(bitPattern: Rec.be(cur.key, 8))
            if main > rev { break }
            let uk = Array(try Rec.revEntryKey(cur.value))
            if Rec.isFull(cur.value) {
                // latest-only store: the entry is the version; a newer one <= rev is found from the
                // key's latest entry back through the previous-version pointers
                let f = try Rec.parseFull(cur.value)
                var kv = Mvccpb.KeyValue()
                if f.tombstone { kv.key = uk } else {
                    kv = try withBytes(f.record) { (r) throws(MVCCError) in try Rec.decode(key: f.key, mod: main, value: r, revs: self) }
                }
                var include = true
                if main <= compactRev {
                    if f.tombstone { include = false }
                    else if try newerVersion(kc, key: uk, than: main, sub, atRev: rev) { include = false }
                }
                if include {
                    crc = Self.hashVersion(crc, main, sub, tomb: f.tombstone, kv, &k)
                }
                e = try rc.next()
                continue
            }
            let tomb = cur.value[0] == Rec.tombstone
            // the full key (of any length) is hashed, as etcd marshals it
            let rec = try version(kc.ref, lc.ref, key: uk, main: main, sub: sub,
                                  neighbor: main <= compactRev && !tomb ? .next : .none)
            var kv = Mvccpb.KeyValue()
            if tomb { kv.key = uk } else { kv = try withBytes(uk) { (p) throws(MVCCError) in try Rec.decode(key: p, mod: main, value: rec.record, revs: self, revEntry: cur.value) } }
            var include = true
            if main <= compactRev {
                if tomb { include = false } else if let n = rec.neighbor, n.main <= rev { include = false }
            }
            if include { crc = Self.hashVersion(crc, main, sub, tomb: tomb, kv, &k) }
            e = try rc.next()
        }
        return crc
    }

    /// etcd's revision key (main BE ‖ '_' ‖ sub BE, 't' for a tombstone) and the marshaled KeyValue,
    /// added to `crc`; `k` is scratch space.
    static func hashVersion(_ crc: UInt32, _ main: Int64, _ sub: Int64, tomb: Bool, _ kv: Mvccpb.KeyValue,
                            _ k: inout [UInt8]) -> UInt32 {
        k.removeAll(keepingCapacity: true)
        Rec.appendBE(UInt64(bitPattern: main), to: &k)
        k.append(UInt8(ascii: "_"))
        Rec.appendBE(UInt64(bitPattern: sub), to: &k)
        if tomb { k.append(UInt8(ascii: "t")) }
        return CRC32C.checksum(kv.serializedBytes(), continuing: CRC32C.checksum(k, continuing: crc))
    }

    /// Latest-only store: whether short key `key` has a version (put or tombstone) newer than
    /// (main, sub) and at most `atRev`.
    func newerVersion(_ kc: borrowing LMDBCursor, key: [UInt8], than main: Int64, _ sub: Int64, atRev: Int64) throws(MVCCError) -> Bool {
        guard let x = try Self.firstEntry(kc, of: key) else { return false }
        var m = x.main, sb = x.sub
        // walk back from the latest to the newest version <= atRev
        while m > atRev {
            guard let f = try fullVersion(m, sb), f.prevMain != 0 else { return false }
            m = f.prevMain; sb = f.prevSub
        }
        return m > main || (m == main && sb > sub)
    }

    /// CRC-32C over every entry (LMDB key and value) of the keys, revs, leases, leaseKeys, meta,
    /// longKeys and longRevs tables, in that order (the last two are empty without long keys, so a
    /// store without them hashes as before) (the store-internal counters are left out, like etcd's consistent index).
    func hashAll() throws(MVCCError) -> UInt32 {
        var crc: UInt32 = 0
        for dbi in [env.keys, env.revs, env.leases, env.leaseKeys, env.meta, env.longKeys, env.longRevs] {
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

    /// Copies every table of `old` (one read snapshot) in key order into a new LMDB file with
    /// MDB_APPEND, so pages are filled completely (LMDB's compacting copy only drops free pages; it
    /// keeps the half-empty pages random inserts and compaction leave), then syncs it.
    static func rebuild(from old: LMDBEnv, into path: String, mapSize: Int) throws(MVCCError) {
        let new = try LMDBEnv(path: path, mapSize: mapSize)
        try old.read { (src) throws(MVCCError) in
            var w: OpaquePointer?
            try LMDB.check(mdb_txn_begin(new.env, nil, 0, &w))
            do throws(MVCCError) {
                for (a, b) in [(old.keys, new.keys), (old.revs, new.revs), (old.sys, new.sys), (old.meta, new.meta),
                               (old.leases, new.leases), (old.leaseKeys, new.leaseKeys),
                               (old.longKeys, new.longKeys), (old.longRevs, new.longRevs)] {
                    let c = try src.cursor(a)
                    var e = try c.first()
                    while let cur = e {
                        var k = MDB_val(mv_size: cur.key.count, mv_data: UnsafeMutableRawPointer(mutating: cur.key.baseAddress))
                        var v = MDB_val(mv_size: cur.value.count, mv_data: UnsafeMutableRawPointer(mutating: cur.value.baseAddress))
                        try LMDB.check(mdb_put(w, b, &k, &v, UInt32(MDB_APPEND)), "defragment copy")
                        e = try c.next()
                    }
                }
            } catch {
                mdb_txn_abort(w)
                throw error
            }
            try LMDB.check(mdb_txn_commit(w), "defragment commit")
        }
        try LMDB.check(mdb_env_sync(new.env, 1), "defragment sync")
    }

    /// Rewrites the DB compactly into a new file and switches to it (etcd's defrag): dbSize shrinks
    /// to about the live data, with full pages. Reads may go on (they finish on the old file, which is deleted when the
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
            unlink(tmp); unlink(tmp + "-lock")
            do throws(MVCCError) {
                try Self.rebuild(from: old, into: tmp, mapSize: options.effectiveMapSize)
            } catch {
                unlink(tmp); unlink(tmp + "-lock")
                throw error
            }
            unlink(tmp + "-lock")
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
                try Self.prepareSyncing(new, options: options, directory: directory)
            } catch {
                mdb_txn_abort(wtxn)
                unlink(tmp); unlink(final); unlink(final + "-lock"); unlink(SyncRecord.path(forDataFile: final))
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

/// LMDB statistics of one table (for benchmarks and diagnostics).
public struct MVCCTableStats: Sendable, CustomStringConvertible {
    public var name: String
    public var entries: Int
    public var depth: Int
    public var branchPages: Int
    public var leafPages: Int
    public var overflowPages: Int
    public var description: String {
        "\(name): \(entries) entries, depth \(depth), \(branchPages) branch + \(leafPages) leaf + \(overflowPages) overflow pages"
    }
}

extension MVCCStore {
    public func tableStats() throws(MVCCError) -> [MVCCTableStats] {
        let env = try currentEnv()
        return try env.read { (t) throws(MVCCError) in
            var out: [MVCCTableStats] = []
            for (name, dbi) in [("keys", env.keys), ("revs", env.revs), ("leases", env.leases),
                                ("leaseKeys", env.leaseKeys), ("meta", env.meta), ("sys", env.sys),
                                ("longKeys", env.longKeys), ("longRevs", env.longRevs)] {
                var st = MDB_stat()
                try LMDB.check(mdb_stat(t.txn, dbi, &st))
                out.append(MVCCTableStats(name: name, entries: Int(st.ms_entries), depth: Int(st.ms_depth),
                                          branchPages: Int(st.ms_branch_pages), leafPages: Int(st.ms_leaf_pages),
                                          overflowPages: Int(st.ms_overflow_pages)))
            }
            return out
        }
    }
}
