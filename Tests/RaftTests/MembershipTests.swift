import Testing
import Raft

@Suite("Learners, membership change, leadership transfer, status")
struct MembershipTests {
    static func cluster() throws -> TestCluster {
        var c = try TestCluster()
        try c.elect(1)
        try c.tick(1); try c.stabilize()
        return c
    }

    /// The cluster plus node 4, started as a learner and added with `addLearner`.
    static func clusterWithLearner() throws -> TestCluster {
        var c = try cluster()
        c.configure = { $0.learners = [4] }
        try c.start(4, peers: [1, 2, 3])
        try c.nodes[1]!.proposeConfChange(ConfChange(type: .addLearner, nodeID: 4))
        try c.stabilize(); try c.tick(1); try c.stabilize()
        return c
    }

    @Test("ConfChange round-trips through its entry encoding; bad bytes throw typed errors")
    func encoding() throws {
        for t in ConfChangeType.allCases {
            let cc = ConfChange(type: t, nodeID: 0x0102_0304_0506_0708, context: [9, 8])
            #expect(try ConfChange(decoding: cc.encoded()) == cc)
        }
        #expect(throws: ConfChangeDecodingError.truncated(3)) { _ = try ConfChange(decoding: [0, 1, 2]) }
        #expect(throws: ConfChangeDecodingError.unknownType(7)) {
            _ = try ConfChange(decoding: [7, 0, 0, 0, 0, 0, 0, 0, 0])
        }
    }

    @Test("a learner joins (started with the membership including itself), receives the log, never votes, campaigns or counts")
    func learner() throws {
        var c = try Self.clusterWithLearner()
        #expect(c.nodes[1]!.confState == ConfState(voters: [1, 2, 3], learners: [4]))
        #expect(c.nodes[4]!.confState == ConfState(voters: [1, 2, 3], learners: [4]))
        #expect(c.log(4) == c.log(1))
        #expect(c.nodes[1]!.status.progress[4]?.isLearner == true)
        // Only the learner acknowledges: nothing commits.
        c.drop = { $0.from == 2 || $0.from == 3 }
        try c.propose(1, [1]); try c.stabilize()
        #expect(c.nodes[4]!.lastIndex == c.nodes[1]!.lastIndex)
        #expect(c.nodes[1]!.commitIndex == c.nodes[1]!.lastIndex - 1)
        // The learner never campaigns, whatever happens to the leader.
        c.drop = { $0.from == 1 || $0.to == 1 }
        try c.tick(4, times: 100)
        #expect(c.nodes[4]!.role == .follower)
        #expect(!c.sent.contains { $0.from == 4 && ($0.type == .vote || $0.type == .preVote) })
    }

    @Test("a follower forwards a membership change (the leader checks it) and a learner can ask for a read")
    func forwardedChangeAndLearnerRead() throws {
        var c = try Self.cluster()
        try c.nodes[2]!.proposeConfChange(ConfChange(type: .removeNode, nodeID: 9))   // invalid: dropped by the leader
        try c.stabilize()
        #expect(c.nodes[1]!.confState == ConfState(voters: [1, 2, 3]))
        c.configure = { $0.learners = [4] }
        try c.start(4, peers: [1, 2, 3])
        try c.nodes[2]!.proposeConfChange(ConfChange(type: .addLearner, nodeID: 4))
        try c.stabilize(); try c.tick(1); try c.stabilize()
        #expect(c.nodes[1]!.confState == ConfState(voters: [1, 2, 3], learners: [4]))
        #expect(c.nodes[3]!.confState == ConfState(voters: [1, 2, 3], learners: [4]))
        try c.nodes[4]!.readIndex(context: [4])
        try c.stabilize()
        #expect(c.readStates[4] == [ReadState(index: c.nodes[1]!.commitIndex, context: [4])])
    }

    @Test("a promoted learner votes and counts toward the quorum")
    func promote() throws {
        var c = try Self.clusterWithLearner()
        try c.nodes[1]!.proposeConfChange(ConfChange(type: .promoteLearner, nodeID: 4))
        try c.stabilize(); try c.tick(1); try c.stabilize()
        for id: NodeID in [1, 2, 3, 4] { #expect(c.nodes[id]!.confState == ConfState(voters: [1, 2, 3, 4])) }
        // With 4 voters the quorum is 3: the leader plus 4 alone no longer commit.
        c.drop = { $0.from == 2 || $0.from == 3 }
        try c.propose(1, [1]); try c.stabilize()
        #expect(c.nodes[1]!.commitIndex < c.nodes[1]!.lastIndex)
        c.drop = { $0.from == 3 }
        try c.tick(1); try c.stabilize()
        #expect(c.nodes[1]!.commitIndex == c.nodes[1]!.lastIndex)
    }

    @Test("one membership change at a time; a new leader waits until its no-op is applied; invalid changes are refused")
    func oneAtATime() throws {
        var c = try Self.cluster()
        try c.nodes[1]!.proposeConfChange(ConfChange(type: .addLearner, nodeID: 4))
        #expect(throws: ProposalError.confChangePending) {
            try c.nodes[1]!.proposeConfChange(ConfChange(type: .addLearner, nodeID: 5))
        }
        try c.stabilize()
        try c.nodes[1]!.proposeConfChange(ConfChange(type: .addLearner, nodeID: 5))   // previous one applied
        try c.stabilize()
        #expect(throws: ProposalError.invalidConfChange("2 is already a voter")) {
            try c.nodes[1]!.proposeConfChange(ConfChange(type: .addNode, nodeID: 2))
        }
        #expect(throws: ProposalError.invalidConfChange("9 is not a member")) {
            try c.nodes[1]!.proposeConfChange(ConfChange(type: .removeNode, nodeID: 9))
        }
        #expect(throws: ProposalError.invalidConfChange("3 is not a learner")) {
            try c.nodes[1]!.proposeConfChange(ConfChange(type: .promoteLearner, nodeID: 3))
        }
        var two = try TestCluster(ids: [1, 2])
        try two.elect(1); try two.stabilize()
        #expect(throws: ProposalError.invalidConfChange("transfer leadership before removing the leader of a two-voter cluster")) {
            try two.nodes[1]!.proposeConfChange(ConfChange(type: .removeNode, nodeID: 1))
        }
        try two.nodes[1]!.proposeConfChange(ConfChange(type: .removeNode, nodeID: 2))
        var one = try TestCluster(ids: [1])
        try one.elect(1); try one.stabilize()
        #expect(throws: ProposalError.invalidConfChange("cannot remove the last voter")) {
            try one.nodes[1]!.proposeConfChange(ConfChange(type: .removeNode, nodeID: 1))
        }
        // A fresh leader whose no-op is not yet committed refuses membership changes.
        var d = try TestCluster()
        d.drop = { $0.type == .appendResponse }
        try d.elect(2)
        #expect(d.nodes[2]!.role == .leader)
        #expect(throws: ProposalError.confChangePending) {
            try d.nodes[2]!.proposeConfChange(ConfChange(type: .addLearner, nodeID: 4))
        }
    }

    @Test("a removed follower stops campaigning; the rest commit without it")
    func removeFollower() throws {
        var c = try Self.cluster()
        try c.nodes[1]!.proposeConfChange(ConfChange(type: .removeNode, nodeID: 3))
        try c.stabilize(); try c.tick(1); try c.stabilize()
        #expect(c.nodes[1]!.confState == ConfState(voters: [1, 2]))
        #expect(c.nodes[3]!.confState == ConfState(voters: [1, 2]))
        #expect(c.nodes[1]!.status.progress[3] == nil)
        #expect(c.nodes[3]!.isPromotable == false)
        c.sent.removeAll()
        try c.tick(3, times: 100)
        #expect(!c.sent.contains { $0.from == 3 })
        c.drop = { $0.to == 3 || $0.from == 3 }
        try c.propose(1, [5]); try c.stabilize()
        #expect(c.applied[2]!.last?.data == [5])
    }

    @Test("a leader that removes itself steps down and the remaining voters elect a new leader")
    func removeLeader() throws {
        var c = try Self.cluster()
        try c.nodes[1]!.proposeConfChange(ConfChange(type: .removeNode, nodeID: 1))
        try c.stabilize()
        #expect(c.nodes[1]!.role == .follower)
        #expect(c.nodes[1]!.confState.voters == [2, 3])
        try c.tick(1); try c.stabilize()         // propagate the commit to 2 and 3
        c.drop = { $0.to == 1 || $0.from == 1 }
        var rounds = 0
        while c.nodes[2]!.role != .leader && c.nodes[3]!.role != .leader && rounds < 100 {
            try c.tick(2); try c.tick(3); try c.stabilize(); rounds += 1
        }
        let l: NodeID = c.nodes[2]!.role == .leader ? 2 : 3
        #expect(c.nodes[l]!.role == .leader)
        try c.propose(l, [8]); try c.stabilize()
        #expect(c.applied[2]!.last?.data == [8])
        #expect(c.applied[3]!.last?.data == [8])
        #expect(c.nodes[1]!.role == .follower)   // never campaigns again
    }

    @Test("leadership transfer to an up-to-date voter: MsgTimeoutNow, new leader in the next term")
    func transfer() throws {
        var c = try Self.cluster()
        try c.nodes[1]!.transferLeadership(to: 2)
        try c.stabilize()
        #expect(c.sent.contains { $0.type == .timeoutNow && $0.to == 2 })
        #expect(c.nodes[2]!.role == .leader)
        #expect(c.nodes[2]!.term == 2)
        #expect(c.nodes[1]!.role == .follower)
        #expect(c.nodes[1]!.leader == 2)
        try c.propose(2, [3]); try c.stabilize()
        #expect(c.applied[1]!.last?.data == [3])
    }

    @Test("a transfer to a lagging voter catches it up first and refuses proposals meanwhile; it aborts after an election timeout")
    func transferLaggingAndAbort() throws {
        var c = try Self.cluster()
        c.drop = { $0.to == 3 }
        try c.propose(1, [1]); try c.stabilize()
        try c.nodes[1]!.transferLeadership(to: 3)
        #expect(throws: ProposalError.leadershipTransferInProgress) { try c.nodes[1]!.propose([2]) }
        #expect(c.nodes[1]!.status.leadTransferee == 3)
        try c.tick(1, times: 10)                  // an election timeout: abandoned
        #expect(c.nodes[1]!.role == .leader)
        #expect(c.nodes[1]!.leadTransferee == noNode)
        try c.nodes[1]!.propose([2])
        // Now with 3 reachable: it is caught up, then told to campaign.
        c.drop = { _ in false }
        try c.stabilize()
        try c.nodes[1]!.transferLeadership(to: 3)
        try c.stabilize()
        #expect(c.nodes[3]!.role == .leader)
        #expect(c.log(3).map(\.data).contains([2]))
    }

    @Test("a follower forwards a transfer request; non-voters and missing leaders are refused")
    func transferForwardAndErrors() throws {
        var c = try Self.cluster()
        try c.nodes[3]!.transferLeadership(to: 3)
        try c.stabilize()
        #expect(c.nodes[3]!.role == .leader)
        #expect(throws: TransferError.notVoter(9)) { try c.nodes[3]!.transferLeadership(to: 9) }
        var fresh = try TestCluster()
        #expect(throws: TransferError.noLeader) { try fresh.nodes[1]!.transferLeadership(to: 2) }
        _ = fresh.nodes[1]!.hasReady
    }

    @Test("leader stickiness does not block a transfer campaign, but does block an ordinary one")
    func transferBypassesLease() throws {
        var c = try Self.cluster()
        var f = c.nodes[2]!
        f.step(Message(type: .vote, from: 3, to: 2, term: 2, logTerm: 1, index: 1))
        #expect(f.term == 1)
        f.step(Message(type: .vote, from: 3, to: 2, term: 2, logTerm: 1, index: 1,
                       context: RaftNode.campaignTransferContext))
        #expect(f.term == 2)
        #expect(f.vote == 3)
        c.nodes[2] = f
    }

    @Test("node.status reports role, indexes, membership and per-member progress on the leader")
    func status() throws {
        var c = try Self.cluster()
        try c.propose(1, [1]); try c.stabilize()
        let s = c.nodes[1]!.status
        #expect(s.id == 1 && s.role == .leader && s.leader == 1 && s.term == 1)
        #expect(s.commit == 2 && s.applied == 2 && s.lastIndex == 2 && s.firstIndex == 1)
        #expect(s.confState == ConfState(voters: [1, 2, 3]))
        #expect(s.progress[2]?.match == 2)
        #expect(s.progress[2]?.state == .replicate)
        #expect(Set(s.progress.keys) == [1, 2, 3])
        let f = c.nodes[2]!.status
        #expect(f.role == .follower && f.leader == 1 && f.progress.isEmpty)
    }

    @Test("restart with Config.confState uses the host's membership over the initial peers")
    func restartWithConfState() throws {
        var c = try Self.cluster()
        try c.nodes[1]!.proposeConfChange(ConfChange(type: .addLearner, nodeID: 4))
        try c.stabilize()
        var cfg = Config(id: 2, peers: [1, 2, 3], seed: 2)
        cfg.confState = c.nodes[2]!.confState
        cfg.applied = c.nodes[2]!.appliedIndex
        let r = try RaftNode(config: cfg, storage: c.disks[2]!)
        #expect(r.confState == ConfState(voters: [1, 2, 3], learners: [4]))
    }
}
