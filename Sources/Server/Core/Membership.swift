import GRPC
import KeelAPI
import Raft
import Storage
import Synchronization

extension MetaKey {
    /// Keelpb.Membership: members, removed IDs and Raft's ConfState, as of the applied index.
    static let membership = "keel/membership"
}

/// The cluster membership as the apply loop keeps it (a value: changed only by applied entries,
/// so every member computes the same one).
extension Keelpb.Membership {
    var confState: ConfState { ConfState(voters: voters, learners: learners) }

    func member(_ id: UInt64) -> Keelpb.Member? { members.first { $0.id == id } }

    /// A committed conf change, with the ConfState Raft returned for it. Adds a member that is not
    /// there yet (a replayed change the membership already has is a no-op, as in Raft), promotes,
    /// removes (the ID is remembered as removed).
    mutating func apply(_ cc: ConfChange, member: Keelpb.Member?, confState cs: ConfState) {
        switch cc.type {
        case .addNode, .addLearner:
            if let i = members.firstIndex(where: { $0.id == cc.nodeID }) {
                if cc.type == .addNode { members[i].isLearner = false }
            } else if !removed.contains(cc.nodeID) {
                var m = member ?? Keelpb.Member()
                m.id = cc.nodeID
                m.isLearner = cc.type == .addLearner
                members.append(m)
                members.sort { $0.id < $1.id }
            }
        case .promoteLearner:
            if let i = members.firstIndex(where: { $0.id == cc.nodeID }) { members[i].isLearner = false }
        case .removeNode:
            members.removeAll { $0.id == cc.nodeID }
            if !removed.contains(cc.nodeID) { removed.append(cc.nodeID); removed.sort() }
        }
        voters = cs.voters
        learners = cs.learners
    }

    /// The first membership of a new cluster (--initial-cluster; all voters).
    static func initial(_ members: [ServerConfig.InitialMember]) -> Keelpb.Membership {
        var ms = Keelpb.Membership()
        for im in members {
            var m = Keelpb.Member()
            m.id = im.id; m.name = im.name; m.peerUrls = im.peerURLs
            ms.members.append(m)
        }
        ms.members.sort { $0.id < $1.id }
        ms.voters = ms.members.map(\.id)
        return ms
    }

    /// etcd's Member message for the Cluster service.
    var etcdMembers: [Etcdserverpb.Member] { members.map(Self.etcdMember) }

    static func etcdMember(_ m: Keelpb.Member) -> Etcdserverpb.Member {
        var e = Etcdserverpb.Member()
        e.id = m.id; e.name = m.name; e.peerURLs = m.peerUrls; e.clientURLs = m.clientUrls; e.isLearner = m.isLearner
        return e
    }
}

/// Raft entries in the WAL: the WAL record has no entry type, so a conf-change entry is stored
/// with a leading 0xFF byte. No InternalRequest encoding starts with 0xFF (field 31 with wire type
/// 7, which protobuf does not have), and the leader's no-op entry is empty, so this is unambiguous.
enum WALCodec {
    static let confChangeTag: UInt8 = 0xFF

    static func walEntry(_ e: Raft.Entry) -> WALEntry {
        switch e.type {
        case .normal: return WALEntry(index: e.index, term: e.term, data: e.data)
        case .confChange: return WALEntry(index: e.index, term: e.term, data: [confChangeTag] + e.data)
        }
    }

    static func raftEntry(_ w: WALEntry) -> Raft.Entry {
        if w.data.first == confChangeTag {
            return Raft.Entry(term: w.term, index: w.index, data: Array(w.data.dropFirst()), type: .confChange)
        }
        return Raft.Entry(term: w.term, index: w.index, data: w.data)
    }
}

/// The store the server uses now. A follower that installs the leader's snapshot replaces the
/// store (close, MVCCStore.restore, reopen on the apply loop); everything that reads it (services,
/// watch hub history, lessor) goes through this slot. Reads take MVCCStore's own kind of lock: an
/// uncontended Mutex around a reference copy, like MVCCStore's environment lookup on every call.
public final class StoreSlot: Sendable {
    private let current: Mutex<MVCCStore>

    init(_ store: MVCCStore) { current = Mutex(store) }

    public var store: MVCCStore { current.withLock { $0 } }

    func replace(with store: MVCCStore) { current.withLock { $0 = store } }
}

extension StoreSlot: WatchEventSource, LeaseBackend {
    public var watchRevision: Int64 { store.watchRevision }
    public var watchCompactedRevision: Int64 { store.watchCompactedRevision }
    public func watchEvents(from start: Int64, to end: Int64, key: [UInt8], rangeEnd: [UInt8], prevKV: Bool,
                            limit: Int) throws(WatchHistoryError) -> [Mvccpb.Event] {
        try store.watchEvents(from: start, to: end, key: key, rangeEnd: rangeEnd, prevKV: prevKV, limit: limit)
    }
    public func storedLeases() throws -> [(id: Int64, ttl: Int64, remainingTTL: Int64)] { try store.storedLeases() }
    public func storedLeaseKeys(id: Int64) throws -> [[UInt8]] { try store.storedLeaseKeys(id: id) }
}
