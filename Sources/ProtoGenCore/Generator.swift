import Foundation

/// Emits Swift source for the input files of a resolved `Schema`, following the generated-code
/// contract in notes/CONVENTIONS.md.
public struct SwiftGenerator {
    public let schema: Schema
    /// Extra modules each generated file imports (besides ProtoWire).
    public var extraImports: [String]
    /// The Swift module the generated code is compiled into. When a generated nested type
    /// (say service `Echo` in package `echo`) has the same name as a namespace or top-level
    /// type, references to that name are qualified with the module to avoid shadowing.
    public var moduleName: String?
    /// Names of every nested type the input files generate (services, messages, enums, oneofs).
    let nestedNames: Set<String>

    /// Messages that must hold a given singular message field through a box (the field's type
    /// is in the same strongly connected component of the "contains" graph).
    let sccOf: [String: Int]

    public init(schema: Schema, extraImports: [String] = [], moduleName: String? = nil) {
        self.schema = schema
        self.extraImports = extraImports
        self.moduleName = moduleName
        var nested: Set<String> = []
        func addMessage(_ m: MessageDecl, topLevel: Bool) {
            if !topLevel { nested.insert(SwiftNaming.typeName(m.name)) }
            for o in m.oneofs { nested.insert("OneOf_" + SwiftNaming.upperCamel(o.name)) }
            for e in m.enums { nested.insert(SwiftNaming.typeName(e.name, isEnum: true)) }
            for n in m.messages { addMessage(n, topLevel: false) }
        }
        for f in schema.files where f.isInput {
            let inNamespace = !f.proto.package.isEmpty
            for m in f.proto.messages { addMessage(m, topLevel: !inNamespace) }
            if inNamespace {
                for e in f.proto.enums { nested.insert(SwiftNaming.typeName(e.name, isEnum: true)) }
                for sv in f.proto.services { nested.insert(SwiftNaming.typeName(sv.name)) }
            }
        }
        self.nestedNames = nested
        self.sccOf = SwiftGenerator.computeSCCs(schema)
    }

    /// One generated file per input .proto: `(output file name, Swift source)`. Output names
    /// are the input's base name with `.pb.swift` (see `outputFileName(forProtoPath:)`), so two
    /// inputs with the same base name are an error.
    public func generate() throws(ProtoError) -> [(fileName: String, source: String)] {
        var declaredNamespaces: Set<String> = []
        var result: [(String, String)] = []
        var usedNames: [String: String] = [:]
        for f in schema.files where f.isInput {
            let outName = SwiftGenerator.outputFileName(forProtoPath: f.path)
            if let other = usedNames[outName] {
                throw ProtoError(SourceLocation(file: f.path, line: 1, column: 1),
                                 "\"\(f.path)\" and \"\(other)\" would both generate \(outName); rename one of them")
            }
            usedNames[outName] = f.path
            let ns = SwiftNaming.namespace(forPackage: f.proto.package)
            let declare = !ns.isEmpty && declaredNamespaces.insert(ns).inserted
            result.append((outName, generateFile(f, declareNamespace: declare)))
        }
        return result
    }

    /// The generated file name for a .proto path: `Protos/rpc.proto` -> `rpc.pb.swift`.
    public static func outputFileName(forProtoPath path: String) -> String {
        var base = path.split(separator: "/").last.map(String.init) ?? path
        if base.hasSuffix(".proto") { base.removeLast(6) }
        return base + ".pb.swift"
    }

    // MARK: graph

    static func computeSCCs(_ schema: Schema) -> [String: Int] {
        // Edges: message -> message for singular (non-repeated, non-map) message fields.
        var edges: [String: [String]] = [:]
        func walk(_ m: MessageDecl, fqn: String) {
            var out: [String] = []
            for f in m.fields where f.label != .repeated {
                if case .named(let n) = f.type, schema.symbols[String(n.dropFirst())]?.kind == .message {
                    out.append(String(n.dropFirst()))
                }
            }
            edges[fqn] = out
            for n in m.messages { walk(n, fqn: fqn + "." + n.name) }
        }
        for f in schema.files {
            let pkg = f.proto.package
            for m in f.proto.messages { walk(m, fqn: pkg.isEmpty ? m.name : pkg + "." + m.name) }
        }
        // Tarjan's algorithm (iterative-free recursion is fine for schema sizes).
        var index = 0
        var indices: [String: Int] = [:]
        var lowlink: [String: Int] = [:]
        var onStack: Set<String> = []
        var stack: [String] = []
        var scc: [String: Int] = [:]
        var sccCount = 0
        func strongConnect(_ v: String) {
            indices[v] = index
            lowlink[v] = index
            index += 1
            stack.append(v)
            onStack.insert(v)
            for w in edges[v] ?? [] {
                if indices[w] == nil {
                    strongConnect(w)
                    lowlink[v] = min(lowlink[v]!, lowlink[w]!)
                } else if onStack.contains(w) {
                    lowlink[v] = min(lowlink[v]!, indices[w]!)
                }
            }
            if lowlink[v] == indices[v] {
                while let w = stack.popLast() {
                    onStack.remove(w)
                    scc[w] = sccCount
                    if w == v { break }
                }
                sccCount += 1
            }
        }
        for v in edges.keys.sorted() where indices[v] == nil { strongConnect(v) }
        // Only SCCs that really form a cycle matter: size > 1 or a self edge.
        var sizes: [Int: Int] = [:]
        for (_, c) in scc { sizes[c, default: 0] += 1 }
        var cyclic: [String: Int] = [:]
        for (v, c) in scc where sizes[c]! > 1 || (edges[v] ?? []).contains(v) {
            cyclic[v] = c
        }
        return cyclic
    }

    func needsBox(from container: String, to target: String) -> Bool {
        guard let a = sccOf[container], let b = sccOf[target] else { return false }
        return a == b
    }

    // MARK: names

    /// Swift type path for a fully qualified proto name (with or without leading dot).
    func swiftTypeName(_ fqnIn: String) -> String {
        let fqn = fqnIn.hasPrefix(".") ? String(fqnIn.dropFirst()) : fqnIn
        let sym = schema.symbols[fqn]
        let pkg = sym?.package ?? ""
        let rest = pkg.isEmpty ? fqn : String(fqn.dropFirst(pkg.count + 1))
        var parts: [String] = []
        var prefix = pkg
        for part in rest.split(separator: ".") {
            prefix = prefix.isEmpty ? String(part) : prefix + "." + part
            parts.append(SwiftNaming.typeName(String(part), isEnum: schema.symbols[prefix]?.kind == .enumeration))
        }
        let ns = SwiftNaming.namespace(forPackage: pkg)
        let path = (ns.isEmpty ? "" : ns + ".") + parts.joined(separator: ".")
        let root = ns.isEmpty ? (parts.first ?? "") : ns
        if nestedNames.contains(root), let module = qualifyingModule(forFile: sym?.file) {
            return module + "." + path
        }
        return path
    }

    /// The module that defines the types of a .proto file: this module for inputs, the single
    /// `--import` module for imported files (nil if unknown).
    func qualifyingModule(forFile name: String?) -> String? {
        guard let name, let f = schema.file(named: name) else { return nil }
        if f.isInput { return moduleName }
        return extraImports.count == 1 ? extraImports[0] : nil
    }

    // MARK: file

    func generateFile(_ file: LoadedFile, declareNamespace: Bool) -> String {
        var w = CodeWriter()
        w.line("// DO NOT EDIT. Generated by ProtoGen from \(file.name).")
        w.line("// swift-format-ignore-file")
        w.line("")
        w.line("import ProtoWire")
        for m in extraImports { w.line("import \(m)") }
        w.line("")
        let pkg = file.proto.package
        let ns = SwiftNaming.namespace(forPackage: pkg)
        if declareNamespace {
            w.line("/// Namespace of proto package `\(pkg)`.")
            w.line("public enum \(ns) {}")
            w.line("")
        }
        let hasContent = !file.proto.messages.isEmpty || !file.proto.enums.isEmpty || !file.proto.services.isEmpty
        if !ns.isEmpty && hasContent {
            w.open("extension \(ns) {")
        }
        for e in file.proto.enums {
            generateEnum(e, &w)
        }
        for m in file.proto.messages {
            generateMessage(m, fqn: pkg.isEmpty ? m.name : pkg + "." + m.name, &w)
        }
        for s in file.proto.services {
            generateService(s, package: pkg, &w)
        }
        if !ns.isEmpty && hasContent {
            w.close("}")
        }
        return w.text
    }

    // MARK: enums

    func generateEnum(_ e: EnumDecl, _ w: inout CodeWriter) {
        let name = SwiftNaming.typeName(e.name, isEnum: true)
        w.line("")
        w.doc(e.comments)
        w.open("public struct \(name): ProtoWire.ProtoEnum {")
        w.line("public var rawValue: Swift.Int32")
        w.line("@inlinable public init(rawValue: Swift.Int32) { self.rawValue = rawValue }")
        w.line("@inlinable public init() { self.rawValue = 0 }")
        var used: Set<String> = ["rawValue", "protoName", "allKnownCases", "init"]
        var constNames: [(String, Int32)] = []
        for v in e.values {
            var c = SwiftNaming.lowerCamel(v.name)
            while used.contains(c) { c += "_" }
            used.insert(c)
            constNames.append((c, v.number))
            w.doc(v.comments)
            w.line("public static let \(SwiftNaming.quoted(c)) = \(name)(rawValue: \(v.number))")
        }
        var seen: Set<Int32> = []
        var firsts: [(String, Int32, String)] = []
        for (i, v) in e.values.enumerated() where seen.insert(v.number).inserted {
            firsts.append((constNames[i].0, v.number, v.name))
        }
        w.line("/// Every known value (the first name of aliased numbers).")
        w.line("public static let allKnownCases: [\(name)] = [\(firsts.map { "." + SwiftNaming.quoted($0.0) }.joined(separator: ", "))]")
        w.open("public var protoName: Swift.String? {")
        w.open("switch rawValue {")
        for (_, num, pname) in firsts {
            w.line("case \(num): return \"\(pname)\"")
        }
        w.line("default: return nil")
        w.close("}")
        w.close("}")
        w.close("}")
    }

    // MARK: messages

    enum ValueKind {
        case scalar(ScalarType)
        case enumeration(String)
        case message(String, fqn: String)
    }

    struct FieldInfo {
        var decl: FieldDecl
        var swiftName: String
        var kind: FieldKind
    }

    enum FieldKind {
        case singular(ValueKind, boxed: Bool)
        case optional(ValueKind, boxed: Bool)
        case repeated(ValueKind, packed: Bool)
        case map(key: ScalarType, value: ValueKind)
        case oneofMember(ValueKind, oneof: Int)
    }

    func valueKind(_ t: FieldType) -> ValueKind {
        switch t {
        case .scalar(let s): return .scalar(s)
        case .named(let n):
            let fqn = String(n.dropFirst())
            if schema.symbols[fqn]?.kind == .enumeration { return .enumeration(swiftTypeName(fqn)) }
            return .message(swiftTypeName(fqn), fqn: fqn)
        case .map: fatalError("map value inside map")
        }
    }

    static func swiftScalar(_ s: ScalarType) -> String {
        switch s {
        case .double: return "Swift.Double"
        case .float: return "Swift.Float"
        case .int32, .sint32, .sfixed32: return "Swift.Int32"
        case .int64, .sint64, .sfixed64: return "Swift.Int64"
        case .uint32, .fixed32: return "Swift.UInt32"
        case .uint64, .fixed64: return "Swift.UInt64"
        case .bool: return "Swift.Bool"
        case .string: return "Swift.String"
        case .bytes: return "[Swift.UInt8]"
        }
    }

    func swiftType(_ k: ValueKind) -> String {
        switch k {
        case .scalar(let s): return SwiftGenerator.swiftScalar(s)
        case .enumeration(let t): return t
        case .message(let t, _): return t
        }
    }

    func defaultValue(_ k: ValueKind) -> String {
        switch k {
        case .scalar(let s):
            switch s {
            case .bool: return "false"
            case .string: return "\"\""
            case .bytes: return "[]"
            default: return "0"
            }
        case .enumeration(let t): return "\(t)(rawValue: 0)"
        case .message(let t, _): return "\(t)()"
        }
    }

    static func methodSuffix(_ s: ScalarType) -> String {
        switch s {
        case .double: return "Double"
        case .float: return "Float"
        case .int32: return "Int32"
        case .int64: return "Int64"
        case .uint32: return "UInt32"
        case .uint64: return "UInt64"
        case .sint32: return "SInt32"
        case .sint64: return "SInt64"
        case .fixed32: return "Fixed32"
        case .fixed64: return "Fixed64"
        case .sfixed32: return "SFixed32"
        case .sfixed64: return "SFixed64"
        case .bool: return "Bool"
        case .string: return "String"
        case .bytes: return "Bytes"
        }
    }

    func readExpr(_ k: ValueKind, _ r: String) -> String {
        switch k {
        case .scalar(let s): return "try \(r).read\(SwiftGenerator.methodSuffix(s))()"
        case .enumeration(let t): return "try \(r).readEnum(\(t).self)"
        case .message(let t, _): return "try \(r).readMessage(\(t).self)"
        }
    }

    func writeStmt(_ k: ValueKind, _ v: String) -> String {
        switch k {
        case .scalar(let s): return "writer.write\(SwiftGenerator.methodSuffix(s))(\(v))"
        case .enumeration: return "writer.writeEnum(\(v))"
        case .message: return "writer.writeMessage(\(v))"
        }
    }

    func sizeExpr(_ k: ValueKind, _ v: String) -> String {
        switch k {
        case .scalar(let s):
            switch s {
            case .double, .fixed64, .sfixed64: return "8"
            case .float, .fixed32, .sfixed32: return "4"
            case .bool: return "1"
            case .int32: return "ProtoWire.ProtoSize.int32(\(v))"
            case .int64: return "ProtoWire.ProtoSize.int64(\(v))"
            case .uint32, .uint64: return "ProtoWire.ProtoSize.varint(\(v))"
            case .sint32: return "ProtoWire.ProtoSize.sint32(\(v))"
            case .sint64: return "ProtoWire.ProtoSize.sint64(\(v))"
            case .string: return "ProtoWire.ProtoSize.string(\(v))"
            case .bytes: return "ProtoWire.ProtoSize.bytes(\(v))"
            }
        case .enumeration: return "ProtoWire.ProtoSize.int32(\(v).rawValue)"
        case .message: return "ProtoWire.ProtoSize.message(\(v))"
        }
    }

    /// Fixed element size for packed arrays, if any.
    func fixedSize(_ k: ValueKind) -> Int? {
        if case .scalar(let s) = k {
            switch s {
            case .double, .fixed64, .sfixed64: return 8
            case .float, .fixed32, .sfixed32: return 4
            case .bool: return 1
            default: return nil
            }
        }
        return nil
    }

    func wireType(_ k: ValueKind) -> UInt32 {
        switch k {
        case .scalar(let s):
            switch s {
            case .double, .fixed64, .sfixed64: return 1
            case .float, .fixed32, .sfixed32: return 5
            case .string, .bytes: return 2
            default: return 0
            }
        case .enumeration: return 0
        case .message: return 2
        }
    }

    func nonDefault(_ k: ValueKind, _ v: String) -> String {
        switch k {
        case .scalar(let s):
            switch s {
            case .bool: return v
            case .string, .bytes: return "!\(v).isEmpty"
            case .float, .double: return "\(v).bitPattern != 0"
            default: return "\(v) != 0"
            }
        case .enumeration: return "\(v).rawValue != 0"
        case .message: return "true"
        }
    }

    static func tag(_ number: Int, _ wt: UInt32) -> UInt32 { UInt32(number) << 3 | wt }
    static func tagSize(_ number: Int) -> Int {
        let t = UInt64(number) << 3
        var n = 1
        var v = t >> 7
        while v > 0 {
            n += 1
            v >>= 7
        }
        return n
    }

    static let reservedMemberNames: Set<String> = [
        "unknownFields", "serializedSize", "protoMessageName", "encode", "merge", "writeText",
        "textFormatString", "serializedBytes", "hashValue", "hash", "init",
    ]

    func fieldInfos(_ m: MessageDecl, fqn: String) -> [FieldInfo] {
        var used = SwiftGenerator.reservedMemberNames
        for o in m.oneofs { used.insert(SwiftNaming.lowerCamel(o.name)) }
        var infos: [FieldInfo] = []
        for f in m.fields {
            var name = SwiftNaming.lowerCamel(f.name)
            while used.contains(name) { name += "_" }
            used.insert(name)
            let kind: FieldKind
            if case .map(let k, let v) = f.type {
                kind = .map(key: k, value: valueKind(v))
            } else {
                let vk = valueKind(f.type)
                var boxed = false
                if case .message(_, let target) = vk { boxed = needsBox(from: fqn, to: target) }
                if let o = f.oneofIndex {
                    kind = .oneofMember(vk, oneof: o)
                } else {
                    switch f.label {
                    case .singular:
                        if case .message = vk {
                            kind = .optional(vk, boxed: boxed)
                        } else {
                            kind = .singular(vk, boxed: false)
                        }
                    case .optional: kind = .optional(vk, boxed: boxed)
                    case .repeated:
                        var packable = false
                        if case .scalar(let s) = vk { packable = s.isPackable }
                        if case .enumeration = vk { packable = true }
                        kind = .repeated(vk, packed: packable && (f.packedOption ?? true))
                    }
                }
            }
            infos.append(FieldInfo(decl: f, swiftName: name, kind: kind))
        }
        return infos
    }

    func oneofEnumName(_ o: OneofDecl) -> String {
        "OneOf_" + SwiftNaming.upperCamel(o.name)
    }

    func generateMessage(_ m: MessageDecl, fqn: String, _ w: inout CodeWriter) {
        let name = SwiftNaming.typeName(m.name)
        let fields = fieldInfos(m, fqn: fqn)
        w.line("")
        w.doc(m.comments)
        w.open("public struct \(name): ProtoWire.ProtoMessage {")
        w.line("public static let protoMessageName: Swift.String = \"\(fqn)\"")
        w.line("")
        // Stored properties.
        var oneofDeclared: Set<Int> = []
        for f in fields {
            let q = SwiftNaming.quoted(f.swiftName)
            if case .oneofMember = f.kind {} else { w.doc(f.decl.comments) }
            switch f.kind {
            case .singular(let k, _):
                w.line("public var \(q): \(swiftType(k)) = \(defaultValue(k))")
            case .optional(let k, let boxed):
                if boxed {
                    w.line("@usableFromInline var _\(f.swiftName): ProtoWire.ProtoIndirect<\(swiftType(k))>? = nil")
                    w.open("public var \(q): \(swiftType(k))? {")
                    w.line("get { _\(f.swiftName)?.value }")
                    w.line("set { _\(f.swiftName) = newValue.map { ProtoWire.ProtoIndirect($0) } }")
                    w.close("}")
                } else {
                    w.line("public var \(q): \(swiftType(k))? = nil")
                }
            case .repeated(let k, _):
                w.line("public var \(q): [\(swiftType(k))] = []")
            case .map(let key, let v):
                w.line("public var \(q): [\(SwiftGenerator.swiftScalar(key)): \(swiftType(v))] = [:]")
            case .oneofMember(_, let o):
                if oneofDeclared.insert(o).inserted {
                    let oname = SwiftNaming.quoted(SwiftNaming.lowerCamel(m.oneofs[o].name))
                    w.doc(m.oneofs[o].comments)
                    w.line("public var \(oname): \(oneofEnumName(m.oneofs[o]))? = nil")
                }
            }
        }
        w.line("public var unknownFields: [Swift.UInt8] = []")
        w.line("")
        w.line("public init() {}")

        // Oneof enums and accessors.
        for (oi, o) in m.oneofs.enumerated() {
            let members = fields.filter { if case .oneofMember(_, oi) = $0.kind { return true } else { return false } }
            let anyCyclic = members.contains { f in
                if case .oneofMember(.message(_, let target), _) = f.kind { return needsBox(from: fqn, to: target) }
                return false
            }
            w.line("")
            w.open("public \(anyCyclic ? "indirect " : "")enum \(oneofEnumName(o)): Swift.Sendable, Swift.Hashable {")
            for f in members {
                if case .oneofMember(let k, _) = f.kind {
                    w.line("case \(SwiftNaming.quoted(f.swiftName))(\(swiftType(k)))")
                }
            }
            w.close("}")
            let oname = SwiftNaming.quoted(SwiftNaming.lowerCamel(o.name))
            for f in members {
                guard case .oneofMember(let k, _) = f.kind else { continue }
                let q = SwiftNaming.quoted(f.swiftName)
                w.line("")
                w.doc(f.decl.comments)
                if !f.decl.comments.isEmpty { w.line("///") }
                w.line("/// `\(f.decl.name)` of oneof `\(o.name)`: its value if set, the default otherwise; setting selects it.")
                w.open("public var \(q): \(swiftType(k)) {")
                w.line("get { if case .\(q)(let v)? = \(oname) { return v } else { return \(defaultValue(k)) } }")
                w.line("set { \(oname) = .\(q)(newValue) }")
                w.close("}")
            }
        }

        for e in m.enums { generateEnum(e, &w) }
        for n in m.messages { generateMessage(n, fqn: fqn + "." + n.name, &w) }

        let sorted = fields.sorted { $0.decl.number < $1.decl.number }
        generateMerge(m, sorted, &w)
        generateSize(m, sorted, &w)
        generateEncode(m, sorted, &w)
        generateText(m, sorted, &w)
        w.close("}")
    }

    func oneofAccess(_ m: MessageDecl, _ o: Int) -> String {
        "self." + SwiftNaming.quoted(SwiftNaming.lowerCamel(m.oneofs[o].name))
    }

    func generateMerge(_ m: MessageDecl, _ fields: [FieldInfo], _ w: inout CodeWriter) {
        w.line("")
        w.line("@inlinable")
        w.open("public mutating func merge(from reader: inout ProtoWire.ProtoReader) throws(ProtoWire.ProtoDecodingError) {")
        w.open("while let tag = try reader.nextTag() {")
        w.open("switch tag {")
        for f in fields {
            let n = f.decl.number
            let q = "self." + SwiftNaming.quoted(f.swiftName)
            switch f.kind {
            case .singular(let k, _):
                w.line("case \(SwiftGenerator.tag(n, wireType(k))): \(q) = \(readExpr(k, "reader"))")
            case .optional(let k, let boxed):
                if case .message(let t, _) = k {
                    if boxed {
                        w.open("case \(SwiftGenerator.tag(n, 2)):")
                        w.line("var v = \(q) ?? \(t)()")
                        w.line("\(q) = nil")
                        w.line("try reader.readMessage(into: &v)")
                        w.line("\(q) = v")
                        w.close("")
                    } else {
                        w.open("case \(SwiftGenerator.tag(n, 2)):")
                        w.line("if \(q) == nil { \(q) = \(t)() }")
                        w.line("try reader.readMessage(into: &\(q)!)")
                        w.close("")
                    }
                } else {
                    w.line("case \(SwiftGenerator.tag(n, wireType(k))): \(q) = \(readExpr(k, "reader"))")
                }
            case .repeated(let k, _):
                var packable = false
                if case .scalar(let s) = k { packable = s.isPackable }
                if case .enumeration = k { packable = true }
                w.line("case \(SwiftGenerator.tag(n, wireType(k))): \(q).append(\(readExpr(k, "reader")))")
                if packable {
                    w.open("case \(SwiftGenerator.tag(n, 2)):")
                    w.line("try reader.readPacked(into: &\(q)) { (r: inout ProtoWire.ProtoReader) throws(ProtoWire.ProtoDecodingError) in \(readExpr(k, "r")) }")
                    w.close("")
                }
            case .map(let key, let v):
                w.open("case \(SwiftGenerator.tag(n, 2)):")
                w.line("var entry = try reader.nestedReader()")
                w.line("var k: \(SwiftGenerator.swiftScalar(key)) = \(defaultValue(.scalar(key)))")
                w.line("var v: \(swiftType(v)) = \(defaultValue(v))")
                w.open("while let t = try entry.nextTag() {")
                w.open("switch t {")
                w.line("case \(SwiftGenerator.tag(1, wireType(.scalar(key)))): k = \(readExpr(.scalar(key), "entry"))")
                if case .message = v {
                    w.line("case \(SwiftGenerator.tag(2, 2)): try entry.readMessage(into: &v)")
                } else {
                    w.line("case \(SwiftGenerator.tag(2, wireType(v))): v = \(readExpr(v, "entry"))")
                }
                w.line("default: try entry.skipField(tag: t)")
                w.close("}")
                w.close("}")
                w.line("\(q)[k] = v")
                w.close("")
            case .oneofMember(let k, let o):
                let acc = oneofAccess(m, o)
                let c = SwiftNaming.quoted(f.swiftName)
                if case .message(let t, _) = k {
                    w.open("case \(SwiftGenerator.tag(n, 2)):")
                    w.line("var v: \(t)")
                    // Take the current value out first so merging does not copy its storage.
                    w.line("if case .\(c)(let cur)? = \(acc) { v = cur; \(acc) = nil } else { v = \(t)() }")
                    w.line("try reader.readMessage(into: &v)")
                    w.line("\(acc) = .\(c)(v)")
                    w.close("")
                } else {
                    w.line("case \(SwiftGenerator.tag(n, wireType(k))): \(acc) = .\(c)(\(readExpr(k, "reader")))")
                }
            }
        }
        w.line("default: try reader.skipField(tag: tag, into: &self.unknownFields)")
        w.close("}")
        w.close("}")
        w.close("}")
    }

    /// Emits code that adds the size of field `f` to `n` (or writes it when `encode`).
    func generateSize(_ m: MessageDecl, _ fields: [FieldInfo], _ w: inout CodeWriter) {
        w.line("")
        w.open("@inlinable public var serializedSize: Swift.Int {")
        w.line("var n = 0")
        for f in fields {
            let ts = SwiftGenerator.tagSize(f.decl.number)
            let q = "self." + SwiftNaming.quoted(f.swiftName)
            switch f.kind {
            case .singular(let k, _):
                w.line("if \(nonDefault(k, q)) { n &+= \(ts) &+ \(sizeExpr(k, q)) }")
            case .optional(let k, _):
                w.line("if let v = \(q) { n &+= \(ts) &+ \(sizeExpr(k, "v")) }")
            case .repeated(let k, let packed):
                if packed {
                    w.open("if !\(q).isEmpty {")
                    w.line("let d = \(packedDataSize(k, q))")
                    w.line("n &+= \(ts) &+ ProtoWire.ProtoSize.lengthDelimited(d)")
                    w.close("}")
                } else if let fs = fixedSize(k) {
                    w.line("n &+= \(q).count &* \(ts + fs)")
                } else {
                    w.line("for v in \(q) { n &+= \(ts) &+ \(sizeExpr(k, "v")) }")
                }
            case .map(let key, let v):
                let ke = sizeExpr(.scalar(key), "k")
                let ve = sizeExpr(v, "v")
                let kv = (ke.contains("(k") ? "k" : "_") + ", " + (ve.contains("(v") ? "v" : "_")
                w.open("for (\(kv)) in \(q) {")
                w.line("let e = 1 &+ \(ke) &+ 1 &+ \(ve)")
                w.line("n &+= \(ts) &+ ProtoWire.ProtoSize.lengthDelimited(e)")
                w.close("}")
            case .oneofMember(let k, let o):
                w.line("if case .\(SwiftNaming.quoted(f.swiftName))(let v)? = \(oneofAccess(m, o)) { n &+= \(ts) &+ \(sizeExpr(k, "v")) }")
            }
        }
        w.line("n &+= self.unknownFields.count")
        w.line("return n")
        w.close("}")
    }

    func packedDataSize(_ k: ValueKind, _ q: String) -> String {
        if let fs = fixedSize(k) { return "\(q).count &* \(fs)" }
        return "{ var d = 0; for v in \(q) { d &+= \(sizeExpr(k, "v")) }; return d }()"
    }

    func generateEncode(_ m: MessageDecl, _ fields: [FieldInfo], _ w: inout CodeWriter) {
        w.line("")
        w.line("@inlinable")
        w.open("public func encode(to writer: inout ProtoWire.ProtoWriter) {")
        for f in fields {
            let q = "self." + SwiftNaming.quoted(f.swiftName)
            let n = f.decl.number
            switch f.kind {
            case .singular(let k, _):
                w.line("if \(nonDefault(k, q)) { writer.writeTag(\(SwiftGenerator.tag(n, wireType(k)))); \(writeStmt(k, q)) }")
            case .optional(let k, _):
                w.line("if let v = \(q) { writer.writeTag(\(SwiftGenerator.tag(n, wireType(k)))); \(writeStmt(k, "v")) }")
            case .repeated(let k, let packed):
                if packed {
                    w.open("if !\(q).isEmpty {")
                    w.line("writer.writeTag(\(SwiftGenerator.tag(n, 2)))")
                    w.line("writer.writeVarint(Swift.UInt64(\(packedDataSize(k, q))))")
                    w.line("for v in \(q) { \(writeStmt(k, "v")) }")
                    w.close("}")
                } else {
                    w.line("for v in \(q) { writer.writeTag(\(SwiftGenerator.tag(n, wireType(k)))); \(writeStmt(k, "v")) }")
                }
            case .map(let key, let v):
                w.open("for (k, v) in \(q).sorted(by: { \(keyLess(key, "$0.key", "$1.key")) }) {")
                w.line("writer.writeTag(\(SwiftGenerator.tag(n, 2)))")
                w.line("writer.writeVarint(Swift.UInt64(1 &+ \(sizeExpr(.scalar(key), "k")) &+ 1 &+ \(sizeExpr(v, "v"))))")
                w.line("writer.writeTag(\(SwiftGenerator.tag(1, wireType(.scalar(key))))); \(writeStmt(.scalar(key), "k"))")
                w.line("writer.writeTag(\(SwiftGenerator.tag(2, wireType(v)))); \(writeStmt(v, "v"))")
                w.close("}")
            case .oneofMember(let k, let o):
                w.line("if case .\(SwiftNaming.quoted(f.swiftName))(let v)? = \(oneofAccess(m, o)) { writer.writeTag(\(SwiftGenerator.tag(n, wireType(k)))); \(writeStmt(k, "v")) }")
            }
        }
        w.line("if !self.unknownFields.isEmpty { writer.writeRaw(self.unknownFields) }")
        w.close("}")
    }

    /// Map keys sort like protoc sorts them: false < true, numbers by value, strings by their
    /// UTF-8 bytes (not Swift's Unicode-aware `<`).
    func keyLess(_ key: ScalarType, _ a: String, _ b: String) -> String {
        switch key {
        case .bool: return "!\(a) && \(b)"
        case .string: return "\(a).utf8.lexicographicallyPrecedes(\(b).utf8)"
        default: return "\(a) < \(b)"
        }
    }

    func generateText(_ m: MessageDecl, _ fields: [FieldInfo], _ w: inout CodeWriter) {
        w.line("")
        w.open("public func writeText(to printer: inout ProtoWire.TextFormatPrinter) {")
        for f in fields {
            let q = "self." + SwiftNaming.quoted(f.swiftName)
            let pn = "\"\(f.decl.name)\""
            switch f.kind {
            case .singular(let k, _):
                w.line("if \(nonDefault(k, q)) { printer.print(\(pn), \(q)) }")
            case .optional:
                w.line("if let v = \(q) { printer.print(\(pn), v) }")
            case .repeated:
                w.line("for v in \(q) { printer.print(\(pn), v) }")
            case .map(let key, _):
                w.open("for (k, v) in \(q).sorted(by: { \(keyLess(key, "$0.key", "$1.key")) }) {")
                w.line("printer.beginMessage(\(pn))")
                w.line("printer.print(\"key\", k)")
                w.line("printer.print(\"value\", v)")
                w.line("printer.endMessage()")
                w.close("}")
            case .oneofMember(_, let o):
                w.line("if case .\(SwiftNaming.quoted(f.swiftName))(let v)? = \(oneofAccess(m, o)) { printer.print(\(pn), v) }")
            }
        }
        w.line("if !self.unknownFields.isEmpty { printer.printUnknown(self.unknownFields) }")
        w.close("}")
    }

    // MARK: services

    func generateService(_ s: ServiceDecl, package: String, _ w: inout CodeWriter) {
        let full = package.isEmpty ? s.name : package + "." + s.name
        w.line("")
        w.doc(s.comments)
        if !s.comments.isEmpty { w.line("///") }
        w.line("/// Service `\(full)`.")
        w.open("public enum \(SwiftNaming.typeName(s.name)) {")
        w.line("public static let serviceName: Swift.String = \"\(full)\"")
        var used: Set<String> = ["serviceName", "methods"]
        var names: [String] = []
        for m in s.methods {
            var n = SwiftNaming.lowerCamel(m.name)
            while used.contains(n) { n += "_" }
            used.insert(n)
            names.append(n)
            let kind: String
            switch (m.clientStreaming, m.serverStreaming) {
            case (false, false): kind = ".unary"
            case (false, true): kind = ".serverStreaming"
            case (true, false): kind = ".clientStreaming"
            case (true, true): kind = ".bidirectionalStreaming"
            }
            w.doc(m.comments)
            w.line("/// `rpc \(m.name)(\(m.clientStreaming ? "stream " : "")\(m.inputType.dropFirst())) returns (\(m.serverStreaming ? "stream " : "")\(m.outputType.dropFirst()))`")
            w.line("public static let \(SwiftNaming.quoted(n)) = ProtoWire.MethodDescriptor<\(swiftTypeName(m.inputType)), \(swiftTypeName(m.outputType))>(serviceName: \"\(full)\", methodName: \"\(m.name)\", kind: \(kind))")
        }
        w.line("public static let methods: [ProtoWire.AnyMethodDescriptor] = [\(names.map { SwiftNaming.quoted($0) + ".erased" }.joined(separator: ", "))]")
        w.close("}")
    }
}

/// Accumulates indented lines.
struct CodeWriter {
    var text = ""
    var indent = 0

    mutating func line(_ s: String) {
        if s.isEmpty {
            text += "\n"
            return
        }
        text += String(repeating: "    ", count: indent) + s + "\n"
    }

    /// Emits source comments as `///` documentation.
    mutating func doc(_ lines: [String]) {
        for l in lines { line(l.isEmpty ? "///" : "/// " + l) }
    }

    mutating func open(_ s: String) {
        line(s)
        indent += 1
    }

    mutating func close(_ s: String) {
        indent -= 1
        if !s.isEmpty { line(s) }
    }
}
