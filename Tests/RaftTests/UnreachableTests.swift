import Testing
import Raft

@Suite("reportUnreachable")
struct UnreachableTests {
    @Test("a replicating follower the transport cannot reach goes back to probe; nothing else changes")
    func replicateToProbe() throws {
        var c = try TestCluster()
        try c.elect(1)
        try c.propose(1, [1])
        try c.stabilize()
        #expect(c.nodes[1]!.status.progress[2]?.state == .replicate)
        #expect(c.nodes[1]!.status.progress[3]?.state == .replicate)
        c.nodes[1]!.reportUnreachable(2)
        let st = c.nodes[1]!.status
        #expect(st.progress[2]?.state == .probe)
        #expect(st.progress[3]?.state == .replicate)
        #expect(st.role == .leader)
        // The follower answers the next append again: replication resumes, entries commit.
        try c.propose(1, [2])
        try c.stabilize()
        try c.tick(1)
        try c.stabilize()
        #expect(c.nodes[1]!.status.progress[2]?.state == .replicate)
        #expect(c.log(2).map(\.data).contains([2]))
        // On a follower it is a no-op.
        let before = c.nodes[2]!.status
        c.nodes[2]!.reportUnreachable(3)
        #expect(c.nodes[2]!.status == before)
    }
}
