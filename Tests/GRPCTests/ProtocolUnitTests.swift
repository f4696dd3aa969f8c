@testable import GRPC
import NIOCore
import Testing

@Suite struct ProtocolUnitTests {
    @Test func grpcTimeoutParsing() {
        #expect(GRPCTimeout.parse("1S") == 1_000_000_000)
        #expect(GRPCTimeout.parse("100m") == 100_000_000)
        #expect(GRPCTimeout.parse("5u") == 5_000)
        #expect(GRPCTimeout.parse("7n") == 7)
        #expect(GRPCTimeout.parse("2M") == 120_000_000_000)
        #expect(GRPCTimeout.parse("1H") == 3_600_000_000_000)
        #expect(GRPCTimeout.parse("99999999H") == Int64.max)  // saturates instead of overflowing
        #expect(GRPCTimeout.parse("99999999S") == Int64(99_999_999) * 1_000_000_000)
        for bad in ["", "S", "1", "1s", "-1S", "123456789S", "1.5S", " 1S", "1SS"] {
            #expect(GRPCTimeout.parse(bad) == nil, "\(bad)")
        }
    }

    @Test func grpcTimeoutEncodingRoundTrips() {
        for ns: Int64 in [0, 1, 999, 1_000, 123_456_789, 1_000_000_000, 86_400_000_000_000] {
            let s = GRPCTimeout.encode(nanoseconds: ns)
            #expect(s.utf8.count <= 9)
            let back = GRPCTimeout.parse(s)!
            #expect(back >= ns, "\(s)")  // rounded up, never shorter
        }
    }

    @Test func percentEncoding() {
        #expect(PercentEncoding.encode("plain text") == "plain text")
        #expect(PercentEncoding.encode("100%") == "100%25")
        #expect(PercentEncoding.encode("a\nb") == "a%0Ab")
        #expect(PercentEncoding.encode("ü") == "%C3%BC")
        for s in ["", "x", "héllo wörld %% \u{1F600}\t", "etcdserver: mvcc: required revision has been compacted"] {
            #expect(PercentEncoding.decode(PercentEncoding.encode(s)) == s)
        }
        // Malformed escapes are kept literally (the spec asks receivers to be lenient).
        #expect(PercentEncoding.decode("%zz%4") == "%zz%4")
        #expect(PercentEncoding.decode("%41") == "A")
    }

    @Test func deframerSplitsAndPacksMessages() throws {
        let alloc = ByteBufferAllocator()
        var d = GRPCDeframer(maxMessageSize: 100)
        // Three messages packed into one buffer, delivered one byte at a time.
        let wire: [UInt8] = [0, 0, 0, 0, 2, 0xA, 0xB, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xC]
        var got: [[UInt8]] = []
        for b in wire {
            [b].withUnsafeBytes { d.append($0, allocator: alloc) }
            while let m = try d.next(allocator: alloc) { got.append(Array(m.readableBytesView)) }
        }
        #expect(got == [[0xA, 0xB], [], [0xC]])
        #expect(d.bufferedBytes == 0)
    }

    @Test func deframerSizesItsFirstBufferForTheFirstMessage() throws {
        func cap(_ b: [UInt8]) -> Int { b.withUnsafeBytes { GRPCDeframer.firstCapacity($0) } }
        #expect(cap([0, 0, 0, 1, 0x2C] + [UInt8](repeating: 7, count: 300)) == 305)  // one whole message
        #expect(cap([0, 0, 0, 0, 2, 1, 2, 0, 0]) == 9)            // one message and a part of the next
        #expect(cap([0, 0, 0, 4, 0] + [1, 2]) == 1029)            // a part of a 1 KiB message: all of it
        #expect(cap([0, 0, 1, 0, 1] + [1]) == 1024)               // a large one: grows as it arrives
        #expect(cap([0, 0]) == 1024)                              // no prefix yet
        // A first chunk with a whole message and the start of the next: the buffer grows for the rest.
        let alloc = ByteBufferAllocator()
        var d = GRPCDeframer(maxMessageSize: 10_000)
        let second = [UInt8](repeating: 9, count: 3000)
        let wire: [UInt8] = [0, 0, 0, 0, 2, 0xA, 0xB] + [0, 0, 0, 0x0B, 0xB8] + second
        var got: [[UInt8]] = []
        for chunk in [wire[0..<9], wire[9..<2000], wire[2000...]] {
            Array(chunk).withUnsafeBytes { d.append($0, allocator: alloc) }
            while let m = try d.next(allocator: alloc) { got.append(Array(m.readableBytesView)) }
        }
        #expect(got == [[0xA, 0xB], second])
        #expect(d.bufferedBytes == 0)
    }

    @Test func deframerRejectsOversizedAndBadFlags() {
        let alloc = ByteBufferAllocator()
        var d = GRPCDeframer(maxMessageSize: 100)
        ([UInt8]([0, 0xFF, 0xFF, 0xFF, 0xFF])).withUnsafeBytes { d.append($0, allocator: alloc) }
        #expect(throws: GRPCStatus(.resourceExhausted, "grpc: received message larger than max (4294967295 vs. 100)")) {
            _ = try d.next(allocator: alloc)
        }
        var e = GRPCDeframer(maxMessageSize: 100)
        ([UInt8]([2, 0, 0, 0, 0])).withUnsafeBytes { e.append($0, allocator: alloc) }
        #expect(throws: GRPCStatus.self) { _ = try e.next(allocator: alloc) }
        // Compressed flag without a negotiated encoding.
        var f = GRPCDeframer(maxMessageSize: 100)
        ([UInt8]([1, 0, 0, 0, 0])).withUnsafeBytes { f.append($0, allocator: alloc) }
        #expect(throws: GRPCStatus.self) { _ = try f.next(allocator: alloc) }
    }

    @Test func gzipRoundTripAndBounds() throws {
        let alloc = ByteBufferAllocator()
        var plain = alloc.buffer(capacity: 100_000)
        for i in 0..<100_000 { plain.writeInteger(UInt8(truncatingIfNeeded: i % 251)) }
        let z = try Gzip.compress(plain, allocator: alloc)
        #expect(z.readableBytes < plain.readableBytes)
        #expect(try Gzip.decompress(z, limit: 100_000, allocator: alloc) == plain)
        #expect(throws: GRPCStatus.self) { _ = try Gzip.decompress(z, limit: 99_999, allocator: alloc) }
        var garbage = alloc.buffer(capacity: 10)
        garbage.writeBytes([0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7])
        #expect(throws: GRPCStatus.self) { _ = try Gzip.decompress(garbage, limit: 1000, allocator: alloc) }
        var truncated = z
        truncated.moveWriterIndex(to: truncated.writerIndex - 10)
        #expect(throws: GRPCStatus.self) { _ = try Gzip.decompress(truncated, limit: 100_000, allocator: alloc) }
    }
}
