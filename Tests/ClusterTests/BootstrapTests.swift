import Foundation
import KeelTestSupport
import Testing

/// Bootstrap checks of a real keel cluster: the member and cluster IDs are the ones etcd derives
/// from the same flags, a data dir of one cluster is refused by flags describing another, and a
/// member that was never added cannot join with --initial-cluster-state existing.
@Suite("keel cluster: bootstrap", .serialized)
struct BootstrapTests {
    @Test("IDs as etcd's; another cluster's data dir refused; joining without member add refused",
          .timeLimit(.minutes(4)), .enabled(if: ClusterServer.keel.isAvailable, "keel or etcdctl missing"))
    func checks() async throws {
        let keel = try ClusterServer.keel.executable()
        try await LocalCluster.with(.keel, members: 3) { c in
            let eps = await c.endpoints
            // Member IDs: SHA-1 of the peer URLs and the token (etcd's NewMember); the header's
            // cluster_id: SHA-1 of the sorted member IDs.
            let list = try await Etcdctl.run(["member", "list", "-w", "json"], endpoints: [eps[0]])
            #expect(list.status.succeeded, "\(list)")
            for (i, s) in await c.slots.enumerated() {
                let st = try #require(await c.status(i))
                #expect(list.stdout.contains("\"ID\":\(st.memberID),\"name\":\"\(s.name)\""), "\(list)")
            }

            // A data dir from this cluster, started with flags of another cluster (another token).
            await c.kill(2)
            var args = await c.arguments(2, state: "new")
            if let t = args.firstIndex(of: "--initial-cluster-token") { args[t + 1] = "some-other-cluster" }
            let refused = try await ChildProcess.run(keel, args, timeout: .seconds(30))
            #expect(!refused.status.succeeded, "\(refused)")
            #expect(refused.stderr.contains("cluster ID mismatch"), "\(refused.stderr.suffix(2000))")
            try await c.restart(2)

            // A member nobody added: the running cluster has 3 members, its flags list 4.
            let slot = try await c.addSlot(name: "stranger")
            let s = await c.slots[slot]
            let initial = await c.initialCluster + ",stranger=\(s.peerURL)"
            let join = try await ChildProcess.run(keel, [
                "--name", "stranger", "--data-dir", s.dataDir, "--listen-client-urls", s.clientURL,
                "--advertise-client-urls", s.clientURL, "--listen-peer-urls", "http://127.0.0.1:\(s.peerPort)",
                "--initial-advertise-peer-urls", s.peerURL, "--initial-cluster", initial,
                "--initial-cluster-state", "existing", "--initial-cluster-token", c.token,
            ], timeout: .seconds(60))
            #expect(!join.status.succeeded, "\(join)")
            #expect(join.stderr.contains("member count is unequal"), "\(join.stderr.suffix(2000))")
            let ok = try await Etcdctl.run(["put", "still", "fine"], endpoints: eps)
            #expect(ok.status.succeeded, "\(ok)")
        }
    }
}
