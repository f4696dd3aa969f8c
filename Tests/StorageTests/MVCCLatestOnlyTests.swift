import KeelAPI
import Testing
@testable import Storage

/// The latest-only key table (MVCCOptions.latestOnlyKeyTable, sys "format" = 2): one key-table entry
/// per key, older versions reached through the revs entries. The same history written into a
/// default store and a latest-only one reads the same at every revision, gives the same history
/// and the same HashKV, before and after compactions (done in small steps, so also half-done).
@Suite struct MVCCLatestOnlyTests {
    static let base = MVCCOptions(quotaBackendBytes: 2 << 30, mapSize: 256 << 20, compactionBatch: 3)
    static var latestOnly: MVCCOptions {
        var o = base
        o.latestOnlyKeyTable = true
        return o
    }

    func value(_ i: Int) -> String {
        // short values inline in the key table, every third one longer than the inline limit
        i % 3 == 0 ? String(repeating: "v\(i)-", count: 30) : "v\(i)"
    }

    /// Puts, deletes (single and ranges), lease attach and revoke, a txn: the same on both stores.
    func history(_ t: TestStore, _ from: Int, _ to: Int) throws {
        for i in from..<to {
            switch i % 11 {
            case 3: try t.del("k\((i * 5) % 7)")
            case 7: try t.del("k2", "k4")
            case 9:
                try t.store.write { (w) throws(MVCCError) in
                    try w.leaseGrant(id: Int64(i), ttl: 30)
                    _ = try w.put(putReq("k\(i % 7)", value(i), lease: Int64(i)))
                    _ = try w.put(putReq("k\((i + 1) % 7)", value(i + 1), lease: Int64(i)))
                }
            case 10:
                _ = try t.store.write { (w) throws(MVCCError) in try w.leaseRevoke(id: Int64(i - 1)) }
            default: try t.put("k\((i * 3) % 7)", value(i))
            }
        }
    }

    /// `stored`: also the same revs entries (not while a compaction is half done: the default layout
    /// removes a superseded version when its step reaches it, the latest-only one when the step
    /// reaches the version that supersedes it).
    func expectSame(_ a: TestStore, _ l: TestStore, _ note: String, stored: Bool = true) throws {
        #expect(a.store.revision == l.store.revision, "\(note)")
        #expect(a.store.compactedRevision == l.store.compactedRevision, "\(note)")
        if stored { #expect(try a.storedRevisions() == l.storedRevisions(), "\(note): stored revisions") }
        let first = max(1, a.store.compactedRevision)
        for rev in first...a.store.revision {
            #expect(try a.get("\0", "\0", rev: rev).kvs == l.get("\0", "\0", rev: rev).kvs, "\(note): range at \(rev)")
            #expect(try a.get("k3", rev: rev).kvs == l.get("k3", rev: rev).kvs, "\(note): k3 at \(rev)")
            if rev > a.store.compactedRevision {   // HashKV refuses the compacted revision itself, as etcd
                #expect(try a.store.hashKV(revision: rev).hash == l.store.hashKV(revision: rev).hash, "\(note): HashKV at \(rev)")
            }
        }
        for from in [first, first + 1, a.store.revision] {
            #expect(try a.store.events(from: from, key: [0], rangeEnd: [0], prevKV: true)
                    == l.store.events(from: from, key: [0], rangeEnd: [0], prevKV: true), "\(note): events from \(from)")
        }
    }

    @Test func readsHistoryAndHashKVMatchTheDefaultLayout() throws {
        let a = try TestStore(Self.base), l = try TestStore(Self.latestOnly)
        #expect(try !a.store.currentEnv().latestOnly)
        #expect(try l.store.currentEnv().latestOnly)
        try history(a, 0, 60)
        try history(l, 0, 60)
        try expectSame(a, l, "uncompacted")
        // the key table holds one entry per key that has one (7 keys, some deleted: tombstones
        // stay until compacted), against every version in the default layout
        let keysL = try l.store.tableStats().first { $0.name == "keys" }!.entries
        let keysA = try a.store.tableStats().first { $0.name == "keys" }!.entries
        #expect(keysL <= 7, "latest-only key table: \(keysL) entries")
        #expect(keysA > 40, "default key table: \(keysA) entries")
        for (n, target) in [20, 33, 34, 50].enumerated() {
            let rev = Int64(target)
            try a.compact(rev)
            try l.compact(rev)
            try expectSame(a, l, "compacted at \(rev), steps pending", stored: false)
            // more writes run the pending compaction steps (3 revision entries each) to the end
            try history(a, 60 + 30 * n, 90 + 30 * n)
            try history(l, 60 + 30 * n, 90 + 30 * n)
            try expectSame(a, l, "after compaction at \(rev)")
        }
        try l.reopen()
        try expectSame(a, l, "latest-only store reopened")
        try l.store.defragment()
        try expectSame(a, l, "latest-only store defragmented")
        #expect(try l.store.currentEnv().latestOnly)
    }

    /// A read at a revision older than a key's only entry walks back; a version compaction removed
    /// reads as absent, as in the default layout.
    @Test func oldRevisionsThroughThePreviousVersionChain() throws {
        let l = try TestStore(Self.latestOnly)
        try l.put("a", "1")            // 2
        try l.put("a", "2")            // 3
        try l.del("a")                 // 4
        try l.put("a", "3")            // 5
        try l.put("b", "x")            // 6
        try l.put("a", "4")            // 7
        #expect(try l.get("a", rev: 2).kvs.map { s($0.value) } == ["1"])
        #expect(try l.get("a", rev: 3).kvs.map { s($0.value) } == ["2"])
        #expect(try l.get("a", rev: 4).kvs.isEmpty)
        #expect(try l.get("a", rev: 6).kvs.map { s($0.value) } == ["3"])
        #expect(try l.get("a", rev: 6).kvs.first?.createRevision == 5)
        #expect(try l.get("a", rev: 6).kvs.first?.version == 1)
        #expect(try l.get("a").kvs.first?.version == 2)
        #expect(try l.get("\0", "\0", rev: 5).kvs.map { s($0.key) } == ["a"])
        let evs = try l.store.events(from: 3, key: b("a"), prevKV: true)
        #expect(evs.map(\.type) == [.put, .delete, .put, .put])
        #expect(evs.map { s($0.prevKv?.value ?? []) } == ["1", "2", "", "3"])
        try l.compact(5)
        try l.put("c", "y")            // 8: runs compaction steps
        try l.put("c", "z")            // 9
        #expect(try l.get("a", rev: 5).kvs.map { s($0.value) } == ["3"])
        #expect(try l.get("a", rev: 6).kvs.map { s($0.value) } == ["3"])
        // versions 2, 3 and the tombstone at 4 are gone from revs; 5 is still visible at 5
        #expect(try l.store.events(from: 5, key: b("a"), prevKV: true).map { s($0.kv?.value ?? []) } == ["3", "4"])
        #expect(mvccError { _ = try l.get("a", rev: 4) } == .compacted(compactRevision: 5))
    }

    /// The layout is chosen when a store is created and kept: a default store opened with the
    /// option stays default, a latest-only one opened without it stays latest-only.
    @Test func theLayoutIsRecordedAtCreation() throws {
        let a = try TestStore(Self.base)
        try a.put("k", "v")
        try a.reopen(Self.latestOnly)
        #expect(try !a.store.currentEnv().latestOnly)
        try a.put("k", "w")
        #expect(try a.get("k", rev: 2).kvs.map { s($0.value) } == ["v"])
        #expect(a.store.keyTableLayout == "all-versions")
        let l = try TestStore(Self.latestOnly)
        try l.put("k", "v")
        try l.reopen(Self.base)
        #expect(l.store.keyTableLayout == "latest-only")
        #expect(try l.store.currentEnv().latestOnly)
        try l.put("k", "w")
        #expect(try l.get("k", rev: 2).kvs.map { s($0.value) } == ["v"])
        #expect(try l.store.tableStats().first { $0.name == "keys" }!.entries == 1)
    }
}
