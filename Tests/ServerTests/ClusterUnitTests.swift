import Foundation
import KeelAPI
import KeelTestSupport
import Logging
import NIOEmbedded
import Raft
import Storage
import Testing
@testable import Server

/// Multi-member pieces that need no process: --initial-cluster resolution (IDs as etcd 3.4
/// computed them for the same flags), the applied membership, WAL entry types, data-dir checks.
@Suite struct ClusterUnitTests {
    static let three = "k1=http://127.0.0.1:23801,k2=http://127.0.0.1:23802,k3=http://127.0.0.1:23803"

    static func config(_ name: String, token: String = "tok", cluster: String = three) -> ServerConfig {
        var c = ServerConfig()
        c.name = name
        c.initialCluster = cluster
        c.initialClusterToken = token
        let port = 23800 + Int(name.dropFirst())!
        c.initialAdvertisePeerURLs = "http://127.0.0.1:\(port)"
        c.listenPeerURLs = "http://127.0.0.1:\(port)"
        return c
    }

    @Test func threeMemberIDsAreEtcds() throws {
        // etcd 3.4.23 started with these flags listed: 4036b1db24775ea0 (k1), 2737ecedbf2a9065 (k2),
        // 80af5d65a6e2f603 (k3), cluster_id 7266900810802666328 (0x64d937c925e41b58).
        let r = try Self.config("k1").resolve()
        #expect(r.memberID == 0x4036b1db24775ea0)
        #expect(r.clusterID == 0x64d937c925e41b58)
        #expect(r.initialMembers.map(\.name) == ["k2", "k1", "k3"])   // sorted by ID
        #expect(r.initialMembers.map(\.id) == [0x2737ecedbf2a9065, 0x4036b1db24775ea0, 0x80af5d65a6e2f603])
        #expect(try Self.config("k3").resolve().memberID == 0x80af5d65a6e2f603)
        #expect(r.joinExisting == false)
        var e = Self.config("k2"); e.initialClusterState = "existing"
        #expect(try e.resolve().joinExisting)
        // Another token: other IDs, another cluster.
        #expect(try Self.config("k1", token: "other").resolve().clusterID != r.clusterID)
    }

    @Test func initialClusterChecks() {
        #expect(throws: Server.ConfigError("duplicate URL http://127.0.0.1:23801 in --initial-cluster")) {
            try Self.config("k1", cluster: "k1=http://127.0.0.1:23801,k2=http://127.0.0.1:23801").resolve()
        }
        #expect(throws: Server.ConfigError.self) { try Self.config("k1", cluster: "k1=http://127.0.0.1:23801,k2").resolve() }
        let initial = Keelpb.Membership.initial(try! Self.config("k1").resolve().initialMembers)
        #expect(initial.voters == [0x2737ecedbf2a9065, 0x4036b1db24775ea0, 0x80af5d65a6e2f603])
        #expect(initial.learners.isEmpty)
        #expect(initial.members.map(\.peerUrls) == [["http://127.0.0.1:23802"], ["http://127.0.0.1:23801"], ["http://127.0.0.1:23803"]])
    }

    @Test func membershipFollowsConfChanges() {
        var ms = Keelpb.Membership.initial(try! Self.config("k1").resolve().initialMembers)
        var m = Keelpb.Member(); m.peerUrls = ["http://127.0.0.1:23804"]
        let voters = ms.voters
        ms.apply(ConfChange(type: .addLearner, nodeID: 9), member: m, confState: ConfState(voters: voters, learners: [9]))
        #expect(ms.member(9)?.isLearner == true && ms.member(9)?.peerUrls == m.peerUrls)
        #expect(ms.learners == [9])
        // Replayed: the member is there already, nothing changes.
        let before = ms
        ms.apply(ConfChange(type: .addLearner, nodeID: 9), member: m, confState: ConfState(voters: voters, learners: [9]))
        #expect(ms == before)
        ms.apply(ConfChange(type: .promoteLearner, nodeID: 9), member: nil, confState: ConfState(voters: (voters + [9]).sorted()))
        #expect(ms.member(9)?.isLearner == false && ms.learners.isEmpty && ms.voters.contains(9))
        ms.apply(ConfChange(type: .removeNode, nodeID: 9), member: nil, confState: ConfState(voters: voters))
        #expect(ms.member(9) == nil && ms.removed == [9] && ms.voters == voters)
        // A removed ID never comes back.
        ms.apply(ConfChange(type: .addNode, nodeID: 9), member: m, confState: ConfState(voters: voters))
        #expect(ms.member(9) == nil)
        #expect(ms.etcdMembers.map(\.id) == voters)
    }

    @Test func memberAttributesAndUpdates() {
        var ms = Keelpb.Membership.initial(try! Self.config("k1").resolve().initialMembers)
        var a = Keelpb.MemberAttributes(); a.memberId = 0x4036b1db24775ea0; a.name = "k1"; a.clientUrls = ["http://127.0.0.1:23791"]
        var req = Keelpb.InternalRequest(); req.request = .memberAttributes(a)
        guard case .membership(let after)? = Applier.applyMemberRequest(req, &ms) else { Issue.record("no result"); return }
        #expect(after.member(0x4036b1db24775ea0)?.clientUrls == ["http://127.0.0.1:23791"])
        var u = Keelpb.MemberUpdate(); u.memberId = 77; u.peerUrls = ["http://127.0.0.1:1"]
        req.request = .memberUpdate(u)
        guard case .failed(let s)? = Applier.applyMemberRequest(req, &ms) else { Issue.record("no failure"); return }
        #expect(s == EtcdError.memberNotFound)
        req.request = .put(Etcdserverpb.PutRequest())
        #expect(Applier.applyMemberRequest(req, &ms) == nil)
    }

    @Test func walKeepsEntryTypes() {
        let cc = Raft.Entry(term: 2, index: 7, data: ConfChange(type: .addLearner, nodeID: 5, context: [1, 2]).encoded(), type: .confChange)
        let normal = Raft.Entry(term: 2, index: 8, data: [0x08, 0x01])
        let noop = Raft.Entry(term: 3, index: 9)
        for e in [cc, normal, noop] { #expect(WALCodec.raftEntry(WALCodec.walEntry(e)) == e) }
        #expect(WALCodec.walEntry(cc).data.first == WALCodec.confChangeTag)
    }

    @Test func dataDirOfAnotherClusterIsRefused() throws {
        let mine = try Self.config("k1").resolve()
        var id = Keelpb.ClusterIdentity(); id.clusterId = mine.clusterID; id.memberId = mine.memberID
        try Bootstrap.checkDataDir(identity: id, resolved: mine, config: Self.config("k1"))
        let other = try Self.config("k1", token: "other").resolve()
        #expect(throws: StartupError.self) { try Bootstrap.checkDataDir(identity: id, resolved: other, config: Self.config("k1")) }
        // Joining (existing): the data dir wins, as in etcd.
        var join = Self.config("k1", token: "other"); join.initialClusterState = "existing"
        try Bootstrap.checkDataDir(identity: id, resolved: try join.resolve(), config: join)
    }

    @Test func followerInstallsTheLeadersSnapshot() throws {
        let base = try makeTempDirectory(prefix: "keel-cluster-unit")
        defer { try? FileManager.default.removeItem(atPath: base) }
        // The leader's store: two keys, its identity, applied index 40.
        let leader = try MVCCStore.open(directory: base + "/leader")
        var lid = Keelpb.ClusterIdentity(); lid.memberId = 1; lid.name = "leader"
        let ms = Keelpb.Membership.initial(try Self.config("k1").resolve().initialMembers)
        try leader.write { (t: inout MVCCWriteTxn) throws(MVCCError) in
            var p = Etcdserverpb.PutRequest(); p.key = Array("a".utf8); p.value = Array("1".utf8)
            _ = try t.put(p)
            p.key = Array("b".utf8)
            _ = try t.put(p)
            t.setMeta(MetaKey.identity, lid.serializedBytes())
            t.setMeta(MetaKey.membership, ms.serializedBytes())
            t.setAppliedIndex(40)
        }
        let file = base + "/snap.mdb"
        let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        try leader.writeSnapshot(to: fd)
        close(fd)
        leader.close()
        // The follower: its own identity, behind.
        let dir = base + "/follower"
        let follower = try MVCCStore.open(directory: dir)
        var fid = Keelpb.ClusterIdentity(); fid.memberId = 0x4036b1db24775ea0; fid.name = "follower"
        try follower.write { (t: inout MVCCWriteTxn) throws(MVCCError) in
            t.setMeta(MetaKey.identity, fid.serializedBytes()); t.setAppliedIndex(3)
        }
        let shared = SharedState(clusterID: 7, memberID: 0x4036b1db24775ea0, nowMillis: 1)
        let loop = EmbeddedEventLoop()
        let applier = try Applier(store: follower, shared: shared, logger: Logger(label: "test"), loop: loop, hooks: ApplyHooks())
        let slot = StoreSlot(follower)
        applier.storeSlot = slot
        #expect(applier.installSnapshot(file: file) == 40)
        let now = slot.store
        #expect(now !== follower && applier.store === now)
        #expect(now.appliedIndex == 40 && now.revision == 3 && shared.applied == 40)
        var r = Etcdserverpb.RangeRequest(); r.key = Array("a".utf8); r.rangeEnd = Array("c".utf8)
        #expect(try now.range(r).kvs.map { String(decoding: $0.key, as: UTF8.self) } == ["a", "b"])
        let identity = try Keelpb.ClusterIdentity(serializedBytes: try #require(try now.meta(MetaKey.identity)))
        #expect(identity == fid)                          // this member's, not the leader's
        #expect(applier.membership == ms)
        #expect(!FileManager.default.fileExists(atPath: file))
        now.close()
        // It survives a reopen.
        let again = try MVCCStore.open(directory: dir)
        #expect(again.appliedIndex == 40 && again.revision == 3)
        again.close()
    }
}
