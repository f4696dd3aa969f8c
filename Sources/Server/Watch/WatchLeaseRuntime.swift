// WatchLeaseRuntime: the watch hub, the lessor and their services for one running server, in one
// object. SERVER can hold it in ServerExtras and delegate (this is the whole wiring):
//
//   init:      let rt = try WatchLeaseRuntime(store: store, config: config, memberID: identity.memberId)  // before the Applier
//   hooks:     hooks.events = { ev, rev, prevValues in rt.publish(events: ev, revision: rev, prevValues: prevValues) }
//              hooks.eventsNeedPrevValues = { rt.wantsPrevValues }
//              hooks.compacted = { rev in rt.compacted(revision: rev) }
//              hooks.leases = { changes in rt.leasesApplied(changes) }
//   setUp:     await rt.attach(core: core)        // after replay; starts following leadership
//   services:  rt.services(core: core)            // [WatchService, LeaseService]
//   shutdown:  await rt.shutdown()
//
// The lessor is created here, before anything is applied, so it reads the store's leases first and
// then sees every later change through the apply feed: nothing is missed across a restart.
// Leadership is followed by polling KeelCore's shared state every heartbeat (promote with
// etcd's extend = election timeout; demote when another member leads). SERVER may instead call
// lessor.promote/demote from the Raft loop; then skip attach's polling (followLeadership: false).
import GRPC
import KeelAPI
import Logging
import Storage

public actor WatchLeaseRuntime {
    public nonisolated let hub: WatchHub
    public nonisolated let lessor: Lessor
    nonisolated let proposer: DeferredLeaseProposer
    private nonisolated let hubTask: Task<Void, Never>
    private nonisolated let lessorTask: Task<Void, Never>
    private var leadershipTask: Task<Void, Never>?
    private let electionTimeout: Duration
    private let heartbeat: Duration

    /// - memberID: prefixes server-chosen lease IDs as etcd does.
    public init(store: some WatchEventSource & LeaseBackend, config: ServerConfig, memberID: UInt64 = 0,
                logger: Logger = Logger(label: "keel")) throws {
        let heartbeat = Duration.milliseconds(max(1, config.heartbeatIntervalMs))
        let electionTicks = max(1, config.electionTimeoutMs / max(1, config.heartbeatIntervalMs))
        self.heartbeat = heartbeat
        self.electionTimeout = .milliseconds(config.electionTimeoutMs)
        let hub = WatchHub(source: store, logger: logger)
        let proposer = DeferredLeaseProposer()
        var lo = LessorOptions()
        lo.minTTL = Lessor.minLeaseTTL(electionTicks: electionTicks, heartbeat: heartbeat)
        lo.memberID = memberID
        let lessor = try Lessor(backend: store, proposer: proposer, options: lo, logger: logger)
        self.hub = hub
        self.lessor = lessor
        self.proposer = proposer
        hubTask = Task { await hub.run() }
        lessorTask = Task { await lessor.run() }
    }

    /// Apply loop -> watchers. Never blocks. `prevValues`: whether put events carry their prevKv's value.
    public nonisolated func publish(events: [Mvccpb.Event], revision: Int64, prevValues: Bool = true) {
        hub.publish(events: events, revision: revision, prevValues: prevValues)
    }

    /// Whether some watcher asked for prev_kv (the apply loop then loads previous values).
    public nonisolated var wantsPrevValues: Bool { hub.wantsPrevValues }

    /// Apply loop -> watchers waiting for history, after each LMDB commit.
    public nonisolated func committed() { hub.committed() }

    /// Apply loop -> watchers, after a compaction.
    public nonisolated func compacted(revision: Int64) { hub.compacted(revision: revision) }

    /// Apply loop, after the store was replaced by the leader's snapshot: watchers catch up from
    /// the new store's history (the empty batch at a later revision is a gap for the hub), and the
    /// lessor reloads its leases (a leader's lessor never gets a snapshot: no expiry to extend).
    public nonisolated func storeReplaced(revision: Int64) {
        hub.publish(events: [], revision: revision)
        let lessor = self.lessor
        Task { try? await lessor.reload() }
    }

    /// Apply loop -> lessor, the lease changes of a committed batch in order. Never blocks.
    public nonisolated func leasesApplied(_ changes: [LeaseApplied]) { lessor.applied(changes) }

    /// Connects lease proposals to Raft and (by default) follows leadership.
    public func attach(core: KeelCore, followLeadership: Bool = true) async {
        await proposer.attach(core)
        await hub.setCommitRequest { core.commitBackend() }
        guard followLeadership, leadershipTask == nil else { return }
        let lessor = self.lessor, shared = core.shared
        let every = heartbeat, extend = electionTimeout
        // Already leading (a single member elects itself during start-up): promote before the
        // services open, so the first keep-alive does not meet a follower's lessor.
        let leadingNow = shared.currentLeader == shared.memberID
        if leadingNow { await lessor.promote(extend: extend) }
        leadershipTask = Task {
            var leading = leadingNow
            while !Task.isCancelled {
                let now = shared.currentLeader == shared.memberID
                if now != leading {
                    leading = now
                    if now { await lessor.promote(extend: extend) } else { await lessor.demote() }
                }
                try? await Task.sleep(for: every)
            }
        }
    }

    /// The Watch and Lease gRPC services.
    public nonisolated func services(core: KeelCore, leaseForwarder: LeaseForwarder? = nil) -> [any GRPCService] {
        let shared = core.shared
        return [WatchService(hub: hub, header: { core.header() }, maxRequestBytes: core.config.maxRequestBytes,
                      visible: { try await core.visibilityBarrier() },
                      leader: .init(hasLeader: { shared.hasLeader },
                                    interval: .milliseconds(core.config.electionTimeoutMs))),
         LeaseService(lessor: lessor, header: { core.header() }, forward: leaseForwarder,
                      visible: { try await core.visibilityBarrier() })]
    }

    public func shutdown() async {
        leadershipTask?.cancel()
        await hub.shutdown()
        await lessor.shutdown()
        hubTask.cancel()
        lessorTask.cancel()
        _ = await hubTask.value
        _ = await lessorTask.value
    }
}

/// A LeaseProposer whose Raft front-end is connected after start-up (the lessor must exist before
/// anything is applied; KeelCore exists only after replay).
actor DeferredLeaseProposer: LeaseProposer {
    private var target: RaftLeaseProposer?

    func attach(_ core: KeelCore) { target = RaftLeaseProposer(core: core) }

    private func proposer() throws -> RaftLeaseProposer {
        guard let target else { throw GRPCStatus(.unavailable, "etcdserver: not capable") }
        return target
    }

    func proposeLeaseGrant(_ r: Etcdserverpb.LeaseGrantRequest) async throws -> Etcdserverpb.LeaseGrantResponse {
        try await proposer().proposeLeaseGrant(r)
    }

    func proposeLeaseRevoke(_ r: Etcdserverpb.LeaseRevokeRequest) async throws -> Etcdserverpb.LeaseRevokeResponse {
        try await proposer().proposeLeaseRevoke(r)
    }

    func proposeLeaseCheckpoint(_ r: Etcdserverpb.LeaseCheckpointRequest) async throws -> Etcdserverpb.LeaseCheckpointResponse {
        try await proposer().proposeLeaseCheckpoint(r)
    }
}
