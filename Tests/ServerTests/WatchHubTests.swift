import Foundation
import KeelAPI
@testable import Server
import Storage
import Synchronization
import Testing

/// A real MVCCStore in a temp dir plus the apply-loop side of the hub contract.
final class WatchTestStore: Sendable {
    let dir: String
    let store: MVCCStore

    init() throws {
        dir = NSTemporaryDirectory() + "keel-watch-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        store = try MVCCStore.open(directory: dir)
    }

    deinit {
        store.close()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// One write txn, then what the apply loop hands the hub: (events, revision after commit).
    @discardableResult
    func apply(_ body: (inout MVCCWriteTxn) throws(MVCCError) -> Void) throws -> (events: [Mvccpb.Event], revision: Int64) {
        let evs = try store.write { (t) throws(MVCCError) -> [Mvccpb.Event] in
            try body(&t)
            return t.events
        }
        return (evs, store.revision)
    }

    @discardableResult
    func put(_ key: String, _ value: String, lease: Int64 = 0) throws -> (events: [Mvccpb.Event], revision: Int64) {
        try apply { (t) throws(MVCCError) in
            var p = Etcdserverpb.PutRequest()
            p.key = Array(key.utf8)
            p.value = Array(value.utf8)
            p.lease = lease
            _ = try t.put(p)
        }
    }

    @discardableResult
    func delete(_ key: String, rangeEnd: String = "") throws -> (events: [Mvccpb.Event], revision: Int64) {
        try apply { (t) throws(MVCCError) in
            var d = Etcdserverpb.DeleteRangeRequest()
            d.key = Array(key.utf8)
            d.rangeEnd = Array(rangeEnd.utf8)
            _ = try t.deleteRange(d)
        }
    }
}

func watchCreate(_ key: String, rangeEnd: [UInt8] = [], start: Int64 = 0, id: Int64 = 0, prevKV: Bool = false,
                 filters: [Etcdserverpb.WatchCreateRequest.FilterType] = [], progressNotify: Bool = false,
                 fragment: Bool = false) -> Etcdserverpb.WatchCreateRequest {
    var c = Etcdserverpb.WatchCreateRequest()
    c.key = Array(key.utf8)
    c.rangeEnd = rangeEnd
    c.startRevision = start
    c.watchId = id
    c.prevKv = prevKV
    c.filters = filters
    c.progressNotify = progressNotify
    c.fragment = fragment
    return c
}

func prefixEnd(_ p: String) -> [UInt8] {
    var b = Array(p.utf8)
    while let last = b.last {
        if last < 0xff { b[b.count - 1] = last + 1; return b }
        b.removeLast()
    }
    return [0]
}

/// A hub on a real store with small per-stream buffers and history reads (to exercise falling behind).
func smallBufferHub(_ ts: WatchTestStore, capacity: Int, historyBatch: Int,
                    configure: (inout WatchHubOptions) -> Void = { _ in }) -> WatchHub {
    var options = WatchHubOptions()
    options.streamBufferCapacity = capacity
    options.historyBatchLimit = historyBatch
    configure(&options)
    return WatchHub(source: ts.store, options: options)
}

extension Mvccpb.Event {
    var keyString: String { String(decoding: kv?.key ?? [], as: UTF8.self) }
    var rev: Int64 { kv?.modRevision ?? 0 }
}

@Suite struct WatchHubTests {
    @Test func historyThenLiveInRevisionOrder() async throws {
        let ts = try WatchTestStore()
        try ts.put("a/1", "x")          // rev 2
        try ts.put("b/1", "y")          // rev 3 (outside the prefix)
        try ts.put("a/2", "z")          // rev 4
        let hub = WatchHub(source: ts.store)
        let sid = await hub.openStream()
        let r = await hub.create(stream: sid, watchCreate("a/", rangeEnd: prefixEnd("a/"), start: 2))
        #expect(try r.get() == 0)       // etcd's first server-chosen watch id is 0
        var out = await hub.drain(sid)
        #expect(out.count == 2)
        #expect(out[0].response.created && !out[0].response.canceled)
        #expect(out[0].response.header?.revision == 4)
        #expect(out[1].response.events.map(\.keyString) == ["a/1", "a/2"])
        #expect(out[1].response.events.map(\.rev) == [2, 4])
        #expect(out[1].response.header?.revision == 4)
        #expect(await hub.watcherCounts().synced == 1)

        let p = try ts.put("a/3", "w")
        await hub.deliver(events: p.events, revision: p.revision)
        let d = try ts.delete("a/1")
        await hub.deliver(events: d.events, revision: d.revision)
        let other = try ts.put("c", "v")
        await hub.deliver(events: other.events, revision: other.revision)
        out = await hub.drain(sid)
        #expect(out.map { $0.response.events.map(\.rev) } == [[5], [6]])
        #expect(out[1].response.events[0].type == .delete)
        #expect(out[1].response.events[0].keyString == "a/1")
        #expect(out.map { $0.response.header?.revision } == [5, 6])
    }

    @Test func startRevisionZeroSeesOnlyNewEventsAndCreatedCarriesCurrentRevision() async throws {
        let ts = try WatchTestStore()
        try ts.put("k", "1")
        try ts.put("k", "2")            // rev 3
        let hub = WatchHub(source: ts.store)
        let sid = await hub.openStream()
        await hub.create(stream: sid, watchCreate("k"))
        var out = await hub.drain(sid)
        #expect(out.count == 1 && out[0].response.created && out[0].response.header?.revision == 3)
        let p = try ts.put("k", "3")
        await hub.deliver(events: p.events, revision: p.revision)
        out = await hub.drain(sid)
        #expect(out.count == 1)
        #expect(out[0].response.events.count == 1)
        #expect(out[0].response.events[0].kv?.value == Array("3".utf8))
        #expect(out[0].response.events[0].kv?.version == 3)
        #expect(out[0].response.events[0].prevKv == nil)    // not asked for
    }

    @Test func futureStartRevisionWaitsForIt() async throws {
        let ts = try WatchTestStore()
        let hub = WatchHub(source: ts.store)
        let sid = await hub.openStream()
        await hub.create(stream: sid, watchCreate("k", start: 4))
        _ = await hub.drain(sid)
        for v in ["1", "2", "3"] {                // revs 2, 3, 4
            let p = try ts.put("k", v)
            await hub.deliver(events: p.events, revision: p.revision)
        }
        let out = await hub.drain(sid)
        #expect(out.flatMap { $0.response.events.map(\.rev) } == [4])
    }

    @Test func prevKVAndFilters() async throws {
        let ts = try WatchTestStore()
        try ts.put("k", "old")          // rev 2
        let hub = WatchHub(source: ts.store)
        let sid = await hub.openStream()
        await hub.create(stream: sid, watchCreate("k", id: 1, prevKV: true))
        await hub.create(stream: sid, watchCreate("k", id: 2, filters: [.noput]))
        await hub.create(stream: sid, watchCreate("k", id: 3, filters: [.nodelete]))
        _ = await hub.drain(sid)
        let p = try ts.put("k", "new")  // rev 3
        await hub.deliver(events: p.events, revision: p.revision)
        let d = try ts.delete("k")      // rev 4
        await hub.deliver(events: d.events, revision: d.revision)
        let out = await hub.drain(sid)
        func events(_ id: Int64) -> [Mvccpb.Event] {
            out.filter { $0.response.watchId == id }.flatMap(\.response.events)
        }
        #expect(events(1).map(\.type) == [.put, .delete])
        #expect(events(1)[0].prevKv?.value == Array("old".utf8))
        #expect(events(1)[1].prevKv?.value == Array("new".utf8))
        #expect(events(2).map(\.type) == [.delete])
        #expect(events(2)[0].prevKv == nil)
        #expect(events(3).map(\.type) == [.put])

        // history reads honour prevKV and filters the same way
        let sid2 = await hub.openStream()
        await hub.create(stream: sid2, watchCreate("k", start: 2, id: 9, prevKV: true, filters: [.noput]))
        let hist = await hub.drain(sid2).flatMap(\.response.events)
        #expect(hist.map(\.type) == [.delete])
        #expect(hist[0].rev == 4 && hist[0].prevKv?.value == Array("new".utf8))
    }

    @Test func aBatchWithoutPrevValuesSendsPrevKVWatchersToHistory() async throws {
        let ts = try WatchTestStore()
        let big = String(repeating: "o", count: 300)    // stored by revision
        try ts.put("k", big)            // rev 2
        let hub = WatchHub(source: ts.store)
        #expect(!hub.wantsPrevValues)
        let sid = await hub.openStream()
        await hub.create(stream: sid, watchCreate("k", id: 1, prevKV: true))
        await hub.create(stream: sid, watchCreate("k", id: 2))
        #expect(hub.wantsPrevValues)
        _ = await hub.drain(sid)
        // The apply loop did not load previous values for this batch (it asked before the
        // prev_kv watcher existed, say): that watcher reads the batch from history instead.
        let p = try ts.apply { (t) throws(MVCCError) in
            t.eventPrevValues = false
            var r = Etcdserverpb.PutRequest(); r.key = Array("k".utf8); r.value = Array("new".utf8)
            _ = try t.put(r)
        }                               // rev 3
        #expect(p.events.first?.prevKv?.value.isEmpty == true)
        await hub.deliver(events: p.events, revision: p.revision, prevValues: false)
        var out = await hub.drain(sid)
        func events(_ id: Int64) -> [Mvccpb.Event] { out.filter { $0.response.watchId == id }.flatMap(\.response.events) }
        #expect(events(2).map(\.rev) == [3])
        #expect(events(2)[0].prevKv == nil)
        #expect(events(1).map(\.rev) == [3])
        #expect(events(1).first?.prevKv?.value == Array(big.utf8))
        // Back in sync: the next batch (with values) reaches it live.
        let q = try ts.put("k", "newer")    // rev 4
        await hub.deliver(events: q.events, revision: q.revision)
        out = await hub.drain(sid)
        #expect(events(1).map(\.rev) == [4] && events(1).first?.prevKv?.value == Array("new".utf8))
        #expect(await hub.watcherCounts().unsynced == 0)
        // The count follows cancels and closed streams.
        await hub.cancel(stream: sid, watchID: 1)
        #expect(!hub.wantsPrevValues)
        let sid2 = await hub.openStream()
        await hub.create(stream: sid2, watchCreate("x", id: 5, prevKV: true))
        #expect(hub.wantsPrevValues)
        await hub.closeStream(sid2)
        #expect(!hub.wantsPrevValues)
    }

    @Test func rangeAndFromKeyMatching() async throws {
        let ts = try WatchTestStore()
        let hub = WatchHub(source: ts.store)
        let sid = await hub.openStream()
        await hub.create(stream: sid, watchCreate("b", rangeEnd: Array("d".utf8), id: 1))   // [b, d)
        await hub.create(stream: sid, watchCreate("c", rangeEnd: [0], id: 2))              // >= c
        await hub.create(stream: sid, watchCreate("", rangeEnd: [0], id: 3))               // everything
        _ = await hub.drain(sid)
        for k in ["a", "b", "bz", "c", "d", "zz"] {
            let p = try ts.put(k, "v")
            await hub.deliver(events: p.events, revision: p.revision)
        }
        let out = await hub.drain(sid)
        func keys(_ id: Int64) -> [String] {
            out.filter { $0.response.watchId == id }.flatMap(\.response.events).map(\.keyString)
        }
        #expect(keys(1) == ["b", "bz", "c"])
        #expect(keys(2) == ["c", "d", "zz"])
        #expect(keys(3) == ["a", "b", "bz", "c", "d", "zz"])
    }

    @Test func compactedStartRevisionIsCanceledWithCompactRevision() async throws {
        let ts = try WatchTestStore()
        for i in 0..<5 { try ts.put("k", "\(i)") }        // revs 2...6
        try ts.apply { (t) throws(MVCCError) in try t.compact(5) }
        let hub = WatchHub(source: ts.store)
        await hub.noteCompaction(5)
        let sid = await hub.openStream()
        await hub.create(stream: sid, watchCreate("k", start: 3, id: 4))
        let out = await hub.drain(sid)
        #expect(out.count == 2)
        #expect(out[0].response.created && out[0].response.watchId == 4 && out[0].response.header?.revision == 6)
        #expect(out[1].response.canceled && out[1].response.compactRevision == 5)
        #expect(out[1].response.watchId == 4 && out[1].response.events.isEmpty)
        #expect(out[1].response.header?.revision == 0)     // as etcd's WatchResponse{CompactRevision}
        #expect(await hub.watcherCounts() == (0, 0))

        // etcd's rule is minRev < compactRev: watching from the compacted revision itself works
        let sid2 = await hub.openStream()
        await hub.create(stream: sid2, watchCreate("k", start: 5))
        let ok = await hub.drain(sid2)
        #expect(ok.flatMap(\.response.events).map(\.rev) == [5, 6])
    }

    @Test func watchIDsDuplicatesAndEmptyRange() async throws {
        let ts = try WatchTestStore()
        let hub = WatchHub(source: ts.store)
        let sid = await hub.openStream()
        #expect(try await hub.create(stream: sid, watchCreate("a", id: 1)).get() == 1)
        #expect(try await hub.create(stream: sid, watchCreate("a")).get() == 0)
        #expect(try await hub.create(stream: sid, watchCreate("a")).get() == 2)    // 1 is taken
        #expect(await hub.create(stream: sid, watchCreate("a", id: 2)) == .failure(.duplicateID))
        #expect(await hub.create(stream: sid, watchCreate("b", rangeEnd: Array("a".utf8))) == .failure(.emptyRange))
        let out = await hub.drain(sid)
        #expect(out.map(\.response.watchId) == [1, 0, 2, -1, -1])
        #expect(out[3].response.created && out[3].response.canceled)
        #expect(out[3].response.cancelReason == "mvcc: duplicate watch ID provided on the WatchStream")
        #expect(out[4].response.cancelReason == "mvcc: watcher range is empty")
        // ids are per stream
        let other = await hub.openStream()
        #expect(try await hub.create(stream: other, watchCreate("a", id: 1)).get() == 1)
    }

    @Test func cancelStopsEventsAndUnknownCancelIsSilent() async throws {
        let ts = try WatchTestStore()
        let hub = WatchHub(source: ts.store)
        let sid = await hub.openStream()
        await hub.create(stream: sid, watchCreate("k", id: 5))
        let p1 = try ts.put("k", "1")
        await hub.deliver(events: p1.events, revision: p1.revision)
        #expect(await hub.cancel(stream: sid, watchID: 5))
        #expect(await hub.cancel(stream: sid, watchID: 77) == false)
        let p2 = try ts.put("k", "2")
        await hub.deliver(events: p2.events, revision: p2.revision)
        let out = await hub.drain(sid)
        #expect(out.count == 3)
        #expect(out[1].response.events.map(\.rev) == [2])
        #expect(out[2].response.canceled && !out[2].response.created && out[2].response.watchId == 5)
        #expect(out[2].response.header?.revision == 2)
        #expect(await hub.watcherCounts() == (0, 0))
    }

    @Test func progressRequestAndProgressNotify() async throws {
        let ts = try WatchTestStore()
        try ts.put("x", "1")
        let hub = WatchHub(source: ts.store)
        let sid = await hub.openStream()
        await hub.create(stream: sid, watchCreate("k", id: 1, progressNotify: true))
        await hub.create(stream: sid, watchCreate("j", id: 2))
        _ = await hub.drain(sid)

        await hub.requestProgress(stream: sid)
        var out = await hub.drain(sid)
        #expect(out.count == 1 && out[0].response.watchId == -1 && out[0].response.header?.revision == 2)
        #expect(out[0].response.events.isEmpty && !out[0].response.created && !out[0].response.canceled)

        // first tick: watcher 1 had no events -> progress notification; watcher 2 did not ask
        await hub.progressTick()
        out = await hub.drain(sid)
        #expect(out.map(\.response.watchId) == [1])
        #expect(out[0].response.header?.revision == 2 && out[0].response.events.isEmpty)

        // an event since the last tick elides the next notification (etcd's sws.progress)
        let p = try ts.put("k", "v")
        await hub.deliver(events: p.events, revision: p.revision)
        await hub.progressTick()
        out = await hub.drain(sid)
        #expect(out.count == 1 && out[0].response.events.count == 1)
        await hub.progressTick()
        out = await hub.drain(sid)
        #expect(out.map(\.response.watchId) == [1] && out[0].response.header?.revision == 3)
    }

    @Test func progressRequestWaitsUntilStreamIsSynced() async throws {
        let ts = try WatchTestStore()
        for i in 0..<20 { try ts.put("k", "\(i)") }        // revs 2...21
        let hub = smallBufferHub(ts, capacity: 2, historyBatch: 3)
        let sid = await hub.openStream()
        await hub.create(stream: sid, watchCreate("k", start: 2))
        await hub.requestProgress(stream: sid)
        // catch-up is bounded by the outbox; the progress response comes after all history
        var all: [WatchOutgoing] = []
        while let next = await hub.next(sid) {
            all.append(next)
            if next.response.watchId == -1 { break }
        }
        let revs = all.flatMap(\.response.events).map(\.rev)
        #expect(revs == Array(2...21))
        #expect(all.last?.response.header?.revision == 21)
        #expect(all.filter { !$0.response.events.isEmpty }.allSatisfy { $0.response.events.count <= 3 })
    }

    @Test func slowStreamFallsBehindWithoutBlockingOthers() async throws {
        let ts = try WatchTestStore()
        let hub = smallBufferHub(ts, capacity: 4, historyBatch: 5)
        let slow = await hub.openStream()
        let fast = await hub.openStream()
        await hub.create(stream: slow, watchCreate("k"))
        await hub.create(stream: fast, watchCreate("k"))
        _ = await hub.drain(slow)
        _ = await hub.drain(fast)
        var fastRevs: [Int64] = []
        for i in 0..<40 {                            // revs 2...41; `slow` reads nothing meanwhile
            let p = try ts.put("k", "\(i)")
            await hub.deliver(events: p.events, revision: p.revision)
            fastRevs += await hub.drain(fast).flatMap(\.response.events).map(\.rev)
        }
        #expect(fastRevs == Array(2...41))
        #expect(await hub.fallBehindCount == 1)
        #expect(await hub.watcherCounts() == (1, 1))
        // the slow one now reads: 4 live responses, then history, no gap, no duplicate
        var slowRevs: [Int64] = []
        while slowRevs.last != 41, let next = await hub.next(slow) {
            slowRevs += next.response.events.map(\.rev)
        }
        #expect(slowRevs == Array(2...41))
        #expect(await hub.watcherCounts() == (2, 0))
    }

    /// A watcher from revision 1 and a live watcher with tiny buffers while a writer keeps going
    /// through the real feed (publish -> run loop), including a feed that drops batches.
    @Test(arguments: [64, 1])
    func concurrentWriterSlowWatchersNoGapsNoDuplicates(publishQueue: Int) async throws {
        let ts = try WatchTestStore()
        let writes = 600
        for i in 0..<50 { try ts.put("p/\(i % 7)", "pre\(i)") }   // history: revs 2...51
        let hub = smallBufferHub(ts, capacity: 3, historyBatch: 7) {
            $0.publishQueueCapacity = publishQueue
            $0.syncRetryInterval = .milliseconds(5)
        }
        let runner = Task { await hub.run() }
        defer { runner.cancel() }
        let past = await hub.openStream()
        let live = await hub.openStream()
        await hub.create(stream: past, watchCreate("p/", rangeEnd: prefixEnd("p/"), start: 1, prevKV: true))
        await hub.create(stream: live, watchCreate("p/", rangeEnd: prefixEnd("p/")))
        let final = Int64(51 + writes)
        let writer = Task.detached {
            for i in 0..<writes {
                let p = try ts.put("p/\(i % 7)", "v\(i)")
                hub.publish(events: p.events, revision: p.revision)
                if i % 50 == 0 { await Task.yield() }
            }
        }
        func collect(_ sid: UInt64, slow: Bool) async -> [Int64] {
            var revs: [Int64] = []
            while revs.last ?? 0 < final, let next = await hub.next(sid) {
                revs += next.response.events.map(\.rev)
                if slow { try? await Task.sleep(for: .microseconds(200)) }
            }
            return revs
        }
        async let pastRevs = collect(past, slow: true)
        async let liveRevs = collect(live, slow: false)
        let (a, b) = await (pastRevs, liveRevs)
        try await writer.value
        #expect(a == Array(2...final))
        #expect(b.first ?? 0 >= 52)
        #expect(b == Array((b.first ?? 52)...final))
        print("concurrent writer (publish queue \(publishQueue)): watchers fell behind \(await hub.fallBehindCount) times")
        await hub.shutdown()
    }
}

/// The apply loop publishes a batch before its LMDB group commit: a watcher that catches up from
/// history reads only what the store has committed, asks for a commit, and gets the rest after
/// `committed()`, without a gap or a duplicate; synced watchers get the batch at once.
@Suite struct WatchHubGroupCommitTests {
    final class Requests: Sendable {
        let count = Mutex(0)
    }

    @Test(.timeLimit(.minutes(1))) func historyNotCommittedYetIsReadAfterTheCommit() async throws {
        let ts = try WatchTestStore()
        try ts.put("k", "1")                                 // rev 2, committed
        let hub = WatchHub(source: ts.store)
        let requests = Requests()
        await hub.setCommitRequest { requests.count.withLock { $0 += 1 } }
        let live = await hub.openStream()
        #expect(try await hub.create(stream: live, watchCreate("k")).get() == 0)
        _ = await hub.drain(live)                            // created
        // Two batches applied in one open transaction, published before its commit.
        let w = try ts.store.beginWrite()
        for v in ["2", "3"] {
            let evs = try w.batch { (t) throws(MVCCError) -> [Mvccpb.Event] in
                var p = Etcdserverpb.PutRequest(); p.key = Array("k".utf8); p.value = Array(v.utf8)
                _ = try t.put(p)
                return t.events
            }
            await hub.deliver(events: evs, revision: w.revision)
        }
        #expect(ts.store.revision == 2 && w.revision == 4)
        // The synced watcher has both events without any commit.
        let liveOut = await hub.drain(live)
        #expect(liveOut.flatMap { $0.response.events.map(\.rev) } == [3, 4])
        // A watcher from revision 2 reads the committed history (rev 2), then waits for the commit.
        let late = await hub.openStream()
        #expect(try await hub.create(stream: late, watchCreate("k", start: 2)).get() == 0)
        var lateOut = await hub.drain(late)
        #expect(lateOut.flatMap { $0.response.events.map(\.rev) } == [2])
        #expect(requests.count.withLock { $0 } == 1)
        #expect(await hub.watcherCounts().unsynced == 1)
        #expect(await hub.commitWaits >= 1)
        try w.commit()
        hub.committed()
        // committed() re-syncs on a task of its own: wait (bounded by the time limit) for it.
        var events: [Int64] = []
        while events.count < 2 {
            lateOut = await hub.drain(late)
            events += lateOut.flatMap { $0.response.events.map(\.rev) }
            if events.count < 2 { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(events == [3, 4])
        #expect(await hub.watcherCounts().unsynced == 0)
        // No commit asked while nobody waits.
        #expect(requests.count.withLock { $0 } == 1)
    }
}
