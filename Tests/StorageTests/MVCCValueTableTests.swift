#if canImport(Glibc)
import Glibc
#endif
import CLMDB
import KeelAPI
import KeelTestSupport
import Testing
@testable import Storage

/// Values longer than `MVCCOptions.inlineValueLimit` live in their revs entry (record kind putRef),
/// shorter ones inline in the key table (MVCCStore.swift, "Tables"). Reads must not tell them apart.
@Suite("MVCC value placement")
struct MVCCValueTableTests {
    static let limit = MVCCOptions.defaultInlineValueLimit

    func value(_ n: Int, _ seed: UInt8 = 0) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) } }

    func put(_ t: TestStore, _ k: String, _ v: [UInt8], lease: Int64 = 0) throws {
        var p = Etcdserverpb.PutRequest()
        p.key = b(k); p.value = v; p.lease = lease
        try t.store.write { (w) throws(MVCCError) in _ = try w.put(p) }
    }

    /// The raw key-table record and revs entry of (key, main, sub).
    func raw(_ t: TestStore, _ k: String, _ main: Int64, _ sub: Int64 = 0) throws -> (record: [UInt8]?, rev: [UInt8]?) {
        try t.store.currentEnv().read { (x) throws(MVCCError) in
            (try x.get(x.env.keys, Rec.keyTableKey(b(k), main, sub)), try x.get(x.env.revs, Rec.revKey(main, sub)))
        }
    }

    @Test func longValuesAreWrittenOnceIntoTheRevisionTable() throws {
        let t = try TestStore()
        let big = value(1024), edge = value(Self.limit), over = value(Self.limit + 1)
        try put(t, "big", big)                          // rev 2
        try put(t, "edge", edge)                        // rev 3
        try put(t, "over", over)                        // rev 4
        // a 1 KiB value: a 33-byte key-table record pointing at its revision, the bytes in revs
        let (bigRec, bigRev) = try raw(t, "big", 2)
        #expect(bigRec?.count == 33 && bigRec?.first == Rec.putRef)
        #expect(bigRev.map { Array($0.suffix(1024)) } == big && bigRev?.count == 1 + 4 + 3 + 1024)
        // exactly at the limit: inline, as before; one byte more: by revision
        let (edgeRec, edgeRev) = try raw(t, "edge", 3)
        #expect(edgeRec?.first == Rec.put && edgeRec?.count == 25 + Self.limit && edgeRev == [Rec.put] + b("edge"))
        #expect(try raw(t, "over", 4).record?.first == Rec.putRef)

        let all = try t.get("a", "z")
        #expect(all.kvs.map(\.value) == [big, edge, over])
        #expect(all.kvs.map(\.modRevision) == [2, 3, 4] && all.kvs.map(\.version) == [1, 1, 1])
        #expect(try t.get("a", "z") { $0.keysOnly = true }.kvs.allSatisfy { $0.value.isEmpty })
        let byValue = [(b("big"), big), (b("edge"), edge), (b("over"), over)]
            .sorted { $1.1.lexicographicallyPrecedes($0.1) }.map(\.0)
        #expect(try t.get("a", "z") { $0.sortTarget = .value; $0.sortOrder = .descend }.kvs.map(\.key) == byValue)

        // an update keeps the old value readable at its revision, prevKv included; a short value
        // replacing a long one goes inline
        var p = Etcdserverpb.PutRequest()
        p.key = b("big"); p.value = b("small"); p.prevKv = true
        let resp = try t.store.write { (w) throws(MVCCError) in try w.put(p) }     // rev 5
        #expect(resp.prevKv?.value == big && resp.prevKv?.modRevision == 2)
        #expect(try raw(t, "big", 5).record?.first == Rec.put)
        #expect(try t.get("big").kvs.first?.value == b("small"))
        #expect(try t.get("big", rev: 4).kvs.first?.value == big)
        let evs = try t.store.events(from: 2, key: b("big"), prevKV: true)
        #expect(evs.compactMap { $0.kv?.value } == [big, b("small")] && evs.last?.prevKv?.value == big)

        // survives a reopen
        try t.reopen()
        #expect(try t.get("a", "z").kvs.map(\.value) == [b("small"), edge, over])
        #expect(try t.get("big", rev: 4).kvs.first?.value == big)
    }

    @Test func compactionRemovesASupersededValueWithItsRevision() throws {
        let t = try TestStore()
        try put(t, "k", value(500, 1))                  // rev 2
        try put(t, "k", value(600, 2))                  // rev 3
        try put(t, "gone", value(700, 3))               // rev 4
        try t.del("gone")                               // rev 5
        try put(t, "x", b("1"))                         // rev 6
        #expect(try t.tableEntries { $0.revs } == 5)
        try t.compact(6)
        // left: k@3 (newest put at 6) and x@6; k@2, gone@4 and its tombstone went
        #expect(try raw(t, "k", 2).rev == nil && raw(t, "gone", 4).rev == nil)
        #expect(try t.tableEntries { $0.revs } == 2 && t.tableEntries { $0.keys } == 2)
        #expect(try t.get("k").kvs.first?.value == value(600, 2))
        #expect(try t.store.events(from: 6, key: b("k")).isEmpty)
    }

    /// The same history written with every value inline (as stores written before putRef existed)
    /// and with the default placement: every read agrees, HashKV (etcd's hash of the marshaled
    /// KeyValues) is the same, only Keel's hash of the stored bytes differs. An all-inline store
    /// reopened with the default keeps its old records and writes new ones by revision.
    @Test func inlineAndRevisionPlacementReadTheSame() throws {
        let opts = MVCCOptions(quotaBackendBytes: 2 << 30, mapSize: 256 << 20)
        var inlineOpts = opts
        inlineOpts.inlineValueLimit = .max
        let a = try TestStore(inlineOpts), c = try TestStore(opts)
        func history(_ t: TestStore, from: Int, to: Int) throws {
            for i in from..<to {
                try put(t, "key\(i % 7)", value(i * 37 % 300, UInt8(truncatingIfNeeded: i)), lease: 0)
                if i % 5 == 4 { try t.del("key\((i + 3) % 7)") }
            }
        }
        try history(a, from: 0, to: 40)
        try history(c, from: 0, to: 40)
        func same(_ note: Comment) throws {
            #expect(try a.get("\0", "\0").kvs == c.get("\0", "\0").kvs, note)
            let old = max(20, c.store.compactedRevision)
            #expect(try a.get("\0", "\0", rev: old).kvs == c.get("\0", "\0", rev: old).kvs, note)
            #expect(try a.store.events(from: old, key: [0], rangeEnd: [0], prevKV: true)
                    == c.store.events(from: old, key: [0], rangeEnd: [0], prevKV: true), note)
            #expect(try a.store.hashKV(revision: 0).hash == c.store.hashKV(revision: 0).hash, note)
        }
        try same("all inline vs default")
        #expect(try a.store.hash() != c.store.hash())
        #expect(try a.get("\0", "\0").kvs.contains { $0.value.count > Self.limit })

        // the all-inline store, reopened with the default options, goes on in the new placement
        try a.reopen(opts)
        try history(a, from: 40, to: 60)
        try history(c, from: 40, to: 60)
        try same("mixed records vs default")
        try a.compact(a.store.revision - 5)
        try c.compact(c.store.revision - 5)
        try same("after compaction")
        try a.store.defragment()
        try same("after defragment")
        let snapDir = TempDir("keel-mvcc-values-snap")
        defer { snapDir.cleanup() }
        let r = try openStore(try snapshotAndRestore(c.store, in: snapDir))
        defer { r.close() }
        #expect(try r.range(rangeReq("\0", "\0")).kvs == c.get("\0", "\0").kvs)
        #expect(try r.hash() == c.store.hash())
    }

    /// Revision entries are written with MDB_APPEND: pages of the revision table fill up instead of
    /// being split in half, so 1 KiB values take about one leaf page per three puts.
    @Test func revisionTablePagesFillUp() throws {
        let t = try TestStore()
        for i in 0..<300 { try put(t, String(format: "k%05d", (i * 7919) % 1000), value(1024, UInt8(truncatingIfNeeded: i))) }
        let revs = try t.store.tableStats().first { $0.name == "revs" }!
        // each 1 KiB entry is ~1.05 KB plus LMDB's node header: 3 fit in a 4 KiB page
        #expect(revs.entries == 300 && revs.overflowPages == 0)
        #expect(revs.leafPages <= 101, "\(revs)")
        let keys = try t.store.tableStats().first { $0.name == "keys" }!
        #expect(keys.overflowPages == 0 && keys.leafPages < revs.leafPages, "\(keys)")
    }

    @Test func putEventsCanLeaveOutThePreviousValue() throws {
        let t = try TestStore()
        let old = value(300), small = value(8, 3)
        try put(t, "k", old, lease: 0)                  // rev 2, stored by revision
        try put(t, "s", small)                          // rev 3, inline
        func putEvents(_ keep: Bool, _ k: String, _ v: [UInt8], prevKv: Bool = false, ignoreValue: Bool = false)
            throws -> (events: [Mvccpb.Event], response: Etcdserverpb.PutResponse) {
            var p = Etcdserverpb.PutRequest()
            p.key = b(k); p.value = v; p.prevKv = prevKv; p.ignoreValue = ignoreValue
            return try t.store.write { (w) throws(MVCCError) in
                #expect(w.eventPrevValues)              // every batch starts with the default
                w.eventPrevValues = keep
                let r = try w.put(p)
                return (w.events, r)
            }
        }
        // Without the values: the same previous version (create, mod, version, lease), no value.
        let lean = try putEvents(false, "k", value(300, 1))     // rev 4
        let prev = try #require(lean.events.first?.prevKv)
        #expect(prev.key == b("k") && prev.createRevision == 2 && prev.modRevision == 2 && prev.version == 1)
        #expect(prev.value.isEmpty)
        #expect(lean.events.first?.kv?.version == 2 && lean.events.first?.kv?.createRevision == 2)
        // A request that needs the value gets it, in its response and its event.
        let asked = try putEvents(false, "k", value(300, 2), prevKv: true)     // rev 5
        #expect(asked.response.prevKv?.value == value(300, 1))
        #expect(asked.events.first?.prevKv?.value == value(300, 1))
        let kept = try putEvents(false, "k", [], ignoreValue: true)             // rev 6
        #expect(kept.events.first?.kv?.value == value(300, 2))
        // The default keeps them, inline or by revision.
        #expect(try putEvents(true, "k", value(10)).events.first?.prevKv?.value == value(300, 2))
        #expect(try putEvents(true, "s", value(10)).events.first?.prevKv?.value == small)
        // What was written is the same either way.
        var r = Etcdserverpb.RangeRequest(); r.key = b("k")
        let got = try t.store.range(r).kvs
        #expect(got.count == 1 && got[0].value == value(10) && got[0].version == 5 && got[0].createRevision == 2)
    }
}
