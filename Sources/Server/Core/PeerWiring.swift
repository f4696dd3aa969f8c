import GRPC
import KeelAPI
import Logging
import NIOCore
import NIOPosix
import Raft

/// What the Raft loop needs from the peer transport (PEER's PeerTransport conforms): send
/// messages without blocking, stream a snapshot file. Kept as a protocol so the loop can be
/// driven by an in-memory transport in unit tests.
protocol RaftSender: Sendable {
    func send(_ messages: [Raft.Message])
    func sendSnapshot(_ message: Raft.Message, file: String)
}

extension PeerTransport: RaftSender {}

/// The peer side of a running member: the transport (streams to every other member), the peer
/// listener on --listen-peer-urls (Raft traffic, snapshots, lease forwarding, the membership
/// service for joining members), and the member's attribute publish.
final class PeerLink: Sendable {
    let transport: PeerTransport
    let server: PeerServer
    let group: MultiThreadedEventLoopGroup

    private init(transport: PeerTransport, server: PeerServer, group: MultiThreadedEventLoopGroup) {
        self.transport = transport; self.server = server; self.group = group
    }

    static func start(core: KeelCore, runtime: WatchLeaseRuntime, membership: Keelpb.Membership,
                      snapshotDir: String, logger: Logger) async throws -> PeerLink {
        let host = core.host, raftLoop = core.raftLoop, applier = core.applier
        let lessor = runtime.lessor
        let handlers = PeerTransport.Handlers(
            receive: { msgs in raftLoop.execute { host.value.receive(msgs) } },
            receiveSnapshot: { m, file in
                // Raft decides (on its loop) whether the snapshot is installed; the store is
                // replaced from `file` when it is.
                (try? await raftLoop.submit { host.value.receiveSnapshot(m, file: file) }.get()) != nil
            },
            unreachable: { id in raftLoop.execute { host.value.reportUnreachable(id) } },
            snapshotStatus: { id, failed in raftLoop.execute { host.value.reportSnapshot(to: id, failed: failed) } },
            leaseRenew: { id async throws(GRPCStatus) -> Int64 in
                do throws(LeaseError) { return try await lessor.renew(id: id) } catch { throw error.status }
            },
            leaseTimeToLive: { req async throws(GRPCStatus) -> Etcdserverpb.LeaseTimeToLiveResponse in
                let found: Etcdserverpb.LeaseTimeToLiveResponse?
                do throws(LeaseError) { found = try await lessor.timeToLive(id: req.id, keys: req.keys) } catch { throw error.status }
                var r = found ?? Etcdserverpb.LeaseTimeToLiveResponse()
                if found == nil { r.id = req.id; r.ttl = -1 }
                r.header = core.header()
                return r
            },
            // etcd refuses a removed member's peer traffic; the removed member stops when told
            // (a member removed while it was down never applies its own removal).
            isMemberRemoved: { id in core.membership().removed.contains(id) },
            removedFromCluster: {
                if !core.shared.removed.exchange(true, ordering: .relaxed) {
                    logger.warning("a peer says this member has been permanently removed from the cluster")
                }
            })
        // The transport's own loop (one thread: its registry and peer queues live there, away
        // from the Raft loop's fsyncs); created on that loop.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let clusterID = core.shared.clusterID, localID = core.shared.memberID
        let transport = try await loop.submit {
            PeerTransport(localID: localID, clusterID: clusterID, snapshotDir: snapshotDir, group: group,
                          logger: logger, handlers: handlers)
        }.get()
        for m in membership.members where m.id != core.shared.memberID {
            transport.setPeer(id: m.id, peerURLs: m.peerUrls)
        }
        let server: PeerServer
        do {
            server = try await PeerServer(urls: core.resolved.listenPeerURLs, transport: transport,
                                          extraServices: [MembershipPeerService(core: core)],
                                          group: MultiThreadedEventLoopGroup.singleton, logger: logger)
        } catch {
            await transport.shutdown()
            try? await group.shutdownGracefully()
            throw StartupError("cannot listen on peer URLs \(core.config.listenPeerURLs): \(error)")
        }
        // Membership changes (applied) update the peer set.
        let me = core.shared.memberID, shared = core.shared
        try await core.applyLoop.submit {
            applier.value.hooks.membership = { ms in
                if ms.removed.contains(me) && !shared.removed.exchange(true, ordering: .relaxed) {
                    logger.warning("this member has been permanently removed from the cluster")
                }
                for m in ms.members where m.id != me { transport.setPeer(id: m.id, peerURLs: m.peerUrls) }
                for id in ms.removed { transport.removePeer(id: id) }
            }
        }.get()
        try await raftLoop.submit { host.value.transport = transport }.get()
        shared.peersRunning.store(true, ordering: .relaxed)
        return PeerLink(transport: transport, server: server, group: group)
    }

    /// Keep-alives and TTL questions a follower sends to the current leader.
    func leaseForwarder(core: KeelCore) -> LeaseForwarder {
        let transport = self.transport, shared = core.shared
        @Sendable func leader() throws(GRPCStatus) -> UInt64 {
            let l = shared.currentLeader
            if l == 0 { throw EtcdError.noLeader }
            if l == shared.memberID { throw EtcdError.leaderChanged }   // just became leader: the client retries
            return l
        }
        return LeaseForwarder(
            renew: { id async throws(GRPCStatus) -> Int64 in try await transport.forwardLeaseRenew(to: try leader(), id: id) },
            timeToLive: { req async throws(GRPCStatus) -> Etcdserverpb.LeaseTimeToLiveResponse in
                try await transport.forwardLeaseTimeToLive(to: try leader(), req)
            })
    }

    func shutdown() async {
        await server.shutdown()
        await transport.shutdown()
        try? await group.shutdownGracefully()
    }
}
