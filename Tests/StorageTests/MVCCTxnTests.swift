import KeelAPI
import Testing
@testable import Storage

func cmp(_ key: String, _ target: Etcdserverpb.Compare.CompareTarget, _ result: Etcdserverpb.Compare.CompareResult,
         _ union: Etcdserverpb.Compare.OneOf_TargetUnion?, rangeEnd: String? = nil) -> Etcdserverpb.Compare {
    var c = Etcdserverpb.Compare()
    c.key = b(key); c.target = target; c.result = result; c.targetUnion = union
    if let rangeEnd { c.rangeEnd = b(rangeEnd) }
    return c
}

func opPut(_ k: String, _ v: String, lease: Int64 = 0) -> Etcdserverpb.RequestOp {
    var o = Etcdserverpb.RequestOp(); o.request = .requestPut(putReq(k, v, lease: lease)); return o
}
func opDel(_ k: String, _ end: String? = nil) -> Etcdserverpb.RequestOp {
    var o = Etcdserverpb.RequestOp(); o.request = .requestDeleteRange(delReq(k, end, prevKv: true)); return o
}
func opRange(_ k: String, _ end: String? = nil, rev: Int64 = 0) -> Etcdserverpb.RequestOp {
    var r = rangeReq(k, end); r.revision = rev
    var o = Etcdserverpb.RequestOp(); o.request = .requestRange(r); return o
}
func opTxn(_ t: Etcdserverpb.TxnRequest) -> Etcdserverpb.RequestOp {
    var o = Etcdserverpb.RequestOp(); o.request = .requestTxn(t); return o
}
func txnReq(_ compares: [Etcdserverpb.Compare], _ success: [Etcdserverpb.RequestOp], _ failure: [Etcdserverpb.RequestOp] = [])
    -> Etcdserverpb.TxnRequest {
    var t = Etcdserverpb.TxnRequest()
    t.compare = compares; t.success = success; t.failure = failure
    return t
}

extension TestStore {
    func txn(_ t: Etcdserverpb.TxnRequest) throws -> Etcdserverpb.TxnResponse {
        try store.write { (w) throws(MVCCError) in try w.txn(t) }
    }
    /// Does the compare hold? (a txn with just this compare, no ops)
    func holds(_ c: Etcdserverpb.Compare) throws -> Bool { try txn(txnReq([c], [])).succeeded }
}

@Suite("MVCC txn")
struct MVCCTxnTests {
    /// k = "b" (create 2, mod 3, version 2, lease 7);  k2 = "c" (create 4, mod 4, version 1); revision 4
    func store() throws -> TestStore {
        let t = try TestStore()
        try t.store.write { (w) throws(MVCCError) in try w.leaseGrant(id: 7, ttl: 60) }
        try t.put("k", "a")
        try t.put("k", "b", lease: 7)
        try t.put("k2", "c")
        return t
    }

    @Test func valueCompares() throws {
        let t = try store()
        #expect(try t.holds(cmp("k", .value, .equal, .value(b("b")))))
        #expect(try !t.holds(cmp("k", .value, .equal, .value(b("a")))))
        #expect(try t.holds(cmp("k", .value, .notEqual, .value(b("a")))))
        #expect(try !t.holds(cmp("k", .value, .notEqual, .value(b("b")))))
        #expect(try t.holds(cmp("k", .value, .less, .value(b("c")))))
        #expect(try !t.holds(cmp("k", .value, .less, .value(b("b")))))
        #expect(try t.holds(cmp("k", .value, .greater, .value(b("a")))))
        #expect(try t.holds(cmp("k", .value, .greater, .value(b("")))))
        // a value compare on a missing key always fails, even !=
        #expect(try !t.holds(cmp("nope", .value, .notEqual, .value(b("x")))))
        #expect(try !t.holds(cmp("nope", .value, .equal, .value(b("")))))
    }

    @Test func versionCreateModLeaseCompares() throws {
        let t = try store()
        #expect(try t.holds(cmp("k", .version, .equal, .version(2))))
        #expect(try t.holds(cmp("k", .version, .greater, .version(1))))
        #expect(try t.holds(cmp("k", .version, .less, .version(3))))
        #expect(try !t.holds(cmp("k", .version, .notEqual, .version(2))))
        #expect(try t.holds(cmp("k", .create, .equal, .createRevision(2))))
        #expect(try t.holds(cmp("k", .create, .less, .createRevision(3))))
        #expect(try !t.holds(cmp("k", .create, .greater, .createRevision(2))))
        #expect(try t.holds(cmp("k", .create, .notEqual, .createRevision(3))))
        #expect(try t.holds(cmp("k", .mod, .equal, .modRevision(3))))
        #expect(try t.holds(cmp("k", .mod, .greater, .modRevision(2))))
        #expect(try t.holds(cmp("k", .mod, .less, .modRevision(4))))
        #expect(try !t.holds(cmp("k", .mod, .notEqual, .modRevision(3))))
        #expect(try t.holds(cmp("k", .lease, .equal, .lease(7))))
        #expect(try t.holds(cmp("k2", .lease, .equal, .lease(0))))
        #expect(try t.holds(cmp("k", .lease, .greater, .lease(6))))
        #expect(try t.holds(cmp("k", .lease, .less, .lease(8))))
        #expect(try t.holds(cmp("k", .lease, .notEqual, .lease(0))))
        // a missing key compares as a zero KeyValue: version 0, create 0
        #expect(try t.holds(cmp("nope", .version, .equal, .version(0))))
        #expect(try t.holds(cmp("nope", .create, .equal, .createRevision(0))))
        #expect(try !t.holds(cmp("nope", .mod, .greater, .modRevision(0))))
        // a missing union value compares against zero
        #expect(try t.holds(cmp("k", .version, .greater, nil)))
        // several compares: all must hold
        #expect(try !t.txn(txnReq([cmp("k", .version, .equal, .version(2)), cmp("k2", .version, .equal, .version(2))], [])).succeeded)
    }

    @Test func rangeCompares() throws {
        let t = try store()
        // every key in [k, l) must satisfy it: k version 2, k2 version 1
        #expect(try t.holds(cmp("k", .version, .greater, .version(0), rangeEnd: "l")))
        #expect(try !t.holds(cmp("k", .version, .equal, .version(2), rangeEnd: "l")))
        #expect(try t.holds(cmp("k", .mod, .less, .modRevision(5), rangeEnd: "\0")))
        #expect(try t.holds(cmp("x", .version, .equal, .version(0), rangeEnd: "z")))   // empty range: zero KV
        #expect(try !t.holds(cmp("x", .value, .equal, .value([]), rangeEnd: "z")))
    }

    @Test func branchesResponsesAndOneRevision() throws {
        let t = try store()
        #expect(t.store.revision == 4)
        let r = try t.txn(txnReq([cmp("k", .value, .equal, .value(b("b")))],
                                 [opPut("x", "1"), opRange("x"), opDel("k2"), opPut("y", "2"), opRange("\0", "\0")],
                                 [opPut("never", "1")]))
        #expect(r.succeeded && r.header?.revision == 5 && t.store.revision == 5)
        #expect(r.responses.count == 5)
        guard case .responsePut(let p) = r.responses[0].response, case .responseRange(let rr) = r.responses[1].response,
              case .responseDeleteRange(let d) = r.responses[2].response, case .responseRange(let all) = r.responses[4].response
        else { Issue.record("response kinds"); return }
        #expect(p.header?.revision == 5)
        #expect(rr.kvs.first?.value == b("1") && rr.header?.revision == 5)
        #expect(d.deleted == 1 && d.prevKvs.first?.value == b("c"))
        #expect(t.keys(all) == ["k", "x", "y"])
        let ev = try t.store.events(from: 5, key: b("\0"), rangeEnd: b("\0"))
        #expect(ev.map { $0.kv!.modRevision } == [5, 5, 5])
        #expect(ev.map { s($0.kv!.key) } == ["x", "k2", "y"])
        #expect(try t.get("never").kvs.isEmpty)
        // failure branch
        let f = try t.txn(txnReq([cmp("k", .value, .equal, .value(b("zzz")))], [opPut("never", "1")], [opPut("else", "1")]))
        #expect(!f.succeeded && f.header?.revision == 6 && f.responses.count == 1)
        #expect(try t.get("else").kvs.count == 1 && t.get("never").kvs.isEmpty)
    }

    @Test func txnWithoutWritesKeepsRevision() throws {
        let t = try store()
        let r = try t.txn(txnReq([], [opRange("k")]))
        #expect(r.succeeded && r.header?.revision == 4 && t.store.revision == 4)
        let e = try t.txn(txnReq([], []))
        #expect(e.succeeded && e.header?.revision == 4)
        // a delete of nothing writes nothing
        let d = try t.txn(txnReq([], [opDel("nope")]))
        #expect(d.header?.revision == 4 && t.store.revision == 4)
    }

    @Test func nestedTxns() throws {
        let t = try store()
        let inner = txnReq([cmp("k2", .version, .equal, .version(1))], [opPut("in-then", "1"), opRange("k")], [opPut("in-else", "1")])
        let inner2 = txnReq([cmp("k2", .version, .equal, .version(9))], [opPut("in2-then", "1")], [opPut("in2-else", "1")])
        let r = try t.txn(txnReq([cmp("k", .version, .equal, .version(2))], [opPut("outer", "1"), opTxn(inner), opTxn(inner2)]))
        #expect(r.succeeded && r.header?.revision == 5)
        guard case .responseTxn(let i1) = r.responses[1].response, case .responseTxn(let i2) = r.responses[2].response else {
            Issue.record("nested responses"); return
        }
        #expect(i1.succeeded && i1.responses.count == 2 && !i2.succeeded)
        #expect(t.keys(try t.get("\0", "\0")) == ["in-then", "in2-else", "k", "k2", "outer"])
        // nested compares see the state before the txn (compares are decided first)
        let r2 = try t.txn(txnReq([], [opPut("k3", "x"), opTxn(txnReq([cmp("k3", .version, .equal, .version(0))], [opPut("saw-none", "1")]))]))
        guard case .responseTxn(let n) = r2.responses[1].response else { Issue.record("kind"); return }
        #expect(n.succeeded)
        let ev = try t.store.events(from: 6, key: b("\0"), rangeEnd: b("\0"))
        #expect(ev.count == 2 && ev.allSatisfy { $0.kv!.modRevision == 6 })
    }

    @Test func duplicateKeys() throws {
        let t = try store()
        func dup(_ r: Etcdserverpb.TxnRequest) -> Bool { mvccError { _ = try t.txn(r) } == .duplicateKey }
        #expect(dup(txnReq([], [opPut("a", "1"), opPut("a", "2")])))
        #expect(dup(txnReq([], [], [opPut("a", "1"), opPut("a", "2")])))
        #expect(dup(txnReq([], [opPut("a", "1"), opDel("a")])))
        #expect(dup(txnReq([], [opDel("a", "c"), opPut("b", "1")])))
        #expect(dup(txnReq([], [opPut("a", "1"), opTxn(txnReq([], [opPut("a", "2")]))])))
        #expect(dup(txnReq([], [opDel("a"), opTxn(txnReq([], [], [opPut("a", "2")]))])))
        #expect(dup(txnReq([], [opTxn(txnReq([], [opPut("a", "1")])), opTxn(txnReq([], [opPut("a", "2")]))])))
        // the then and else branch of one nested txn may put the same key
        #expect(!dup(txnReq([], [opTxn(txnReq([], [opPut("a", "1")], [opPut("a", "2")]))])))
        // the outer success and failure branches are checked separately
        #expect(!dup(txnReq([], [opPut("a", "1")], [opPut("a", "2")])))
        // range end "\0" deletes are not intervals that contain keys in etcd's check
        #expect(!dup(txnReq([], [opDel("a", "\0"), opPut("b", "1")])))
        // different keys: fine
        #expect(!dup(txnReq([], [opPut("a", "1"), opPut("b", "1"), opDel("c", "d")])))
        #expect(MVCCError.duplicateKey.message == "etcdserver: duplicate key given in txn request")
    }

    @Test func checksBeforeWrites() throws {
        let t = try store()
        var ign = putReq("missing", "")
        ign.ignoreValue = true
        var o = Etcdserverpb.RequestOp(); o.request = .requestPut(ign)
        #expect(mvccError { _ = try t.txn(txnReq([], [opPut("first", "1"), o])) } == .keyNotFound)
        #expect(mvccError { _ = try t.txn(txnReq([], [opPut("first", "1"), opPut("l", "1", lease: 99)])) } == .leaseNotFound)
        #expect(mvccError { _ = try t.txn(txnReq([], [opPut("first", "1"), opRange("k", rev: 50)])) } == .futureRevision)
        // checks follow the chosen path only
        let r = try t.txn(txnReq([cmp("k", .version, .equal, .version(2))], [opPut("first", "1")], [o]))
        #expect(r.succeeded)
        // none of the failed txns left a trace: only "first" was written, at revision 5
        #expect(t.store.revision == 5)
        #expect(try t.keys(t.get("\0", "\0")) == ["first", "k", "k2"])
        // a read-only txn with a bad put in the other branch is fine; ranges are checked
        #expect(mvccError { _ = try t.txn(txnReq([], [opRange("k", rev: 50)])) } == .futureRevision)
        try t.store.write { (w) throws(MVCCError) in try w.compact(4) }
        #expect(mvccError { _ = try t.txn(txnReq([], [opRange("k", rev: 3)])) } == .compacted(compactRevision: 4))
        // etcd quirk: after a compaction a negative revision is below the first revision
        #expect(mvccError { _ = try t.txn(txnReq([], [opRange("k", rev: -1)])) } == .compacted(compactRevision: 4))
        #expect(try t.txn(txnReq([], [opRange("k", rev: 4)])).succeeded)
    }

    @Test func putWithIgnoreInsideTxn() throws {
        let t = try store()
        var p = putReq("k", "")
        p.ignoreValue = true; p.ignoreLease = true; p.prevKv = true
        var o = Etcdserverpb.RequestOp(); o.request = .requestPut(p)
        let r = try t.txn(txnReq([], [o]))
        guard case .responsePut(let pr) = r.responses[0].response else { Issue.record("kind"); return }
        #expect(pr.prevKv?.value == b("b"))
        let kv = try #require(try t.get("k").kvs.first)
        #expect(kv.value == b("b") && kv.lease == 7 && kv.version == 3)
    }
}
