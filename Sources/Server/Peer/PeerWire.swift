// Raft.Message <-> Raftpb.Message (Protos/raft.proto): the peer transport's wire form.
// Every field crosses: type, from/to, term, logTerm, index, entries (term, index, type, data),
// commit, reject, rejectHint, context, snapshot (metadata: index, term, conf state; data).
import KeelAPI
import Raft

/// Why a received message cannot become a `Raft.Message`.
public enum PeerWireError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A message type Raft does not know (or a transport-local one such as SNAP_STATUS).
    case unknownMessageType(Int32)
    case unknownEntryType(Int32)

    public var description: String {
        switch self {
        case .unknownMessageType(let t): "unknown raft message type \(t)"
        case .unknownEntryType(let t): "unknown raft entry type \(t)"
        }
    }
}

public enum PeerWire {
    public static func encode(_ m: Raft.Message) -> Raftpb.Message {
        var pb = Raftpb.Message()
        pb.type = encode(m.type)
        pb.to = m.to
        pb.from = m.from
        pb.term = m.term
        pb.logTerm = m.logTerm
        pb.index = m.index
        if !m.entries.isEmpty {
            pb.entries.reserveCapacity(m.entries.count)
            for e in m.entries { pb.entries.append(encode(e)) }
        }
        pb.commit = m.commit
        if let s = m.snapshot { pb.snapshot = encode(s) }
        pb.reject = m.reject
        pb.rejectHint = m.rejectHint
        pb.context = m.context
        return pb
    }

    public static func decode(_ pb: Raftpb.Message) throws(PeerWireError) -> Raft.Message {
        var entries: [Raft.Entry] = []
        if !pb.entries.isEmpty {
            entries.reserveCapacity(pb.entries.count)
            for e in pb.entries { entries.append(try decode(e)) }
        }
        return Raft.Message(type: try decode(pb.type), from: pb.from, to: pb.to, term: pb.term, logTerm: pb.logTerm,
                            index: pb.index, entries: entries, commit: pb.commit, reject: pb.reject,
                            rejectHint: pb.rejectHint, context: pb.context, snapshot: pb.snapshot.map(decode))
    }

    public static func encode(_ e: Raft.Entry) -> Raftpb.Entry {
        var pb = Raftpb.Entry()
        pb.term = e.term
        pb.index = e.index
        pb.type = switch e.type {
        case .normal: .normal
        case .confChange: .confChange
        }
        pb.data = e.data
        return pb
    }

    public static func decode(_ pb: Raftpb.Entry) throws(PeerWireError) -> Raft.Entry {
        let type: Raft.EntryType
        switch pb.type {
        case .normal: type = .normal
        case .confChange: type = .confChange
        default: throw .unknownEntryType(pb.type.rawValue)
        }
        return Raft.Entry(term: pb.term, index: pb.index, data: pb.data, type: type)
    }

    public static func encode(_ md: Raft.SnapshotMetadata) -> Raftpb.SnapshotMetadata {
        var pb = Raftpb.SnapshotMetadata()
        var cs = Raftpb.ConfState()
        cs.voters = md.confState.voters
        cs.learners = md.confState.learners
        pb.confState = cs
        pb.index = md.index
        pb.term = md.term
        return pb
    }

    public static func decode(_ pb: Raftpb.SnapshotMetadata) -> Raft.SnapshotMetadata {
        Raft.SnapshotMetadata(index: pb.index, term: pb.term,
                              confState: Raft.ConfState(voters: pb.confState?.voters ?? [],
                                                        learners: pb.confState?.learners ?? []))
    }

    public static func encode(_ s: Raft.Snapshot) -> Raftpb.Snapshot {
        var pb = Raftpb.Snapshot()
        pb.data = s.data
        pb.metadata = encode(s.metadata)
        return pb
    }

    public static func decode(_ pb: Raftpb.Snapshot) -> Raft.Snapshot {
        Raft.Snapshot(metadata: decode(pb.metadata ?? Raftpb.SnapshotMetadata()), data: pb.data)
    }

    public static func encode(_ t: Raft.MessageType) -> Raftpb.MessageType {
        switch t {
        case .propose: .prop
        case .preVote: .preVote
        case .preVoteResponse: .preVoteResp
        case .vote: .vote
        case .voteResponse: .voteResp
        case .append: .app
        case .appendResponse: .appResp
        case .heartbeat: .heartbeat
        case .heartbeatResponse: .heartbeatResp
        case .timeoutNow: .timeoutNow
        case .transferLeader: .transferLeader
        case .readIndex: .readIndex
        case .readIndexResponse: .readIndexResp
        case .snapshot: .snap
        }
    }

    public static func decode(_ t: Raftpb.MessageType) throws(PeerWireError) -> Raft.MessageType {
        switch t {
        case .prop: .propose
        case .preVote: .preVote
        case .preVoteResp: .preVoteResponse
        case .vote: .vote
        case .voteResp: .voteResponse
        case .app: .append
        case .appResp: .appendResponse
        case .heartbeat: .heartbeat
        case .heartbeatResp: .heartbeatResponse
        case .timeoutNow: .timeoutNow
        case .transferLeader: .transferLeader
        case .readIndex: .readIndex
        case .readIndexResp: .readIndexResponse
        case .snap: .snapshot
        default: throw .unknownMessageType(t.rawValue)
        }
    }
}
