/// Tokens of the protobuf language.
enum TokenKind: Equatable {
    case identifier(String)
    case integer(UInt64)
    case float(Double)
    case string([UInt8])
    case symbol(UInt8)
    case eof
}

struct Token {
    var kind: TokenKind
    var location: SourceLocation
    /// Comment lines directly above this token (no blank line in between).
    var leadingComments: [String] = []
    /// Comment lines that started on the same line as the previous token, after it
    /// (`NONE = 0; // default`): they belong to the previous statement.
    var trailingCommentsOfPrevious: [String] = []
}

/// Splits a .proto source into tokens, skipping whitespace and comments.
struct Lexer {
    let bytes: [UInt8]
    let file: String
    var pos = 0
    var line = 1
    var lineStart = 0

    init(source: String, file: String) {
        bytes = Array(source.utf8)
        self.file = file
    }

    func location(at p: Int) -> SourceLocation {
        // Columns count characters (UTF-8 continuation bytes are not counted).
        var col = 1
        var i = lineStart
        while i < p {
            if bytes[i] & 0xC0 != 0x80 { col += 1 }
            i += 1
        }
        return SourceLocation(file: file, line: line, column: col)
    }

    /// Comments gathered by the last `skipTrivia()`.
    var leading: [String] = []
    var trailing: [String] = []
    var producedToken = false

    /// Text of a `//` comment line, without the slashes and one leading space.
    static func commentText(_ b: ArraySlice<UInt8>) -> String {
        var t = b
        if t.first == UInt8(ascii: " ") { t = t.dropFirst() }
        var s = String(decoding: t, as: UTF8.self)
        while s.last == "\r" || s.last == " " { s.removeLast() }
        return s
    }

    mutating func skipTrivia() throws(ProtoError) {
        leading = []
        trailing = []
        var newlines = 0  // newlines since the previous token or the last comment
        var sameLineAsPrevious = producedToken
        while pos < bytes.count {
            let c = bytes[pos]
            if c == UInt8(ascii: "\n") {
                pos += 1
                line += 1
                lineStart = pos
                newlines += 1
                sameLineAsPrevious = false
                // A blank line detaches the comments above it from the next declaration.
                if newlines >= 2 { leading = [] }
            } else if c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") || c == UInt8(ascii: "\r") || c == 0x0b || c == 0x0c {
                pos += 1
            } else if c == UInt8(ascii: "/"), pos + 1 < bytes.count, bytes[pos + 1] == UInt8(ascii: "/") {
                let start = pos + 2
                while pos < bytes.count, bytes[pos] != UInt8(ascii: "\n") { pos += 1 }
                let text = Lexer.commentText(bytes[start..<pos])
                if sameLineAsPrevious { trailing.append(text) } else { leading.append(text) }
                newlines = 0
            } else if c == UInt8(ascii: "/"), pos + 1 < bytes.count, bytes[pos + 1] == UInt8(ascii: "*") {
                let start = location(at: pos)
                let textStart = pos + 2
                pos += 2
                var closed = false
                var textEnd = pos
                while pos < bytes.count {
                    if bytes[pos] == UInt8(ascii: "*"), pos + 1 < bytes.count, bytes[pos + 1] == UInt8(ascii: "/") {
                        textEnd = pos
                        pos += 2
                        closed = true
                        break
                    }
                    if bytes[pos] == UInt8(ascii: "\n") {
                        line += 1
                        lineStart = pos + 1
                    }
                    pos += 1
                }
                if !closed { throw ProtoError(start, "unterminated block comment") }
                var lines: [String] = []
                for l in bytes[textStart..<textEnd].split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
                    var t = l.drop { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
                    if t.first == UInt8(ascii: "*") { t = t.dropFirst() }
                    lines.append(Lexer.commentText(t))
                }
                while lines.first?.isEmpty == true { lines.removeFirst() }
                while lines.last?.isEmpty == true { lines.removeLast() }
                if sameLineAsPrevious { trailing += lines } else { leading += lines }
                newlines = 0
            } else {
                return
            }
        }
    }

    static func isLetter(_ c: UInt8) -> Bool {
        (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == UInt8(ascii: "_")
    }
    static func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }
    static func isHex(_ c: UInt8) -> Bool {
        isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)
    }
    static func hexValue(_ c: UInt8) -> UInt64 {
        if isDigit(c) { return UInt64(c - 0x30) }
        if c >= 0x61 { return UInt64(c - 0x61 + 10) }
        return UInt64(c - 0x41 + 10)
    }

    mutating func next() throws(ProtoError) -> Token {
        let t = try nextToken()
        producedToken = true
        return t
    }

    mutating func nextToken() throws(ProtoError) -> Token {
        try skipTrivia()
        let loc = location(at: pos)
        var token = try rawToken(loc)
        token.leadingComments = leading
        token.trailingCommentsOfPrevious = trailing
        return token
    }

    mutating func rawToken(_ loc: SourceLocation) throws(ProtoError) -> Token {
        guard pos < bytes.count else { return Token(kind: .eof, location: loc) }
        let c = bytes[pos]
        if Lexer.isLetter(c) {
            let start = pos
            while pos < bytes.count, Lexer.isLetter(bytes[pos]) || Lexer.isDigit(bytes[pos]) { pos += 1 }
            return Token(kind: .identifier(String(decoding: bytes[start..<pos], as: UTF8.self)), location: loc)
        }
        if Lexer.isDigit(c) || (c == UInt8(ascii: ".") && pos + 1 < bytes.count && Lexer.isDigit(bytes[pos + 1])) {
            return Token(kind: try number(loc), location: loc)
        }
        if c == UInt8(ascii: "\"") || c == UInt8(ascii: "'") {
            return Token(kind: .string(try string(quote: c, loc)), location: loc)
        }
        if c >= 0x80 || c < 0x20 {
            throw ProtoError(loc, "unexpected character")
        }
        pos += 1
        return Token(kind: .symbol(c), location: loc)
    }

    mutating func number(_ loc: SourceLocation) throws(ProtoError) -> TokenKind {
        let start = pos
        // Hex / octal integers.
        if bytes[pos] == UInt8(ascii: "0"), pos + 1 < bytes.count, bytes[pos + 1] | 0x20 == UInt8(ascii: "x") {
            pos += 2
            var v: UInt64 = 0
            var any = false
            while pos < bytes.count, Lexer.isHex(bytes[pos]) {
                let (m, o1) = v.multipliedReportingOverflow(by: 16)
                let (a, o2) = m.addingReportingOverflow(Lexer.hexValue(bytes[pos]))
                if o1 || o2 { throw ProtoError(loc, "integer literal is too large") }
                v = a
                any = true
                pos += 1
            }
            if !any { throw ProtoError(loc, "\"0x\" must be followed by hex digits") }
            if pos < bytes.count, Lexer.isLetter(bytes[pos]) { throw ProtoError(loc, "invalid number literal") }
            return .integer(v)
        }
        var isFloat = false
        while pos < bytes.count {
            let d = bytes[pos]
            if Lexer.isDigit(d) {
                pos += 1
            } else if d == UInt8(ascii: ".") {
                isFloat = true
                pos += 1
            } else if d | 0x20 == UInt8(ascii: "e") {
                isFloat = true
                pos += 1
                if pos < bytes.count, bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-") { pos += 1 }
            } else {
                break
            }
        }
        if pos < bytes.count, Lexer.isLetter(bytes[pos]) {
            // protoc accepts a trailing f/F on floats.
            if bytes[pos] | 0x20 == UInt8(ascii: "f") {
                isFloat = true
                pos += 1
            } else {
                throw ProtoError(loc, "invalid number literal")
            }
        }
        var text = String(decoding: bytes[start..<pos], as: UTF8.self)
        if isFloat {
            if text.last == "f" || text.last == "F" { text.removeLast() }
            guard let d = Double(text) else { throw ProtoError(loc, "invalid float literal \"\(text)\"") }
            return .float(d)
        }
        if text.count > 1, text.first == "0" {
            // Octal.
            var v: UInt64 = 0
            for ch in text.utf8.dropFirst() {
                guard ch >= 0x30 && ch <= 0x37 else { throw ProtoError(loc, "invalid octal literal") }
                let (m, o1) = v.multipliedReportingOverflow(by: 8)
                let (a, o2) = m.addingReportingOverflow(UInt64(ch - 0x30))
                if o1 || o2 { throw ProtoError(loc, "integer literal is too large") }
                v = a
            }
            return .integer(v)
        }
        guard let v = UInt64(text) else { throw ProtoError(loc, "integer literal is too large") }
        return .integer(v)
    }

    mutating func string(quote: UInt8, _ loc: SourceLocation) throws(ProtoError) -> [UInt8] {
        pos += 1
        var out: [UInt8] = []
        while true {
            guard pos < bytes.count, bytes[pos] != UInt8(ascii: "\n") else {
                throw ProtoError(loc, "unterminated string literal")
            }
            let c = bytes[pos]
            pos += 1
            if c == quote { return out }
            if c != UInt8(ascii: "\\") {
                out.append(c)
                continue
            }
            guard pos < bytes.count else { throw ProtoError(loc, "unterminated string literal") }
            let e = bytes[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "n"): out.append(0x0a)
            case UInt8(ascii: "r"): out.append(0x0d)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "a"): out.append(0x07)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0c)
            case UInt8(ascii: "v"): out.append(0x0b)
            case UInt8(ascii: "\\"), UInt8(ascii: "'"), UInt8(ascii: "\""), UInt8(ascii: "?"): out.append(e)
            case UInt8(ascii: "x"), UInt8(ascii: "X"):
                var v: UInt64 = 0
                var n = 0
                while n < 2, pos < bytes.count, Lexer.isHex(bytes[pos]) {
                    v = v * 16 + Lexer.hexValue(bytes[pos])
                    pos += 1
                    n += 1
                }
                if n == 0 { throw ProtoError(location(at: pos - 2), "\\x must be followed by hex digits") }
                out.append(UInt8(v))
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                var v = UInt64(e - 0x30)
                var n = 1
                while n < 3, pos < bytes.count, bytes[pos] >= 0x30 && bytes[pos] <= 0x37 {
                    v = v * 8 + UInt64(bytes[pos] - 0x30)
                    pos += 1
                    n += 1
                }
                out.append(UInt8(truncatingIfNeeded: v))
            default:
                throw ProtoError(location(at: pos - 2), "invalid escape sequence in string literal")
            }
        }
    }
}
