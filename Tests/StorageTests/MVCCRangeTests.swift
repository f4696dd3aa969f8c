import KeelAPI
import Testing
@testable import Storage

/// Every Range option against hand-derived expectations. Data set (revision: op):
///   2 foo/a=3   3 foo/b=1   4 foo/c=2   5 foo/a=0   6 bar=9   7 foo/b=5   8 foo/b=4   9 zoo=z
/// Now: bar(c6 m6 v1 "9")  foo/a(c2 m5 v2 "0")  foo/b(c3 m8 v3 "4")  foo/c(c4 m4 v1 "2")  zoo(c9 m9 v1 "z")
@Suite("MVCC range options")
struct MVCCRangeTests {
    let t: TestStore

    init() throws {
        t = try TestStore()
        for (k, v) in [("foo/a", "3"), ("foo/b", "1"), ("foo/c", "2"), ("foo/a", "0"), ("bar", "9"),
                       ("foo/b", "5"), ("foo/b", "4"), ("zoo", "z")] {
            try t.put(k, v)
        }
        #expect(t.store.revision == 9)
    }

    func all(_ configure: (inout Etcdserverpb.RangeRequest) -> Void = { _ in }) throws -> Etcdserverpb.RangeResponse {
        try t.get("\0", "\0", configure)
    }

    @Test func singleKeyPrefixFromKeyAllKeys() throws {
        let a = try t.get("foo/a")
        #expect(t.keys(a) == ["foo/a"] && a.count == 1 && !a.more && a.header?.revision == 9)
        #expect(a.kvs[0].value == b("0") && a.kvs[0].version == 2 && a.kvs[0].createRevision == 2 && a.kvs[0].modRevision == 5)
        #expect(try t.get("foo").kvs.isEmpty && t.get("foo").count == 0)
        #expect(t.keys(try t.get("foo/", "foo0")) == ["foo/a", "foo/b", "foo/c"])
        #expect(t.keys(try t.get("foo/b", "\0")) == ["foo/b", "foo/c", "zoo"])
        #expect(t.keys(try all()) == ["bar", "foo/a", "foo/b", "foo/c", "zoo"])
        #expect(try all().count == 5)
        #expect(t.keys(try t.get("a", "foo/b")) == ["bar", "foo/a"])
        // range end at or before the key: nothing
        #expect(try t.get("foo/c", "foo/a").kvs.isEmpty)
        #expect(try t.get("foo/c", "foo/c").kvs.isEmpty)
    }

    @Test func limitMoreCount() throws {
        let r = try all { $0.limit = 2 }
        #expect(t.keys(r) == ["bar", "foo/a"] && r.more && r.count == 5)
        let r5 = try all { $0.limit = 5 }
        #expect(r5.kvs.count == 5 && !r5.more && r5.count == 5)
        let r6 = try all { $0.limit = 6 }
        #expect(r6.kvs.count == 5 && !r6.more)
        let p = try t.get("foo/", "foo0") { $0.limit = 1 }
        #expect(t.keys(p) == ["foo/a"] && p.more && p.count == 3)
    }

    @Test func sortTargetsAndOrders() throws {
        func sorted(_ target: Etcdserverpb.RangeRequest.SortTarget, _ order: Etcdserverpb.RangeRequest.SortOrder) throws -> [String] {
            t.keys(try all { $0.sortTarget = target; $0.sortOrder = order })
        }
        #expect(try sorted(.key, .ascend) == ["bar", "foo/a", "foo/b", "foo/c", "zoo"])
        #expect(try sorted(.key, .descend) == ["zoo", "foo/c", "foo/b", "foo/a", "bar"])
        #expect(try sorted(.key, .none) == ["bar", "foo/a", "foo/b", "foo/c", "zoo"])
        #expect(try sorted(.version, .ascend) == ["bar", "foo/c", "zoo", "foo/a", "foo/b"])
        #expect(try sorted(.version, .descend).prefix(2) == ["foo/b", "foo/a"])
        #expect(try sorted(.create, .ascend) == ["foo/a", "foo/b", "foo/c", "bar", "zoo"])
        #expect(try sorted(.create, .descend) == ["zoo", "bar", "foo/c", "foo/b", "foo/a"])
        #expect(try sorted(.mod, .ascend) == ["foo/c", "foo/a", "bar", "foo/b", "zoo"])
        #expect(try sorted(.mod, .descend) == ["zoo", "foo/b", "bar", "foo/a", "foo/c"])
        #expect(try sorted(.value, .ascend) == ["foo/a", "foo/c", "foo/b", "bar", "zoo"])
        #expect(try sorted(.value, .descend) == ["zoo", "bar", "foo/b", "foo/c", "foo/a"])
        // a non-key target with order NONE sorts ascending (etcd)
        #expect(try sorted(.mod, .none) == ["foo/c", "foo/a", "bar", "foo/b", "zoo"])
        // sort happens before the limit
        let r = try all { $0.sortTarget = .mod; $0.sortOrder = .descend; $0.limit = 2 }
        #expect(t.keys(r) == ["zoo", "foo/b"] && r.more && r.count == 5)
    }

    @Test func keysOnlyAndCountOnly() throws {
        let k = try all { $0.keysOnly = true }
        #expect(k.kvs.count == 5 && k.kvs.allSatisfy { $0.value.isEmpty } && k.kvs[1].version == 2)
        let kv = try all { $0.keysOnly = true; $0.sortTarget = .value }
        #expect(t.keys(kv) == ["foo/a", "foo/c", "foo/b", "bar", "zoo"] && kv.kvs.allSatisfy { $0.value.isEmpty })
        let c = try all { $0.countOnly = true }
        #expect(c.kvs.isEmpty && c.count == 5 && !c.more)
        let cp = try t.get("foo/", "foo0") { $0.countOnly = true; $0.limit = 1 }
        #expect(cp.kvs.isEmpty && cp.count == 3)
        let c4 = try t.get("\0", "\0", rev: 4) { $0.countOnly = true }
        #expect(c4.count == 3)
    }

    @Test func revisionFilters() throws {
        #expect(t.keys(try all { $0.minModRevision = 5 }) == ["bar", "foo/a", "foo/b", "zoo"])
        #expect(t.keys(try all { $0.maxModRevision = 5 }) == ["foo/a", "foo/c"])
        #expect(t.keys(try all { $0.minCreateRevision = 4 }) == ["bar", "foo/c", "zoo"])
        #expect(t.keys(try all { $0.maxCreateRevision = 3 }) == ["foo/a", "foo/b"])
        #expect(t.keys(try all { $0.minModRevision = 5; $0.maxModRevision = 8 }) == ["bar", "foo/a", "foo/b"])
        // count is of the whole range (before filters), as etcd
        #expect(try all { $0.minModRevision = 9 }.count == 5)
        let l = try all { $0.minModRevision = 5; $0.limit = 1 }
        #expect(t.keys(l) == ["bar"] && l.more)
    }

    @Test func readsAtOldRevisions() throws {
        let r4 = try t.get("\0", "\0", rev: 4)
        #expect(t.keys(r4) == ["foo/a", "foo/b", "foo/c"] && r4.header?.revision == 9 && r4.count == 3)
        #expect(r4.kvs[0].value == b("3") && r4.kvs[0].version == 1 && r4.kvs[0].modRevision == 2)
        let b7 = try #require(try t.get("foo/b", rev: 7).kvs.first)
        #expect(b7.value == b("5") && b7.version == 2 && b7.modRevision == 7 && b7.createRevision == 3)
        #expect(try t.get("\0", "\0", rev: 1).kvs.isEmpty)
        #expect(try t.get("zoo", rev: 8).kvs.isEmpty)
        #expect(try t.get("zoo", rev: 9).kvs.count == 1)
        // negative revision = current (etcd's rangeKeys)
        #expect(try t.get("zoo", rev: -1).kvs.count == 1)
        #expect(mvccError { _ = try t.get("zoo", rev: 10) } == .futureRevision)
        try t.del("foo/c")
        #expect(try t.get("foo/c").kvs.isEmpty)
        #expect(try t.get("foo/c", rev: 9).kvs.first?.value == b("2"))
        #expect(t.keys(try t.get("foo/", "foo0", rev: 9)) == ["foo/a", "foo/b", "foo/c"])
        #expect(t.keys(try t.get("foo/", "foo0", rev: 10)) == ["foo/a", "foo/b"])
        try t.put("foo/c", "again")
        let c = try #require(try t.get("foo/c").kvs.first)
        #expect(c.version == 1 && c.createRevision == 11)
        #expect(try t.get("foo/c", rev: 10).kvs.isEmpty)
    }

    @Test func rangeInsideWriteSeesOwnWrites() throws {
        let (before, after) = try t.store.write { (w) throws(MVCCError) in
            let b0 = try w.range(rangeReq("new"))
            _ = try w.put(putReq("new", "1"))
            return (b0, try w.range(rangeReq("new")))
        }
        #expect(before.kvs.isEmpty && before.header?.revision == 9)
        #expect(after.kvs.count == 1 && after.header?.revision == 10)
    }
}
