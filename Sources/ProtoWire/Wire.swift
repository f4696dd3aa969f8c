/// The six protobuf wire types (3 and 4 are the deprecated group markers).
public enum WireType: UInt8, Sendable, Hashable {
    case varint = 0
    case fixed64 = 1
    case lengthDelimited = 2
    case startGroup = 3
    case endGroup = 4
    case fixed32 = 5
}

/// Helpers for tags, zigzag and sizes. All `@inlinable` so generated code specialises them.
public enum WireFormat {
    /// The raw tag value (`fieldNumber << 3 | wireType`).
    @inlinable @inline(__always)
    public static func tag(_ fieldNumber: Int, _ wireType: WireType) -> UInt32 {
        UInt32(truncatingIfNeeded: fieldNumber) << 3 | UInt32(wireType.rawValue)
    }

    @inlinable @inline(__always)
    public static func zigZag32(_ v: Int32) -> UInt32 {
        UInt32(bitPattern: (v &<< 1) ^ (v >> 31))
    }
    @inlinable @inline(__always)
    public static func zigZag64(_ v: Int64) -> UInt64 {
        UInt64(bitPattern: (v &<< 1) ^ (v >> 63))
    }
    @inlinable @inline(__always)
    public static func unZigZag32(_ v: UInt32) -> Int32 {
        Int32(bitPattern: (v >> 1) ^ (0 &- (v & 1)))
    }
    @inlinable @inline(__always)
    public static func unZigZag64(_ v: UInt64) -> Int64 {
        Int64(bitPattern: (v >> 1) ^ (0 &- (v & 1)))
    }
}

/// Exact encoded sizes of wire primitives.
public enum ProtoSize {
    @inlinable @inline(__always)
    public static func varint(_ v: UInt64) -> Int {
        // 1 + floor(bits/7) where bits = 64 - lzcnt(v|1)
        let bits = 64 &- (v | 1).leadingZeroBitCount
        return (bits &* 9 &+ 64) >> 6
    }
    @inlinable @inline(__always)
    public static func varint(_ v: UInt32) -> Int {
        varint(UInt64(v))
    }
    /// int32 / enum values: negative numbers are sign-extended to 10 bytes.
    @inlinable @inline(__always)
    public static func int32(_ v: Int32) -> Int {
        v < 0 ? 10 : varint(UInt64(UInt32(bitPattern: v)))
    }
    @inlinable @inline(__always)
    public static func int64(_ v: Int64) -> Int {
        varint(UInt64(bitPattern: v))
    }
    @inlinable @inline(__always)
    public static func sint32(_ v: Int32) -> Int {
        varint(UInt64(WireFormat.zigZag32(v)))
    }
    @inlinable @inline(__always)
    public static func sint64(_ v: Int64) -> Int {
        varint(WireFormat.zigZag64(v))
    }
    /// Size of a tag for `fieldNumber`.
    @inlinable @inline(__always)
    public static func tag(_ fieldNumber: Int) -> Int {
        varint(UInt64(UInt32(truncatingIfNeeded: fieldNumber) << 3))
    }
    /// Size of a length prefix plus the payload.
    @inlinable @inline(__always)
    public static func lengthDelimited(_ count: Int) -> Int {
        varint(UInt64(count)) &+ count
    }
    @inlinable @inline(__always)
    public static func string(_ s: String) -> Int {
        lengthDelimited(s.utf8.count)
    }
    @inlinable @inline(__always)
    public static func bytes(_ b: [UInt8]) -> Int {
        lengthDelimited(b.count)
    }
    /// Size of a nested message including its length prefix (not its tag).
    @inlinable @inline(__always)
    public static func message<M: ProtoMessage>(_ m: M) -> Int {
        lengthDelimited(m.serializedSize)
    }
}
