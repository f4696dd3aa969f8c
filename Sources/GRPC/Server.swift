import CNGHTTP2
import Logging
import NIOCore
import NIOPosix
import ProtoWire

/// A set of typed handlers, one per RPC (built from ProtoWire's `MethodDescriptor`s).
///
///     struct KVService: GRPCService {
///         var methods: [ServerMethod] {
///             [.unary(Etcdserverpb.KV.range) { req, ctx in try await self.range(req) }]
///         }
///     }
public protocol GRPCService: Sendable {
    var methods: [ServerMethod] { get }
}

/// What a handler knows about its call.
public struct ServerContext: Sendable {
    public let path: String
    /// Request headers (custom metadata included; pseudo-headers too).
    public let requestHeaders: [Header]
    /// From `grpc-timeout`, if the client sent one.
    public let deadline: NIODeadline?

    public struct Header: Sendable, Hashable {
        public let name: String
        public let value: String
    }

    public func header(_ name: String) -> String? {
        requestHeaders.first(where: { $0.name == name })?.value
    }
}

/// The received messages of a client- or bidi-streaming call, decoded lazily as they are read.
/// Reading is what returns HTTP/2 window to the client: a slow reader slows the sender down.
public struct RequestStream<Message: ProtoMessage>: AsyncSequence, Sendable {
    public typealias Element = Message
    let base: InboundSequence

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: InboundSequence.AsyncIterator
        public mutating func next() async throws -> Message? {
            guard let buffer = try await base.next() else { return nil }
            return try decodeMessage(Message.self, buffer)
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: base.makeAsyncIterator()) }
}

@inline(__always)
func decodeMessage<M: ProtoMessage>(_ type: M.Type, _ buffer: ByteBuffer) throws(GRPCStatus) -> M {
    do {
        return try buffer.withUnsafeReadableBytes { raw throws(ProtoDecodingError) in try M(decoding: raw) }
    } catch {
        throw GRPCStatus(.internal, "grpc: error unmarshalling \(M.protoMessageName): \(error)")
    }
}

/// Sends response messages of a server- or bidi-streaming call. `send` waits while the client's
/// flow-control window is exhausted and too much is queued (back-pressure).
public struct ResponseWriter<Message: ProtoMessage>: Sendable {
    let stream: NIOLoopBound<H2Stream>
    let loop: any EventLoop
    let compress: Bool

    public func send(_ message: Message) async throws {
        let framed = try GRPCFramer.frame(message, compress: compress, allocator: ByteBufferAllocator())
        try await sendFramed(framed)
    }

    /// Sends `messages` in order with ONE job on the connection's loop instead of one per message
    /// (same back-pressure: returns once what is queued is below the high-water mark again).
    public func send(contentsOf messages: [Message]) async throws {
        guard messages.count > 1 else {
            if let m = messages.first { try await send(m) }
            return
        }
        var framed: [ByteBuffer] = []
        framed.reserveCapacity(messages.count)
        for m in messages { framed.append(try GRPCFramer.frame(m, compress: compress, allocator: ByteBufferAllocator())) }
        let s = stream
        let all = framed
        try await loop.flatSubmit { () -> EventLoopFuture<Void> in
            // A closed stream fails every later enqueue too; the last one's future waits for room.
            var last: EventLoopFuture<Void>?
            for f in all { last = s.value.enqueue(f) }
            return last!
        }.get()
    }

    func sendFramed(_ framed: ByteBuffer) async throws {
        let s = stream
        try await loop.flatSubmit { s.value.enqueue(framed) }.get()
    }
}

/// One registered RPC: a path and a type-erased call runner.
public struct ServerMethod: Sendable {
    public let descriptor: AnyMethodDescriptor
    let run: @Sendable (InboundSequence, NIOLoopBound<H2Stream>, any EventLoop, Bool, ServerContext) async throws -> Void
    /// Unary calls: runs with the first request message and ends the call itself on success.
    let unaryRun: (@Sendable (ByteBuffer, NIOLoopBound<H2Stream>, any EventLoop, Bool, ServerContext) async throws -> Void)?
    /// Unary calls answered through a `UnaryResponder` (`unaryResponding`): called on the
    /// connection's loop with the request message; no task.
    let unaryOnLoopRun: (@Sendable (ByteBuffer, H2Stream, any EventLoop, Bool, ServerContext) -> Void)?
    /// Whether the handler's task runs on its connection's event loop (see `onConnectionLoop()`).
    public private(set) var runsOnConnectionLoop = false

    init(descriptor: AnyMethodDescriptor,
         run: @escaping @Sendable (InboundSequence, NIOLoopBound<H2Stream>, any EventLoop, Bool, ServerContext) async throws -> Void,
         unaryRun: (@Sendable (ByteBuffer, NIOLoopBound<H2Stream>, any EventLoop, Bool, ServerContext) async throws -> Void)? = nil,
         unaryOnLoopRun: (@Sendable (ByteBuffer, H2Stream, any EventLoop, Bool, ServerContext) -> Void)? = nil) {
        self.descriptor = descriptor
        self.run = run
        self.unaryRun = unaryRun
        self.unaryOnLoopRun = unaryOnLoopRun
    }

    /// This method with its handler's task preferring the connection's event loop as executor
    /// (`EventLoopTaskExecutor`) instead of the cooperative pool: reading a request message, and
    /// sending a response, then cost no thread switch. Only for handlers that never block and
    /// do little work per message (they share the loop with every other call on it).
    public func onConnectionLoop() -> ServerMethod {
        var m = self
        m.runsOnConnectionLoop = true
        return m
    }

    public static func unary<Req, Resp>(
        _ d: MethodDescriptor<Req, Resp>,
        _ handler: @escaping @Sendable (Req, ServerContext) async throws -> Resp
    ) -> ServerMethod {
        ServerMethod(descriptor: d.erased, run: { inbound, stream, loop, gz, ctx in
            let req = try await single(RequestStream<Req>(base: inbound))
            let resp = try await handler(req, ctx)
            try await ResponseWriter<Resp>(stream: stream, loop: loop, compress: gz).send(resp)
        }, unaryRun: { message, stream, loop, gz, ctx in
            // The request message was delivered by the connection's loop (no inbound sequence);
            // the response and the OK trailers go out in ONE job on that loop (no await of the
            // enqueue: a unary call ends right after its one message anyway).
            let req = try decodeMessage(Req.self, message)
            let resp = try await handler(req, ctx)
            let framed = try GRPCFramer.frame(resp, compress: gz, allocator: ByteBufferAllocator())
            loop.execute {
                let s = stream.value
                _ = s.enqueue(framed)
                s.finishServer(status: .ok)
            }
        })
    }

    /// A unary method whose handler is called on the connection's event loop, without a Swift task,
    /// and answers through `UnaryResponder` (from any thread, once). For handlers that do little
    /// work before handing the request on and get their answer back as a callback (a proposal's
    /// apply result): a task per call, or a future per call (its promise, `hop`, `whenComplete`
    /// closure and the runtime metadata lookup for the future's type), cost more than such a
    /// handler does. The call's deadline and a client's RST_STREAM end the call as for `unary`;
    /// a response after that is dropped.
    public static func unaryResponding<Req, Resp>(
        _ d: MethodDescriptor<Req, Resp>,
        _ handler: @escaping @Sendable (Req, ServerContext, UnaryResponder<Resp>) -> Void
    ) -> ServerMethod {
        ServerMethod(descriptor: d.erased, run: { inbound, stream, loop, gz, ctx in
            let req = try await single(RequestStream<Req>(base: inbound))
            let answered = loop.makePromise(of: Resp.self)
            handler(req, ctx, UnaryResponder(sink: .promise(answered)))
            let resp = try await answered.futureResult.get()
            try await ResponseWriter<Resp>(stream: stream, loop: loop, compress: gz).send(resp)
        }, unaryOnLoopRun: { message, stream, loop, gz, ctx in
            let req: Req
            do throws(GRPCStatus) { req = try decodeMessage(Req.self, message) } catch {
                stream.finishServer(status: error)
                return
            }
            handler(req, ctx, UnaryResponder(sink: .stream(NIOLoopBound(stream, eventLoop: loop), compress: gz)))
        })
    }

    public static func serverStreaming<Req, Resp>(
        _ d: MethodDescriptor<Req, Resp>,
        _ handler: @escaping @Sendable (Req, ResponseWriter<Resp>, ServerContext) async throws -> Void
    ) -> ServerMethod {
        ServerMethod(descriptor: d.erased) { inbound, stream, loop, gz, ctx in
            let req = try await single(RequestStream<Req>(base: inbound))
            try await handler(req, ResponseWriter(stream: stream, loop: loop, compress: gz), ctx)
        }
    }

    public static func clientStreaming<Req, Resp>(
        _ d: MethodDescriptor<Req, Resp>,
        _ handler: @escaping @Sendable (RequestStream<Req>, ServerContext) async throws -> Resp
    ) -> ServerMethod {
        ServerMethod(descriptor: d.erased) { inbound, stream, loop, gz, ctx in
            let resp = try await handler(RequestStream(base: inbound), ctx)
            try await ResponseWriter<Resp>(stream: stream, loop: loop, compress: gz).send(resp)
        }
    }

    public static func bidirectionalStreaming<Req, Resp>(
        _ d: MethodDescriptor<Req, Resp>,
        _ handler: @escaping @Sendable (RequestStream<Req>, ResponseWriter<Resp>, ServerContext) async throws -> Void
    ) -> ServerMethod {
        ServerMethod(descriptor: d.erased) { inbound, stream, loop, gz, ctx in
            try await handler(RequestStream(base: inbound), ResponseWriter(stream: stream, loop: loop, compress: gz), ctx)
        }
    }

    /// This method with `check` run before its handler, as a gRPC interceptor: a status it throws
    /// ends the call with that status and the handler never runs.
    public func checked(_ check: @escaping @Sendable (ServerContext) throws -> Void) -> ServerMethod {
        let run = self.run
        var checkedUnary: (@Sendable (ByteBuffer, NIOLoopBound<H2Stream>, any EventLoop, Bool, ServerContext) async throws -> Void)?
        if let unary = self.unaryRun {
            checkedUnary = { message, stream, loop, gz, ctx in
                try check(ctx)
                try await unary(message, stream, loop, gz, ctx)
            }
        }
        var checkedOnLoop: (@Sendable (ByteBuffer, H2Stream, any EventLoop, Bool, ServerContext) -> Void)?
        if let onLoop = self.unaryOnLoopRun {
            checkedOnLoop = { message, stream, loop, gz, ctx in
                do { try check(ctx) } catch {
                    stream.finishServer(status: callStatus(of: error))
                    return
                }
                onLoop(message, stream, loop, gz, ctx)
            }
        }
        var m = ServerMethod(descriptor: descriptor, run: { inbound, stream, loop, gz, ctx in
            try check(ctx)
            try await run(inbound, stream, loop, gz, ctx)
        }, unaryRun: checkedUnary, unaryOnLoopRun: checkedOnLoop)
        m.runsOnConnectionLoop = runsOnConnectionLoop
        return m
    }

    /// A streaming method whose call also ends when a monitor returns: `monitor` picks one for the
    /// call (nil: none), which runs beside the handler; when it returns, the handler is cancelled
    /// and the call ends with `status` (etcd's monitorLeader stream interceptor). Unary methods are
    /// returned unchanged.
    public func monitored(_ monitor: @escaping @Sendable (ServerContext) -> (@Sendable () async throws -> Void)?,
                          status: GRPCStatus) -> ServerMethod {
        guard unaryRun == nil, unaryOnLoopRun == nil else { return self }
        let run = self.run
        var m = ServerMethod(descriptor: descriptor, run: { inbound, stream, loop, gz, ctx in
            guard let watch = monitor(ctx) else {
                try await run(inbound, stream, loop, gz, ctx)
                return
            }
            try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask {
                    try await run(inbound, stream, loop, gz, ctx)
                    return false
                }
                group.addTask {
                    try await watch()
                    return true
                }
                let monitorEnded = try await group.next() ?? false
                group.cancelAll()
                if monitorEnded { throw status }
            }
        })
        m.runsOnConnectionLoop = runsOnConnectionLoop
        return m
    }

    private static func single<Req>(_ requests: RequestStream<Req>) async throws -> Req {
        var it = requests.makeAsyncIterator()
        guard let first = try await it.next() else {
            throw GRPCStatus(.internal, "grpc: request stream ended without a message")
        }
        return first
    }
}

/// Maps `:path` to methods. Immutable after the server starts.
struct Router: Sendable {
    var methods: [String: ServerMethod] = [:]
    var services: Set<String> = []

    init(_ services: [any GRPCService]) {
        for s in services {
            for m in s.methods {
                methods[m.descriptor.path] = m
                self.services.insert(m.descriptor.serviceName)
            }
        }
    }
}

/// A gRPC server on SwiftNIO + nghttp2 (HTTP/2 cleartext with prior knowledge).
public final class GRPCServer: Sendable {
    public struct Configuration: Sendable {
        public var host = "127.0.0.1"
        public var port = 0
        public var http2 = HTTP2Configuration()
        /// Compress responses with gzip when the client accepts it (requests in gzip always get gzip back).
        public var compressResponses = false
        public init() {}
    }

    public let counters = HTTP2Counters()
    let router: Router
    let config: Configuration
    let group: any EventLoopGroup
    let serverChannel: any Channel
    let connections: ConnectionRegistry

    /// Binds and starts serving. `group` defaults to NIO's shared multi-threaded group.
    public init(configuration: Configuration, services: [any GRPCService],
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                channelInitializer: (@Sendable (any Channel) -> EventLoopFuture<Void>)? = nil,
                nonHTTP2Initializer: NonHTTP2Initializer? = nil) async throws {
        self.config = configuration
        self.router = Router(services)
        self.group = group
        let counters = self.counters
        let router = self.router
        let registry = ConnectionRegistry()
        self.connections = registry
        self.serverChannel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1024 * 1024))
            .childChannelInitializer { channel in
                // Seam for TLS + ALPN: `channelInitializer` may add e.g. an SSL handler first.
                let pre = channelInitializer?(channel) ?? channel.eventLoop.makeSucceededVoidFuture()
                return pre.flatMapThrowing {
                    let makeHTTP2 = {
                        let conn = H2Connection(isServer: true, config: configuration.http2, counters: counters,
                                                loop: channel.eventLoop)
                        let dispatcher = ServerDispatcher(router: router, config: configuration, connection: conn)
                        conn.owner = dispatcher
                        conn.onClose.append { _ = dispatcher }  // the connection keeps its dispatcher alive
                        registry.add(channel)
                        channel.closeFuture.whenComplete { _ in registry.remove(channel) }
                        return conn
                    }
                    guard let other = nonHTTP2Initializer else {
                        try channel.pipeline.syncOperations.addHandler(makeHTTP2())
                        return
                    }
                    // Seam: sniff the HTTP/2 preface; anything else goes to `other` (see PrefaceSniffer.swift).
                    let sniffer = PrefaceSniffer(
                        onHTTP2: { ctx in try ctx.pipeline.syncOperations.addHandler(makeHTTP2(), position: .after(ctx.handler)) },
                        onOther: { ctx in try other(ctx.channel) })
                    try channel.pipeline.syncOperations.addHandler(sniffer)
                }
            }
            .bind(host: configuration.host, port: configuration.port).get()
    }

    /// The bound port (useful with port 0).
    public var port: Int { serverChannel.localAddress?.port ?? 0 }

    /// Sends GOAWAY on every open connection but keeps listening: in-flight calls finish, clients
    /// move new calls to a new connection. Returns when those connections have closed (or `timeout`).
    public func drainConnections(timeout: TimeAmount = .seconds(10)) async {
        await goAwayAll(timeout: timeout)
    }

    /// Graceful shutdown: stop accepting, GOAWAY every connection, let in-flight calls finish
    /// (up to `timeout`), then close what is left.
    public func shutdown(timeout: TimeAmount = .seconds(10)) async {
        try? await serverChannel.close()
        await goAwayAll(timeout: timeout)
    }

    private func goAwayAll(timeout: TimeAmount) async {
        let chans = connections.all()
        for ch in chans {
            ch.eventLoop.execute {
                if let h = try? ch.pipeline.syncOperations.handler(type: H2Connection.self) {
                    h.initiateGracefulShutdown()
                }
            }
        }
        let deadline = NIODeadline.now() + timeout
        for ch in chans {
            let remaining = deadline - .now()
            if remaining > .zero {
                let timer = ch.eventLoop.scheduleTask(in: remaining) { ch.close(promise: nil) }
                try? await ch.closeFuture.get()
                timer.cancel()
            } else {
                try? await ch.close()
            }
        }
    }
}

/// Open child channels, so shutdown can reach them. An actor would force async registration on
/// the accept path; this is a tiny Mutex-protected set instead (touched once per connection).
final class ConnectionRegistry: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])
    func add(_ c: any Channel) { channels.withLock { $0[ObjectIdentifier(c)] = c } }
    func remove(_ c: any Channel) { _ = channels.withLock { $0.removeValue(forKey: ObjectIdentifier(c)) } }
    func all() -> [any Channel] { channels.withLock { Array($0.values) } }
}

import Synchronization

/// Server role of a connection: validates request headers and starts a handler task per stream.
final class ServerDispatcher: H2StreamOwner {
    let router: Router
    let config: GRPCServer.Configuration
    unowned let connection: H2Connection

    init(router: Router, config: GRPCServer.Configuration, connection: H2Connection) {
        self.router = router
        self.config = config
        self.connection = connection
    }

    func requestHeadersReceived(_ s: H2Stream) {
        var path = "", method = "", contentType = "", encoding: String? = nil, accept = "", timeout: String? = nil
        for (n, v) in s.headers {
            switch n {
            case ":path": path = v
            case ":method": method = v
            case "content-type": contentType = v
            case "grpc-encoding": encoding = v
            case "grpc-accept-encoding": accept = v
            case "grpc-timeout": timeout = v
            default: break
            }
        }
        guard method == "POST" else {
            connection.submitResponse(s, headers: [(":status", "405")], withData: false)
            return
        }
        guard contentType == "application/grpc" || contentType.hasPrefix("application/grpc+")
                || contentType.hasPrefix("application/grpc;") else {
            connection.submitResponse(s, headers: [(":status", "415"), ("content-type", "text/plain")], withData: false)
            return
        }
        guard let m = router.methods[path] else {
            let parts = path.split(separator: "/", omittingEmptySubsequences: true)
            let service = parts.first.map(String.init) ?? ""
            let msg = router.services.contains(service) && parts.count == 2
                ? "unknown method \(parts[1]) for service \(service)" : "unknown service \(service)"
            s.finishServer(status: GRPCStatus(.unimplemented, msg))
            return
        }
        if let enc = encoding, enc != "identity" {
            guard enc == "gzip" else {
                s.finishServer(status: GRPCStatus(.unimplemented, "grpc: Decompressor is not installed for grpc-encoding \"\(enc)\""))
                return
            }
            s.deframer.encoding = "gzip"
        }
        s.compressOutbound = encoding == "gzip"
            || (config.compressResponses && accept.split(separator: ",").contains { $0.trimmingCharacters(in: " ") == "gzip" })
        var deadline: NIODeadline?
        if let t = timeout {
            guard let ns = GRPCTimeout.parse(t) else {
                s.finishServer(status: GRPCStatus(.internal, "malformed grpc-timeout: \(t)"))
                return
            }
            deadline = .now() + .nanoseconds(min(ns, Int64.max / 2))
            let bs = NIOLoopBound(s, eventLoop: connection.loop)
            s.deadline = connection.loop.scheduleTask(deadline: deadline!) {
                let s = bs.value
                s.task?.cancel()
                s.finishServer(status: GRPCStatus(.deadlineExceeded, "context deadline exceeded"))
            }
        }
        let ctx = ServerContext(path: path, requestHeaders: s.headers.map { .init(name: $0.name, value: $0.value) },
                                deadline: deadline)
        let loop = connection.loop
        let gz = s.compressOutbound
        if let onLoop = m.unaryOnLoopRun {
            // Unary, answered through a responder: the handler runs here, on the connection's loop,
            // when the request message is in; no task.
            s.unaryMode = true
            s.unaryStart = { message in onLoop(message, s, loop, gz, ctx) }
            return
        }
        let bound = NIOLoopBound(s, eventLoop: loop)
        let executor = m.runsOnConnectionLoop ? connection.taskExecutor : nil
        if let unary = m.unaryRun {
            // Unary: no inbound sequence and no task until the request message is here; the
            // task starts with it (the stream clears this closure when it ends first).
            s.unaryMode = true
            s.unaryStart = { message in
                bound.value.task = Task(executorPreference: executor) {
                    do {
                        try await unary(message, bound, loop, gz, ctx)
                    } catch {
                        let status = callStatus(of: error)
                        loop.execute { bound.value.finishServer(status: status) }
                    }
                }
            }
            return
        }
        let inbound = s.makeInbound()
        let run = m.run
        s.task = Task(executorPreference: executor) {
            var status = GRPCStatus.ok
            do {
                try await run(inbound, bound, loop, gz, ctx)
            } catch {
                status = callStatus(of: error)
            }
            let final = status
            loop.execute { bound.value.finishServer(status: final) }
        }
    }

}

/// The status a server call ends with when its handler throws.
func callStatus(of error: any Error) -> GRPCStatus {
    if let st = error as? GRPCStatus { return st }
    if error is CancellationError { return GRPCStatus(.cancelled, "call cancelled") }
    return GRPCStatus(.unknown, "\(error)")
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> Substring {
        var s = self
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return s
    }
}

/// Where the handler of a `unaryResponding` method sends its one answer: `respond` from any thread
/// (on the call's event loop it answers at once, elsewhere it costs one job on that loop). Answering
/// twice is a programming error; the second answer is ignored by the ended stream.
public struct UnaryResponder<Resp: ProtoMessage>: Sendable {
    enum Sink: Sendable {
        case stream(NIOLoopBound<H2Stream>, compress: Bool)
        case promise(EventLoopPromise<Resp>)
    }
    let sink: Sink

    /// The call's event loop (the connection's).
    public var eventLoop: any EventLoop {
        switch sink {
        case .stream(let s, _): s.eventLoop
        case .promise(let p): p.futureResult.eventLoop
        }
    }

    /// Ends the call with `result`: the response message and status OK, or the error's status
    /// (a `GRPCStatus` as it is, anything else as UNKNOWN).
    public func respond(_ result: Result<Resp, any Error>) {
        switch sink {
        case .promise(let p):
            p.completeWith(result)
        case .stream(let bound, let compress):
            let loop = bound.eventLoop
            if loop.inEventLoop {
                Self.finish(bound.value, result, compress: compress)
            } else {
                loop.execute { Self.finish(bound.value, result, compress: compress) }
            }
        }
    }

    public func succeed(_ response: Resp) { respond(.success(response)) }
    public func fail(_ error: any Error) { respond(.failure(error)) }

    private static func finish(_ stream: H2Stream, _ result: Result<Resp, any Error>, compress: Bool) {
        switch result {
        case .success(let resp):
            do throws(GRPCStatus) {
                let framed = try GRPCFramer.frame(resp, compress: compress, allocator: stream.connection.allocator)
                _ = stream.enqueue(framed)
                stream.finishServer(status: .ok)
            } catch {
                stream.finishServer(status: error)
            }
        case .failure(let error):
            stream.finishServer(status: callStatus(of: error))
        }
    }
}
