#if canImport(Glibc)
import Glibc
#endif
import CLMDB
import KeelAPI
import KeelTestSupport
import Testing
@testable import Storage

@Suite("MVCC sync mode")
struct MVCCSyncModeTests {
    func envFlags(_ store: MVCCStore) throws -> UInt32 {
        var flags: UInt32 = 0
        #expect(mdb_env_get_flags(try store.currentEnv().env, &flags) == 0)
        return flags
    }

    @Test func defaultSyncsEachWrite() throws {
        let t = try TestStore()
        #expect(t.store.options.syncEachWrite)
        let f = try envFlags(t.store)
        #expect(f & UInt32(MDB_NOSYNC) == 0)
        #expect(f & UInt32(MDB_NOMETASYNC) != 0)
    }

    static let noSync = MVCCOptions(quotaBackendBytes: 2 << 30, mapSize: 256 << 20, syncEachWrite: false)

    /// syncEachWrite: false opens LMDB with MDB_NOSYNC; commits are visible at once and survive a
    /// close (which syncs the last one); sync() works; a defragmented store keeps the mode.
    @Test func noSyncModeKeepsCommitsAcrossReopen() throws {
        let t = try TestStore(Self.noSync)
        #expect(try envFlags(t.store) & UInt32(MDB_NOSYNC) != 0)
        for i in 0..<50 { try t.put("k\(i)", "v\(i)") }
        try t.store.write { (w: inout MVCCWriteTxn) throws(MVCCError) in w.setAppliedIndex(77) }
        #expect(try t.get("k49").kvs.first?.value == b("v49"))
        try t.reopen()   // no sync() before close: close syncs
        #expect(!t.store.droppedUnsyncedCommit)
        #expect(t.store.revision == 51)
        #expect(t.store.appliedIndex == 77)
        #expect(try t.get("k7").kvs.first?.value == b("v7"))
        try t.store.sync()
        try t.store.defragment()
        #expect(try envFlags(t.store) & UInt32(MDB_NOSYNC) != 0)
        #expect(try t.get("k", "l").kvs.count == 50)
        try t.reopen(MVCCOptions(quotaBackendBytes: 2 << 30, mapSize: 256 << 20))
        #expect(try envFlags(t.store) & UInt32(MDB_NOSYNC) == 0)
        #expect(try t.get("k", "l").kvs.count == 50 && t.store.appliedIndex == 77)
    }

    /// The data file and its sync record.
    func files(_ store: MVCCStore) throws -> (data: String, record: String) {
        let path = try store.currentEnv().path
        return (path, SyncRecord.path(forDataFile: path))
    }

    /// Rule 1 of SyncRecord.swift: without an fdatasync per commit, at most the newest commit is not
    /// synced: before each commit the previous one is synced and recorded, so the record always
    /// names the newest commit or the one before it.
    @Test func atMostTheNewestCommitIsUnsynced() throws {
        let t = try TestStore(Self.noSync)
        let (data, record) = try files(t.store)
        #expect(SyncRecord.read(path: record) == (try LMDBMetaPages.newestTxnID(path: data)))
        for i in 0..<20 {
            try t.put("k\(i % 5)", "v\(i)")
            let newest = try LMDBMetaPages.newestTxnID(path: data)
            #expect(SyncRecord.read(path: record) == newest - 1, "after put \(i)")
        }
        try t.store.sync()
        #expect(SyncRecord.read(path: record) == (try LMDBMetaPages.newestTxnID(path: data)))
        // A sync with nothing new committed leaves the record as it is.
        try t.store.sync()
        #expect(SyncRecord.read(path: record) == (try LMDBMetaPages.newestTxnID(path: data)))
    }

    /// Rules 2 and 3: a system crash loses an arbitrary part of the newest (unsynced) commit's pages,
    /// its meta page included or not. Simulated by a disk image mixing, page by page at random, the
    /// file as synced with the file after one more commit (that rewrote every key, reusing freed
    /// pages), with the newer meta page: the store opens at the synced snapshot, exactly (its hash),
    /// and goes on. Seeded; the seed is in the failure message.
    @Test(arguments: [0.0, 0.5, 1.0])
    func aSystemCrashThatLostTheNewestCommitOpensTheSyncedOne(newPageShare: Double) throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SplitMix64(seed: seed)
        let t = try TestStore(Self.noSync)
        // History with freed pages to reuse: updates of the same keys over many commits.
        for round in 0..<20 {
            try t.store.write { (w: inout MVCCWriteTxn) throws(MVCCError) in
                for k in 0..<200 { _ = try w.put(putReq("key\(k)", "round\(round)-" + String(repeating: "x", count: k % 50))) }
            }
        }
        try t.store.write { (w: inout MVCCWriteTxn) throws(MVCCError) in w.setAppliedIndex(500) }
        try t.store.sync()
        let (data, _) = try files(t.store)
        let synced = fileBytes(data)
        let syncedHash = try t.store.hash(), syncedRevision = t.store.revision
        let syncedTxn = try LMDBMetaPages.newestTxnID(path: data)
        // The commit a crash interrupts: every key rewritten, new keys, a later applied index.
        try t.store.write { (w: inout MVCCWriteTxn) throws(MVCCError) in
            for k in 0..<300 { _ = try w.put(putReq("key\(k)", "lost-" + String(repeating: "y", count: k % 70))) }
            w.setAppliedIndex(600)
        }
        let after = fileBytes(data)
        #expect(try LMDBMetaPages.newestTxnID(path: data) == syncedTxn + 1)
        let pageSize = try t.store.currentEnv().pageSize
        // The image: pages 0/1 (metas) from the newer file (the new meta reached the disk), others mixed.
        var image = after
        for p in 2..<(after.count / pageSize) where p * pageSize < synced.count {
            if Double.random(in: 0..<1, using: &rng) >= newPageShare {
                image.replaceSubrange(p * pageSize..<(p + 1) * pageSize, with: synced[p * pageSize..<(p + 1) * pageSize])
            }
        }
        let crashed = TempDir("keel-crashimage")
        defer { crashed.cleanup() }
        let name = String(data.split(separator: "/").last!)
        writeBytes(crashed.path + "/" + name, at: 0, image)
        writeBytes(crashed.path + "/" + name + "-synced", at: 0, fileBytes(data + "-synced"))
        let store = try openStore(crashed.path, Self.noSync)
        defer { store.close() }
        #expect(store.droppedUnsyncedCommit, "seed \(seed)")
        #expect(store.revision == syncedRevision && store.appliedIndex == 500, "seed \(seed)")
        #expect(try store.hash() == syncedHash, "seed \(seed)")
        // It goes on: a write, a reopen, the write is there.
        try store.write { (w: inout MVCCWriteTxn) throws(MVCCError) in _ = try w.put(putReq("key0", "again")) }
        store.close()
        let again = try openStore(crashed.path, Self.noSync)
        defer { again.close() }
        #expect(!again.droppedUnsyncedCommit)
        var r = Etcdserverpb.RangeRequest()
        r.key = b("key0")
        #expect(try again.range(r).kvs.first?.value == b("again"))
    }

    /// After a failed sync nothing later may be trusted: the store refuses further syncs and every
    /// commit (a failing fdatasync is simulated by the flag the failure sets).
    @Test func afterAFailedSyncNoCommitFollows() throws {
        let t = try TestStore(Self.noSync)
        try t.put("a", "1")
        try t.store.currentEnv().syncFailed.store(true, ordering: .releasing)
        #expect(throws: MVCCStore.syncFailedError) { try t.store.sync() }
        #expect(throws: MVCCStore.syncFailedError) { try t.put("b", "2") }
        #expect(try t.get("b").kvs.isEmpty)
        // A reopen decides from the disk: "a"'s commit was never synced (close's sync was refused
        // too), so it is dropped (the server's WAL would replay it); the store works again.
        try t.reopen()
        #expect(t.store.droppedUnsyncedCommit && t.store.revision == 1)
        try t.put("b", "2")
        #expect(try t.get("b").kvs.first?.value == b("2"))
    }

    /// A newest commit more than one past the record cannot come from the rules: another writer committed
    /// without keeping the record (an older Keel; it synced its commits). Open takes the file as it is.
    @Test func commitsWithoutTheRecordAreKept() throws {
        let t = try TestStore(Self.noSync)
        try t.put("k0", "v")
        let (data, record) = try files(t.store)
        let recorded = SyncRecord.read(path: record)
        t.store.close()
        // An older Keel: an fdatasync per commit, the record left alone.
        let old = try openStore(t.dir.path, MVCCOptions(quotaBackendBytes: 2 << 30, mapSize: 256 << 20))
        // (this Keel removes the record in that mode; put it back as the older one would have left it)
        var rec = try SyncRecord(path: record)
        try rec.write(txnID: try #require(recorded))
        rec.close()
        for i in 1..<4 {
            try old.write { (w: inout MVCCWriteTxn) throws(MVCCError) in _ = try w.put(putReq("k\(i)", "v")) }
        }
        old.close()
        #expect(try LMDBMetaPages.newestTxnID(path: data) > recorded! + 1)
        t.store = try openStore(t.dir.path, Self.noSync)
        #expect(t.store.openedAfterCommitsWithoutRecord && !t.store.droppedUnsyncedCommit)
        let k3 = try t.get("k3").kvs.count
        #expect(t.store.revision == 5 && k3 == 1)
        // From here on the record is this Keel's again.
        #expect(SyncRecord.read(path: record) == (try LMDBMetaPages.newestTxnID(path: data)))
    }

    /// Bad input at open: a data file that is not LMDB's, beside a sync record, is refused with a clear
    /// error before LMDB touches it; a record whose slots are both damaged counts as no record.
    @Test func badFilesAtOpen() throws {
        let t = try TestStore(Self.noSync)
        try t.put("k", "v")
        let (data, record) = try files(t.store)
        t.store.close()
        // Both record slots damaged (CRC no longer matches): no record, the file opens as it is.
        var rec = fileBytes(record)
        rec[20] ^= 0xFF; rec[512 + 20] ^= 0xFF
        writeBytes(record, at: 0, rec)
        #expect(SyncRecord.read(path: record) == nil)
        t.store = try openStore(t.dir.path, Self.noSync)
        #expect(t.store.revision == 2 && !t.store.droppedUnsyncedCommit)
        t.store.close()
        // The data file's first meta page overwritten: refused, named.
        writeBytes(data, at: 16, [UInt8](repeating: 0x5A, count: 136))
        #expect {
            _ = try openStore(t.dir.path, Self.noSync)
        } throws: { e in
            guard case .storage(let m) = e as? MVCCError else { return false }
            return m.contains(data) && (m.contains("page size") || m.contains("is not LMDB 0.9's"))
        }
    }

    /// Opened with an fdatasync per commit again, the store removes the record (it would misjudge
    /// those commits after a later crash); a defragment in no-sync mode records its new file.
    @Test func recordsFollowTheModeAndTheFile() throws {
        let t = try TestStore(Self.noSync)
        for i in 0..<10 { try t.put("k\(i)", "v\(i)") }
        try t.store.defragment()
        let (data, record) = try files(t.store)
        #expect(SyncRecord.read(path: record) == (try LMDBMetaPages.newestTxnID(path: data)))
        try t.put("k0", "after-defrag")
        try t.reopen()
        #expect(try t.get("k0").kvs.first?.value == b("after-defrag"))
        #expect(try FileIO.listDir(t.dir.path).filter { $0.hasSuffix("-synced") } == [String(record.split(separator: "/").last!)])
        try t.reopen(MVCCOptions(quotaBackendBytes: 2 << 30, mapSize: 256 << 20))
        #expect(!FileIO.exists(record))
        #expect(try t.get("k", "l").kvs.count == 10)
    }
}
