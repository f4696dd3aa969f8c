import KeelAPI
import Raft
import Testing
@testable import Server

@Suite struct PeerWireTests {
    /// Every Raft message type with every field set survives Raft -> proto -> bytes -> proto -> Raft.
    @Test func roundTripEveryTypeAndField() throws {
        let entries = [
            Raft.Entry(term: 3, index: 10, data: [], type: .normal),
            Raft.Entry(term: 3, index: 11, data: Array("put k v".utf8), type: .normal),
            Raft.Entry(term: 4, index: 12, data: Raft.ConfChange(type: .addLearner, nodeID: 9, context: [1, 2]).encoded(),
                       type: .confChange),
        ]
        let snap = Raft.Snapshot(metadata: Raft.SnapshotMetadata(index: 99, term: 7,
                                                                 confState: Raft.ConfState(voters: [1, 2, 3], learners: [9])),
                                 data: [0xde, 0xad])
        for (i, type) in Raft.MessageType.allCases.enumerated() {
            let m = Raft.Message(type: type, from: 0x8e9e05c52164694d, to: UInt64.max - UInt64(i), term: 5 + UInt64(i),
                                 logTerm: 4, index: 1000 + UInt64(i), entries: entries, commit: 998, reject: i % 2 == 0,
                                 rejectHint: 77, context: [UInt8(i), 0, 255], snapshot: snap)
            let pb = PeerWire.encode(m)
            let bytes = pb.serializedBytes()
            let decoded = try PeerWire.decode(try Raftpb.Message(serializedBytes: bytes))
            #expect(decoded == m, "type \(type)")
            // Default-valued fields too (nothing set but type/from/to).
            let bare = Raft.Message(type: type, from: 1, to: 2)
            #expect(try PeerWire.decode(try Raftpb.Message(serializedBytes: PeerWire.encode(bare).serializedBytes())) == bare)
        }
        // Distinct proto types for distinct Raft types.
        #expect(Set(Raft.MessageType.allCases.map { PeerWire.encode($0).rawValue }).count == Raft.MessageType.allCases.count)
    }

    @Test func unknownTypesAreTypedErrors() {
        var pb = Raftpb.Message()
        pb.type = .snapStatus  // transport-local in etcd; Raft has no such message
        #expect(throws: PeerWireError.unknownMessageType(9)) { try PeerWire.decode(pb) }
        pb.type = Raftpb.MessageType(rawValue: 1234)
        #expect(throws: PeerWireError.unknownMessageType(1234)) { try PeerWire.decode(pb) }
        pb.type = .app
        var e = Raftpb.Entry()
        e.type = Raftpb.EntryType(rawValue: 5)
        pb.entries = [e]
        #expect(throws: PeerWireError.unknownEntryType(5)) { try PeerWire.decode(pb) }
    }

    /// The per-peer queue: bounded, drops the overflow, asks for one unreachable report per
    /// overflow episode (until the drain task takes messages again).
    @Test func peerQueueBoundsAndReportsOncePerOverflow() {
        let q = PeerQueue(capacity: 3)
        let m = { (i: Int) in Raft.Message(type: .heartbeat, from: 1, to: 2, index: UInt64(i)) }
        #expect(q.enqueue([m(0), m(1)]) == (0, false))
        #expect(q.enqueue([m(2), m(3), m(4)]) == (2, true))
        #expect(q.enqueue([m(5)]) == (1, false))
        #expect(q.takeAll().map(\.index) == [0, 1, 2])
        #expect(q.enqueue([m(6), m(7), m(8), m(9)]) == (1, true))
        #expect(q.drain() == 3)
        q.close()
        #expect(q.enqueue([m(10)]) == (1, false))
        #expect(q.pending.isEmpty)
    }
}
