/// A linearizability checker for a key-value store of registers, in the style of Wing & Gong
/// with Lowe's memoization (as in Porcupine): per key (a KV map of registers is linearizable
/// iff each key's history is), search for a total order that respects real time and the
/// register's sequential specification, backtracking through a linked list of call/return
/// events and caching (linearized set, state) pairs already explored.
enum Linearizability {
    struct Op: Sendable, Hashable {
        enum Kind: Sendable, Hashable {
            /// Writes `value`.
            case put(UInt64)
            /// Read `value` (nil: the key was never written).
            case get(UInt64?)
        }
        var key: UInt8
        var kind: Kind
        /// Virtual times of invocation and response; `ret == nil`: the outcome is unknown
        /// (timeout, crash), so the op may take effect at any time after `call`, or never.
        var call: Int
        var ret: Int?
        var client: Int = 0
    }

    enum Verdict: Sendable, Hashable { case linearizable, violation, inconclusive }

    /// Whether the whole history is linearizable. Reads with unknown outcome are ignored.
    static func check(_ history: [Op]) -> Bool {
        firstViolation(history) == nil
    }

    /// The first key whose history is not linearizable, or nil. (An inconclusive key, one
    /// whose search ran out of budget, is not reported here; see `verdicts`.)
    static func firstViolation(_ history: [Op]) -> UInt8? {
        verdicts(history).first { $0.value == .violation }?.key
    }

    /// The verdict per key, in key order. Pruning that keeps the verdict exact: reads with
    /// unknown outcome are dropped (they change nothing), and so are writes with unknown outcome
    /// whose value no read returned (linearizing them after everything else is always possible).
    static func verdicts(_ history: [Op], budget: Int = 2_000_000) -> [(key: UInt8, value: Verdict)] {
        var byKey: [UInt8: [Op]] = [:]
        var readValues: [UInt8: Set<UInt64>] = [:]
        for op in history {
            if case .get(let v?) = op.kind, op.ret != nil { readValues[op.key, default: []].insert(v) }
        }
        for op in history {
            switch op.kind {
            case .get: if op.ret == nil { continue }
            case .put(let v): if op.ret == nil && !(readValues[op.key]?.contains(v) ?? false) { continue }
            }
            byKey[op.key, default: []].append(op)
        }
        return byKey.keys.sorted().map { ($0, checkRegister(byKey[$0]!, budget: budget)) }
    }

    private struct CacheKey: Hashable { var bits: [UInt64]; var state: UInt64? }

    /// Wing-Gong-Lowe search over one register's history; `budget` bounds the search steps.
    static func checkRegister(_ ops: [Op], budget: Int = 2_000_000) -> Verdict {
        let n = ops.count
        if n == 0 { return .linearizable }
        // Events: (time, isReturn, op). Unknown returns happen after everything else. At equal
        // times calls come first (an op returning at t and one called at t count as concurrent).
        struct Event { var time: Int; var isReturn: Bool; var op: Int }
        var events: [Event] = []
        events.reserveCapacity(2 * n)
        for (k, op) in ops.enumerated() {
            events.append(Event(time: op.call, isReturn: false, op: k))
            events.append(Event(time: op.ret ?? Int.max, isReturn: true, op: k))
        }
        events.sort { a, b in
            if a.time != b.time { return a.time < b.time }
            if a.isReturn != b.isReturn { return !a.isReturn }
            return a.op < b.op
        }
        // Doubly linked list over event positions; position m = events.count is the head sentinel.
        let m = events.count
        var next = [Int](repeating: -1, count: m + 1)
        var prev = [Int](repeating: -1, count: m + 1)
        var returnPos = [Int](repeating: -1, count: n)
        for (p, e) in events.enumerated() {
            if e.isReturn { returnPos[e.op] = p }
        }
        var last = m
        for p in 0..<m { next[last] = p; prev[p] = last; last = p }
        next[last] = -1

        func lift(_ p: Int) {   // removes a call at p and its return
            next[prev[p]] = next[p]
            if next[p] >= 0 { prev[next[p]] = prev[p] }
            let r = returnPos[events[p].op]
            next[prev[r]] = next[r]
            if next[r] >= 0 { prev[next[r]] = prev[r] }
        }
        func unlift(_ p: Int) {
            let r = returnPos[events[p].op]
            if next[r] >= 0 { prev[next[r]] = r }
            next[prev[r]] = r
            if next[p] >= 0 { prev[next[p]] = p }
            next[prev[p]] = p
        }

        var bits = [UInt64](repeating: 0, count: (n + 63) / 64)
        var state: UInt64? = nil
        var cache = Set<CacheKey>()
        var stack: [(pos: Int, state: UInt64?)] = []
        var entry = next[m]
        var steps = 0
        while next[m] >= 0 {
            steps += 1
            if steps > budget { return .inconclusive }
            if entry < 0 { return .violation }   // cannot happen: a return event ends every list
            let e = events[entry]
            if !e.isReturn {
                let op = ops[e.op]
                var ok = true
                var newState = state
                switch op.kind {
                case .put(let v): newState = v
                case .get(let v): ok = v == state
                }
                if ok {
                    bits[e.op / 64] |= 1 << UInt64(e.op % 64)
                    if cache.insert(CacheKey(bits: bits, state: newState)).inserted {
                        stack.append((entry, state))
                        state = newState
                        lift(entry)
                        entry = next[m]
                        continue
                    }
                    bits[e.op / 64] &= ~(1 << UInt64(e.op % 64))
                }
                entry = next[entry]
            } else {
                // An op returned before it could be linearized: undo the latest choice.
                guard let top = stack.popLast() else { return .violation }
                let op = events[top.pos].op
                bits[op / 64] &= ~(1 << UInt64(op % 64))
                state = top.state
                unlift(top.pos)
                entry = next[top.pos]
            }
        }
        return .linearizable
    }
}
