import GRPC
import KeelAPI
@testable import Server
import Synchronization
import Testing

/// RequireLeaderService: etcd's `hasleader` interceptors on a real gRPC server, with a scripted
/// leader state: unary calls refused while there is no leader, streams ended after 3 looks
/// without one, calls without the metadata untouched.
@Suite("hasleader interceptors", .timeLimit(.minutes(1)))
struct RequireLeaderTests {
    final class LeaderState: Sendable { let present = Atomic(true) }

    /// A Range that answers at once and a LeaseKeepAlive that echoes ids.
    struct Fake: GRPCService {
        var methods: [ServerMethod] {
            [.unary(Etcdserverpb.KV.range) { _, _ in Etcdserverpb.RangeResponse() },
             .bidirectionalStreaming(Etcdserverpb.Lease.leaseKeepAlive) { requests, writer, _ in
                 for try await r in requests {
                     var resp = Etcdserverpb.LeaseKeepAliveResponse(); resp.id = r.id
                     try await writer.send(resp)
                 }
             }]
        }
    }

    func withServer<R>(_ body: (GRPCClient, LeaderState) async throws -> R) async throws -> R {
        let state = LeaderState()
        let leader = WatchService.LeaderWatch(hasLeader: { state.present.load(ordering: .relaxed) },
                                              interval: .milliseconds(20))
        var config = GRPCServer.Configuration()
        config.host = "127.0.0.1"
        config.port = 0
        let server = try await GRPCServer(configuration: config, services: [RequireLeaderService(base: Fake(), leader: leader)])
        let client = GRPCClient(configuration: .init(host: "127.0.0.1", port: server.port))
        do {
            let r = try await body(client, state)
            await client.close(); await server.shutdown(timeout: .seconds(5))
            return r
        } catch {
            await client.close(); await server.shutdown(timeout: .seconds(5))
            throw error
        }
    }

    static let requireLeader = CallOptions(metadata: [("hasleader", "true")])

    @Test func unaryCallsWithHasLeaderAreRefusedWithoutALeader() async throws {
        try await withServer { client, state in
            _ = try await client.unary(Etcdserverpb.KV.range, Etcdserverpb.RangeRequest(), options: Self.requireLeader)
            state.present.store(false, ordering: .relaxed)
            await #expect(throws: EtcdError.noLeader) {
                _ = try await client.unary(Etcdserverpb.KV.range, Etcdserverpb.RangeRequest(), options: Self.requireLeader)
            }
            // etcd checks only calls that ask for it.
            _ = try await client.unary(Etcdserverpb.KV.range, Etcdserverpb.RangeRequest())
        }
    }

    @Test func aKeepAliveStreamWithHasLeaderEndsWhenTheLeaderIsGone() async throws {
        try await withServer { client, state in
            // Without the metadata the stream outlives the leader.
            let plain = try await client.bidirectionalStreaming(Etcdserverpb.Lease.leaseKeepAlive) { writer, responses in
                var it = responses.makeAsyncIterator()
                var r = Etcdserverpb.LeaseKeepAliveRequest(); r.id = 1
                try await writer.send(r)
                _ = try await it.next()
                state.present.store(false, ordering: .relaxed)
                try await Task.sleep(for: .milliseconds(200))      // 10 looks without a leader
                r.id = 2
                try await writer.send(r)
                let second = try await it.next()
                writer.finish()
                return second?.id
            }
            #expect(plain == 2)
            // Refused at once while there is no leader.
            await #expect(throws: EtcdError.noLeader) {
                try await client.bidirectionalStreaming(Etcdserverpb.Lease.leaseKeepAlive, options: Self.requireLeader) { writer, responses in
                    try await writer.send(Etcdserverpb.LeaseKeepAliveRequest())
                    for try await _ in responses {}
                }
            }
            // Opened with a leader, ended with "etcdserver: no leader" once it is gone.
            state.present.store(true, ordering: .relaxed)
            await #expect(throws: EtcdError.noLeader) {
                try await client.bidirectionalStreaming(Etcdserverpb.Lease.leaseKeepAlive, options: Self.requireLeader) { writer, responses in
                    var it = responses.makeAsyncIterator()
                    var r = Etcdserverpb.LeaseKeepAliveRequest(); r.id = 7
                    try await writer.send(r)
                    let first = try await it.next()
                    #expect(first?.id == 7)
                    state.present.store(false, ordering: .relaxed)
                    while try await it.next() != nil {}
                }
            }
        }
    }
}
