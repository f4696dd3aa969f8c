/// The leader's view of one follower's log.
struct Progress: Sendable {
    typealias State = ProgressState
    var match: UInt64 = 0
    var next: UInt64
    var state: State = .probe
    /// In probe state: an append was sent and no answer arrived yet (one probe at a time).
    var probeSent = false
    /// Last index and entry bytes of each append in flight (replicate state), oldest first;
    /// bounded by the window (count and bytes).
    var inflights: [(index: UInt64, bytes: Int)] = []
    var inflightBytes = 0
    /// Heard from since the last check-quorum round.
    var recentActive = false
    /// In snapshot state: the index of the snapshot sent.
    var pendingSnapshot: UInt64 = 0
    var isLearner = false

    init(next: UInt64) { self.next = next }

    func isPaused(window: Int, maxBytes: Int) -> Bool {
        switch state {
        case .probe: return probeSent
        case .replicate: return inflightsFull(window: window, maxBytes: maxBytes)
        case .snapshot: return true
        }
    }

    mutating func becomeProbe() {
        // After a snapshot the follower continues after it (or is re-probed after a failure).
        next = state == .snapshot ? max(match + 1, pendingSnapshot + 1) : match + 1
        state = .probe; probeSent = false; inflights.removeAll(); inflightBytes = 0; pendingSnapshot = 0
    }

    mutating func becomeSnapshot(_ index: UInt64) {
        state = .snapshot; pendingSnapshot = index; probeSent = false; inflights.removeAll()
        inflightBytes = 0
    }

    func inflightsFull(window: Int, maxBytes: Int) -> Bool {
        inflights.count >= window || (maxBytes > 0 && inflightBytes >= maxBytes)
    }

    mutating func addInflight(_ index: UInt64, bytes: Int) {
        inflights.append((index, bytes)); inflightBytes += bytes
    }

    mutating func freeFirstInflight() {
        guard !inflights.isEmpty else { return }
        inflightBytes -= inflights.removeFirst().bytes
    }

    mutating func becomeReplicate() {
        state = .replicate; next = match + 1; probeSent = false; inflights.removeAll(); inflightBytes = 0
    }

    /// An accepted append up to `index`. Returns whether `match` moved.
    mutating func maybeUpdate(_ index: UInt64) -> Bool {
        var updated = false
        if match < index { match = index; updated = true; probeSent = false }
        next = max(next, index + 1)
        return updated
    }

    /// A rejection of the append whose preceding index was `rejected`; `hint` is the highest
    /// index that may still match. Returns false if the rejection is stale.
    mutating func maybeDecrTo(rejected: UInt64, hint: UInt64) -> Bool {
        if state == .snapshot { return false }
        if state == .replicate {
            if rejected <= match { return false }
            becomeProbe()
            next = max(min(rejected, hint + 1), match + 1)
            return true
        }
        if next == 0 || next - 1 != rejected { return false }
        next = max(min(rejected, hint + 1), match + 1)
        probeSent = false
        return true
    }

    mutating func freeInflights(upTo index: UInt64) {
        var k = 0
        while k < inflights.count, inflights[k].index <= index { inflightBytes -= inflights[k].bytes; k += 1 }
        if k > 0 { inflights.removeFirst(k) }
    }
}
