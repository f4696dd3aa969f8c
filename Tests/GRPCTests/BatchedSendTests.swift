import GRPC
import ProtoWire
import Testing

/// `ResponseWriter.send(contentsOf:)`: many messages in one hop to the connection, in order, with
/// back-pressure (batches far larger than the stream's high-water mark still all arrive).
@Suite("Batched send", .timeLimit(.minutes(1)))
struct BatchedSendTests {
    struct Batches: GRPCService {
        var methods: [ServerMethod] {
            [.serverStreaming(Echotest.Echo.expand) { req, writer, _ in
                // req.count messages in batches of 1, 2, 3, ... (the last one shorter).
                var i: Int32 = 0, size = 1
                while i < req.count {
                    var batch: [Echotest.EchoResponse] = []
                    while batch.count < size && i < req.count {
                        var r = Echotest.EchoRequest(); r.text = req.text; r.replySize = req.replySize
                        batch.append(EchoService.reply(r, index: i))
                        i += 1
                    }
                    try await writer.send(contentsOf: batch)
                    size += 1
                }
            }]
        }
    }

    @Test func batchesArriveWholeAndInOrder() async throws {
        try await withServer([Batches()]) { server in try await withClient(server) { client in
            // 300 messages of 4 KiB: batches up to 24 x 4 KiB, beyond the 256 KiB per-stream high-water mark in total.
            let got = try await client.serverStreaming(Echotest.Echo.expand, request("b", count: 300, replySize: 4096)) { responses in
                var out: [Int32] = []
                for try await r in responses {
                    #expect(r.text == "b" && r.payload.count == 4096)
                    out.append(r.index)
                }
                return out
            }
            #expect(got == Array(0..<300))
        } }
    }
}
