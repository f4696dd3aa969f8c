#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Builds protobuf text format exactly as protoc 3.21 (`protoc --decode`) prints it:
/// one field per line, two-space indentation, `name {` for messages, C-style escapes with
/// octal for non-printable and non-ASCII bytes, floats as `%.6g`/`%.9g`, doubles as
/// `%.15g`/`%.17g` (shortest of the two that round-trips), unknown fields as `NUMBER: value`.
public struct TextFormatPrinter: Sendable {
    public private(set) var output: String = ""
    var indent: Int = 0

    public init() {}

    mutating func line(_ name: String, _ value: String) {
        for _ in 0..<indent { output += "  " }
        output += name
        output += ": "
        output += value
        output += "\n"
    }

    public mutating func beginMessage(_ name: String) {
        for _ in 0..<indent { output += "  " }
        output += name
        output += " {\n"
        indent += 1
    }

    public mutating func endMessage() {
        indent -= 1
        for _ in 0..<indent { output += "  " }
        output += "}\n"
    }

    public mutating func print(_ name: String, _ value: Int32) { line(name, String(value)) }
    public mutating func print(_ name: String, _ value: Int64) { line(name, String(value)) }
    public mutating func print(_ name: String, _ value: UInt32) { line(name, String(value)) }
    public mutating func print(_ name: String, _ value: UInt64) { line(name, String(value)) }
    public mutating func print(_ name: String, _ value: Bool) { line(name, value ? "true" : "false") }
    public mutating func print(_ name: String, _ value: Float) { line(name, TextFormatPrinter.format(value)) }
    public mutating func print(_ name: String, _ value: Double) { line(name, TextFormatPrinter.format(value)) }
    public mutating func print(_ name: String, _ value: String) {
        line(name, TextFormatPrinter.quote(value.utf8))
    }
    public mutating func print(_ name: String, _ value: [UInt8]) {
        line(name, TextFormatPrinter.quote(value))
    }
    public mutating func print<E: ProtoEnum>(_ name: String, _ value: E) {
        line(name, value.protoName ?? String(value.rawValue))
    }
    public mutating func print<M: ProtoMessage>(_ name: String, _ value: M) {
        beginMessage(name)
        value.writeText(to: &self)
        endMessage()
    }

    /// protoc prints length-delimited unknown fields that parse as messages nested only this
    /// deep (`kUnknownFieldRecursionLimit`); deeper ones print as strings.
    static let unknownFieldRecursionLimit = 10

    /// Prints raw unknown-field bytes as protoc does (`5: 42`, `8: 0x00000007`, nested `3 {`).
    public mutating func printUnknown(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buf in
            var reader = ProtoReader(buf)
            printUnknownFields(&reader, budget: TextFormatPrinter.unknownFieldRecursionLimit)
        }
    }

    /// Prints fields until the reader's end or the matching end-group tag. Stops quietly at a
    /// malformed tail (unknown fields were validated when decoded, so this does not happen).
    mutating func printUnknownFields(_ reader: inout ProtoReader, budget: Int) {
        while true {
            guard let tag = try? TextFormatPrinter.lenientTag(&reader) else { return }
            let name = String(tag >> 3)
            switch tag & 7 {
            case 0:
                guard let v = try? reader.readVarint() else { return }
                line(name, String(v))
            case 1:
                guard let v = try? reader.readFixed64() else { return }
                line(name, "0x" + TextFormatPrinter.hex(v, digits: 16))
            case 5:
                guard let v = try? reader.readFixed32() else { return }
                line(name, "0x" + TextFormatPrinter.hex(UInt64(v), digits: 8))
            case 2:
                guard let payload = try? reader.readLengthDelimited() else { return }
                if payload.count > 0, budget > 0, TextFormatPrinter.parsesAsFields(payload, depth: reader.depth) {
                    beginMessage(name)
                    var sub = ProtoReader(payload, depth: reader.depth + 1)
                    printUnknownFields(&sub, budget: budget - 1)
                    endMessage()
                } else {
                    line(name, TextFormatPrinter.quote(payload))
                }
            case 3:
                // Groups were validated (matching end, depth) when the bytes were decoded.
                beginMessage(name)
                printUnknownFields(&reader, budget: budget - 1)
                endMessage()
            case 4:
                return
            default:
                return
            }
        }
    }

    /// Whether protoc would print a length-delimited unknown field as a nested message: its
    /// bytes must parse completely as fields (protoc's UnknownFieldSet::ParseFromString).
    static func parsesAsFields(_ payload: UnsafeRawBufferPointer, depth: Int) -> Bool {
        var r = ProtoReader(payload, depth: depth)
        do {
            while let t = try lenientTag(&r) { try lenientSkip(tag: t, &r) }
            return true
        } catch {
            return false
        }
    }

    /// Tags as protoc's CodedInputStream reads them for unknown field sets: up to 10 bytes,
    /// truncated to 32 bits (stricter `ProtoReader.nextTag` allows 5, like protoc's parser).
    static func lenientTag(_ r: inout ProtoReader) throws(ProtoDecodingError) -> UInt32? {
        guard !r.isAtEnd else { return nil }
        let tag = UInt32(truncatingIfNeeded: try r.readVarintSlow(maxBytes: 10))
        guard tag >= 8 else { throw .invalidFieldNumber }
        guard tag & 7 <= 5 else { throw .invalidWireType(UInt8(tag & 7)) }
        return tag
    }

    static func lenientSkip(tag: UInt32, _ r: inout ProtoReader) throws(ProtoDecodingError) {
        guard tag & 7 == 3 else {
            try r.skipField(tag: tag)
            return
        }
        guard r.depth < ProtoReader.maxDepth else { throw .depthLimitExceeded }
        var inner = ProtoReader(ptr: r.ptr, end: r.end, depth: r.depth + 1)
        while true {
            guard let t = try lenientTag(&inner) else { throw .truncated }
            if t & 7 == 4 {
                guard t >> 3 == tag >> 3 else { throw .unmatchedEndGroup }
                break
            }
            try lenientSkip(tag: t, &inner)
        }
        r.ptr = inner.ptr
    }

    static func hex(_ v: UInt64, digits: Int) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, digits - s.count)) + s
    }

    /// C-escapes bytes the way protobuf's CEscape does.
    public static func quote<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var out = [UInt8]()
        out.reserveCapacity(bytes.underestimatedCount + 2)
        out.append(UInt8(ascii: "\""))
        for b in bytes {
            switch b {
            case UInt8(ascii: "\n"): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "n"))
            case UInt8(ascii: "\r"): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "r"))
            case UInt8(ascii: "\t"): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "t"))
            case UInt8(ascii: "\""): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "\""))
            case UInt8(ascii: "'"): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "'"))
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "\\"))
            case 0x20..<0x7f: out.append(b)
            default:
                out.append(UInt8(ascii: "\\"))
                out.append(UInt8(ascii: "0") + (b >> 6))
                out.append(UInt8(ascii: "0") + ((b >> 3) & 7))
                out.append(UInt8(ascii: "0") + (b & 7))
            }
        }
        out.append(UInt8(ascii: "\""))
        return String(decoding: out, as: UTF8.self)
    }

    static func cFormat(_ format: String, _ value: Double) -> String {
        var buf = [CChar](repeating: 0, count: 64)
        let n = withVaList([value]) { args in
            buf.withUnsafeMutableBufferPointer { vsnprintf($0.baseAddress!, 64, format, args) }
        }
        return String(decoding: buf.prefix(Int(max(0, min(n, 63)))).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// protobuf's SimpleFtoa.
    public static func format(_ v: Float) -> String {
        if v.isNaN { return "nan" }
        if v.isInfinite { return v < 0 ? "-inf" : "inf" }
        // protoc re-parses with strtof and also rejects ERANGE, which glibc reports for every
        // subnormal result: subnormal floats always get 9 digits.
        let short = cFormat("%.6g", Double(v))
        if !v.isSubnormal, let back = Float(short), back == v { return short }
        return cFormat("%.9g", Double(v))
    }

    /// protobuf's SimpleDtoa.
    public static func format(_ v: Double) -> String {
        if v.isNaN { return "nan" }
        if v.isInfinite { return v < 0 ? "-inf" : "inf" }
        let short = cFormat("%.15g", v)
        if let back = Double(short), back == v { return short }
        return cFormat("%.17g", v)
    }
}
