import KeelAPI
import Testing
@testable import Storage

@Suite("MVCC basics")
struct MVCCBasicTests {
    @Test func revisionsVersionsAndHeaders() throws {
        let t = try TestStore()
        #expect(t.store.revision == 1)
        #expect(t.store.compactedRevision == 0)
        let r1 = try t.put("a", "1")
        #expect(r1.header?.revision == 2)
        #expect(t.store.revision == 2)
        try t.put("a", "2")
        try t.put("b", "x")
        var kv = try #require(try t.get("a").kvs.first)
        #expect(kv.value == b("2") && kv.createRevision == 2 && kv.modRevision == 3 && kv.version == 2 && kv.lease == 0)
        // delete resets version and create revision
        let d = try t.del("a")
        #expect(d.deleted == 1 && d.header?.revision == 5)
        #expect(try t.get("a").kvs.isEmpty)
        try t.put("a", "3")
        kv = try #require(try t.get("a").kvs.first)
        #expect(kv.createRevision == 6 && kv.modRevision == 6 && kv.version == 1)
        // a delete that deletes nothing does not make a revision
        let d2 = try t.del("zzz")
        #expect(d2.deleted == 0 && d2.header?.revision == 6 && t.store.revision == 6)
        #expect(try t.get("a").header?.revision == 6)
    }

    @Test func putOptions() throws {
        let t = try TestStore()
        try t.put("k", "v1")
        let r = try t.store.write { (w) throws(MVCCError) in try w.put(putReq("k", "v2", prevKv: true)) }
        #expect(r.prevKv?.value == b("v1") && r.prevKv?.modRevision == 2)
        let r0 = try t.store.write { (w) throws(MVCCError) in try w.put(putReq("new", "x", prevKv: true)) }
        #expect(r0.prevKv == nil)
        // ignore_value keeps the value, ignore_lease keeps the lease
        var p = putReq("k", "ignored")
        p.ignoreValue = true
        try t.store.write { (w) throws(MVCCError) in _ = try w.put(p) }
        let kv = try #require(try t.get("k").kvs.first)
        #expect(kv.value == b("v2") && kv.version == 3)
        // on a missing key: etcd's "key not found", nothing written
        for flag in [0, 1] {
            var q = putReq("missing", "")
            if flag == 0 { q.ignoreValue = true } else { q.ignoreLease = true }
            let before = t.store.revision
            let e = mvccError { try t.store.write { (w) throws(MVCCError) in _ = try w.put(q) } }
            #expect(e == .keyNotFound)
            #expect(e?.message == "etcdserver: key not found")
            #expect(t.store.revision == before)
        }
        // unknown lease
        let e = mvccError { try t.put("k", "v", lease: 42) }
        #expect(e == .leaseNotFound && e?.message == "etcdserver: requested lease not found")
    }

    @Test func failedOpLeavesNoTraceAndBatchGoesOn() throws {
        let t = try TestStore()
        let (revs, evs) = try t.store.write { (w) throws(MVCCError) -> ([Int64], Int) in
            var out: [Int64] = []
            out.append(try w.put(putReq("a", "1")).header!.revision)
            var bad = putReq("nope", "x"); bad.ignoreValue = true
            do { _ = try w.put(bad); out.append(-1) } catch { out.append(0) }
            out.append(try w.put(putReq("b", "2")).header!.revision)
            return (out, w.events.count)
        }
        #expect(revs == [2, 0, 3])
        #expect(evs == 2)
        #expect(t.store.revision == 3)
    }

    @Test func deleteRangeOptions() throws {
        let t = try TestStore()
        for k in ["a", "b", "c", "d"] { try t.put(k, "v" + k) }
        let r = try t.store.write { (w) throws(MVCCError) in try w.deleteRange(delReq("b", "d", prevKv: true)) }
        #expect(r.deleted == 2 && r.prevKvs.map { s($0.key) } == ["b", "c"] && r.prevKvs[0].value == b("vb"))
        #expect(r.header?.revision == 6)
        #expect(t.keys(try t.get("\0", "\0")) == ["a", "d"])
        // from key
        let r2 = try t.del("b", "\0")
        #expect(r2.deleted == 1)
        #expect(t.keys(try t.get("\0", "\0")) == ["a"])
        // the deletes made one revision each, with sub-revisions inside: history shows them
        let ev = try t.store.events(from: 6, key: b("\0"), rangeEnd: b("\0"), prevKV: true)
        #expect(ev.map { $0.type } == [.delete, .delete, .delete])
        #expect(ev.map { $0.kv!.modRevision } == [6, 6, 7])
        #expect(ev.map { s($0.prevKv!.value) } == ["vb", "vc", "vd"])
    }

    @Test func eventsHistory() throws {
        let t = try TestStore()
        try t.put("a", "1")          // 2
        try t.put("b", "1")          // 3
        try t.put("a", "2")          // 4
        try t.del("a")               // 5
        try t.put("c", "1")          // 6
        let all = try t.store.events(from: 1, key: b("\0"), rangeEnd: b("\0"), prevKV: true)
        #expect(all.map { "\($0.type == .put ? "P" : "D")\(s($0.kv!.key))\($0.kv!.modRevision)" } == ["Pa2", "Pb3", "Pa4", "Da5", "Pc6"])
        #expect(all[2].prevKv?.value == b("1") && all[2].prevKv?.modRevision == 2)
        #expect(all[0].prevKv == nil)
        #expect(all[3].prevKv?.value == b("2"))
        #expect(all[3].kv?.value == [] && all[3].kv?.createRevision == 0)
        let onlyA = try t.store.events(from: 3, to: 5, key: b("a"), prevKV: false)
        #expect(onlyA.map { $0.kv!.modRevision } == [4, 5])
        #expect(onlyA.allSatisfy { $0.prevKv == nil })
        let ab = try t.store.events(from: 1, key: b("a"), rangeEnd: b("c"))
        #expect(ab.count == 4)
        let limited = try t.store.events(from: 1, key: b("\0"), rangeEnd: b("\0"), limit: 2)
        #expect(limited.count == 2)
        #expect(mvccError { _ = try t.store.events(from: 1, to: 99, key: b("a")) } == .futureRevision)
        // the write txn's own event feed
        let evs = try t.store.write { (w) throws(MVCCError) -> [Mvccpb.Event] in
            _ = try w.put(putReq("c", "2"))
            _ = try w.deleteRange(delReq("b"))
            return w.events
        }
        #expect(evs.count == 2 && evs[0].prevKv?.value == b("1") && evs[1].type == .delete && evs[1].kv?.modRevision == 8)
    }

    @Test func metaAppliedIndexPersistAcrossReopen() throws {
        let t = try TestStore()
        try t.store.write { (w) throws(MVCCError) in
            _ = try w.put(putReq("x", "y"))
            w.setMeta("members", [1, 2, 3])
            w.setMeta("gone", [9])
            w.setAppliedIndex(77)
        }
        try t.store.write { (w) throws(MVCCError) in w.setMeta("gone", nil) }
        try t.store.sync()
        #expect(t.store.appliedIndex == 77)
        try t.reopen()
        #expect(t.store.appliedIndex == 77)
        #expect(t.store.revision == 2)
        #expect(try t.store.meta("members") == [1, 2, 3])
        #expect(try t.store.meta("gone") == nil)
        #expect(try t.get("x").kvs.first?.value == b("y"))
    }

    @Test func writeBodyThrowingCommitsNothing() throws {
        let t = try TestStore()
        let e = mvccError {
            try t.store.write { (w) throws(MVCCError) in
                _ = try w.put(putReq("a", "1"))
                w.setAppliedIndex(5)
                throw MVCCError.storage("caller gave up")
            }
        }
        #expect(e == .storage("caller gave up"))
        #expect(t.store.revision == 1 && t.store.appliedIndex == 0)
        #expect(try t.get("a").kvs.isEmpty)
    }

    @Test func errorMessagesAreEtcds() {
        #expect(MVCCError.compacted(compactRevision: 3).message == "etcdserver: mvcc: required revision has been compacted")
        #expect(MVCCError.futureRevision.message == "etcdserver: mvcc: required revision is a future revision")
        #expect(MVCCError.leaseExists.message == "etcdserver: lease already exists")
        #expect(MVCCError.duplicateKey.message == "etcdserver: duplicate key given in txn request")
        #expect(MVCCError.noSpace.message == "etcdserver: mvcc: database space exceeded")
    }

    @Test func keysLongerThanTheKeyTableHoldsAreStored() throws {
        let t = try TestStore()
        let long = String(repeating: "k", count: 600)
        try t.put(long, "v")
        try t.put(String(repeating: "k", count: Rec.maxUserKey), "max")
        #expect(try t.get(long).kvs.first?.value == b("v"))
        #expect(try t.get(String(repeating: "k", count: Rec.maxUserKey)).kvs.count == 1)
        // a range starting at a long key: the long key itself, then what sorts after it
        try t.put("l", "after")
        #expect(t.keys(try t.get(long, "\0")) == [long, "l"])
    }

    @Test func secondOpenOfSameDirectoryFails() throws {
        let t = try TestStore()
        let e = mvccError { _ = try MVCCStore.open(directory: t.dir.path) }
        if case .storage(let m) = e { #expect(m.contains("in use")) } else { Issue.record("got \(String(describing: e))") }
    }

    @Test func closedStoreThrows() throws {
        let t = try TestStore()
        t.store.close()
        #expect(mvccError { _ = try t.get("a") } == .storage("mvcc: store is closed"))
        #expect(mvccError { try t.put("a", "b") } == .storage("mvcc: store is closed"))
    }
}

@Suite("MVCC options")
struct MVCCOptionsTests {
    @Test func quotaAndMapSizeDefaults() {
        #expect(MVCCOptions().effectiveQuota == 2 << 30)
        #expect(MVCCOptions(quotaBackendBytes: 0).effectiveQuota == 2 << 30)       // etcd: 0 = default
        #expect(MVCCOptions(quotaBackendBytes: 0).effectiveMapSize == 8 << 30)
        #expect(MVCCOptions(quotaBackendBytes: 4 << 30).effectiveMapSize == 16 << 30)
        #expect(MVCCOptions(quotaBackendBytes: -1).effectiveMapSize == 64 << 30)
        #expect(MVCCOptions(quotaBackendBytes: 1, mapSize: 1 << 20).effectiveMapSize == 1 << 20)
    }
}

@Suite("MVCC write txn lifetime")
struct MVCCWriteTxnLifetimeTests {
    @Test func escapedTxnIsRefused() throws {
        let t = try TestStore()
        var escaped: MVCCWriteTxn?
        try t.store.write { (w) throws(MVCCError) in escaped = w }
        #expect(mvccError { _ = try escaped!.put(putReq("a", "1")) } == .storage("mvcc: write transaction has ended"))
        _ = mvccError {
            try t.store.write { (w) throws(MVCCError) in escaped = w; throw MVCCError.storage("abort") }
        }
        #expect(mvccError { _ = try escaped!.lease(id: 1) } == .storage("mvcc: write transaction has ended"))
        #expect(try t.get("a").kvs.isEmpty)
    }
}
