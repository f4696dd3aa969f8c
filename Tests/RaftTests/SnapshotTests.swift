import Testing
import Raft

@Suite("Snapshots and compaction")
struct SnapshotTests {
    /// A 3-node cluster where node 3 missed entries 2...7 and the leader compacted up to 5.
    static func laggingCluster() throws -> TestCluster {
        var c = try TestCluster()
        try c.elect(1)
        c.drop = { $0.to == 3 }
        for i: UInt8 in 1...6 { try c.propose(1, [i]); try c.stabilize() }
        #expect(c.nodes[1]!.commitIndex == 7)
        let snap = try c.nodes[1]!.createSnapshot(index: 5, data: [0xAB, 5])
        #expect(snap.metadata == SnapshotMetadata(index: 5, term: 1, confState: ConfState(voters: [1, 2, 3])))
        try c.disks[1]!.createSnapshot(snap)
        try c.nodes[1]!.compact(to: 4)      // keep a tail of one entry below the snapshot
        try c.disks[1]!.compact(to: 4)
        #expect(c.nodes[1]!.firstIndex == 5)
        #expect(c.nodes[1]!.entry(at: 4) == nil)
        #expect(c.nodes[1]!.term(at: 4) == 1)
        return c
    }

    @Test("a follower that needs compacted entries gets the snapshot, installs it and catches up")
    func followerGetsSnapshot() throws {
        var c = try Self.laggingCluster()
        c.drop = { _ in false }
        c.sent.removeAll()
        try c.tick(1); try c.stabilize()
        let snaps = c.sent.filter { $0.type == .snapshot }
        #expect(snaps.count == 1)
        #expect(snaps.first?.to == 3)
        #expect(snaps.first?.snapshot?.data == [0xAB, 5])
        #expect(c.installed[3]?.map(\.metadata.index) == [5])
        #expect(c.disks[3]!.snapshot?.metadata.index == 5)
        #expect(c.disks[3]!.firstIndex == 6)
        // Entries after the snapshot came as appends; the state machine applies only those.
        #expect(c.nodes[3]!.lastIndex == 7)
        #expect(c.nodes[3]!.commitIndex == 7)
        #expect(c.applied[3]!.map(\.index) == [1, 6, 7])   // index 1 was applied before the partition
        #expect(c.disks[3]!.entries(6, 7).map(\.data) == [[5], [6]])
        // The leader replicates to it normally afterwards.
        try c.propose(1, [9]); try c.stabilize()
        #expect(c.applied[3]!.last?.data == [9])
    }

    @Test("a lost snapshot is reported and sent again")
    func lostSnapshotResent() throws {
        var c = try Self.laggingCluster()
        c.drop = { $0.type == .snapshot }
        try c.tick(1); try c.stabilize()
        #expect(c.installed[3] == nil)
        c.drop = { _ in false }
        try c.tick(1); try c.stabilize()
        try c.tick(1); try c.stabilize()
        #expect(c.installed[3]?.count == 1)
        #expect(c.nodes[3]!.commitIndex == 7)
    }

    @Test("a snapshot the follower's log already covers only moves its commit index")
    func fastForward() throws {
        var c = try TestCluster()
        try c.elect(1)
        try c.propose(1, [1]); try c.propose(1, [2]); try c.stabilize()
        var n = c.nodes[2]!
        let meta = SnapshotMetadata(index: 3, term: 1, confState: ConfState(voters: [1, 2, 3]))
        n.step(Message(type: .snapshot, from: 1, to: 2, term: 1, snapshot: Snapshot(metadata: meta)))
        let rd = n.ready()
        #expect(rd.snapshot == nil)
        #expect(rd.messages.first { $0.type == .appendResponse }?.index == 3)
        #expect(n.lastIndex == 3)
    }

    @Test("a node restarts from snapshot + log tail")
    func restartFromSnapshot() throws {
        var c = try Self.laggingCluster()
        var cfg = Config(id: 1, peers: [1, 2, 3], seed: 3)
        cfg.applied = 0
        let r = try RaftNode(config: cfg, storage: c.disks[1]!)
        #expect(r.firstIndex == 6)                 // the log starts after the snapshot
        #expect(r.lastIndex == 7)
        #expect(r.term(at: 5) == 1)
        #expect(r.appliedIndex == 5)               // the host restores the snapshot itself
        #expect(r.commitIndex == 7)
        #expect(r.confState == ConfState(voters: [1, 2, 3]))
        var r2 = r
        #expect(r2.ready().committedEntries.map(\.data) == [[5], [6]])
        c.nodes[1] = r2
    }

    @Test("createSnapshot and compact refuse indexes that are not applied, out of date or not covered")
    func compactionErrors() throws {
        var c = try TestCluster()
        try c.elect(1)
        try c.propose(1, [1]); try c.stabilize()
        var n = c.nodes[1]!
        #expect(throws: CompactionError.notApplied(index: 9, applied: 2)) {
            _ = try n.createSnapshot(index: 9, data: [])
        }
        #expect(throws: CompactionError.notCoveredBySnapshot(index: 2, snapshotIndex: 0)) {
            try n.compact(to: 2)
        }
        _ = try n.createSnapshot(index: 2, data: [])
        #expect(throws: CompactionError.outOfDate(index: 1, first: 3)) {
            _ = try n.createSnapshot(index: 1, data: [])
        }
        try n.compact(to: 2)
        #expect(throws: CompactionError.outOfDate(index: 2, first: 3)) { try n.compact(to: 2) }
    }

    @Test("MemoryStorage: snapshots, compaction and installing a snapshot")
    func memoryStorage() throws {
        var s = MemoryStorage()
        try s.append((1...5).map { Entry(term: $0 < 3 ? 1 : 2, index: $0, data: [UInt8($0)]) })
        let meta = SnapshotMetadata(index: 3, term: 2, confState: ConfState(voters: [1]))
        #expect(throws: StorageError.notCoveredBySnapshot(index: 2, snapshotIndex: 0)) { try s.compact(to: 2) }
        try s.createSnapshot(Snapshot(metadata: meta, data: [7]))
        try s.compact(to: 3)
        #expect(s.firstIndex == 4)
        #expect(s.lastIndex == 5)
        #expect(s.term(at: 3) == 2)
        #expect(s.entry(at: 3) == nil)
        #expect(s.entries(4, 5).map(\.index) == [4, 5])
        // Appending entries that start inside the compacted prefix keeps only the new part.
        try s.append([Entry(term: 2, index: 3), Entry(term: 3, index: 4, data: [44])])
        #expect(s.lastIndex == 4)
        #expect(s.entry(at: 4)?.data == [44])
        #expect(throws: StorageError.snapshotOutOfDate(index: 3, current: 3)) {
            try s.createSnapshot(Snapshot(metadata: meta))
        }
        let newer = SnapshotMetadata(index: 10, term: 4, confState: ConfState(voters: [1, 2]))
        try s.applySnapshot(Snapshot(metadata: newer))
        #expect(s.firstIndex == 11)
        #expect(s.lastIndex == 10)
        #expect(s.term(at: 10) == 4)
        #expect(s.hardState.commit == 10)
        #expect(throws: StorageError.gap(lastIndex: 10, first: 12)) { try s.append([Entry(term: 4, index: 12)]) }
    }

    @Test("entries carry their type; conf-change entries survive storage")
    func entryType() throws {
        var s = MemoryStorage()
        try s.append([Entry(term: 1, index: 1), Entry(term: 1, index: 2, data: [1], type: .confChange)])
        #expect(s.entry(at: 1)?.type == .normal)
        #expect(s.entry(at: 2)?.type == .confChange)
    }
}
