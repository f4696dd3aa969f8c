/// A position in a .proto file (1-based line and column, column counted in characters).
public struct SourceLocation: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }
    public var description: String { "\(file):\(line):\(column)" }
}

/// A parse or resolution error, printed like a compiler diagnostic: `file:line:column: error: ...`.
public struct ProtoError: Error, Sendable, Hashable, CustomStringConvertible {
    public var location: SourceLocation
    public var message: String
    public init(_ location: SourceLocation, _ message: String) {
        self.location = location
        self.message = message
    }
    public var description: String { "\(location): error: \(message)" }
}

public enum ScalarType: String, Sendable, Hashable, CaseIterable {
    case double, float, int32, int64, uint32, uint64, sint32, sint64
    case fixed32, fixed64, sfixed32, sfixed64, bool, string, bytes

    /// Types allowed as map keys.
    public var isValidMapKey: Bool {
        switch self {
        case .double, .float, .bytes: return false
        default: return true
        }
    }

    /// Scalars that may be packed (everything numeric).
    public var isPackable: Bool { self != .string && self != .bytes }
}

/// A field's type as written in the source, before and after resolution.
public indirect enum FieldType: Sendable, Hashable {
    case scalar(ScalarType)
    /// A message or enum name as written (`RangeRequest`, `.mvccpb.KeyValue`, `Event.EventType`).
    case named(String)
    case map(key: ScalarType, value: FieldType)
}

public enum FieldLabel: Sendable, Hashable {
    /// proto3 implicit presence.
    case singular
    /// proto3 `optional`: explicit presence.
    case optional
    case repeated
}

public struct FieldDecl: Sendable, Hashable {
    public var name: String
    public var number: Int
    public var label: FieldLabel
    public var type: FieldType
    /// Index into the message's `oneofs`, if the field is a oneof member.
    public var oneofIndex: Int?
    /// `[packed = false]` / `[packed = true]` if given.
    public var packedOption: Bool?
    public var location: SourceLocation
    /// Documentation comment lines from the source (leading, then trailing).
    public var comments: [String] = []
}

public struct OneofDecl: Sendable, Hashable {
    public var name: String
    public var location: SourceLocation
    /// Documentation comment lines from the source (leading, then trailing).
    public var comments: [String] = []
}

public struct EnumValueDecl: Sendable, Hashable {
    public var name: String
    public var number: Int32
    public var location: SourceLocation
    /// Documentation comment lines from the source (leading, then trailing).
    public var comments: [String] = []
}

public struct EnumDecl: Sendable, Hashable {
    public var name: String
    public var values: [EnumValueDecl]
    public var allowAlias: Bool
    public var location: SourceLocation
    /// Documentation comment lines from the source (leading, then trailing).
    public var comments: [String] = []
}

public struct MessageDecl: Sendable, Hashable {
    public var name: String
    public var fields: [FieldDecl]
    public var oneofs: [OneofDecl]
    public var messages: [MessageDecl]
    public var enums: [EnumDecl]
    public var location: SourceLocation
    /// Documentation comment lines from the source (leading, then trailing).
    public var comments: [String] = []
}

public struct MethodDecl: Sendable, Hashable {
    public var name: String
    public var inputType: String
    public var outputType: String
    public var clientStreaming: Bool
    public var serverStreaming: Bool
    public var location: SourceLocation
    /// Documentation comment lines from the source (leading, then trailing).
    public var comments: [String] = []
}

public struct ServiceDecl: Sendable, Hashable {
    public var name: String
    public var methods: [MethodDecl]
    public var location: SourceLocation
    /// Documentation comment lines from the source (leading, then trailing).
    public var comments: [String] = []
}

public struct ImportDecl: Sendable, Hashable {
    public enum Kind: Sendable, Hashable { case normal, `public`, weak }
    public var path: String
    public var kind: Kind
    public var location: SourceLocation
}

/// One parsed .proto file.
public struct ProtoFile: Sendable, Hashable {
    /// The name the file is known by (its path relative to an import root, or as given).
    public var name: String
    public var syntax: String
    public var package: String
    public var imports: [ImportDecl]
    public var messages: [MessageDecl]
    public var enums: [EnumDecl]
    public var services: [ServiceDecl]
}
