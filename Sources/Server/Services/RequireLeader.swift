// etcd's `hasleader` interceptors (api/v3rpc/interceptor.go) around every service but Watch,
// which follows the leader itself (WatchService.LeaderWatch): a call sent with the metadata
// `hasleader: true` (clientv3.WithRequireLeader) is refused with UNAVAILABLE "etcdserver: no leader"
// while the member has no leader, and a stream (LeaseKeepAlive, Snapshot) opened with it also ends
// with that status once the member has been without a leader for 3 election timeouts.
import GRPC
import KeelAPI

struct RequireLeaderService: GRPCService {
    let base: any GRPCService
    let leader: WatchService.LeaderWatch

    var methods: [ServerMethod] {
        let leader = self.leader
        let check: @Sendable (ServerContext) throws -> Void = { ctx in
            if Self.requiresLeader(ctx) && !leader.hasLeader() { throw EtcdError.noLeader }
        }
        let monitor: @Sendable (ServerContext) -> (@Sendable () async throws -> Void)? = { ctx in
            guard Self.requiresLeader(ctx) else { return nil }
            return { try await leader.untilLost() }
        }
        var out: [ServerMethod] = []
        for m in base.methods {
            if m.descriptor.path == Etcdserverpb.Watch.watch.path {
                out.append(m)
            } else {
                out.append(m.checked(check).monitored(monitor, status: EtcdError.noLeader))
            }
        }
        return out
    }

    static func requiresLeader(_ ctx: ServerContext) -> Bool { ctx.header("hasleader") == "true" }
}
