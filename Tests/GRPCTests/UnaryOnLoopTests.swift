import GRPC
import NIOCore
import NIOPosix
import ProtoWire
import Synchronization
import Testing

/// `ServerMethod.unaryOnLoop`: a unary handler called on its connection's event loop, without a
/// task, answering with a future, the way the server's KV writes are answered.
@Suite("Unary calls answered through futures", .timeLimit(.minutes(1)))
struct UnaryOnLoopTests {
    final class Counts: Sendable {
        let calls = Atomic(0)
        let onConnectionLoop = Atomic(0)
        let delayedCalls = Atomic(0)
        let lateAnswers = Atomic(0)
        /// Texts of the requests whose handler ran.
        let texts = Mutex<Set<String>>([])
        func reached(_ text: String) -> Bool { texts.withLock { $0.contains(text) } }
    }

    /// Echo.Get as `unaryOnLoop`: a delayed answer is completed on another loop (as the apply loop
    /// completes the server's proposals); `x-deny: yes` is refused by a `checked` interceptor.
    struct OnLoopEcho: GRPCService {
        let other: any EventLoop
        let counts = Counts()

        var methods: [ServerMethod] {
            let other = self.other, counts = self.counts
            return [
                ServerMethod.unaryOnLoop(Echotest.Echo.get) { req, _, loop in
                    counts.calls.add(1, ordering: .relaxed)
                    if loop.inEventLoop { counts.onConnectionLoop.add(1, ordering: .relaxed) }
                    if req.failCode != 0 {
                        return loop.makeFailedFuture(GRPCStatus(GRPCStatusCode(rawValue: Int(req.failCode)), req.text))
                    }
                    if req.delayMs > 0 { counts.delayedCalls.add(1, ordering: .relaxed) }
                    counts.texts.withLock { _ = $0.insert(req.text) }
                    let answer = other.makePromise(of: Echotest.EchoResponse.self)
                    other.scheduleTask(in: .milliseconds(Int64(req.delayMs))) {
                        if req.delayMs > 0 { counts.lateAnswers.add(1, ordering: .relaxed) }
                        answer.succeed(EchoService.reply(req))
                    }
                    return answer.futureResult
                }.checked { ctx in
                    if ctx.header("x-deny") == "yes" { throw GRPCStatus(.unavailable, "denied") }
                },
            ]
        }
    }

    func withOnLoopEcho<R>(_ body: (GRPCServer, GRPCClient, OnLoopEcho) async throws -> R) async throws -> R {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let service = OnLoopEcho(other: group.next())
        do {
            let r = try await withServer([service]) { server in
                try await withClient(server) { try await body(server, $0, service) }
            }
            try await group.shutdownGracefully()
            return r
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    @Test func answersComeFromTheFutureOfAnyLoop() async throws {
        try await withOnLoopEcho { _, client, service in
            let r = try await client.unary(Echotest.Echo.get, request("hello", payload: [1, 2, 3]))
            #expect(r.text == "hello" && r.payload == [1, 2, 3])
            let slow = try await client.unary(Echotest.Echo.get, request("slow", delayMs: 20))
            #expect(slow.text == "slow")
            await #expect(throws: GRPCStatus(.failedPrecondition, "no such thing")) {
                _ = try await client.unary(Echotest.Echo.get, request("no such thing", failCode: 9))
            }
            // Concurrent calls on one connection each get their own answer.
            let texts = try await withThrowingTaskGroup(of: String.self) { group in
                for i in 0..<50 { group.addTask { try await client.unary(Echotest.Echo.get, request("c\(i)", delayMs: Int32(i % 3))).text } }
                var all: Set<String> = []
                for try await t in group { all.insert(t) }
                return all
            }
            #expect(texts == Set((0..<50).map { "c\($0)" }))
            let calls = service.counts.calls.load(ordering: .relaxed)
            #expect(calls == 53)
            #expect(service.counts.onConnectionLoop.load(ordering: .relaxed) == calls)
        }
    }

    @Test func aCheckRefusesTheCallBeforeTheHandler() async throws {
        try await withOnLoopEcho { _, client, service in
            await #expect(throws: GRPCStatus(.unavailable, "denied")) {
                _ = try await client.unary(Echotest.Echo.get, request("a"), options: CallOptions(metadata: [("x-deny", "yes")]))
            }
            #expect(service.counts.calls.load(ordering: .relaxed) == 0)
            let b = try await client.unary(Echotest.Echo.get, request("b"))
            #expect(b.text == "b")
        }
    }

    @Test func aMalformedRequestIsInternalAndTheConnectionGoesOn() async throws {
        try await withOnLoopEcho { server, client, service in
            var bad = request("x")
            bad.unknownFields = [0x12, 0x7F, 0x01]  // field 2 (bytes) claims 127 bytes, has 1
            let err = await #expect(throws: GRPCStatus.self) { _ = try await client.unary(Echotest.Echo.get, bad) }
            #expect(err?.code == .internal)
            #expect(err?.message.hasPrefix("grpc: error unmarshalling echotest.EchoRequest") == true)
            #expect(service.counts.calls.load(ordering: .relaxed) == 0)
            let after = try await client.unary(Echotest.Echo.get, request("after"))
            #expect(after.text == "after")
            #expect(await eventually { server.counters.streams == 0 })
        }
    }

    @Test func aDeadlineOrACancelEndsTheCallAndTheLateAnswerIsDropped() async throws {
        try await withOnLoopEcho { server, client, service in
            // The deadline may end the call before or after its handler ran (a loaded machine).
            let err = await #expect(throws: GRPCStatus.self) {
                _ = try await client.unary(Echotest.Echo.get, request("late", delayMs: 400),
                                           options: CallOptions(timeout: .milliseconds(50)))
            }
            #expect(err?.code == .deadlineExceeded)
            // (its handler may also run only now, after the client gave up: the count below allows it)
            let task = Task { try await client.unary(Echotest.Echo.get, request("gone", delayMs: 2000)) }
            #expect(await eventually { service.counts.reached("gone") })
            task.cancel()
            if case .failure(let e as GRPCStatus) = await task.result { #expect(e.code == .cancelled) } else { Issue.record("not cancelled") }
            // Every answer still comes, to streams that have ended: nothing is sent, nothing breaks.
            #expect(await eventually {
                service.counts.lateAnswers.load(ordering: .relaxed) == service.counts.delayedCalls.load(ordering: .relaxed)
            })
            #expect(await eventually { server.counters.streams == 0 })
            let next = try await client.unary(Echotest.Echo.get, request("next"))
            #expect(next.text == "next")
        }
    }
}
