import GRPC
import KeelAPI

/// etcdserverpb.Cluster for a one-member cluster: MemberList answers with this member; changes
/// answer with etcd's errors where etcd has one for the request, and say plainly that membership
/// changes are not implemented yet otherwise.
public struct ClusterService: GRPCService {
    let core: KeelCore
    public init(core: KeelCore) { self.core = core }

    static let notSupported = GRPCStatus(.unimplemented, "keel: membership changes are not supported yet (single-member cluster)")

    public var methods: [ServerMethod] {
        [
            .unary(Etcdserverpb.Cluster.memberList) { _, _ in self.memberList() },
            .unary(Etcdserverpb.Cluster.memberAdd) { req, _ in try self.memberAdd(req) },
            .unary(Etcdserverpb.Cluster.memberRemove) { req, _ -> Etcdserverpb.MemberRemoveResponse in
                try self.requireMember(req.id); throw Self.notSupported
            },
            .unary(Etcdserverpb.Cluster.memberUpdate) { req, _ -> Etcdserverpb.MemberUpdateResponse in
                try self.requireMember(req.id)
                for u in req.peerURLs { do { _ = try URLParsing.parse(u) } catch { throw EtcdError.memberBadURLs } }
                throw Self.notSupported
            },
            .unary(Etcdserverpb.Cluster.memberPromote) { req, _ -> Etcdserverpb.MemberPromoteResponse in
                try self.requireMember(req.id)
                // This member is a voter: etcd refuses to promote a non-learner.
                throw GRPCStatus(.failedPrecondition, "etcdserver: can only promote a learner member")
            },
        ]
    }

    public var me: Etcdserverpb.Member {
        var m = Etcdserverpb.Member()
        m.id = core.shared.memberID
        m.name = core.name
        m.peerURLs = core.resolved.peerURLs.map(\.description)
        m.clientURLs = core.resolved.advertiseClientURLs.map(\.description)
        return m
    }

    public func memberList() -> Etcdserverpb.MemberListResponse {
        var r = Etcdserverpb.MemberListResponse()
        r.header = core.header()
        r.members = [me]
        return r
    }

    func memberAdd(_ req: Etcdserverpb.MemberAddRequest) throws(GRPCStatus) -> Etcdserverpb.MemberAddResponse {
        if req.peerURLs.isEmpty { throw EtcdError.memberBadURLs }
        for u in req.peerURLs { do { _ = try URLParsing.parse(u) } catch { throw EtcdError.memberBadURLs } }
        let mine = Set(me.peerURLs)
        if req.peerURLs.contains(where: { mine.contains($0) }) {
            throw GRPCStatus(.failedPrecondition, "etcdserver: Peer URLs already exists")
        }
        throw Self.notSupported
    }

    func requireMember(_ id: UInt64) throws(GRPCStatus) {
        if id != core.shared.memberID { throw EtcdError.memberNotFound }
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
