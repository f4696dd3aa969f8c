import CLMDB
import KeelAPI
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

    /// syncEachWrite: false opens LMDB with MDB_NOSYNC; commits are visible at once and survive a
    /// close without sync() (they are in the page cache, as after a process crash); sync() works;
    /// a defragmented store keeps the mode.
    @Test func noSyncModeKeepsCommitsAcrossReopen() throws {
        let opts = MVCCOptions(quotaBackendBytes: 2 << 30, mapSize: 256 << 20, syncEachWrite: false)
        let t = try TestStore(opts)
        #expect(try envFlags(t.store) & UInt32(MDB_NOSYNC) != 0)
        for i in 0..<50 { try t.put("k\(i)", "v\(i)") }
        try t.store.write { (w: inout MVCCWriteTxn) throws(MVCCError) in w.setAppliedIndex(77) }
        #expect(try t.get("k49").kvs.first?.value == b("v49"))
        try t.reopen()   // no sync() before close
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
}
