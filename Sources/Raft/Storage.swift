/// What a node needs to restart: the durable hard state, the latest durable snapshot and the
/// durable log after it.
public protocol LogStorage {
    var hardState: HardState { get }
    /// Index of the last stored entry (the snapshot's index when the log after it is empty;
    /// 0 when empty).
    var lastIndex: UInt64 { get }
    /// Stored entries with indexes in `lo...hi` (both within `firstIndex...lastIndex`).
    func entries(_ lo: UInt64, _ hi: UInt64) -> [Entry]
    /// The latest snapshot (nil: none). Default: nil.
    var snapshot: Snapshot? { get }
    /// Index of the first stored entry; at most `snapshot.index + 1`. Default: `snapshot.index + 1`.
    var firstIndex: UInt64 { get }
}

extension LogStorage {
    public var snapshot: Snapshot? { nil }
    public var firstIndex: UInt64 { (snapshot?.metadata.index ?? 0) + 1 }
}

public enum StorageError: Error, Sendable, Hashable {
    /// Appended entries would leave a hole after the stored log.
    case gap(lastIndex: UInt64, first: UInt64)
    /// Appended entries are not consecutive.
    case notContiguous(at: UInt64)
    /// The index is compacted away (below `firstIndex`) or beyond `lastIndex`.
    case unavailable(index: UInt64, firstIndex: UInt64, lastIndex: UInt64)
    /// A snapshot older than (or as old as) the stored one.
    case snapshotOutOfDate(index: UInt64, current: UInt64)
    /// Compaction beyond the stored snapshot's index.
    case notCoveredBySnapshot(index: UInt64, snapshotIndex: UInt64)
}

/// An in-memory log store with snapshots and compaction. Entries after `offset` are kept;
/// `offsetTerm` is the term of the entry at `offset` (the last compacted one).
public struct MemoryStorage: LogStorage, Sendable {
    public private(set) var hardState = HardState()
    public private(set) var snapshot: Snapshot?
    private var offset: UInt64 = 0
    private var offsetTerm: UInt64 = 0
    private var log: [Entry] = []

    public init() {}

    public var firstIndex: UInt64 { offset + 1 }
    public var lastIndex: UInt64 { offset + UInt64(log.count) }

    public func entries(_ lo: UInt64, _ hi: UInt64) -> [Entry] {
        guard lo > offset, lo <= hi, hi <= lastIndex else { return [] }
        return Array(log[Int(lo - offset - 1)..<Int(hi - offset)])
    }

    public func entry(at index: UInt64) -> Entry? {
        guard index > offset, index <= lastIndex else { return nil }
        return log[Int(index - offset - 1)]
    }

    /// The term of the entry at `index` (also of the last compacted one); nil when unknown.
    public func term(at index: UInt64) -> UInt64? {
        index == offset ? offsetTerm : entry(at: index)?.term
    }

    public mutating func setHardState(_ hs: HardState) { hardState = hs }

    /// Stores `entries`, replacing any stored entries from `entries.first.index` on. Entries at
    /// or below the compaction point are committed and already covered: they are skipped.
    public mutating func append(_ entries: [Entry]) throws(StorageError) {
        guard let first = entries.first else { return }
        if first.index == 0 || first.index > lastIndex + 1 {
            throw .gap(lastIndex: lastIndex, first: first.index)
        }
        for (k, e) in entries.enumerated() where e.index != first.index + UInt64(k) {
            throw .notContiguous(at: e.index)
        }
        let kept = entries.drop { $0.index <= offset }
        guard let from = kept.first?.index else { return }
        log.removeSubrange(Int(from - offset - 1)...)
        log.append(contentsOf: kept)
    }

    /// Records `snapshot` (made by the host at an index it has stored) as the latest one.
    public mutating func createSnapshot(_ snap: Snapshot) throws(StorageError) {
        let i = snap.metadata.index
        if let cur = snapshot, i <= cur.metadata.index {
            throw .snapshotOutOfDate(index: i, current: cur.metadata.index)
        }
        if i < offset || i > lastIndex {
            throw .unavailable(index: i, firstIndex: firstIndex, lastIndex: lastIndex)
        }
        snapshot = snap
    }

    /// Drops the entries up to and including `index` (which must be covered by the snapshot).
    public mutating func compact(to index: UInt64) throws(StorageError) {
        if index <= offset { return }
        if index > lastIndex { throw .unavailable(index: index, firstIndex: firstIndex, lastIndex: lastIndex) }
        let snapIndex = snapshot?.metadata.index ?? 0
        if index > snapIndex { throw .notCoveredBySnapshot(index: index, snapshotIndex: snapIndex) }
        offsetTerm = term(at: index)!
        log.removeFirst(Int(index - offset))
        offset = index
    }

    /// Replaces everything with a snapshot received from the leader (`Ready.snapshot`).
    public mutating func applySnapshot(_ snap: Snapshot) throws(StorageError) {
        let i = snap.metadata.index
        if let cur = snapshot, i <= cur.metadata.index {
            throw .snapshotOutOfDate(index: i, current: cur.metadata.index)
        }
        snapshot = snap
        offset = i
        offsetTerm = snap.metadata.term
        log = []
        if hardState.commit < i { hardState.commit = i }
    }
}
