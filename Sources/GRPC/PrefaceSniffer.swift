import NIOCore

/// Serving something other than HTTP/2 on the gRPC port (additive seam, used by the Keel server
/// for plain HTTP/1.1 `/health`, `/version`, `/metrics` beside gRPC, as etcd does).
///
/// When `GRPCServer(..., nonHTTP2Initializer:)` is given, each accepted connection first goes
/// through a `PrefaceSniffer`: it buffers the first bytes until they either equal the 24-byte
/// HTTP/2 client connection preface (the connection then gets the HTTP/2 handler, exactly as
/// without the seam) or differ from it in some byte (the initializer is called on the event loop
/// to add its own handlers, e.g. NIO's HTTP/1 codec). Either way the buffered bytes are handed on
/// unchanged and the sniffer removes itself. The server sends nothing before the decision, so an
/// HTTP/1 client never sees HTTP/2 SETTINGS. Without the seam nothing changes.
public typealias NonHTTP2Initializer = @Sendable (any Channel) throws -> Void

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
let http2ClientPreface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

/// What the first bytes of a connection say about its protocol.
public enum PrefaceVerdict: Sendable, Hashable {
    case http2
    case other
    case needMoreBytes

    /// Compares `bytes` (the connection's first bytes so far) with the HTTP/2 preface.
    public static func classify<C: Collection>(_ bytes: C) -> PrefaceVerdict where C.Element == UInt8 {
        var i = 0
        for b in bytes {
            if i == http2ClientPreface.count { break }
            if b != http2ClientPreface[i] { return .other }
            i += 1
        }
        return i == http2ClientPreface.count ? .http2 : .needMoreBytes
    }
}

final class PrefaceSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var buffered: ByteBuffer?
    private let onHTTP2: (ChannelHandlerContext) throws -> Void
    private let onOther: (ChannelHandlerContext) throws -> Void
    private var decided = false

    init(onHTTP2: @escaping (ChannelHandlerContext) throws -> Void,
         onOther: @escaping (ChannelHandlerContext) throws -> Void) {
        self.onHTTP2 = onHTTP2
        self.onOther = onOther
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        guard !decided else { context.fireChannelRead(data); return }
        if buffered == nil { buffered = incoming } else { buffered!.writeBuffer(&incoming) }
        let verdict = PrefaceVerdict.classify(buffered!.readableBytesView)
        if verdict == .needMoreBytes { return }
        decided = true
        do {
            if verdict == .http2 { try onHTTP2(context) } else { try onOther(context) }
        } catch {
            context.close(promise: nil)
            return
        }
        let bytes = buffered!
        buffered = nil
        context.fireChannelRead(wrapInboundOut(bytes))
        context.fireChannelReadComplete()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        buffered = nil
        context.fireChannelInactive()
    }
}
