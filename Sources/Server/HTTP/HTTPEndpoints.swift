import GRPC
import NIOCore
import NIOHTTP1

/// A plain HTTP/1.1 answer (etcd's /health, /version, /metrics on the client port).
public struct HTTPReply: Sendable, Hashable {
    public var status: HTTPResponseStatus
    public var contentType: String
    public var body: String
    public init(status: HTTPResponseStatus = .ok, contentType: String = "application/json", body: String) {
        self.status = status; self.contentType = contentType; self.body = body
    }
}

/// Answers GET/HEAD requests by path; `nil` is a 404 as etcd's mux answers unknown paths.
public typealias HTTPRouter = @Sendable (_ method: HTTPMethod, _ path: String) async -> HTTPReply?

public enum HTTPEndpoints {
    /// The `GRPCServer` seam: connections that do not open with the HTTP/2 preface get NIO's
    /// HTTP/1.1 server codec and `HTTP1Handler`.
    public static func initializer(router: @escaping HTTPRouter) -> NonHTTP2Initializer {
        { channel in
            let sync = channel.pipeline.syncOperations
            try sync.configureHTTPServerPipeline(withErrorHandling: true)
            try sync.addHandler(HTTP1Handler(router: router))
        }
    }
}

/// Serves one HTTP/1.1 connection: requests are answered in order (keep-alive honoured); the
/// router runs in a task and its reply is written back on the channel's event loop.
final class HTTP1Handler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let router: HTTPRouter
    private var head: HTTPRequestHead?

    init(router: @escaping HTTPRouter) { self.router = router }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
        case .body:
            break  // no endpoint takes a body
        case .end:
            guard let h = head else { return }
            head = nil
            let path = String(h.uri.split(separator: "?", maxSplits: 1).first ?? "")
            let method = h.method
            let keepAlive = h.isKeepAlive
            let version = h.version
            let router = self.router
            let loop = context.eventLoop
            let bound = NIOLoopBound((self, context), eventLoop: loop)
            Task {
                let reply: HTTPReply
                if method != .GET && method != .HEAD {
                    reply = HTTPReply(status: .methodNotAllowed, contentType: "text/plain; charset=utf-8",
                                      body: "Method Not Allowed\n")
                } else {
                    reply = await router(method, path)
                        ?? HTTPReply(status: .notFound, contentType: "text/plain; charset=utf-8", body: "404 page not found\n")
                }
                loop.execute {
                    let (me, ctx) = bound.value
                    me.write(reply, version: version, keepAlive: keepAlive, head: method == .HEAD, context: ctx)
                }
            }
        }
    }

    private func write(_ reply: HTTPReply, version: HTTPVersion, keepAlive: Bool, head: Bool,
                       context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: reply.contentType)
        headers.add(name: "Content-Length", value: String(reply.body.utf8.count))
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: reply.status, headers: headers))),
                      promise: nil)
        if !head {
            var buf = context.channel.allocator.buffer(capacity: reply.body.utf8.count)
            buf.writeString(reply.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buf))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive { done.whenComplete { _ in context.close(promise: nil) } }
    }
}
