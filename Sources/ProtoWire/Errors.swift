/// Errors thrown while decoding protobuf binary data. Decoding never traps on malformed input;
/// every problem surfaces as one of these cases.
public enum ProtoDecodingError: Error, Hashable, Sendable {
    /// The input ended in the middle of a tag, varint, fixed-width value or length-delimited payload.
    case truncated
    /// A varint ran longer than 10 bytes, or its 10th byte carried bits beyond 64.
    case malformedVarint
    /// A tag used wire type 6 or 7 (which do not exist).
    case invalidWireType(UInt8)
    /// A tag carried field number 0 (or a number beyond 2^29-1).
    case invalidFieldNumber
    /// A length prefix pointed past the end of the enclosing buffer.
    case lengthExceedsBuffer
    /// A `string` field was not valid UTF-8.
    case invalidUTF8
    /// Messages (or groups) were nested deeper than `ProtoReader.maxDepth`.
    case depthLimitExceeded
    /// An end-group tag appeared without a matching start-group tag (or with another field number).
    case unmatchedEndGroup
    /// A value was out of range for its field (e.g. a map entry whose key/value could not be read).
    case invalidValue
}
