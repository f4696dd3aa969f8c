// KV verbs: get, put, del, txn, compaction (etcdctl/ctlv3/command/{get,put,del,txn,compaction}_command.go).
import ArgumentParser
import Foundation
import KeelAPI
import KeelClient

/// Go's strconv error text, as etcdctl shows it inside its own messages.
func goParseIntError(_ s: String, bits: Int = 64) -> String {
    let digits = s.drop { $0 == "-" || $0 == "+" }
    let syntaxOK = !digits.isEmpty && digits.allSatisfy { $0.isHexDigit }
    return "strconv.ParseInt: parsing \(goQuote(s)): " + (syntaxOK ? "value out of range" : "invalid syntax")
}

/// Go's %q of a string (the common escapes).
func goQuote(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        case "\r": out += "\\r"
        default:
            if u.value < 0x20 || u.value == 0x7f {
                out += "\\x" + (u.value < 16 ? "0" : "") + String(u.value, radix: 16)
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}

/// A hex lease ID as etcdctl parses it (strconv.ParseInt(s, 16, 64)).
func parseLeaseHex(_ s: String) -> Int64? {
    if s.hasPrefix("-") { return Int64(s.dropFirst(), radix: 16).map { -$0 } }
    return Int64(s.hasPrefix("+") ? String(s.dropFirst()) : s, radix: 16)
}

// MARK: requests shared by the verbs and txn's op lines

struct GetFlags: ParsableArguments {
    @Option(help: "Linearizable(l) or Serializable(s)") var consistency: String = "l"
    @Option(help: "Order of results; ASCEND or DESCEND (ASCEND by default)") var order: String = ""
    @Option(name: .customLong("sort-by"), help: "Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION") var sortBy: String = ""
    @Option(help: "Maximum number of results") var limit: Int64 = 0
    @Flag(help: "Get keys with matching prefix") var prefix = false
    @Flag(name: .customLong("from-key"), help: "Get keys that are greater than or equal to the given key using byte compare")
    var fromKey = false
    @Option(help: "Specify the kv revision") var rev: Int64 = 0
    @Flag(name: .customLong("keys-only"), help: "Get only the keys") var keysOnly = false
    @Flag(name: .customLong("count-only"), help: "Get only the count (etcdctl 3.5)") var countOnly = false
    @Flag(name: .customLong("print-value-only"), help: "Only write values when using the \"simple\" output format")
    var printValueOnly = false
    @Argument var args: [String] = []

    /// The RangeRequest etcdctl's getGetOp + clientv3.OpGet build.
    func request() throws(CtlFailure) -> Etcdserverpb.RangeRequest {
        guard !args.isEmpty else {
            throw CtlFailure(.badArgs, "get command needs one argument as key and an optional argument as range_end")
        }
        if prefix && fromKey {
            throw CtlFailure(.badArgs, "`--prefix` and `--from-key` cannot be set at the same time, choose one")
        }
        var r = Etcdserverpb.RangeRequest()
        switch consistency {
        case "s": r.serializable = true
        case "l": break
        default: throw CtlFailure(.badFeature, "unknown consistency flag \(goQuote(consistency))")
        }
        var key = Array(args[0].utf8)
        if args.count > 1 {
            if prefix || fromKey {
                throw CtlFailure(.badArgs, "too many arguments, only accept one argument when `--prefix` or `--from-key` is set")
            }
            r.rangeEnd = Array(args[1].utf8)
        }
        r.limit = limit
        if rev > 0 { r.revision = rev }
        var sortOrder = Etcdserverpb.RangeRequest.SortOrder.none
        switch order.uppercased() {
        case "ASCEND": sortOrder = .ascend
        case "DESCEND": sortOrder = .descend
        case "": break
        default: throw CtlFailure(.badFeature, "bad sort order \(order)")
        }
        var target = Etcdserverpb.RangeRequest.SortTarget.key
        switch sortBy.uppercased() {
        case "CREATE": target = .create
        case "KEY": target = .key
        case "MODIFY": target = .mod
        case "VALUE": target = .value
        case "VERSION": target = .version
        case "": break
        default: throw CtlFailure(.badFeature, "bad sort target \(sortBy)")
        }
        // clientv3.WithSort: keys come back ascending anyway, so KEY/ASCEND is sent as no order.
        if target == .key && sortOrder == .ascend { sortOrder = .none }
        r.sortOrder = sortOrder
        r.sortTarget = target
        if prefix {
            if key.isEmpty {
                key = [0]
                r.rangeEnd = [0]
            } else {
                r.rangeEnd = KeelClient.prefixEnd(key)
            }
        }
        if fromKey {
            if key.isEmpty { key = [0] }
            r.rangeEnd = [0]
        }
        r.key = key
        r.keysOnly = keysOnly
        r.countOnly = countOnly
        return r
    }
}

struct PutFlags: ParsableArguments {
    @Option(help: "lease ID (in hexadecimal) to attach to the key") var lease: String = "0"
    @Flag(name: .customLong("prev-kv"), help: "return the previous key-value pair before modification") var prevKV = false
    @Flag(name: .customLong("ignore-value"), help: "updates the key using its current value") var ignoreValue = false
    @Flag(name: .customLong("ignore-lease"), help: "updates the key using its current lease") var ignoreLease = false
    @Argument var args: [String] = []

    /// etcdctl's getPutOp; the value comes from stdin when it is not an argument (`readStdin`).
    func request(readStdin: Bool) throws(CtlFailure) -> Etcdserverpb.PutRequest {
        guard !args.isEmpty else {
            throw CtlFailure(.badArgs, "put command needs 1 argument and input from stdin or 2 arguments")
        }
        if ignoreValue && args.count > 1 {
            throw CtlFailure(.badArgs, "put command needs only 1 argument when 'ignore-value' is set")
        }
        var r = Etcdserverpb.PutRequest()
        r.key = Array(args[0].utf8)
        if !ignoreValue {
            if args.count > 1 {
                r.value = Array(args[1].utf8)
            } else {
                let data = readStdin ? FileHandle.standardInput.readDataToEndOfFile() : Data()
                guard !data.isEmpty else {
                    throw CtlFailure(.badArgs, "put command needs 1 argument and input from stdin or 2 arguments")
                }
                r.value = Array(data)
            }
        }
        guard let id = parseLeaseHex(lease) else {
            throw CtlFailure(.badArgs, "bad lease ID (\(goParseIntError(lease))), expecting ID in Hex")
        }
        r.lease = id
        r.prevKv = prevKV
        r.ignoreValue = ignoreValue
        r.ignoreLease = ignoreLease
        return r
    }
}

struct DelFlags: ParsableArguments {
    @Flag(help: "delete keys with matching prefix") var prefix = false
    @Flag(name: .customLong("prev-kv"), help: "return deleted key-value pairs") var prevKV = false
    @Flag(name: .customLong("from-key"), help: "delete keys that are greater than or equal to the given key using byte compare")
    var fromKey = false
    @Argument var args: [String] = []

    func request() throws(CtlFailure) -> Etcdserverpb.DeleteRangeRequest {
        guard args.count == 1 || args.count == 2 else {
            throw CtlFailure(.badArgs, "del command needs one argument as key and an optional argument as range_end")
        }
        if prefix && fromKey {
            throw CtlFailure(.badArgs, "`--prefix` and `--from-key` cannot be set at the same time, choose one")
        }
        var r = Etcdserverpb.DeleteRangeRequest()
        var key = Array(args[0].utf8)
        if args.count > 1 {
            if prefix || fromKey {
                throw CtlFailure(.badArgs, "too many arguments, only accept one argument when `--prefix` or `--from-key` is set")
            }
            r.rangeEnd = Array(args[1].utf8)
        }
        if prefix {
            if key.isEmpty {
                key = [0]
                r.rangeEnd = [0]
            } else {
                r.rangeEnd = KeelClient.prefixEnd(key)
            }
        }
        r.prevKv = prevKV
        if fromKey {
            if key.isEmpty { key = [0] }
            r.rangeEnd = [0]
        }
        r.key = key
        return r
    }
}

// MARK: printing

enum KVPrint {
    static func unsupported(_ f: OutputFormat) -> CtlFailure { CtlFailure(.badFeature, "\(f.rawValue) not supported as output format") }

    /// etcdctl's printers: the simple lines, or the JSON of the response; other formats are refused after
    /// the call, as etcdctl's printerUnsupported does.
    static func emit(_ c: Connection, json: () -> JSON, fields: (() -> [String])? = nil,
                     simple: () throws(CtlFailure) -> Void) throws(CtlFailure) {
        switch c.format {
        case .simple: try simple()
        case .json: Out.line(json().rendered)
        case .fields where fields != nil: for l in fields!() { Out.line(l) }
        default: throw unsupported(c.format)
        }
    }

    static func get(_ r: Etcdserverpb.RangeResponse, _ c: Connection, valueOnly: Bool = false, countOnly: Bool = false)
        throws(CtlFailure) {
        try emit(c, json: { PB.range(r) }, fields: { Fields.get(r) }) {
            if countOnly { Out.line(String(r.count)); return }
            for kv in r.kvs { printKV(kv, hex: c.hex, valueOnly: valueOnly) }
        }
    }

    static func put(_ r: Etcdserverpb.PutResponse, _ c: Connection) throws(CtlFailure) {
        try emit(c, json: { PB.put(r) }, fields: { Fields.put(r) }) {
            Out.line("OK")
            if let kv = r.prevKv { printKV(kv, hex: c.hex, valueOnly: false) }
        }
    }

    static func del(_ r: Etcdserverpb.DeleteRangeResponse, _ c: Connection) throws(CtlFailure) {
        try emit(c, json: { PB.deleteRange(r) }, fields: { Fields.del(r) }) {
            Out.line(String(r.deleted))
            for kv in r.prevKvs { printKV(kv, hex: c.hex, valueOnly: false) }
        }
    }

    static func txn(_ r: Etcdserverpb.TxnResponse, _ c: Connection) throws(CtlFailure) {
        switch c.format {
        case .simple:
            Out.line(r.succeeded ? "SUCCESS" : "FAILURE")
            for op in r.responses {
                Out.line("")
                switch op.response {
                case .responseDeleteRange(let x)?: try del(x, c)
                case .responsePut(let x)?: try put(x, c)
                case .responseRange(let x)?: try get(x, c)
                default: Out.line("unexpected response \(op)")
                }
            }
        case .json: Out.line(PB.txn(r).rendered)
        case .fields: for l in Fields.txn(r) { Out.line(l) }
        default: throw unsupported(c.format)
        }
    }
}

// MARK: verbs

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Gets the key or a range of keys")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var flags: GetFlags

    func run() async throws {
        let r = try flags.request()
        let c = try global.connect()
        let resp = try await c.unary(Etcdserverpb.KV.range, r, idempotent: true)
        if flags.printValueOnly && c.format != .simple {
            throw CtlFailure(.badArgs, "print-value-only is only for `--write-out=simple`")
        }
        try KVPrint.get(resp, c, valueOnly: flags.printValueOnly, countOnly: flags.countOnly)
    }
}

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Puts the given key into the store",
        discussion: "When <value> begins with '-', insert '--' first: put <key> -- <value>. Without <value> (and "
            + "without --ignore-value) the value is read from standard input.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var flags: PutFlags

    func run() async throws {
        let r = try flags.request(readStdin: true)
        let c = try global.connect()
        let resp = try await c.unary(Etcdserverpb.KV.put, r, idempotent: false)
        try KVPrint.put(resp, c)
    }
}

struct Del: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Removes the specified key or range of keys [key, range_end)")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var flags: DelFlags

    func run() async throws {
        let r = try flags.request()
        let c = try global.connect()
        let resp = try await c.unary(Etcdserverpb.KV.deleteRange, r, idempotent: false)
        try KVPrint.del(resp, c)
    }
}

struct Compaction: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Compacts the event history in etcd")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "'true' to wait for compaction to physically remove all old revisions") var physical = false
    @Argument var args: [String] = []

    func run() async throws {
        guard args.count == 1 else { throw CtlFailure(.badArgs, "compaction command needs 1 argument") }
        guard let rev = Int64(args[0]) else { throw CtlFailure(.error, goParseIntError(args[0])) }
        let c = try global.connect()
        var r = Etcdserverpb.CompactionRequest()
        r.revision = rev
        r.physical = physical
        _ = try await c.unary(Etcdserverpb.KV.compact, r, idempotent: true)
        Out.line("compacted revision \(rev)")
    }
}

// MARK: txn

struct Txn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Txn processes all the requests in one transaction",
        discussion: """
            Reads from stdin: compares (one per line, e.g. mod("k") > "3", value("k") = "v"), a blank line, \
            success requests (get, put, del lines with their flags), a blank line, failure requests, a blank line.
            """)
    @OptionGroup var global: GlobalOptions
    @Flag(name: .shortAndLong, help: "Input transaction in interactive mode") var interactive = false
    @Argument var args: [String] = []

    func run() async throws {
        if !args.isEmpty { throw CtlFailure(.badArgs, "txn command does not accept argument") }
        let c = try global.connect()
        var input = LineReader(data: FileHandle.standardInput.readDataToEndOfFile())
        var r = Etcdserverpb.TxnRequest()
        prompt("compares:")
        for line in try input.section() { r.compare.append(try TxnParser.compare(line)) }
        prompt("success requests (get, put, del):")
        for line in try input.section() { r.success.append(try TxnParser.op(line)) }
        prompt("failure requests (get, put, del):")
        for line in try input.section() { r.failure.append(try TxnParser.op(line)) }
        let resp = try await c.unary(Etcdserverpb.KV.txn, r, idempotent: false)
        try KVPrint.txn(resp, c)
    }

    func prompt(_ s: String) { if interactive { Out.line(s) } }
}

/// Lines as Go's bufio.Reader.ReadString('\n') hands them out: a last line without "\n" is an EOF error.
struct LineReader {
    var lines: [String]
    var index = 0

    init(data: Data) {
        var all = String(decoding: data, as: UTF8.self).components(separatedBy: "\n")
        // "a\nb\n" splits into ["a","b",""]: the empty tail is not a line; a non-empty tail has no newline.
        if all.last == "" { all.removeLast(); lines = all; unterminated = false } else { lines = all; unterminated = true }
    }
    var unterminated: Bool

    mutating func next() throws(CtlFailure) -> String {
        guard index < lines.count, !(unterminated && index == lines.count - 1) else {
            throw CtlFailure(.invalidInput, "EOF")
        }
        defer { index += 1 }
        return lines[index]
    }

    /// Lines up to the next blank one (trimmed, as etcdctl).
    mutating func section() throws(CtlFailure) -> [String] {
        var out: [String] = []
        while true {
            let l = try next().trimmingCharacters(in: .whitespaces)
            if l.isEmpty { return out }
            out.append(l)
        }
    }
}

enum TxnParser {
    /// `target("key") op "value"`: ver/version, c/create, m/mod, val/value (etcdctl's parseCompare).
    static func compare(_ line: String) throws(CtlFailure) -> Etcdserverpb.Compare {
        guard let paren = line.firstIndex(of: "(") else { throw CtlFailure(.invalidInput, "malformed comparison: \(line)") }
        let target = String(line[..<paren])
        var scan = GoScanner(Substring(line[line.index(after: paren)...]))
        guard let key = scan.quoted(), scan.literal(")"), let op = scan.word(), let val = scan.quoted() else {
            throw CtlFailure(.invalidInput, "malformed comparison: \(line)")
        }
        var c = Etcdserverpb.Compare()
        c.key = Array(key.utf8)
        switch op {
        case "=": c.result = .equal
        case "!=": c.result = .notEqual
        case "<": c.result = .less
        case ">": c.result = .greater
        default: throw CtlFailure(.invalidInput, "Unknown result op \(goQuote(op))")
        }
        func int() throws(CtlFailure) -> Int64 {
            guard let v = Int64(val) else { throw CtlFailure(.invalidInput, "invalid txn compare request: \(line)") }
            return v
        }
        switch target {
        case "ver", "version": c.target = .version; c.targetUnion = .version(try int())
        case "c", "create": c.target = .create; c.targetUnion = .createRevision(try int())
        case "m", "mod": c.target = .mod; c.targetUnion = .modRevision(try int())
        case "val", "value": c.target = .value; c.targetUnion = .value(Array(val.utf8))
        case "lease": c.target = .lease; c.targetUnion = .lease(try int())
        default: throw CtlFailure(.invalidInput, "malformed comparison: \(line) (unknown target \(target))")
        }
        return c
    }

    /// A `put|get|del ...` line with the verbs' own flags.
    static func op(_ line: String) throws(CtlFailure) -> Etcdserverpb.RequestOp {
        let args = argify(line)
        guard args.count >= 2 else { throw CtlFailure(.invalidInput, "invalid txn compare request: \(line)") }
        let rest = Array(args.dropFirst())
        var op = Etcdserverpb.RequestOp()
        do {
            switch args[0] {
            case "put": op.request = .requestPut(try PutFlags.parse(rest).request(readStdin: false))
            case "get": op.request = .requestRange(try GetFlags.parse(rest).request())
            case "del": op.request = .requestDeleteRange(try DelFlags.parse(rest).request())
            default: throw CtlFailure(.invalidInput, "invalid txn request: \(line)")
            }
        } catch let f as CtlFailure {
            throw f
        } catch {
            throw CtlFailure(.invalidInput, "invalid txn request: \(line)")
        }
        return op
    }
}

/// etcdctl's argify: words, "double quoted" (Go unquoted) and 'single quoted' strings.
func argify(_ s: String) -> [String] {
    var out: [String] = []
    var scan = GoScanner(Substring(s))
    while true {
        scan.skipSpaces()
        guard let c = scan.rest.first else { break }
        if c == "\"" , let q = scan.quoted() {
            out.append(q)
        } else if c == "'", let end = scan.rest.dropFirst().firstIndex(of: "'") {
            out.append(String(scan.rest[scan.rest.index(after: scan.rest.startIndex)..<end]))
            scan.rest = scan.rest[scan.rest.index(after: end)...]
        } else {
            let w = scan.rest.prefix { !$0.isWhitespace }
            out.append(String(w))
            scan.rest = scan.rest.dropFirst(w.count)
        }
    }
    return out
}

/// The bits of Go's fmt.Sscanf that etcdctl's txn syntax uses: %q (Go-quoted string), %s (a word).
struct GoScanner {
    var rest: Substring
    init(_ s: Substring) { rest = s }

    mutating func skipSpaces() { rest = rest.drop { $0 == " " || $0 == "\t" } }

    mutating func literal(_ s: String) -> Bool {
        skipSpaces()
        guard rest.hasPrefix(s) else { return false }
        rest = rest.dropFirst(s.count)
        return true
    }

    mutating func word() -> String? {
        skipSpaces()
        let w = rest.prefix { !$0.isWhitespace }
        guard !w.isEmpty else { return nil }
        rest = rest.dropFirst(w.count)
        return String(w)
    }

    /// A "double quoted" string with Go escapes, or a `raw` one.
    mutating func quoted() -> String? {
        skipSpaces()
        guard let open = rest.first else { return nil }
        if open == "`" {
            guard let end = rest.dropFirst().firstIndex(of: "`") else { return nil }
            let s = String(rest[rest.index(after: rest.startIndex)..<end])
            rest = rest[rest.index(after: end)...]
            return s
        }
        guard open == "\"" else { return nil }
        var bytes: [UInt8] = []
        var it = Array(rest.dropFirst().utf8)[...]
        var consumed = 1
        while let b = it.first {
            it = it.dropFirst()
            consumed += 1
            if b == UInt8(ascii: "\"") {
                rest = Substring(String(decoding: Array(rest.utf8).dropFirst(consumed), as: UTF8.self))
                return String(decoding: bytes, as: UTF8.self)
            }
            if b != UInt8(ascii: "\\") { bytes.append(b); continue }
            guard let e = it.first else { return nil }
            it = it.dropFirst()
            consumed += 1
            switch e {
            case UInt8(ascii: "n"): bytes.append(10)
            case UInt8(ascii: "t"): bytes.append(9)
            case UInt8(ascii: "r"): bytes.append(13)
            case UInt8(ascii: "a"): bytes.append(7)
            case UInt8(ascii: "b"): bytes.append(8)
            case UInt8(ascii: "f"): bytes.append(12)
            case UInt8(ascii: "v"): bytes.append(11)
            case UInt8(ascii: "\\"), UInt8(ascii: "\""), UInt8(ascii: "'"): bytes.append(e)
            case UInt8(ascii: "x"):
                guard it.count >= 2, let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) else { return nil }
                bytes.append(v)
                it = it.dropFirst(2)
                consumed += 2
            case UInt8(ascii: "u"), UInt8(ascii: "U"):
                let n = e == UInt8(ascii: "u") ? 4 : 8
                guard it.count >= n, let v = UInt32(String(decoding: it.prefix(n), as: UTF8.self), radix: 16),
                      let scalar = Unicode.Scalar(v) else { return nil }
                bytes.append(contentsOf: Array(String(Character(scalar)).utf8))
                it = it.dropFirst(n)
                consumed += n
            default: return nil
            }
        }
        return nil
    }
}
