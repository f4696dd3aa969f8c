import GRPC
import KeelAPI
@testable import Server
import Storage
import Testing

/// WatchService and LeaseService behind the real gRPC server, driven by the real gRPC client.
@Suite struct WatchGRPCTests {
    static func header() -> Etcdserverpb.ResponseHeader {
        var h = Etcdserverpb.ResponseHeader()
        h.clusterId = 5
        h.memberId = 6
        return h
    }

    @Test func watchOverHTTP2WithAClientThatStopsReading() async throws {
        let ts = try WatchTestStore()
        let hub = smallBufferHub(ts, capacity: 4, historyBatch: 50)
        let runner = Task { await hub.run() }
        let server = try await GRPCServer(configuration: .init(), services: [
            WatchService(hub: hub, header: { Self.header() }),
        ])
        let client = GRPCClient(host: "127.0.0.1", port: server.port)
        let writes = 600
        let value = [UInt8](repeating: 0x76, count: 10_000)      // ~6 MB of events: beyond any window
        let revs: [Int64] = try await client.bidirectionalStreaming(Etcdserverpb.Watch.watch) { writer, responses in
            var req = Etcdserverpb.WatchRequest()
            req.requestUnion = .createRequest(watchCreate("s/", rangeEnd: prefixEnd("s/")))
            try await writer.send(req)
            var it = responses.makeAsyncIterator()
            let created = try #require(try await it.next())
            #expect(created.created && created.header?.clusterId == 5 && created.header?.revision == 1)
            // the client reads nothing while the whole load is applied and published: publish never
            // waits for this watcher (this loop would hang otherwise)
            for i in 0..<writes {
                let p = try ts.apply { (t) throws(MVCCError) in
                    var put = Etcdserverpb.PutRequest()
                    put.key = Array("s/\(i % 10)".utf8)
                    put.value = value
                    _ = try t.put(put)
                }
                hub.publish(events: p.events, revision: p.revision)
            }
            var seen: [Int64] = []
            while seen.last != Int64(writes + 1), let r = try await it.next() {
                #expect(r.watchId == 0 && !r.canceled)
                seen += r.events.map(\.rev)
            }
            writer.finish()
            return seen
        }
        #expect(revs == Array(2...Int64(writes + 1)))
        #expect(await hub.fallBehindCount >= 1)
        await client.close()
        await server.shutdown()
        await hub.shutdown()
        runner.cancel()
    }

    @Test func leaseKeepAliveOverHTTP2() async throws {
        let f = try await LessorFixture()
        await f.lessor.promote(extend: .zero)
        let server = try await GRPCServer(configuration: .init(), services: [
            LeaseService(lessor: f.lessor, header: { Self.header() }),
        ])
        let client = GRPCClient(host: "127.0.0.1", port: server.port)
        var g = Etcdserverpb.LeaseGrantRequest()
        g.ttl = 40
        let granted = try await client.unary(Etcdserverpb.Lease.leaseGrant, g)
        #expect(granted.ttl == 40 && granted.id > 0 && granted.header?.memberId == 6)
        f.clock.advance(.seconds(15))
        let ttls: [Int64] = try await client.bidirectionalStreaming(Etcdserverpb.Lease.leaseKeepAlive) { writer, responses in
            var it = responses.makeAsyncIterator()
            var out: [Int64] = []
            for id in [granted.id, 999, granted.id] {
                var r = Etcdserverpb.LeaseKeepAliveRequest()
                r.id = id
                try await writer.send(r)
                let resp = try #require(try await it.next())
                #expect(resp.id == id)
                out.append(resp.ttl)
            }
            writer.finish()
            return out
        }
        #expect(ttls == [40, 0, 40])
        var q = Etcdserverpb.LeaseTimeToLiveRequest()
        q.id = granted.id
        let ttl = try await client.unary(Etcdserverpb.Lease.leaseTimeToLive, q)
        #expect(ttl.ttl == 40 && ttl.grantedTTL == 40)        // renewed at +15 s
        var big = Etcdserverpb.LeaseGrantRequest()
        big.ttl = Lessor.maxLeaseTTL + 1
        await #expect(throws: GRPCStatus(.outOfRange, "etcdserver: too large lease TTL")) {
            _ = try await client.unary(Etcdserverpb.Lease.leaseGrant, big)
        }
        await client.close()
        await server.shutdown()
        await f.stop()
    }
}
