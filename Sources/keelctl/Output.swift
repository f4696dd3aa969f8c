// Output formats as etcdctl 3.4 prints them: "simple" lines, "json" (Go's encoding/json of the Go client's
// response structs: snake_case proto names with omitempty, bytes in base64, 64-bit numbers as numbers) and
// "table" (olekukonko/tablewriter with etcdctl's settings, only for member list and endpoint status/health).
import Foundation
import KeelAPI

/// Output format chosen with -w / --write-out.
enum OutputFormat: String, CaseIterable, Sendable {
    case simple, json, table, fields, protobuf
}

/// Writes to stdout without Foundation's buffering surprises across exit(): everything goes through here.
enum Out {
    static func line(_ s: String) { write(s + "\n") }
    static func write(_ s: String) { write(bytes: Array(s.utf8)) }
    /// Raw bytes (keys and values as stored, also when they are not UTF-8, as Go's fmt.Println(string(b))).
    static func write(bytes input: [UInt8]) {
        var bytes = input
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Foundation.write(1, $0.baseAddress! + off, $0.count - off) }
            if n <= 0 { return }
            off += n
        }
        bytes.removeAll()
    }
    static func err(_ s: String) {
        let bytes = Array((s + "\n").utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Foundation.write(2, $0.baseAddress! + off, $0.count - off) }
            if n <= 0 { return }
            off += n
        }
    }
}

// MARK: JSON

/// A JSON value with ordered object members (Go marshals struct fields in declaration order).
indirect enum JSON: Sendable {
    case object([(String, JSON)])
    case array([JSON])
    case number(String)
    case string(String)
    case bool(Bool)
    case null

    static func int<T: BinaryInteger>(_ v: T) -> JSON { .number(String(v)) }
    static func bytes(_ b: [UInt8]) -> JSON { .string(Data(b).base64EncodedString()) }

    var rendered: String {
        var s = ""
        render(into: &s)
        return s
    }

    func render(into s: inout String) {
        switch self {
        case .object(let members):
            s += "{"
            for (i, (k, v)) in members.enumerated() {
                if i > 0 { s += "," }
                JSON.quote(k, into: &s)
                s += ":"
                v.render(into: &s)
            }
            s += "}"
        case .array(let items):
            s += "["
            for (i, v) in items.enumerated() {
                if i > 0 { s += "," }
                v.render(into: &s)
            }
            s += "]"
        case .number(let n): s += n
        case .string(let str): JSON.quote(str, into: &s)
        case .bool(let b): s += b ? "true" : "false"
        case .null: s += "null"
        }
    }

    /// Go's encoding/json string escaping (HTML-safe: <, >, & as \u00XX; U+2028/2029 escaped).
    static func quote(_ str: String, into s: inout String) {
        s += "\""
        for u in str.unicodeScalars {
            switch u {
            case "\"": s += "\\\""
            case "\\": s += "\\\\"
            case "\n": s += "\\n"
            case "\r": s += "\\r"
            case "\t": s += "\\t"
            case "<", ">", "&", "\u{2028}", "\u{2029}":
                s += "\\u" + hex4(u.value)
            default:
                if u.value < 0x20 { s += "\\u" + hex4(u.value) } else { s.unicodeScalars.append(u) }
            }
        }
        s += "\""
    }

    static func hex4(_ v: UInt32) -> String {
        let h = String(v, radix: 16)
        return String(repeating: "0", count: max(0, 4 - h.count)) + h
    }
}

/// Builds a Go-struct-like JSON object: `omit` members are left out when they hold their zero value
/// (Go's `omitempty`).
struct JSONObject {
    var members: [(String, JSON)] = []

    mutating func add(_ k: String, _ v: JSON) { members.append((k, v)) }
    mutating func int<T: BinaryInteger>(_ k: String, _ v: T, omitEmpty: Bool = true) {
        if v != 0 || !omitEmpty { members.append((k, .int(v))) }
    }
    mutating func bool(_ k: String, _ v: Bool, omitEmpty: Bool = true) {
        if v || !omitEmpty { members.append((k, .bool(v))) }
    }
    mutating func string(_ k: String, _ v: String, omitEmpty: Bool = true) {
        if !v.isEmpty || !omitEmpty { members.append((k, .string(v))) }
    }
    mutating func bytes(_ k: String, _ v: [UInt8]) {
        if !v.isEmpty { members.append((k, .bytes(v))) }
    }
    mutating func strings(_ k: String, _ v: [String]) {
        if !v.isEmpty { members.append((k, .array(v.map(JSON.string)))) }
    }
    mutating func array(_ k: String, _ v: [JSON]) {
        if !v.isEmpty { members.append((k, .array(v))) }
    }
    mutating func message(_ k: String, _ v: JSON?) {
        if let v { members.append((k, v)) }
    }
    var json: JSON { .object(members) }
}

/// JSON of the etcd messages as the Go structs (gogo-protobuf, json tags = proto names, omitempty) marshal.
enum PB {
    static func header(_ h: Etcdserverpb.ResponseHeader?) -> JSON? {
        guard let h else { return nil }
        var o = JSONObject()
        headerFields(h, into: &o)
        return o.json
    }

    /// The header's fields inline (the Go client's lease responses embed *pb.ResponseHeader).
    static func headerFields(_ h: Etcdserverpb.ResponseHeader?, into o: inout JSONObject) {
        guard let h else { return }
        o.int("cluster_id", h.clusterId)
        o.int("member_id", h.memberId)
        o.int("revision", h.revision)
        o.int("raft_term", h.raftTerm)
    }

    static func kv(_ kv: Mvccpb.KeyValue?) -> JSON? {
        guard let kv else { return nil }
        var o = JSONObject()
        o.bytes("key", kv.key)
        o.int("create_revision", kv.createRevision)
        o.int("mod_revision", kv.modRevision)
        o.int("version", kv.version)
        o.bytes("value", kv.value)
        o.int("lease", kv.lease)
        return o.json
    }

    static func range(_ r: Etcdserverpb.RangeResponse) -> JSON {
        var o = JSONObject()
        o.message("header", header(r.header))
        o.array("kvs", r.kvs.compactMap(kv))
        o.bool("more", r.more)
        o.int("count", r.count)
        return o.json
    }

    static func put(_ r: Etcdserverpb.PutResponse) -> JSON {
        var o = JSONObject()
        o.message("header", header(r.header))
        o.message("prev_kv", kv(r.prevKv))
        return o.json
    }

    static func deleteRange(_ r: Etcdserverpb.DeleteRangeResponse) -> JSON {
        var o = JSONObject()
        o.message("header", header(r.header))
        o.int("deleted", r.deleted)
        o.array("prev_kvs", r.prevKvs.compactMap(kv))
        return o.json
    }

    static func txn(_ r: Etcdserverpb.TxnResponse) -> JSON {
        var o = JSONObject()
        o.message("header", header(r.header))
        o.bool("succeeded", r.succeeded)
        o.array("responses", r.responses.map { op in
            // The oneof wrapper struct has no json tags: {"Response":{"ResponsePut":{...}}}.
            let inner: JSON
            switch op.response {
            case .responseRange(let x)?: inner = .object([("ResponseRange", range(x))])
            case .responsePut(let x)?: inner = .object([("ResponsePut", put(x))])
            case .responseDeleteRange(let x)?: inner = .object([("ResponseDeleteRange", deleteRange(x))])
            case .responseTxn(let x)?: inner = .object([("ResponseTxn", txn(x))])
            case nil: return .object([])
            }
            return .object([("Response", inner)])
        })
        return o.json
    }

    static func event(_ e: Mvccpb.Event) -> JSON {
        var o = JSONObject()
        o.int("type", e.type.rawValue)
        o.message("kv", kv(e.kv))
        o.message("prev_kv", kv(e.prevKv))
        return o.json
    }

    static func member(_ m: Etcdserverpb.Member) -> JSON {
        var o = JSONObject()
        o.int("ID", m.id)
        o.string("name", m.name)
        o.strings("peerURLs", m.peerURLs)
        o.strings("clientURLs", m.clientURLs)
        o.bool("isLearner", m.isLearner)
        return o.json
    }

    /// MemberList/Add/Remove/Update/Promote responses (header, [member], members).
    static func members(header h: Etcdserverpb.ResponseHeader?, member: Etcdserverpb.Member? = nil,
                        members: [Etcdserverpb.Member]) -> JSON {
        var o = JSONObject()
        o.message("header", header(h))
        o.message("member", member.map(Self.member))
        o.array("members", members.map(Self.member))
        return o.json
    }

    static func status(_ s: Etcdserverpb.StatusResponse) -> JSON {
        var o = JSONObject()
        o.message("header", header(s.header))
        o.string("version", s.version)
        o.int("dbSize", s.dbSize)
        o.int("leader", s.leader)
        o.int("raftIndex", s.raftIndex)
        o.int("raftTerm", s.raftTerm)
        o.int("raftAppliedIndex", s.raftAppliedIndex)
        o.strings("errors", s.errors)
        o.int("dbSizeInUse", s.dbSizeInUse)
        o.bool("isLearner", s.isLearner)
        return o.json
    }

    static func alarm(_ r: Etcdserverpb.AlarmResponse) -> JSON {
        var o = JSONObject()
        o.message("header", header(r.header))
        o.array("alarms", r.alarms.map { a in
            var m = JSONObject()
            m.int("memberID", a.memberID)
            m.int("alarm", a.alarm.rawValue)
            return m.json
        })
        return o.json
    }

    static func headerOnly(_ h: Etcdserverpb.ResponseHeader?) -> JSON {
        var o = JSONObject()
        o.message("header", header(h))
        return o.json
    }
}

// MARK: simple

/// etcdctl's printKV: key line (unless value-only), value line; `--hex` prints \xNN escapes.
func printKV(_ kv: Mvccpb.KeyValue, hex: Bool, valueOnly: Bool) {
    let k = hex ? Array(hexEscaped(kv.key).utf8) : kv.key
    let v = hex ? Array(hexEscaped(kv.value).utf8) : kv.value
    if !valueOnly { Out.write(bytes: k + [10]) }
    Out.write(bytes: v + [10])
}

func hexEscaped(_ b: [UInt8]) -> String {
    b.map { "\\x" + ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}

/// Bytes as text (invalid UTF-8 becomes U+FFFD; printKV writes keys and values as raw bytes instead).
func text(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }

/// `%016x` of a lease ID (Go prints a negative int64 as "-" and the magnitude, zero padded to 16 wide).
func leaseHex(_ id: Int64) -> String {
    let h = String(id.magnitude, radix: 16)
    let digits = String(repeating: "0", count: max(0, (id < 0 ? 15 : 16) - h.count)) + h
    return (id < 0 ? "-" : "") + digits
}

/// `%x` of an unsigned ID.
func idHex(_ id: UInt64) -> String { String(id, radix: 16) }

/// `%16x`: space padded to 16.
func idHex16(_ id: UInt64) -> String {
    let h = String(id, radix: 16)
    return String(repeating: " ", count: max(0, 16 - h.count)) + h
}

/// go-humanize's Bytes (SI units): "20 kB", "1.2 MB", "512 B".
func humanizeBytes(_ n: UInt64) -> String {
    if n < 10 { return "\(n) B" }
    let sizes = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    let e = floor(log(Double(n)) / log(1000.0))
    let suffix = sizes[min(Int(e), sizes.count - 1)]
    let val = floor(Double(n) / pow(1000, e) * 10 + 0.5) / 10
    return String(format: val < 10 ? "%.1f %@" : "%.0f %@", val, suffix)
}

// MARK: table

/// olekukonko/tablewriter as etcdctl sets it up: upper-case centred headers, cells aligned right,
/// cells wider than 30 characters wrapped at spaces.
func renderTable(header: [String], rows: [[String]]) -> String {
    let maxWidth = 30
    func wrap(_ cell: String) -> [String] {
        guard cell.count > maxWidth, cell.contains(" ") else { return [cell] }
        let words = cell.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        let limit = max(maxWidth, words.map(\.count).max() ?? 0)
        var lines: [String] = []
        var cur = ""
        for w in words {
            if cur.isEmpty { cur = w } else if cur.count + 1 + w.count <= limit { cur += " " + w } else {
                lines.append(cur)
                cur = w
            }
        }
        lines.append(cur)
        return lines
    }
    let heads = header.map { $0.uppercased() }
    let cells = rows.map { $0.map(wrap) }
    var widths = heads.map(\.count)
    for r in cells { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.map(\.count).max() ?? 0) } }
    let border = "+" + widths.map { String(repeating: "-", count: $0 + 2) + "+" }.joined()
    var out = border + "\n|"
    for (i, h) in heads.enumerated() {
        let gap = widths[i] - h.count
        out += " " + String(repeating: " ", count: gap / 2) + h + String(repeating: " ", count: gap - gap / 2) + " |"
    }
    out += "\n" + border + "\n"
    for r in cells {
        let height = r.map(\.count).max() ?? 1
        for line in 0..<height {
            out += "|"
            for (i, c) in r.enumerated() {
                let s = line < c.count ? c[line] : ""
                out += " " + String(repeating: " ", count: max(0, widths[i] - s.count)) + s + " |"
            }
            out += "\n"
        }
    }
    out += border + "\n"
    return out
}

// MARK: fields

/// etcdctl's "fields" format (printer_fields.go): one `"Name" : value` line per field. keelctl has it for
/// the KV verbs (get, put, del, txn) and watch.
enum Fields {
    static func header(_ h: Etcdserverpb.ResponseHeader?) -> [String] {
        let h = h ?? Etcdserverpb.ResponseHeader()
        return ["\"ClusterID\" : \(h.clusterId)", "\"MemberID\" : \(h.memberId)", "\"Revision\" : \(h.revision)",
                "\"RaftTerm\" : \(h.raftTerm)"]
    }

    static func kv(_ pfx: String, _ kv: Mvccpb.KeyValue?) -> [String] {
        let kv = kv ?? Mvccpb.KeyValue()
        return ["\"\(pfx)Key\" : \(goQuote(text(kv.key)))", "\"\(pfx)CreateRevision\" : \(kv.createRevision)",
                "\"\(pfx)ModRevision\" : \(kv.modRevision)", "\"\(pfx)Version\" : \(kv.version)",
                "\"\(pfx)Value\" : \(goQuote(text(kv.value)))", "\"\(pfx)Lease\" : \(kv.lease)"]
    }

    static func get(_ r: Etcdserverpb.RangeResponse) -> [String] {
        header(r.header) + r.kvs.flatMap { kv("", $0) } + ["\"More\" : \(r.more)", "\"Count\" : \(r.count)"]
    }

    static func put(_ r: Etcdserverpb.PutResponse) -> [String] {
        header(r.header) + (r.prevKv.map { kv("Prev", $0) } ?? [])
    }

    static func del(_ r: Etcdserverpb.DeleteRangeResponse) -> [String] {
        header(r.header) + ["\"Deleted\" : \(r.deleted)"] + r.prevKvs.flatMap { kv("Prev", $0) }
    }

    static func txn(_ r: Etcdserverpb.TxnResponse) -> [String] {
        header(r.header) + ["\"Succeeded\" : \(r.succeeded)"] + r.responses.flatMap { op -> [String] in
            switch op.response {
            case .responseDeleteRange(let x)?: return del(x)
            case .responsePut(let x)?: return put(x)
            case .responseRange(let x)?: return get(x)
            default: return ["\"Unknown\" : \(goQuote("\(op)"))"]
            }
        }
    }

    static func watch(_ r: Etcdserverpb.WatchResponse) -> [String] {
        header(r.header) + r.events.flatMap { e -> [String] in
            ["\"Type\" : \(e.type == .delete ? "DELETE" : "PUT")"] + (e.prevKv.map { kv("Prev", $0) } ?? []) + kv("", e.kv)
        }
    }
}
