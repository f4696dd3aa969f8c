import GRPC
import KeelAPI
import Logging
import NIOPosix

/// Who this member is in which cluster, for a data dir that has no identity yet (etcd's
/// bootstrap): `--initial-cluster-state new` derives the IDs from the flags (member ID = peer URLs
/// + token, cluster ID = the member IDs); `existing` asks a running member listed in
/// --initial-cluster for the cluster ID and the member list and finds itself there by peer URLs.
enum Bootstrap {
    struct Result {
        var identity: Keelpb.ClusterIdentity
        var membership: Keelpb.Membership
    }

    static func identity(config: ServerConfig, resolved: ServerConfig.Resolved, logger: Logger) async throws -> Result {
        var identity = Keelpb.ClusterIdentity()
        identity.name = config.name
        identity.peerUrls = resolved.peerURLs.map(\.description)
        if !resolved.joinExisting {
            identity.clusterId = resolved.clusterID
            identity.memberId = resolved.memberID
            return Result(identity: identity, membership: .initial(resolved.initialMembers))
        }
        let mine = Set(identity.peerUrls)
        let remote = try await fetchMembers(from: resolved.initialMembers.filter { Set($0.peerURLs) != mine }, logger: logger)
        // etcd's ValidateClusterAndAssignIDs: same member count, and every member's peer URLs match.
        if remote.members.count != resolved.initialMembers.count {
            throw StartupError("error validating peerURLs \(remote.members.map { $0.peerUrls }): member count is unequal")
        }
        for m in remote.members where !resolved.initialMembers.contains(where: { Set($0.peerURLs) == Set(m.peerUrls) }) {
            throw StartupError("error validating peerURLs: PeerURLs: no match found for existing member (\(String(m.id, radix: 16)), \(m.peerUrls))")
        }
        guard let me = remote.members.first(where: { Set($0.peerUrls) == mine }) else {
            throw StartupError("member with peer URLs \(identity.peerUrls) has not been added to the cluster (etcdctl member add first)")
        }
        identity.clusterId = remote.clusterID
        identity.memberId = me.id
        var ms = Keelpb.Membership()
        ms.members = remote.members.sorted { $0.id < $1.id }
        ms.voters = ms.members.filter { !$0.isLearner }.map(\.id)
        ms.learners = ms.members.filter(\.isLearner).map(\.id)
        logger.info("joining an existing cluster", metadata: [
            "cluster-id": "\(String(remote.clusterID, radix: 16))", "member-id": "\(String(me.id, radix: 16))",
            "learner": "\(me.isLearner)"])
        return Result(identity: identity, membership: ms)
    }

    /// etcd's GetClusterFromRemotePeers: the first member that answers (a few rounds, bounded).
    static func fetchMembers(from peers: [ServerConfig.InitialMember], logger: Logger) async throws
        -> (clusterID: UInt64, members: [Keelpb.Member]) {
        var lastError = "no peer URLs to ask"
        for _ in 0..<10 {
            for p in peers {
                for raw in p.peerURLs {
                    guard let url = try? URLParsing.parse(raw) else { continue }
                    let client = GRPCClient(host: url.bindHost, port: url.port)
                    do {
                        let resp = try await client.unary(Keelpb.PeerMembership.members, Keelpb.MembersRequest(),
                                                          options: CallOptions(timeout: .seconds(2)))
                        await client.close()
                        return (resp.clusterId, resp.members)
                    } catch {
                        await client.close()
                        lastError = "\(raw): \(error)"
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(500))
        }
        throw StartupError("cannot fetch cluster info from peer urls: \(lastError)")
    }

    /// A data dir that already has an identity: refused when `--initial-cluster-state new` flags
    /// describe a multi-member cluster with another cluster ID (another token or other members):
    /// the data dir belongs to another cluster (etcd refuses such a member at the peer layer with
    /// "cluster ID mismatch"; Keel refuses at start). The cluster ID never changes after bootstrap,
    /// so restarting with the flags a member was created with always passes; members that joined
    /// later restart with `existing`, where the data dir wins as in etcd.
    static func checkDataDir(identity: Keelpb.ClusterIdentity, resolved: ServerConfig.Resolved, config: ServerConfig) throws {
        guard !resolved.joinExisting, resolved.initialMembers.count > 1 else { return }
        if resolved.clusterID != identity.clusterId {
            throw StartupError("data dir \(config.resolvedDataDir) belongs to cluster \(String(identity.clusterId, radix: 16)), not to the cluster --initial-cluster and --initial-cluster-token describe (\(String(resolved.clusterID, radix: 16))): cluster ID mismatch")
        }
    }
}

extension KeelCore {
    /// MemberPromote on a follower: the leader's view of the learner decides (etcd forwards the
    /// promote to the leader's peer port).
    func askLeaderIfLearnerReady(_ id: UInt64) async throws(GRPCStatus) {
        let leader = shared.currentLeader
        guard leader != 0, let m = membership().member(leader) else { throw EtcdError.noLeader }
        for raw in m.peerUrls {
            guard let url = try? URLParsing.parse(raw) else { continue }
            let client = GRPCClient(host: url.bindHost, port: url.port)
            var req = Keelpb.LearnerReadyRequest()
            req.memberId = id
            let resp = try? await client.unary(Keelpb.PeerMembership.learnerReady, req, options: CallOptions(timeout: .seconds(2)))
            await client.close()
            guard let resp else { continue }
            if resp.notLeader { throw EtcdError.leaderChanged }
            if !resp.ready { throw EtcdError.learnerNotReady }
            return
        }
        throw EtcdError.noLeader
    }
}

enum MemberPublish {
    /// etcd's publish: once the cluster has a leader, this member's name and client URLs go
    /// through Raft (retried until applied), so MemberList shows them on every member. Like etcd
    /// (which serves clients only once published), the server awaits it before serving clients;
    /// a restart whose attributes are already applied does not wait.
    static func publishAttributes(core: KeelCore, logger: Logger) async {
        let me = core.shared.memberID
        var a = Keelpb.MemberAttributes()
        a.memberId = me
        a.name = core.name
        a.clientUrls = core.resolved.advertiseClientURLs.map(\.description)
        while !Task.isCancelled && !core.shared.stopped.load(ordering: .relaxed) {
            if let m = core.membership().member(me), m.name == a.name, m.clientUrls == a.clientUrls { return }
            if core.shared.hasLeader {
                do {
                    _ = try await core.propose(.memberAttributes(a))
                    logger.info("published local member to cluster through raft", metadata: [
                        "name": "\(a.name)", "client-urls": "\(a.clientUrls)"])
                    return
                } catch {
                    logger.debug("publish failed; retrying", metadata: ["error": "\(error)"])
                }
            }
            try? await Task.sleep(for: .milliseconds(200))
        }
    }
}

/// keelpb.Membership on the peer listener: the cluster ID and the member list for a member that
/// joins with --initial-cluster-state existing.
struct MembershipPeerService: GRPCService {
    let core: KeelCore

    var methods: [ServerMethod] {
        [
            .unary(Keelpb.PeerMembership.members) { _, _ in
                var r = Keelpb.MembersResponse()
                r.clusterId = core.shared.clusterID
                r.members = core.membership().members
                return r
            },
            .unary(Keelpb.PeerMembership.learnerReady) { req, _ in
                var r = Keelpb.LearnerReadyResponse()
                guard let st = await core.raftStatus(), st.role == .leader else { r.notLeader = true; return r }
                if let p = st.progress[req.memberId] { r.ready = Double(p.match) >= Double(st.commit) * 0.9 }
                return r
            },
        ]
    }
}
