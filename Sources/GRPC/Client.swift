import CNGHTTP2
import NIOCore
import NIOPosix
import ProtoWire
import Synchronization

/// Per-call options.
public struct CallOptions: Sendable {
    /// Sent as `grpc-timeout`; the call also ends locally with DEADLINE_EXCEEDED when it passes.
    public var timeout: Duration?
    /// Compress request messages with gzip (nil: the client's default).
    public var compress: Bool?
    /// Extra request headers (lowercase names).
    public var metadata: [(name: String, value: String)] = []
    public init(timeout: Duration? = nil, compress: Bool? = nil, metadata: [(name: String, value: String)] = []) {
        self.timeout = timeout
        self.compress = compress
        self.metadata = metadata
    }
}

/// Received messages of a call; ends normally on status OK, throws the `GRPCStatus` otherwise.
public struct ResponseStream<Message: ProtoMessage>: AsyncSequence, Sendable {
    public typealias Element = Message
    let base: InboundSequence
    let status: EventLoopFuture<GRPCStatus>

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: InboundSequence.AsyncIterator
        let status: EventLoopFuture<GRPCStatus>
        public mutating func next() async throws -> Message? {
            if let buffer = try await base.next() {
                return try decodeMessage(Message.self, buffer)
            }
            let st = try await status.get()
            if st.code != .ok { throw st }
            return nil
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: base.makeAsyncIterator(), status: status)
    }
}

/// Sends request messages of a client- or bidi-streaming call; waits under back-pressure.
public struct RequestWriter<Message: ProtoMessage>: Sendable {
    let stream: NIOLoopBound<H2Stream>
    let loop: any EventLoop
    let compress: Bool

    public func send(_ message: Message) async throws {
        let framed = try GRPCFramer.frame(message, compress: compress, allocator: ByteBufferAllocator())
        let s = stream
        try await loop.flatSubmit { s.value.enqueue(framed) }.get()
    }

    /// Half-closes the request direction (END_STREAM).
    public func finish() {
        let s = stream
        loop.execute { s.value.endRequest() }
    }
}

/// One HTTP/2 connection of a client.
final class ClientConnection: Sendable {
    let channel: any Channel
    let handler: NIOLoopBound<H2Connection>
    let usable = Atomic<Bool>(true)

    init(channel: any Channel, handler: NIOLoopBound<H2Connection>) {
        self.channel = channel
        self.handler = handler
    }
}

/// Connections of a client: opened lazily, replaced after GOAWAY or close.
actor ConnectionPool {
    let host: String
    let port: Int
    let size: Int
    let group: any EventLoopGroup
    let http2: HTTP2Configuration
    let counters: HTTP2Counters
    var connections: [ClientConnection?]
    /// Connects in progress per slot: concurrent callers share one (actor reentrancy).
    var connecting: [Int: Task<ClientConnection, any Error>] = [:]
    var next = 0
    var closed = false

    let channelInitializer: (@Sendable (any Channel) -> EventLoopFuture<Void>)?

    init(host: String, port: Int, size: Int, group: any EventLoopGroup, http2: HTTP2Configuration, counters: HTTP2Counters,
         channelInitializer: (@Sendable (any Channel) -> EventLoopFuture<Void>)?) {
        self.channelInitializer = channelInitializer
        self.host = host
        self.port = port
        self.size = max(size, 1)
        self.group = group
        self.http2 = http2
        self.counters = counters
        self.connections = Array(repeating: nil, count: max(size, 1))
    }

    func connection() async throws -> ClientConnection {
        guard !closed else { throw GRPCStatus(.unavailable, "client closed") }
        let i = next
        next = (next + 1) % size
        if let c = connections[i], c.usable.load(ordering: .relaxed) { return c }
        if let pending = connecting[i] { return try await pending.value }
        let task = Task { try await self.connect() }
        connecting[i] = task
        defer { connecting[i] = nil }
        let c = try await task.value
        if closed {
            try? await c.channel.close()
            throw GRPCStatus(.unavailable, "client closed")
        }
        connections[i] = c
        return c
    }

    private func connect() async throws -> ClientConnection {
        let http2 = self.http2
        let counters = self.counters
        let pre = self.channelInitializer
        do {
            // The handler goes in from the channel initializer: the server's SETTINGS may arrive
            // before `connect` returns, and must not pass by an empty pipeline.
            let channel = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1024 * 1024))
                .channelInitializer { channel in
                    (pre?(channel) ?? channel.eventLoop.makeSucceededVoidFuture()).flatMapThrowing {
                        let h = H2Connection(isServer: false, config: http2, counters: counters, loop: channel.eventLoop)
                        try channel.pipeline.syncOperations.addHandler(h)
                    }
                }
                .connect(host: host, port: port).get()
            let bound: NIOLoopBound<H2Connection> = try await channel.eventLoop.submit {
                let h = try channel.pipeline.syncOperations.handler(type: H2Connection.self)
                return NIOLoopBound(h, eventLoop: channel.eventLoop)
            }.get()
            let conn = ClientConnection(channel: channel, handler: bound)
            try await channel.eventLoop.submit {
                let h = bound.value
                h.onGoAway = { conn.usable.store(false, ordering: .relaxed) }
                h.onClose.append { conn.usable.store(false, ordering: .relaxed) }
                if h.closed { conn.usable.store(false, ordering: .relaxed) }
            }.get()
            return conn
        } catch {
            throw GRPCStatus(.unavailable, "connect to \(host):\(port) failed: \(error)")
        }
    }

    func close() async -> [ClientConnection] {
        closed = true
        let all = connections.compactMap { $0 }
        connections = Array(repeating: nil, count: size)
        return all
    }
}

/// A gRPC client over nghttp2 (client mode) on a NIO ClientBootstrap; many concurrent calls per connection.
///
///     let client = GRPCClient(host: "127.0.0.1", port: port)
///     let reply = try await client.unary(Echo.EchoService.get, request)
public final class GRPCClient: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// HTTP/2 connections to spread calls over (round robin).
        public var connections = 1
        public var http2 = HTTP2Configuration()
        /// gzip request messages by default.
        public var compressRequests = false
        /// Authority sent as `:authority`.
        public var authority: String?
        /// Runs before the HTTP/2 handler is added (seam for TLS + ALPN h2).
        public var channelInitializer: (@Sendable (any Channel) -> EventLoopFuture<Void>)?
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    public let counters = HTTP2Counters()
    let config: Configuration
    let pool: ConnectionPool

    public init(configuration: Configuration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.config = configuration
        self.pool = ConnectionPool(host: configuration.host, port: configuration.port, size: configuration.connections,
                                   group: group, http2: configuration.http2, counters: counters,
                                   channelInitializer: configuration.channelInitializer)
    }

    public convenience init(host: String, port: Int) {
        self.init(configuration: Configuration(host: host, port: port))
    }

    /// Closes every connection (in-flight calls fail with UNAVAILABLE).
    public func close() async {
        for c in await pool.close() {
            try? await c.channel.close()
        }
    }

    /// Sends GOAWAY on every connection and waits for in-flight calls to finish.
    public func shutdownGracefully() async {
        for c in await pool.close() {
            let h = c.handler
            c.channel.eventLoop.execute { h.value.initiateGracefulShutdown() }
            try? await c.channel.closeFuture.get()
        }
    }

    // MARK: calls

    public func unary<Req, Resp>(_ method: MethodDescriptor<Req, Resp>, _ request: Req,
                                 options: CallOptions = CallOptions()) async throws -> Resp {
        // Fast path: the request is framed before the call starts, and the stream is opened, the
        // message queued and the request half-closed in ONE event-loop submission (instead of three
        // hops: start, send, finish). The stream keeps the response message itself (no async
        // sequence) and completes one future when it closes, so the caller waits once.
        let compress = options.compress ?? config.compressRequests
        let framed = try GRPCFramer.frame(request, compress: compress, allocator: ByteBufferAllocator())
        let headers = requestHeaders(method.path, options, compress)
        var attempt = 0
        while true {
            // A call whose task is already cancelled is not sent (grpc-go: a done context fails the call).
            if Task.isCancelled { throw Self.cancelledByClient }
            attempt += 1
            let conn = try await pool.connection()
            let loop = conn.channel.eventLoop
            let state = NIOLoopBoundBox.makeEmptyBox(valueType: UnaryCallState.self, eventLoop: loop)
            let response = startUnary(conn, headers, framed, state)
            do {
                let buffer = try await withTaskCancellationHandler {
                    try await response.get()
                } onCancel: {
                    loop.execute {
                        if case .running(let s) = state.value {
                            s.cancel(status: Self.cancelledByClient)
                        }
                        state.value = .cancelled
                    }
                }
                return try decodeMessage(Resp.self, buffer)
            } catch is RefusedStart {
                if attempt < 3 { continue }
                throw GRPCStatus(.unavailable, "connection is closing")
            }
        }
    }

    /// A caller of unary RPCs on one open connection of this client, without a Swift task per call
    /// (see `LoopUnaryCaller`). Opens the connection when none is open yet.
    public func loopCaller() async throws -> LoopUnaryCaller {
        LoopUnaryCaller(client: self, conn: try await pool.connection())
    }

    struct RefusedStart: Error {}

    /// The status of a call its caller's task cancelled.
    static let cancelledByClient = GRPCStatus(.cancelled, "call cancelled by the client")

    /// On the connection's loop: opens a stream with `headers` and arms its deadline; nil when the
    /// connection refuses new streams (GOAWAY, closing), which marks it unusable.
    static func openStream(_ conn: ClientConnection, _ headers: RequestHeaders) -> H2Stream? {
        guard let s = conn.handler.value.submitRequest(headers: headers.fields) else {
            conn.usable.store(false, ordering: .relaxed)
            return nil
        }
        if let timeout = headers.timeoutNanos {
            let loop = conn.channel.eventLoop
            let bs = NIOLoopBound(s, eventLoop: loop)
            s.deadline = loop.scheduleTask(in: .nanoseconds(timeout)) {
                bs.value.cancel(status: GRPCStatus(.deadlineExceeded, "context deadline exceeded"))
            }
        }
        return s
    }

    /// What a unary call's task cancellation finds on the loop: nothing yet (nil), or its stream.
    enum UnaryCallState {
        case running(H2Stream)
        case cancelled
    }

    /// Opens a unary call's stream, queues its one message and half-closes it in one event-loop job;
    /// the future has the response message once the stream has closed with OK, else the call's
    /// status as its error. A connection that refuses new streams (GOAWAY, closing) fails it with
    /// `RefusedStart` before anything is sent (safe to retry on another connection).
    private func startUnary(_ conn: ClientConnection, _ headers: RequestHeaders, _ framed: ByteBuffer,
                            _ state: NIOLoopBoundBox<UnaryCallState?>) -> EventLoopFuture<ByteBuffer> {
        let loop = conn.channel.eventLoop
        // One job with a promise made here (not `flatSubmit`: its generic future plumbing showed up
        // in keel-bench's profile as runtime metadata lookups on every call).
        let promise = loop.makePromise(of: ByteBuffer.self)
        loop.execute {
            if case .cancelled = state.value {
                promise.fail(Self.cancelledByClient)
                return
            }
            guard let s = Self.openStream(conn, headers) else {
                promise.fail(RefusedStart())
                return
            }
            state.value = .running(s)
            Self.sendUnary(s, framed) { promise.completeWith($0.mapError { $0 as any Error }) }
        }
        return promise.futureResult
    }

    /// On the stream's loop: queues a unary call's one (framed) message and half-closes; `done`
    /// gets the response message once the stream closed with OK, else the call's status.
    static func sendUnary(_ s: H2Stream, _ framed: ByteBuffer, _ done: @escaping (Result<ByteBuffer, GRPCStatus>) -> Void) {
        s.clientUnary = true
        s.onClose = { [unowned s] status in
            if status.code != .ok {
                done(.failure(status))
            } else if let m = s.unaryResponse {
                s.unaryResponse = nil
                done(.success(m))
            } else {
                done(.failure(GRPCStatus(.internal, "grpc: server ended the call without a response message")))
            }
        }
        _ = s.enqueue(framed)
        s.endRequest()
    }

    public func serverStreaming<Req, Resp, R: Sendable>(
        _ method: MethodDescriptor<Req, Resp>, _ request: Req, options: CallOptions = CallOptions(),
        _ body: (ResponseStream<Resp>) async throws -> R
    ) async throws -> R {
        try await withCall(method.path, options) { call in
            try await call.writer(Req.self).send(request)
            call.writer(Req.self).finish()
            return try await body(call.responses(Resp.self))
        }
    }

    public func clientStreaming<Req, Resp>(
        _ method: MethodDescriptor<Req, Resp>, options: CallOptions = CallOptions(),
        _ body: (RequestWriter<Req>) async throws -> Void
    ) async throws -> Resp {
        try await withCall(method.path, options) { call in
            try await body(call.writer(Req.self))
            call.writer(Req.self).finish()
            return try await call.single(Resp.self)
        }
    }

    public func bidirectionalStreaming<Req, Resp, R: Sendable>(
        _ method: MethodDescriptor<Req, Resp>, options: CallOptions = CallOptions(),
        _ body: (RequestWriter<Req>, ResponseStream<Resp>) async throws -> R
    ) async throws -> R {
        try await withCall(method.path, options) { call in
            try await body(call.writer(Req.self), call.responses(Resp.self))
        }
    }

    // MARK: plumbing

    struct Call: Sendable {
        let stream: NIOLoopBound<H2Stream>
        let loop: any EventLoop
        let inbound: InboundSequence
        let status: EventLoopFuture<GRPCStatus>
        let compress: Bool

        func writer<M>(_: M.Type) -> RequestWriter<M> { RequestWriter(stream: stream, loop: loop, compress: compress) }
        func responses<M>(_: M.Type) -> ResponseStream<M> { ResponseStream(base: inbound, status: status) }

        /// Exactly one response message, then status OK.
        func single<M: ProtoMessage>(_: M.Type) async throws -> M {
            var it = responses(M.self).makeAsyncIterator()
            guard let first = try await it.next() else {
                throw GRPCStatus(.internal, "grpc: server ended the call without a response message")
            }
            while try await it.next() != nil {
                throw GRPCStatus(.internal, "grpc: more than one response message for a unary call")
            }
            return first
        }

        func cancel(_ status: GRPCStatus) {
            let s = stream
            loop.execute { s.value.cancel(status: status) }
        }
    }

    private func withCall<R: Sendable>(_ path: String, _ options: CallOptions,
                                       _ body: (Call) async throws -> R) async throws -> R {
        let compress = options.compress ?? config.compressRequests
        let call = try await openCall(path, options, compress)
        return try await runCall(call, body)
    }

    /// A call's request headers and its timeout in nanoseconds (nil: none).
    struct RequestHeaders: Sendable {
        var fields: GRPCMetadata
        var timeoutNanos: Int64?
    }

    func requestHeaders(_ path: String, _ options: CallOptions, _ compress: Bool) -> RequestHeaders {
        var headers: GRPCMetadata = [
            (":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", config.authority ?? "\(config.host):\(config.port)"),
            ("content-type", "application/grpc"), ("te", "trailers"),
            ("grpc-accept-encoding", "identity,gzip"), ("user-agent", "keel-grpc-swift/0.1"),
        ]
        if compress { headers.append(("grpc-encoding", "gzip")) }
        var timeoutNanos: Int64?
        if let t = options.timeout {
            let c = t.components
            let ns = c.seconds.multipliedReportingOverflow(by: 1_000_000_000)
            timeoutNanos = ns.overflow ? Int64.max / 2 : ns.partialValue + c.attoseconds / 1_000_000_000
            headers.append(("grpc-timeout", GRPCTimeout.encode(nanoseconds: timeoutNanos!)))
        }
        headers.append(contentsOf: options.metadata)
        return RequestHeaders(fields: headers, timeoutNanos: timeoutNanos)
    }

    /// Starts a streaming call (retrying a refused start on a fresh connection).
    private func openCall(_ path: String, _ options: CallOptions, _ compress: Bool) async throws -> Call {
        let headers = requestHeaders(path, options, compress)
        // A connection that got GOAWAY (or closed) refuses new streams before anything is sent:
        // such a call is safe to retry on a fresh connection.
        var attempt = 0
        var call: Call?
        while call == nil {
            attempt += 1
            let conn = try await pool.connection()
            do {
                call = try await startCall(conn, headers, compress)
            } catch let st as GRPCStatus where st.code == .unavailable && attempt < 3 {
                continue
            }
        }
        return call!
    }

    private func startCall(_ conn: ClientConnection, _ headers: RequestHeaders, _ compress: Bool) async throws -> Call {
        let loop = conn.channel.eventLoop
        return try await loop.submit { () throws -> Call in
            guard let s = Self.openStream(conn, headers) else {
                throw GRPCStatus(.unavailable, "connection is closing")
            }
            let inbound = s.makeInbound()
            let promise = loop.makePromise(of: GRPCStatus.self)
            s.onClose = { promise.succeed($0) }
            return Call(stream: NIOLoopBound(s, eventLoop: loop), loop: loop, inbound: inbound,
                        status: promise.futureResult, compress: compress)
        }.get()
    }

    /// Runs `body` on the call, then resets the stream if the server has not ended it yet.
    private func runCall<R: Sendable>(_ call: Call, _ body: (Call) async throws -> R) async throws -> R {
        try await withTaskCancellationHandler {
            do {
                let r = try await body(call)
                // Done with the call: reset it if the server has not ended it yet (no leak).
                call.cancel(GRPCStatus(.cancelled, "call finished by the client"))
                return r
            } catch {
                call.cancel(GRPCStatus(.cancelled, "call abandoned by the client"))
                // Prefer the call's own status (e.g. DEADLINE_EXCEEDED) over a derived error.
                if !(error is GRPCStatus), let st = try? await call.status.get(), st.code != .ok { throw st }
                throw error
            }
        } onCancel: {
            call.cancel(Self.cancelledByClient)
        }
    }
}

/// Unary calls on one connection, started and completed on its event loop without a Swift task:
/// for callers that live on that loop and start the next call from the last one's completion (a
/// load generator's closed-loop workers). The call itself is `GRPCClient.unary`'s fast path: the
/// framed request, the stream's headers, its one message and the half-close in one go, the response
/// kept by the stream; what it saves is the task's suspension and resumption, the cancellation
/// handler, the future the task waits on and the connection pool's actor hop, per call.
/// No retry: a connection that refuses new streams (GOAWAY, closed) fails the call with
/// UNAVAILABLE, and the caller stays bound to that connection (get a new one with `loopCaller()`).
public struct LoopUnaryCaller: Sendable {
    let client: GRPCClient
    let conn: ClientConnection

    /// The loop calls must be started on; completions run there.
    public var eventLoop: any EventLoop { conn.channel.eventLoop }

    /// Starts `method(request)`; call on `eventLoop`. `completion` runs once, on `eventLoop`, with
    /// the decoded response or the call's status (a `GRPCStatus`); never before this returns.
    public func unary<Req, Resp>(_ method: MethodDescriptor<Req, Resp>, _ request: Req, options: CallOptions = CallOptions(),
                                 completion: @escaping (Result<Resp, GRPCStatus>) -> Void) {
        let loop = conn.channel.eventLoop
        loop.preconditionInEventLoop()
        let compress = options.compress ?? client.config.compressRequests
        let framed: ByteBuffer
        do throws(GRPCStatus) {
            framed = try GRPCFramer.frame(request, compress: compress, allocator: conn.handler.value.allocator)
        } catch {
            loop.assumeIsolated().execute { completion(.failure(error)) }
            return
        }
        guard let s = GRPCClient.openStream(conn, client.requestHeaders(method.path, options, compress)) else {
            loop.assumeIsolated().execute { completion(.failure(GRPCStatus(.unavailable, "connection is closing"))) }
            return
        }
        GRPCClient.sendUnary(s, framed) { result in
            completion(result.flatMap { m in Result { () throws(GRPCStatus) in try decodeMessage(Resp.self, m) } })
        }
    }
}
