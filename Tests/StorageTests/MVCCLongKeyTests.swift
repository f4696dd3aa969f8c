#if canImport(Glibc)
import Glibc
#endif
import CLMDB
import KeelAPI
import KeelTestSupport
import Testing
@testable import Storage

/// Keys longer than the key table holds inline (495 bytes): LongKeys.swift. Byte-array helpers, since
/// these tests care about exact bytes at the 495/496 boundary.
extension TestStore {
    @discardableResult
    func put(_ k: [UInt8], _ v: String, lease: Int64 = 0) throws -> Etcdserverpb.PutResponse {
        var p = Etcdserverpb.PutRequest()
        p.key = k; p.value = b(v); p.lease = lease
        return try store.write { (w) throws(MVCCError) in try w.put(p) }
    }
    func range(_ k: [UInt8], _ end: [UInt8] = [], rev: Int64 = 0,
               _ configure: (inout Etcdserverpb.RangeRequest) -> Void = { _ in }) throws -> Etcdserverpb.RangeResponse {
        var r = Etcdserverpb.RangeRequest()
        r.key = k; r.rangeEnd = end; r.revision = rev
        configure(&r)
        return try store.range(r)
    }
    @discardableResult
    func delete(_ k: [UInt8], _ end: [UInt8] = []) throws -> Etcdserverpb.DeleteRangeResponse {
        var d = Etcdserverpb.DeleteRangeRequest()
        d.key = k; d.rangeEnd = end; d.prevKv = true
        return try store.write { (w) throws(MVCCError) in try w.deleteRange(d) }
    }
    func tableEntries(_ pick: (LMDBEnv) -> MDB_dbi) throws -> Int {
        try store.currentEnv().read { (t) throws(MVCCError) in try t.entries(pick(t.env)) }
    }
}

func bytes(_ c: Character, _ n: Int) -> [UInt8] { Array(String(repeating: c, count: n).utf8) }

/// etcd's prefix range end (clientv3.GetPrefixRangeEnd): the last byte < 0xff incremented, or "\0".
func prefixEnd(_ k: [UInt8]) -> [UInt8] {
    var e = k
    while let last = e.last {
        if last < 0xFF { e[e.count - 1] = last + 1; return e }
        e.removeLast()
    }
    return [0]
}

@Suite("MVCC long keys")
struct MVCCLongKeyTests {
    static let p = bytes("k", 495)                      // the longest inline key
    /// Keys around the boundary, in etcd's (bytewise) order.
    static let ordered: [[UInt8]] = [
        bytes("k", 494),                                 // a prefix of p
        bytes("k", 494) + [0x6A] + bytes("z", 300),      // long, prefix "kkk..j" < p
        p,                                               // boundary length
        p + [0],                                         // 496 bytes: the smallest long key of p's group
        p + [0x61],
        p + [0x61] + bytes("a", 600),
        p + [0x61, 0x62],
        p + [0x62],
        p + bytes("k", 1505),                            // 2,000 bytes
        p + [0xFF, 0xFF],
        bytes("k", 494) + [0x6C],                        // next inline key after p's group
        bytes("k", 494) + [0x6C] + [0],                  // long, in the next group
        bytes("z", 3000),
    ]

    func filled() throws -> TestStore {
        let t = try TestStore()
        // insert in a scrambled order, several writes per key for history
        for (i, k) in Self.ordered.enumerated().reversed() { try t.put(k, "v\(i)") }
        for (i, k) in Self.ordered.enumerated() where i % 3 == 0 { try t.put(k, "w\(i)") }
        return t
    }

    @Test func putGetVersionsAndReopen() throws {
        let t = try TestStore()
        let long = bytes("x", 2000)
        let r1 = try t.put(long, "one")
        #expect(r1.header?.revision == 2)
        try t.put(long, "two")
        var got = try #require(try t.range(long).kvs.first)
        #expect(got.key == long && got.value == b("two") && got.version == 2 && got.createRevision == 2 && got.modRevision == 3)
        #expect(try t.range(long, rev: 2).kvs.first?.value == b("one"))
        // a key that differs only after byte 495 is another key
        #expect(try t.range(bytes("x", 1999) + [0x79]).kvs.isEmpty)
        #expect(try t.range(bytes("x", 495)).kvs.isEmpty && t.range(bytes("x", 2001)).kvs.isEmpty)
        try t.reopen()
        got = try #require(try t.range(long).kvs.first)
        #expect(got.value == b("two") && got.version == 2)
        // etcd's request-size limit is the only bound: a 1 MiB key works
        let huge = bytes("h", 1 << 20)
        try t.put(huge, "big")
        #expect(try t.range(huge).kvs.first?.key == huge)
        let d = try t.delete(long)
        #expect(d.deleted == 1 && d.prevKvs.first?.value == b("two"))
        #expect(try t.range(long).kvs.isEmpty && t.range(long, rev: 3).kvs.first?.value == b("two"))
        try t.put(long, "again")
        got = try #require(try t.range(long).kvs.first)
        #expect(got.version == 1 && got.createRevision == t.store.revision)
    }

    @Test func orderAcrossTheBoundary() throws {
        let t = try filled()
        let all = try t.range([0], [0])
        #expect(all.kvs.map(\.key) == Self.ordered)
        #expect(all.count == Int64(Self.ordered.count))
        // every [a, b) between listed keys, and from-key starts
        for i in Self.ordered.indices {
            #expect(try t.range(Self.ordered[i], [0]).kvs.map(\.key) == Array(Self.ordered[i...]), "from \(i)")
            for j in i..<Self.ordered.count {
                let got = try t.range(Self.ordered[i], Self.ordered[j]).kvs.map(\.key)
                #expect(got == Array(Self.ordered[i..<j]), "[\(i), \(j))")
            }
        }
        // bounds that are not stored keys, long and short
        #expect(try t.range(Self.p + [0x61, 0x00], Self.p + [0x62, 0x00]).kvs.map(\.key)
                == [Self.p + [0x61] + bytes("a", 600), Self.p + [0x61, 0x62], Self.p + [0x62]])
        #expect(try t.range(bytes("k", 494) + [0x6A], Self.p).kvs.map(\.key) == [Self.ordered[1]])
        // descending key order, limit, more, count
        let desc = try t.range([0], [0]) { $0.sortOrder = .descend; $0.sortTarget = .key; $0.limit = 4 }
        #expect(desc.kvs.map(\.key) == Array(Self.ordered.reversed().prefix(4)) && desc.more && desc.count == 13)
        let lim = try t.range(Self.p, [0]) { $0.limit = 3 }
        #expect(lim.kvs.map(\.key) == Array(Self.ordered[2..<5]) && lim.more && lim.count == 11)
        let co = try t.range(Self.p, prefixEnd(Self.p)) { $0.countOnly = true }
        #expect(co.kvs.isEmpty && co.count == 8)
        let ko = try t.range(Self.p + [0x61], prefixEnd(Self.p + [0x61])) { $0.keysOnly = true }
        #expect(ko.kvs.map(\.key) == [Self.p + [0x61], Self.p + [0x61] + bytes("a", 600), Self.p + [0x61, 0x62]])
        #expect(ko.kvs.allSatisfy { $0.value.isEmpty })
        // other sort targets keep working over mixed keys (ties in key order)
        let byMod = try t.range([0], [0]) { $0.sortTarget = .mod; $0.sortOrder = .ascend }
        #expect(byMod.kvs.map(\.modRevision) == byMod.kvs.map(\.modRevision).sorted())
        let byVer = try t.range([0], [0]) { $0.sortTarget = .version; $0.sortOrder = .descend }
        #expect(byVer.kvs.prefix(5).allSatisfy { $0.version == 2 } && byVer.kvs.dropFirst(5).allSatisfy { $0.version == 1 })
        #expect(byVer.kvs.prefix(5).map(\.key) == [0, 3, 6, 9, 12].map { Self.ordered[$0] })
        let byCreate = try t.range([0], [0]) { $0.sortTarget = .create; $0.sortOrder = .descend }
        #expect(byCreate.kvs.map(\.key) == Self.ordered)   // inserted in reverse key order
        let filtered = try t.range([0], [0]) { $0.minModRevision = 15 }
        #expect(filtered.kvs.map(\.key) == [0, 3, 6, 9, 12].map { Self.ordered[$0] })
        // an old revision: the first inserts only
        let old = try t.range([0], [0], rev: 4)
        #expect(old.kvs.map(\.key) == Array(Self.ordered.suffix(3)))
    }

    @Test func prefixGroupOfManyLongKeys() throws {
        let t = try TestStore()
        var g = SplitMix64(seed: 7)
        var keys = Set<[UInt8]>()
        try t.store.write { (w) throws(MVCCError) in
            for _ in 0..<300 {
                let k = Self.p + (0..<(1 + g.below(40))).map { _ in UInt8(g.below(4) + 0x60) }
                keys.insert(k)
                var p = Etcdserverpb.PutRequest(); p.key = k; p.value = [1]
                _ = try w.put(p)
            }
        }
        try t.put(Self.p, "inline"); try t.put(bytes("k", 494) + [0x6C], "after")
        let sorted = keys.sorted { $0.lexicographicallyPrecedes($1) }
        #expect(try t.range(Self.p, prefixEnd(Self.p)).kvs.map(\.key) == [Self.p] + sorted)
        #expect(try t.range(Self.p + [0], [0]).kvs.map(\.key) == sorted + [bytes("k", 494) + [0x6C]])
        let mid = sorted[150]
        #expect(try t.range(mid, [0]) { $0.limit = 10 }.kvs.map(\.key) == Array(sorted[150..<160]))
        #expect(try t.range(sorted[10], sorted[20]).kvs.map(\.key) == Array(sorted[10..<20]))
        #expect(try t.range(mid + [0x60], prefixEnd(mid)).kvs.map(\.key) == sorted.filter { $0.starts(with: mid) && $0 != mid })
        let del = try t.delete(sorted[0], sorted[100])
        #expect(del.deleted == 100 && del.prevKvs.map(\.key) == Array(sorted[..<100]))
        #expect(try t.range(Self.p, prefixEnd(Self.p)) { $0.countOnly = true }.count == Int64(1 + sorted.count - 100))
        #expect(try t.tableEntries { $0.longKeys } == sorted.count)
        try t.put("zz", "1")                    // so the delete's tombstones are below the compaction
        try t.compact(t.store.revision)
        while t.store.compactionPending { try t.store.write { _ in } }
        // ids of deleted, compacted long keys are gone; the others stay
        #expect(try t.tableEntries { $0.longKeys } == sorted.count - 100)
        #expect(try t.tableEntries { $0.longRevs } == sorted.count - 100)
    }

    @Test func txnComparesAndDeletesOnLongKeys() throws {
        let t = try filled()
        let long = Self.p + [0x61]
        var c = Etcdserverpb.Compare(); c.key = long; c.target = .value; c.result = .equal; c.targetUnion = .value(b("v4"))
        var r = try t.txn(txnReq([c], [opPut("x", "1")], [opPut("y", "1")]))
        #expect(r.succeeded)
        // a range compare across a whole prefix group of long keys: every version == 1?
        var cv = Etcdserverpb.Compare(); cv.key = Self.p + [0]; cv.rangeEnd = Self.p + [0xFF, 0xFF, 0x00]
        cv.target = .version; cv.result = .equal; cv.targetUnion = .version(1)
        r = try t.txn(txnReq([cv], [], []))
        #expect(!r.succeeded)                                           // p+[0] and p+[0x61,0x62] have version 2
        cv.result = .greater; cv.targetUnion = .version(0)
        r = try t.txn(txnReq([cv], [], []))
        #expect(r.succeeded)
        // puts of long keys inside a txn, one revision; a duplicate long key is refused
        var put = Etcdserverpb.RequestOp(); put.request = .requestPut({ var p = Etcdserverpb.PutRequest(); p.key = long; p.value = b("t"); return p }())
        var del = Etcdserverpb.RequestOp(); del.request = .requestDeleteRange({ var d = Etcdserverpb.DeleteRangeRequest(); d.key = Self.p + [0x62]; return d }())
        let before = t.store.revision
        r = try t.txn(txnReq([], [put, del], []))
        #expect(r.succeeded && t.store.revision == before + 1)
        #expect(try t.range(long).kvs.first?.value == b("t") && t.range(Self.p + [0x62]).kvs.isEmpty)
        #expect(mvccError { _ = try t.txn(txnReq([], [put, put], [])) } == .duplicateKey)
        // ignore_value on a missing long key
        var iv = Etcdserverpb.PutRequest(); iv.key = bytes("q", 700); iv.ignoreValue = true
        #expect(mvccError { try t.store.write { (w) throws(MVCCError) in _ = try w.put(iv) } } == .keyNotFound)
    }

    @Test func historyLeasesAndRevoke() throws {
        let t = try TestStore()
        try t.grant(9)
        let a = Self.p + [0x62], bKey = Self.p + [0x61] + bytes("a", 1000), c = bytes("c", 10)
        try t.put(a, "1", lease: 9)          // rev 2
        try t.put(bKey, "2", lease: 9)       // rev 3
        try t.put(c, "3", lease: 9)          // rev 4
        try t.put(Self.p, "4", lease: 9)     // rev 5
        try t.put(a, "5")                    // rev 6: a leaves the lease
        #expect(try t.store.leaseKeys(id: 9) == [c, Self.p, bKey])
        let evs = try t.store.events(from: 2, key: Self.p, rangeEnd: prefixEnd(Self.p), prevKV: true)
        #expect(evs.map { $0.kv!.key } == [a, bKey, Self.p, a])
        #expect(evs[3].prevKv?.value == b("1") && evs[3].prevKv?.lease == 9 && evs[3].kv?.lease == 0)
        #expect(try t.store.events(from: 3, key: bKey).map { $0.kv!.modRevision } == [3])
        try t.put(a, "6", lease: 9)          // rev 7: back on the lease
        // revoke: keys deleted in key order, one revision, sub-revisions in that order
        let revoked = try t.revoke(9)
        #expect(revoked.map { $0.kv!.key } == [c, Self.p, bKey, a] && revoked.allSatisfy { $0.type == .delete && $0.kv!.modRevision == 8 })
        #expect(try t.range([0], [0]).kvs.isEmpty)
        #expect(try t.tableEntries { $0.leaseKeys } == 0)
        let hist = try t.store.events(from: 8, key: [0], rangeEnd: [0], prevKV: true)
        #expect(hist.map { $0.kv!.key } == [c, Self.p, bKey, a] && hist.map { $0.prevKv?.value ?? [] } == [b("3"), b("4"), b("2"), b("6")])
    }

    /// The expected numbers come from etcd 3.4.23 (`etcdctl endpoint hashkv`) after exactly these
    /// operations, on 2026-11-25: etcd hashes the full key, whatever its length.
    @Test func hashKVMatchesEtcd() throws {
        let t = try TestStore()
        let l1 = Self.p + [0x61], l2 = Self.p + bytes("b", 1505), l3 = bytes("x", 2000)
        try t.put("a", "1"); try t.put(l1, "v1"); try t.put(Self.p, "short"); try t.put(l2, "v2")
        try t.put(l1, "v1b"); try t.delete(l2); try t.put(l3, "v3")
        #expect(t.store.revision == 8)
        #expect(try t.store.hashKV(revision: 0).hash == 3_984_393_107)
        #expect(try t.store.hashKV(revision: 5).hash == 2_166_275_479)
        // same history in a store that removes old versions one revision entry per write{}
        let u = try TestStore(MVCCOptions(quotaBackendBytes: 2 << 30, mapSize: 256 << 20, compactionBatch: 1))
        try u.put("a", "1"); try u.put(l1, "v1"); try u.put(Self.p, "short"); try u.put(l2, "v2")
        try u.put(l1, "v1b"); try u.delete(l2); try u.put(l3, "v3")
        try t.compact(6)
        #expect(!t.store.compactionPending)
        #expect(try t.store.hashKV(revision: 0).hash == 3_360_012_573)
        try u.compact(6)
        while u.store.compactionPending {
            #expect(try u.store.hashKV(revision: 0).hash == 3_360_012_573)
            try u.store.write { _ in }
        }
        #expect(try u.store.hashKV(revision: 0).hash == 3_360_012_573)
        #expect(try u.store.hash() == t.store.hash())
        #expect(try t.range(Self.p, prefixEnd(Self.p)) { $0.keysOnly = true }.kvs.map(\.key.count) == [495, 496])
    }

    @Test func snapshotRestoreAndDefragmentKeepLongKeys() throws {
        let t = try filled()
        try t.grant(3)
        try t.put(bytes("m", 800), "leased", lease: 3)
        try t.delete(Self.p + [0x62])
        let hash = try t.store.hash(), kv = try t.store.hashKV(revision: 0)
        let all = try t.range([0], [0]).kvs
        let snapDir = TempDir("keel-mvcc-long-snap")
        defer { snapDir.cleanup() }
        let r = try openStore(try snapshotAndRestore(t.store, in: snapDir))
        #expect(try r.hash() == hash && r.hashKV(revision: 0).hash == kv.hash)
        #expect(try r.range({ var q = Etcdserverpb.RangeRequest(); q.key = [0]; q.rangeEnd = [0]; return q }()).kvs == all)
        #expect(try r.leaseKeys(id: 3) == [bytes("m", 800)])
        r.close()
        try t.store.defragment()
        #expect(try t.store.hash() == hash && t.range([0], [0]).kvs == all)
        try t.put(bytes("m", 800), "after")      // ids keep counting after a defragment
        try t.put(bytes("n", 900), "new")
        #expect(try t.range(b("m"), b("o")).kvs.map(\.key) == [bytes("m", 800), bytes("n", 900)])
    }

    /// A data directory written before long keys existed (no longKeys / longRevs tables) opens as it
    /// was, reads the same, hashes the same, and then takes long keys.
    @Test func storeWithoutLongKeyTablesOpensAndUpgrades() throws {
        let t = try TestStore()
        for i in 0..<50 { try t.put("key\(i)", "v\(i)") }
        try t.del("key7")
        let hash = try t.store.hash(), kv = try t.store.hashKV(revision: 0), all = try t.get("\0", "\0").kvs
        // drop the two tables, as a store of sessions 1-2 never had them
        do {
            let env = try t.store.currentEnv()     // released before the reopen (one env per file)
            var w: OpaquePointer?
            #expect(mdb_txn_begin(env.env, nil, 0, &w) == 0)
            #expect(mdb_drop(w, env.longKeys, 1) == 0 && mdb_drop(w, env.longRevs, 1) == 0)
            #expect(mdb_txn_commit(w) == 0)
            var n: MDB_dbi = 0
            #expect(try env.read { (r) throws(MVCCError) -> Int32 in mdb_dbi_open(r.txn, "longKeys", 0, &n) } == MDB_NOTFOUND)
        }
        try t.reopen()
        #expect(try t.store.hash() == hash && t.store.hashKV(revision: 0).hash == kv.hash)
        #expect(try t.get("\0", "\0").kvs == all)
        try t.put(bytes("k", 600), "long")
        #expect(try t.get("k", "l").kvs.map(\.key) == all.map(\.key) + [bytes("k", 600)])
        #expect(try t.tableEntries { $0.longKeys } == 1)
    }
}
