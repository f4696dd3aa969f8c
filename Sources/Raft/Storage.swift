/// What a node needs to restart: the durable hard state and the durable log.
public protocol LogStorage {
    var hardState: HardState { get }
    /// Index of the last stored entry (0 when empty).
    var lastIndex: UInt64 { get }
    /// Stored entries with indexes in `lo...hi` (both within `1...lastIndex`).
    func entries(_ lo: UInt64, _ hi: UInt64) -> [Entry]
}

public enum StorageError: Error, Sendable, Hashable {
    /// Appended entries would leave a hole after the stored log.
    case gap(lastIndex: UInt64, first: UInt64)
    /// Appended entries are not consecutive.
    case notContiguous(at: UInt64)
}

/// An in-memory log store (no compaction yet). Index i lives at position i-1.
public struct MemoryStorage: LogStorage, Sendable {
    public private(set) var hardState = HardState()
    private var log: [Entry] = []

    public init() {}

    public var lastIndex: UInt64 { UInt64(log.count) }

    public func entries(_ lo: UInt64, _ hi: UInt64) -> [Entry] {
        guard lo >= 1, lo <= hi, hi <= lastIndex else { return [] }
        return Array(log[Int(lo - 1)..<Int(hi)])
    }

    public func entry(at index: UInt64) -> Entry? {
        guard index >= 1, index <= lastIndex else { return nil }
        return log[Int(index - 1)]
    }

    public func term(at index: UInt64) -> UInt64? {
        index == 0 ? 0 : entry(at: index)?.term
    }

    public mutating func setHardState(_ hs: HardState) { hardState = hs }

    /// Stores `entries`, replacing any stored entries from `entries.first.index` on.
    public mutating func append(_ entries: [Entry]) throws(StorageError) {
        guard let first = entries.first else { return }
        if first.index == 0 || first.index > lastIndex + 1 {
            throw .gap(lastIndex: lastIndex, first: first.index)
        }
        for (k, e) in entries.enumerated() where e.index != first.index + UInt64(k) {
            throw .notContiguous(at: e.index)
        }
        log.removeSubrange(Int(first.index - 1)...)
        log.append(contentsOf: entries)
    }
}
