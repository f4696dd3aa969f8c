import GRPC
import NIOCore
import ProtoWire
import Foundation
import Testing

/// Raw TCP peers that misbehave; after each, the server has no leaked connection or stream and
/// still serves a well-behaved client.
@Suite struct RobustnessTests {
    typealias Frame = (type: UInt8, flags: UInt8, stream: Int32, payload: [UInt8])

    /// Runs `peer` with blocking sockets on a thread of its own (never on the cooperative pool,
    /// which the server's handlers need), records what it found wrong, then checks that the
    /// server is clean and alive.
    func misbehave(_ peer: @escaping @Sendable (Int, Checks) throws -> Void) async throws {
        try await withEchoServer { server, _ in
            let port = server.port
            let problems: [String] = try await withCheckedThrowingContinuation { cont in
                let t = Thread {
                    let checks = Checks()
                    do {
                        try peer(port, checks)
                        cont.resume(returning: checks.problems)
                    } catch {
                        cont.resume(throwing: error)
                    }
                }
                t.start()
            }
            #expect(problems.isEmpty, "\(problems)")
            #expect(await eventually { server.counters.connections == 0 }, "leaked connection")
            #expect(await eventually { server.counters.streams == 0 }, "leaked stream")
            try await withClient(server) { client in
                let r = try await client.unary(Echotest.Echo.get, request("still up"))
                #expect(r.text == "still up")
            }
        }
    }

    static func goAwayCode(_ frames: [Frame]) -> UInt32? {
        guard let g = frames.first(where: { $0.type == 7 }), g.payload.count >= 8 else { return nil }
        return UInt32(g.payload[4]) << 24 | UInt32(g.payload[5]) << 16 | UInt32(g.payload[6]) << 8 | UInt32(g.payload[7])
    }

    @Test func garbageInsteadOfPreface() async throws {
        try await misbehave { port, c in
            let s = try RawSocket(port: port)
            var rng = SystemRandomNumberGenerator()
            s.send((0..<4096).map { _ in UInt8.random(in: 0...255, using: &rng) })
            let frames = s.readFrames { $0.type == 7 }
            // nghttp2 answers a bad client magic with GOAWAY(PROTOCOL_ERROR) or just closes.
            if let code = Self.goAwayCode(frames) { c.expect(code == 1) }
            c.expect(s.readFrame() == nil)  // then the connection is closed
        }
    }

    @Test func httpOneRequestIsRejected() async throws {
        try await misbehave { port, c in
            let s = try RawSocket(port: port)
            s.send(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            _ = s.readFrames { _ in false }
        }
    }

    @Test func truncatedPrefaceThenClose() async throws {
        try await misbehave { port, c in
            let s = try RawSocket(port: port)
            s.send(Array(H2Raw.preface.prefix(10)))
            s.shutdownWrite()
            _ = s.readFrames { _ in false }
        }
    }

    @Test func oversizedFrameIsFrameSizeError() async throws {
        try await misbehave { port, c in
            let s = try RawSocket(port: port)
            s.send(H2Raw.preface + H2Raw.settings)
            // A DATA frame header claiming 1 MiB, beyond the 16 KiB SETTINGS_MAX_FRAME_SIZE.
            s.send(H2Raw.grpcRequestHeaders(stream: 1))
            s.send(H2Raw.frame(type: 0, stream: 1, payload: [UInt8](repeating: 0, count: 1000), claimedLength: 1 << 20))
            let frames = s.readFrames { $0.type == 7 }
            c.expect(Self.goAwayCode(frames) == 6, "want GOAWAY(FRAME_SIZE_ERROR), got \(frames.map(\.type))")
        }
    }

    @Test func grpcPrefixClaimingFourGiBIsResourceExhausted() async throws {
        try await misbehave { port, c in
            let s = try RawSocket(port: port)
            s.send(H2Raw.preface + H2Raw.settings + H2Raw.settingsAck)
            s.send(H2Raw.grpcRequestHeaders(stream: 1))
            s.send(H2Raw.data(stream: 1, [0, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]))
            let headers = s.readHeaders(stream: 1, untilEndStreamOn: .headersOnly)
            c.expect(headers.first(where: { $0.0 == "grpc-status" })?.1 == "8", "\(headers)")
            c.expect(headers.first(where: { $0.0 == "grpc-message" })?.1.contains("larger than max") == true)
            // The connection still works: a second stream on it gets a real answer.
            var req = Echotest.EchoRequest()
            req.text = "ok"
            let body = req.serializedBytes()
            s.send(H2Raw.grpcRequestHeaders(stream: 3))
            s.send(H2Raw.data(stream: 3, [0, 0, 0, 0, UInt8(body.count)] + body, endStream: true))
            var gotData: [UInt8] = []
            var trailers: [(String, String)] = []
            _ = s.readFrames { f in
                if f.stream == 3 && f.type == 0 { gotData += f.payload }
                if f.stream == 3 && f.type == 1 { trailers += s.inflater.decode(H2Raw.headerBlock(f)) }
                return f.stream == 3 && f.flags & 1 != 0
            }
            c.expect(trailers.first(where: { $0.0 == "grpc-status" })?.1 == "0")
            c.expect(gotData.count > 5)
            if gotData.count > 5 {
                let reply = try Echotest.EchoResponse(serializedBytes: Array(gotData.dropFirst(5)))
                c.expect(reply.text == "ok")
            }
        }
    }

    @Test func invalidCompressedFlagIsInternal() async throws {
        try await misbehave { port, c in
            let s = try RawSocket(port: port)
            s.send(H2Raw.preface + H2Raw.settings)
            s.send(H2Raw.grpcRequestHeaders(stream: 1))
            s.send(H2Raw.data(stream: 1, [7, 0, 0, 0, 1, 0], endStream: true))
            let headers = s.readHeaders(stream: 1)
            c.expect(headers.first(where: { $0.0 == "grpc-status" })?.1 == "13", "\(headers)")
        }
    }

    @Test func halfClosedWithoutMessage() async throws {
        try await misbehave { port, c in
            let s = try RawSocket(port: port)
            s.send(H2Raw.preface + H2Raw.settings)
            // A unary request that ends without any message.
            s.send(H2Raw.grpcRequestHeaders(stream: 1, endStream: true))
            let headers = s.readHeaders(stream: 1)
            c.expect(headers.first(where: { $0.0 == "grpc-status" })?.1 == "13", "\(headers)")
            // Streams left half-open by the client (no END_STREAM), then the client goes away.
            for id in stride(from: Int32(3), through: 41, by: 2) {
                s.send(H2Raw.grpcRequestHeaders(stream: id, path: "/echotest.Echo/Collect"))
            }
        }
    }

    @Test func abruptDisconnectMidMessage() async throws {
        try await misbehave { port, c in
            let s = try RawSocket(port: port)
            s.send(H2Raw.preface + H2Raw.settings)
            s.send(H2Raw.grpcRequestHeaders(stream: 1, path: "/echotest.Echo/Update"))
            // Prefix says 100,000 bytes; 1,000 arrive; then the socket closes.
            s.send(H2Raw.data(stream: 1, [0, 0, 1, 0x86, 0xA0] + [UInt8](repeating: 0x0A, count: 1000)))
        }
    }

    @Test func streamEndsInsideAMessageIsInternal() async throws {
        try await misbehave { port, c in
            let s = try RawSocket(port: port)
            s.send(H2Raw.preface + H2Raw.settings)
            s.send(H2Raw.grpcRequestHeaders(stream: 1, path: "/echotest.Echo/Collect"))
            s.send(H2Raw.data(stream: 1, [0, 0, 0, 0, 10, 1, 2], endStream: true))
            let headers = s.readHeaders(stream: 1)
            c.expect(headers.first(where: { $0.0 == "grpc-status" })?.1 == "13", "\(headers)")
        }
    }

    @Test func dataOnUnopenedStreamIsProtocolError() async throws {
        try await misbehave { port, c in
            let s = try RawSocket(port: port)
            s.send(H2Raw.preface + H2Raw.settings)
            s.send(H2Raw.data(stream: 5, [1, 2, 3]))
            let frames = s.readFrames { $0.type == 7 }
            c.expect(Self.goAwayCode(frames) == 1)
        }
    }

    @Test func manyMisbehavingConnectionsInARow() async throws {
        try await misbehave { port, c in
            for i in 0..<50 {
                let s = try RawSocket(port: port)
                switch i % 4 {
                case 0: s.send([0xde, 0xad, 0xbe, 0xef])
                case 1: s.send(H2Raw.preface + H2Raw.settings + H2Raw.grpcRequestHeaders(stream: 1))
                case 2: s.send(H2Raw.preface + H2Raw.settings + H2Raw.grpcRequestHeaders(stream: 1)
                               + H2Raw.data(stream: 1, [0, 0, 0, 0x10, 0]))
                default: s.send(Array(H2Raw.preface.prefix(5)))
                }
            }
        }
    }

    @Test func nonGRPCContentTypeIs415() async throws {
        try await misbehave { port, c in
            let s = try RawSocket(port: port)
            s.send(H2Raw.preface + H2Raw.settings)
            let block = H2Raw.hpack([(":method", "POST"), (":scheme", "http"), (":path", "/echotest.Echo/Get"),
                                     (":authority", "x"), ("content-type", "application/json")])
            s.send(H2Raw.frame(type: 1, flags: 0x5, stream: 1, payload: block))
            let headers = s.readHeaders(stream: 1)
            c.expect(headers.first(where: { $0.0 == ":status" })?.1 == "415", "\(headers)")
        }
    }
}

/// Problems a peer thread found (reported by the test afterwards).
final class Checks {
    // Created and used on the peer's thread only; just the [String] result leaves it.
    var problems: [String] = []
    func expect(_ ok: Bool, _ what: @autoclosure () -> String = "", line: Int = #line) {
        if !ok { problems.append("line \(line): \(what())") }
    }
}
