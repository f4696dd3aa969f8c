import Testing
import Raft

@Suite("ReadIndex")
struct ReadIndexTests {
    @Test("the leader confirms every read queued between two Readys with one heartbeat round")
    func batchedRound() throws {
        var c = try TestCluster()
        try c.elect(1)
        try c.propose(1, [1]); try c.stabilize()
        let commit = c.nodes[1]!.commitIndex
        #expect(commit == 2)
        c.sent.removeAll()
        for k: UInt8 in 1...3 { try c.nodes[1]!.readIndex(context: [k]) }
        try c.stabilize()
        let rounds = c.sent.filter { $0.type == .heartbeat && !$0.context.isEmpty }
        #expect(rounds.count == 2)                               // one heartbeat per follower
        #expect(Set(rounds.map(\.context)).count == 1)           // ...of one round
        #expect(c.readStates[1] == [ReadState(index: commit, context: [1]),
                                    ReadState(index: commit, context: [2]),
                                    ReadState(index: commit, context: [3])])
    }

    @Test("without acknowledgements from a quorum no read is answered (a deposed leader cannot serve stale reads)")
    func needsQuorum() throws {
        var c = try TestCluster()
        try c.elect(1)
        try c.tick(1); try c.stabilize()
        c.drop = { $0.from == 2 || $0.from == 3 }
        try c.nodes[1]!.readIndex(context: [7])
        try c.stabilize()
        #expect(c.readStates[1, default: []].isEmpty)
        // One acknowledgement more (2's) makes a quorum with the leader itself.
        c.drop = { $0.from == 3 }
        try c.nodes[1]!.readIndex(context: [8])
        try c.stabilize()
        #expect(c.readStates[1]!.map(\.context) == [[7], [8]])   // round 2's ack also confirms round 1
    }

    @Test("a new leader answers reads only after it has committed an entry of its term")
    func waitsForTermCommit() throws {
        var c = try TestCluster()
        c.drop = { $0.type == .appendResponse }   // the no-op of term 1 cannot commit
        try c.elect(1)
        #expect(c.nodes[1]!.role == .leader)
        #expect(c.nodes[1]!.commitIndex == 0)
        c.sent.removeAll()
        try c.nodes[1]!.readIndex(context: [1])
        try c.stabilize()
        #expect(!c.sent.contains { $0.type == .heartbeat && !$0.context.isEmpty })
        #expect(c.readStates[1, default: []].isEmpty)
        c.drop = { _ in false }
        try c.tick(1); try c.stabilize()             // heartbeat responses trigger re-sends; no-op commits
        #expect(c.nodes[1]!.commitIndex == 1)
        #expect(c.readStates[1] == [ReadState(index: 1, context: [1])])
    }

    @Test("a follower forwards its read to the leader and gets the leader's commit index")
    func followerForwards() throws {
        var c = try TestCluster()
        try c.elect(1)
        try c.propose(1, [1]); try c.propose(1, [2]); try c.stabilize()
        try c.nodes[3]!.readIndex(context: [42])
        try c.stabilize()
        #expect(c.readStates[3] == [ReadState(index: 3, context: [42])])
        #expect(c.readStates[1, default: []].isEmpty)
        #expect(c.sent.contains { $0.type == .readIndex && $0.from == 3 && $0.to == 1 && $0.term == 0 })
    }

    @Test("a single-node leader answers at once, without messages")
    func singleNode() throws {
        var c = try TestCluster(ids: [1])
        try c.elect(1)
        try c.stabilize()
        #expect(c.nodes[1]!.commitIndex == 1)
        try c.nodes[1]!.readIndex(context: [5])
        var n = c.nodes[1]!
        #expect(n.hasReady)
        let rd = n.ready()
        #expect(rd.readStates == [ReadState(index: 1, context: [5])])
        #expect(rd.messages.isEmpty && rd.immediateMessages.isEmpty)
    }

    @Test("a read without a known leader is refused with .noLeader; reads die with a lost leadership")
    func noLeader() throws {
        var c = try TestCluster()
        #expect(throws: ProposalError.noLeader) { try c.nodes[2]!.readIndex(context: [1]) }
        try c.elect(1)
        c.drop = { $0.from == 2 || $0.from == 3 }
        try c.nodes[1]!.readIndex(context: [1])
        try c.stabilize()
        c.nodes[1]!.step(Message(type: .appendResponse, from: 2, to: 1, term: 9))   // deposed
        #expect(c.nodes[1]!.role == .follower)
        c.drop = { _ in false }
        try c.stabilize()
        #expect(c.readStates[1, default: []].isEmpty)
    }
}
