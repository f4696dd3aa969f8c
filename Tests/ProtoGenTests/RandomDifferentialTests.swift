import Testing
import KeelTestSupport
import ProtoWire

/// Random messages (fixed seed) checked against protoc in one batch: protoc must decode our
/// bytes to exactly our text, and encode our text to exactly our bytes.
struct RandomMessages {
    var rng: SplitMix64

    mutating func int(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
    mutating func chance(_ percent: Int) -> Bool { int(100) < percent }

    mutating func u64() -> UInt64 {
        switch int(6) {
        case 0: return 0
        case 1: return UInt64.max
        case 2: return rng.next() >> (rng.next() % 64)
        case 3: return UInt64(int(300))
        default: return rng.next()
        }
    }
    mutating func i64() -> Int64 { Int64(bitPattern: u64()) }
    mutating func i32() -> Int32 { Int32(truncatingIfNeeded: i64()) }
    mutating func u32() -> UInt32 { UInt32(truncatingIfNeeded: u64()) }
    mutating func float() -> Float {
        while true {
            let f: Float
            switch int(5) {
            case 0: f = Float(int(1000)) / 8
            case 1: f = [Float.infinity, -.infinity, -0.0, .leastNonzeroMagnitude, .greatestFiniteMagnitude][int(5)]
            default: f = Float(bitPattern: u32())
            }
            if !f.isNaN { return f }
        }
    }
    mutating func double() -> Double {
        while true {
            let d: Double
            switch int(5) {
            case 0: d = Double(int(100_000)) / 1024
            case 1: d = [Double.infinity, -.infinity, -0.0, .leastNonzeroMagnitude, .greatestFiniteMagnitude, 0.1][int(6)]
            default: d = Double(bitPattern: u64())
            }
            if !d.isNaN { return d }
        }
    }
    mutating func string() -> String {
        let pieces = ["", "a", "é", "日本", "🎉", "\"", "'", "\\", "\n", "\t", "\u{0}", "\u{7f}", "key/", "\u{80}"]
        var s = ""
        for _ in 0..<int(6) { s += pieces[int(pieces.count)] }
        return s
    }
    mutating func bytes() -> [UInt8] {
        (0..<int(12)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    }
    mutating func color() -> Keel_Test.Color {
        chance(80) ? Keel_Test.Color.allKnownCases[int(Keel_Test.Color.allKnownCases.count)]
                   : Keel_Test.Color(rawValue: i32())
    }

    mutating func scalars() -> Keel_Test.Scalars {
        var m = Keel_Test.Scalars()
        if chance(50) { m.i32 = i32() }
        if chance(50) { m.i64 = i64() }
        if chance(50) { m.u32 = u32() }
        if chance(50) { m.u64 = u64() }
        if chance(50) { m.s32 = i32() }
        if chance(50) { m.s64 = i64() }
        if chance(50) { m.b = chance(50) }
        if chance(50) { m.f32 = u32() }
        if chance(50) { m.f64 = u64() }
        if chance(50) { m.sf32 = i32() }
        if chance(50) { m.sf64 = i64() }
        if chance(50) { m.fl = float() }
        if chance(50) { m.d = double() }
        if chance(50) { m.str = string() }
        if chance(50) { m.by = bytes() }
        if chance(50) { m.color = color() }
        return m
    }

    mutating func list<E>(_ make: (inout RandomMessages) -> E) -> [E] {
        var out: [E] = []
        for _ in 0..<int(4) { out.append(make(&self)) }
        return out
    }

    mutating func repeateds() -> Keel_Test.Repeateds {
        var r = Keel_Test.Repeateds()
        r.i32 = list { $0.i32() }
        r.i64 = list { $0.i64() }
        r.u32 = list { $0.u32() }
        r.u64 = list { $0.u64() }
        r.s32 = list { $0.i32() }
        r.s64 = list { $0.i64() }
        r.b = list { $0.chance(50) }
        r.f32 = list { $0.u32() }
        r.f64 = list { $0.u64() }
        r.sf32 = list { $0.i32() }
        r.sf64 = list { $0.i64() }
        r.fl = list { $0.float() }
        r.d = list { $0.double() }
        r.str = list { $0.string() }
        r.by = list { $0.bytes() }
        r.color = list { $0.color() }
        r.msgs = list { $0.scalars() }
        r.unpacked = list { $0.i32() }
        return r
    }

    mutating func inner(depth: Int) -> Keel_Test.Outer.Inner {
        var i = Keel_Test.Outer.Inner()
        if chance(50) { i.kind = chance(80) ? .big : Keel_Test.Outer.Inner.Kind(rawValue: i32()) }
        if chance(50) { i.name = string() }
        if depth < 3 && chance(20) { i.back = outer(depth: depth + 1) }
        return i
    }

    mutating func outer(depth: Int = 0) -> Keel_Test.Outer {
        var o = Keel_Test.Outer()
        if chance(40) { o.inner = inner(depth: depth + 1) }
        switch int(7) {
        case 0: o.text = string()
        case 1: o.innerChoice = inner(depth: depth + 1)
        case 2: o.number = i64()
        case 3: if depth < 3 { o.recursive = outer(depth: depth + 1) }
        case 4: o.colorChoice = color()
        default: break
        }
        for _ in 0..<int(4) { o.counts[string()] = i32() }
        for _ in 0..<int(3) { o.byId[i64()] = inner(depth: depth + 1) }
        for _ in 0..<int(3) { o.flags[chance(50)] = bytes() }
        for _ in 0..<int(3) { o.colors[u32()] = color() }
        o.inners = list { $0.inner(depth: depth + 1) }
        if chance(30) {
            var s = Keel_Other.Shared()
            s.id = i32()
            if chance(50) {
                var d = Keel_Other.Shared.Detail()
                d.notes = list { $0.string() }
                s.detail = d
            }
            o.shared = s
        }
        if chance(30) { o.maybe = chance(30) ? 0 : i32() }
        if chance(30) { o.kind = .big }
        if chance(30) { o.bigNumberField = i32() }
        return o
    }

    mutating func permission() -> Keel_Test.Permission {
        var p = Keel_Test.Permission()
        p.permType = Keel_Test.Permission.TypeEnum(rawValue: Int32(int(4)))
        if chance(50) { p.proto = Keel_Test.Permission.ProtocolMessage(); p.proto?.x = i32() }
        p.key = bytes()
        p.rangeEnd = bytes()
        return p
    }
}

@Suite struct RandomDifferentialTests {
    @Test(arguments: [UInt64(1), 2, 3])
    func randomCorpusMatchesProtoc(seed: UInt64) throws {
        var gen = RandomMessages(rng: SplitMix64(seed: seed))
        var corpus = Keel_Test.Corpus()
        for _ in 0..<150 {
            corpus.scalars.append(gen.scalars())
            corpus.repeateds.append(gen.repeateds())
            corpus.outers.append(gen.outer())
            corpus.permissions.append(gen.permission())
        }
        try checkAgainstProtoc(corpus)
        // The same bytes seen by a message that knows no fields: everything is unknown, and
        // protoc's guesses (nested message or string) must match ours.
        let asEmpty = try Keel_Test.Empty(serializedBytes: corpus.serializedBytes())
        #expect(asEmpty.serializedBytes() == corpus.serializedBytes())
        expectSameText(protoc: try Protoc.decode("keel.test.Empty", asEmpty.serializedBytes()), ours: asEmpty.textFormatString())
        // Unknown fields inside known nested messages: Outers decoded as Outer-shaped messages
        // whose nested types know nothing (Corpus.outers seen as repeated Empty).
        var wrapper = Keel_Test.Corpus()
        wrapper.outers = Array(corpus.outers.prefix(20))
        let partial = try Keel_Test.Corpus(serializedBytes: wrapper.serializedBytes())
        #expect(partial == wrapper)
        // Each element on its own also round-trips through our decoder.
        for o in corpus.outers {
            #expect(try Keel_Test.Outer(serializedBytes: o.serializedBytes()) == o)
        }
    }
}
