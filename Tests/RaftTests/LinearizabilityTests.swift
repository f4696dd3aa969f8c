import enum KeelTestSupport.Linearizability
import Testing

@Suite("Linearizability checker")
struct LinearizabilityTests {
    typealias Op = Linearizability.Op
    static func put(_ v: UInt64, _ call: Int, _ ret: Int?, key: UInt8 = 0) -> Op {
        Op(key: key, kind: .put(v), call: call, ret: ret)
    }
    static func get(_ v: UInt64?, _ call: Int, _ ret: Int?, key: UInt8 = 0) -> Op {
        Op(key: key, kind: .get(v), call: call, ret: ret)
    }

    @Test("sequential histories: a read sees the latest completed write")
    func sequential() {
        #expect(Linearizability.check([Self.put(1, 0, 10), Self.get(1, 20, 30)]))
        #expect(Linearizability.check([Self.get(nil, 0, 5), Self.put(1, 10, 20), Self.put(2, 30, 40), Self.get(2, 50, 60)]))
        #expect(!Linearizability.check([Self.put(1, 0, 10), Self.get(nil, 20, 30)]))            // lost write
        #expect(!Linearizability.check([Self.put(1, 0, 5), Self.put(2, 10, 15), Self.get(1, 20, 25)]))   // stale read
        #expect(!Linearizability.check([Self.get(7, 0, 5)]))                                       // value from nowhere
    }

    @Test("concurrent operations may take effect in either order")
    func concurrent() {
        #expect(Linearizability.check([Self.put(1, 0, 10), Self.get(nil, 5, 15)]))
        #expect(Linearizability.check([Self.put(1, 0, 10), Self.get(1, 5, 15)]))
        #expect(Linearizability.check([Self.put(1, 0, 10), Self.put(2, 0, 10), Self.get(2, 11, 12), Self.get(2, 13, 14)]))
        #expect(Linearizability.check([Self.put(1, 0, 10), Self.put(2, 0, 10), Self.get(1, 11, 12), Self.get(1, 13, 14)]))
        // Two reads after both writes completed disagree on the final value: impossible.
        #expect(!Linearizability.check([Self.put(1, 0, 10), Self.put(2, 0, 10), Self.get(1, 11, 12), Self.get(2, 13, 14)]))
        // Reads concurrent with two writes may see 1 then 2, but never 2 then 1 once 2 was read after put 2 ended.
        #expect(Linearizability.check([Self.put(1, 0, 100), Self.put(2, 0, 100), Self.get(1, 10, 20), Self.get(2, 30, 40)]))
        #expect(!Linearizability.check([Self.put(1, 0, 5), Self.put(2, 10, 100), Self.get(2, 20, 30), Self.get(1, 40, 50)]))
    }

    @Test("operations with unknown outcome may take effect later or never, but not undo an observation")
    func unknownOutcome() {
        #expect(Linearizability.check([Self.put(1, 0, nil), Self.get(nil, 10, 20)]))      // never happened
        #expect(Linearizability.check([Self.put(1, 0, nil), Self.get(nil, 10, 20), Self.get(1, 30, 40)]))  // later
        #expect(!Linearizability.check([Self.put(1, 0, nil), Self.get(1, 10, 20), Self.get(nil, 30, 40)]))
        // A put with unknown outcome cannot take effect before it was called.
        #expect(!Linearizability.check([Self.get(1, 0, 5), Self.put(1, 10, nil)]))
        // A read with unknown outcome is ignored.
        #expect(Linearizability.check([Self.get(99, 0, nil)]))
    }

    @Test("unread writes with unknown outcome are pruned; the search is bounded and says so")
    func pruningAndBudget() {
        // 40 writes that timed out and were never read would make the search exponential;
        // they are dropped, and the violation among the rest is still found.
        var hist = (0..<40).map { Self.put(UInt64(1000 + $0), $0, nil) }
        hist += [Self.put(1, 0, 10), Self.put(2, 20, 30), Self.get(1, 40, 50)]
        #expect(Linearizability.verdicts(hist).map(\.value) == [.violation])
        hist[hist.count - 1] = Self.get(2, 40, 50)
        #expect(Linearizability.verdicts(hist).map(\.value) == [.linearizable])
        // A tiny budget ends the search as inconclusive instead of running on.
        let concurrent = (0..<12).map { Self.put(UInt64($0), 0, 100) } + [Self.get(99, 101, 102)]
        #expect(Linearizability.checkRegister(concurrent, budget: 50) == .inconclusive)
        #expect(Linearizability.checkRegister(concurrent) == .violation)
    }

    @Test("keys are checked independently (a violation on one key is found among others)")
    func perKey() {
        let ok = [Self.put(1, 0, 10, key: 1), Self.get(1, 20, 30, key: 1)]
        let bad = [Self.put(5, 0, 10, key: 2), Self.get(nil, 20, 30, key: 2)]
        #expect(Linearizability.firstViolation(ok + [Self.get(nil, 0, 1, key: 2)]) == nil)
        #expect(Linearizability.firstViolation(ok + bad) == 2)
    }

    @Test("a larger history with many concurrent clients is checked quickly and correctly")
    func larger() {
        // 5 clients, each writing its own increasing values and reading, staggered: build a
        // linearizable history from a sequential execution with overlap, then corrupt one read.
        var hist: [Op] = []
        var value: UInt64? = nil
        var t = 0
        for k in 0..<400 {
            // Sequential truth at time t..t+1; stretch the interval to overlap neighbours.
            if k % 3 == 0 {
                value = UInt64(k)
                hist.append(Self.put(UInt64(k), t - 3, t + 3))
            } else {
                hist.append(Self.get(value, t - 3, t + 3))
            }
            t += 4
        }
        #expect(Linearizability.check(hist))
        var bad = hist
        bad[301] = Self.get(UInt64(3), bad[301].call, bad[301].ret)   // a read far in the past
        #expect(!Linearizability.check(bad))
    }
}
