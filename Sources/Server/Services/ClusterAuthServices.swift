import GRPC
import KeelAPI

/// etcdserverpb.Cluster: the member list as applied, and membership changes through Raft
/// conf-change entries (one at a time), with etcd's checks and errors (server.go AddMember /
/// RemoveMember / PromoteMember / UpdateMember, strict reconfiguration checks on).
public struct ClusterService: GRPCService {
    let core: KeelCore
    public init(core: KeelCore) { self.core = core }

    /// etcd's default --max-learners.
    static let maxLearners = 1

    public var methods: [ServerMethod] {
        [
            .unary(Etcdserverpb.Cluster.memberList) { _, _ in self.memberList() },
            .unary(Etcdserverpb.Cluster.memberAdd) { req, _ in try await self.memberAdd(req) },
            .unary(Etcdserverpb.Cluster.memberRemove) { req, _ in try await self.memberRemove(req) },
            .unary(Etcdserverpb.Cluster.memberUpdate) { req, _ in try await self.memberUpdate(req) },
            .unary(Etcdserverpb.Cluster.memberPromote) { req, _ in try await self.memberPromote(req) },
        ]
    }

    public func memberList() -> Etcdserverpb.MemberListResponse {
        var r = Etcdserverpb.MemberListResponse()
        r.header = core.header()
        r.members = core.membership().etcdMembers
        return r
    }

    static func checkURLs(_ urls: [String]) throws(GRPCStatus) -> [String] {
        if urls.isEmpty { throw EtcdError.memberBadURLs }
        var out: [String] = []
        for u in urls {
            do { out.append(try URLParsing.parse(u).description) } catch { throw EtcdError.memberBadURLs }
        }
        return out
    }

    func memberAdd(_ req: Etcdserverpb.MemberAddRequest) async throws(GRPCStatus) -> Etcdserverpb.MemberAddResponse {
        _ = try Self.checkURLs(req.peerURLs)
        if !core.shared.peersRunning.load(ordering: .relaxed) {
            throw GRPCStatus(.failedPrecondition, "keel: this member runs without a peer listener (a lone member on the default --listen-peer-urls); restart it with --listen-peer-urls to add members")
        }
        let ms = core.membership()
        let urls = Set(req.peerURLs)
        if ms.members.contains(where: { !urls.isDisjoint(with: $0.peerUrls) }) { throw EtcdError.peerURLExist }
        if req.isLearner {
            if ms.members.filter(\.isLearner).count >= Self.maxLearners { throw EtcdError.tooManyLearners }
            try await checkReconfiguration(.addLearner)
        } else {
            try await checkReconfiguration(.add)
        }
        // etcd's NewMember: SHA-1 of the peer URLs and the time, so a re-added URL gets a new ID.
        let id = Identity.memberID(peerURLs: req.peerURLs, token: "keel-member-add-\(KeelServer.nowMillis())")
        if ms.members.contains(where: { $0.id == id }) || ms.removed.contains(id) { throw EtcdError.memberExist }
        var m = Keelpb.Member()
        m.id = id; m.peerUrls = req.peerURLs; m.isLearner = req.isLearner
        let after = try await core.proposeConfChange(req.isLearner ? .addLearner : .addNode, nodeID: id, member: m)
        var r = Etcdserverpb.MemberAddResponse()
        r.header = core.header()
        r.member = after.etcdMembers.first { $0.id == id } ?? Keelpb.Membership.etcdMember(m)
        r.members = after.etcdMembers
        return r
    }

    func memberRemove(_ req: Etcdserverpb.MemberRemoveRequest) async throws(GRPCStatus) -> Etcdserverpb.MemberRemoveResponse {
        let ms = core.membership()
        guard let m = ms.member(req.id) else { throw EtcdError.memberNotFound }
        if !m.isLearner { try await checkReconfiguration(.remove(req.id)) }
        let after = try await core.proposeConfChange(.removeNode, nodeID: req.id, member: nil)
        var r = Etcdserverpb.MemberRemoveResponse()
        r.header = core.header()
        r.members = after.etcdMembers
        return r
    }

    func memberUpdate(_ req: Etcdserverpb.MemberUpdateRequest) async throws(GRPCStatus) -> Etcdserverpb.MemberUpdateResponse {
        _ = try Self.checkURLs(req.peerURLs)
        let ms = core.membership()
        guard ms.member(req.id) != nil else { throw EtcdError.memberNotFound }
        let urls = Set(req.peerURLs)
        if ms.members.contains(where: { $0.id != req.id && !urls.isDisjoint(with: $0.peerUrls) }) { throw EtcdError.peerURLExist }
        var u = Keelpb.MemberUpdate()
        u.memberId = req.id
        u.peerUrls = req.peerURLs
        let after: Keelpb.Membership
        switch try await core.propose(.memberUpdate(u)) {
        case .membership(let m): after = m
        case .failed(let s): throw s
        default: throw GRPCStatus(.internal, "keel: unexpected apply result for MemberUpdate")
        }
        var r = Etcdserverpb.MemberUpdateResponse()
        r.header = core.header()
        r.members = after.etcdMembers
        return r
    }

    /// etcd: only a learner may be promoted, and only once it has caught up (its match index
    /// at least 90% of the leader's); the leader decides (a follower asks it).
    func memberPromote(_ req: Etcdserverpb.MemberPromoteRequest) async throws(GRPCStatus) -> Etcdserverpb.MemberPromoteResponse {
        let ms = core.membership()
        guard let m = ms.member(req.id) else { throw EtcdError.memberNotFound }
        if !m.isLearner { throw EtcdError.memberNotLearner }
        guard let st = await core.raftStatus() else { throw EtcdError.stopped }
        if st.role == .leader {
            // A learner the membership has but Raft has no progress for yet (its add was just
            // applied) is not in sync: etcd answers that, not "member not found".
            guard let p = st.progress[req.id] else { throw EtcdError.learnerNotReady }
            if Double(p.match) < Double(st.commit) * 0.9 { throw EtcdError.learnerNotReady }
        } else {
            try await core.askLeaderIfLearnerReady(req.id)
        }
        try await checkReconfiguration(.promote(req.id))
        let after = try await core.proposeConfChange(.promoteLearner, nodeID: req.id, member: nil)
        var r = Etcdserverpb.MemberPromoteResponse()
        r.header = core.header()
        r.members = after.etcdMembers
        return r
    }

    /// etcd's strict reconfiguration checks (server.go mayAddMember / mayRemoveMember /
    /// mayPromoteMember). "Started" members are voters that published their name; "connected" ones
    /// are voters this member heard from within an election timeout, which only the leader knows
    /// (Raft's recentActive): on a follower the connectivity part is left to the leader's Raft.
    enum Reconfiguration { case add, addLearner, remove(UInt64), promote(UInt64) }

    func checkReconfiguration(_ change: Reconfiguration) async throws(GRPCStatus) {
        let ms = core.membership()
        let voters = ms.members.filter { !$0.isLearner }
        let started = { (m: Keelpb.Member) in !m.name.isEmpty }
        let st = await core.raftStatus()
        let leading = st?.role == .leader
        func connected(_ id: UInt64) -> Bool { id == st?.id || (st?.progress[id]?.recentActive ?? false) }
        switch change {
        case .addLearner:
            if leading, !voters.allSatisfy({ connected($0.id) }) { throw EtcdError.unhealthy }
        case .add, .promote:
            let nmembers = voters.count + 1
            let nstarted = voters.filter(started).count
            if !(nstarted == 1 && nmembers == 2) && nstarted < nmembers / 2 + 1 { throw EtcdError.notEnoughStarted }
            if case .add = change, leading, !voters.allSatisfy({ connected($0.id) }) { throw EtcdError.unhealthy }
        case .remove(let id):
            let rest = voters.filter { $0.id != id }
            if rest.filter(started).count < rest.count / 2 + 1 { throw EtcdError.notEnoughStarted }
            // A member that is down is safe to remove; otherwise the active quorum must survive.
            guard leading, id == st?.id || connected(id) else { return }
            let active = voters.filter { connected($0.id) }.count
            if active - 1 < 1 + (voters.count - 1) / 2 { throw EtcdError.notEnoughStarted }
        }
    }
}

/// etcdserverpb.Auth with authentication disabled (Keel has no auth store yet). Answers follow
/// etcd 3.4 with auth off and no users or roles: status "disabled", enabling needs a root user,
/// authenticating is refused, lookups find nothing, lists are empty; creating users or roles is
/// not implemented and says so.
public struct AuthService: GRPCService {
    let core: KeelCore
    public init(core: KeelCore) { self.core = core }

    static let notImplemented = GRPCStatus(.unimplemented, "keel: user and role management is not implemented yet")

    public var methods: [ServerMethod] {
        [
            .unary(Etcdserverpb.Auth.authEnable) { _, _ -> Etcdserverpb.AuthEnableResponse in throw EtcdError.rootUserNotExist },
            .unary(Etcdserverpb.Auth.authDisable) { _, _ in
                var r = Etcdserverpb.AuthDisableResponse(); r.header = self.core.header(); return r
            },
            .unary(Etcdserverpb.Auth.authStatus) { _, _ in
                var r = Etcdserverpb.AuthStatusResponse(); r.header = self.core.header(); r.enabled = false; return r
            },
            .unary(Etcdserverpb.Auth.authenticate) { _, _ -> Etcdserverpb.AuthenticateResponse in throw EtcdError.authNotEnabled },
            .unary(Etcdserverpb.Auth.userAdd) { req, _ -> Etcdserverpb.AuthUserAddResponse in
                if req.name.isEmpty { throw EtcdError.userEmpty }
                throw Self.notImplemented
            },
            .unary(Etcdserverpb.Auth.userGet) { _, _ -> Etcdserverpb.AuthUserGetResponse in throw EtcdError.userNotFound },
            .unary(Etcdserverpb.Auth.userList) { _, _ in
                var r = Etcdserverpb.AuthUserListResponse(); r.header = self.core.header(); return r
            },
            .unary(Etcdserverpb.Auth.userDelete) { _, _ -> Etcdserverpb.AuthUserDeleteResponse in throw EtcdError.userNotFound },
            .unary(Etcdserverpb.Auth.userChangePassword) { _, _ -> Etcdserverpb.AuthUserChangePasswordResponse in
                throw EtcdError.userNotFound
            },
            .unary(Etcdserverpb.Auth.userGrantRole) { _, _ -> Etcdserverpb.AuthUserGrantRoleResponse in throw EtcdError.userNotFound },
            .unary(Etcdserverpb.Auth.userRevokeRole) { _, _ -> Etcdserverpb.AuthUserRevokeRoleResponse in throw EtcdError.userNotFound },
            .unary(Etcdserverpb.Auth.roleAdd) { req, _ -> Etcdserverpb.AuthRoleAddResponse in
                if req.name.isEmpty { throw EtcdError.roleEmpty }
                throw Self.notImplemented
            },
            .unary(Etcdserverpb.Auth.roleGet) { _, _ -> Etcdserverpb.AuthRoleGetResponse in throw EtcdError.roleNotFound },
            .unary(Etcdserverpb.Auth.roleList) { _, _ in
                var r = Etcdserverpb.AuthRoleListResponse(); r.header = self.core.header(); return r
            },
            .unary(Etcdserverpb.Auth.roleDelete) { _, _ -> Etcdserverpb.AuthRoleDeleteResponse in throw EtcdError.roleNotFound },
            .unary(Etcdserverpb.Auth.roleGrantPermission) { _, _ -> Etcdserverpb.AuthRoleGrantPermissionResponse in
                throw EtcdError.roleNotFound
            },
            .unary(Etcdserverpb.Auth.roleRevokePermission) { _, _ -> Etcdserverpb.AuthRoleRevokePermissionResponse in
                throw EtcdError.roleNotFound
            },
        ]
    }
}
