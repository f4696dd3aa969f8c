import GRPC
import Synchronization
import KeelAPI
@testable import Server
import Storage
import Testing

@Suite struct WatchServiceTests {
    func event(_ key: String, valueBytes: Int, rev: Int64) -> Mvccpb.Event {
        var e = Mvccpb.Event()
        var kv = Mvccpb.KeyValue()
        kv.key = Array(key.utf8)
        kv.value = [UInt8](repeating: 0x61, count: valueBytes)
        kv.modRevision = rev
        e.kv = kv
        return e
    }

    @Test func fragmentsLikeEtcd() {
        var r = Etcdserverpb.WatchResponse()
        r.watchId = 3
        r.header = Etcdserverpb.ResponseHeader()
        r.header?.revision = 9
        r.events = (0..<10).map { event("k\($0)", valueBytes: 100, rev: 9) }
        let max = 350
        let parts = fragmentWatchResponse(r, maxRequestBytes: max)
        #expect(parts.count > 1)
        #expect(parts.flatMap(\.events) == r.events)
        #expect(parts.dropLast().allSatisfy { $0.fragment } && parts.last?.fragment == false)
        #expect(parts.allSatisfy { $0.serializedSize < max || $0.events.count == 1 })
        #expect(parts.allSatisfy { $0.watchId == 3 && $0.header?.revision == 9 })
        // each fragment is as full as etcd makes it: adding the next event would reach the limit
        for (i, p) in parts.dropLast().enumerated() {
            var bigger = p
            bigger.events.append(parts[i + 1].events[0])
            #expect(bigger.serializedSize >= max)
        }
        // small responses and single events are never split
        #expect(fragmentWatchResponse(r, maxRequestBytes: 1 << 20).count == 1)
        var one = r
        one.events = [event("big", valueBytes: 5000, rev: 9)]
        #expect(fragmentWatchResponse(one, maxRequestBytes: max) == [one])
    }

    @Test func streamCreatesFragmentsCancelsAnswersProgressAndEnds() async throws {
        let ts = try WatchTestStore()
        let hub = WatchHub(source: ts.store)
        let service = WatchService(hub: hub, header: {
            var h = Etcdserverpb.ResponseHeader()
            h.clusterId = 11
            h.memberId = 22
            h.raftTerm = 3
            h.revision = 999          // the hub's revision wins
            return h
        }, maxRequestBytes: 2_000)
        let (requests, send) = AsyncStream<Etcdserverpb.WatchRequest>.makeStream()
        let (responses, got) = AsyncStream<Etcdserverpb.WatchResponse>.makeStream()
        let serving = Task {
            try await service.serve(requests) { got.yield($0) }
            got.finish()
        }
        var it = responses.makeAsyncIterator()
        func request(_ c: Etcdserverpb.WatchCreateRequest) -> Etcdserverpb.WatchRequest {
            var r = Etcdserverpb.WatchRequest()
            r.requestUnion = .createRequest(c)
            return r
        }

        send.yield(request(watchCreate("big/", rangeEnd: prefixEnd("big/"), id: 1, fragment: true)))
        let created = try #require(await it.next())
        #expect(created.created && created.watchId == 1)
        #expect(created.header?.clusterId == 11 && created.header?.memberId == 22 && created.header?.raftTerm == 3)
        #expect(created.header?.revision == 1)

        // one txn (one revision) with 20 keys of 300 bytes -> fragments of < 2,000 bytes
        let big = try ts.apply { (t) throws(MVCCError) in
            var txn = Etcdserverpb.TxnRequest()
            txn.success = (0..<20).map { i in
                var op = Etcdserverpb.RequestOp()
                var p = Etcdserverpb.PutRequest()
                p.key = Array("big/\(i)".utf8)
                p.value = [UInt8](repeating: 0x62, count: 300)
                op.requestPut = p
                return op
            }
            _ = try t.txn(txn)
        }
        hub.publish(events: big.events, revision: big.revision)
        let runner = Task { await hub.run() }
        var keys: [String] = []
        var fragments = 0
        while keys.count < 20, let r = await it.next() {
            #expect(r.watchId == 1 && r.header?.revision == 2 && r.serializedSize < 2_000)
            keys += r.events.map(\.keyString)
            if r.fragment { fragments += 1 }
        }
        #expect(Set(keys) == Set((0..<20).map { "big/\($0)" }) && keys.count == 20)
        #expect(fragments >= 3)

        var cancel = Etcdserverpb.WatchRequest()
        var c = Etcdserverpb.WatchCancelRequest()
        c.watchId = 1
        cancel.requestUnion = .cancelRequest(c)
        send.yield(cancel)
        let canceled = try #require(await it.next())
        #expect(canceled.canceled && canceled.watchId == 1 && canceled.header?.revision == 2)

        var progress = Etcdserverpb.WatchRequest()
        progress.requestUnion = .progressRequest(Etcdserverpb.WatchProgressRequest())
        send.yield(progress)
        let p = try #require(await it.next())
        #expect(p.watchId == -1 && p.header?.revision == 2 && !p.created && !p.canceled)

        // the client closing its side ends the call (etcd's recvLoop returning ends Watch)
        send.finish()
        try await serving.value
        #expect(await it.next() == nil)
        #expect(await hub.watcherCounts() == (0, 0))
        runner.cancel()
    }

    /// A stream that requires a leader ends with etcd's "etcdserver: no leader" (UNAVAILABLE) once the
    /// member has been without one for `checks` looks in a row; a leader seen in between resets the count.
    @Test func aStreamThatRequiresALeaderEndsWhenTheMemberLosesIt() async throws {
        let ts = try WatchTestStore()
        let hub = WatchHub(source: ts.store)
        let looks = Mutex<[Bool]>([false, false, true, false, false, false])  // what hasLeader answers, in turn
        let asked = Mutex(0)
        let leader = WatchService.LeaderWatch(hasLeader: {
            asked.withLock { $0 += 1 }
            return looks.withLock { $0.isEmpty ? false : $0.removeFirst() }
        }, interval: .milliseconds(5), checks: 3)
        let service = WatchService(hub: hub, header: { Etcdserverpb.ResponseHeader() })
        let (requests, _) = AsyncStream<Etcdserverpb.WatchRequest>.makeStream()
        do {
            try await service.serve(requests, send: { _ in }, leader: leader)
            Issue.record("the stream ended without an error")
        } catch let st as GRPCStatus {
            #expect(st == EtcdError.noLeader)
        }
        // two without, one with (reset), then three without: six looks
        #expect(asked.withLock { $0 } == 6)
        #expect(await hub.watcherCounts() == (0, 0))
    }
}
