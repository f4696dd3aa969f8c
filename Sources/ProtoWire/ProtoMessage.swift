/// A protobuf message. Generated structs conform; the requirements below are what the
/// generator emits, the rest of the API is in the extension.
public protocol ProtoMessage: Sendable, Hashable {
    /// The fully qualified proto name, e.g. `etcdserverpb.RangeRequest`.
    static var protoMessageName: String { get }

    init()

    /// Raw wire bytes of fields this message does not know; re-emitted after the known fields.
    var unknownFields: [UInt8] { get set }

    /// Decodes fields from `reader` until its end and merges them into `self` (protobuf merge
    /// semantics: scalars overwrite, repeated append, singular messages merge).
    mutating func merge(from reader: inout ProtoReader) throws(ProtoDecodingError)

    /// The exact number of bytes `encode(to:)` writes.
    var serializedSize: Int { get }

    /// Writes the message (without a length prefix) into preallocated memory.
    func encode(to writer: inout ProtoWriter)

    /// Writes the fields in protobuf text format (as `protoc --decode` prints them).
    func writeText(to printer: inout TextFormatPrinter)
}

extension ProtoMessage {
    /// Decodes a message straight from received bytes (no copy of the buffer).
    @inlinable
    public init(decoding buffer: UnsafeRawBufferPointer) throws(ProtoDecodingError) {
        self.init()
        var reader = ProtoReader(buffer)
        try merge(from: &reader)
    }

    @inlinable
    public init(serializedBytes bytes: [UInt8]) throws(ProtoDecodingError) {
        self.init()
        let r: Result<Void, ProtoDecodingError> = bytes.withUnsafeBytes { buf in
            var reader = ProtoReader(buf)
            do throws(ProtoDecodingError) {
                try self.merge(from: &reader)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try r.get()
    }

    /// Decodes from any byte sequence (an `ArraySlice`, a `Data`...); contiguous storage is
    /// read in place.
    @inlinable
    public init<Bytes: Sequence>(serializedBytes bytes: Bytes) throws(ProtoDecodingError) where Bytes.Element == UInt8 {
        self.init()
        let r: Result<Void, ProtoDecodingError>? = bytes.withContiguousStorageIfAvailable { buf in
            var reader = ProtoReader(UnsafeRawBufferPointer(buf))
            do throws(ProtoDecodingError) {
                try self.merge(from: &reader)
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        if let r {
            try r.get()
        } else {
            self = try Self(serializedBytes: Array(bytes))
        }
    }

    /// Appends the encoding to `bytes` (growing it once by exactly `serializedSize`).
    @inlinable
    public func serialize(appendingTo bytes: inout [UInt8]) {
        let size = serializedSize
        guard size > 0 else { return }
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(0, count: size))
        bytes.withUnsafeMutableBytes { buf in
            var writer = ProtoWriter(UnsafeMutableRawBufferPointer(rebasing: buf[start...]))
            encode(to: &writer)
            precondition(writer.bytesWritten == size, "serializedSize disagrees with encode(to:)")
        }
    }

    /// Encodes into exactly `serializedSize` bytes, with one allocation.
    @inlinable
    public func serializedBytes() -> [UInt8] {
        let size = serializedSize
        if size <= 1024 {
            // Small messages: encode on the stack and copy into the array. On Linux the
            // `unsafeUninitializedCapacity` initializer costs ~15 ns more per call than copying
            // into a new array (a generic metadata lookup), which is most of the encode time here.
            return withUnsafeTemporaryAllocation(byteCount: size, alignment: 1) { tmp in
                var writer = ProtoWriter(tmp)
                encode(to: &writer)
                precondition(writer.bytesWritten == size, "serializedSize disagrees with encode(to:)")
                return [UInt8](UnsafeRawBufferPointer(tmp))
            }
        }
        return [UInt8](unsafeUninitializedCapacity: size) { buf, count in
            var writer = ProtoWriter(UnsafeMutableRawBufferPointer(buf))
            encode(to: &writer)
            precondition(writer.bytesWritten == size, "serializedSize disagrees with encode(to:)")
            count = size
        }
    }

    /// Protobuf text format, identical to what `protoc --decode=<type>` prints.
    public func textFormatString() -> String {
        var printer = TextFormatPrinter()
        writeText(to: &printer)
        return printer.output
    }
}

/// A protobuf enum: a struct wrapping the Int32 wire value, so unknown values survive a
/// decode/encode round trip.
public protocol ProtoEnum: RawRepresentable, Sendable, Hashable where RawValue == Int32 {
    init(rawValue: Int32)
    /// The proto name of a known value (`NOT_EQUAL`), nil for unknown values.
    var protoName: String? { get }
}

/// A heap box used by generated code to break cycles between messages that contain each other
/// through singular fields (a Swift struct cannot contain itself). Immutable, so it is Sendable.
public final class ProtoIndirect<Value: Sendable & Hashable>: Sendable, Hashable {
    public let value: Value
    @inlinable public init(_ value: Value) { self.value = value }
    @inlinable public static func == (a: ProtoIndirect, b: ProtoIndirect) -> Bool {
        a === b || a.value == b.value
    }
    @inlinable public func hash(into hasher: inout Hasher) { value.hash(into: &hasher) }
}
