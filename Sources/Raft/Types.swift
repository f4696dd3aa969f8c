// Raft core types. The core is a pure, deterministic state machine in the style of
// etcd-io/raft: no I/O, no clock, no threads; randomness only from a seeded generator.

/// A node identifier. 0 means "none".
public typealias NodeID = UInt64
public let noNode: NodeID = 0

/// One log entry. An entry with empty `data` appended by a new leader is its no-op.
public struct Entry: Sendable, Hashable {
    public var term: UInt64
    public var index: UInt64
    public var data: [UInt8]
    public init(term: UInt64, index: UInt64, data: [UInt8] = []) {
        self.term = term; self.index = index; self.data = data
    }
    /// Approximate encoded size used for message byte limits.
    public var byteSize: Int { data.count + 16 }
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
    public init(type: MessageType, from: NodeID, to: NodeID, term: UInt64 = 0, logTerm: UInt64 = 0,
                index: UInt64 = 0, entries: [Entry] = [], commit: UInt64 = 0, reject: Bool = false,
                rejectHint: UInt64 = 0) {
        self.type = type; self.from = from; self.to = to; self.term = term; self.logTerm = logTerm
        self.index = index; self.entries = entries; self.commit = commit; self.reject = reject
        self.rejectHint = rejectHint
    }
}

public enum Role: Sendable, Hashable { case follower, preCandidate, candidate, leader }

public struct SoftState: Sendable, Hashable {
    public var leader: NodeID
    public var role: Role
}

/// What the host must do, in order: persist `hardState` (if non-nil) and `entries`
/// (which replace any stored entries from `entries.first.index` on), then send `messages`,
/// then apply `committedEntries`, then call `advance()`.
public struct Ready: Sendable {
    public var softState: SoftState?
    public var hardState: HardState?
    public var entries: [Entry]
    public var messages: [Message]
    public var committedEntries: [Entry]
}

/// Why a proposal was refused.
public enum ProposalError: Error, Sendable, Hashable {
    /// No leader is known (election in progress); retry later.
    case noLeader
    /// The proposal exceeds `Config.maxProposalBytes`.
    case tooLarge(size: Int, limit: Int)
}

public enum ConfigError: Error, Sendable, Hashable {
    case invalidID
    case selfNotInPeers
    case duplicatePeer(NodeID)
    case invalidTicks(election: Int, heartbeat: Int)
    case invalidLimit(String)
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
    public var maxProposalBytes: Int = 1 << 20
    public var preVote: Bool = true
    public var checkQuorum: Bool = true
    /// Seed of the generator used for randomized election timeouts.
    public var seed: UInt64
    /// Index the host's state machine has already applied (on restart).
    public var applied: UInt64 = 0

    public init(id: NodeID, peers: [NodeID], seed: UInt64) {
        self.id = id; self.peers = peers; self.seed = seed
    }

    func validate() throws(ConfigError) {
        if id == noNode { throw .invalidID }
        if !peers.contains(id) { throw .selfNotInPeers }
        var seen = Set<NodeID>()
        for p in peers {
            if p == noNode { throw .invalidID }
            if !seen.insert(p).inserted { throw .duplicatePeer(p) }
        }
        if heartbeatTick <= 0 || electionTick <= heartbeatTick {
            throw .invalidTicks(election: electionTick, heartbeat: heartbeatTick)
        }
        if maxInflightMsgs <= 0 { throw .invalidLimit("maxInflightMsgs") }
        if maxSizePerMsg <= 0 { throw .invalidLimit("maxSizePerMsg") }
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
