// Raft core types. The core is a pure, deterministic state machine in the style of
// etcd-io/raft: no I/O, no clock, no threads; randomness only from a seeded generator.

/// A node identifier. 0 means "none".
public typealias NodeID = UInt64
public let noNode: NodeID = 0

public enum EntryType: Sendable, Hashable {
    /// `data` is the host's request (empty `data`: a new leader's no-op).
    case normal
    /// `data` is an encoded `ConfChange` (see `ConfChange(decoding:)`); the host applies it
    /// with `RaftNode.applyConfChange(_:)` when the entry is committed.
    case confChange
}

/// One log entry. An entry with empty `data` appended by a new leader is its no-op.
public struct Entry: Sendable, Hashable {
    public var term: UInt64
    public var index: UInt64
    public var data: [UInt8]
    public var type: EntryType
    public init(term: UInt64, index: UInt64, data: [UInt8] = [], type: EntryType = .normal) {
        self.term = term; self.index = index; self.data = data; self.type = type
    }
    /// Approximate encoded size used for message byte limits.
    public var byteSize: Int { data.count + 16 }
}

/// The membership: voters decide elections and commits; learners only receive the log.
public struct ConfState: Sendable, Hashable {
    public var voters: [NodeID]
    public var learners: [NodeID]
    public init(voters: [NodeID], learners: [NodeID] = []) {
        self.voters = voters.sorted(); self.learners = learners.sorted()
    }
}

public struct SnapshotMetadata: Sendable, Hashable {
    /// The snapshot covers the log up to and including `index`, whose term is `term`.
    public var index: UInt64
    public var term: UInt64
    /// The membership as of `index`.
    public var confState: ConfState
    public init(index: UInt64, term: UInt64, confState: ConfState) {
        self.index = index; self.term = term; self.confState = confState
    }
}

/// A state-machine snapshot. `data` is opaque to Raft: the host may put the state machine
/// itself there, or leave it empty and stream its state out of band when sending `.snapshot`.
public struct Snapshot: Sendable, Hashable {
    public var metadata: SnapshotMetadata
    public var data: [UInt8]
    public init(metadata: SnapshotMetadata, data: [UInt8] = []) {
        self.metadata = metadata; self.data = data
    }
}

/// The state that must be durable before messages of the same Ready are sent.
public struct HardState: Sendable, Hashable {
    public var term: UInt64
    public var vote: NodeID
    public var commit: UInt64
    public init(term: UInt64 = 0, vote: NodeID = noNode, commit: UInt64 = 0) {
        self.term = term; self.vote = vote; self.commit = commit
    }
}

public enum MessageType: Sendable, Hashable, CaseIterable {
    /// A proposal forwarded from a follower to its leader.
    case propose
    case preVote, preVoteResponse
    case vote, voteResponse
    case append, appendResponse
    case heartbeat, heartbeatResponse
    /// The leader tells the transferee to campaign at once (leadership transfer).
    case timeoutNow
    /// A leadership-transfer request forwarded to the leader; `from` is the transferee.
    case transferLeader
    /// A linearizable read request (term-less when a follower forwards it to the leader) and
    /// the leader's answer (`index` = read index, `context` echoed).
    case readIndex, readIndexResponse
    /// The leader sends its latest snapshot (`snapshot`) to a follower whose next entry it
    /// has compacted. The follower answers with an `.appendResponse`.
    case snapshot
}

public struct Message: Sendable, Hashable {
    public var type: MessageType
    public var from: NodeID
    public var to: NodeID
    public var term: UInt64
    /// append: term of the entry at `index` (the entry preceding `entries`).
    /// vote/preVote: term of the candidate's last entry.
    /// rejected appendResponse: term of the follower's entry at `rejectHint`.
    public var logTerm: UInt64
    /// append: index preceding `entries`; vote: candidate's last index;
    /// appendResponse: last matching index (accept) or the rejected `index` (reject).
    public var index: UInt64
    public var entries: [Entry]
    public var commit: UInt64
    public var reject: Bool
    /// rejected appendResponse: the follower's suggestion for the highest index that may match.
    public var rejectHint: UInt64
    /// readIndex/readIndexResponse: the caller's request context; heartbeat/heartbeatResponse:
    /// the leader's ReadIndex round it confirms (empty for plain heartbeats).
    public var context: [UInt8]
    /// snapshot: the snapshot to install.
    public var snapshot: Snapshot?
    public init(type: MessageType, from: NodeID, to: NodeID, term: UInt64 = 0, logTerm: UInt64 = 0,
                index: UInt64 = 0, entries: [Entry] = [], commit: UInt64 = 0, reject: Bool = false,
                rejectHint: UInt64 = 0, context: [UInt8] = [], snapshot: Snapshot? = nil) {
        self.type = type; self.from = from; self.to = to; self.term = term; self.logTerm = logTerm
        self.index = index; self.entries = entries; self.commit = commit; self.reject = reject
        self.rejectHint = rejectHint; self.context = context; self.snapshot = snapshot
    }
}

public enum Role: Sendable, Hashable { case follower, preCandidate, candidate, leader }

public struct SoftState: Sendable, Hashable {
    public var leader: NodeID
    public var role: Role
}

/// What the host must do: send `immediateMessages` (at once, in parallel with the write);
/// persist `snapshot`, `hardState` (if non-nil) and `entries` (which replace any stored entries
/// from `entries.first.index` on); once that is durable send `messages`; apply
/// `committedEntries`; then call `advance()`.
public struct Ready: Sendable {
    public var softState: SoftState?
    public var hardState: HardState?
    public var entries: [Entry]
    /// Messages that must wait until this Ready's snapshot/hardState/entries are durable:
    /// votes, vote and pre-vote answers, append acknowledgements (they vouch for local state).
    public var messages: [Message]
    public var committedEntries: [Entry]
    /// Answers to `readIndex(context:)` calls: once the state machine has applied up to
    /// `index`, a read for `context` sees every write acknowledged before the call.
    public var readStates: [ReadState] = []
    /// A snapshot received from the leader: persist it (`MemoryStorage.applySnapshot`) before
    /// `entries`, and restore the state machine from it before applying `committedEntries`.
    public var snapshot: Snapshot? = nil
    /// Messages that may be sent before (in parallel with) the local write: the leader's appends,
    /// heartbeats and snapshots, pre-votes, forwarded proposals and reads, read answers,
    /// TimeoutNow. A host that sends everything after the write stays correct, only slower.
    public var immediateMessages: [Message] = []
}

/// A confirmed linearizable read point (see `RaftNode.readIndex(context:)`).
public struct ReadState: Sendable, Hashable {
    public var index: UInt64
    public var context: [UInt8]
    public init(index: UInt64, context: [UInt8]) { self.index = index; self.context = context }
}

/// Why a proposal was refused.
public enum ProposalError: Error, Sendable, Hashable {
    /// No leader is known (election in progress); retry later.
    case noLeader
    /// The proposal exceeds `Config.maxProposalBytes`.
    case tooLarge(size: Int, limit: Int)
    /// A leadership transfer is in progress (it ends within an election timeout); retry.
    case leadershipTransferInProgress
    /// An earlier membership change is not applied yet (one change at a time); retry.
    case confChangePending
    /// The membership change makes no sense for the current membership.
    case invalidConfChange(String)
}

public enum TransferError: Error, Sendable, Hashable {
    /// No leader is known to carry out the transfer.
    case noLeader
    /// The transferee is not a voter.
    case notVoter(NodeID)
}

public enum ConfChangeType: Sendable, Hashable, CaseIterable {
    /// Adds a voter (or promotes a learner).
    case addNode
    case removeNode
    case addLearner
    /// Promotes a learner to voter.
    case promoteLearner
}

/// A single-server membership change, carried in an `.confChange` entry.
public struct ConfChange: Sendable, Hashable {
    public var type: ConfChangeType
    public var nodeID: NodeID
    /// Opaque to Raft (e.g. the encoded member: name, peer URLs).
    public var context: [UInt8]
    public init(type: ConfChangeType, nodeID: NodeID, context: [UInt8] = []) {
        self.type = type; self.nodeID = nodeID; self.context = context
    }

    /// Entry encoding: one type byte, the node id (8 bytes little-endian), the context.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(9 + context.count)
        let t: UInt8 = switch type {
        case .addNode: 0
        case .removeNode: 1
        case .addLearner: 2
        case .promoteLearner: 3
        }
        out.append(t)
        for k in 0..<8 { out.append(UInt8(truncatingIfNeeded: nodeID >> (k * 8))) }
        out.append(contentsOf: context)
        return out
    }

    public init(decoding bytes: [UInt8]) throws(ConfChangeDecodingError) {
        guard bytes.count >= 9 else { throw .truncated(bytes.count) }
        switch bytes[0] {
        case 0: type = .addNode
        case 1: type = .removeNode
        case 2: type = .addLearner
        case 3: type = .promoteLearner
        default: throw .unknownType(bytes[0])
        }
        var id: UInt64 = 0
        for k in 0..<8 { id |= UInt64(bytes[1 + k]) << (k * 8) }
        nodeID = id
        context = Array(bytes[9...])
    }
}

public enum ConfChangeDecodingError: Error, Sendable, Hashable {
    case truncated(Int)
    case unknownType(UInt8)
}

public enum ProgressState: Sendable, Hashable { case probe, replicate, snapshot }

/// The leader's view of one member (for Maintenance.Status and debugging).
public struct ProgressStatus: Sendable, Hashable {
    public var match: UInt64
    public var next: UInt64
    public var state: ProgressState
    public var isLearner: Bool
    public var recentActive: Bool
    public var inflights: Int
    public var inflightBytes: Int
    public var pendingSnapshot: UInt64
}

public struct Status: Sendable, Hashable {
    public var id: NodeID
    public var term: UInt64
    public var vote: NodeID
    public var leader: NodeID
    public var role: Role
    public var commit: UInt64
    /// Highest index handed out for applying.
    public var applied: UInt64
    public var firstIndex: UInt64
    public var lastIndex: UInt64
    public var confState: ConfState
    /// Target of a leadership transfer in progress (`noNode`: none).
    public var leadTransferee: NodeID
    /// Per member, on the leader only (empty elsewhere).
    public var progress: [NodeID: ProgressStatus]
}

public enum ConfigError: Error, Sendable, Hashable {
    case invalidID
    case selfNotInPeers
    case duplicatePeer(NodeID)
    case invalidTicks(election: Int, heartbeat: Int)
    case invalidLimit(String)
    /// The storage's first entry is not right after its snapshot (or after index 0).
    case inconsistentStorage(firstIndex: UInt64, snapshotIndex: UInt64)
}

/// Why `createSnapshot` / `compact` refused.
public enum CompactionError: Error, Sendable, Hashable {
    /// The index has not been handed out for applying yet.
    case notApplied(index: UInt64, applied: UInt64)
    /// The index is at or below the start of the in-memory log (already compacted) or is
    /// older than the latest snapshot.
    case outOfDate(index: UInt64, first: UInt64)
    /// Compaction must not go beyond the latest snapshot (a lagging follower could then be
    /// served neither entries nor a snapshot).
    case notCoveredBySnapshot(index: UInt64, snapshotIndex: UInt64)
}

public struct Config: Sendable {
    public var id: NodeID
    /// All voters, including `id`.
    public var peers: [NodeID]
    public var electionTick: Int = 10
    public var heartbeatTick: Int = 1
    /// Soft byte limit of entries per append message (at least one entry is always sent).
    public var maxSizePerMsg: Int = 64 * 1024
    /// Max append messages in flight per follower in replicate state.
    public var maxInflightMsgs: Int = 256
    /// Max bytes of entries in flight per follower (the window closes once this is reached;
    /// 0: no byte limit). Bounds the memory a slow follower can pin.
    public var maxInflightBytes: Int = 32 << 20
    public var maxProposalBytes: Int = 1 << 20
    public var preVote: Bool = true
    public var checkQuorum: Bool = true
    /// Seed of the generator used for randomized election timeouts.
    public var seed: UInt64
    /// Index the host's state machine has already applied (on restart). At least the storage
    /// snapshot's index is taken as applied: the host restores its state machine from that
    /// snapshot when its own state is older.
    public var applied: UInt64 = 0
    /// Learners of the initial membership (used with `peers` when neither `confState` nor a
    /// stored snapshot gives the membership).
    public var learners: [NodeID] = []
    /// The membership as of `applied` when the host keeps it (on restart after membership
    /// changes); nil: the stored snapshot's, else `peers`/`learners`.
    public var confState: ConfState? = nil

    public init(id: NodeID, peers: [NodeID], seed: UInt64) {
        self.id = id; self.peers = peers; self.seed = seed
    }

    func validate() throws(ConfigError) {
        if id == noNode { throw .invalidID }
        // A node joining an existing cluster may start without any membership (it learns it
        // from the leader's snapshot or log); otherwise it must be a voter or a learner.
        let members = confState.map { $0.voters + $0.learners } ?? (peers + learners)
        if !members.isEmpty && !members.contains(id) { throw .selfNotInPeers }
        var seen = Set<NodeID>()
        for p in members {
            if p == noNode { throw .invalidID }
            if !seen.insert(p).inserted { throw .duplicatePeer(p) }
        }
        if heartbeatTick <= 0 || electionTick <= heartbeatTick {
            throw .invalidTicks(election: electionTick, heartbeat: heartbeatTick)
        }
        if maxInflightMsgs <= 0 { throw .invalidLimit("maxInflightMsgs") }
        if maxSizePerMsg <= 0 { throw .invalidLimit("maxSizePerMsg") }
        if maxInflightBytes < 0 { throw .invalidLimit("maxInflightBytes") }
    }
}

/// SplitMix64: a small, fast, seedable generator (deterministic across platforms).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
