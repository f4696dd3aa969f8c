import GRPC
import NIOCore
import NIOPosix
import ProtoWire
import Testing

/// `EventLoopTaskExecutor` and `ServerMethod.onConnectionLoop()`: handlers (and client tasks) that
/// only move messages between a connection and a queue run on the loop's thread, with no hop
/// through the cooperative pool.
@Suite("Loop executor", .timeLimit(.minutes(1)))
struct LoopExecutorTests {
    @Test func aTaskThatPrefersALoopRunsOnItAcrossAwaits() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let executor = EventLoopTaskExecutor(loop)
        let onLoop = try await Task(executorPreference: executor) { () async throws -> [Bool] in
            var seen = [loop.inEventLoop]
            try await loop.submit {}.get()  // resumed by the loop itself
            seen.append(loop.inEventLoop)
            try await Task.sleep(for: .milliseconds(2))  // resumed by a timer elsewhere
            seen.append(loop.inEventLoop)
            let child = await withTaskGroup(of: Bool.self) { g in  // children inherit the preference
                g.addTask { loop.inEventLoop }
                return await g.next()!
            }
            seen.append(child)
            return seen
        }.value
        #expect(onLoop == [true, true, true, true])
        let plain = await Task { loop.inEventLoop }.value
        #expect(!plain)
    }

    /// Unary `get` answers whether its handler ran on an event loop thread; bidi `update` answers
    /// that for every message it reads.
    struct WhereService: GRPCService {
        let onLoop: Bool
        var methods: [ServerMethod] {
            let unary = ServerMethod.unary(Echotest.Echo.get) { req, _ in
                try await Task.sleep(for: .milliseconds(1))
                return Self.answer(req.text)
            }
            let bidi = ServerMethod.bidirectionalStreaming(Echotest.Echo.update) { requests, writer, _ in
                for try await req in requests { try await writer.send(Self.answer(req.text)) }
            }
            // `checked` and `monitored` (the hasleader interceptors) keep the choice.
            let wrapped = [unary, bidi].map { m in
                m.checked { _ in }.monitored({ _ in nil }, status: GRPCStatus(.unavailable, "unused"))
            }
            return onLoop ? wrapped.map { $0.onConnectionLoop() } : wrapped
        }

        static func answer(_ text: String) -> Echotest.EchoResponse {
            var r = Echotest.EchoResponse()
            r.text = text + (MultiThreadedEventLoopGroup.currentEventLoop != nil ? ":loop" : ":pool")
            return r
        }
    }

    @Test(arguments: [true, false])
    func handlersRunWhereTheirMethodSays(onLoop: Bool) async throws {
        let service = WhereService(onLoop: onLoop)
        #expect(service.methods.allSatisfy { $0.runsOnConnectionLoop == onLoop })
        let want = onLoop ? "loop" : "pool"
        try await withServer([service]) { server in try await withClient(server) { client in
            for i in 0..<3 {
                let r = try await client.unary(Echotest.Echo.get, request("u\(i)"))
                #expect(r.text == "u\(i):\(want)")
            }
            let texts = try await client.bidirectionalStreaming(Echotest.Echo.update) { writer, responses in
                var it = responses.makeAsyncIterator()
                var out: [String] = []
                for i in 0..<3 {
                    try await writer.send(request("b\(i)"))
                    out.append(try await it.next()?.text ?? "none")
                }
                writer.finish()
                return out
            }
            #expect(texts == (0..<3).map { "b\($0):\(want)" })
        } }
    }
}
