/// A recursive-descent parser for proto3 files. Options are parsed and skipped, except the few
/// that change generated code (`packed`, `allow_alias`).
public struct ProtoParser {
    var lexer: Lexer
    var token: Token
    let fileName: String

    /// Parses `source`; `fileName` is used in diagnostics and as the file's import name.
    public static func parse(source: String, fileName: String) throws(ProtoError) -> ProtoFile {
        var p = try ProtoParser(source: source, fileName: fileName)
        return try p.parseFile()
    }

    init(source: String, fileName: String) throws(ProtoError) {
        lexer = Lexer(source: source, file: fileName)
        self.fileName = fileName
        token = Token(kind: .eof, location: SourceLocation(file: fileName, line: 1, column: 1))
        token = try lexer.next()
    }

    // MARK: token helpers

    mutating func advance() throws(ProtoError) {
        token = try lexer.next()
    }

    func describe(_ kind: TokenKind) -> String {
        switch kind {
        case .identifier(let s): return "\"\(s)\""
        case .integer(let v): return "\"\(v)\""
        case .float(let v): return "\"\(v)\""
        case .string: return "string literal"
        case .symbol(let c): return "\"\(Character(Unicode.Scalar(c)))\""
        case .eof: return "end of file"
        }
    }

    func error(_ message: String) -> ProtoError {
        ProtoError(token.location, message)
    }

    func isSymbol(_ c: Character) -> Bool {
        token.kind == .symbol(c.asciiValue!)
    }

    func isIdentifier(_ s: String) -> Bool {
        token.kind == .identifier(s)
    }

    mutating func expectSymbol(_ c: Character) throws(ProtoError) {
        guard isSymbol(c) else { throw error("expected \"\(c)\", found \(describe(token.kind))") }
        try advance()
    }

    mutating func consumeSymbol(_ c: Character) throws(ProtoError) -> Bool {
        if isSymbol(c) {
            try advance()
            return true
        }
        return false
    }

    mutating func expectKeyword(_ s: String) throws(ProtoError) {
        guard isIdentifier(s) else { throw error("expected \"\(s)\", found \(describe(token.kind))") }
        try advance()
    }

    mutating func identifier(_ what: String) throws(ProtoError) -> String {
        guard case .identifier(let s) = token.kind else {
            throw error("expected \(what), found \(describe(token.kind))")
        }
        try advance()
        return s
    }

    /// `a.b.c` or `.a.b.c` (type references).
    mutating func typeName() throws(ProtoError) -> String {
        var name = ""
        if try consumeSymbol(".") { name = "." }
        name += try identifier("type name")
        while isSymbol(".") {
            try advance()
            name += "." + (try identifier("identifier after \".\""))
        }
        return name
    }

    mutating func stringLiteral(_ what: String) throws(ProtoError) -> String {
        guard case .string(var bytes) = token.kind else {
            throw error("expected \(what), found \(describe(token.kind))")
        }
        try advance()
        // Adjacent string literals concatenate.
        while case .string(let more) = token.kind {
            bytes += more
            try advance()
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    mutating func integer(_ what: String) throws(ProtoError) -> (negative: Bool, magnitude: UInt64) {
        var negative = false
        if isSymbol("-") {
            negative = true
            try advance()
        } else if isSymbol("+") {
            try advance()
        }
        guard case .integer(let v) = token.kind else {
            throw error("expected \(what), found \(describe(token.kind))")
        }
        try advance()
        return (negative, v)
    }

    // MARK: file

    mutating func parseFile() throws(ProtoError) -> ProtoFile {
        var file = ProtoFile(name: fileName, syntax: "proto2", package: "", imports: [],
                             messages: [], enums: [], services: [])
        var sawSyntax = false
        var sawPackage = false
        if isIdentifier("syntax") {
            let loc = token.location
            try advance()
            try expectSymbol("=")
            let s = try stringLiteral("syntax identifier")
            guard s == "proto3" else {
                throw ProtoError(loc, "unsupported syntax \"\(s)\" (only proto3 is supported)")
            }
            file.syntax = s
            try expectSymbol(";")
            sawSyntax = true
        }
        if !sawSyntax {
            throw error("expected 'syntax = \"proto3\";' (proto2 files are not supported)")
        }
        while token.kind != .eof {
            if try consumeSymbol(";") { continue }
            let loc = token.location
            guard case .identifier(let kw) = token.kind else {
                throw error("expected top-level statement (e.g. \"message\"), found \(describe(token.kind))")
            }
            switch kw {
            case "package":
                if sawPackage { throw error("multiple package definitions") }
                try advance()
                file.package = try typeName()
                if file.package.hasPrefix(".") { throw ProtoError(loc, "package name must not start with \".\"") }
                try expectSymbol(";")
                sawPackage = true
            case "import":
                try advance()
                var kind = ImportDecl.Kind.normal
                if isIdentifier("public") {
                    kind = .public
                    try advance()
                } else if isIdentifier("weak") {
                    kind = .weak
                    try advance()
                }
                let path = try stringLiteral("a string naming the file to import")
                try expectSymbol(";")
                file.imports.append(ImportDecl(path: path, kind: kind, location: loc))
            case "option":
                try skipOptionStatement()
            case "message":
                file.messages.append(try parseMessage())
            case "enum":
                file.enums.append(try parseEnum())
            case "service":
                file.services.append(try parseService())
            case "extend":
                try advance()
                _ = try typeName()
                try skipBlock()
            case "syntax":
                throw error("syntax must be the first statement")
            default:
                throw error("expected top-level statement (e.g. \"message\"), found \"\(kw)\"")
            }
        }
        return file
    }

    // MARK: options

    /// Option name: `foo`, `foo.bar`, `(foo.bar).baz`.
    mutating func optionName() throws(ProtoError) -> String {
        var name = ""
        repeat {
            if try consumeSymbol("(") {
                name += "(" + (try typeName()) + ")"
                try expectSymbol(")")
            } else {
                name += try identifier("option name")
            }
            if isSymbol(".") {
                name += "."
                try advance()
                continue
            }
            break
        } while true
        return name
    }

    /// An option value: a scalar constant or an aggregate `{ ... }`. Returns the constant as text.
    mutating func optionValue() throws(ProtoError) -> String {
        if isSymbol("{") {
            try skipAggregate()
            return "{...}"
        }
        switch token.kind {
        case .identifier(let s):
            try advance()
            return s
        case .string:
            return try stringLiteral("option value")
        case .integer(let v):
            try advance()
            return String(v)
        case .float(let v):
            try advance()
            return String(v)
        case .symbol(let c) where c == UInt8(ascii: "-") || c == UInt8(ascii: "+"):
            try advance()
            switch token.kind {
            case .integer(let v):
                try advance()
                return (c == UInt8(ascii: "-") ? "-" : "") + String(v)
            case .float(let v):
                try advance()
                return (c == UInt8(ascii: "-") ? "-" : "") + String(v)
            case .identifier(let s) where s == "inf" || s == "nan":
                try advance()
                return s
            default:
                throw error("expected number after sign, found \(describe(token.kind))")
            }
        default:
            throw error("expected option value, found \(describe(token.kind))")
        }
    }

    /// Skips a balanced `{ ... }` text-format aggregate.
    mutating func skipAggregate() throws(ProtoError) {
        let start = token.location
        try expectSymbol("{")
        var depth = 1
        while depth > 0 {
            switch token.kind {
            case .eof: throw ProtoError(start, "unterminated aggregate value")
            case .symbol(let c) where c == UInt8(ascii: "{") || c == UInt8(ascii: "<"): depth += 1
            case .symbol(let c) where c == UInt8(ascii: "}") || c == UInt8(ascii: ">"): depth -= 1
            default: break
            }
            try advance()
        }
    }

    /// Skips a balanced `{ ... }` block (used for `extend`).
    mutating func skipBlock() throws(ProtoError) {
        try skipAggregate()
    }

    /// `option name = value;`
    mutating func skipOptionStatement() throws(ProtoError) {
        _ = try parseOptionStatement()
    }

    mutating func parseOptionStatement() throws(ProtoError) -> (name: String, value: String) {
        try expectKeyword("option")
        let name = try optionName()
        try expectSymbol("=")
        let value = try optionValue()
        try expectSymbol(";")
        return (name, value)
    }

    /// `[ name = value, ... ]` after a field or enum value.
    mutating func parseFieldOptions() throws(ProtoError) -> [(name: String, value: String, location: SourceLocation)] {
        var result: [(String, String, SourceLocation)] = []
        guard isSymbol("[") else { return result }
        try advance()
        repeat {
            let loc = token.location
            let name = try optionName()
            try expectSymbol("=")
            let value = try optionValue()
            result.append((name, value, loc))
        } while try consumeSymbol(",")
        try expectSymbol("]")
        return result
    }

    // MARK: message

    mutating func parseMessage() throws(ProtoError) -> MessageDecl {
        let loc = token.location
        let comments = token.leadingComments
        try expectKeyword("message")
        let name = try identifier("message name")
        var msg = MessageDecl(name: name, fields: [], oneofs: [], messages: [], enums: [], location: loc, comments: comments)
        try expectSymbol("{")
        try parseMessageBody(&msg)
        return msg
    }

    mutating func parseMessageBody(_ msg: inout MessageDecl) throws(ProtoError) {
        var reservedNumbers: [(ClosedRange<Int>, SourceLocation)] = []
        var reservedNames: [(String, SourceLocation)] = []
        while true {
            if try consumeSymbol("}") { break }
            if try consumeSymbol(";") { continue }
            if isSymbol(".") {
                msg.fields.append(try parseField(label: .singular))
                continue
            }
            guard case .identifier(let kw) = token.kind else {
                if token.kind == .eof { throw error("reached end of input in message definition (missing '}')") }
                throw error("expected field, message, enum, oneof or option, found \(describe(token.kind))")
            }
            switch kw {
            case "message":
                msg.messages.append(try parseMessage())
            case "enum":
                msg.enums.append(try parseEnum())
            case "option":
                try skipOptionStatement()
            case "oneof":
                let loc = token.location
                let comments = token.leadingComments
                try advance()
                let oname = try identifier("oneof name")
                let index = msg.oneofs.count
                msg.oneofs.append(OneofDecl(name: oname, location: loc, comments: comments))
                try expectSymbol("{")
                var count = 0
                while true {
                    if try consumeSymbol("}") { break }
                    if try consumeSymbol(";") { continue }
                    if isIdentifier("option") {
                        try skipOptionStatement()
                        continue
                    }
                    if token.kind == .eof { throw error("reached end of input in oneof definition (missing '}')") }
                    if isIdentifier("repeated") || isIdentifier("optional") || isIdentifier("required") {
                        throw error("fields in oneofs must not have labels (required / optional / repeated)")
                    }
                    if isIdentifier("map") {
                        throw error("map fields are not allowed in oneofs")
                    }
                    var f = try parseField(label: .singular)
                    f.oneofIndex = index
                    msg.fields.append(f)
                    count += 1
                }
                if count == 0 { throw ProtoError(loc, "oneof \"\(oname)\" must have at least one field") }
            case "reserved":
                try advance()
                try parseReserved(numbers: &reservedNumbers, names: &reservedNames, max: 536_870_911)
            case "extensions":
                throw error("extensions are not allowed in proto3")
            case "extend":
                try advance()
                _ = try typeName()
                try skipBlock()
            case "required":
                throw error("required fields are not allowed in proto3")
            case "group":
                throw error("groups are not supported in proto3")
            case "repeated":
                let comments = token.leadingComments
                try advance()
                msg.fields.append(try parseField(label: .repeated, comments: comments))
            case "optional":
                let comments = token.leadingComments
                try advance()
                msg.fields.append(try parseField(label: .optional, comments: comments))
            default:
                msg.fields.append(try parseField(label: .singular))
            }
        }
        try validateFields(msg, reservedNumbers: reservedNumbers, reservedNames: reservedNames)
    }

    func validateFields(_ msg: MessageDecl, reservedNumbers: [(ClosedRange<Int>, SourceLocation)],
                        reservedNames: [(String, SourceLocation)]) throws(ProtoError) {
        var numbers: [Int: String] = [:]
        var names: Set<String> = []
        for f in msg.fields {
            if let other = numbers[f.number] {
                throw ProtoError(f.location, "field number \(f.number) has already been used in \"\(msg.name)\" by field \"\(other)\"")
            }
            numbers[f.number] = f.name
            if !names.insert(f.name).inserted {
                throw ProtoError(f.location, "\"\(f.name)\" is already defined in \"\(msg.name)\"")
            }
            for (r, _) in reservedNumbers where r.contains(f.number) {
                throw ProtoError(f.location, "field \"\(f.name)\" uses reserved number \(f.number)")
            }
            for (n, _) in reservedNames where n == f.name {
                throw ProtoError(f.location, "field name \"\(f.name)\" is reserved")
            }
        }
    }

    mutating func parseReserved(numbers: inout [(ClosedRange<Int>, SourceLocation)],
                                names: inout [(String, SourceLocation)], max: Int) throws(ProtoError) {
        if case .string = token.kind {
            repeat {
                let loc = token.location
                names.append((try stringLiteral("reserved name"), loc))
            } while try consumeSymbol(",")
        } else {
            repeat {
                let loc = token.location
                let (neg, lo) = try integer("reserved number")
                let low = neg ? -Int(clamping: lo) : Int(clamping: lo)
                var high = low
                if isIdentifier("to") {
                    try advance()
                    if isIdentifier("max") {
                        try advance()
                        high = max
                    } else {
                        let (n2, hi) = try integer("reserved range end")
                        high = n2 ? -Int(clamping: hi) : Int(clamping: hi)
                    }
                }
                guard low <= high else { throw ProtoError(loc, "reserved range end is before its start") }
                numbers.append((low...high, loc))
            } while try consumeSymbol(",")
        }
        try expectSymbol(";")
    }

    mutating func scalarOrNamedType() throws(ProtoError) -> FieldType {
        let name = try typeName()
        if let s = ScalarType(rawValue: name) { return .scalar(s) }
        return .named(name)
    }

    mutating func parseField(label: FieldLabel, comments labelComments: [String]? = nil) throws(ProtoError) -> FieldDecl {
        let loc = token.location
        var comments = labelComments ?? token.leadingComments
        var type: FieldType
        if isIdentifier("map") {
            // `map` may also be a message name; it is a map only if followed by "<".
            try advance()
            if isSymbol("<") {
                if label != .singular { throw ProtoError(loc, "map fields cannot be repeated or optional") }
                try advance()
                let keyLoc = token.location
                let keyName = try typeName()
                guard let key = ScalarType(rawValue: keyName), key.isValidMapKey else {
                    throw ProtoError(keyLoc, "key in map fields cannot be float/double, bytes or message types")
                }
                try expectSymbol(",")
                let value = try scalarOrNamedType()
                try expectSymbol(">")
                type = .map(key: key, value: value)
            } else {
                type = .named("map")
                while isSymbol(".") {
                    try advance()
                    type = .named({ if case .named(let n) = type { return n } else { return "" } }() + "." + (try identifier("identifier")))
                }
            }
        } else {
            type = try scalarOrNamedType()
        }
        let nameLoc = token.location
        let name = try identifier("field name")
        try expectSymbol("=")
        let numLoc = token.location
        let (neg, num) = try integer("field number")
        guard !neg, num >= 1, num <= 536_870_911 else {
            throw ProtoError(numLoc, "field numbers must be positive integers up to 536870911")
        }
        if (19000...19999).contains(num) {
            throw ProtoError(numLoc, "field numbers 19000 through 19999 are reserved for the protobuf implementation")
        }
        var packed: Bool?
        let options = try parseFieldOptions()
        if let d = options.first(where: { $0.name == "default" }) {
            throw ProtoError(d.location, "explicit default values are not allowed in proto3")
        }
        for opt in options where opt.name == "packed" {
            guard opt.value == "true" || opt.value == "false" else {
                throw ProtoError(opt.location, "value must be \"true\" or \"false\" for boolean option \"packed\"")
            }
            packed = opt.value == "true"
        }
        try expectSymbol(";")
        comments += token.trailingCommentsOfPrevious
        _ = nameLoc
        return FieldDecl(name: name, number: Int(num), label: label, type: type, oneofIndex: nil,
                         packedOption: packed, location: loc, comments: comments)
    }

    // MARK: enum

    mutating func parseEnum() throws(ProtoError) -> EnumDecl {
        let loc = token.location
        let enumComments = token.leadingComments
        try expectKeyword("enum")
        let name = try identifier("enum name")
        var e = EnumDecl(name: name, values: [], allowAlias: false, location: loc, comments: enumComments)
        try expectSymbol("{")
        var reservedNumbers: [(ClosedRange<Int>, SourceLocation)] = []
        var reservedNames: [(String, SourceLocation)] = []
        while true {
            if try consumeSymbol("}") { break }
            if try consumeSymbol(";") { continue }
            if token.kind == .eof { throw error("reached end of input in enum definition (missing '}')") }
            if isIdentifier("option") {
                let optLoc = token.location
                let (oname, value) = try parseOptionStatement()
                if oname == "allow_alias" {
                    guard value == "true" || value == "false" else {
                        throw ProtoError(optLoc, "value must be \"true\" or \"false\" for boolean option \"allow_alias\"")
                    }
                    e.allowAlias = value == "true"
                }
                continue
            }
            if isIdentifier("reserved") {
                try advance()
                try parseReserved(numbers: &reservedNumbers, names: &reservedNames, max: Int(Int32.max))
                continue
            }
            let vloc = token.location
            var vcomments = token.leadingComments
            let vname = try identifier("enum constant name")
            try expectSymbol("=")
            let numLoc = token.location
            let (neg, mag) = try integer("enum value number")
            let value: Int64 = neg ? -Int64(clamping: mag) : Int64(clamping: mag)
            guard let v32 = Int32(exactly: value) else {
                throw ProtoError(numLoc, "integer out of range for an enum value")
            }
            _ = try parseFieldOptions()
            try expectSymbol(";")
            vcomments += token.trailingCommentsOfPrevious
            e.values.append(EnumValueDecl(name: vname, number: v32, location: vloc, comments: vcomments))
        }
        guard let first = e.values.first else { throw ProtoError(loc, "enums must contain at least one value") }
        if first.number != 0 {
            throw ProtoError(first.location, "the first enum value must be zero in proto3")
        }
        var seenNumbers: [Int32: String] = [:]
        var seenNames: Set<String> = []
        var aliased = false
        for v in e.values {
            if !seenNames.insert(v.name).inserted {
                throw ProtoError(v.location, "\"\(v.name)\" is already defined in enum \"\(name)\"")
            }
            if let other = seenNumbers[v.number] {
                if !e.allowAlias {
                    throw ProtoError(v.location, "\"\(v.name)\" uses the same enum value as \"\(other)\"; set 'option allow_alias = true;' to allow this")
                }
                aliased = true
            } else {
                seenNumbers[v.number] = v.name
            }
            for (r, _) in reservedNumbers where r.contains(Int(v.number)) {
                throw ProtoError(v.location, "enum value \"\(v.name)\" uses reserved number \(v.number)")
            }
            for (n, _) in reservedNames where n == v.name {
                throw ProtoError(v.location, "enum value name \"\(v.name)\" is reserved")
            }
        }
        if e.allowAlias && !aliased {
            throw ProtoError(loc, "\"\(name)\" declares 'option allow_alias = true;' but has no aliases")
        }
        return e
    }

    // MARK: service

    mutating func parseService() throws(ProtoError) -> ServiceDecl {
        let loc = token.location
        let serviceComments = token.leadingComments
        try expectKeyword("service")
        let name = try identifier("service name")
        var s = ServiceDecl(name: name, methods: [], location: loc, comments: serviceComments)
        try expectSymbol("{")
        while true {
            if try consumeSymbol("}") { break }
            if try consumeSymbol(";") { continue }
            if token.kind == .eof { throw error("reached end of input in service definition (missing '}')") }
            if isIdentifier("option") {
                try skipOptionStatement()
                continue
            }
            let mloc = token.location
            var mcomments = token.leadingComments
            guard isIdentifier("rpc") else {
                throw error("expected \"rpc\" or \"option\", found \(describe(token.kind))")
            }
            try advance()
            let mname = try identifier("method name")
            try expectSymbol("(")
            var clientStreaming = false
            let input: String
            if isIdentifier("stream") {
                // `stream` may also be a message name: it is the keyword only if a type follows.
                try advance()
                if isSymbol(")") {
                    input = "stream"
                } else {
                    clientStreaming = true
                    input = try typeName()
                }
            } else {
                input = try typeName()
            }
            try expectSymbol(")")
            try expectKeyword("returns")
            try expectSymbol("(")
            var serverStreaming = false
            let output: String
            if isIdentifier("stream") {
                try advance()
                if isSymbol(")") {
                    output = "stream"
                } else {
                    serverStreaming = true
                    output = try typeName()
                }
            } else {
                output = try typeName()
            }
            try expectSymbol(")")
            if isSymbol("{") {
                try advance()
                while true {
                    if try consumeSymbol("}") { break }
                    if try consumeSymbol(";") { continue }
                    if token.kind == .eof { throw error("reached end of input in method options (missing '}')") }
                    try skipOptionStatement()
                }
            } else {
                try expectSymbol(";")
            }
            mcomments += token.trailingCommentsOfPrevious
            if s.methods.contains(where: { $0.name == mname }) {
                throw ProtoError(mloc, "\"\(mname)\" is already defined in service \"\(name)\"")
            }
            s.methods.append(MethodDecl(name: mname, inputType: input, outputType: output,
                                        clientStreaming: clientStreaming, serverStreaming: serverStreaming,
                                        location: mloc, comments: mcomments))
        }
        return s
    }
}
