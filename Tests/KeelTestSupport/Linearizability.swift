/// A linearizability checker for a key-value store, in the style of Wing & Gong with Lowe's
/// memoization (as in Porcupine), used by the Raft simulator (RaftTests) and the multi-process
/// fault tests (ClusterTests).
///
/// The model is a map from keys to optional values with four operations, each on one key: put,
/// get, delete (reporting whether the key existed) and compare-and-set (a txn that puts `new` if
/// the value equals `expect`, nil meaning "absent"). Such a map is linearizable iff each key's
/// sub-history is (P-compositionality), so keys are checked independently. Per key, the search
/// looks for a total order that respects real time and the sequential specification, backtracking
/// through a linked list of call/return events and caching (linearized set, state) pairs already
/// explored.
///
/// Operations with unknown outcome (timeout, crash, connection lost after sending) have
/// `ret == nil`: they may take effect at any time after `call`, or never (linearized after
/// everything else), and their results are not checked.
public enum Linearizability {
    public struct Op: Sendable, Hashable {
        public enum Kind: Sendable, Hashable {
            /// Writes `value`.
            case put(UInt64)
            /// Read `value` (nil: the key was absent).
            case get(UInt64?)
            /// Deleted the key; `existed`: the response said one key was deleted.
            case delete(existed: Bool)
            /// If the value equals `expect` (nil: absent), write `new`; `succeeded` as the response said.
            case cas(expect: UInt64?, new: UInt64, succeeded: Bool)
        }
        public var key: Int
        public var kind: Kind
        /// Times of invocation and response (any monotonic unit); `ret == nil`: the outcome is unknown.
        public var call: Int
        public var ret: Int?
        public var client: Int

        public init(key: some BinaryInteger, kind: Kind, call: Int, ret: Int?, client: Int = 0) {
            self.key = Int(key)
            self.kind = kind
            self.call = call
            self.ret = ret
            self.client = client
        }
    }

    public enum Verdict: Sendable, Hashable { case linearizable, violation, inconclusive }

    /// The sequential specification of one key: whether `op` (with its observed result, checked
    /// only when `known`) is legal in `state`, and the state after it.
    static func step(_ state: UInt64?, _ kind: Op.Kind, known: Bool) -> (ok: Bool, next: UInt64?) {
        switch kind {
        case .put(let v):
            return (true, v)
        case .get(let v):
            return (!known || v == state, state)
        case .delete(let existed):
            return (!known || existed == (state != nil), nil)
        case .cas(let expect, let new, let succeeded):
            let match = state == expect
            return (!known || succeeded == match, match ? new : state)
        }
    }

    /// Whether the whole history is linearizable.
    public static func check(_ history: [Op]) -> Bool {
        firstViolation(history) == nil
    }

    /// The first key whose history is not linearizable, or nil. (An inconclusive key, one whose
    /// search ran out of budget, is not reported here; see `verdicts`.)
    public static func firstViolation(_ history: [Op]) -> Int? {
        verdicts(history).first { $0.value == .violation }?.key
    }

    /// The verdict per key, in key order. Pruning that keeps the verdict exact: reads with unknown
    /// outcome are dropped (they change nothing), and on keys that only see puts and gets, so are
    /// puts with unknown outcome whose value no read returned (linearizing them after everything else
    /// is always possible, and removing them from any linearization leaves it legal).
    public static func verdicts(_ history: [Op], budget: Int = 2_000_000) -> [(key: Int, value: Verdict)] {
        var readValues: [Int: Set<UInt64>] = [:]
        var onlyPutsAndGets: [Int: Bool] = [:]
        for op in history {
            switch op.kind {
            case .get(let v?) where op.ret != nil: readValues[op.key, default: []].insert(v)
            case .put, .get: break
            case .delete, .cas: onlyPutsAndGets[op.key] = false
            }
        }
        var byKey: [Int: [Op]] = [:]
        for op in history {
            if op.ret == nil {
                if case .get = op.kind { continue }
                if case .put(let v) = op.kind, onlyPutsAndGets[op.key] ?? true,
                   !(readValues[op.key]?.contains(v) ?? false) { continue }
            }
            byKey[op.key, default: []].append(op)
        }
        return byKey.keys.sorted().map { ($0, checkKey(byKey[$0]!, budget: budget)) }
    }

    private struct CacheKey: Hashable { var bits: [UInt64]; var state: UInt64? }

    /// Wing-Gong-Lowe search over one key's history; `budget` bounds the search steps.
    public static func checkKey(_ ops: [Op], budget: Int = 2_000_000) -> Verdict {
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
        for (p, e) in events.enumerated() where e.isReturn { returnPos[e.op] = p }
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
                let (ok, newState) = step(state, op.kind, known: op.ret != nil)
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

    /// The same search, under its first name (a key of the store is a register).
    public static func checkRegister(_ ops: [Op], budget: Int = 2_000_000) -> Verdict {
        checkKey(ops, budget: budget)
    }

    /// A readable line per op of one key (for failure messages), sorted by call time; `last` bounds it.
    public static func describe(_ history: [Op], key: Int, last: Int = 60) -> String {
        let ops = history.filter { $0.key == key }.sorted { $0.call < $1.call }
        func v(_ x: UInt64?) -> String { x.map(String.init) ?? "nil" }
        return ops.suffix(last).map { op -> String in
            let r = op.ret.map(String.init) ?? "?"
            let what: String
            switch op.kind {
            case .put(let x): what = "put(\(x))"
            case .get(let x): what = "get->\(v(x))"
            case .delete(let existed): what = "delete->\(op.ret == nil ? "?" : existed ? "1" : "0")"
            case .cas(let e, let n, let ok): what = "cas(\(v(e))->\(n))->\(op.ret == nil ? "?" : String(ok))"
            }
            return "c\(op.client) \(what) [\(op.call),\(r)]"
        }.joined(separator: "\n")
    }
}
