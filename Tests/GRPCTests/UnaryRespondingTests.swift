import GRPC
import NIOCore
import NIOPosix
import ProtoWire
import Synchronization
import Testing

/// `ServerMethod.unaryResponding`: a unary handler called on its connection's event loop, without a
/// task, answering through a `UnaryResponder`, the way the server's KV writes are answered.
@Suite("Unary calls answered through a responder", .timeLimit(.minutes(1)))
struct UnaryRespondingTests {
    final class Counts: Sendable {
        let calls = Atomic(0)
        let onConnectionLoop = Atomic(0)
        let delayedCalls = Atomic(0)
        let lateAnswers = Atomic(0)
        let inlineAnswers = Atomic(0)
        /// Texts of the requests whose handler ran.
        let texts = Mutex<Set<String>>([])
        func reached(_ text: String) -> Bool { texts.withLock { $0.contains(text) } }
    }

    /// Echo.Get as `unaryResponding`: an undelayed answer is given at once, in the handler, on the
    /// connection's loop; a delayed one from another loop (as the apply loop completes the server's
    /// proposals); `x-deny: yes` is refused by a `checked` interceptor.
    struct OnLoopEcho: GRPCService {
        let other: any EventLoop
        let counts = Counts()

        var methods: [ServerMethod] {
            let other = self.other, counts = self.counts
            return [
                ServerMethod.unaryResponding(Echotest.Echo.get) { req, _, responder in
                    counts.calls.add(1, ordering: .relaxed)
                    if responder.eventLoop.inEventLoop { counts.onConnectionLoop.add(1, ordering: .relaxed) }
                    if req.failCode != 0 {
                        return responder.fail(GRPCStatus(GRPCStatusCode(rawValue: Int(req.failCode)), req.text))
                    }
                    counts.texts.withLock { _ = $0.insert(req.text) }
                    guard req.delayMs > 0 else {
                        counts.inlineAnswers.add(1, ordering: .relaxed)
                        return responder.succeed(EchoService.reply(req))
                    }
                    counts.delayedCalls.add(1, ordering: .relaxed)
                    other.scheduleTask(in: .milliseconds(Int64(req.delayMs))) {
                        counts.lateAnswers.add(1, ordering: .relaxed)
                        responder.succeed(EchoService.reply(req))
                    }
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

    @Test func answersComeFromAnyLoopOrAtOnce() async throws {
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
            // "hello" and the 17 concurrent calls with delay 0 were answered inside the handler.
            #expect(service.counts.inlineAnswers.load(ordering: .relaxed) == 18)
            #expect(service.counts.lateAnswers.load(ordering: .relaxed) == 34)
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
