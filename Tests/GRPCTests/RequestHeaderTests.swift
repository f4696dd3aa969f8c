import GRPC
import ProtoWire
import Foundation
import Testing

/// Request header checks: the server runs nghttp2 without its HTTP messaging checks (they reject
/// `:authority: http://host:port`, which grpc-go clients such as etcdctl 3.4 send) and does them
/// itself; a malformed request still gets RST_STREAM(PROTOCOL_ERROR) and the connection goes on.
extension RobustnessTests {
    /// Sends an Echo.Get on `stream` with `headers` and returns (grpc-status, reply text).
    static func echo(_ s: RawSocket, stream: Int32, headers: [(String, String)], text: String) throws -> (String?, String?) {
        var req = Echotest.EchoRequest()
        req.text = text
        let body = req.serializedBytes()
        s.send(H2Raw.frame(type: 1, flags: 0x4, stream: stream, payload: H2Raw.hpack(headers)))
        s.send(H2Raw.data(stream: stream, [0, 0, 0, 0, UInt8(body.count)] + body, endStream: true))
        var gotData: [UInt8] = []
        var fields: [(String, String)] = []
        _ = s.readFrames { f in
            if f.stream == stream && f.type == 0 { gotData += f.payload }
            if f.stream == stream && f.type == 1 { fields += s.inflater.decode(H2Raw.headerBlock(f)) }
            return f.stream == stream && (f.flags & 1 != 0 || f.type == 3)
        }
        let reply = gotData.count > 5 ? try Echotest.EchoResponse(serializedBytes: Array(gotData.dropFirst(5))).text : nil
        return (fields.first(where: { $0.0 == "grpc-status" })?.1, reply)
    }

    static func grpcHeaders(path: String = "/echotest.Echo/Get", authority: String = "x") -> [(String, String)] {
        [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
         ("content-type", "application/grpc"), ("te", "trailers")]
    }

    @Test func authorityWithSchemeIsServed() async throws {
        try await misbehave { port, c in
            let s = try RawSocket(port: port)
            s.send(H2Raw.preface + H2Raw.settings + H2Raw.settingsAck)
            // What grpc-go (etcdctl 3.4 --endpoints http://127.0.0.1:port) sends.
            let (status, reply) = try Self.echo(s, stream: 1, headers: Self.grpcHeaders(authority: "http://127.0.0.1:\(port)"),
                                                text: "with scheme")
            c.expect(status == "0", "grpc-status \(status ?? "none")")
            c.expect(reply == "with scheme", "reply \(reply ?? "none")")
            // A regular field with an invalid value is dropped (as nghttp2 did), not fatal.
            var h = Self.grpcHeaders(authority: "127.0.0.1:\(port)")
            h.append(("x-bad-value", "a\u{1}b"))
            let (status2, reply2) = try Self.echo(s, stream: 3, headers: h, text: "plain")
            c.expect(status2 == "0" && reply2 == "plain", "\(status2 ?? "none") \(reply2 ?? "none")")
        }
    }

    struct MalformedCase: Sendable, CustomTestStringConvertible {
        let what: String
        let headers: [(String, String)]
        var testDescription: String { what }
    }

    static let malformedCases: [MalformedCase] = {
        let h = grpcHeaders()
        return [
            MalformedCase(what: "upper-case name", headers: h + [("X-Upper", "1")]),
            MalformedCase(what: "missing :path", headers: h.filter { $0.0 != ":path" }),
            MalformedCase(what: "missing :method", headers: h.filter { $0.0 != ":method" }),
            MalformedCase(what: "missing :scheme", headers: h.filter { $0.0 != ":scheme" }),
            MalformedCase(what: "unknown pseudo-header", headers: [(":foo", "bar")] + h),
            MalformedCase(what: "pseudo-header after regular",
                          headers: h.filter { $0.0 != ":path" } + [(":path", "/echotest.Echo/Get")]),
            MalformedCase(what: "duplicate :path", headers: [(":path", "/echotest.Echo/Get")] + h),
            MalformedCase(what: "connection header", headers: h + [("connection", "keep-alive")]),
            MalformedCase(what: "transfer-encoding", headers: h + [("transfer-encoding", "chunked")]),
            MalformedCase(what: "te other than trailers", headers: h.filter { $0.0 != "te" } + [("te", "gzip")]),
            MalformedCase(what: "path without slash", headers: grpcHeaders(path: "echotest.Echo/Get")),
            MalformedCase(what: "authority with a control character", headers: grpcHeaders(authority: "a\rb")),
            MalformedCase(what: "content-length mismatch", headers: h + [("content-length", "3")]),
            MalformedCase(what: "content-length not a number", headers: h + [("content-length", "1x")]),
        ]
    }()

    @Test(arguments: malformedCases)
    func malformedRequestIsReset(_ m: MalformedCase) async throws {
        try await misbehave { port, c in
            let s = try RawSocket(port: port)
            s.send(H2Raw.preface + H2Raw.settings + H2Raw.settingsAck)
            s.send(H2Raw.frame(type: 1, flags: 0x4, stream: 1, payload: H2Raw.hpack(m.headers))
                   + H2Raw.data(stream: 1, [0, 0, 0, 0, 2, 0x0a, 0], endStream: true))
            let frames = s.readFrames { $0.stream == 1 && ($0.type == 3 || $0.flags & 1 != 0) }
            let rst = frames.last(where: { $0.stream == 1 && $0.type == 3 })
            c.expect(rst?.payload == [0, 0, 0, 1],
                     "\(m.what): expected RST_STREAM(PROTOCOL_ERROR), got \(frames.map { ($0.type, $0.stream, $0.payload) })")
            // The connection still serves a well-formed request.
            let (status, reply) = try Self.echo(s, stream: 3, headers: Self.grpcHeaders(), text: "after \(m.what)")
            c.expect(status == "0" && reply == "after \(m.what)", "\(m.what): \(status ?? "none") \(reply ?? "none")")
        }
    }

    @Test func pseudoHeaderInTrailersIsReset() async throws {
        try await misbehave { port, c in
            let s = try RawSocket(port: port)
            s.send(H2Raw.preface + H2Raw.settings + H2Raw.settingsAck)
            // Headers, then trailers carrying a pseudo-header (no message: the handler is still
            // waiting, so nothing races the reset).
            s.send(H2Raw.frame(type: 1, flags: 0x4, stream: 1, payload: H2Raw.hpack(Self.grpcHeaders()))
                   + H2Raw.frame(type: 1, flags: 0x5, stream: 1, payload: H2Raw.hpack([(":path", "/x")])))
            let frames = s.readFrames { $0.stream == 1 && ($0.type == 3 || $0.flags & 1 != 0) }
            let rst = frames.last(where: { $0.stream == 1 && $0.type == 3 })
            c.expect(rst?.payload == [0, 0, 0, 1], "\(frames.map { ($0.type, $0.stream, $0.payload) })")
        }
    }
}
