import Testing
import Raft

@Suite("Messages before/after the local write, inflight limits")
struct MessageSplitTests {
    @Test("the leader's appends and heartbeats may go before its own write; the entries are counted only after advance")
    func leaderAppendsGoEarly() throws {
        var c = try TestCluster()
        try c.elect(1)
        try c.propose(1, [1])
        var n = c.nodes[1]!
        let rd = n.ready()
        #expect(rd.entries.map(\.data) == [[1]])
        #expect(rd.immediateMessages.filter { $0.type == .append }.count == 2)
        #expect(rd.messages.isEmpty)
        // Both followers acknowledge before the leader's own write is durable: a quorum
        // without the leader's copy, so the entry commits before advance.
        n.step(Message(type: .appendResponse, from: 2, to: 1, term: 1, index: 2))
        #expect(n.commitIndex == 1)   // 1 follower + not-yet-durable leader copy: no quorum
        n.step(Message(type: .appendResponse, from: 3, to: 1, term: 1, index: 2))
        #expect(n.commitIndex == 2)   // two followers form a quorum on their own
        n.advance()
        #expect(n.commitIndex == 2)
    }

    @Test("votes, vote answers and append acknowledgements wait for the write; pre-votes and heartbeat answers do not")
    func classification() throws {
        var c = try TestCluster { $0.preVote = false }
        var cand = c.nodes[1]!
        while cand.role != .candidate { cand.tick() }
        let rd = cand.ready()
        #expect(rd.hardState?.vote == 1)
        #expect(rd.messages.map(\.type) == [.vote, .vote])     // after the vote for itself is durable
        #expect(rd.immediateMessages.isEmpty)

        var f = c.nodes[2]!
        f.step(Message(type: .vote, from: 1, to: 2, term: 1))
        f.step(Message(type: .append, from: 1, to: 2, term: 1, logTerm: 0, index: 0,
                       entries: [Entry(term: 1, index: 1)]))
        f.step(Message(type: .heartbeat, from: 1, to: 2, term: 1, context: [1]))
        f.step(Message(type: .readIndex, from: 3, to: 2, context: [2]))   // forwarded on
        let frd = f.ready()
        #expect(frd.messages.map(\.type) == [.voteResponse, .appendResponse])
        #expect(frd.immediateMessages.map(\.type) == [.heartbeatResponse, .readIndex])

        var p = try TestCluster().nodes[3]!
        while p.role != .preCandidate { p.tick() }
        let prd = p.ready()
        #expect(prd.immediateMessages.map(\.type) == [.preVote, .preVote])
        var q = c.nodes[3]!
        q.step(Message(type: .preVote, from: 1, to: 3, term: 1))
        #expect(q.ready().messages.map(\.type) == [.preVoteResponse])
        c.nodes[1] = cand
    }

    @Test("the inflight window closes on bytes as well as on message count")
    func inflightBytes() throws {
        var c = try TestCluster {
            $0.maxSizePerMsg = 200; $0.maxInflightMsgs = 10; $0.maxInflightBytes = 300
        }
        try c.elect(1)
        try c.stabilize()
        c.sent.removeAll()
        c.drop = { $0.from != 1 }   // followers' answers are lost
        for _ in 0..<30 { try c.propose(1, [UInt8](repeating: 9, count: 84)) }  // 100 bytes each
        try c.handleAllReadies()
        let toTwo = c.sent.filter { $0.type == .append && $0.to == 2 }
        #expect(toTwo.count == 2)          // 200 + 200 bytes >= 300: closed after the second
        // An acknowledgement frees bytes and reopens the window.
        c.drop = { _ in false }
        c.nodes[1]!.step(Message(type: .appendResponse, from: 2, to: 1, term: 1, index: 3))
        try c.handleAllReadies()
        #expect(c.sent.filter { $0.type == .append && $0.to == 2 }.count == 3)
    }
}
