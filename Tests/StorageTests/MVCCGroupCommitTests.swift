import KeelAPI
import Testing
@testable import Storage

/// `MVCCOpenWrite`: several batches in one LMDB write transaction, one commit (the apply loop's
/// group commit). Readers see none of it before the commit, all of it after; abort and a broken
/// batch leave the store as it was.
@Suite("MVCC group commit")
struct MVCCGroupCommitTests {
    @Test func batchesAreInvisibleUntilTheCommitAndAllVisibleAfterIt() throws {
        let t = try TestStore()
        try t.put("before", "0")                      // revision 2
        let w = try t.store.beginWrite()
        let r1 = try w.batch { (txn) throws(MVCCError) in
            let p = try txn.put(putReq("a", "1"))
            txn.setAppliedIndex(10)
            #expect(txn.events.count == 1)
            return p.header?.revision
        }
        let r2 = try w.batch { (txn) throws(MVCCError) in
            _ = try txn.put(putReq("b", "2"))
            _ = try txn.put(putReq("a", "3"))
            txn.setAppliedIndex(12)
            // a batch's events are its own, not the earlier batches'
            #expect(txn.events.map { s($0.kv!.key) } == ["b", "a"])
            return txn.revision
        }
        #expect(r1 == 3 && r2 == 5)
        #expect(w.revision == 5 && w.appliedIndex == 12 && w.batches == 2)
        // readers (and the cached counters) still see the last commit
        #expect(t.store.revision == 2 && t.store.appliedIndex == 0)
        #expect(try t.get("a").kvs.isEmpty)
        try w.commit()
        #expect(w.isFinished)
        #expect(t.store.revision == 5 && t.store.appliedIndex == 12)
        let a = try #require(try t.get("a").kvs.first)
        #expect(a.value == b("3") && a.version == 2 && a.createRevision == 3 && a.modRevision == 5)
        // history in revision order across the batches
        let evs = try t.store.events(from: 3, key: b("a"), rangeEnd: b("c"))
        #expect(evs.map { $0.kv!.modRevision } == [3, 4, 5])
        try t.reopen()
        #expect(t.store.revision == 5 && t.store.appliedIndex == 12)
        #expect(try t.get("b").kvs.first?.value == b("2"))
        // a commit of an ended transaction is refused
        #expect(throws: MVCCError.self) { try w.commit() }
    }

    @Test func abortDropsEveryBatch() throws {
        let t = try TestStore()
        try t.put("x", "1")
        let w = try t.store.beginWrite()
        try w.batch { (txn) throws(MVCCError) in _ = try txn.put(putReq("y", "1")); txn.setAppliedIndex(5) }
        try w.batch { (txn) throws(MVCCError) in _ = try txn.put(putReq("x", "2")) }
        w.abort()
        #expect(t.store.revision == 2 && t.store.appliedIndex == 0)
        #expect(try t.get("y").kvs.isEmpty)
        #expect(try t.get("x").kvs.first?.value == b("1"))
        // the writer lock is free again
        try t.put("z", "1")
        #expect(t.store.revision == 3)
    }

    /// A batch whose body throws breaks the transaction: later batches and the commit are refused
    /// with that error, and only `abort` is left; nothing of it reaches the store.
    @Test func aFailedBatchBreaksTheTransaction() throws {
        let t = try TestStore()
        let w = try t.store.beginWrite()
        try w.batch { (txn) throws(MVCCError) in _ = try txn.put(putReq("kept?", "no")) }
        #expect(throws: MVCCError.storage("boom")) {
            try w.batch { (txn) throws(MVCCError) in
                _ = try txn.put(putReq("half", "no"))
                throw MVCCError.storage("boom")
            }
        }
        #expect(throws: MVCCError.storage("boom")) { try w.batch { (_) throws(MVCCError) in } }
        #expect(throws: MVCCError.storage("boom")) { try w.commit() }
        #expect(w.isFinished)   // the failed commit aborted it
        w.abort()
        #expect(t.store.revision == 1)
        #expect(try t.get("kept?").kvs.isEmpty && t.get("half").kvs.isEmpty)
        try t.put("after", "1")
        #expect(t.store.revision == 2)
    }
}
