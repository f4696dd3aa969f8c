/// The streaming shape of an RPC.
public enum MethodKind: Sendable, Hashable {
    case unary
    case serverStreaming
    case clientStreaming
    case bidirectionalStreaming

    public init(clientStreaming: Bool, serverStreaming: Bool) {
        switch (clientStreaming, serverStreaming) {
        case (false, false): self = .unary
        case (false, true): self = .serverStreaming
        case (true, false): self = .clientStreaming
        case (true, true): self = .bidirectionalStreaming
        }
    }
    public var isClientStreaming: Bool { self == .clientStreaming || self == .bidirectionalStreaming }
    public var isServerStreaming: Bool { self == .serverStreaming || self == .bidirectionalStreaming }
}

/// A typed RPC descriptor: `Etcdserverpb.KV.range` is a
/// `MethodDescriptor<Etcdserverpb.RangeRequest, Etcdserverpb.RangeResponse>`.
public struct MethodDescriptor<Request: ProtoMessage, Response: ProtoMessage>: Sendable, Hashable {
    /// Fully qualified service name, `etcdserverpb.KV`.
    public let serviceName: String
    /// Method name as in the .proto, `Range`.
    public let methodName: String
    /// The HTTP/2 `:path`, `/etcdserverpb.KV/Range`.
    public let path: String
    public let kind: MethodKind

    public init(serviceName: String, methodName: String, kind: MethodKind) {
        self.serviceName = serviceName
        self.methodName = methodName
        self.path = "/\(serviceName)/\(methodName)"
        self.kind = kind
    }

    public var requestType: Request.Type { Request.self }
    public var responseType: Response.Type { Response.self }

    /// The type-erased form (for method tables).
    public var erased: AnyMethodDescriptor { AnyMethodDescriptor(self) }
}

/// A type-erased RPC descriptor.
public struct AnyMethodDescriptor: Sendable, Hashable {
    public let serviceName: String
    public let methodName: String
    public let path: String
    public let kind: MethodKind
    public let requestType: any ProtoMessage.Type
    public let responseType: any ProtoMessage.Type

    public init<Req, Resp>(_ d: MethodDescriptor<Req, Resp>) {
        serviceName = d.serviceName
        methodName = d.methodName
        path = d.path
        kind = d.kind
        requestType = Req.self
        responseType = Resp.self
    }

    public static func == (a: AnyMethodDescriptor, b: AnyMethodDescriptor) -> Bool {
        a.path == b.path && a.kind == b.kind
            && ObjectIdentifier(a.requestType) == ObjectIdentifier(b.requestType)
            && ObjectIdentifier(a.responseType) == ObjectIdentifier(b.responseType)
    }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(path)
        hasher.combine(kind)
    }
}
