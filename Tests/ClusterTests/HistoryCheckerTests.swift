import KeelTestSupport
import Testing

/// The KV model of the linearizability checker beyond puts and gets (those are tested in
/// RaftTests/LinearizabilityTests): deletes that report whether the key existed, compare-and-set
/// txns, operations with unknown outcome, and pruning that stays exact with them.
@Suite("History checker: KV model")
struct HistoryCheckerTests {
    typealias Op = Linearizability.Op
    static func put(_ v: UInt64, _ call: Int, _ ret: Int?, key: Int = 0) -> Op { Op(key: key, kind: .put(v), call: call, ret: ret) }
    static func get(_ v: UInt64?, _ call: Int, _ ret: Int?, key: Int = 0) -> Op { Op(key: key, kind: .get(v), call: call, ret: ret) }
    static func del(_ existed: Bool, _ call: Int, _ ret: Int?, key: Int = 0) -> Op {
        Op(key: key, kind: .delete(existed: existed), call: call, ret: ret)
    }
    static func cas(_ expect: UInt64?, _ new: UInt64, _ ok: Bool, _ call: Int, _ ret: Int?, key: Int = 0) -> Op {
        Op(key: key, kind: .cas(expect: expect, new: new, succeeded: ok), call: call, ret: ret)
    }

    @Test("deletes: the key is gone afterwards, and 'existed' must match the state")
    func deletes() {
        #expect(Linearizability.check([Self.put(1, 0, 10), Self.del(true, 20, 30), Self.get(nil, 40, 50)]))
        #expect(!Linearizability.check([Self.put(1, 0, 10), Self.del(true, 20, 30), Self.get(1, 40, 50)]))
        #expect(!Linearizability.check([Self.del(true, 0, 10)]))                        // nothing to delete
        #expect(!Linearizability.check([Self.put(1, 0, 10), Self.del(false, 20, 30)]))   // it was there
        #expect(Linearizability.check([Self.put(1, 0, 30), Self.del(false, 10, 20)]))    // concurrent: before the put
        #expect(Linearizability.check([Self.put(1, 0, 30), Self.del(true, 10, 20), Self.get(nil, 40, 50)]))
    }

    @Test("compare-and-set: succeeds exactly when the value matches (nil: absent)")
    func compareAndSet() {
        #expect(Linearizability.check([Self.cas(nil, 1, true, 0, 10), Self.get(1, 20, 30)]))
        #expect(!Linearizability.check([Self.cas(nil, 1, false, 0, 10)]))                // absent: must succeed
        #expect(Linearizability.check([Self.put(1, 0, 10), Self.cas(1, 2, true, 20, 30), Self.cas(1, 3, false, 40, 50),
                                       Self.get(2, 60, 70)]))
        #expect(!Linearizability.check([Self.put(1, 0, 10), Self.cas(1, 2, true, 20, 30), Self.cas(1, 3, true, 40, 50)]))
        #expect(!Linearizability.check([Self.put(1, 0, 10), Self.cas(1, 2, false, 20, 30)]))
        // Two concurrent CAS from the same value: only one may win.
        #expect(Linearizability.check([Self.put(1, 0, 10), Self.cas(1, 2, true, 20, 40), Self.cas(1, 3, false, 20, 40)]))
        #expect(!Linearizability.check([Self.put(1, 0, 10), Self.cas(1, 2, true, 20, 40), Self.cas(1, 3, true, 20, 40)]))
        // A failed CAS leaves the value alone.
        #expect(!Linearizability.check([Self.put(1, 0, 10), Self.cas(7, 8, false, 20, 30), Self.get(8, 40, 50)]))
    }

    @Test("unknown outcomes: may apply later or never; a CAS applies only if it matched")
    func unknownOutcomes() {
        #expect(Linearizability.check([Self.put(1, 0, 10), Self.del(false, 20, nil), Self.get(1, 30, 40)]))
        #expect(Linearizability.check([Self.put(1, 0, 10), Self.del(false, 20, nil), Self.get(nil, 30, 40)]))
        #expect(Linearizability.check([Self.put(1, 0, 10), Self.cas(1, 2, false, 20, nil), Self.get(2, 30, 40)]))
        // The unknown CAS expected 9, never the value: it cannot have written 2.
        #expect(!Linearizability.check([Self.put(1, 0, 10), Self.cas(9, 2, false, 20, nil), Self.get(2, 30, 40)]))
        // Applied (seen), then a later read cannot go back.
        #expect(!Linearizability.check([Self.put(1, 0, 10), Self.cas(1, 2, false, 20, nil), Self.get(2, 30, 40),
                                        Self.get(1, 50, 60)]))
    }

    @Test("an unknown put nobody read still explains a delete that found the key (no pruning with deletes)")
    func pruningStaysExact() {
        // put(5) timed out; a later delete found a key: only the unknown put can have created it.
        #expect(Linearizability.check([Self.put(5, 0, nil), Self.del(true, 10, 20)]))
        #expect(!Linearizability.check([Self.put(5, 30, nil), Self.del(true, 10, 20)]))   // called after the delete
        // A failed CAS on an absent key is explained the same way.
        #expect(Linearizability.check([Self.put(5, 0, nil), Self.cas(nil, 6, false, 10, 20)]))
    }

    @Test("keys are independent; the verdicts name the bad key")
    func perKey() {
        let h = [Self.put(1, 0, 10, key: 3), Self.get(1, 20, 30, key: 3), Self.del(true, 0, 10, key: 7)]
        #expect(Linearizability.firstViolation(h) == 7)
        #expect(Linearizability.verdicts(h).map(\.value) == [.linearizable, .violation])
        #expect(Linearizability.describe(h, key: 7).contains("delete->1"))
    }
}
