/// A Raft node as a pure state machine. The host drives it with `tick()`, `step(_:)` and
/// `propose(_:)`, and drains its output with `ready()` / `advance()`.
///
/// Durability contract (the "synchronous storage" variant of etcd-io/raft): the host persists a
/// Ready's hard state and entries before sending its messages, and calls `advance()` once that
/// write is durable. The leader sends its new entries to followers in the same Ready that
/// persists them (parallel write), but counts its own copy toward commit only after `advance()`.
public struct RaftNode: Sendable {
    public let id: NodeID
    let config: Config
    /// Current membership (sorted). Changes only through `applyConfChange` or a snapshot.
    private(set) var voters: [NodeID]
    private(set) var learners: [NodeID]
    var quorum: Int { voters.count / 2 + 1 }

    public private(set) var term: UInt64 = 0
    public private(set) var vote: NodeID = noNode
    public private(set) var leader: NodeID = noNode
    public private(set) var role: Role = .follower
    public private(set) var commitIndex: UInt64 = 0

    /// log[k] has index offset + k; log[0] is a sentinel for the last compacted (or snapshot)
    /// entry, index 0 / term 0 when nothing was compacted.
    private var log: [Entry] = [Entry(term: 0, index: 0)]
    private var offset: UInt64 { log[0].index }
    /// The latest snapshot (made by the host or received), sent to followers that need
    /// compacted entries.
    private var latestSnapshot: Snapshot?
    /// A snapshot received from the leader and not yet handed to the host.
    private var pendingSnapshot: Snapshot?
    /// First index not yet handed to the host for persistence.
    private var unstableFrom: UInt64 = 1
    /// Last index the host has made durable (advance()).
    private var persistedIndex: UInt64 = 0
    /// Last entry handed out in the latest Ready, made durable at the next advance().
    private var pendingPersist: (index: UInt64, term: UInt64)?
    /// Highest index handed to the host for applying.
    public private(set) var appliedIndex: UInt64

    private var electionElapsed = 0
    private var heartbeatElapsed = 0
    private var randomizedElectionTimeout = 0
    private var rng: SplitMix64

    private var votes: [NodeID: Bool] = [:]
    private var progress: [NodeID: Progress] = [:]
    /// Proposals accepted since the last Ready; they become one append at the next Ready.
    private var proposalBuffer: [Entry] = []
    /// Index of the latest membership change appended by this leader (one change at a time:
    /// none is accepted until it is handed out and applied).
    private var pendingConfIndex: UInt64 = 0
    private var confChangesHandedOut = 0
    private var confChangesApplied = 0
    /// Target of a leadership transfer in progress.
    public private(set) var leadTransferee: NodeID = noNode
    /// Messages to send after the Ready's write is durable, and those that may go at once.
    private var msgs: [Message] = []
    private var immediateMsgs: [Message] = []
    private var prevHardState: HardState
    private var prevSoftState: SoftState

    // ReadIndex. A request waits in `pendingReads` until the next Ready (so every read queued
    // meanwhile shares one heartbeat round) and until the leader has committed an entry of its
    // term; then a round records the commit index and is confirmed by a quorum of heartbeat
    // acknowledgements carrying its id. An acknowledgement of round n also confirms rounds < n.
    private struct ReadRequest { var context: [UInt8]; var from: NodeID }
    private struct ReadRound { var id: UInt64; var index: UInt64; var requests: [ReadRequest]; var acks: Set<NodeID> }
    private var pendingReads: [ReadRequest] = []
    private var readRounds: [ReadRound] = []
    private var readRoundSeq: UInt64 = 0
    private var readStates: [ReadState] = []

    /// Starts (or restarts) a node from durable state.
    public init(config: Config, storage: some LogStorage) throws(ConfigError) {
        try config.validate()
        self.id = config.id
        self.config = config
        self.rng = SplitMix64(seed: config.seed ^ (config.id &* 0x9E37_79B9_7F4A_7C15))
        let hs = storage.hardState
        let last = storage.lastIndex
        let snap = storage.snapshot
        let snapIndex = snap?.metadata.index ?? 0
        if storage.firstIndex > snapIndex + 1 || last < snapIndex {
            throw .inconsistentStorage(firstIndex: storage.firstIndex, snapshotIndex: snapIndex)
        }
        let conf = config.confState ?? snap?.metadata.confState
            ?? ConfState(voters: config.peers, learners: config.learners)
        self.voters = conf.voters.sorted()
        self.learners = conf.learners.sorted()
        if let snap {
            log = [Entry(term: snap.metadata.term, index: snapIndex)]
            latestSnapshot = snap
        }
        if last > snapIndex { log.append(contentsOf: storage.entries(snapIndex + 1, last)) }
        term = hs.term
        vote = hs.vote
        commitIndex = max(min(hs.commit, last), snapIndex)
        unstableFrom = last + 1
        persistedIndex = last
        appliedIndex = max(min(config.applied, commitIndex), snapIndex)
        prevHardState = hs
        prevSoftState = SoftState(leader: noNode, role: .follower)
        resetRandomizedElectionTimeout()
    }

    // MARK: - Log accessors

    public var lastIndex: UInt64 { offset + UInt64(log.count - 1) }
    /// The first index still in the in-memory log (earlier ones are compacted).
    public var firstIndex: UInt64 { offset + 1 }
    /// The membership as last applied (or restored from a snapshot).
    public var confState: ConfState { ConfState(voters: voters, learners: learners) }
    public var lastTerm: UInt64 { log[log.count - 1].term }
    public var hardState: HardState { HardState(term: term, vote: vote, commit: commitIndex) }
    public var softState: SoftState { SoftState(leader: leader, role: role) }

    /// The term of the entry at `index`; nil when compacted or beyond the log.
    public func term(at index: UInt64) -> UInt64? {
        index >= offset && index <= lastIndex ? log[Int(index - offset)].term : nil
    }

    /// The entry at `index`; nil when compacted or beyond the log.
    public func entry(at index: UInt64) -> Entry? {
        index > offset && index <= lastIndex ? log[Int(index - offset)] : nil
    }

    private func matchTerm(_ index: UInt64, _ t: UInt64) -> Bool { term(at: index) == t }

    private func isUpToDate(lastIndex li: UInt64, lastTerm lt: UInt64) -> Bool {
        lt > lastTerm || (lt == lastTerm && li >= lastIndex)
    }

    /// The largest index <= `index` whose term is <= `t` (etcd's findConflictByTerm).
    private func lastIndex(atOrBefore index: UInt64, withTermAtMost t: UInt64) -> UInt64 {
        var i = min(index, lastIndex)
        while i > offset, log[Int(i - offset)].term > t { i -= 1 }
        return i
    }

    private func slice(from lo: UInt64, maxBytes: Int) -> [Entry] {
        guard lo > offset, lo <= lastIndex else { return [] }
        var out: [Entry] = []
        var bytes = 0
        var i = Int(lo - offset)
        while i < log.count {
            let e = log[i]
            if !out.isEmpty && bytes + e.byteSize > maxBytes { break }
            out.append(e); bytes += e.byteSize; i += 1
        }
        return out
    }

    /// Appends or overwrites from `entries.first.index`; never touches committed entries.
    private mutating func appendToLog(_ entries: [Entry]) {
        guard let first = entries.first(where: { $0.index > offset }) else { return }
        let at = Int(first.index - offset)
        if at < log.count { log.removeSubrange(at...) }
        log.append(contentsOf: entries.drop { $0.index <= offset })
        unstableFrom = min(unstableFrom, first.index)
        if persistedIndex >= first.index { persistedIndex = first.index - 1 }
    }

    // MARK: - Host API

    /// Advances logical time by one tick.
    public mutating func tick() {
        switch role {
        case .leader: tickLeader()
        case .follower, .preCandidate, .candidate: tickElection()
        }
    }

    /// Proposes `data` for replication. On a follower the proposal is forwarded to the leader.
    /// Accepted proposals can still be lost if leadership changes before they commit.
    public mutating func propose(_ data: [UInt8]) throws(ProposalError) {
        if data.count > config.maxProposalBytes {
            throw .tooLarge(size: data.count, limit: config.maxProposalBytes)
        }
        try proposeEntry(Entry(term: 0, index: 0, data: data))
    }

    /// Proposes a membership change (one at a time: refused with `.confChangePending` until the
    /// previous one is applied). When the entry is committed, the host calls `applyConfChange`.
    public mutating func proposeConfChange(_ cc: ConfChange) throws(ProposalError) {
        if role == .leader { try checkConfChange(cc) }
        try proposeEntry(Entry(term: 0, index: 0, data: cc.encoded(), type: .confChange))
    }

    private mutating func proposeEntry(_ e: Entry) throws(ProposalError) {
        switch role {
        case .leader:
            if leadTransferee != noNode { throw .leadershipTransferInProgress }
            proposalBuffer.append(e)
        case .follower where leader != noNode:
            send(Message(type: .propose, from: id, to: leader, entries: [e]))
        default:
            throw .noLeader
        }
    }

    private var confChangePending: Bool {
        pendingConfIndex > appliedIndex || confChangesHandedOut > confChangesApplied
            || proposalBuffer.contains { $0.type == .confChange }
    }

    /// The leader's check of a membership change before appending it.
    private func checkConfChange(_ cc: ConfChange) throws(ProposalError) {
        if confChangePending { throw .confChangePending }
        let n = cc.nodeID
        if n == noNode { throw .invalidConfChange("node id 0") }
        switch cc.type {
        case .addNode:
            if voters.contains(n) { throw .invalidConfChange("\(n) is already a voter") }
        case .addLearner:
            if voters.contains(n) { throw .invalidConfChange("\(n) is a voter; remove it first") }
            if learners.contains(n) { throw .invalidConfChange("\(n) is already a learner") }
        case .promoteLearner:
            if !learners.contains(n) { throw .invalidConfChange("\(n) is not a learner") }
        case .removeNode:
            if !voters.contains(n) && !learners.contains(n) { throw .invalidConfChange("\(n) is not a member") }
            if voters == [n] { throw .invalidConfChange("cannot remove the last voter") }
            // The remaining voter could wait forever: if it has not learnt that the removal
            // committed, it needs the removed leader's vote, which a longer log withholds.
            if n == id && voters.count == 2 {
                throw .invalidConfChange("transfer leadership before removing the leader of a two-voter cluster")
            }
        }
    }

    /// Applies a committed membership change (deterministically on every node; a change that
    /// does not fit the membership is ignored) and returns the new membership.
    @discardableResult
    public mutating func applyConfChange(_ cc: ConfChange) -> ConfState {
        confChangesApplied += 1
        let n = cc.nodeID
        switch cc.type {
        case .addNode, .promoteLearner:
            if n != noNode && !voters.contains(n) {
                learners.removeAll { $0 == n }
                voters.append(n); voters.sort()
            }
        case .addLearner:
            if n != noNode && !voters.contains(n) && !learners.contains(n) {
                learners.append(n); learners.sort()
            }
        case .removeNode:
            if voters != [n] {
                voters.removeAll { $0 == n }
                learners.removeAll { $0 == n }
            }
        }
        if role == .leader { leaderMembershipChanged() }
        return confState
    }

    private var members: [NodeID] { voters + learners }
    /// Whether this node may campaign (a voter; learners and removed nodes never do).
    public var isPromotable: Bool { voters.contains(id) }

    private mutating func leaderMembershipChanged() {
        if !voters.contains(id) {
            // Removed (or no longer a voter): tell the others the commit index (which covers
            // the removal), then step down; the others elect a new leader. Until they have
            // applied the removal they may still need this node's vote: keep it running a while.
            for p in Array(progress.keys) where !members.contains(p) { progress[p] = nil }
            broadcastAppend()
            becomeFollower(term: term, leader: noNode)
            return
        }
        for p in Array(progress.keys) where !members.contains(p) { progress[p] = nil }
        for p in members {
            if progress[p] == nil {
                var pr = Progress(next: lastIndex + 1)
                pr.recentActive = true
                progress[p] = pr
            }
            progress[p]!.isLearner = learners.contains(p)
        }
        if leadTransferee != noNode && !voters.contains(leadTransferee) { leadTransferee = noNode }
        // A smaller quorum may already be reached for commits and pending reads.
        for r in readRounds.map(\.id) { ackReadRound(r, from: id) }
        if maybeCommit() { broadcastAppend() } else {
            for p in members where p != id { _ = sendAppend(to: p, sendIfEmpty: false) }
        }
    }

    // MARK: - Leadership transfer

    /// Asks the leader to hand leadership to voter `to`: once `to` has the whole log the leader
    /// sends it `.timeoutNow` and it campaigns at once. Proposals are refused meanwhile; the
    /// transfer is abandoned after an election timeout. On a follower the request is forwarded.
    public mutating func transferLeadership(to target: NodeID) throws(TransferError) {
        switch role {
        case .leader:
            if !voters.contains(target) { throw .notVoter(target) }
            startTransfer(to: target)
        case .follower where leader != noNode:
            send(Message(type: .transferLeader, from: target, to: leader))
        default:
            throw .noLeader
        }
    }

    private mutating func startTransfer(to target: NodeID) {
        guard target != id, voters.contains(target), leadTransferee != target else { return }
        leadTransferee = target
        electionElapsed = 0   // the transfer is abandoned after one election timeout
        if progress[target]!.match == lastIndex {
            send(Message(type: .timeoutNow, from: id, to: target, term: term))
        } else {
            _ = sendAppend(to: target, sendIfEmpty: true)
        }
    }

    /// Marks vote requests of a transfer campaign: voters answer them even within a leader lease.
    public static let campaignTransferContext: [UInt8] = Array("CampaignTransfer".utf8)

    public var status: Status {
        var ps: [NodeID: ProgressStatus] = [:]
        if role == .leader {
            for (p, pr) in progress {
                ps[p] = ProgressStatus(match: pr.match, next: pr.next, state: pr.state, isLearner: pr.isLearner,
                                       recentActive: pr.recentActive, inflights: pr.inflights.count,
                                       inflightBytes: pr.inflightBytes, pendingSnapshot: pr.pendingSnapshot)
            }
        }
        return Status(id: id, term: term, vote: vote, leader: leader, role: role, commit: commitIndex,
                      applied: appliedIndex, firstIndex: firstIndex, lastIndex: lastIndex, confState: confState,
                      leadTransferee: leadTransferee, progress: ps)
    }

    /// Requests a linearizable read point for `context` (e.g. a request id). The answer comes
    /// later as `Ready.readStates` (on this node, also when it is a follower: the request is
    /// forwarded to the leader). The leader answers once it has committed an entry of its term
    /// and a quorum acknowledged one heartbeat round started after the request; a single-voter
    /// leader answers at once. Requests are dropped without answer when leadership is lost or
    /// a message is lost: the host times out and retries.
    public mutating func readIndex(context: [UInt8]) throws(ProposalError) {
        switch role {
        case .leader:
            pendingReads.append(ReadRequest(context: context, from: id))
        case .follower where leader != noNode:
            send(Message(type: .readIndex, from: id, to: leader, context: context))
        default:
            throw .noLeader
        }
    }

    private var committedInCurrentTerm: Bool { term(at: commitIndex) == term }

    /// Starts one ReadIndex round for every pending read (called while building a Ready).
    private mutating func flushReads() {
        guard role == .leader, !pendingReads.isEmpty, committedInCurrentTerm else { return }
        let requests = pendingReads
        pendingReads = []
        if quorum == 1 {
            answer(requests, index: commitIndex)
            return
        }
        readRoundSeq += 1
        readRounds.append(ReadRound(id: readRoundSeq, index: commitIndex, requests: requests, acks: [id]))
        let ctx = encodeRound(readRoundSeq)
        for p in voters where p != id {
            send(Message(type: .heartbeat, from: id, to: p, term: term,
                         commit: min(progress[p]!.match, commitIndex), context: ctx))
        }
    }

    private mutating func answer(_ requests: [ReadRequest], index: UInt64) {
        for r in requests {
            if r.from == id {
                readStates.append(ReadState(index: index, context: r.context))
            } else {
                send(Message(type: .readIndexResponse, from: id, to: r.from, term: term, index: index,
                             context: r.context))
            }
        }
    }

    private func encodeRound(_ n: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: n >> ($0 * 8)) }
    }

    private func decodeRound(_ b: [UInt8]) -> UInt64? {
        guard b.count == 8 else { return nil }
        return b.reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// A heartbeat acknowledgement of ReadIndex round `round` from voter `from`.
    private mutating func ackReadRound(_ round: UInt64, from: NodeID) {
        guard let k = readRounds.firstIndex(where: { $0.id == round }) else { return }
        if voters.contains(from) { readRounds[k].acks.insert(from) }
        guard readRounds[k].acks.filter({ voters.contains($0) }).count >= quorum else { return }
        let done = readRounds[...k]
        readRounds.removeFirst(k + 1)
        for r in done { answer(r.requests, index: r.index) }
    }

    public var hasReady: Bool {
        (role == .leader && !proposalBuffer.isEmpty) || !msgs.isEmpty || !immediateMsgs.isEmpty
            || unstableFrom <= lastIndex
            || !readStates.isEmpty || pendingSnapshot != nil || (role == .leader && !pendingReads.isEmpty && committedInCurrentTerm)
            || hardState != prevHardState || softState != prevSoftState
            || min(commitIndex, lastIndex) > appliedIndex
    }

    /// Collects everything the host must do now. Call `advance()` after handling it.
    public mutating func ready() -> Ready {
        flushProposals()
        flushReads()
        let ss = softState
        let hs = hardState
        let snap = pendingSnapshot
        pendingSnapshot = nil
        if let snap { appliedIndex = max(appliedIndex, snap.metadata.index) }
        let unstable = unstableFrom <= lastIndex ? Array(log[Int(unstableFrom - offset)...]) : []
        let committed = commitIndex > appliedIndex
            ? Array(log[Int(appliedIndex + 1 - offset)...Int(commitIndex - offset)]) : []
        for e in committed where e.type == .confChange { confChangesHandedOut += 1 }
        let rd = Ready(softState: ss == prevSoftState ? nil : ss,
                       hardState: hs == prevHardState ? nil : hs,
                       entries: unstable, messages: msgs, committedEntries: committed,
                       readStates: readStates, snapshot: snap, immediateMessages: immediateMsgs)
        msgs = []
        immediateMsgs = []
        readStates = []
        prevSoftState = ss
        prevHardState = hs
        if let last = unstable.last {
            pendingPersist = (last.index, last.term)
            unstableFrom = last.index + 1
        } else if let snap {
            pendingPersist = (snap.metadata.index, snap.metadata.term)
        }
        appliedIndex = max(appliedIndex, commitIndex)
        return rd
    }

    /// Acknowledges that the last Ready was persisted, sent and applied.
    public mutating func advance() {
        if let p = pendingPersist {
            pendingPersist = nil
            if matchTerm(p.index, p.term), p.index < unstableFrom, p.index >= offset {
                persistedIndex = max(persistedIndex, p.index)
            }
        }
        if role == .leader, progress[id]?.maybeUpdate(persistedIndex) == true, maybeCommit() {
            broadcastAppend()
        }
    }

    private mutating func flushProposals() {
        guard role == .leader, !proposalBuffer.isEmpty else { return }
        var next = lastIndex + 1
        var batch: [Entry] = []
        batch.reserveCapacity(proposalBuffer.count)
        for var e in proposalBuffer {
            e.term = term; e.index = next
            if e.type == .confChange { pendingConfIndex = next }
            batch.append(e); next += 1
        }
        proposalBuffer.removeAll()
        appendToLog(batch)
        broadcastAppend()
    }

    // MARK: - Role changes

    private mutating func resetRandomizedElectionTimeout() {
        randomizedElectionTimeout = config.electionTick
            + Int(rng.next() % UInt64(config.electionTick))
    }

    private mutating func reset(term newTerm: UInt64) {
        if term != newTerm { term = newTerm; vote = noNode }
        leader = noNode
        electionElapsed = 0
        heartbeatElapsed = 0
        resetRandomizedElectionTimeout()
        votes = [:]
        proposalBuffer.removeAll()
        pendingReads.removeAll()
        readRounds.removeAll()
        leadTransferee = noNode
    }

    private mutating func becomeFollower(term t: UInt64, leader l: NodeID) {
        reset(term: t)
        leader = l
        role = .follower
    }

    private mutating func becomePreCandidate() {
        // Pre-vote changes neither the term nor the vote.
        votes = [:]
        leader = noNode
        role = .preCandidate
        electionElapsed = 0
        resetRandomizedElectionTimeout()
    }

    private mutating func becomeCandidate() {
        reset(term: term + 1)
        vote = id
        role = .candidate
    }

    private mutating func becomeLeader() {
        reset(term: term)
        leader = id
        role = .leader
        progress = [:]
        for p in members {
            var pr = Progress(next: lastIndex + 1)
            if p == id { pr.match = persistedIndex; pr.recentActive = true }
            pr.isLearner = learners.contains(p)
            progress[p] = pr
        }
        appendToLog([Entry(term: term, index: lastIndex + 1)])  // the no-op of this term
        // No membership change until everything up to the no-op is applied (which also means
        // an entry of this term is committed: the fix for single-server changes).
        pendingConfIndex = lastIndex
        broadcastAppend()
    }

    private mutating func campaign(preVote: Bool, transfer: Bool = false) {
        guard isPromotable else { return }
        let type: MessageType
        let voteTerm: UInt64
        if preVote {
            becomePreCandidate(); type = .preVote; voteTerm = term + 1
        } else {
            becomeCandidate(); type = .vote; voteTerm = term
        }
        if poll(id, granted: true) == .won {
            if preVote { campaign(preVote: false) } else { becomeLeader() }
            return
        }
        for p in voters where p != id {
            send(Message(type: type, from: id, to: p, term: voteTerm, logTerm: lastTerm,
                         index: lastIndex, context: transfer ? Self.campaignTransferContext : []))
        }
    }

    private enum VoteResult { case pending, won, lost }

    private mutating func poll(_ from: NodeID, granted: Bool) -> VoteResult {
        if votes[from] == nil, voters.contains(from) { votes[from] = granted }
        let yes = votes.values.filter { $0 }.count
        let no = votes.count - yes
        if yes >= quorum { return .won }
        if no >= quorum { return .lost }
        return .pending
    }

    // MARK: - Ticks

    private var inLease: Bool {
        config.checkQuorum && leader != noNode && electionElapsed < config.electionTick
    }

    private mutating func tickElection() {
        electionElapsed += 1
        if electionElapsed >= randomizedElectionTimeout && isPromotable {
            electionElapsed = 0
            campaign(preVote: config.preVote)
        }
    }

    private mutating func tickLeader() {
        heartbeatElapsed += 1
        electionElapsed += 1
        if electionElapsed >= config.electionTick {
            electionElapsed = 0
            leadTransferee = noNode   // a transfer that did not finish in an election timeout
            if config.checkQuorum {
                let active = voters.filter { $0 == id || progress[$0]?.recentActive == true }.count
                if active < quorum {
                    becomeFollower(term: term, leader: noNode)
                    return
                }
                for p in members where p != id { progress[p]!.recentActive = false }
            }
        }
        if heartbeatElapsed >= config.heartbeatTick {
            heartbeatElapsed = 0
            for p in members where p != id {
                let pr = progress[p]!
                send(Message(type: .heartbeat, from: id, to: p, term: term,
                             commit: min(pr.match, commitIndex)))
            }
        }
    }

    // MARK: - Messages

    /// Messages that vouch for local durable state wait for the write: a vote (this node
    /// counts its own vote at once), vote and pre-vote answers, append acknowledgements.
    private mutating func send(_ m: Message) {
        switch m.type {
        case .vote, .voteResponse, .preVoteResponse, .appendResponse: msgs.append(m)
        default: immediateMsgs.append(m)
        }
    }

    /// Feeds one received message to the node. Messages from non-members are ignored.
    public mutating func step(_ m: Message) {
        // Messages from non-members are processed (a node joining by snapshot does not know
        // its leader's membership yet); votes count only from voters, and a leader tracks
        // only members.
        guard m.to == id, m.from != id, m.from != noNode else { return }
        if m.type == .propose || m.type == .readIndex || m.type == .transferLeader {
            // Forwarded proposals and reads are term-less (term 0), like etcd's local MsgProp.
            switch role {
            case .leader: stepLeader(m)
            case .follower: stepFollower(m)
            case .preCandidate, .candidate: break
            }
            return
        }
        if m.term > term {
            switch m.type {
            case .preVote:
                if inLease { return }  // leader stickiness: a live leader is not disrupted
            case .vote where m.context == Self.campaignTransferContext:
                becomeFollower(term: m.term, leader: noNode)   // the leader asked for it
            case .preVoteResponse where !m.reject:
                break  // granted pre-votes carry the future term; never adopt it
            case .vote:
                if inLease { return }
                becomeFollower(term: m.term, leader: noNode)
            case .append, .heartbeat, .snapshot:
                becomeFollower(term: m.term, leader: m.from)
            default:
                becomeFollower(term: m.term, leader: noNode)
            }
        } else if m.term < term {
            switch m.type {
            case .append, .heartbeat:
                // A stale leader (e.g. after a partition healed): tell it the newer term so it
                // steps down; with check-quorum/pre-vote it would not otherwise learn it.
                send(Message(type: .appendResponse, from: id, to: m.from, term: term))
            case .preVote:
                send(Message(type: .preVoteResponse, from: id, to: m.from, term: term, reject: true))
            default:
                break
            }
            return
        }

        switch m.type {
        case .preVote, .vote:
            let canVote = vote == m.from || (vote == noNode && leader == noNode)
                || (m.type == .preVote && m.term > term)
            let grant = canVote && isUpToDate(lastIndex: m.index, lastTerm: m.logTerm)
            let respType: MessageType = m.type == .vote ? .voteResponse : .preVoteResponse
            if grant {
                send(Message(type: respType, from: id, to: m.from, term: m.term))
                if m.type == .vote { vote = m.from; electionElapsed = 0 }
            } else {
                send(Message(type: respType, from: id, to: m.from, term: term, reject: true))
            }
            return
        default:
            break
        }

        switch role {
        case .leader: stepLeader(m)
        case .preCandidate, .candidate: stepCandidate(m)
        case .follower: stepFollower(m)
        }
    }

    private mutating func stepFollower(_ m: Message) {
        switch m.type {
        case .append:
            electionElapsed = 0; leader = m.from
            handleAppend(m)
        case .heartbeat:
            electionElapsed = 0; leader = m.from
            commitIndex = max(commitIndex, min(m.commit, lastIndex))
            send(Message(type: .heartbeatResponse, from: id, to: m.from, term: term, context: m.context))
        case .propose, .readIndex:
            if leader != noNode {
                var f = m; f.from = id; f.to = leader; f.term = 0
                send(f)
            }
        case .transferLeader:
            if leader != noNode { var f = m; f.to = leader; send(f) }   // `from` stays the transferee
        case .timeoutNow:
            // Our leader hands over: campaign now, skipping pre-vote and the leases of others.
            if isPromotable { campaign(preVote: false, transfer: true) }
        case .readIndexResponse:
            readStates.append(ReadState(index: m.index, context: m.context))
        case .snapshot:
            electionElapsed = 0; leader = m.from
            handleSnapshot(m)
        default:
            break
        }
    }

    private mutating func stepCandidate(_ m: Message) {
        switch m.type {
        case .append, .heartbeat, .snapshot:
            // Someone won this term.
            becomeFollower(term: m.term, leader: m.from)
            stepFollower(m)
        case .preVoteResponse where role == .preCandidate,
             .voteResponse where role == .candidate:
            switch poll(m.from, granted: !m.reject) {
            case .won:
                if role == .preCandidate { campaign(preVote: false) } else { becomeLeader() }
            case .lost:
                becomeFollower(term: term, leader: noNode)
            case .pending:
                break
            }
        default:
            break
        }
    }

    private mutating func stepLeader(_ m: Message) {
        switch m.type {
        case .propose:
            if leadTransferee != noNode { return }
            for e in m.entries where e.data.count <= config.maxProposalBytes {
                if e.type == .confChange {
                    guard let cc = try? ConfChange(decoding: e.data), (try? checkConfChange(cc)) != nil else { continue }
                }
                proposalBuffer.append(Entry(term: 0, index: 0, data: e.data, type: e.type))
            }
        case .transferLeader:
            startTransfer(to: m.from)
        case .readIndex:
            pendingReads.append(ReadRequest(context: m.context, from: m.from))
        case .appendResponse:
            guard var pr = progress[m.from] else { return }
            pr.recentActive = true
            if m.reject {
                var hint = m.rejectHint
                if m.logTerm > 0 { hint = lastIndex(atOrBefore: hint, withTermAtMost: m.logTerm) }
                let changed = pr.maybeDecrTo(rejected: m.index, hint: hint)
                progress[m.from] = pr
                if changed { _ = sendAppend(to: m.from, sendIfEmpty: true) }
                return
            }
            let updated = pr.maybeUpdate(m.index)
            if pr.state == .snapshot {
                if pr.match >= pr.pendingSnapshot { pr.becomeProbe(); pr.becomeReplicate() }
            } else if updated || pr.state == .replicate {
                if pr.state == .probe { pr.becomeReplicate() } else { pr.freeInflights(upTo: m.index) }
            }
            progress[m.from] = pr
            if updated, maybeCommit() {
                broadcastAppend()
            } else {
                while sendAppend(to: m.from, sendIfEmpty: false) {}
            }
            if m.from == leadTransferee, progress[m.from]?.match == lastIndex {
                send(Message(type: .timeoutNow, from: id, to: m.from, term: term))
            }
        case .heartbeatResponse:
            guard var pr = progress[m.from] else { return }
            if let round = decodeRound(m.context) { ackReadRound(round, from: m.from) }
            pr.recentActive = true
            pr.probeSent = false
            // A full window may hold only lost appends: free one slot so the follower can
            // be probed again (an empty append reveals a gap by being rejected).
            if pr.state == .replicate
                && pr.inflightsFull(window: config.maxInflightMsgs, maxBytes: config.maxInflightBytes) {
                pr.freeFirstInflight()
            }
            progress[m.from] = pr
            if pr.match < lastIndex { _ = sendAppend(to: m.from, sendIfEmpty: true) }
        default:
            break
        }
    }

    private mutating func handleAppend(_ m: Message) {
        if m.index < commitIndex {
            send(Message(type: .appendResponse, from: id, to: m.from, term: term, index: commitIndex))
            return
        }
        if matchTerm(m.index, m.logTerm) {
            // Skip entries we already have; truncate at the first conflict.
            var k = 0
            while k < m.entries.count, matchTerm(m.entries[k].index, m.entries[k].term) { k += 1 }
            if k < m.entries.count {
                if m.entries[k].index <= commitIndex { return }  // never rewrite committed entries
                appendToLog(Array(m.entries[k...]))
            }
            let lastNew = m.index + UInt64(m.entries.count)
            commitIndex = max(commitIndex, min(m.commit, lastNew))
            send(Message(type: .appendResponse, from: id, to: m.from, term: term, index: lastNew))
        } else {
            let hint = lastIndex(atOrBefore: min(m.index, lastIndex), withTermAtMost: m.logTerm)
            send(Message(type: .appendResponse, from: id, to: m.from, term: term,
                         logTerm: term(at: hint) ?? 0, index: m.index, reject: true,
                         rejectHint: hint))
        }
    }

    private mutating func handleSnapshot(_ m: Message) {
        guard let snap = m.snapshot else { return }
        let si = snap.metadata.index
        if si <= commitIndex || matchTerm(si, snap.metadata.term) {
            // Nothing to restore: the log already holds the snapshot's last entry.
            commitIndex = max(commitIndex, si)
            send(Message(type: .appendResponse, from: id, to: m.from, term: term, index: commitIndex))
            return
        }
        log = [Entry(term: snap.metadata.term, index: si)]
        unstableFrom = si + 1
        persistedIndex = min(persistedIndex, si)
        pendingPersist = nil
        commitIndex = si
        voters = snap.metadata.confState.voters
        learners = snap.metadata.confState.learners
        latestSnapshot = snap
        pendingSnapshot = snap
        send(Message(type: .appendResponse, from: id, to: m.from, term: term, index: si))
    }

    // MARK: - Snapshots and compaction

    /// Makes a snapshot at `index` (already handed out for applying; the host has applied it)
    /// with the membership `confState` as of that index (default: the current one) and the
    /// host's state-machine `data`. The node keeps it to send to followers that need
    /// compacted entries. Store it too (`MemoryStorage.createSnapshot`).
    public mutating func createSnapshot(index: UInt64, confState: ConfState? = nil,
                                        data: [UInt8]) throws(CompactionError) -> Snapshot {
        if index > appliedIndex { throw .notApplied(index: index, applied: appliedIndex) }
        let current = latestSnapshot?.metadata.index ?? 0
        guard index > current, let t = term(at: index) else {
            throw .outOfDate(index: index, first: max(current + 1, firstIndex))
        }
        let snap = Snapshot(metadata: SnapshotMetadata(index: index, term: t, confState: confState ?? self.confState),
                            data: data)
        latestSnapshot = snap
        return snap
    }

    /// Drops the in-memory log up to and including `index`, which must be covered by the
    /// latest snapshot. Compact the storage to the same (or a lower) index.
    public mutating func compact(to index: UInt64) throws(CompactionError) {
        if index <= offset { throw .outOfDate(index: index, first: firstIndex) }
        let si = latestSnapshot?.metadata.index ?? 0
        if index > si { throw .notCoveredBySnapshot(index: index, snapshotIndex: si) }
        if index > appliedIndex || index > persistedIndex {
            throw .notApplied(index: index, applied: min(appliedIndex, persistedIndex))
        }
        log.removeFirst(Int(index - offset))
        log[0] = Entry(term: log[0].term, index: index)   // the new sentinel keeps index and term
    }

    /// Tells the leader whether sending the snapshot to `to` succeeded. After a failure the
    /// follower is probed again at the next heartbeat answer (and gets a new snapshot if needed).
    public mutating func reportSnapshot(to: NodeID, failed: Bool) {
        guard role == .leader, var pr = progress[to], pr.state == .snapshot else { return }
        if failed { pr.pendingSnapshot = 0 }
        pr.becomeProbe()
        pr.probeSent = true   // wait for an answer (heartbeat) before the next append
        progress[to] = pr
    }

    /// Tells the leader that the transport could not deliver to `to` (etcd-io/raft's
    /// MsgUnreachable): a follower in replicate state goes back to probe, so the leader stops
    /// pipelining appends into a broken stream and probes once it answers again.
    public mutating func reportUnreachable(_ to: NodeID) {
        guard role == .leader, var pr = progress[to], pr.state == .replicate else { return }
        pr.becomeProbe()
        progress[to] = pr
    }

    /// Commits the highest index stored on a quorum, if it belongs to the current term
    /// (§5.4.2: older-term entries are committed only indirectly). Returns whether it moved.
    private mutating func maybeCommit() -> Bool {
        guard !voters.isEmpty else { return false }
        let matches = voters.map { progress[$0]?.match ?? 0 }.sorted(by: >)
        let candidate = matches[quorum - 1]
        if candidate > commitIndex, term(at: candidate) == term {
            commitIndex = candidate
            return true
        }
        return false
    }

    private mutating func broadcastAppend() {
        for p in members where p != id {
            // One append even if empty (it carries the commit index), then pipeline the rest.
            if sendAppend(to: p, sendIfEmpty: true) {
                while sendAppend(to: p, sendIfEmpty: false) {}
            }
        }
    }

    /// Sends one append to `to` if its progress allows. Returns whether one was sent.
    private mutating func sendAppend(to: NodeID, sendIfEmpty: Bool) -> Bool {
        guard var pr = progress[to],
              !pr.isPaused(window: config.maxInflightMsgs, maxBytes: config.maxInflightBytes) else { return false }
        let prev = pr.next - 1
        guard let prevTerm = term(at: prev) else {
            // The entries it needs are compacted: send the latest snapshot instead.
            guard let snap = latestSnapshot else { return false }
            send(Message(type: .snapshot, from: id, to: to, term: term, snapshot: snap))
            pr.becomeSnapshot(snap.metadata.index)
            progress[to] = pr
            return true
        }
        let ents = slice(from: pr.next, maxBytes: config.maxSizePerMsg)
        if ents.isEmpty && !sendIfEmpty { return false }
        send(Message(type: .append, from: id, to: to, term: term, logTerm: prevTerm, index: prev,
                     entries: ents, commit: commitIndex))
        switch pr.state {
        case .probe, .snapshot:
            pr.probeSent = true
        case .replicate:
            if let last = ents.last {
                pr.next = last.index + 1
                pr.addInflight(last.index, bytes: ents.reduce(0) { $0 + $1.byteSize })
            }
        }
        progress[to] = pr
        return true
    }
}
