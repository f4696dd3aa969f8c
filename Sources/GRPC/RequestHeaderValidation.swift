#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// HTTP/2 request-header checks of the server, done by us instead of nghttp2.
///
/// The server session runs nghttp2 with `no_http_messaging`, because nghttp2's messaging checks
/// reject an `:authority` holding a '/', and grpc-go clients (etcdctl 3.4 given
/// `--endpoints http://host:port`, `endpoint status --cluster`, ...) send
/// `:authority: http://127.0.0.1:2379`; etcd (Go's http2) serves them. Everything else those checks
/// enforced on requests is enforced here, with the same outcome (RST_STREAM PROTOCOL_ERROR for a
/// malformed request, a silently dropped regular field where nghttp2 drops one):
/// - pseudo-header fields: only `:method`, `:scheme`, `:path`, `:authority`, each at most once,
///   all before the regular fields, none in trailers; `:method`, `:scheme` and `:path` required;
///   `:method` a token, `:scheme` a scheme, `:path` starting with '/' and free of controls/spaces;
/// - field names lower case (an upper-case letter is malformed; other invalid names are dropped);
/// - field values free of NUL/CR/LF/controls and of leading/trailing whitespace (a pseudo-header
///   with a bad value is malformed, a regular field with one is dropped);
/// - no connection-specific fields (`connection`, `keep-alive`, `proxy-connection`,
///   `transfer-encoding`, `upgrade`), `te` only as `trailers`;
/// - `content-length` (if sent) a decimal number, consistent when repeated, and equal to the
///   DATA received (checked by the connection).
/// `:authority` (and `host`) get only the field-value check: any authority text is accepted, as
/// Go's server does.
struct RequestHeaderValidator {
    enum Verdict: Equatable {
        case accept
        /// Not passed to the application (nghttp2 drops such regular fields too).
        case ignore
        /// The request is malformed: reset the stream with PROTOCOL_ERROR.
        case malformed(String)
    }

    /// True for a trailer block (the second header block of a request).
    let trailer: Bool
    /// Pseudo-headers seen so far, one bit each (`Pseudo`): no set of strings per request.
    private var seenPseudo: UInt8 = 0
    private var sawRegular = false
    /// The request's content-length, if it sent one.
    private(set) var contentLength: Int64?

    init(trailer: Bool) {
        self.trailer = trailer
    }

    mutating func check(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> Verdict {
        guard let first = name.first else { return .malformed("empty header name") }
        if first == UInt8(ascii: ":") {
            return checkPseudo(name: name, value: value)
        }
        sawRegular = true
        for c in name where c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") {
            return .malformed("upper-case header name")
        }
        guard name.allSatisfy(Self.isTokenChar) else { return .ignore }
        guard Self.isValidValue(value) else { return .ignore }
        if Self.equals(name, "connection") || Self.equals(name, "keep-alive") || Self.equals(name, "proxy-connection")
            || Self.equals(name, "transfer-encoding") || Self.equals(name, "upgrade") {
            return .malformed("connection-specific header")
        }
        if Self.equals(name, "te") {
            guard Self.equalsIgnoringCase(value, "trailers") else { return .malformed("te other than trailers") }
        } else if Self.equals(name, "content-length") {
            guard !value.isEmpty, value.count <= 18, value.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                return .malformed("invalid content-length")
            }
            let n = value.reduce(Int64(0)) { $0 * 10 + Int64($1 - 0x30) }
            if let previous = contentLength, previous != n { return .malformed("conflicting content-length") }
            contentLength = n
        }
        return .accept
    }

    /// The four request pseudo-headers, as bits of `seenPseudo`.
    private enum Pseudo: UInt8 {
        case method = 1, scheme = 2, path = 4, authority = 8

        init?(_ name: UnsafeRawBufferPointer) {
            if RequestHeaderValidator.equals(name, ":method") { self = .method }
            else if RequestHeaderValidator.equals(name, ":scheme") { self = .scheme }
            else if RequestHeaderValidator.equals(name, ":path") { self = .path }
            else if RequestHeaderValidator.equals(name, ":authority") { self = .authority }
            else { return nil }
        }

        var name: String {
            switch self {
            case .method: ":method"
            case .scheme: ":scheme"
            case .path: ":path"
            case .authority: ":authority"
            }
        }
    }

    private mutating func checkPseudo(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> Verdict {
        if trailer { return .malformed("pseudo-header in trailers") }
        if sawRegular { return .malformed("pseudo-header after regular header") }
        guard let p = Pseudo(name) else { return .malformed("unknown pseudo-header") }
        let valid: Bool
        switch p {
        case .method:
            valid = !value.isEmpty && value.allSatisfy { Self.isTokenChar($0) || Self.isAlpha($0) }
        case .scheme:
            valid = value.first.map(Self.isAlpha) == true
                && value.allSatisfy { Self.isAlpha($0) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2B || $0 == 0x2D || $0 == 0x2E }
        case .path:
            valid = value.first == UInt8(ascii: "/") && value.allSatisfy { $0 > 0x20 && $0 != 0x7F }
        case .authority:
            valid = Self.isValidValue(value)
        }
        guard valid else { return .malformed("invalid \(p.name)") }
        guard seenPseudo & p.rawValue == 0 else { return .malformed("duplicate \(p.name)") }
        seenPseudo |= p.rawValue
        return .accept
    }

    /// After the whole block: the required pseudo-headers are there.
    func finish() -> Verdict {
        if trailer { return .accept }
        for required in [Pseudo.method, .scheme, .path] where seenPseudo & required.rawValue == 0 {
            return .malformed("missing \(required.name)")
        }
        return .accept
    }

    /// RFC 9110 token characters, lower case only (HTTP/2 field names are lower case).
    static func isTokenChar(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
             UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
             UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    private static func isAlpha(_ c: UInt8) -> Bool {
        (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
    }

    /// RFC 9113 §8.2.1: no NUL/CR/LF (nor other controls but HTAB, nor DEL), no leading or
    /// trailing space/HTAB.
    static func isValidValue(_ v: UnsafeRawBufferPointer) -> Bool {
        if let f = v.first, f == 0x20 || f == 0x09 { return false }
        if let l = v.last, l == 0x20 || l == 0x09 { return false }
        return v.allSatisfy { ($0 >= 0x20 && $0 != 0x7F) || $0 == 0x09 }
    }

    /// Byte-for-byte equality with a literal (no String made from the header bytes).
    static func equals(_ v: UnsafeRawBufferPointer, _ s: StaticString) -> Bool {
        guard v.count == s.utf8CodeUnitCount else { return false }
        guard let base = v.baseAddress else { return true }
        return memcmp(base, s.utf8Start, v.count) == 0
    }

    private static func equalsIgnoringCase(_ v: UnsafeRawBufferPointer, _ s: StaticString) -> Bool {
        guard v.count == s.utf8CodeUnitCount else { return false }
        let p = s.utf8Start
        for i in 0..<v.count where v[i] | 0x20 != p[i] | 0x20 { return false }
        return true
    }
}
