import CNGHTTP2
import NIOCore
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Header list as received or to be sent, in order.
public typealias GRPCMetadata = [(name: String, value: String)]

/// Tunables shared by server and client connections.
public struct HTTP2Configuration: Sendable {
    /// SETTINGS_MAX_CONCURRENT_STREAMS we advertise.
    public var maxConcurrentStreams: UInt32 = 10_000
    /// SETTINGS_INITIAL_WINDOW_SIZE we advertise (per stream receive window).
    public var initialStreamWindow: Int32 = 1 << 20
    /// Connection-level receive window.
    public var connectionWindow: Int32 = 16 << 20
    /// SETTINGS_MAX_FRAME_SIZE we accept.
    public var maxFrameSize: UInt32 = 1 << 14
    /// Maximum received (decompressed) gRPC message size; etcd: max-request-bytes (1.5 MiB) + 512 KiB.
    public var maxReceiveMessageSize: Int = 1_572_864 + 512 * 1024
    /// Outbound bytes queued per stream before a writer waits for the peer's window.
    public var outboundHighWater: Int = 256 * 1024
    /// Received messages buffered per stream before we stop returning flow-control window.
    public var inboundHighWater: Int = 4
    /// Keepalive: a PING every `keepaliveInterval` (nil: off); no ACK within `keepaliveTimeout` closes.
    public var keepaliveInterval: TimeAmount? = nil
    public var keepaliveTimeout: TimeAmount = .seconds(20)

    public init() {}
}

/// Counters for tests and metrics (atomics: read from any thread, written on event loops).
public final class HTTP2Counters: Sendable {
    let openConnections = Atomic<Int>(0)
    let openStreams = Atomic<Int>(0)
    let totalConnections = Atomic<Int>(0)
    let totalStreams = Atomic<Int>(0)
    let pingsAcked = Atomic<Int>(0)
    public init() {}
    public var connections: Int { openConnections.load(ordering: .relaxed) }
    public var streams: Int { openStreams.load(ordering: .relaxed) }
    public var connectionsAccepted: Int { totalConnections.load(ordering: .relaxed) }
    public var streamsOpened: Int { totalStreams.load(ordering: .relaxed) }
    public var keepalivePingsAcked: Int { pingsAcked.load(ordering: .relaxed) }
}

typealias InboundSequence = NIOThrowingAsyncSequenceProducer<
    ByteBuffer, any Error, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark, InboundDelegate>

/// Tells a stream (on its loop) that the consumer of its received messages wants more or left.
struct InboundDelegate: NIOAsyncSequenceProducerDelegate {
    let stream: NIOLoopBound<H2Stream>
    let loop: any EventLoop
    func produceMore() {
        let s = stream
        loop.execute { s.value.resumeInbound() }
    }
    func didTerminate() {
        let s = stream
        loop.execute { s.value.inboundTerminated() }
    }
}

/// What a connection does with streams: the server dispatches requests, the client finishes calls.
protocol H2StreamOwner: AnyObject {
    /// Request headers complete (server only).
    func requestHeadersReceived(_ stream: H2Stream)
}

/// One HTTP/2 stream carrying one gRPC call. Confined to its connection's event loop.
final class H2Stream {
    let id: Int32
    /// Strong: a stream may outlive its connection's teardown (its task or delegate still holds it);
    /// the connection drops its streams when they close, which breaks the cycle.
    let connection: H2Connection
    let isServer: Bool

    // Received headers: request headers (server) or response headers (client), then trailers.
    var headers: GRPCMetadata = []
    var trailers: GRPCMetadata = []
    var headersComplete = false
    var pendingHeaderBlock: GRPCMetadata = []
    /// Server: checks of the header block being received (nghttp2's HTTP messaging is off).
    var headerCheck: RequestHeaderValidator?
    /// Server: the request was malformed and the stream is being reset (PROTOCOL_ERROR).
    var malformed = false
    /// Server: the request's content-length, if any, and the DATA bytes received so far.
    var contentLength: Int64?
    var bodyBytes: Int64 = 0

    // Inbound messages.
    var deframer: GRPCDeframer
    var source: InboundSequence.Source?
    var inboundPaused = false
    var inboundDiscard = false
    var unconsumed = 0
    var remoteEnded = false
    /// Server, unary call: the request message goes to `unaryStart` (called once, on this loop)
    /// instead of an inbound sequence; later messages are deframed (size checks) and dropped.
    var unaryMode = false
    var unaryStart: ((ByteBuffer) -> Void)?
    /// Client, unary call: the response message is kept here instead of going to an inbound
    /// sequence (no async sequence, iterator and status future per call); a second message fails
    /// the call. `onClose` completes the call from it.
    var clientUnary = false
    var unaryResponse: ByteBuffer?

    // Outbound messages.
    var outbound = CircularBuffer<ByteBuffer>()
    var outboundBytes = 0
    var writeWaiters: [EventLoopPromise<Void>] = []
    var dataProviderAttached = false
    var dataDeferred = false
    var pendingTrailers: GRPCMetadata?
    var endRequested = false  // client: END_STREAM after the queued data
    var localEnded = false
    var compressOutbound = false

    var closed = false
    var deadline: Scheduled<Void>?
    /// Server: the handler's task. Client: nil.
    var task: Task<Void, Never>?
    /// Called once when the stream closes: the final status.
    var onClose: ((GRPCStatus) -> Void)?
    var finalStatus: GRPCStatus?

    init(id: Int32, connection: H2Connection, isServer: Bool) {
        self.id = id
        self.connection = connection
        self.isServer = isServer
        self.deframer = GRPCDeframer(maxMessageSize: connection.config.maxReceiveMessageSize)
    }

    /// Creates the async sequence of received messages (called once).
    func makeInbound() -> InboundSequence {
        let loop = connection.loop
        let delegate = InboundDelegate(stream: NIOLoopBound(self, eventLoop: loop), loop: loop)
        let hw = max(connection.config.inboundHighWater, 2)
        let result = NIOThrowingAsyncSequenceProducer.makeSequence(
            elementType: ByteBuffer.self,
            failureType: (any Error).self,
            backPressureStrategy: NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark(
                lowWatermark: hw / 2, highWatermark: hw),
            finishOnDeinit: false,
            delegate: delegate)
        source = result.source
        return result.sequence
    }

    // MARK: inbound

    func receivedData(_ bytes: UnsafeRawBufferPointer) {
        unconsumed += bytes.count
        if inboundDiscard || (source == nil && !unaryMode && !clientUnary) {
            consumePending()
            return
        }
        deframer.append(bytes, allocator: connection.allocator)
        do {
            while let message = try deframer.next(allocator: connection.allocator) {
                if clientUnary {
                    guard unaryResponse == nil else {
                        inboundFailed(GRPCStatus(.internal, "grpc: more than one response message for a unary call"))
                        return
                    }
                    unaryResponse = message
                    continue
                }
                if unaryMode {
                    if let start = unaryStart {
                        unaryStart = nil
                        start(message)
                    }
                    continue
                }
                guard let src = source else { break }
                switch src.yield(message) {
                case .produceMore: break
                case .stopProducing: inboundPaused = true
                case .dropped: inboundDiscard = true
                }
            }
        } catch {
            inboundFailed(error)
            return
        }
        if !inboundPaused { consumePending() }
    }

    /// Returns flow-control window for everything received so far.
    func consumePending() {
        guard unconsumed > 0 else { return }
        let n = unconsumed
        unconsumed = 0
        if closed {
            connection.consumeConnection(n)
        } else {
            connection.consume(stream: id, n)
        }
    }

    func resumeInbound() {
        inboundPaused = false
        consumePending()
        connection.scheduleFlush()
    }

    func inboundTerminated() {
        inboundDiscard = true
        inboundPaused = false
        source = nil
        consumePending()
        connection.scheduleFlush()
    }

    func remoteEndedStream() {
        remoteEnded = true
        if deframer.bufferedBytes > 0 {
            inboundFailed(GRPCStatus(.internal, "grpc: stream ended in the middle of a message"))
            return
        }
        if isServer { source?.finish(); source = nil }
        if !isServer && !localEnded {
            // The server ended the call (its trailers are the final status) while this client is
            // still sending: the call is over, as for grpc-go's client. Close the stream with
            // NO_ERROR instead of waiting for a half-close the handler no longer reads.
            finalStatus = clientStatus(errorCode: 0)
            connection.resetStream(id, errorCode: NGHTTP2_NO_ERROR.rawValue)
            connection.scheduleFlush()
        }
        if unaryStart != nil {
            unaryStart = nil
            finishServer(status: GRPCStatus(.internal, "grpc: request stream ended without a message"))
        }
    }

    /// A malformed or oversized message: the call ends with that status.
    func inboundFailed(_ status: GRPCStatus) {
        inboundDiscard = true
        deframer = GRPCDeframer(maxMessageSize: 0)
        source?.finish(status)
        source = nil
        unaryStart = nil
        consumePending()
        if isServer {
            task?.cancel()
            finishServer(status: status)
        } else {
            cancel(status: status)
        }
    }

    // MARK: outbound

    /// Queues framed bytes; the future completes when the queue is below the high-water mark.
    func enqueue(_ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        let loop = connection.loop
        guard !closed, !localEnded, pendingTrailers == nil, !endRequested else {
            return loop.makeFailedFuture(finalStatus ?? GRPCStatus(.cancelled, "stream closed"))
        }
        if isServer && !dataProviderAttached {
            connection.submitResponse(self, headers: responseHeaders(), withData: true)
        }
        outboundBytes += buffer.readableBytes
        outbound.append(buffer)
        resumeData()
        if outboundBytes <= connection.config.outboundHighWater {
            return loop.makeSucceededVoidFuture()
        }
        let p = loop.makePromise(of: Void.self)
        writeWaiters.append(p)
        return p.futureResult
    }

    func resumeData() {
        if dataDeferred {
            dataDeferred = false
            connection.resumeData(stream: id)
        }
        connection.scheduleFlush()
    }

    func responseHeaders() -> GRPCMetadata {
        var h: GRPCMetadata = [(":status", "200"), ("content-type", "application/grpc")]
        if compressOutbound { h.append(("grpc-encoding", "gzip")) }
        h.append(("grpc-accept-encoding", "identity,gzip"))
        return h
    }

    /// nghttp2's data source read: says how many queued bytes the next DATA frame carries. The
    /// bytes are not copied into nghttp2 (NGHTTP2_DATA_FLAG_NO_COPY): `sendData` hands slices of
    /// the queued buffers straight to the channel once nghttp2 has written the frame header.
    /// Small frames are copied into nghttp2's buffer instead (one memcpy beats three channel writes).
    func readData(into buf: UnsafeMutablePointer<UInt8>, length: Int, flags: UnsafeMutablePointer<UInt32>) -> Int {
        let n = min(length, outboundBytes)
        let drainsQueue = n == outboundBytes
        if n >= 4096 {
            flags.pointee |= NGHTTP2_DATA_FLAG_NO_COPY.rawValue
        } else if n > 0 {
            var off = 0
            takeOutbound(n) { slice in
                slice.withUnsafeReadableBytes { src in
                    UnsafeMutableRawPointer(buf + off).copyMemory(from: src.baseAddress!, byteCount: src.count)
                }
                off += slice.readableBytes
            }
        }
        if drainsQueue {
            if let t = pendingTrailers {
                flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue | NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
                localEnded = true
                connection.submitTrailers(stream: id, t)
                return n
            }
            if endRequested {
                flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
                localEnded = true
                return n
            }
            if n == 0 {
                dataDeferred = true
                return Int(NGHTTP2_ERR_DEFERRED.rawValue)
            }
        }
        return n
    }

    /// Takes `length` queued bytes (as slices, no copy) for the DATA frame being sent.
    func takeOutbound(_ length: Int, into out: (ByteBuffer) -> Void) {
        var remaining = length
        while remaining > 0, var first = outbound.first {
            if first.readableBytes <= remaining {
                remaining -= first.readableBytes
                outbound.removeFirst()
                out(first)
            } else {
                out(first.readSlice(length: remaining)!)
                remaining = 0
                outbound[outbound.startIndex] = first
            }
        }
        outboundBytes -= length - remaining
        if outboundBytes <= connection.config.outboundHighWater && !writeWaiters.isEmpty {
            let ws = writeWaiters
            writeWaiters.removeAll()
            for w in ws { w.succeed() }
        }
    }

    // MARK: server side

    /// Ends a server call with `status`: trailers after the queued messages, or trailers-only.
    func finishServer(status: GRPCStatus) {
        deadline?.cancel()
        deadline = nil
        guard !closed, !localEnded, pendingTrailers == nil else { return }
        var t: GRPCMetadata = [("grpc-status", String(status.code.rawValue))]
        if !status.message.isEmpty { t.append(("grpc-message", PercentEncoding.encode(status.message))) }
        if !dataProviderAttached {
            localEnded = true
            connection.submitResponse(self, headers: responseHeaders() + t, withData: false)
        } else {
            pendingTrailers = t
            resumeData()
        }
        connection.scheduleFlush()
    }

    // MARK: client side

    /// Client: ends the request direction after the queued messages.
    func endRequest() {
        guard !closed, !endRequested, !localEnded else { return }
        endRequested = true
        resumeData()
    }

    /// Resets the stream (CANCEL) and ends the call locally with `status`.
    func cancel(status: GRPCStatus) {
        guard !closed else { return }
        if finalStatus == nil { finalStatus = status }
        task?.cancel()
        connection.resetStream(id, errorCode: NGHTTP2_CANCEL.rawValue)
        connection.scheduleFlush()
    }

    /// nghttp2 closed the stream (both directions ended, or reset).
    func streamClosed(errorCode: UInt32) {
        guard !closed else { return }
        closed = true
        deadline?.cancel()
        deadline = nil
        if unconsumed > 0 { consumePending() }
        let status: GRPCStatus
        if let f = finalStatus {
            status = f
        } else if isServer {
            status = errorCode == 0 ? .ok : GRPCStatus(.cancelled, "stream reset by client (error \(errorCode))")
        } else {
            status = clientStatus(errorCode: errorCode)
        }
        finalStatus = status
        unaryStart = nil
        if let src = source {
            if status.code == .ok && (remoteEnded || !isServer) { src.finish() } else { src.finish(status) }
            source = nil
        }
        let ws = writeWaiters
        writeWaiters.removeAll()
        for w in ws { w.fail(status.code == .ok ? GRPCStatus(.cancelled, "stream closed") : status) }
        outbound.removeAll()
        outboundBytes = 0
        if isServer && (errorCode != 0 || !localEnded) { task?.cancel() }
        task = nil
        let cb = onClose
        onClose = nil
        cb?(status)
    }

    /// The call status a client derives from trailers / reset code.
    func clientStatus(errorCode: UInt32) -> GRPCStatus {
        let source = trailers.isEmpty ? (headersComplete && !headers.isEmpty ? headers : []) : trailers
        if let st = source.first(where: { $0.name == "grpc-status" })?.value {
            guard let code = Int(st) else { return GRPCStatus(.internal, "malformed grpc-status \(st)") }
            let msg = source.first(where: { $0.name == "grpc-message" }).map { PercentEncoding.decode($0.value) } ?? ""
            return GRPCStatus(GRPCStatusCode(rawValue: code), msg)
        }
        if let httpStatus = headers.first(where: { $0.name == ":status" })?.value, httpStatus != "200" {
            return GRPCStatus(Self.codeForHTTPStatus(httpStatus), "unexpected HTTP status \(httpStatus)")
        }
        switch errorCode {
        case 0: return GRPCStatus(.internal, "server closed the stream without sending trailers")
        case NGHTTP2_REFUSED_STREAM.rawValue: return GRPCStatus(.unavailable, "stream refused (REFUSED_STREAM)")
        case NGHTTP2_CANCEL.rawValue: return GRPCStatus(.cancelled, "stream reset by server (CANCEL)")
        case NGHTTP2_ENHANCE_YOUR_CALM.rawValue: return GRPCStatus(.resourceExhausted, "stream reset (ENHANCE_YOUR_CALM)")
        case NGHTTP2_INADEQUATE_SECURITY.rawValue: return GRPCStatus(.permissionDenied, "stream reset (INADEQUATE_SECURITY)")
        default: return GRPCStatus(.internal, "stream reset by server (HTTP/2 error \(errorCode))")
        }
    }

    static func codeForHTTPStatus(_ s: String) -> GRPCStatusCode {
        switch s {
        case "400": return .internal
        case "401": return .unauthenticated
        case "403": return .permissionDenied
        case "404": return .unimplemented
        case "429", "502", "503", "504": return .unavailable
        default: return .unknown
        }
    }
}

/// Drives one nghttp2 session in memory mode on a NIO channel: bytes read from the socket go to
/// `nghttp2_session_mem_recv`, bytes from `nghttp2_session_mem_send` are written to the socket.
/// The session and all its streams are confined to the channel's event loop; nghttp2 calls back
/// synchronously (from inside mem_recv / mem_send / submit) with this object as `user_data`.
/// The same handler serves both roles; `H2StreamOwner` supplies the role's behaviour.
final class H2Connection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let isServer: Bool
    let config: HTTP2Configuration
    let counters: HTTP2Counters
    let loop: any EventLoop
    weak var owner: H2StreamOwner?
    var session: OpaquePointer?
    var context: ChannelHandlerContext?
    var streams: [Int32: H2Stream] = [:]
    var allocator = ByteBufferAllocator()
    var flushScheduled = false
    var inFlush = false
    /// Frame bytes from mem_send not yet handed to the channel (kept in order with NO_COPY data).
    var pending: ByteBuffer?
    /// The last frame buffer handed to the channel, reused by `frameBuffer` (see there); dropped
    /// when the connection has no open stream.
    var spareFrameBuffer: ByteBuffer?
    var wroteSinceFlush = false
    var goingAway = false
    var receivedGoAway = false
    var closed = false
    var keepaliveTask: RepeatedTask?
    var pingOutstanding: Scheduled<Void>?
    var onClose: [() -> Void] = []
    var onGoAway: (() -> Void)?
    var shutdownPingPending = false
    var finalGoAwayTimer: Scheduled<Void>?
    /// The header fields of the previous header block, by position: a client sends the same
    /// fields in the same order call after call, so most names and values are reused as they are.
    var headerText = HeaderTextCache()
    /// Runs the tasks of calls whose handlers prefer this connection's loop (made on first use).
    var taskExecutor: EventLoopTaskExecutor {
        if let e = _taskExecutor { return e }
        let e = EventLoopTaskExecutor(loop)
        _taskExecutor = e
        return e
    }
    private var _taskExecutor: EventLoopTaskExecutor?

    init(isServer: Bool, config: HTTP2Configuration, counters: HTTP2Counters, loop: any EventLoop) {
        self.isServer = isServer
        self.config = config
        self.counters = counters
        self.loop = loop
    }

    // MARK: lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        allocator = context.channel.allocator
        counters.openConnections.add(1, ordering: .relaxed)
        counters.totalConnections.add(1, ordering: .relaxed)
        var cbs: OpaquePointer?
        nghttp2_session_callbacks_new(&cbs)
        defer { nghttp2_session_callbacks_del(cbs) }
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, h2OnBeginHeaders)
        nghttp2_session_callbacks_set_on_header_callback(cbs, h2OnHeader)
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2OnFrameRecv)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2OnDataChunk)
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2OnStreamClose)
        nghttp2_session_callbacks_set_send_data_callback(cbs, h2SendData)
        var opt: OpaquePointer?
        nghttp2_option_new(&opt)
        defer { nghttp2_option_del(opt) }
        nghttp2_option_set_no_auto_window_update(opt, 1)
        nghttp2_option_set_peer_max_concurrent_streams(opt, 100)
        if isServer {
            // nghttp2's HTTP messaging checks reject `:authority: http://host:port` (a '/'), which
            // grpc-go clients such as etcdctl 3.4 send; RequestHeaderValidator does those checks.
            nghttp2_option_set_no_http_messaging(opt, 1)
        }
        let me = Unmanaged.passUnretained(self).toOpaque()
        let rc = isServer ? nghttp2_session_server_new2(&session, cbs, me, opt)
                          : nghttp2_session_client_new2(&session, cbs, me, opt)
        precondition(rc == 0 && session != nil, "nghttp2_session_new failed: \(rc)")  // only ENOMEM
        var iv = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue),
                                   value: config.maxConcurrentStreams),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                                   value: UInt32(config.initialStreamWindow)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_FRAME_SIZE.rawValue),
                                   value: config.maxFrameSize),
        ]
        nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &iv, iv.count)
        nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, config.connectionWindow)
        if let interval = config.keepaliveInterval {
            let me = NIOLoopBound(self, eventLoop: loop)  // the task is cancelled in teardown()
            keepaliveTask = loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
                me.value.sendKeepalive()
            }
        }
        if context.channel.isActive { flushNow() }
    }

    func channelActive(context: ChannelHandlerContext) {
        flushNow()
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        teardown()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        teardown()
        context.fireChannelInactive()
    }

    private func teardown() {
        guard !closed else { return }
        closed = true
        // Cancel and drop the timers: the repeated keepalive task's closure holds this handler,
        // so keeping the RepeatedTask would be a reference cycle.
        keepaliveTask?.cancel()
        keepaliveTask = nil
        pingOutstanding?.cancel()
        pingOutstanding = nil
        finalGoAwayTimer?.cancel()
        finalGoAwayTimer = nil
        counters.openConnections.add(-1, ordering: .relaxed)
        let all = streams
        streams.removeAll()
        for (_, s) in all.sorted(by: { $0.key < $1.key }) {
            if s.finalStatus == nil && !isServer {
                s.finalStatus = GRPCStatus(.unavailable, "connection closed")
            }
            counters.openStreams.add(-1, ordering: .relaxed)
            s.streamClosed(errorCode: NGHTTP2_CANCEL.rawValue)
        }
        if let s = session {
            session = nil
            nghttp2_session_del(s)
        }
        onGoAway = nil  // may capture the owner of this handler (a cycle otherwise)
        let cbs = onClose
        onClose.removeAll()
        for cb in cbs { cb() }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: I/O

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let session else { return }
        let buffer = unwrapInboundIn(data)
        let rc = buffer.withUnsafeReadableBytes { raw -> Int in
            guard let base = raw.baseAddress, raw.count > 0 else { return 0 }
            return nghttp2_session_mem_recv(session, base.assumingMemoryBound(to: UInt8.self), raw.count)
        }
        if rc < 0 {
            // Protocol error (bad preface, flood, ...): nghttp2 queued a GOAWAY; send it and close.
            flushNow()
            context.close(promise: nil)
            return
        }
        scheduleFlush()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushNow()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { flushNow() }
        context.fireChannelWritabilityChanged()
    }

    func scheduleFlush() {
        guard !flushScheduled, !inFlush else { return }
        flushScheduled = true
        loop.assumeIsolated().execute { [self] in
            flushScheduled = false
            flushNow()
        }
    }

    /// Moves everything nghttp2 wants to send into the channel, while the channel is writable.
    func flushNow() {
        guard !inFlush, let session, let context else { return }
        inFlush = true
        defer { inFlush = false }
        wroteSinceFlush = false
        while context.channel.isWritable || !context.channel.isActive {
            var ptr: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &ptr)
            if n < 0 {
                context.close(promise: nil)
                return
            }
            if n == 0 { break }
            if pending == nil { pending = frameBuffer(context, capacity: n) }
            pending!.writeBytes(UnsafeRawBufferPointer(start: ptr, count: n))
            if pending!.readableBytes >= 64 * 1024 { writePending(context) }
            if !context.channel.isActive { break }
        }
        writePending(context)
        if wroteSinceFlush { context.flush() }
        // An idle connection keeps no spare buffer: memory only for connections with calls open.
        if streams.isEmpty { spareFrameBuffer = nil }
        if nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0 {
            context.close(promise: nil)
        } else if goingAway && !shutdownPingPending && streams.isEmpty && nghttp2_session_want_write(session) == 0 {
            context.close(promise: nil)
        }
    }

    private func writePending(_ context: ChannelHandlerContext) {
        if let p = pending, p.readableBytes > 0 {
            context.write(wrapOutboundOut(p), promise: nil)
            wroteSinceFlush = true
            spareFrameBuffer = p
        }
        pending = nil
    }

    /// A buffer for frame bytes: the last one written, once the channel has written it out and let
    /// go of it (then `clear()` keeps its storage: no 16 KiB malloc per flush), else a new one.
    private func frameBuffer(_ context: ChannelHandlerContext, capacity: Int) -> ByteBuffer {
        if var b = spareFrameBuffer {
            spareFrameBuffer = nil
            b.clear(minimumCapacity: max(capacity, 16 * 1024))
            return b
        }
        return context.channel.allocator.buffer(capacity: max(capacity, 16 * 1024))
    }

    /// NO_COPY DATA frame: everything mem_send returned so far, then the 9-byte header, then the
    /// payload as slices of the stream's queued buffers.
    fileprivate func onSendData(stream id: Int32, header: UnsafeRawBufferPointer, length: Int) -> Int32 {
        guard let context, let s = streams[id] else { return Int32(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
        if pending == nil { pending = frameBuffer(context, capacity: header.count) }
        pending!.writeBytes(header)
        writePending(context)
        s.takeOutbound(length) { slice in
            context.write(wrapOutboundOut(slice), promise: nil)
        }
        wroteSinceFlush = true
        return 0
    }

    // MARK: nghttp2 wrappers

    func consume(stream: Int32, _ n: Int) {
        guard let session else { return }
        if nghttp2_session_consume(session, stream, n) != 0 {
            nghttp2_session_consume_connection(session, n)
        }
    }

    func consumeConnection(_ n: Int) {
        guard let session else { return }
        nghttp2_session_consume_connection(session, n)
    }

    func resumeData(stream: Int32) {
        guard let session else { return }
        nghttp2_session_resume_data(session, stream)
    }

    func resetStream(_ id: Int32, errorCode: UInt32) {
        guard let session else { return }
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, errorCode)
    }

    func submitResponse(_ stream: H2Stream, headers: GRPCMetadata, withData: Bool) {
        guard let session else { return }
        withNVs(headers) { nva, count in
            if withData {
                stream.dataProviderAttached = true
                var dp = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: h2ReadData)
                nghttp2_submit_response(session, stream.id, nva, count, &dp)
            } else {
                nghttp2_submit_response(session, stream.id, nva, count, nil)
            }
        }
        scheduleFlush()
    }

    func submitTrailers(stream: Int32, _ trailers: GRPCMetadata) {
        guard let session else { return }
        withNVs(trailers) { nva, count in
            _ = nghttp2_submit_trailer(session, stream, nva, count)
        }
    }

    /// Client: opens a stream with the request headers; the body streams through `H2Stream`.
    func submitRequest(headers: GRPCMetadata) -> H2Stream? {
        guard let session, !goingAway, !receivedGoAway, !closed else { return nil }
        var dp = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: h2ReadData)
        let id = withNVs(headers) { nva, count in
            nghttp2_submit_request(session, nil, nva, count, &dp, nil)
        }
        guard id > 0 else { return nil }
        let s = H2Stream(id: id, connection: self, isServer: false)
        s.dataProviderAttached = true
        streams[id] = s
        counters.openStreams.add(1, ordering: .relaxed)
        counters.totalStreams.add(1, ordering: .relaxed)
        scheduleFlush()
        return s
    }

    /// Graceful shutdown. Server: a first GOAWAY with the maximum stream id (the shutdown notice)
    /// and a PING; when the PING is acknowledged (or after one second) the final GOAWAY names the
    /// last stream we processed, so streams the client opened in the meantime are not lost. Either
    /// way in-flight streams finish, new ones are refused, and the connection closes when the
    /// last stream is done.
    func initiateGracefulShutdown() {
        guard let session, !goingAway else { return }
        goingAway = true
        if isServer {
            nghttp2_submit_shutdown_notice(session)
            nghttp2_submit_ping(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nil)
            shutdownPingPending = true
            finalGoAwayTimer = loop.assumeIsolated().scheduleTask(in: .seconds(1)) { [weak self] in
                self?.sendFinalGoAway()
            }
        } else {
            nghttp2_session_terminate_session2(session, 0, NGHTTP2_NO_ERROR.rawValue)
        }
        flushNow()
        if streams.isEmpty && !isServer { context?.close(promise: nil) }
    }

    func sendFinalGoAway() {
        guard let session, shutdownPingPending else { return }
        shutdownPingPending = false
        finalGoAwayTimer?.cancel()
        finalGoAwayTimer = nil
        nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue),
                              nghttp2_session_get_last_proc_stream_id(session), NGHTTP2_NO_ERROR.rawValue, nil, 0)
        flushNow()
        if streams.isEmpty { context?.close(promise: nil) }
    }

    func sendKeepalive() {
        guard let session, pingOutstanding == nil else { return }
        nghttp2_submit_ping(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nil)
        pingOutstanding = loop.assumeIsolated().scheduleTask(in: config.keepaliveTimeout) { [weak self] in
            // No ACK in time: the peer is gone.
            self?.context?.close(promise: nil)
        }
        flushNow()
    }

    private func withNVs<R>(_ headers: GRPCMetadata, _ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
        // One contiguous buffer holding every name and value, then nv entries pointing into it;
        // both temporary (on the stack when small): no heap allocation per header block.
        var total = 0
        for (n, v) in headers { total += n.utf8.count + v.utf8.count }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(total, 1)) { bytes in
            withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: max(headers.count, 1)) { nvs in
                let base = bytes.baseAddress!
                var off = 0
                for (i, (n, v)) in headers.enumerated() {
                    let ns = off
                    off = UnsafeMutableBufferPointer(rebasing: bytes[off...]).initialize(from: n.utf8).1 + off
                    let vs = off
                    off = UnsafeMutableBufferPointer(rebasing: bytes[off...]).initialize(from: v.utf8).1 + off
                    (nvs.baseAddress! + i).initialize(to: nghttp2_nv(name: base + ns, value: base + vs, namelen: vs - ns,
                                                                     valuelen: off - vs,
                                                                     flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)))
                }
                return body(UnsafePointer(nvs.baseAddress!), headers.count)
            }
        }
    }

    // MARK: callbacks (invoked by nghttp2 on this loop)

    fileprivate func onBeginHeaders(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        let id = frame.pointee.hd.stream_id
        if isServer && frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST {
            let s = H2Stream(id: id, connection: self, isServer: true)
            streams[id] = s
            counters.openStreams.add(1, ordering: .relaxed)
            counters.totalStreams.add(1, ordering: .relaxed)
        }
        if let s = streams[id] {
            s.pendingHeaderBlock = []
            s.pendingHeaderBlock.reserveCapacity(16)
            if isServer { s.headerCheck = RequestHeaderValidator(trailer: s.headersComplete) }
        }
        return 0
    }

    /// Server: resets a malformed request (PROTOCOL_ERROR, as nghttp2's own checks did); what
    /// else arrives on the stream is dropped.
    private func rejectMalformed(_ s: H2Stream) {
        guard !s.malformed else { return }
        s.malformed = true
        s.inboundDiscard = true
        s.pendingHeaderBlock = []
        s.headerCheck = nil
        resetStream(s.id, errorCode: NGHTTP2_PROTOCOL_ERROR.rawValue)
        scheduleFlush()
    }

    fileprivate func onHeader(_ frame: UnsafePointer<nghttp2_frame>, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> Int32 {
        guard let s = streams[frame.pointee.hd.stream_id], !s.malformed else { return 0 }
        if s.pendingHeaderBlock.count >= 256 {
            return Int32(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)  // resets just this stream
        }
        if isServer {
            switch s.headerCheck?.check(name: name, value: value) ?? .accept {
            case .accept: break
            case .ignore: return 0
            case .malformed:
                rejectMalformed(s)
                return 0
            }
        }
        let position = s.pendingHeaderBlock.count
        s.pendingHeaderBlock.append((headerText.name(at: position, name), headerText.value(at: position, value)))
        return 0
    }

    fileprivate func onFrameRecv(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        let hd = frame.pointee.hd
        let endStream = hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
        switch Int(hd.type) {
        case Int(NGHTTP2_HEADERS.rawValue):
            guard let s = streams[hd.stream_id], !s.malformed else { return 0 }
            if isServer, let check = s.headerCheck {
                s.headerCheck = nil
                // A request's trailers must end the stream; the request headers need their
                // pseudo-headers; the body must match a content-length.
                if check.finish() != .accept || (check.trailer && !endStream)
                    || (endStream && !check.trailer && (check.contentLength ?? 0) != 0)
                    || (endStream && check.trailer && s.contentLength.map({ $0 != s.bodyBytes }) == true) {
                    rejectMalformed(s)
                    return 0
                }
                if !check.trailer { s.contentLength = check.contentLength }
            }
            let block = s.pendingHeaderBlock
            s.pendingHeaderBlock = []
            if !s.headersComplete {
                s.headersComplete = true
                s.headers = block
                if isServer {
                    owner?.requestHeadersReceived(s)
                } else {
                    clientResponseHeaders(s, endStream: endStream)
                }
            } else {
                s.trailers = block
            }
            if endStream { s.remoteEndedStream() }
        case Int(NGHTTP2_DATA.rawValue):
            if endStream, let s = streams[hd.stream_id], !s.malformed {
                if isServer, let cl = s.contentLength, cl != s.bodyBytes {
                    rejectMalformed(s)
                    return 0
                }
                s.remoteEndedStream()
            }
        case Int(NGHTTP2_GOAWAY.rawValue):
            receivedGoAway = true
            onGoAway?()
        case Int(NGHTTP2_PING.rawValue):
            if hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) != 0 {
                if shutdownPingPending { scheduleFinalGoAway() }
                pingOutstanding?.cancel()
                pingOutstanding = nil
                counters.pingsAcked.add(1, ordering: .relaxed)
            }
        default:
            break
        }
        return 0
    }

    /// The final GOAWAY is sent outside nghttp2's callback (it flushes and may close).
    private func scheduleFinalGoAway() {
        loop.assumeIsolated().execute { [self] in sendFinalGoAway() }
    }

    private func clientResponseHeaders(_ s: H2Stream, endStream: Bool) {
        if endStream {
            // Trailers-only response.
            s.trailers = s.headers
            return
        }
        let status = s.headers.first(where: { $0.name == ":status" })?.value
        guard status == "200" else {
            s.cancel(status: GRPCStatus(H2Stream.codeForHTTPStatus(status ?? ""), "unexpected HTTP status \(status ?? "none")"))
            return
        }
        guard let ct = s.headers.first(where: { $0.name == "content-type" })?.value, ct.hasPrefix("application/grpc") else {
            s.cancel(status: GRPCStatus(.internal, "unexpected content-type"))
            return
        }
        if let enc = s.headers.first(where: { $0.name == "grpc-encoding" })?.value {
            s.deframer.encoding = enc
        }
    }

    fileprivate func onDataChunk(stream id: Int32, _ data: UnsafeRawBufferPointer) -> Int32 {
        if let s = streams[id] {
            if isServer, !s.malformed, let cl = s.contentLength {
                s.bodyBytes += Int64(data.count)
                if s.bodyBytes > cl { rejectMalformed(s) }
            }
            s.receivedData(data)
        } else {
            consumeConnection(data.count)
        }
        return 0
    }

    fileprivate func onStreamClose(_ id: Int32, errorCode: UInt32) -> Int32 {
        guard let s = streams.removeValue(forKey: id) else { return 0 }
        counters.openStreams.add(-1, ordering: .relaxed)
        s.streamClosed(errorCode: errorCode)
        if goingAway && streams.isEmpty { scheduleFlush() }
        return 0
    }

    fileprivate func onReadData(stream id: Int32, buf: UnsafeMutablePointer<UInt8>, length: Int, flags: UnsafeMutablePointer<UInt32>) -> Int {
        guard let s = streams[id] else { return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue) }
        return s.readData(into: buf, length: length, flags: flags)
    }
}

// MARK: C trampolines: user_data is the H2Connection (unretained; the handler owns the session).

@inline(__always)
private func conn(_ p: UnsafeMutableRawPointer?) -> H2Connection {
    Unmanaged<H2Connection>.fromOpaque(p!).takeUnretainedValue()
}

private let h2OnBeginHeaders: nghttp2_on_begin_headers_callback = { _, frame, user in
    conn(user).onBeginHeaders(frame!)
}

private let h2OnHeader: nghttp2_on_header_callback = { _, frame, name, namelen, value, valuelen, _, user in
    conn(user).onHeader(frame!, name: UnsafeRawBufferPointer(start: name, count: namelen),
                        value: UnsafeRawBufferPointer(start: value, count: valuelen))
}

private let h2OnFrameRecv: nghttp2_on_frame_recv_callback = { _, frame, user in
    conn(user).onFrameRecv(frame!)
}

private let h2OnDataChunk: nghttp2_on_data_chunk_recv_callback = { _, _, streamID, data, len, user in
    conn(user).onDataChunk(stream: streamID, UnsafeRawBufferPointer(start: data, count: len))
}

private let h2OnStreamClose: nghttp2_on_stream_close_callback = { _, streamID, errorCode, user in
    conn(user).onStreamClose(streamID, errorCode: errorCode)
}

private let h2ReadData: nghttp2_data_source_read_callback = { _, streamID, buf, length, flags, _, user in
    conn(user).onReadData(stream: streamID, buf: buf!, length: length, flags: flags!)
}

private let h2SendData: nghttp2_send_data_callback = { _, frame, framehd, length, _, user in
    conn(user).onSendData(stream: frame!.pointee.hd.stream_id, header: UnsafeRawBufferPointer(start: framehd, count: 9),
                          length: length)
}

/// Strings of recently received header fields, by position in the header block (confined to
/// one connection's loop). A field whose bytes equal the cached ones at its position gets the
/// cached String (a retain) instead of a new one (UTF-8 validation, and a heap copy for any text
/// over 15 bytes: `:path`, `content-type`, `grpc-accept-encoding`, ...). Bounded: the first
/// `positions` fields of a block, texts up to `maxBytes`.
struct HeaderTextCache {
    static let positions = 24
    static let maxBytes = 128

    private struct Entry {
        var bytes: [UInt8]
        var text: String
    }
    private var names: [Entry?] = []
    private var values: [Entry?] = []

    mutating func name(at position: Int, _ bytes: UnsafeRawBufferPointer) -> String {
        Self.lookup(&names, position, bytes)
    }

    mutating func value(at position: Int, _ bytes: UnsafeRawBufferPointer) -> String {
        Self.lookup(&values, position, bytes)
    }

    private static func lookup(_ table: inout [Entry?], _ position: Int, _ bytes: UnsafeRawBufferPointer) -> String {
        guard position < positions, bytes.count <= maxBytes else { return String(decoding: bytes, as: UTF8.self) }
        if position < table.count, let e = table[position], e.bytes.count == bytes.count,
           bytes.isEmpty || e.bytes.withUnsafeBytes({ memcmp($0.baseAddress!, bytes.baseAddress!, bytes.count) == 0 }) {
            return e.text
        }
        let text = String(decoding: bytes, as: UTF8.self)
        if table.count <= position { table.append(contentsOf: repeatElement(nil, count: position + 1 - table.count)) }
        table[position] = Entry(bytes: Array(bytes), text: text)
        return text
    }
}
