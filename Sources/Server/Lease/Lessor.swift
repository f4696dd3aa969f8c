// Lessor: leases in memory on top of the store's lease records, expiry driven by the leader
// (etcd's lease/lessor.go semantics, written anew).
//
// How SERVER wires it in (KeelServer does this through WatchLeaseRuntime, WatchLeaseRuntime.swift,
// held by ServerExtras; the steps it performs are:)
//   let lessor = Lessor(backend: mvccStore,                  // MVCCStore conforms to LeaseBackend
//                       proposer: raftFrontEnd,              // SERVER's LeaseProposer (through Raft)
//                       options: LessorOptions(minTTL: Lessor.minLeaseTTL(electionTicks: 10,
//                                              heartbeat: .milliseconds(100)), memberID: memberID))
//   let lessorTask = Task { await lessor.run() }             // expiry / checkpoint timer (500 ms)
//   services: [..., LeaseService(lessor: lessor, header: { server.responseHeader() })]
//   apply loop: ApplyHooks.leases = { lessor.applied($0) }   // sync, never blocks; [LeaseApplied] in apply order
//       (.granted after txn.leaseGrant, .revoked after txn.leaseRevoke, .checkpointed after
//        txn.leaseCheckpoint; call it BEFORE completing the proposers' promises of that batch, as
//        Applier does). Equivalent async hooks for callers that can await: appliedGrant/appliedRevoke/
//        appliedCheckpoint. grant/revoke wait until the feed has caught up, so a lease is known to the
//        lessor when LeaseGrant answers and gone when LeaseRevoke answers.
//       (the proposer's call returns only after that apply, with the applied response or a thrown GRPCStatus:
//        .leaseExists -> FailedPrecondition "etcdserver: lease already exists",
//        .leaseNotFound -> NotFound "etcdserver: requested lease not found")
//   leadership: when this node becomes leader  -> await lessor.promote(extend: electionTimeout)
//               when it stops being leader     -> await lessor.demote()
//   after restoring a snapshot / restart: the lessor reads the backend in init; after a Raft
//   snapshot install call `await lessor.reload()`.
//   shutdown: await lessor.shutdown(); lessorTask.cancel()
//
// Semantics
//   - Grant: ID 0 -> the server picks one (member-prefixed, time-based, positive, as etcd's idutil);
//     TTL > 9,000,000,000 -> OutOfRange "etcdserver: too large lease TTL"; TTL below minTTL is raised
//     to minTTL (etcd: ceil(1.5 * election timeout)); the grant goes through Raft.
//   - Only the primary (leader) tracks expiry. A follower keeps every lease "forever". promote()
//     gives every lease now + extend + remaining (the checkpointed remaining TTL if any, else the
//     TTL): a lease is never cut short by a restart or leader change. With >= 1000 leases, expiries
//     piling up in the same second are spread out as etcd does (at most 750 per second).
//   - tick() (every 500 ms): expired leases are revoked through Raft (at most 500 per tick; one that
//     did not go away is retried after 3 s); with checkpointing on, remaining TTLs are checkpointed
//     through Raft every checkpointInterval (etcd's --experimental-enable-lease-checkpoint).
//   - Renew (keep-alive): now + TTL; an expired lease waits for its revoke and then reports not
//     found (TTL 0 on the keep-alive stream); not primary -> "etcdserver: not leader".
import GRPC
import KeelAPI
import Logging
import Synchronization

/// What the lessor asks Raft to agree on. Each call returns after the entry is applied, with the
/// applied response (header filled by SERVER), or throws a GRPCStatus with etcd's code and text.
public protocol LeaseProposer: Sendable {
    func proposeLeaseGrant(_ r: Etcdserverpb.LeaseGrantRequest) async throws -> Etcdserverpb.LeaseGrantResponse
    func proposeLeaseRevoke(_ r: Etcdserverpb.LeaseRevokeRequest) async throws -> Etcdserverpb.LeaseRevokeResponse
    func proposeLeaseCheckpoint(_ r: Etcdserverpb.LeaseCheckpointRequest) async throws -> Etcdserverpb.LeaseCheckpointResponse
}

/// The lease records the store keeps (MVCCStore conforms, see LeaseStore.swift).
public protocol LeaseBackend: Sendable {
    /// Every lease: id, granted TTL, checkpointed remaining TTL (0 = none).
    func storedLeases() throws -> [(id: Int64, ttl: Int64, remainingTTL: Int64)]
    /// Keys attached to a lease.
    func storedLeaseKeys(id: Int64) throws -> [[UInt8]]
}

/// Monotonic time for the lessor, injectable for tests.
public protocol LeaseClock: Sendable {
    func now() -> Duration
}

public struct SystemLeaseClock: LeaseClock {
    let origin = ContinuousClock.now
    public init() {}
    public func now() -> Duration { ContinuousClock.now - origin }
}

public struct LessorOptions: Sendable {
    /// Minimum TTL in seconds (see Lessor.minLeaseTTL).
    public var minTTL: Int64 = 2
    /// Used for server-chosen lease IDs (etcd prefixes them with the member ID).
    public var memberID: UInt64 = 0
    /// etcd's revokeExpiredLeases period.
    public var tickInterval: Duration = .milliseconds(500)
    /// nil: no checkpoints (etcd 3.4's default). etcd's interval when enabled: 5 minutes.
    public var checkpointInterval: Duration? = nil
    /// Expired leases revoked per tick (etcd: leaseRevokeRate / 2).
    public var revokeLimitPerTick: Int = 500
    /// A lease whose revoke did not take is retried after this (etcd: 3 s).
    public var expiredRetryInterval: Duration = .seconds(3)
    /// Source of server-chosen lease IDs (etcd uses its request-ID generator); nil: the lessor's own
    /// generator with the same layout. Non-positive results are skipped.
    public var idGenerator: (@Sendable () -> Int64)? = nil
    public init() {}
    public init(minTTL: Int64, memberID: UInt64) { self.minTTL = minTTL; self.memberID = memberID }
}

public enum LeaseError: Error, Sendable, Equatable {
    case notFound, exists, ttlTooLarge, notPrimary
    case backend(String)

    public var status: GRPCStatus {
        switch self {
        case .notFound: GRPCStatus(.notFound, "etcdserver: requested lease not found")
        case .exists: GRPCStatus(.failedPrecondition, "etcdserver: lease already exists")
        case .ttlTooLarge: GRPCStatus(.outOfRange, "etcdserver: too large lease TTL")
        case .notPrimary: GRPCStatus(.failedPrecondition, "etcdserver: not leader")
        case .backend(let m): GRPCStatus(.internal, m)
        }
    }
}

public actor Lessor {
    public static let maxLeaseTTL: Int64 = 9_000_000_000

    /// etcd's minimum lease TTL: ceil((3 * electionTicks / 2) * heartbeat) seconds.
    public static func minLeaseTTL(electionTicks: Int, heartbeat: Duration) -> Int64 {
        let minTTL = heartbeat * ((3 * electionTicks) / 2)
        let c = minTTL.components
        return c.seconds + (c.attoseconds > 0 ? 1 : 0)
    }

    struct Lease {
        var ttl: Int64
        var remainingTTL: Int64 = 0
        /// nil: forever (not primary).
        var expiry: Duration?
        /// Don't try to revoke again before this.
        var revokeRetryAt: Duration?
        var nextCheckpoint: Duration?
        /// Keep-alives waiting for an expired lease's revoke (true: revoked, false: demoted).
        var waiters: [CheckedContinuation<Bool, Never>] = []

        /// etcd's Lease.RemainingTTL: the checkpointed remaining TTL if set, else the TTL.
        var baseTTL: Int64 { remainingTTL > 0 ? remainingTTL : ttl }
    }

    let backend: any LeaseBackend
    let proposer: any LeaseProposer
    public let options: LessorOptions
    let clock: any LeaseClock
    let logger: Logger
    private var leases: [Int64: Lease] = [:]
    public private(set) var isPrimary = false
    private var idSuffix: UInt64
    private var stopped = false

    // Apply-loop feed: `applied(_:)` is synchronous and never blocks; run() applies the changes in
    // order. A proposal's caller waits until everything enqueued before its answer was processed,
    // so a granted lease is known (and a revoked one gone) when grant/revoke return.
    private nonisolated let feed: AsyncStream<[LeaseApplied]>
    private nonisolated let feedIn: AsyncStream<[LeaseApplied]>.Continuation
    private nonisolated let enqueued = Atomic<UInt64>(0)
    private var processed: UInt64 = 0
    private var barrierWaiters: [(target: UInt64, c: CheckedContinuation<Void, Never>)] = []

    public init(backend: any LeaseBackend, proposer: any LeaseProposer, options: LessorOptions = LessorOptions(),
                clock: any LeaseClock = SystemLeaseClock(), logger: Logger = Logger(label: "keel.lease")) throws {
        self.backend = backend
        self.proposer = proposer
        self.options = options
        self.clock = clock
        self.logger = logger
        // etcd idutil: 16 bits of member ID, 40 bits of unix milliseconds, 8 bits of counter.
        let ms = UInt64(max(0, systemMilliseconds()))
        self.idSuffix = (ms & ((1 << 40) - 1)) << 8
        for r in try backend.storedLeases() {
            leases[r.id] = Lease(ttl: r.ttl, remainingTTL: r.remainingTTL, expiry: nil)
        }
        // Unbounded, but one element per applied batch that touched leases, consumed by run()
        // without I/O; bounding it would mean blocking the apply loop or losing lease state.
        (feed, feedIn) = AsyncStream<[LeaseApplied]>.makeStream()
    }

    /// Apply loop -> lessor (SERVER's ApplyHooks.leases): the lease changes of one committed batch,
    /// in apply order. Synchronous, never blocks; `run()` must be running to consume them.
    public nonisolated func applied(_ changes: [LeaseApplied]) {
        enqueued.add(1, ordering: .acquiringAndReleasing)
        feedIn.yield(changes)
    }

    private func process(_ changes: [LeaseApplied]) {
        for c in changes {
            switch c {
            case .granted(let id, let ttl): appliedGrant(id: id, ttl: ttl)
            case .revoked(let id): appliedRevoke(id: id)
            case .checkpointed(let id, let remaining): appliedCheckpoint(id: id, remainingTTL: remaining)
            }
        }
        processed += 1
        if !barrierWaiters.isEmpty {
            let done = barrierWaiters.filter { $0.target <= processed }
            barrierWaiters.removeAll { $0.target <= processed }
            for w in done { w.c.resume() }
        }
    }

    /// Waits until every change handed to `applied(_:)` so far has been processed.
    private func caughtUp() async {
        let target = enqueued.load(ordering: .acquiring)
        if processed >= target || stopped { return }
        await withCheckedContinuation { c in barrierWaiters.append((target, c)) }
    }

    /// Re-reads the lease records (after a snapshot was installed). Keeps expiries of leases that
    /// still exist; new ones start as after promote when primary.
    public func reload(extend: Duration = .zero) throws {
        let now = clock.now()
        var fresh: [Int64: Lease] = [:]
        for r in try backend.storedLeases() {
            var l = leases[r.id] ?? Lease(ttl: r.ttl, remainingTTL: r.remainingTTL, expiry: nil)
            l.ttl = r.ttl
            l.remainingTTL = r.remainingTTL
            if isPrimary && l.expiry == nil { l.expiry = now + extend + .seconds(l.baseTTL) }
            fresh[r.id] = l
        }
        for (id, l) in leases where fresh[id] == nil { for w in l.waiters { w.resume(returning: true) } }
        leases = fresh
    }

    // MARK: RPC operations

    private func nextID() -> Int64 {
        if let gen = options.idGenerator {
            for _ in 0..<1000 {
                let id = gen() & Int64.max
                if id != 0 && leases[id] == nil { return id }
            }
        }
        while true {
            idSuffix &+= 1
            let id = Int64(bitPattern: ((options.memberID << 48) | (idSuffix & ((1 << 48) - 1)))) & Int64.max
            if id != 0 && leases[id] == nil { return id }
        }
    }

    /// LeaseGrant: validates as etcd's lessor.Grant, then proposes through Raft.
    public func grant(_ req: Etcdserverpb.LeaseGrantRequest) async throws -> Etcdserverpb.LeaseGrantResponse {
        var r = req
        if r.id == 0 { r.id = nextID() }
        if r.ttl > Self.maxLeaseTTL { throw LeaseError.ttlTooLarge.status }
        if leases[r.id] != nil { throw LeaseError.exists.status }
        if r.ttl < options.minTTL { r.ttl = options.minTTL }
        var resp = try await proposer.proposeLeaseGrant(r)
        await caughtUp()
        resp.id = r.id
        resp.ttl = r.ttl
        return resp
    }

    /// LeaseRevoke through Raft (the apply deletes the attached keys in one revision).
    public func revoke(_ req: Etcdserverpb.LeaseRevokeRequest) async throws -> Etcdserverpb.LeaseRevokeResponse {
        let resp = try await proposer.proposeLeaseRevoke(req)
        await caughtUp()
        return resp
    }

    /// Keep-alive renewal on the leader: returns the TTL, or throws .notFound / .notPrimary.
    public func renew(id: Int64) async throws(LeaseError) -> Int64 {
        guard isPrimary else { throw .notPrimary }
        guard var l = leases[id] else { throw .notFound }
        let now = clock.now()
        if let e = l.expiry, e <= now {
            // expired: may be on its way to revocation; answer once that is decided (etcd waits too)
            let revoked = await withCheckedContinuation { c in leases[id]?.waiters.append(c) }
            throw revoked ? .notFound : .notPrimary
        }
        if options.checkpointInterval != nil && l.remainingTTL > 0 {
            // clear the checkpointed remaining TTL through Raft (etcd does the same on renew)
            var cp = Etcdserverpb.LeaseCheckpoint()
            cp.id = id
            cp.remainingTTL = 0
            var req = Etcdserverpb.LeaseCheckpointRequest()
            req.checkpoints = [cp]
            _ = try? await proposer.proposeLeaseCheckpoint(req)
            await caughtUp()
            guard isPrimary else { throw .notPrimary }
            guard let again = leases[id] else { throw .notFound }
            l = again
        }
        l.remainingTTL = 0
        l.expiry = clock.now() + .seconds(l.ttl)
        l.revokeRetryAt = nil
        scheduleCheckpoint(&l, now: clock.now())
        leases[id] = l
        return l.ttl
    }

    /// LeaseTimeToLive; nil when the lease does not exist.
    public func timeToLive(id: Int64, keys: Bool) throws(LeaseError) -> Etcdserverpb.LeaseTimeToLiveResponse? {
        guard let l = leases[id] else { return nil }
        var r = Etcdserverpb.LeaseTimeToLiveResponse()
        r.id = id
        r.grantedTTL = l.ttl
        if let e = l.expiry {
            // etcd: int64(Remaining().Seconds()), truncated toward zero
            r.ttl = (e - clock.now()).components.seconds
        } else {
            r.ttl = l.baseTTL      // not primary: what promote would give it
        }
        if keys {
            do { r.keys = try backend.storedLeaseKeys(id: id) } catch { throw .backend("\(error)") }
        }
        return r
    }

    /// LeaseLeases: ids sorted by expiry (etcd's leasesByExpiry), then id.
    public func leaseIDs() -> [Int64] {
        leases.sorted { a, b in
            let ea = a.value.expiry ?? .seconds(Int64.max / 4), eb = b.value.expiry ?? .seconds(Int64.max / 4)
            return ea != eb ? ea < eb : a.key < b.key
        }.map(\.key)
    }

    public func exists(id: Int64) -> Bool { leases[id] != nil }

    /// When the lease expires on this node (nil: not primary or no such lease). For tests/metrics.
    func expiry(id: Int64) -> Duration? { leases[id]?.expiry }

    /// Keep-alives waiting for this expired lease's revoke. For tests.
    func waitingRenewals(id: Int64) -> Int { leases[id]?.waiters.count ?? 0 }

    // MARK: apply hooks (SERVER calls these in apply order)

    public func appliedGrant(id: Int64, ttl: Int64) {
        var l = Lease(ttl: ttl, expiry: nil)
        if isPrimary {
            let now = clock.now()
            l.expiry = now + .seconds(ttl)
            scheduleCheckpoint(&l, now: now)
        }
        leases[id] = l
    }

    public func appliedRevoke(id: Int64) {
        guard let l = leases.removeValue(forKey: id) else { return }
        for w in l.waiters { w.resume(returning: true) }
    }

    public func appliedCheckpoint(id: Int64, remainingTTL: Int64) {
        guard var l = leases[id] else { return }
        l.remainingTTL = remainingTTL
        if isPrimary {
            let now = clock.now()
            l.expiry = now + .seconds(l.baseTTL)
            scheduleCheckpoint(&l, now: now)
        }
        leases[id] = l
    }

    // MARK: leadership

    /// This node became leader: every lease expires at now + extend + remaining TTL.
    public func promote(extend: Duration) {
        isPrimary = true
        let now = clock.now()
        for id in leases.keys {
            leases[id]!.expiry = now + extend + .seconds(leases[id]!.baseTTL)
            leases[id]!.revokeRetryAt = nil
            scheduleCheckpoint(&leases[id]!, now: now)
        }
        spreadExpiries(now: now, extend: extend)
    }

    /// etcd's pile-up avoidance: when many leases would expire in the same second, later ones in
    /// that window are pushed back so that at most 3/4 of the revoke rate (750/s) expire per second.
    private func spreadExpiries(now: Duration, extend: Duration) {
        let revokeRate = options.revokeLimitPerTick * 2
        guard leases.count >= revokeRate, revokeRate > 0 else { return }
        let target = (3 * revokeRate) / 4
        let order = leases.keys.sorted { leases[$0]!.expiry! < leases[$1]!.expiry! }
        var windowStart = leases[order[0]]!.expiry! - now
        var windowEnd = windowStart + .seconds(1)
        var count = 0
        for id in order {
            let remaining = leases[id]!.expiry! - now
            if remaining > windowEnd {
                windowStart = remaining
                windowEnd = windowStart + .seconds(1)
                count = 1
                continue
            }
            count += 1
            if count <= target { continue }
            // this lease is the count-th in a window that allows `target` per second
            let delay = Duration.seconds(1) * (Double(count) / Double(target)) - (remaining - windowStart)
            windowEnd = windowStart + delay
            leases[id]!.expiry = now + delay + extend + .seconds(leases[id]!.baseTTL)
        }
    }

    /// This node is no longer leader: leases no longer expire here; waiting keep-alives are told.
    public func demote() {
        isPrimary = false
        for id in leases.keys {
            leases[id]!.expiry = nil
            leases[id]!.nextCheckpoint = nil
            leases[id]!.revokeRetryAt = nil
            let ws = leases[id]!.waiters
            leases[id]!.waiters = []
            for w in ws { w.resume(returning: false) }
        }
    }

    // MARK: timer

    private func scheduleCheckpoint(_ l: inout Lease, now: Duration) {
        guard let every = options.checkpointInterval, isPrimary else { l.nextCheckpoint = nil; return }
        // etcd: only leases whose remaining TTL is longer than the interval get a checkpoint
        l.nextCheckpoint = .seconds(l.baseTTL) > every ? now + every : nil
    }

    /// Leases that are expired now and not already being revoked (marks them as being revoked).
    func takeExpired() -> [Int64] {
        guard isPrimary else { return [] }
        let now = clock.now()
        var out: [Int64] = []
        let due = leases.filter { _, l in
            guard let e = l.expiry, e <= now else { return false }
            return l.revokeRetryAt.map { $0 <= now } ?? true
        }.sorted { $0.value.expiry! < $1.value.expiry! }
        for (id, _) in due.prefix(options.revokeLimitPerTick) {
            leases[id]!.revokeRetryAt = now + options.expiredRetryInterval
            out.append(id)
        }
        return out
    }

    /// Checkpoints that are due (remaining TTL in whole seconds, rounded up, as etcd).
    func takeDueCheckpoints() -> [Etcdserverpb.LeaseCheckpoint] {
        guard isPrimary, options.checkpointInterval != nil else { return [] }
        let now = clock.now()
        var out: [Etcdserverpb.LeaseCheckpoint] = []
        for (id, l) in leases {
            guard let t = l.nextCheckpoint, t <= now, let e = l.expiry else { continue }
            leases[id]!.nextCheckpoint = nil
            let left = e - now
            let c = left.components
            let remaining = c.seconds + (c.attoseconds > 0 ? 1 : 0)
            if remaining <= 0 || remaining >= l.ttl { continue }
            var cp = Etcdserverpb.LeaseCheckpoint()
            cp.id = id
            cp.remainingTTL = remaining
            out.append(cp)
            if out.count == 1000 { break }      // etcd's maxLeaseCheckpointBatchSize
        }
        return out.sorted { $0.id < $1.id }
    }

    /// One timer turn: revoke expired leases and write due checkpoints through Raft. Returns after
    /// those proposals are answered and their applied results have reached the lessor.
    public func tick() async {
        let expired = takeExpired()
        let checkpoints = takeDueCheckpoints()
        let proposer = self.proposer
        let logger = self.logger
        await withTaskGroup(of: Void.self) { group in
            for id in expired {
                group.addTask {
                    var r = Etcdserverpb.LeaseRevokeRequest()
                    r.id = id
                    do { _ = try await proposer.proposeLeaseRevoke(r) } catch {
                        logger.debug("lease revoke failed", metadata: ["lease": "\(id)", "error": "\(error)"])
                    }
                }
            }
            if !checkpoints.isEmpty {
                group.addTask {
                    var r = Etcdserverpb.LeaseCheckpointRequest()
                    r.checkpoints = checkpoints
                    do { _ = try await proposer.proposeLeaseCheckpoint(r) } catch {
                        logger.debug("lease checkpoint failed", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
        if !expired.isEmpty || !checkpoints.isEmpty { await caughtUp() }
    }

    /// Consumes the apply feed and runs `tick()` every options.tickInterval, until cancelled or
    /// shut down.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [feed] in
                for await changes in feed { await self.process(changes) }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: self.options.tickInterval)
                    if Task.isCancelled { return }
                    if await self.isStopped() { return }
                    await self.tick()
                }
            }
            await group.next()
            group.cancelAll()
        }
    }

    func isStopped() -> Bool { stopped }

    public func shutdown() {
        stopped = true
        feedIn.finish()
        demote()
        let ws = barrierWaiters
        barrierWaiters = []
        for w in ws { w.c.resume() }
    }
}

private func systemMilliseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
