import Foundation

/// What a fully qualified name refers to.
public enum SymbolKind: Sendable, Hashable {
    case package
    case message
    case enumeration
    case service
    case field
    case oneof
    /// Enum values live in the scope that contains their enum (C++ scoping), as in protoc.
    case enumValue
}

public struct Symbol: Sendable, Hashable {
    public var kind: SymbolKind
    /// Import name of the defining file (empty for packages).
    public var file: String
    /// The proto package of the defining file.
    public var package: String
    public var location: SourceLocation?
}

/// A loaded .proto file. After resolution every `.named` type in it is fully qualified with a
/// leading dot (`.etcdserverpb.RangeRequest`).
public struct LoadedFile: Sendable, Hashable {
    /// The path on disk (used in diagnostics).
    public var path: String
    /// The name other files import it by.
    public var name: String
    public var proto: ProtoFile
    /// True for files given on the command line (code is generated for them).
    public var isInput: Bool
}

/// A set of parsed, cross-resolved .proto files.
public struct Schema: Sendable {
    public var files: [LoadedFile]
    /// Fully qualified name without leading dot -> symbol.
    public var symbols: [String: Symbol]

    public func file(named name: String) -> LoadedFile? {
        files.first { $0.name == name }
    }
}

/// Reads .proto files and their imports from import roots, parses and resolves them.
public struct ProtoLoader {
    public var importRoots: [String]
    /// Supplies file contents; defaults to reading the file system. Tests can inject sources.
    public var readFile: (String) -> String?

    public init(importRoots: [String], readFile: ((String) -> String?)? = nil) {
        self.importRoots = importRoots
        self.readFile = readFile ?? { path in
            guard let data = FileManager.default.contents(atPath: path) else { return nil }
            return String(decoding: data, as: UTF8.self)
        }
    }

    /// The import name of a path: relative to the first import root that contains it.
    func importName(for path: String) -> String {
        for root in importRoots {
            let r = root.hasSuffix("/") ? root : root + "/"
            if path.hasPrefix(r) { return String(path.dropFirst(r.count)) }
        }
        return path
    }

    /// Loads `inputs` (paths), their imports (transitively), and resolves all type references.
    public func load(_ inputs: [String]) throws(ProtoError) -> Schema {
        var files: [LoadedFile] = []
        var byName: [String: Int] = [:]
        var inputPaths: [String: String] = [:]  // import name -> path, for fallback import matching
        for p in inputs { inputPaths[importName(for: p)] = p }

        func loadFile(path: String, name: String, isInput: Bool, from: SourceLocation?) throws(ProtoError) -> Int {
            if let i = byName[name] {
                if isInput { files[i].isInput = true }
                return i
            }
            guard let source = readFile(path) else {
                throw ProtoError(from ?? SourceLocation(file: path, line: 1, column: 1),
                                 "cannot read file \"\(path)\"")
            }
            var proto = try ProtoParser.parse(source: source, fileName: path)
            proto.name = name
            files.append(LoadedFile(path: path, name: name, proto: proto, isInput: isInput))
            let index = files.count - 1
            byName[name] = index
            return index
        }

        func locate(_ importPath: String) -> String? {
            for root in importRoots {
                let candidate = (root as NSString).appendingPathComponent(importPath)
                if readFile(candidate) != nil { return candidate }
            }
            // Fall back to an input file with the same import name or the same trailing path.
            if let p = inputPaths[importPath] { return p }
            for (name, p) in inputPaths.sorted(by: { $0.key < $1.key })
            where name.hasSuffix("/" + importPath) || importPath.hasSuffix("/" + name) {
                return p
            }
            // Last resort: a file with the same base name directly in an import root (lets
            // `import "etcd/api/mvccpb/kv.proto"` find `Protos/kv.proto`).
            let base = (importPath as NSString).lastPathComponent
            if base != importPath {
                for root in importRoots {
                    let candidate = (root as NSString).appendingPathComponent(base)
                    if readFile(candidate) != nil { return candidate }
                }
            }
            return nil
        }

        var queue: [Int] = []
        for p in inputs {
            queue.append(try loadFile(path: p, name: importName(for: p), isInput: true, from: nil))
        }
        var importGraph: [String: [ImportDecl]] = [:]
        var i = 0
        while i < files.count {
            let f = files[i]
            i += 1
            for imp in f.proto.imports {
                guard let path = locate(imp.path) else {
                    // descriptor.proto only serves custom option definitions (`extend`), which
                    // are skipped, so it need not exist (protoc ships it built in).
                    if imp.path == "google/protobuf/descriptor.proto" { continue }
                    throw ProtoError(imp.location, "import \"\(imp.path)\" was not found (import roots: \(importRoots.joined(separator: ", ")))")
                }
                let idx = try loadFile(path: path, name: importName(for: path), isInput: false, from: imp.location)
                if files[idx].name != imp.path {
                    // Record the resolved name so visibility checks use the file's canonical name.
                    importGraph[f.name, default: []].append(ImportDecl(path: files[idx].name, kind: imp.kind, location: imp.location))
                } else {
                    importGraph[f.name, default: []].append(imp)
                }
            }
        }
        try checkImportCycles(files: files, graph: importGraph)

        var schema = Schema(files: files, symbols: [:])
        try buildSymbols(&schema)
        for idx in schema.files.indices {
            let visible = visibleFiles(of: schema.files[idx].name, graph: importGraph)
            var resolver = Resolver(schema: schema, file: schema.files[idx], visible: visible)
            schema.files[idx].proto = try resolver.resolveFile()
        }
        return schema
    }

    func checkImportCycles(files: [LoadedFile], graph: [String: [ImportDecl]]) throws(ProtoError) {
        var state: [String: Int] = [:]  // 1 = in progress, 2 = done
        func visit(_ name: String) throws(ProtoError) {
            state[name] = 1
            for imp in graph[name] ?? [] {
                if state[imp.path] == 1 {
                    throw ProtoError(imp.location, "file \"\(name)\" is part of an import cycle through \"\(imp.path)\"")
                }
                if state[imp.path] == nil { try visit(imp.path) }
            }
            state[name] = 2
        }
        for f in files where state[f.name] == nil { try visit(f.name) }
    }

    /// A file sees itself, its direct imports, and whatever those re-export with `import public`.
    func visibleFiles(of name: String, graph: [String: [ImportDecl]]) -> Set<String> {
        var visible: Set<String> = [name]
        var stack: [String] = []
        for imp in graph[name] ?? [] {
            if visible.insert(imp.path).inserted { stack.append(imp.path) }
        }
        while let f = stack.popLast() {
            for imp in graph[f] ?? [] where imp.kind == .public {
                if visible.insert(imp.path).inserted { stack.append(imp.path) }
            }
        }
        return visible
    }

    func buildSymbols(_ schema: inout Schema) throws(ProtoError) {
        var symbols: [String: Symbol] = [:]
        func add(_ scope: String, _ name: String, _ sym: Symbol) throws(ProtoError) {
            let fqn = scope.isEmpty ? name : scope + "." + name
            if let existing = symbols[fqn] {
                if existing.kind == .package && sym.kind == .package { return }
                let loc = sym.location ?? SourceLocation(file: sym.file, line: 1, column: 1)
                var message: String
                if existing.file.isEmpty || existing.file == sym.file || sym.kind == .enumValue {
                    message = "\"\(name)\" is already defined in \"\(scope)\"."
                } else {
                    message = "\"\(fqn)\" is already defined in file \"\(existing.file)\"."
                }
                if sym.kind == .enumValue || existing.kind == .enumValue {
                    message += " Note that enum values use C++ scoping rules, meaning that enum values are siblings of their type, not children of it. Therefore, \"\(name)\" must be unique within \"\(scope)\", not just within its enum."
                }
                throw ProtoError(loc, message)
            }
            symbols[fqn] = sym
        }
        for f in schema.files {
            let pkg = f.proto.package
            if !pkg.isEmpty {
                var prefix = ""
                for part in pkg.split(separator: ".") {
                    try add(prefix, String(part), Symbol(kind: .package, file: "", package: pkg, location: nil))
                    prefix = prefix.isEmpty ? String(part) : prefix + "." + part
                }
            }
            func addEnum(_ e: EnumDecl, scope: String) throws(ProtoError) {
                try add(scope, e.name, Symbol(kind: .enumeration, file: f.name, package: pkg, location: e.location))
                var seen: Set<String> = []
                for v in e.values where seen.insert(v.name).inserted {
                    try add(scope, v.name, Symbol(kind: .enumValue, file: f.name, package: pkg, location: v.location))
                }
            }
            func addMessage(_ m: MessageDecl, scope: String) throws(ProtoError) {
                try add(scope, m.name, Symbol(kind: .message, file: f.name, package: pkg, location: m.location))
                let fqn = scope.isEmpty ? m.name : scope + "." + m.name
                for field in m.fields {
                    try add(fqn, field.name, Symbol(kind: .field, file: f.name, package: pkg, location: field.location))
                }
                for o in m.oneofs {
                    try add(fqn, o.name, Symbol(kind: .oneof, file: f.name, package: pkg, location: o.location))
                }
                for e in m.enums { try addEnum(e, scope: fqn) }
                for n in m.messages { try addMessage(n, scope: fqn) }
            }
            for m in f.proto.messages { try addMessage(m, scope: pkg) }
            for e in f.proto.enums { try addEnum(e, scope: pkg) }
            for s in f.proto.services {
                try add(pkg, s.name, Symbol(kind: .service, file: f.name, package: pkg, location: s.location))
            }
        }
        schema.symbols = symbols
    }
}

/// Resolves type names the way protoc does: `.a.b.C` is absolute; otherwise the first component
/// is looked up from the innermost scope outwards, and the rest must resolve inside what it names.
struct Resolver {
    let schema: Schema
    let file: LoadedFile
    let visible: Set<String>

    init(schema: Schema, file: LoadedFile, visible: Set<String>) {
        self.schema = schema
        self.file = file
        self.visible = visible
    }

    mutating func resolveFile() throws(ProtoError) -> ProtoFile {
        var proto = file.proto
        let pkg = proto.package
        for i in proto.messages.indices {
            try resolveMessage(&proto.messages[i], scope: pkg.isEmpty ? proto.messages[i].name : pkg + "." + proto.messages[i].name)
        }
        for si in proto.services.indices {
            for mi in proto.services[si].methods.indices {
                let m = proto.services[si].methods[mi]
                proto.services[si].methods[mi].inputType = try resolve(m.inputType, scope: pkg, at: m.location, wantMessage: true)
                proto.services[si].methods[mi].outputType = try resolve(m.outputType, scope: pkg, at: m.location, wantMessage: true)
            }
        }
        return proto
    }

    mutating func resolveMessage(_ m: inout MessageDecl, scope: String) throws(ProtoError) {
        for i in m.fields.indices {
            let f = m.fields[i]
            switch f.type {
            case .scalar: break
            case .named(let n):
                m.fields[i].type = .named(try resolve(n, scope: scope, at: f.location, wantMessage: false))
            case .map(let k, let v):
                if case .named(let n) = v {
                    m.fields[i].type = .map(key: k, value: .named(try resolve(n, scope: scope, at: f.location, wantMessage: false)))
                }
            }
            if let packed = f.packedOption, packed {
                let packable: Bool
                switch m.fields[i].type {
                case .scalar(let s): packable = s.isPackable
                case .named(let n): packable = schema.symbols[String(n.dropFirst())]?.kind == .enumeration
                case .map: packable = false
                }
                if !packable || f.label != .repeated {
                    throw ProtoError(f.location, "[packed = true] can only be specified for repeated primitive fields")
                }
            }
        }
        for i in m.messages.indices {
            try resolveMessage(&m.messages[i], scope: scope + "." + m.messages[i].name)
        }
    }

    func isType(_ k: SymbolKind) -> Bool { k == .message || k == .enumeration }
    func isAggregate(_ k: SymbolKind) -> Bool { k == .message || k == .package }

    func lookup(_ fqn: String) -> Symbol? { schema.symbols[fqn] }

    /// Returns the fully qualified name with a leading dot.
    func resolve(_ name: String, scope: String, at loc: SourceLocation, wantMessage: Bool) throws(ProtoError) -> String {
        var found: String?
        if name.hasPrefix(".") {
            let fqn = String(name.dropFirst())
            if let s = lookup(fqn), isType(s.kind) { found = fqn }
        } else {
            let parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            let first = parts[0]
            var scopeParts = scope.isEmpty ? [] : scope.split(separator: ".").map(String.init)
            while true {
                let prefix = scopeParts.joined(separator: ".")
                let candidate = prefix.isEmpty ? first : prefix + "." + first
                if let s = lookup(candidate) {
                    if parts.count == 1 {
                        if isType(s.kind) {
                            found = candidate
                            break
                        }
                    } else if isAggregate(s.kind) {
                        let full = prefix.isEmpty ? name : prefix + "." + name
                        if let t = lookup(full), isType(t.kind) {
                            found = full
                            break
                        }
                        throw ProtoError(loc, "\"\(name)\" is resolved to \"\(full)\", which is not defined. The innermost scope is searched first in name resolution. Consider using a leading '.'(i.e., \".\(name)\") to start from the outermost scope.")
                    }
                }
                if scopeParts.isEmpty { break }
                scopeParts.removeLast()
            }
        }
        guard let fqn = found, let sym = lookup(fqn) else {
            throw ProtoError(loc, "\"\(name)\" is not defined.")
        }
        if !visible.contains(sym.file) {
            throw ProtoError(loc, "\"\(name)\" seems to be defined in \"\(sym.file)\", which is not imported by \"\(file.name)\". To use it here, please add the necessary import.")
        }
        if wantMessage && sym.kind != .message {
            throw ProtoError(loc, "\"\(name)\" is not a message type.")
        }
        return "." + fqn
    }
}
