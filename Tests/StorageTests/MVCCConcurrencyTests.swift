import KeelAPI
import Testing
@testable import Storage

/// Readers on other threads while the single writer commits: every read is one consistent snapshot.
@Suite("MVCC concurrency")
struct MVCCConcurrencyTests {
    @Test func readersSeeWholeCommitsOnly() async throws {
        let t = try TestStore()
        let store = t.store
        // each write sets a and b to the same value in one write{} (two revisions, one commit)
        try t.put("a", "0"); try t.put("b", "0")
        let writes = 300
        async let writer: Void = {
            for i in 1...writes {
                await Task.yield()
                try store.write { (w) throws(MVCCError) in
                    _ = try w.put(putReq("a", "\(i)"))
                    _ = try w.put(putReq("b", "\(i)"))
                    w.setAppliedIndex(UInt64(i))
                }
                if i % 50 == 0 { try store.defragment() }     // readers keep going across file switches
            }
        }()
        let results = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for _ in 0..<4 {
                group.addTask {
                    var torn = 0, reads = 0
                    // yield every read: the cooperative pool has as many threads as cores (2 here), and
                    // the writer must get one
                    while store.appliedIndex < UInt64(writes) && reads < 2_000_000 {
                        await Task.yield()
                        let r = try store.range(rangeReq("a", "c"))
                        reads += 1
                        let vals = r.kvs.map { s($0.value) }
                        if vals.count != 2 || vals[0] != vals[1] { torn += 1 }
                        if r.header?.revision != r.kvs.map(\.modRevision).max() { torn += 1 }
                    }
                    return (torn, reads)
                }
            }
            var out: [(Int, Int)] = []
            for try await x in group { out.append(x) }
            return out
        }
        try await writer
        #expect(results.allSatisfy { $0.0 == 0 }, "torn reads: \(results)")
        #expect(results.map(\.1).reduce(0, +) > 0)
        #expect(try t.get("a").kvs.first?.value == b("\(writes)"))
        #expect(t.store.revision == Int64(3 + 2 * writes))
    }
}
