import Foundation
import GRPC
import KeelAPI
@testable import Server
import Storage
import Synchronization
import Testing

/// A clock the test moves by hand.
final class ManualLeaseClock: LeaseClock {
    private let nanos = Atomic<Int64>(0)
    func now() -> Duration { .nanoseconds(nanos.load(ordering: .acquiring)) }
    func advance(_ d: Duration) {
        let c = d.components
        _ = nanos.add(c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000, ordering: .acquiringAndReleasing)
    }
}

/// LeaseProposer double: records every proposal, then does what SERVER's apply loop does (one
/// MVCCStore write txn, then the synchronous apply feed `lessor.applied(_:)` before answering), so
/// the lessor sees real outcomes through the same path as in the server.
actor RecordingLeaseProposer: LeaseProposer {
    enum Proposal: Equatable {
        case grant(id: Int64, ttl: Int64)
        case revoke(id: Int64)
        case checkpoint([Int64: Int64])
    }
    let store: MVCCStore
    weak var lessor: Lessor?
    private(set) var proposals: [Proposal] = []
    /// When false, revokes are recorded but not applied (a proposal that never commits).
    var applyRevokes = true

    init(store: MVCCStore) { self.store = store }
    func attach(_ l: Lessor) { lessor = l }
    func setApplyRevokes(_ v: Bool) { applyRevokes = v }
    func clear() { proposals = [] }

    func proposeLeaseGrant(_ r: Etcdserverpb.LeaseGrantRequest) async throws -> Etcdserverpb.LeaseGrantResponse {
        proposals.append(.grant(id: r.id, ttl: r.ttl))
        do {
            try store.write { (t) throws(MVCCError) in try t.leaseGrant(id: r.id, ttl: r.ttl) }
        } catch .leaseExists {
            throw LeaseError.exists.status
        }
        lessor?.applied([.granted(id: r.id, ttl: r.ttl)])
        var resp = Etcdserverpb.LeaseGrantResponse()
        resp.id = r.id
        resp.ttl = r.ttl
        return resp
    }

    func proposeLeaseRevoke(_ r: Etcdserverpb.LeaseRevokeRequest) async throws -> Etcdserverpb.LeaseRevokeResponse {
        proposals.append(.revoke(id: r.id))
        guard applyRevokes else { throw GRPCStatus(.unavailable, "etcdserver: request timed out") }
        do {
            try store.write { (t) throws(MVCCError) in try t.leaseRevoke(id: r.id) }
        } catch .leaseNotFound {
            throw LeaseError.notFound.status
        }
        lessor?.applied([.revoked(id: r.id)])
        return Etcdserverpb.LeaseRevokeResponse()
    }

    func proposeLeaseCheckpoint(_ r: Etcdserverpb.LeaseCheckpointRequest) async throws -> Etcdserverpb.LeaseCheckpointResponse {
        proposals.append(.checkpoint(Dictionary(uniqueKeysWithValues: r.checkpoints.map { ($0.id, $0.remainingTTL) })))
        try store.write { (t) throws(MVCCError) in
            for cp in r.checkpoints { try t.leaseCheckpoint(id: cp.id, remainingTTL: cp.remainingTTL) }
        }
        lessor?.applied(r.checkpoints.map { .checkpointed(id: $0.id, remainingTTL: $0.remainingTTL) })
        return Etcdserverpb.LeaseCheckpointResponse()
    }
}

struct LessorFixture {
    let ts: WatchTestStore
    let clock = ManualLeaseClock()
    let proposer: RecordingLeaseProposer
    let lessor: Lessor
    let runner: Task<Void, Never>

    /// The lessor's run() consumes the apply feed; its own timer is set far away so that only the
    /// test's tick() calls (with the manual clock) drive expiry.
    init(options: LessorOptions = LessorOptions(), store: WatchTestStore? = nil) async throws {
        ts = try store ?? WatchTestStore()
        proposer = RecordingLeaseProposer(store: ts.store)
        var o = options
        o.tickInterval = .seconds(3600)
        let l = try Lessor(backend: ts.store, proposer: proposer, options: o, clock: clock)
        lessor = l
        runner = Task { await l.run() }
        await proposer.attach(lessor)
    }

    func stop() async {
        await lessor.shutdown()
        await runner.value
    }

    func grant(_ ttl: Int64, id: Int64 = 0) async throws -> Etcdserverpb.LeaseGrantResponse {
        var r = Etcdserverpb.LeaseGrantRequest()
        r.ttl = ttl
        r.id = id
        return try await lessor.grant(r)
    }
}

func statusOf(_ body: () async throws -> Void) async -> GRPCStatus? {
    do { try await body(); return nil } catch let s as GRPCStatus { return s } catch { return GRPCStatus(.unknown, "\(error)") }
}

@Suite struct LessorTests {
    @Test func minLeaseTTLAsEtcd() {
        #expect(Lessor.minLeaseTTL(electionTicks: 10, heartbeat: .milliseconds(100)) == 2)   // 1.5 s -> 2
        #expect(Lessor.minLeaseTTL(electionTicks: 10, heartbeat: .milliseconds(200)) == 3)
        #expect(Lessor.minLeaseTTL(electionTicks: 4, heartbeat: .seconds(1)) == 6)
    }

    @Test func grantChoosesIDClampsTTLAndRejectsAsEtcd() async throws {
        let f = try await LessorFixture()
        await f.lessor.promote(extend: .seconds(1))
        let a = try await f.grant(1)
        #expect(a.id > 0 && a.ttl == 2)                                  // minTTL 2
        let b = try await f.grant(60, id: 42)
        #expect(b.id == 42 && b.ttl == 60)
        #expect(await f.proposer.proposals == [.grant(id: a.id, ttl: 2), .grant(id: 42, ttl: 60)])
        #expect(try f.ts.store.lease(id: 42)?.ttl == 60)

        let tooLarge = await statusOf { _ = try await f.grant(Lessor.maxLeaseTTL + 1) }
        #expect(tooLarge == GRPCStatus(.outOfRange, "etcdserver: too large lease TTL"))
        let exists = await statusOf { _ = try await f.grant(5, id: 42) }
        #expect(exists == GRPCStatus(.failedPrecondition, "etcdserver: lease already exists"))
        #expect(await f.proposer.proposals.count == 2)                   // neither was proposed

        // server-chosen IDs are distinct and positive
        var ids: Set<Int64> = [a.id, 42]
        for _ in 0..<20 { ids.insert(try await f.grant(10).id) }
        #expect(ids.count == 22 && ids.allSatisfy { $0 > 0 })
        await f.stop()
    }

    @Test func leaderRevokesExpiredLeaseOnceThroughRaft() async throws {
        let f = try await LessorFixture()
        await f.lessor.promote(extend: .seconds(1))
        let l = try await f.grant(10, id: 7)
        try f.ts.put("held", "v", lease: l.id)
        await f.proposer.clear()
        f.clock.advance(.milliseconds(9_900))
        await f.lessor.tick()
        #expect(await f.proposer.proposals.isEmpty)
        f.clock.advance(.milliseconds(100))                              // exactly the TTL
        await f.proposer.setApplyRevokes(false)                          // first attempt does not commit
        await f.lessor.tick()
        #expect(await f.proposer.proposals == [.revoke(id: 7)])
        await f.lessor.tick()                                            // not again right away
        #expect(await f.proposer.proposals == [.revoke(id: 7)])
        f.clock.advance(.seconds(3))                                     // etcd's retry interval
        await f.proposer.setApplyRevokes(true)
        await f.lessor.tick()
        #expect(await f.proposer.proposals == [.revoke(id: 7), .revoke(id: 7)])
        #expect(await f.lessor.exists(id: 7) == false)
        #expect(try f.ts.store.lease(id: 7) == nil)
        var rr = Etcdserverpb.RangeRequest()
        rr.key = Array("held".utf8)
        #expect(try f.ts.store.range(rr).kvs.isEmpty)                   // attached key went with it
        await f.stop()
    }

    @Test func keepAliveRenewsAndExpiredLeaseAnswersNotFoundAfterRevoke() async throws {
        let f = try await LessorFixture()
        await f.lessor.promote(extend: .zero)
        _ = try await f.grant(10, id: 1)
        f.clock.advance(.seconds(8))
        #expect(try await f.lessor.renew(id: 1) == 10)
        f.clock.advance(.seconds(9))                                     // 17 s: renewed at 8 -> expires at 18
        await f.lessor.tick()
        #expect(!(await f.proposer.proposals.contains(.revoke(id: 1))))
        let ttl = try await f.lessor.timeToLive(id: 1, keys: false)
        #expect(ttl?.ttl == 1 && ttl?.grantedTTL == 10)
        f.clock.advance(.seconds(1))
        // expired, not yet revoked: a keep-alive waits for the revoke, then the lease is gone
        let renewal = Task { () -> LeaseError? in
            do throws(LeaseError) { _ = try await f.lessor.renew(id: 1); return nil } catch { return error }
        }
        while await f.lessor.waitingRenewals(id: 1) == 0 { await Task.yield() }
        await f.lessor.tick()
        #expect(await renewal.value == .notFound)
        #expect(await f.proposer.proposals.last == .revoke(id: 1))
        do {
            _ = try await f.lessor.renew(id: 99)
            Issue.record("renew of an unknown lease succeeded")
        } catch {
            #expect(error == .notFound)
        }
        await f.stop()
    }

    @Test func followerNeverExpiresAndPromoteExtends() async throws {
        let f = try await LessorFixture()
        _ = try await f.grant(5, id: 3)                                  // applied while not leader
        f.clock.advance(.seconds(100))
        await f.lessor.tick()
        #expect(await f.proposer.proposals == [.grant(id: 3, ttl: 5)])
        do {
            _ = try await f.lessor.renew(id: 3)
            Issue.record("follower renewed")
        } catch {
            #expect(error == .notPrimary)
            #expect(error.status == GRPCStatus(.failedPrecondition, "etcdserver: not leader"))
        }
        await f.lessor.promote(extend: .seconds(1))                      // expires at +6 s
        f.clock.advance(.milliseconds(5_999))
        await f.lessor.tick()
        #expect(await f.proposer.proposals.count == 1)
        f.clock.advance(.milliseconds(1))
        await f.lessor.tick()
        #expect(await f.proposer.proposals.last == .revoke(id: 3))
        // demote: no more expiry on this node
        _ = try await f.grant(5, id: 4)
        await f.lessor.demote()
        f.clock.advance(.seconds(60))
        await f.lessor.tick()
        #expect(await f.proposer.proposals.last == .grant(id: 4, ttl: 5))
        await f.stop()
    }

    @Test func restartKeepsLeasesAndUsesCheckpointedRemainingTTL() async throws {
        let ts = try WatchTestStore()
        var options = LessorOptions()
        options.checkpointInterval = .seconds(5)
        do {
            let f = try await LessorFixture(options: options, store: ts)
            await f.lessor.promote(extend: .zero)
            _ = try await f.grant(20, id: 10)
            _ = try await f.grant(30, id: 11)
            await f.proposer.clear()
            f.clock.advance(.seconds(4))
            await f.lessor.tick()
            #expect(await f.proposer.proposals.isEmpty)
            f.clock.advance(.seconds(1))                                 // 5 s: checkpoints due
            await f.lessor.tick()
            #expect(await f.proposer.proposals == [.checkpoint([10: 15, 11: 25])])
            #expect(try ts.store.lease(id: 10)?.remainingTTL == 15)
            // a renewal clears the checkpoint through Raft (etcd does the same)
            #expect(try await f.lessor.renew(id: 11) == 30)
            #expect(await f.proposer.proposals.last == .checkpoint([11: 0]))
            #expect(try ts.store.lease(id: 11)?.remainingTTL == 0)
            await f.stop()
        }
        // "restart": a new lessor on the same store
        let g = try await LessorFixture(options: options, store: ts)
        #expect(await g.lessor.leaseIDs().sorted() == [10, 11])
        await g.lessor.promote(extend: .seconds(1))
        #expect(try await g.lessor.timeToLive(id: 10, keys: false)?.ttl == 16)   // 1 + checkpointed 15
        #expect(try await g.lessor.timeToLive(id: 11, keys: false)?.ttl == 31)   // 1 + full TTL
        g.clock.advance(.seconds(16))
        await g.lessor.tick()
        #expect(await g.proposer.proposals.contains(.revoke(id: 10)))
        #expect(!(await g.proposer.proposals.contains(.revoke(id: 11))))
        await g.stop()
    }

    @Test func promoteSpreadsPiledUpExpiriesWithoutCuttingAnyShort() async throws {
        var options = LessorOptions()
        options.revokeLimitPerTick = 4                                   // revoke rate 8/s -> 6 expiries/s
        let f = try await LessorFixture(options: options)
        for id in 1...20 { _ = try await f.grant(10, id: Int64(id)) }
        await f.lessor.promote(extend: .seconds(1))
        var expiries: [Duration] = []
        for id in 1...20 { expiries.append(try #require(await f.lessor.expiry(id: Int64(id)))) }
        #expect(expiries.allSatisfy { $0 >= .seconds(11) })
        let inFirstSecond = expiries.filter { $0 < .seconds(12) }.count
        #expect(inFirstSecond <= 6 && inFirstSecond >= 1)
        await f.stop()
    }

    @Test func serviceTimeToLiveKeysLeasesAndKeepAliveStream() async throws {
        let f = try await LessorFixture()
        await f.lessor.promote(extend: .zero)
        let service = LeaseService(lessor: f.lessor, header: {
            var h = Etcdserverpb.ResponseHeader()
            h.clusterId = 1
            h.memberId = 2
            h.revision = 77
            return h
        })
        _ = try await f.grant(50, id: 5)
        _ = try await f.grant(20, id: 6)
        try f.ts.put("b", "1", lease: 5)
        try f.ts.put("a", "2", lease: 5)
        var q = Etcdserverpb.LeaseTimeToLiveRequest()
        q.id = 5
        q.keys = true
        let t = try await service.timeToLive(q)
        #expect(t.id == 5 && t.ttl == 50 && t.grantedTTL == 50)
        #expect(t.keys == [Array("a".utf8), Array("b".utf8)])
        #expect(t.header?.revision == 77 && t.header?.clusterId == 1)
        q.id = 404
        let missing = try await service.timeToLive(q)
        #expect(missing.ttl == -1 && missing.id == 404 && missing.keys.isEmpty)

        let list = try await service.leases(Etcdserverpb.LeaseLeasesRequest())
        #expect(list.leases.map(\.id) == [6, 5])                         // by expiry

        var reqs: [Etcdserverpb.LeaseKeepAliveRequest] = []
        for id: Int64 in [5, 404, 6] {
            var r = Etcdserverpb.LeaseKeepAliveRequest()
            r.id = id
            reqs.append(r)
        }
        let sent = Mutex<[Etcdserverpb.LeaseKeepAliveResponse]>([])
        try await service.keepAlive(AsyncStream { c in for r in reqs { c.yield(r) }; c.finish() }) { resp in
            sent.withLock { $0.append(resp) }
        }
        let got = sent.withLock { $0 }
        #expect(got.map(\.id) == [5, 404, 6])
        #expect(got.map(\.ttl) == [50, 0, 20])
        #expect(got.allSatisfy { $0.header?.revision == 77 })

        var rv = Etcdserverpb.LeaseRevokeRequest()
        rv.id = 404
        let notFound = await statusOf { _ = try await service.revoke(rv) }
        #expect(notFound == GRPCStatus(.notFound, "etcdserver: requested lease not found"))
        rv.id = 5
        _ = try await service.revoke(rv)
        #expect(try f.ts.store.leaseKeys(id: 5).isEmpty)
        #expect(try await service.timeToLive(q).ttl == -1)
        await f.stop()
    }
}
