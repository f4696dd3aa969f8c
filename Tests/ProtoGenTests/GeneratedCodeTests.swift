import Foundation
import Testing
import KeelTestSupport
import ProtoWire

typealias T = Keel_Test

/// Checks a message against protoc both ways: protoc decodes our bytes to our text, and
/// protoc encodes our text to our bytes.
func checkAgainstProtoc<M: ProtoMessage>(_ m: M, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let bytes = m.serializedBytes()
    #expect(bytes.count == m.serializedSize, sourceLocation: sourceLocation)
    let text = m.textFormatString()
    expectSameText(protoc: try Protoc.decode(M.protoMessageName, bytes), ours: text, sourceLocation: sourceLocation)
    let protocBytes = try Protoc.encode(M.protoMessageName, text: text)
    #expect(protocBytes == bytes, sourceLocation: sourceLocation)
    let back = try M(serializedBytes: bytes)
    #expect(back == m, sourceLocation: sourceLocation)
}

/// Compares text, reporting the first differing line rather than two huge strings.
func expectSameText(protoc protocText: String, ours text: String, sourceLocation: SourceLocation = #_sourceLocation) {
    guard protocText != text else { return }
    let a = protocText.split(separator: "\n", omittingEmptySubsequences: false)
    let b = text.split(separator: "\n", omittingEmptySubsequences: false)
    let i = (0..<min(a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
    let theirs = i < a.count ? String(a[i]) : "<end>"
    let ours = i < b.count ? String(b[i]) : "<end>"
    Issue.record("text differs at line \(i + 1): protoc \(theirs.debugDescription), ours \(ours.debugDescription)",
                 sourceLocation: sourceLocation)
}

func edgeScalars() -> [T.Scalars] {
    var out: [T.Scalars] = [T.Scalars()]
    var a = T.Scalars()
    a.i32 = .min; a.i64 = .min; a.u32 = .max; a.u64 = .max; a.s32 = .min; a.s64 = .min
    a.b = true; a.f32 = .max; a.f64 = .max; a.sf32 = .min; a.sf64 = .min
    a.fl = -Float.greatestFiniteMagnitude; a.d = -Double.leastNonzeroMagnitude
    a.str = "héllo \"q\" 'a' \\ \n\t\r\u{1}\u{7f} 日本 🎉"
    a.by = [0, 1, 0x7f, 0x80, 0xfe, 0xff, UInt8(ascii: "\""), UInt8(ascii: "\\")]
    a.color = .negative
    out.append(a)
    var b = T.Scalars()
    b.i32 = .max; b.i64 = .max; b.u32 = 1; b.u64 = 1; b.s32 = .max; b.s64 = .max
    b.f32 = 1; b.f64 = 1; b.sf32 = .max; b.sf64 = .max
    b.fl = 0.1; b.d = 1e300; b.str = "x"; b.by = [0]; b.color = T.Color(rawValue: 77)
    out.append(b)
    var c = T.Scalars()
    c.i32 = -1; c.i64 = -1; c.s32 = -1; c.s64 = -1; c.fl = -0.0; c.d = -0.0
    c.color = .crimson  // alias of RED
    out.append(c)
    var d = T.Scalars()
    d.fl = .infinity; d.d = -.infinity; d.f32 = 0; d.str = String(repeating: "ab", count: 100)
    d.by = [UInt8](repeating: 9, count: 300)
    out.append(d)
    return out
}

@Suite struct GeneratedCodeTests {
    @Test func scalarEdgeValuesMatchProtoc() throws {
        for m in edgeScalars() {
            try checkAgainstProtoc(m)
        }
    }

    @Test func defaultsAreOmitted() throws {
        var m = T.Scalars()
        #expect(m.serializedBytes() == [])
        m.fl = -0.0  // protoc writes negative zero (its bit pattern is not zero)
        #expect(m.serializedBytes() == [0x65, 0, 0, 0, 0x80])
        m = T.Scalars()
        m.color = .colorUnspecified
        m.str = ""
        #expect(m.serializedSize == 0)
    }

    @Test func knownBytes() throws {
        var m = T.Scalars()
        m.i32 = -1
        #expect(m.serializedBytes() == [0x08] + [UInt8](repeating: 0xff, count: 9) + [0x01])
        m = T.Scalars()
        m.s32 = -1
        m.str = "a"
        #expect(m.serializedBytes() == [0x28, 0x01, 0x72, 0x01, 0x61])
    }

    func repeateds() -> T.Repeateds {
        var r = T.Repeateds()
        r.i32 = [0, -1, .max, .min]
        r.i64 = [0, .min, .max]
        r.u32 = [0, 1, .max]
        r.u64 = [.max, 0]
        r.s32 = [-1, 1, .min]
        r.s64 = [.min, .max]
        r.b = [true, false, true]
        r.f32 = [1, .max]
        r.f64 = [2]
        r.sf32 = [-1]
        r.sf64 = [.min]
        r.fl = [1.5, -0.0]
        r.d = [0.1, 0]
        r.str = ["", "a", "é"]
        r.by = [[], [0xff]]
        r.color = [.red, .negative, T.Color(rawValue: 1000)]
        var s = T.Scalars()
        s.i32 = 5
        r.msgs = [T.Scalars(), s]
        r.unpacked = [1, -2, 3]
        return r
    }

    @Test func repeatedFieldsMatchProtoc() throws {
        let r = repeateds()
        try checkAgainstProtoc(r)
        // Packed: field 1 is a single length-delimited record.
        let bytes = r.serializedBytes()
        #expect(bytes.first == 0x0a)
    }

    @Test func unpackedInputIsAccepted() throws {
        // i32 = [1, 2] unpacked, then packed [3], then unpacked field 18 given packed.
        let bytes: [UInt8] = [0x08, 0x01, 0x08, 0x02, 0x0a, 0x01, 0x03, 0x92, 0x01, 0x02, 0x04, 0x05]
        let r = try T.Repeateds(serializedBytes: bytes)
        #expect(r.i32 == [1, 2, 3])
        #expect(r.unpacked == [4, 5])
        // Re-encoded canonically: i32 packed, unpacked field as separate records.
        #expect(r.serializedBytes() == [0x0a, 0x03, 0x01, 0x02, 0x03, 0x90, 0x01, 0x04, 0x90, 0x01, 0x05])
    }

    func richOuter() -> T.Outer {
        var o = T.Outer()
        var inner = T.Outer.Inner()
        inner.kind = .big
        inner.name = "inner"
        var back = T.Outer()
        back.text = "in a cycle"
        inner.back = back
        o.inner = inner
        o.counts = ["b": 2, "a": 1, "": 0]
        o.byId = [5: inner, -1: T.Outer.Inner()]
        o.flags = [true: [1], false: []]
        o.colors = [3: .green, 0: .colorUnspecified]
        o.inners = [T.Outer.Inner(), inner]
        var shared = Keel_Other.Shared()
        shared.id = 7
        shared.detail = Keel_Other.Shared.Detail()
        shared.detail?.notes = ["n1", "n2"]
        o.shared = shared
        o.detail = Keel_Other.Shared.Detail()
        o.maybe = 0
        o.kind = .big
        o.bigNumberField = -7
        var rec = T.Outer()
        rec.number = 0
        o.recursive = rec
        return o
    }

    @Test func nestedMapsOneofsAndCyclesMatchProtoc() throws {
        try checkAgainstProtoc(richOuter())
        var o = T.Outer()
        o.text = ""
        try checkAgainstProtoc(o)
        o.innerChoice = T.Outer.Inner()
        try checkAgainstProtoc(o)
        o.colorChoice = .colorUnspecified
        try checkAgainstProtoc(o)
        o.number = .min
        try checkAgainstProtoc(o)
    }

    @Test func oneofAccessors() throws {
        var o = T.Outer()
        #expect(o.choice == nil)
        #expect(o.text == "")
        o.text = "x"
        #expect(o.choice == .text("x"))
        o.number = 3
        #expect(o.choice == .number(3))
        #expect(o.text == "")
        // A later oneof member on the wire replaces an earlier one.
        let bytes: [UInt8] = [0x12, 0x01, 0x61, 0x20, 0x05]
        #expect(try T.Outer(serializedBytes: bytes).choice == .number(5))
    }

    @Test func optionalFieldPresence() throws {
        var o = T.Outer()
        #expect(o.maybe == nil)
        o.maybe = 0
        #expect(o.serializedBytes() == [0x70, 0x00])
        #expect(try T.Outer(serializedBytes: [0x70, 0x00]).maybe == 0)
    }

    @Test func singularMessagesMerge() throws {
        // Two occurrences of field 1 (inner) merge: kind from the first, name from the second.
        let bytes: [UInt8] = [0x0a, 0x02, 0x08, 0x01, 0x0a, 0x03, 0x12, 0x01, 0x7a]
        let o = try T.Outer(serializedBytes: bytes)
        #expect(o.inner?.kind == .big)
        #expect(o.inner?.name == "z")
        let text = try Protoc.decode("keel.test.Outer", bytes)
        #expect(text == o.textFormatString())
    }

    @Test func stringMapKeysSortByBytesLikeProtoc() throws {
        var o = T.Outer()
        // U+FF21 (EF BC A1) sorts after U+00E9 (C3 A9) and after "z" by bytes.
        // "e\u{301}x" (65 CC 81 78) precedes "\u{E9}a" (C3 A9 61) by bytes, but not by Swift `<`.
        o.counts = ["\u{FF21}": 1, "z": 2, "\u{E9}a": 3, "Z": 4, "": 5, "e\u{301}x": 6]
        try checkAgainstProtoc(o)
        let keys = o.textFormatString().split(separator: "\n").filter { $0.contains("key:") }
        #expect(keys.count == 6)
    }

    @Test func mapDuplicatesAndMissingParts() throws {
        // counts entries: {key "a" value 1}, {key "a" value 2} (last wins), {value 3} (key "" default).
        let bytes: [UInt8] = [0x3a, 0x05, 0x0a, 0x01, 0x61, 0x10, 0x01,
                              0x3a, 0x05, 0x0a, 0x01, 0x61, 0x10, 0x02,
                              0x3a, 0x02, 0x10, 0x03]
        let o = try T.Outer(serializedBytes: bytes)
        #expect(o.counts == ["a": 2, "": 3])
    }

    @Test func unknownFieldsSurviveAndPrintLikeProtoc() throws {
        let full = richOuter().serializedBytes()
        let empty = try T.Empty(serializedBytes: full)
        #expect(empty.unknownFields == full)
        #expect(empty.serializedBytes() == full)
        #expect(try Protoc.decode("keel.test.Empty", full) == empty.textFormatString())
        // Unknown fields after known ones; text lists them last.
        var s = T.Scalars()
        s.i32 = 1
        let extra: [UInt8] = [0xa0, 0x06, 0x2a, 0xad, 0x06, 1, 2, 3, 4, 0xb1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8,
                              0xaa, 0x06, 0x03, 0x61, 0x62, 0x63, 0xb3, 0x06, 0x08, 0x01, 0xb4, 0x06]
        let withUnknown = try T.Scalars(serializedBytes: s.serializedBytes() + extra)
        #expect(withUnknown.i32 == 1)
        #expect(withUnknown.unknownFields == extra)
        #expect(withUnknown.serializedBytes() == s.serializedBytes() + extra)
        #expect(try Protoc.decode("keel.test.Scalars", withUnknown.serializedBytes()) == withUnknown.textFormatString())
    }

    @Test func deepUnknownNestingPrintsLikeProtoc() throws {
        for levels in [9, 10, 11, 30] {
            var payload: [UInt8] = [0x08, 0x01]
            for i in 0..<levels {
                payload = [UInt8((i % 3 + 1) << 3 | 2), UInt8(payload.count)] + payload
            }
            // A group holding it, and a string that almost parses.
            let bytes = payload + [0x2b] + payload + [0x2c, 0x32, 0x02, 0x08, 0x80]
            let e = try T.Empty(serializedBytes: bytes)
            #expect(try Protoc.decode("keel.test.Empty", bytes) == e.textFormatString(), "levels \(levels)")
        }
    }

    @Test func unknownFieldsInsideNestedMessagesPrintLikeProtoc() throws {
        // Outer.inner (field 1) carrying unknown fields 9 (varint), 10 (string), 11 (fixed32).
        let inner: [UInt8] = [0x08, 0x01, 0x48, 0x96, 0x01, 0x52, 0x02, 0x68, 0x69, 0x5d, 1, 0, 0, 0]
        let bytes: [UInt8] = [0x0a, UInt8(inner.count)] + inner + [0xf8, 0x01, 0x07]
        let o = try T.Outer(serializedBytes: bytes)
        #expect(o.inner?.kind == .big)
        #expect(o.inner?.unknownFields == Array(inner.dropFirst(2)))
        #expect(o.unknownFields == [0xf8, 0x01, 0x07])
        #expect(o.serializedBytes() == bytes)
        #expect(try Protoc.decode("keel.test.Outer", bytes) == o.textFormatString())
    }

    @Test func wrongWireTypeForKnownFieldIsKeptAsUnknown() throws {
        // Field 1 (int32) sent as length-delimited.
        let bytes: [UInt8] = [0x0a, 0x01, 0x05]
        let s = try T.Scalars(serializedBytes: bytes)
        #expect(s.i32 == 0)
        #expect(s.unknownFields == bytes)
        #expect(try Protoc.decode("keel.test.Scalars", bytes) == s.textFormatString())
    }

    @Test func unknownEnumValuesSurvive() throws {
        var s = T.Scalars()
        s.color = T.Color(rawValue: 12345)
        let back = try T.Scalars(serializedBytes: s.serializedBytes())
        #expect(back.color.rawValue == 12345)
        #expect(back.color.protoName == nil)
        #expect(back.textFormatString() == "color: 12345\n")
        #expect(T.Color.crimson == T.Color.red)
        #expect(T.Color.red.protoName == "RED")
        #expect(T.Color.allKnownCases.map(\.rawValue) == [0, 1, 2, -3])
    }

    @Test func depthBombIsRejected() throws {
        // Outer.recursive (field 5) nested 150 deep.
        var payload: [UInt8] = []
        for _ in 0..<150 {
            var len: [UInt8] = []
            var n = payload.count
            while n >= 0x80 { len.append(UInt8(n & 0x7f) | 0x80); n >>= 7 }
            len.append(UInt8(n))
            payload = [0x2a] + len + payload
        }
        #expect(throws: ProtoDecodingError.depthLimitExceeded) { try T.Outer(serializedBytes: payload) }
        // 90 levels decode fine.
        var ok = T.Outer()
        for _ in 0..<90 {
            var o = T.Outer()
            o.recursive = ok
            ok = o
        }
        let okBytes = ok.serializedBytes()
        #expect(try T.Outer(serializedBytes: okBytes) == ok)
    }

    @Test func malformedInputThrowsTypedErrors() throws {
        #expect(throws: ProtoDecodingError.truncated) { try T.Scalars(serializedBytes: [0x08]) }
        #expect(throws: ProtoDecodingError.lengthExceedsBuffer) { try T.Scalars(serializedBytes: [0x72, 0x05, 0x61]) }
        #expect(throws: ProtoDecodingError.invalidUTF8) { try T.Scalars(serializedBytes: [0x72, 0x01, 0xff]) }
        #expect(throws: ProtoDecodingError.invalidWireType(7)) { try T.Scalars(serializedBytes: [0x0f]) }
        #expect(throws: ProtoDecodingError.invalidFieldNumber) { try T.Scalars(serializedBytes: [0x00]) }
        #expect(throws: ProtoDecodingError.malformedVarint) {
            try T.Scalars(serializedBytes: [0x08] + [UInt8](repeating: 0xff, count: 10) + [0x01])
        }
        #expect(throws: ProtoDecodingError.unmatchedEndGroup) { try T.Scalars(serializedBytes: [0xfc, 0x01]) }
        // Nested message whose length overruns its parent.
        #expect(throws: ProtoDecodingError.lengthExceedsBuffer) { try T.Outer(serializedBytes: [0x0a, 0x03, 0x12, 0x05, 0x61]) }
    }

    @Test func mutationFuzzNeverCrashes() throws {
        var rng = SplitMix64(seed: 0x6b65656c)
        let seeds = [richOuter().serializedBytes(), repeateds().serializedBytes()] + edgeScalars().map { $0.serializedBytes() }
        var decoded = 0
        var failed = 0
        for i in 0..<6000 {
            var b = seeds[i % seeds.count]
            switch rng.next() % 5 {
            case 0: if !b.isEmpty { b.removeLast(Int(rng.next() % UInt64(b.count))) }
            case 1:
                for _ in 0..<(1 + rng.next() % 4) where !b.isEmpty {
                    b[Int(rng.next() % UInt64(b.count))] ^= UInt8(1 << (rng.next() % 8))
                }
            case 2: if !b.isEmpty { b[Int(rng.next() % UInt64(b.count))] = 0xff }
            case 3: b.insert(contentsOf: [UInt8](repeating: 0x80, count: Int(rng.next() % 12)) + [0x01], at: Int(rng.next() % UInt64(b.count + 1)))
            default: b = [UInt8](repeating: 0x2a, count: 300) + b
            }
            do {
                let o = try T.Outer(serializedBytes: b)
                // Whatever decodes must re-encode and decode to the same value.
                let again = try T.Outer(serializedBytes: o.serializedBytes())
                #expect(again == o)
                _ = o.textFormatString()
                decoded += 1
            } catch {
                failed += 1
            }
            _ = try? T.Repeateds(serializedBytes: b)
            _ = try? T.Scalars(serializedBytes: b)
        }
        #expect(decoded + failed == 6000)
        #expect(failed > 0)
        #expect(decoded > 0)
    }

    @Test func cyclicFieldsAreValueTypes() throws {
        var a = T.Outer.Inner()
        var o = T.Outer()
        o.text = "one"
        a.back = o
        var b = a
        b.back?.text = "two"
        #expect(a.back?.text == "one")
        #expect(b.back?.text == "two")
        var r = T.RequestOp()
        var txn = T.TxnRequest()
        txn.success = [T.RequestOp()]
        r.requestTxn = txn
        try checkAgainstProtoc(r)
    }

    @Test func serviceDescriptors() throws {
        #expect(T.Tester.serviceName == "keel.test.Tester")
        #expect(T.Tester.unary.path == "/keel.test.Tester/Unary")
        #expect(T.Tester.unary.kind == .unary)
        #expect(T.Tester.serverStream.kind == .serverStreaming)
        #expect(T.Tester.clientStream.kind == .clientStreaming)
        #expect(T.Tester.bidi.kind == .bidirectionalStreaming)
        #expect(T.Tester.bidi.path == "/keel.test.Tester/Bidi")
        #expect(T.Tester.methods.map(\.methodName) == ["Unary", "ServerStream", "ClientStream", "Bidi"])
        #expect(ObjectIdentifier(T.Tester.bidi.erased.responseType) == ObjectIdentifier(Keel_Other.Shared.self))
        let _: MethodDescriptor<T.Scalars, T.Empty> = T.Tester.unary
        // A server can decode a request through the type-erased descriptor.
        var s = T.Scalars()
        s.i32 = 42
        let erased = T.Tester.methods[0]
        let decoded: any ProtoMessage = try erased.requestType.init(serializedBytes: s.serializedBytes())
        #expect(decoded as? T.Scalars == s)
        #expect(Set(T.Tester.methods).count == 4)
        #expect(T.Tester.methods.first { $0.path == "/keel.test.Tester/Bidi" }?.kind == .bidirectionalStreaming)
    }

    @Test func decodeFromRawBuffer() throws {
        let bytes = richOuter().serializedBytes()
        let o = try bytes.withUnsafeBytes { try T.Outer(decoding: $0) }
        #expect(o == richOuter())
        // Encoding into a caller-provided buffer.
        let size = o.serializedSize
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: size + 8, alignment: 1)
        defer { buf.deallocate() }
        var w = ProtoWriter(buf)
        o.encode(to: &w)
        #expect(w.bytesWritten == size)
        #expect(Array(buf.prefix(size)) == bytes)
    }
}


@Suite struct ReservedTypeNameTests {
    @Test func typeAndProtocolNestedNames() throws {
        var p = T.Permission()
        p.permType = .readwrite
        p.proto = T.Permission.ProtocolMessage()
        p.proto?.x = 3
        p.key = Array("k".utf8)
        let _: T.Permission.TypeEnum = p.permType
        try checkAgainstProtoc(p)
        #expect(p.textFormatString() == "perm_type: READWRITE\nproto {\n  x: 3\n}\nkey: \"k\"\n")
    }
}

@Suite struct ConvenienceAPITests {
    @Test func slicesAndAppending() throws {
        var s = T.Scalars()
        s.str = "abc"
        s.i64 = -5
        var buffer: [UInt8] = [0xde, 0xad]
        s.serialize(appendingTo: &buffer)
        #expect(buffer.count == 2 + s.serializedSize)
        #expect(Array(buffer.dropFirst(2)) == s.serializedBytes())
        #expect(try T.Scalars(serializedBytes: buffer.dropFirst(2)) == s)
        // A non-contiguous sequence works too.
        #expect(try T.Scalars(serializedBytes: buffer.dropFirst(2).lazy.map { $0 }) == s)
        #expect(throws: ProtoDecodingError.lengthExceedsBuffer) { try T.Scalars(serializedBytes: buffer.dropFirst(2).dropLast()) }
    }
}

@Suite struct CollidingNamesTests {
    @Test func namesThatCollideWithGeneratedCode() throws {
        var m = T.Nasty()
        m.n = 1
        m.reader = "r"
        m.writer = true
        m.tag = -4
        m.v = [5, 6]
        m.k = ["a": "b"]
        m.`self` = "me"
        m.`default` = 8
        m.unknownFields_ = "not the unknown fields"
        m.serializedSize_ = 10
        m.e = 11
        m.type = 13
        m.protoMessageName_ = "pmn"
        m.`true` = true
        m.entry = 16
        m.r = 17
        m.t = [T.Nasty()]
        m.`enum` = .`in`
        #expect(m.unknownFields.isEmpty)
        try checkAgainstProtoc(m)
        #expect(T.Nasty.Enum.init_.rawValue == 0)
        #expect(T.Nasty.Enum.rawValue_.protoName == "rawValue")
        #expect(T.Nasty.Enum.allKnownCases_.rawValue == 3)
    }
}

@Suite struct ShadowingTests {
    @Test func serviceNamedLikeItsPackage() throws {
        #expect(Echo.Echo.serviceName == "echo.Echo")
        #expect(Echo.Echo.get.path == "/echo.Echo/Get")
        #expect(Echo.Echo.update.kind == .bidirectionalStreaming)
        let _: MethodDescriptor<Echo.EchoRequest, Echo.EchoResponse> = Echo.Echo.expand
        var r = Echo.EchoRequest()
        r.text = "hi"
        r.shared = Keel_Other.Shared()
        #expect(try Echo.EchoRequest(serializedBytes: r.serializedBytes()) == r)
    }
}
