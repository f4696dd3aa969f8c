/// Swift naming rules for generated code.
public enum SwiftNaming {
    static let keywords: Set<String> = [
        "associatedtype", "class", "deinit", "enum", "extension", "fileprivate", "func", "import", "init",
        "inout", "internal", "let", "open", "operator", "private", "precedencegroup", "protocol", "public",
        "rethrows", "static", "struct", "subscript", "typealias", "var", "break", "case", "catch", "continue",
        "default", "defer", "do", "else", "fallthrough", "for", "guard", "if", "in", "repeat", "return",
        "throw", "switch", "where", "while", "Any", "as", "await", "false", "is", "nil", "self", "Self",
        "super", "throws", "true", "try", "_", "Type", "Protocol", "async", "consume", "copy", "discard",
        "each", "borrowing", "consuming", "some", "any",
    ]

    /// Splits `range_end` / `NOT_EQUAL` / `peerURLs` on underscores and lowers the first word's
    /// leading capital run, capitalising the first letter of later words:
    /// `range_end` -> `rangeEnd`, `NOT_EQUAL` -> `notEqual`, `ID` -> `id`, `peerURLs` -> `peerURLs`,
    /// `TTL` -> `ttl`, `grantedTTL` -> `grantedTTL`, `remaining_TTL` -> `remainingTTL`, `MsgApp` -> `msgApp`.
    public static func lowerCamel(_ name: String) -> String {
        let words = name.split(separator: "_").map(String.init)
        guard !words.isEmpty else { return "_" }
        // UPPER_SNAKE names (enum constants) are lowered word by word; mixed-case names keep
        // the case of their later words (`remaining_TTL` -> `remainingTTL`).
        let screaming = !name.contains { $0.isLowercase }
        var out = ""
        for (i, word) in words.enumerated() {
            if i == 0 {
                out += screaming ? word.lowercased() : lowerLeadingRun(word)
            } else {
                let w = screaming ? word.lowercased() : word
                out += w.prefix(1).uppercased() + w.dropFirst()
            }
        }
        if let f = out.first, f.isNumber { out = "_" + out }
        return out
    }

    /// `HTTPServer` -> `httpServer`, `Foo` -> `foo`, `fooBar` -> `fooBar`.
    static func lowerLeadingRun(_ word: String) -> String {
        let chars = Array(word)
        var run = 0
        while run < chars.count, chars[run].isUppercase { run += 1 }
        if run == 0 { return word }
        if run == chars.count { return word.lowercased() }
        // Keep the last capital of a run if it starts the next word (HTTPServer -> httpServer).
        let lowerCount = run > 1 && chars[run].isLowercase ? run - 1 : run
        return String(chars[0..<lowerCount]).lowercased() + String(chars[lowerCount...])
    }

    /// UpperCamel: `etcdserverpb` -> `Etcdserverpb`, `my_pkg.v1` -> `MyPkg_V1`.
    public static func upperCamel(_ name: String) -> String {
        name.split(separator: ".").map { part in
            part.split(separator: "_").map { w in w.prefix(1).uppercased() + w.dropFirst() }.joined()
        }.joined(separator: "_")
    }

    /// The namespace enum for a proto package (empty package -> no namespace).
    public static func namespace(forPackage package: String) -> String {
        package.isEmpty ? "" : upperCamel(package)
    }

    /// Backticks an identifier if it is a Swift keyword.
    public static func quoted(_ name: String) -> String {
        keywords.contains(name) ? "`\(name)`" : name
    }

    /// A type name that is legal as a nested Swift type. `Type` and `Protocol` cannot name a
    /// nested type (even in backticks), so like swift-protobuf they get a suffix:
    /// enum `Type` -> `TypeEnum`, message `Type` -> `TypeMessage`. Other keywords get `_`.
    public static func typeName(_ name: String, isEnum: Bool = false) -> String {
        if name == "Type" || name == "Protocol" { return name + (isEnum ? "Enum" : "Message") }
        return ["Self", "Any", "self"].contains(name) || keywords.contains(name) ? name + "_" : name
    }
}
