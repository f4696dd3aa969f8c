import CZlib
import NIOCore
import ProtoWire

/// gzip through zlib, for `grpc-encoding: gzip`.
enum Gzip {
    static func compress(_ input: ByteBuffer, allocator: ByteBufferAllocator) throws(GRPCStatus) -> ByteBuffer {
        var strm = z_stream()
        guard deflateInit2_(&strm, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY,
                            zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw GRPCStatus(.internal, "gzip: deflateInit failed")
        }
        defer { deflateEnd(&strm) }
        let bound = Int(deflateBound(&strm, UInt(input.readableBytes)))
        var out = allocator.buffer(capacity: bound)
        input.withUnsafeReadableBytes { inp in
            _ = out.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { outp in
                strm.next_in = UnsafeMutablePointer(mutating: inp.baseAddress?.assumingMemoryBound(to: UInt8.self))
                strm.avail_in = UInt32(inp.count)
                strm.next_out = outp.baseAddress?.assumingMemoryBound(to: UInt8.self)
                strm.avail_out = UInt32(outp.count)
                _ = deflate(&strm, Z_FINISH)
                return outp.count - Int(strm.avail_out)
            }
        }
        guard strm.avail_in == 0 else { throw GRPCStatus(.internal, "gzip: deflate incomplete") }
        return out
    }

    /// Inflates, refusing output beyond `limit` bytes (RESOURCE_EXHAUSTED) and corrupt input (INTERNAL).
    static func decompress(_ input: ByteBuffer, limit: Int, allocator: ByteBufferAllocator) throws(GRPCStatus) -> ByteBuffer {
        var strm = z_stream()
        guard inflateInit2_(&strm, 31, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw GRPCStatus(.internal, "gzip: inflateInit failed")
        }
        defer { inflateEnd(&strm) }
        var out = allocator.buffer(capacity: min(max(input.readableBytes * 4, 256), limit + 1))
        var result: Int32 = Z_OK
        input.withUnsafeReadableBytes { inp in
            strm.next_in = UnsafeMutablePointer(mutating: inp.baseAddress?.assumingMemoryBound(to: UInt8.self))
            strm.avail_in = UInt32(inp.count)
            while true {
                if out.readableBytes > limit { result = Z_MEM_ERROR; return }
                let want = min(max(out.readableBytes, 4096), limit + 1 - out.readableBytes + 1)
                _ = out.writeWithUnsafeMutableBytes(minimumWritableBytes: want) { outp in
                    strm.next_out = outp.baseAddress?.assumingMemoryBound(to: UInt8.self)
                    strm.avail_out = UInt32(min(outp.count, Int(UInt32.max)))
                    result = inflate(&strm, Z_NO_FLUSH)
                    return outp.count - Int(strm.avail_out)
                }
                if result == Z_STREAM_END { return }
                if result != Z_OK { return }
                if strm.avail_in == 0 && strm.avail_out != 0 { result = Z_DATA_ERROR; return }
            }
        }
        if out.readableBytes > limit || result == Z_MEM_ERROR {
            throw GRPCStatus(.resourceExhausted, "grpc: received message after decompression larger than max (\(limit))")
        }
        guard result == Z_STREAM_END else { throw GRPCStatus(.internal, "grpc: failed to decompress the received message") }
        return out
    }
}

/// Splits the bytes of one direction of a gRPC stream into messages (5-byte prefix: compressed
/// flag, big-endian length). Bytes arrive in DATA frames of any size; a message may span frames and
/// a frame may hold many messages. Buffering is bounded by the maximum message size.
struct GRPCDeframer {
    private var buffer: ByteBuffer?
    let maxMessageSize: Int
    /// The negotiated `grpc-encoding` of the incoming direction ("identity" or "gzip").
    var encoding: String?

    init(maxMessageSize: Int) {
        self.maxMessageSize = maxMessageSize
    }

    var bufferedBytes: Int { buffer?.readableBytes ?? 0 }

    mutating func append(_ bytes: UnsafeRawBufferPointer, allocator: ByteBufferAllocator) {
        if buffer == nil {
            buffer = allocator.buffer(capacity: Self.firstCapacity(bytes))
        }
        buffer!.writeBytes(bytes)
    }

    /// The size of a new buffer: the whole first message when its prefix is here and it is not
    /// large (a unary request usually arrives in one chunk, and a buffer of its size comes from
    /// malloc's per-thread cache, where the 1 KiB minimum did not), else what arrived, at least
    /// 1 KiB (the buffer grows as more arrives).
    static func firstCapacity(_ bytes: UnsafeRawBufferPointer) -> Int {
        if bytes.count >= 5 {
            let length = Int(bytes[1]) << 24 | Int(bytes[2]) << 16 | Int(bytes[3]) << 8 | Int(bytes[4])
            if length <= 64 * 1024 { return max(5 + length, bytes.count) }
        }
        return max(bytes.count, 1024)
    }

    /// The next complete message, decompressed; nil when more bytes are needed.
    mutating func next(allocator: ByteBufferAllocator) throws(GRPCStatus) -> ByteBuffer? {
        guard var buf = buffer, buf.readableBytes >= 5 else { return nil }
        let flag = buf.getInteger(at: buf.readerIndex, as: UInt8.self)!
        let length = Int(buf.getInteger(at: buf.readerIndex + 1, as: UInt32.self)!)
        guard flag <= 1 else {
            throw GRPCStatus(.internal, "grpc: invalid compressed-flag byte \(flag)")
        }
        if length > maxMessageSize {
            throw GRPCStatus(.resourceExhausted,
                             "grpc: received message larger than max (\(length) vs. \(maxMessageSize))")
        }
        guard buf.readableBytes >= 5 + length else { return nil }
        buffer = nil  // keep `buf` uniquely referenced while slicing
        buf.moveReaderIndex(forwardBy: 5)
        let message = buf.readSlice(length: length)!
        if buf.readableBytes > 0 {
            // A slice shares storage; compact when most of the buffer has been consumed.
            if buf.readerIndex > 65536 && buf.readableBytes < buf.readerIndex {
                var fresh = allocator.buffer(capacity: max(buf.readableBytes, 1024))
                fresh.writeImmutableBuffer(buf)
                buffer = fresh
            } else {
                buffer = buf
            }
        }
        if flag == 1 {
            guard let enc = encoding, enc != "identity" else {
                throw GRPCStatus(.internal, "grpc: compressed flag set with identity or empty encoding")
            }
            guard enc == "gzip" else {
                throw GRPCStatus(.unimplemented, "grpc: Decompressor is not installed for grpc-encoding \"\(enc)\"")
            }
            return try Gzip.decompress(message, limit: maxMessageSize, allocator: allocator)
        }
        return message
    }
}

enum GRPCFramer {
    /// Frames one serialized message: prefix + (maybe gzip'd) payload in one buffer.
    static func frame<M: ProtoMessage>(_ message: M, compress: Bool, allocator: ByteBufferAllocator) throws(GRPCStatus) -> ByteBuffer {
        let size = message.serializedSize
        if compress {
            var plain = allocator.buffer(capacity: size)
            message.encodeInto(&plain, size: size)
            let z = try Gzip.compress(plain, allocator: allocator)
            var out = allocator.buffer(capacity: 5 + z.readableBytes)
            out.writeInteger(UInt8(1))
            out.writeInteger(UInt32(z.readableBytes))
            out.writeImmutableBuffer(z)
            return out
        }
        var out = allocator.buffer(capacity: 5 + size)
        out.writeInteger(UInt8(0))
        out.writeInteger(UInt32(size))
        message.encodeInto(&out, size: size)
        return out
    }
}

extension ProtoMessage {
    /// Encodes straight into a ByteBuffer's writable memory (no intermediate array).
    @inlinable
    func encodeInto(_ buffer: inout ByteBuffer, size: Int) {
        guard size > 0 else { return }
        _ = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { raw in
            var w = ProtoWriter(UnsafeMutableRawBufferPointer(rebasing: raw[0..<size]))
            self.encode(to: &w)
            return size
        }
    }
}
