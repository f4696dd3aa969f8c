import Testing
@testable import ProtoWire

/// Encodes with a closure into an exactly-sized buffer.
func encode(size: Int, _ body: (inout ProtoWriter) -> Void) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: size) { buf, count in
        var w = ProtoWriter(UnsafeMutableRawBufferPointer(buf))
        body(&w)
        #expect(w.bytesWritten == size)
        count = w.bytesWritten
    }
}

func read<T>(_ bytes: [UInt8], _ body: (inout ProtoReader) throws(ProtoDecodingError) -> T) -> Result<T, ProtoDecodingError> {
    bytes.withUnsafeBytes { buf in
        var r = ProtoReader(buf)
        do throws(ProtoDecodingError) {
            let v = try body(&r)
            if !r.isAtEnd { Issue.record("reader not at end: \(r.remaining) bytes left") }
            return .success(v)
        } catch {
            return .failure(error)
        }
    }
}

@Suite struct VarintTests {
    static let varintCases: [(UInt64, [UInt8])] = [
        (UInt64(0), [UInt8(0)]),
        (1, [1]),
        (127, [0x7f]),
        (128, [0x80, 0x01]),
        (300, [0xac, 0x02]),
        (16_383, [0xff, 0x7f]),
        (16_384, [0x80, 0x80, 0x01]),
        (UInt64(UInt32.max), [0xff, 0xff, 0xff, 0xff, 0x0f]),
        (UInt64.max, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        (UInt64(1) << 63, [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
    ]
    @Test(arguments: varintCases)
    func uint64RoundTrip(value: UInt64, bytes: [UInt8]) throws {
        #expect(ProtoSize.varint(value) == bytes.count)
        #expect(encode(size: bytes.count) { $0.writeVarint(value) } == bytes)
        #expect(try read(bytes) { r throws(ProtoDecodingError) in try r.readVarint() }.get() == value)
    }

    @Test func varintSizesAtEveryBoundary() throws {
        for bits in 0...64 {
            let v: UInt64 = bits == 64 ? .max : (UInt64(1) << UInt64(bits))
            let expected = max(1, (64 - v.leadingZeroBitCount + 6) / 7)
            #expect(ProtoSize.varint(v) == expected, "bits \(bits)")
            #expect(encode(size: expected) { $0.writeVarint(v) }.count == expected)
            if v > 0 {
                let w = v - 1
                #expect(ProtoSize.varint(w) == max(1, (64 - w.leadingZeroBitCount + 6) / 7))
            }
        }
    }

    @Test func negativeInt32IsTenBytes() throws {
        for v: Int32 in [-1, -2, .min, -300] {
            let bytes = encode(size: ProtoSize.int32(v)) { $0.writeInt32(v) }
            #expect(bytes.count == 10)
            #expect(bytes.last == 0x01)
            #expect(try read(bytes) { r throws(ProtoDecodingError) in try r.readInt32() }.get() == v)
            // The same bytes decoded as int64 give the sign-extended value.
            #expect(try read(bytes) { r throws(ProtoDecodingError) in try r.readInt64() }.get() == Int64(v))
        }
        #expect(encode(size: 5) { $0.writeInt32(.max) } == [0xff, 0xff, 0xff, 0xff, 0x07])
        #expect(encode(size: 1) { $0.writeInt32(0) } == [0])
    }

    @Test func int32AcceptsFiveByteNegativeFormAndTruncatesWideValues() throws {
        // Some encoders emit negative int32 as 5 bytes; a 64-bit value is truncated to 32 bits.
        #expect(try read([0xff, 0xff, 0xff, 0xff, 0x0f]) { r throws(ProtoDecodingError) in try r.readInt32() }.get() == -1)
        #expect(try read([0x80, 0x80, 0x80, 0x80, 0x10]) { r throws(ProtoDecodingError) in try r.readInt32() }.get() == 0)
    }

    @Test func zigZag() throws {
        let cases32: [(Int32, UInt32)] = [(0, 0), (-1, 1), (1, 2), (-2, 3), (.max, 0xffff_fffe), (.min, 0xffff_ffff)]
        for (v, z) in cases32 {
            #expect(WireFormat.zigZag32(v) == z)
            #expect(WireFormat.unZigZag32(z) == v)
            let bytes = encode(size: ProtoSize.sint32(v)) { $0.writeSInt32(v) }
            #expect(try read(bytes) { r throws(ProtoDecodingError) in try r.readSInt32() }.get() == v)
        }
        let cases64: [(Int64, UInt64)] = [(0, 0), (-1, 1), (1, 2), (.max, .max - 1), (.min, .max)]
        for (v, z) in cases64 {
            #expect(WireFormat.zigZag64(v) == z)
            #expect(WireFormat.unZigZag64(z) == v)
            let bytes = encode(size: ProtoSize.sint64(v)) { $0.writeSInt64(v) }
            #expect(try read(bytes) { r throws(ProtoDecodingError) in try r.readSInt64() }.get() == v)
        }
        #expect(ProtoSize.sint64(.min) == 10)
        #expect(ProtoSize.sint32(-1) == 1)
    }

    @Test func overlongVarintIsRejected() throws {
        // 11 bytes of continuation.
        let eleven = [UInt8](repeating: 0x80, count: 10) + [0x01]
        #expect(read(eleven) { r throws(ProtoDecodingError) in try r.readVarint() } == .failure(.malformedVarint))
        // 10th byte with bits beyond 64: dropped, as protoc does.
        let tenBig = [UInt8](repeating: 0xff, count: 9) + [0x7e]
        #expect(try read(tenBig) { r throws(ProtoDecodingError) in try r.readVarint() }.get() == UInt64.max >> 1)
        // Ten bytes, still continuing.
        let tenCont = [UInt8](repeating: 0x80, count: 10) + [0x00]
        #expect(read(tenCont) { r throws(ProtoDecodingError) in try r.readVarint() } == .failure(.malformedVarint))
    }

    @Test func truncatedVarint() throws {
        #expect(read([0x80]) { r throws(ProtoDecodingError) in try r.readVarint() } == .failure(.truncated))
        #expect(read([]) { r throws(ProtoDecodingError) in try r.readVarint() } == .failure(.truncated))
        #expect(read([0xff, 0xff, 0xff]) { r throws(ProtoDecodingError) in try r.readUInt32() } == .failure(.truncated))
    }
}

@Suite struct FixedTests {
    @Test func fixedWidthEdges() throws {
        for v: UInt32 in [0, 1, 0x0102_0304, .max] {
            let b = encode(size: 4) { $0.writeFixed32(v) }
            #expect(b == [UInt8(v & 0xff), UInt8((v >> 8) & 0xff), UInt8((v >> 16) & 0xff), UInt8(v >> 24)])
            #expect(try read(b) { r throws(ProtoDecodingError) in try r.readFixed32() }.get() == v)
        }
        for v: Int64 in [0, -1, .min, .max] {
            let b = encode(size: 8) { $0.writeSFixed64(v) }
            #expect(try read(b) { r throws(ProtoDecodingError) in try r.readSFixed64() }.get() == v)
        }
        for v: Int32 in [0, -1, .min, .max] {
            let b = encode(size: 4) { $0.writeSFixed32(v) }
            #expect(try read(b) { r throws(ProtoDecodingError) in try r.readSFixed32() }.get() == v)
        }
        for v: Double in [0, -0.0, 1.5, .infinity, -.infinity, .greatestFiniteMagnitude, .leastNonzeroMagnitude] {
            let b = encode(size: 8) { $0.writeDouble(v) }
            #expect(try read(b) { r throws(ProtoDecodingError) in try r.readDouble() }.get().bitPattern == v.bitPattern)
        }
        let nanBytes = encode(size: 4) { $0.writeFloat(.nan) }
        #expect(try read(nanBytes) { r throws(ProtoDecodingError) in try r.readFloat() }.get().isNaN)
        #expect(encode(size: 4) { $0.writeFloat(1.5) } == [0, 0, 0xc0, 0x3f])
    }

    @Test func truncatedFixed() throws {
        #expect(read([1, 2, 3]) { r throws(ProtoDecodingError) in try r.readFixed32() } == .failure(.truncated))
        #expect(read([1, 2, 3, 4, 5, 6, 7]) { r throws(ProtoDecodingError) in try r.readFixed64() } == .failure(.truncated))
    }
}

@Suite struct LengthDelimitedTests {
    @Test func stringsAndBytes() throws {
        let s = "héllo, 日本 🎉"
        let size = ProtoSize.string(s)
        let b = encode(size: size) { $0.writeString(s) }
        #expect(b.count == s.utf8.count + 1)
        #expect(try read(b) { r throws(ProtoDecodingError) in try r.readString() }.get() == s)
        let big = [UInt8](repeating: 0xab, count: 300)
        let bb = encode(size: ProtoSize.bytes(big)) { $0.writeBytes(big) }
        #expect(bb.prefix(2) == [0xac, 0x02])
        #expect(try read(bb) { r throws(ProtoDecodingError) in try r.readBytes() }.get() == big)
        #expect(try read([0]) { r throws(ProtoDecodingError) in try r.readBytes() }.get() == [])
        #expect(try read([0]) { r throws(ProtoDecodingError) in try r.readString() }.get() == "")
    }

    @Test func invalidUTF8IsRejected() throws {
        #expect(read([2, 0xc3, 0x28]) { r throws(ProtoDecodingError) in try r.readString() } == .failure(.invalidUTF8))
        #expect(read([1, 0xff]) { r throws(ProtoDecodingError) in try r.readString() } == .failure(.invalidUTF8))
        // Surrogate code point encoded in UTF-8 (ED A0 80) is invalid.
        #expect(read([3, 0xed, 0xa0, 0x80]) { r throws(ProtoDecodingError) in try r.readString() } == .failure(.invalidUTF8))
        // Bytes fields take anything.
        #expect(try read([1, 0xff]) { r throws(ProtoDecodingError) in try r.readBytes() }.get() == [0xff])
    }

    @Test func lengthBeyondBuffer() throws {
        #expect(read([5, 1, 2]) { r throws(ProtoDecodingError) in try r.readBytes() } == .failure(.lengthExceedsBuffer))
        // A length close to 2^64 must not overflow pointer arithmetic.
        let huge: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0]
        #expect(read(huge) { r throws(ProtoDecodingError) in try r.readBytes() } == .failure(.lengthExceedsBuffer))
        #expect(read([0x80, 0x80, 0x80, 0x80, 0x08]) { r throws(ProtoDecodingError) in try r.readString() } == .failure(.lengthExceedsBuffer))
    }
}

@Suite struct TagAndSkipTests {
    @Test func tags() throws {
        #expect(WireFormat.tag(1, .varint) == 8)
        #expect(WireFormat.tag(2, .lengthDelimited) == 18)
        #expect(WireFormat.tag(536_870_911, .fixed32) == 0xffff_fffd)
        #expect(ProtoSize.tag(15) == 1)
        #expect(ProtoSize.tag(16) == 2)
        #expect(ProtoSize.tag(536_870_911) == 5)
        #expect(try read([0xfd, 0xff, 0xff, 0xff, 0x0f]) { r throws(ProtoDecodingError) in try r.nextTag() }.get() == 0xffff_fffd)
        #expect(try read([]) { r throws(ProtoDecodingError) in try r.nextTag() }.get() == nil)
    }

    @Test func badTags() throws {
        #expect(read([0x00]) { r throws(ProtoDecodingError) in try r.nextTag() } == .failure(.invalidFieldNumber))
        #expect(read([0x0e]) { r throws(ProtoDecodingError) in try r.nextTag() } == .failure(.invalidWireType(6)))
        #expect(read([0x0f]) { r throws(ProtoDecodingError) in try r.nextTag() } == .failure(.invalidWireType(7)))
        // Bits beyond 32 in a 5-byte tag are dropped (here leaving field 0).
        #expect(read([0x80, 0x80, 0x80, 0x80, 0x10]) { r throws(ProtoDecodingError) in try r.nextTag() } == .failure(.invalidFieldNumber))
        #expect(try read([0x88, 0x80, 0x80, 0x80, 0x70]) { r throws(ProtoDecodingError) in try r.nextTag() }.get() == 8)
        // Tags longer than 5 bytes are rejected, as by protoc's parser.
        #expect(read([0x88, 0x80, 0x80, 0x80, 0x80, 0x00]) { r throws(ProtoDecodingError) in try r.nextTag() } == .failure(.malformedVarint))
    }

    func skipAll(_ bytes: [UInt8]) -> Result<[UInt8], ProtoDecodingError> {
        read(bytes) { r throws(ProtoDecodingError) in
            var unknown = [UInt8]()
            while let t = try r.nextTag() { try r.skipField(tag: t, into: &unknown) }
            return unknown
        }
    }

    @Test func skipEveryWireTypeKeepsBytes() throws {
        let input: [UInt8] = [
            0x08, 0x96, 0x01,                   // 1: varint 150
            0x11, 1, 2, 3, 4, 5, 6, 7, 8,       // 2: fixed64
            0x1a, 0x03, 0x61, 0x62, 0x63,       // 3: "abc"
            0x23, 0x08, 0x01, 0x24,             // 4: group { 1: 1 }
            0x2d, 1, 2, 3, 4,                   // 5: fixed32
        ]
        #expect(try skipAll(input).get() == input)
    }

    @Test func malformedGroupsAndEndGroups() throws {
        #expect(skipAll([0x0c]) == .failure(.unmatchedEndGroup))                 // end group alone
        #expect(skipAll([0x0b, 0x08, 0x01]) == .failure(.truncated))             // unterminated group
        #expect(skipAll([0x0b, 0x14]) == .failure(.unmatchedEndGroup))           // ends field 2, started 1
        #expect(skipAll([0x11, 1, 2]) == .failure(.truncated))
        #expect(skipAll([0x15, 1]) == .failure(.truncated))
        #expect(skipAll([0x0a, 5, 1]) == .failure(.lengthExceedsBuffer))
    }

    @Test func groupDepthBomb() throws {
        let bomb = [UInt8](repeating: 0x0b, count: 5000)
        #expect(skipAll(bomb) == .failure(.depthLimitExceeded))
        // 99 nested groups are fine.
        let ok = [UInt8](repeating: 0x0b, count: 99) + [UInt8](repeating: 0x0c, count: 99)
        #expect(try skipAll(ok).get() == ok)
    }

    @Test func nestedReaderDepthLimit() throws {
        func nest(_ levels: Int) -> [UInt8] {
            var payload: [UInt8] = []
            for _ in 0..<levels {
                var lenBytes: [UInt8] = []
                var n = UInt64(payload.count)
                while n >= 0x80 { lenBytes.append(UInt8(n & 0x7f) | 0x80); n >>= 7 }
                lenBytes.append(UInt8(n))
                payload = [0x0a] + lenBytes + payload
            }
            return payload
        }
        let payload = nest(101)
        func descend(_ r: inout ProtoReader) throws(ProtoDecodingError) -> Int {
            var levels = 0
            var cur = r
            while let t = try cur.nextTag() {
                #expect(t == 0x0a)
                cur = try cur.nestedReader()
                levels += 1
            }
            r = ProtoReader(UnsafeRawBufferPointer(start: nil, count: 0))
            return levels
        }
        #expect(read(payload) { r throws(ProtoDecodingError) in try descend(&r) } == .failure(.depthLimitExceeded))
        let ok = nest(100)
        #expect(try read(ok) { r throws(ProtoDecodingError) in try descend(&r) }.get() == 100)
    }

    @Test func packed() throws {
        let bytes: [UInt8] = [0x04, 0x01, 0x96, 0x01, 0x00]
        let values = try read(bytes) { r throws(ProtoDecodingError) in
            var a: [UInt32] = []
            try r.readPacked(into: &a) { r throws(ProtoDecodingError) in try r.readUInt32() }
            return a
        }.get()
        #expect(values == [1, 150, 0])
        #expect(read([0x03, 0x01, 0x96]) { r throws(ProtoDecodingError) in
            var a: [UInt32] = []
            try r.readPacked(into: &a) { r throws(ProtoDecodingError) in try r.readUInt32() }
            return a
        } == .failure(.lengthExceedsBuffer))
        #expect(read([0x02, 0x01, 0x96]) { r throws(ProtoDecodingError) in
            var a: [UInt32] = []
            try r.readPacked(into: &a) { r throws(ProtoDecodingError) in try r.readUInt32() }
            return a
        } == .failure(.truncated))
    }
}

@Suite struct TextFormatTests {
    @Test func escaping() throws {
        #expect(TextFormatPrinter.quote(Array("héllo \"q\" 'a' \\ \n\t\r\u{1}\u{7f}".utf8))
            == #""h\303\251llo \"q\" \'a\' \\ \n\t\r\001\177""#)
        #expect(TextFormatPrinter.quote([0, 1, 0xff, 0xfe, 0x80]) == #""\000\001\377\376\200""#)
    }

    @Test func floats() throws {
        // Values checked against protoc 3.21 --decode output.
        #expect(TextFormatPrinter.format(Float(1e10)) == "1e+10")
        #expect(TextFormatPrinter.format(Double(1e10)) == "10000000000")
        #expect(TextFormatPrinter.format(Float(3.4028235e38)) == "3.40282347e+38")
        #expect(TextFormatPrinter.format(Double(3.4028235e38)) == "3.4028235e+38")
        #expect(TextFormatPrinter.format(Float(123456789)) == "123456792")
        #expect(TextFormatPrinter.format(Double(0.1)) == "0.1")
        #expect(TextFormatPrinter.format(Float(0.1)) == "0.1")
        #expect(TextFormatPrinter.format(Double(1e-5)) == "1e-05")
        #expect(TextFormatPrinter.format(-0.0 as Double) == "-0")
        #expect(TextFormatPrinter.format(Double.nan) == "nan")
        #expect(TextFormatPrinter.format(-Double.infinity) == "-inf")
        #expect(TextFormatPrinter.format(Double("2.5e-310")!) == "2.50000000000002e-310")
        #expect(TextFormatPrinter.format(Float.leastNonzeroMagnitude) == "1.40129846e-45")
        #expect(TextFormatPrinter.format(Double.leastNonzeroMagnitude) == "4.94065645841247e-324")
    }

    @Test func unknownFields() throws {
        var p = TextFormatPrinter()
        p.printUnknown([0x08, 0x7b, 0x15, 1, 0, 0, 0, 0x19, 8, 0, 0, 0, 0, 0, 0, 0,
                        0x22, 0x02, 0x08, 0x01, 0x2a, 0x00, 0x32, 0x01, 0x08, 0x3b, 0x08, 0x01, 0x3c])
        #expect(p.output == """
            1: 123
            2: 0x00000001
            3: 0x0000000000000008
            4 {
              1: 1
            }
            5: ""
            6: "\\010"
            7 {
              1: 1
            }

            """)
    }
}

@Suite struct TextFormatDepthTests {
    @Test func deeplyNestedUnknownBytesDoNotRecurseWithoutBound() throws {
        // 20,000 nested length-delimited fields: valid wire data that looks like messages all
        // the way down. Printing must stop nesting at the depth limit and fall back to a string.
        var payload: [UInt8] = []
        for _ in 0..<20_000 {
            var len: [UInt8] = []
            var n = payload.count
            while n >= 0x80 { len.append(UInt8(n & 0x7f) | 0x80); n >>= 7 }
            len.append(UInt8(n))
            payload = [0x0a] + len + payload
        }
        var p = TextFormatPrinter()
        p.printUnknown(payload)
        let lines = p.output.split(separator: "\n")
        #expect(lines.filter { $0.hasSuffix("1 {") }.count == 10)
        #expect(lines.contains { $0.contains("1: \"") })
    }

    @Test func unknownNestingPrintsTenLevelsLikeProtoc() throws {
        // 15 nested length-delimited fields; protoc 3.21 prints 10 levels, then a string.
        var payload: [UInt8] = []
        for _ in 0..<15 { payload = [0x0a, UInt8(payload.count)] + payload }
        var p = TextFormatPrinter()
        p.printUnknown(payload)
        var expected = ""
        for i in 0..<10 { expected += String(repeating: "  ", count: i) + "1 {\n" }
        expected += String(repeating: "  ", count: 10) + "1: \"\\n\\006\\n\\004\\n\\002\\n\\000\"\n"
        for i in (0..<10).reversed() { expected += String(repeating: "  ", count: i) + "}\n" }
        #expect(p.output == expected)
    }
}

@Suite struct MethodDescriptorTests {
    struct Empty: ProtoMessage {
        static let protoMessageName = "test.Empty"
        var unknownFields: [UInt8] = []
        init() {}
        mutating func merge(from reader: inout ProtoReader) throws(ProtoDecodingError) {
            while let t = try reader.nextTag() { try reader.skipField(tag: t, into: &unknownFields) }
        }
        var serializedSize: Int { unknownFields.count }
        func encode(to writer: inout ProtoWriter) { writer.writeRaw(unknownFields) }
        func writeText(to printer: inout TextFormatPrinter) { printer.printUnknown(unknownFields) }
    }

    @Test func descriptor() throws {
        let d = MethodDescriptor<Empty, Empty>(serviceName: "test.Svc", methodName: "Call", kind: .serverStreaming)
        #expect(d.path == "/test.Svc/Call")
        #expect(d.kind.isServerStreaming && !d.kind.isClientStreaming)
        let e = d.erased
        #expect(e.path == "/test.Svc/Call")
        #expect(ObjectIdentifier(e.requestType) == ObjectIdentifier(Empty.self))
        #expect(MethodKind(clientStreaming: true, serverStreaming: true) == .bidirectionalStreaming)
    }

    @Test func unknownFieldsRoundTripThroughAMessage() throws {
        let input: [UInt8] = [0x08, 0x96, 0x01, 0x1a, 0x03, 0x61, 0x62, 0x63]
        let m = try Empty(serializedBytes: input)
        #expect(m.unknownFields == input)
        #expect(m.serializedBytes() == input)
        #expect(m.textFormatString() == "1: 150\n3: \"abc\"\n")
        #expect(throws: ProtoDecodingError.truncated) { try Empty(serializedBytes: [0x08]) }
    }
}

/// A message whose size computation lies (a generator bug): encoding must stop with a
/// precondition failure instead of writing past the buffer.
struct LyingSize: ProtoMessage {
    static let protoMessageName = "test.LyingSize"
    var unknownFields: [UInt8] = []
    init() {}
    mutating func merge(from reader: inout ProtoReader) throws(ProtoDecodingError) {}
    var serializedSize: Int { 2 }
    func encode(to writer: inout ProtoWriter) { writer.writeRaw([1, 2, 3, 4, 5, 6, 7, 8]) }
    func writeText(to printer: inout TextFormatPrinter) {}
}

@Suite struct WriterBoundsTests {
    @Test func writerNeverWritesPastItsBuffer() async {
        await #expect(processExitsWith: .failure) {
            _ = LyingSize().serializedBytes()
        }
        await #expect(processExitsWith: .failure) {
            let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 4, alignment: 1)
            var w = ProtoWriter(buf)
            w.writeFixed64(1)
        }
    }
}
