@testable import GRPC
import ProtoWire
import Testing

/// The per-connection cache of received header texts: a field equal to the one at the same
/// position of an earlier block reuses its String; anything else is decoded afresh. A stale
/// text would hand a handler another call's header.
@Suite("Header text cache", .timeLimit(.minutes(1)))
struct HeaderTextCacheTests {
    func text(_ cache: inout HeaderTextCache, value: Bool, _ position: Int, _ s: String) -> String {
        Array(s.utf8).withUnsafeBytes { value ? cache.value(at: position, $0) : cache.name(at: position, $0) }
    }

    @Test func sameBytesSameTextOtherBytesNewText() {
        var c = HeaderTextCache()
        let long = String(repeating: "v", count: HeaderTextCache.maxBytes + 1)
        let cases: [(Int, String)] = [
            (0, ":path"), (0, ":path"), (0, ":pat"), (0, ":patH"), (0, ""), (0, ":path"),
            (1, "/etcdserverpb.KV/Put"), (1, "/etcdserverpb.KV/Range"), (1, "/etcdserverpb.KV/Put"),
            (2, "same-length-aaaa"), (2, "same-length-aaab"), (2, "same-length-aaaa"),
            (HeaderTextCache.positions, "beyond the cached positions"), (HeaderTextCache.positions, "beyond"),
            (3, long), (3, long + "w"), (3, "short"), (3, long),
            (7, "gap"), (5, "before the gap"), (7, "gap"), (7, "gap2"),
        ]
        for value in [false, true] {
            for (position, s) in cases {
                #expect(text(&c, value: value, position, s) == s, "position \(position): \(s)")
            }
        }
        // Names and values are cached apart.
        #expect(text(&c, value: false, 9, "name") == "name")
        #expect(text(&c, value: true, 9, "value") == "value")
        #expect(text(&c, value: false, 9, "name") == "name")
    }

    /// One connection, many calls whose metadata changes in length, content and position: every
    /// handler sees its own call's value.
    @Test func handlersSeeTheirOwnCallsHeadersOnOneConnection() async throws {
        struct HeaderEcho: GRPCService {
            var methods: [ServerMethod] {
                [.unary(Echotest.Echo.get) { _, ctx in
                    var r = Echotest.EchoResponse()
                    r.text = (ctx.header("x-a") ?? "-") + "|" + (ctx.header("x-b") ?? "-")
                    return r
                }]
            }
        }
        try await withServer([HeaderEcho()]) { server in try await withClient(server) { client in
            let values = ["1", "1", "22", "a-value-longer-than-fifteen-bytes", "a-value-longer-than-fifteen-bytez",
                          "a-value-longer-than-fifteen-bytes", "", "1"]
            for (i, a) in values.enumerated() {
                var metadata: [(name: String, value: String)] = [("x-a", a)]
                if i % 3 == 1 { metadata.insert(("x-b", "b\(i)"), at: 0) }  // shifts x-a's position
                let r = try await client.unary(Echotest.Echo.get, request(), options: CallOptions(metadata: metadata))
                #expect(r.text == a + "|" + (i % 3 == 1 ? "b\(i)" : "-"), "call \(i)")
            }
        } }
    }
}
