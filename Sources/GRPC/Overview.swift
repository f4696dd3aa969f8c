// GRPC: gRPC over HTTP/2 for Keel, on nghttp2 (memory mode) and SwiftNIO.
//
// Layout
//   H2Connection.swift  one ChannelHandler per TCP connection that drives an nghttp2 session with
//                       nghttp2_session_mem_recv / mem_send; server and client role. The session,
//                       its streams (H2Stream) and all callbacks are confined to the channel's event
//                       loop; nghttp2 calls back synchronously with the handler as user_data
//                       (Unmanaged, unretained: the handler owns the session and deletes it in
//                       teardown, after which no nghttp2 call is made).
//   Framing.swift       5-byte gRPC prefix deframer (bounded by the max message size), framer,
//                       gzip via zlib (inflate bounded too: a zip bomb is RESOURCE_EXHAUSTED).
//   Server.swift        GRPCServer, GRPCService, ServerMethod (typed handlers built from ProtoWire
//                       MethodDescriptors), RequestStream, ResponseWriter, ServerContext.
//   Client.swift        GRPCClient (connection pool actor), CallOptions, RequestWriter, ResponseStream.
//   Status.swift        GRPCStatus / codes, grpc-message percent-encoding, grpc-timeout.
//
// Flow control and back-pressure
//   Inbound: automatic WINDOW_UPDATEs are off (nghttp2_option_set_no_auto_window_update). Received
//   bytes are returned to the window (nghttp2_session_consume) only while the handler's message
//   queue (NIOThrowingAsyncSequenceProducer, high/low watermark) wants more; a stalled reader
//   stops the sender after one stream window. Per-stream memory: window + watermark messages.
//   Outbound: messages queue per stream; `send` suspends above `outboundHighWater` bytes until
//   nghttp2 takes them; the data provider returns NGHTTP2_ERR_DEFERRED when empty and is resumed
//   on the next write. mem_send runs only while the channel is writable.
//   Large DATA frames use NGHTTP2_DATA_FLAG_NO_COPY: payload slices go to the socket uncopied.
//
// Seams: `GRPCServer(channelInitializer:)` runs before the HTTP/2 handler is added (TLS + ALPN).
//
// Example
//   struct EchoService: GRPCService {
//       var methods: [ServerMethod] {
//           [.unary(Echotest.Echo.get) { req, ctx in reply(req) },
//            .serverStreaming(Echotest.Echo.expand) { req, writer, ctx in try await writer.send(...) },
//            .clientStreaming(Echotest.Echo.collect) { requests, ctx in for try await r in requests {...} },
//            .bidirectionalStreaming(Echotest.Echo.update) { requests, writer, ctx in ... }]
//       }
//   }
//   let server = try await GRPCServer(configuration: .init(), services: [EchoService()])
//   let client = GRPCClient(host: "127.0.0.1", port: server.port)
//   let r = try await client.unary(Echotest.Echo.get, request, options: CallOptions(timeout: .seconds(1)))
//   await client.close(); await server.shutdown()
