/// A cursor over protobuf binary data. It never copies the buffer; the memory must stay valid
/// while the reader is used. Every read checks bounds and throws `ProtoDecodingError`.
public struct ProtoReader {
    /// Maximum nesting of messages and groups (protobuf's default recursion limit).
    public static let maxDepth = 100

    @usableFromInline var ptr: UnsafeRawPointer
    @usableFromInline let end: UnsafeRawPointer
    /// Current nesting depth (0 for the outermost message).
    public let depth: Int

    @inlinable
    public init(_ buffer: UnsafeRawBufferPointer, depth: Int = 0) {
        if let base = buffer.baseAddress {
            ptr = base
            end = base + buffer.count
        } else {
            // An empty buffer; the pointer is never dereferenced because ptr == end.
            ptr = UnsafeRawPointer(bitPattern: 0x8)!
            end = ptr
        }
        self.depth = depth
    }

    @inlinable
    init(ptr: UnsafeRawPointer, end: UnsafeRawPointer, depth: Int) {
        self.ptr = ptr
        self.end = end
        self.depth = depth
    }

    /// Bytes left to read.
    @inlinable public var remaining: Int { end - ptr }
    @inlinable public var isAtEnd: Bool { ptr >= end }

    // MARK: varints

    @inlinable
    public mutating func readVarint() throws(ProtoDecodingError) -> UInt64 {
        // Fast path: one byte.
        guard ptr < end else { throw .truncated }
        let b0 = ptr.load(as: UInt8.self)
        if b0 < 0x80 {
            ptr += 1
            return UInt64(b0)
        }
        return try readVarintSlow()
    }

    /// Reads a varint of at most `maxBytes` bytes. Like protoc, bits beyond 64 in the last
    /// byte are dropped; a varint still continuing after `maxBytes` bytes is malformed.
    @usableFromInline
    mutating func readVarintSlow(maxBytes: Int = 10) throws(ProtoDecodingError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        var p = ptr
        var count = 0
        while true {
            guard p < end else { throw .truncated }
            let b = p.load(as: UInt8.self)
            p += 1
            count += 1
            result |= shift < 64 ? UInt64(b & 0x7f) << shift : 0
            if b < 0x80 { break }
            guard count < maxBytes else { throw .malformedVarint }
            shift += 7
        }
        ptr = p
        return result
    }

    /// Reads a tag; returns `nil` at the end of the buffer. Rejects field number 0 and wire
    /// types 6/7. The value returned is the raw tag (`field << 3 | wireType`). As in protoc's
    /// parser a tag has at most 5 bytes, and bits beyond 32 are dropped.
    @inlinable
    public mutating func nextTag() throws(ProtoDecodingError) -> UInt32? {
        guard ptr < end else { return nil }
        let b0 = ptr.load(as: UInt8.self)
        let raw: UInt64
        if b0 < 0x80 {
            ptr += 1
            raw = UInt64(b0)
        } else {
            raw = try readVarintSlow(maxBytes: 5)
        }
        let tag = UInt32(truncatingIfNeeded: raw)
        guard tag >= 8 else { throw tag & 7 > 5 ? .invalidWireType(UInt8(tag & 7)) : .invalidFieldNumber }
        guard tag & 7 <= 5 else { throw .invalidWireType(UInt8(tag & 7)) }
        return tag
    }

    @inlinable
    public mutating func readUInt64() throws(ProtoDecodingError) -> UInt64 { try readVarint() }
    @inlinable
    public mutating func readInt64() throws(ProtoDecodingError) -> Int64 { Int64(bitPattern: try readVarint()) }
    /// int32 (and enums): accepts the 10-byte sign-extended form, truncates like protobuf does.
    @inlinable
    public mutating func readInt32() throws(ProtoDecodingError) -> Int32 {
        Int32(truncatingIfNeeded: try readVarint())
    }
    @inlinable
    public mutating func readUInt32() throws(ProtoDecodingError) -> UInt32 {
        UInt32(truncatingIfNeeded: try readVarint())
    }
    @inlinable
    public mutating func readSInt32() throws(ProtoDecodingError) -> Int32 {
        WireFormat.unZigZag32(UInt32(truncatingIfNeeded: try readVarint()))
    }
    @inlinable
    public mutating func readSInt64() throws(ProtoDecodingError) -> Int64 {
        WireFormat.unZigZag64(try readVarint())
    }
    @inlinable
    public mutating func readBool() throws(ProtoDecodingError) -> Bool {
        try readVarint() != 0
    }
    @inlinable
    public mutating func readEnum<E: ProtoEnum>(_: E.Type = E.self) throws(ProtoDecodingError) -> E {
        E(rawValue: try readInt32())
    }

    // MARK: fixed

    @inlinable
    public mutating func readFixed32() throws(ProtoDecodingError) -> UInt32 {
        guard end - ptr >= 4 else { throw .truncated }
        let v = ptr.loadUnaligned(as: UInt32.self)
        ptr += 4
        return UInt32(littleEndian: v)
    }
    @inlinable
    public mutating func readFixed64() throws(ProtoDecodingError) -> UInt64 {
        guard end - ptr >= 8 else { throw .truncated }
        let v = ptr.loadUnaligned(as: UInt64.self)
        ptr += 8
        return UInt64(littleEndian: v)
    }
    @inlinable
    public mutating func readSFixed32() throws(ProtoDecodingError) -> Int32 { Int32(bitPattern: try readFixed32()) }
    @inlinable
    public mutating func readSFixed64() throws(ProtoDecodingError) -> Int64 { Int64(bitPattern: try readFixed64()) }
    @inlinable
    public mutating func readFloat() throws(ProtoDecodingError) -> Float { Float(bitPattern: try readFixed32()) }
    @inlinable
    public mutating func readDouble() throws(ProtoDecodingError) -> Double { Double(bitPattern: try readFixed64()) }

    // MARK: length-delimited

    /// Reads a length prefix and checks it against the remaining bytes.
    @inlinable
    public mutating func readLength() throws(ProtoDecodingError) -> Int {
        let len = try readVarint()
        guard len <= UInt64(end - ptr) else { throw .lengthExceedsBuffer }
        return Int(truncatingIfNeeded: len)
    }

    /// Reads a length-delimited payload and returns a view of it (no copy). Valid as long as
    /// the underlying buffer is.
    @inlinable
    public mutating func readLengthDelimited() throws(ProtoDecodingError) -> UnsafeRawBufferPointer {
        let n = try readLength()
        let r = UnsafeRawBufferPointer(start: ptr, count: n)
        ptr += n
        return r
    }

    @inlinable
    public mutating func readBytes() throws(ProtoDecodingError) -> [UInt8] {
        let n = try readLength()
        if n == 0 { return [] }
        let r = [UInt8](UnsafeBufferPointer(start: ptr.assumingMemoryBound(to: UInt8.self), count: n))
        ptr += n
        return r
    }

    @inlinable
    public mutating func readString() throws(ProtoDecodingError) -> String {
        let n = try readLength()
        if n == 0 { return "" }
        let buf = UnsafeBufferPointer(start: ptr.assumingMemoryBound(to: UInt8.self), count: n)
        guard let s = String(validating: buf, as: UTF8.self) else { throw .invalidUTF8 }
        ptr += n
        return s
    }

    /// A reader over the next length-delimited payload, one nesting level deeper; the parent
    /// skips past the payload.
    @inlinable
    public mutating func nestedReader() throws(ProtoDecodingError) -> ProtoReader {
        guard depth < ProtoReader.maxDepth else { throw .depthLimitExceeded }
        let n = try readLength()
        let sub = ProtoReader(ptr: ptr, end: ptr + n, depth: depth + 1)
        ptr += n
        return sub
    }

    /// Decodes a length-delimited nested message and merges it into `message`.
    @inlinable
    public mutating func readMessage<M: ProtoMessage>(into message: inout M) throws(ProtoDecodingError) {
        var sub = try nestedReader()
        try message.merge(from: &sub)
    }

    /// Decodes a length-delimited nested message.
    @inlinable
    public mutating func readMessage<M: ProtoMessage>(_: M.Type = M.self) throws(ProtoDecodingError) -> M {
        var m = M()
        try readMessage(into: &m)
        return m
    }

    /// Reads a packed run of values into `array` (the length prefix has not been read yet).
    @inlinable
    public mutating func readPacked<T>(
        into array: inout [T],
        _ read: (inout ProtoReader) throws(ProtoDecodingError) -> T
    ) throws(ProtoDecodingError) {
        let n = try readLength()
        var sub = ProtoReader(ptr: ptr, end: ptr + n, depth: depth)
        ptr += n
        while !sub.isAtEnd {
            array.append(try read(&sub))
        }
    }

    // MARK: unknown fields

    /// Skips the value of a field whose tag was just read, validating it (group nesting,
    /// lengths). Returns nothing; use `skipField(tag:into:)` to keep the bytes.
    @inlinable
    public mutating func skipField(tag: UInt32) throws(ProtoDecodingError) {
        switch tag & 7 {
        case 0: _ = try readVarint()
        case 1:
            guard end - ptr >= 8 else { throw .truncated }
            ptr += 8
        case 2:
            let n = try readLength()
            ptr += n
        case 3: try skipGroup(fieldNumber: tag >> 3)
        case 4: throw .unmatchedEndGroup
        case 5:
            guard end - ptr >= 4 else { throw .truncated }
            ptr += 4
        default: throw .invalidWireType(UInt8(tag & 7))
        }
    }

    @usableFromInline
    mutating func skipGroup(fieldNumber: UInt32) throws(ProtoDecodingError) {
        guard depth < ProtoReader.maxDepth else { throw .depthLimitExceeded }
        var inner = ProtoReader(ptr: ptr, end: end, depth: depth + 1)
        while true {
            guard let t = try inner.nextTag() else { throw .truncated }
            if t & 7 == 4 {
                guard t >> 3 == fieldNumber else { throw .unmatchedEndGroup }
                break
            }
            try inner.skipField(tag: t)
        }
        ptr = inner.ptr
    }

    /// Skips a field whose tag was just read and appends its raw bytes (tag included) to
    /// `unknownFields`, so they can be re-emitted on encode.
    @inlinable
    public mutating func skipField(tag: UInt32, into unknownFields: inout [UInt8]) throws(ProtoDecodingError) {
        let start = ptr
        try skipField(tag: tag)
        // Re-emit the tag in canonical (shortest) form, then the value bytes verbatim.
        var t = UInt64(tag)
        while t >= 0x80 {
            unknownFields.append(UInt8(truncatingIfNeeded: t) | 0x80)
            t >>= 7
        }
        unknownFields.append(UInt8(truncatingIfNeeded: t))
        unknownFields.append(contentsOf: UnsafeRawBufferPointer(start: start, count: ptr - start))
    }
}
