/// Writes protobuf binary data forward into caller-preallocated memory. The caller sizes the
/// buffer with `serializedSize` first, so the writer never grows or reallocates; writing past
/// the end is a programming error (a size computation bug) and traps instead of corrupting memory.
public struct ProtoWriter {
    @usableFromInline var ptr: UnsafeMutableRawPointer
    @usableFromInline let start: UnsafeMutableRawPointer
    @usableFromInline let end: UnsafeMutableRawPointer

    @inlinable
    public init(_ buffer: UnsafeMutableRawBufferPointer) {
        if let base = buffer.baseAddress {
            start = base
            end = base + buffer.count
        } else {
            start = UnsafeMutableRawPointer(bitPattern: 0x8)!
            end = start
        }
        ptr = start
    }

    /// Bytes written so far.
    @inlinable public var bytesWritten: Int { ptr - start }
    /// Bytes still free.
    @inlinable public var remaining: Int { end - ptr }

    @inlinable @inline(__always)
    func ensure(_ n: Int) {
        if _slowPath(end - ptr < n) {
            preconditionFailure("ProtoWriter overflow: serializedSize disagrees with encode(to:)")
        }
    }

    // MARK: varints

    @inlinable @inline(__always)
    public mutating func writeVarint(_ value: UInt64) {
        ensure(ProtoSize.varint(value))
        var v = value
        var p = ptr
        while v >= 0x80 {
            p.storeBytes(of: UInt8(truncatingIfNeeded: v) | 0x80, as: UInt8.self)
            p += 1
            v >>= 7
        }
        p.storeBytes(of: UInt8(truncatingIfNeeded: v), as: UInt8.self)
        ptr = p + 1
    }

    @inlinable @inline(__always)
    public mutating func writeVarint(_ value: UInt32) {
        if value < 0x80 {
            ensure(1)
            ptr.storeBytes(of: UInt8(truncatingIfNeeded: value), as: UInt8.self)
            ptr += 1
        } else {
            writeVarint(UInt64(value))
        }
    }

    /// Writes a raw tag value (`field << 3 | wireType`), usually a compile-time constant.
    @inlinable @inline(__always)
    public mutating func writeTag(_ tag: UInt32) {
        writeVarint(tag)
    }

    @inlinable @inline(__always)
    public mutating func writeInt32(_ v: Int32) {
        // Negative int32 are sign-extended to 64 bits (10 bytes), as protobuf requires.
        writeVarint(UInt64(bitPattern: Int64(v)))
    }
    @inlinable @inline(__always)
    public mutating func writeInt64(_ v: Int64) { writeVarint(UInt64(bitPattern: v)) }
    @inlinable @inline(__always)
    public mutating func writeUInt32(_ v: UInt32) { writeVarint(v) }
    @inlinable @inline(__always)
    public mutating func writeUInt64(_ v: UInt64) { writeVarint(v) }
    @inlinable @inline(__always)
    public mutating func writeSInt32(_ v: Int32) { writeVarint(WireFormat.zigZag32(v)) }
    @inlinable @inline(__always)
    public mutating func writeSInt64(_ v: Int64) { writeVarint(WireFormat.zigZag64(v)) }
    @inlinable @inline(__always)
    public mutating func writeBool(_ v: Bool) { writeVarint(UInt32(v ? 1 : 0)) }
    @inlinable @inline(__always)
    public mutating func writeEnum<E: ProtoEnum>(_ v: E) { writeInt32(v.rawValue) }

    // MARK: fixed

    @inlinable @inline(__always)
    public mutating func writeFixed32(_ v: UInt32) {
        ensure(4)
        ptr.storeBytes(of: v.littleEndian, as: UInt32.self)
        ptr += 4
    }
    @inlinable @inline(__always)
    public mutating func writeFixed64(_ v: UInt64) {
        ensure(8)
        ptr.storeBytes(of: v.littleEndian, as: UInt64.self)
        ptr += 8
    }
    @inlinable @inline(__always)
    public mutating func writeSFixed32(_ v: Int32) { writeFixed32(UInt32(bitPattern: v)) }
    @inlinable @inline(__always)
    public mutating func writeSFixed64(_ v: Int64) { writeFixed64(UInt64(bitPattern: v)) }
    @inlinable @inline(__always)
    public mutating func writeFloat(_ v: Float) { writeFixed32(v.bitPattern) }
    @inlinable @inline(__always)
    public mutating func writeDouble(_ v: Double) { writeFixed64(v.bitPattern) }

    // MARK: length-delimited

    /// Writes raw bytes with no length prefix.
    @inlinable @inline(__always)
    public mutating func writeRaw(_ bytes: UnsafeRawBufferPointer) {
        let n = bytes.count
        guard n > 0 else { return }
        ensure(n)
        ptr.copyMemory(from: bytes.baseAddress!, byteCount: n)
        ptr += n
    }

    @inlinable @inline(__always)
    public mutating func writeRaw(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { writeRaw($0) }
    }

    /// Writes a length prefix and the bytes.
    @inlinable @inline(__always)
    public mutating func writeBytes(_ bytes: [UInt8]) {
        writeVarint(UInt64(bytes.count))
        writeRaw(bytes)
    }

    @inlinable @inline(__always)
    public mutating func writeBytes(_ bytes: UnsafeRawBufferPointer) {
        writeVarint(UInt64(bytes.count))
        writeRaw(bytes)
    }

    /// Writes a length prefix and the UTF-8 bytes of `string`.
    @inlinable @inline(__always)
    public mutating func writeString(_ string: String) {
        let utf8 = string.utf8
        writeVarint(UInt64(utf8.count))
        if utf8.withContiguousStorageIfAvailable({ writeRaw(UnsafeRawBufferPointer($0)) }) == nil {
            var copy = string
            copy.withUTF8 { writeRaw(UnsafeRawBufferPointer($0)) }
        }
    }

    /// Writes a nested message with its length prefix (the tag is written by the caller).
    @inlinable @inline(__always)
    public mutating func writeMessage<M: ProtoMessage>(_ message: M) {
        writeVarint(UInt64(message.serializedSize))
        message.encode(to: &self)
    }
}
