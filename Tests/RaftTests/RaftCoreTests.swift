import Testing
import Raft

@Suite("Raft core")
struct RaftCoreTests {
    @Test("§5.2 a candidate with votes from a majority becomes leader")
    func electionWins() throws {
        var c = try TestCluster()
        try c.elect(1)
        #expect(c.nodes[1]!.role == .leader)
        #expect(c.nodes[1]!.term == 1)
        for id: NodeID in [2, 3] {
            #expect(c.nodes[id]!.role == .follower)
            #expect(c.nodes[id]!.leader == 1)
            #expect(c.nodes[id]!.term == 1)
            #expect(c.disks[id]!.hardState.vote == 1)
        }
        // The leader's no-op of term 1 is committed; the next heartbeat tells everyone.
        try c.tick(1)
        try c.stabilize()
        for id: NodeID in [1, 2, 3] {
            #expect(c.applied[id]! == [Entry(term: 1, index: 1)])
        }
    }

    @Test("§5.2 a candidate without a majority does not become leader and its election times out again")
    func electionLoses() throws {
        var c = try TestCluster { $0.preVote = false }
        c.drop = { $0.from == 1 || $0.to == 1 }
        try c.elect(1)
        #expect(c.nodes[1]!.role == .candidate)
        #expect(c.nodes[1]!.term == 1)
        try c.tick(1, times: 20)
        #expect(c.nodes[1]!.role == .candidate)
        #expect(c.nodes[1]!.term >= 2)
    }

    @Test("§5.2 a node grants at most one vote per term")
    func oneVotePerTerm() throws {
        var c = try TestCluster()
        var n = c.nodes[3]!
        n.step(Message(type: .vote, from: 1, to: 3, term: 1))
        n.step(Message(type: .vote, from: 2, to: 3, term: 1))
        let rd = n.ready()
        let resp = rd.messages.filter { $0.type == .voteResponse }
        #expect(resp.count == 2)
        #expect(resp.first { $0.to == 1 }?.reject == false)
        #expect(resp.first { $0.to == 2 }?.reject == true)
        #expect(rd.hardState?.vote == 1)
        c.nodes[3] = n
    }

    @Test("§5.4.1 a vote is refused to a candidate whose log is less up to date")
    func upToDateCheck() throws {
        let disks = [NodeID(3): try storage(terms: [1, 2], hardTerm: 2)]
        let c = try TestCluster(disks: disks)
        var n = c.nodes[3]!
        n.step(Message(type: .vote, from: 1, to: 3, term: 3, logTerm: 1, index: 5))
        n.step(Message(type: .vote, from: 2, to: 3, term: 3, logTerm: 2, index: 1))
        let resp = n.ready().messages
        #expect(resp.allSatisfy { $0.type == .voteResponse && $0.reject })
        #expect(n.term == 3)
        #expect(n.vote == noNode)
        var n2 = c.nodes[3]!
        n2.step(Message(type: .vote, from: 2, to: 3, term: 3, logTerm: 2, index: 2))
        #expect(n2.ready().messages.first?.reject == false)
    }

    @Test("pre-vote: an isolated node does not raise its term and does not disrupt the leader on rejoining")
    func preVoteIsolation() throws {
        var c = try TestCluster()
        try c.elect(1)
        var isolated = true
        c.drop = { m in isolated && (m.from == 3 || m.to == 3) }
        try c.tick(3, times: 100)
        #expect(c.nodes[3]!.term == 1)
        #expect(c.nodes[3]!.role == .preCandidate)
        isolated = false
        c.drop = { _ in false }
        try c.tick(1)          // leader heartbeat reaches 3 again
        try c.stabilize()
        #expect(c.nodes[1]!.role == .leader)
        #expect(c.nodes[1]!.term == 1)
        #expect(c.nodes[3]!.role == .follower)
        #expect(c.nodes[3]!.leader == 1)
    }

    @Test("without pre-vote an isolated node raises its term (control for the pre-vote test)")
    func noPreVoteRaisesTerm() throws {
        var c = try TestCluster { $0.preVote = false }
        try c.elect(1)
        c.drop = { m in m.from == 3 || m.to == 3 }
        try c.tick(3, times: 100)
        #expect(c.nodes[3]!.term > 1)
        #expect(c.nodes[3]!.role == .candidate)
    }

    @Test("leader stickiness: a follower in its lease ignores a vote request of a higher term")
    func stickiness() throws {
        var c = try TestCluster()
        try c.elect(1)
        var n = c.nodes[2]!
        n.step(Message(type: .vote, from: 3, to: 2, term: 5, logTerm: 1, index: 1))
        #expect(n.term == 1)
        #expect(n.leader == 1)
        #expect(!n.ready().messages.contains { $0.type == .voteResponse })
    }

    @Test("check-quorum: a leader that hears from no quorum for an election timeout steps down")
    func checkQuorum() throws {
        var c = try TestCluster()
        try c.elect(1)
        c.drop = { m in m.from == 1 || m.to == 1 }
        try c.tick(1, times: 9)
        #expect(c.nodes[1]!.role == .leader)
        try c.tick(1, times: 25)
        #expect(c.nodes[1]!.role != .leader)
        #expect(c.nodes[1]!.leader != 1)
    }

    @Test("§5.3 a follower with a conflicting suffix is repaired")
    func conflictRepair() throws {
        let disks: [NodeID: MemoryStorage] = [
            1: try storage(terms: [1, 1, 4], hardTerm: 4),
            2: try storage(terms: [1, 1, 4], hardTerm: 4),
            3: try storage(terms: [1, 1, 3, 3, 3, 3, 3], hardTerm: 3),
        ]
        var c = try TestCluster(disks: disks)
        try c.elect(1)
        #expect(c.nodes[1]!.role == .leader)
        #expect(c.nodes[1]!.term == 5)
        let leaderLog = c.log(1)
        #expect(leaderLog.map(\.term) == [1, 1, 4, 5])
        #expect(c.log(3) == leaderLog)
        #expect(c.disks[3]!.entries(1, c.disks[3]!.lastIndex) == leaderLog)
        #expect(c.nodes[3]!.commitIndex == 4)
        // The conflict hint lets the leader skip the whole term-3 suffix in one rejection.
        let rejections = c.sent.filter { $0.type == .appendResponse && $0.reject && $0.from == 3 }
        #expect(rejections.count == 1)
    }

    @Test("§5.3 a follower that is missing entries is brought up to date")
    func laggingFollower() throws {
        var c = try TestCluster()
        try c.elect(1)
        c.drop = { $0.to == 3 }
        for i in 0..<5 { try c.propose(1, [UInt8(i)]); try c.stabilize() }
        #expect(c.nodes[1]!.commitIndex == 6)
        #expect(c.nodes[3]!.lastIndex == 1)
        c.drop = { _ in false }
        try c.tick(1)
        try c.stabilize()
        #expect(c.log(3) == c.log(1))
        #expect(c.applied[3]!.count == 6)
    }

    @Test("§5.4.2 an old-term entry is not committed by counting replicas")
    func oldTermNotCommittedByCounting() throws {
        let disks: [NodeID: MemoryStorage] = [
            1: try storage(terms: [1, 1], hardTerm: 1, commit: 1),
            2: try storage(terms: [1], hardTerm: 1, commit: 1),
            3: try storage(terms: [1], hardTerm: 1, commit: 1),
        ]
        let c = try TestCluster(disks: disks)
        var n = c.nodes[1]!
        while n.role == .follower { n.tick() }
        n.step(Message(type: .preVoteResponse, from: 2, to: 1, term: 2))
        n.step(Message(type: .voteResponse, from: 2, to: 1, term: 2))
        #expect(n.role == .leader)
        _ = n.ready(); n.advance()       // the leader's log [t1, t1, t2 no-op] is durable
        #expect(n.lastIndex == 3)
        #expect(n.commitIndex == 1)
        // A majority (1 and 2) now stores index 2, which is of term 1: not committed.
        n.step(Message(type: .appendResponse, from: 2, to: 1, term: 2, index: 2))
        #expect(n.commitIndex == 1)
        // Once the current-term entry is on a majority, it and everything before it commit.
        n.step(Message(type: .appendResponse, from: 2, to: 1, term: 2, index: 3))
        #expect(n.commitIndex == 3)
    }

    @Test("§5.4.2 Figure 8: an old-term entry on a majority is not committed and can be safely overwritten")
    func figureEight() throws {
        // (b)/(c) of Figure 8: S1 led term 2 and stored index 2 (term 2) on S1, S2; S5 led term 3
        // and stored index 2 (term 3) only on itself.
        let disks: [NodeID: MemoryStorage] = [
            1: try storage(terms: [1, 2], hardTerm: 3, commit: 1),
            2: try storage(terms: [1, 2], hardTerm: 3, commit: 1),
            3: try storage(terms: [1], hardTerm: 3, commit: 1),
            4: try storage(terms: [1], hardTerm: 3, commit: 1),
            5: try storage(terms: [1, 3], hardTerm: 3, commit: 1),
        ]
        var c = try TestCluster(ids: [1, 2, 3, 4, 5], disks: disks) { $0.checkQuorum = false }
        // S1 wins term 4 and gets index 2 (term 2) onto S3, but its term-4 entry reaches no one.
        c.transform = { m in
            if m.to == 4 || m.to == 5 { return nil }
            var m = m
            if m.type == .append { m.entries.removeAll { $0.index >= 3 } }
            return m
        }
        try c.elect(1)
        #expect(c.nodes[1]!.role == .leader)
        #expect(c.nodes[1]!.term == 4)
        #expect(c.nodes[3]!.entry(at: 2)?.term == 2)   // index 2 (term 2) is on S1, S2, S3
        #expect(c.nodes[1]!.commitIndex == 1)          // ...but not committed by counting
        // (d): S1 crashes; S5 is elected with votes from S2, S3, S4 and overwrites index 2.
        c.transform = { $0.from == 1 || $0.to == 1 ? nil : $0 }
        // S5's first pre-vote (for term 4) is refused and teaches it term 4; the next one wins.
        for _ in 0..<3 where c.nodes[5]!.role != .leader { try c.elect(5) }
        #expect(c.nodes[5]!.role == .leader)
        for id: NodeID in [2, 3, 4, 5] { #expect(c.nodes[id]!.entry(at: 2)?.term == 3) }
        // No node ever applied the overwritten entry.
        for id: NodeID in [1, 2, 3, 4, 5] {
            #expect(!c.applied[id]!.contains { $0.index == 2 && $0.term == 2 })
        }
        #expect(c.applied[5]!.contains { $0.index == 2 && $0.term == 3 })
    }

    @Test("a stale leader steps down when a follower answers with a higher term")
    func staleLeaderStepsDown() throws {
        var c = try TestCluster()
        try c.elect(1)
        var n = c.nodes[1]!
        n.step(Message(type: .appendResponse, from: 2, to: 1, term: 7))
        #expect(n.role == .follower)
        #expect(n.term == 7)
        #expect(n.leader == noNode)
        #expect(throws: ProposalError.noLeader) { try n.propose([1]) }
    }

    @Test("a follower answers an append of an older term with its own term and ignores its entries")
    func oldTermAppendRefused() throws {
        var c = try TestCluster()
        try c.elect(1)
        var n = c.nodes[2]!
        _ = n.ready(); n.advance()
        n.step(Message(type: .append, from: 3, to: 2, term: 0, logTerm: 0, index: 0,
                       entries: [Entry(term: 0, index: 1, data: [9])]))
        let out = n.ready().messages
        #expect(out.count == 1)
        #expect(out.first?.type == .appendResponse)
        #expect(out.first?.term == 1)
        #expect(n.entry(at: 1)?.term == 1)
    }

    @Test("duplicated and reordered append responses do not move a follower's progress backwards")
    func staleResponses() throws {
        var c = try TestCluster()
        try c.elect(1)
        for i in 0..<3 { try c.propose(1, [UInt8(i)]); try c.stabilize() }
        var n = c.nodes[1]!
        #expect(n.commitIndex == 4)
        // Replays of old acknowledgements and an old rejection.
        n.step(Message(type: .appendResponse, from: 2, to: 1, term: 1, index: 1))
        n.step(Message(type: .appendResponse, from: 2, to: 1, term: 1, index: 2, reject: true, rejectHint: 0))
        #expect(n.commitIndex == 4)
        try n.propose([99])
        let appends = n.ready().immediateMessages.filter { $0.type == .append && $0.to == 2 }
        #expect(appends.count == 1)
        #expect(appends.first?.index == 4)   // still replicating from index 5 on
    }

    @Test("§5.3 a follower commits only up to the last entry an append verified, not a stale suffix")
    func commitOnlyVerifiedPrefix() throws {
        let disks = [NodeID(2): try storage(terms: [1, 1, 2, 2], hardTerm: 2)]
        let c = try TestCluster(disks: disks)
        var n = c.nodes[2]!
        // Leader 1 of term 3 (whose log differs from index 3 on) sends index 2 with commit 4.
        n.step(Message(type: .append, from: 1, to: 2, term: 3, logTerm: 1, index: 1,
                       entries: [Entry(term: 1, index: 2, data: [1])], commit: 4))
        #expect(n.commitIndex == 2)
        let rd = n.ready()
        #expect(rd.committedEntries.map(\.index) == [1, 2])
        #expect(rd.messages.first?.index == 2)
        #expect(n.entry(at: 3)?.term == 2)   // kept until a conflicting entry arrives
    }

    @Test("the leader counts its own copy toward commit only after the host made it durable")
    func leaderCountsOwnVoteAfterPersist() throws {
        var c = try TestCluster(ids: [1])
        try c.elect(1)
        #expect(c.nodes[1]!.role == .leader)
        try c.propose(1, [7])
        var n = c.nodes[1]!
        let rd = n.ready()
        #expect(rd.entries.map(\.data) == [[7]])
        #expect(n.commitIndex == 1)          // not durable yet
        n.advance()
        #expect(n.commitIndex == 2)
        #expect(n.ready().committedEntries.map(\.data) == [[7]])
    }

    @Test("batching: proposals between two Readys become one append per follower")
    func batching() throws {
        var c = try TestCluster()
        try c.elect(1)
        c.sent.removeAll()
        for i in 0..<50 { try c.propose(1, [UInt8(i)]) }
        var n = c.nodes[1]!
        let rd = n.ready()
        #expect(rd.entries.count == 50)
        let appends = rd.immediateMessages.filter { $0.type == .append }
        #expect(appends.count == 2)
        #expect(appends.allSatisfy { $0.entries.count == 50 })
    }

    @Test("an append carries at most maxSizePerMsg bytes of entries, and replication pipelines them")
    func sizeLimitAndPipelining() throws {
        var c = try TestCluster { $0.maxSizePerMsg = 200; $0.maxInflightMsgs = 4 }
        try c.elect(1)
        try c.stabilize()
        c.sent.removeAll()
        let hold = true
        c.drop = { m in hold && m.from != 1 }   // followers' answers are lost
        for _ in 0..<30 { try c.propose(1, [UInt8](repeating: 9, count: 84)) }  // 100 bytes each
        try c.handleAllReadies()
        let toTwo = c.sent.filter { $0.type == .append && $0.to == 2 }
        #expect(toTwo.count == 4)                       // the inflight window
        #expect(toTwo.allSatisfy { $0.entries.count == 2 })  // 2 x 100 bytes fit in 200
        #expect(toTwo.map(\.index) == [1, 3, 5, 7])     // sent back to back, no waiting
    }

    @Test("a probe-state follower gets one append at a time until it answers")
    func probeSendsOne() throws {
        var c = try TestCluster()
        c.drop = { $0.from == 3 }   // 3 receives but its answers are lost
        try c.elect(1)
        #expect(c.nodes[1]!.role == .leader)
        for i in 0..<5 { try c.propose(1, [UInt8(i)]); try c.stabilize() }
        let toThree = c.sent.filter { $0.type == .append && $0.to == 3 }
        let toTwo = c.sent.filter { $0.type == .append && $0.to == 2 }
        #expect(toThree.count == 1)      // the initial probe; paused since
        #expect(toTwo.count >= 6)        // 2 answered, so it moved to replicate
        #expect(c.nodes[1]!.commitIndex == 6)
    }

    @Test("proposals are refused with .noLeader without a leader, and with .tooLarge above the limit")
    func proposalDropping() throws {
        var c = try TestCluster { $0.maxProposalBytes = 10 }
        #expect(throws: ProposalError.noLeader) { try c.nodes[1]!.propose([1]) }
        try c.elect(1)
        #expect(throws: ProposalError.tooLarge(size: 11, limit: 10)) {
            try c.nodes[1]!.propose([UInt8](repeating: 0, count: 11))
        }
    }

    @Test("a follower forwards proposals to the leader, which commits them")
    func forwarding() throws {
        var c = try TestCluster()
        try c.elect(1)
        try c.propose(2, [42])
        try c.stabilize()
        for id: NodeID in [1, 2, 3] {
            #expect(c.applied[id]!.last?.data == [42])
        }
    }

    @Test("a restarted node recovers term, vote and log from storage")
    func restart() throws {
        var c = try TestCluster()
        try c.elect(1)
        try c.propose(1, [5]); try c.stabilize()
        var cfg = Config(id: 2, peers: [1, 2, 3], seed: 9)
        cfg.applied = 0
        let restarted = try RaftNode(config: cfg, storage: c.disks[2]!)
        #expect(restarted.term == 1)
        #expect(restarted.vote == 1)
        #expect(restarted.lastIndex == 2)
        #expect(restarted.entry(at: 2)?.data == [5])
    }

    @Test("invalid configurations throw typed errors")
    func configErrors() {
        #expect(throws: ConfigError.selfNotInPeers) {
            _ = try RaftNode(config: Config(id: 4, peers: [1, 2, 3], seed: 0), storage: MemoryStorage())
        }
        #expect(throws: ConfigError.invalidID) {
            _ = try RaftNode(config: Config(id: 0, peers: [0], seed: 0), storage: MemoryStorage())
        }
        #expect(throws: ConfigError.duplicatePeer(2)) {
            _ = try RaftNode(config: Config(id: 1, peers: [1, 2, 2], seed: 0), storage: MemoryStorage())
        }
    }

    @Test("MemoryStorage rejects a gap and truncates on overwrite")
    func memoryStorage() throws {
        var s = MemoryStorage()
        #expect(throws: StorageError.gap(lastIndex: 0, first: 2)) { try s.append([Entry(term: 1, index: 2)]) }
        try s.append([Entry(term: 1, index: 1), Entry(term: 1, index: 2), Entry(term: 1, index: 3)])
        try s.append([Entry(term: 2, index: 2)])
        #expect(s.lastIndex == 2)
        #expect(s.term(at: 2) == 2)
    }
}
