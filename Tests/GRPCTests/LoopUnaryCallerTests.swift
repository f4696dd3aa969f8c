import GRPC
import NIOCore
import NIOPosix
import ProtoWire
import Testing

/// `LoopUnaryCaller`: unary calls started and completed on the connection's event loop (keel-bench's
/// callback workers). Responses, error statuses, completion order, and the refusal once the
/// connection got GOAWAY.
@Suite("Loop unary caller", .timeLimit(.minutes(1)))
struct LoopUnaryCallerTests {
    /// Starts `method(req)` on the caller's loop and waits for its completion there.
    static func call(_ caller: LoopUnaryCaller, _ req: Echotest.EchoRequest,
                     _ method: MethodDescriptor<Echotest.EchoRequest, Echotest.EchoResponse> = Echotest.Echo.get)
        async -> (result: Result<Echotest.EchoResponse, GRPCStatus>, onLoop: Bool) {
        let loop = caller.eventLoop
        let p = loop.makePromise(of: (Result<Echotest.EchoResponse, GRPCStatus>, Bool).self)
        loop.execute {
            caller.unary(method, req) { r in p.succeed((r, loop.inEventLoop)) }
        }
        return try! await p.futureResult.get()
    }

    /// The call's failure status; records an issue (nil) when it succeeded.
    static func failure(_ r: Result<Echotest.EchoResponse, GRPCStatus>) -> GRPCStatus? {
        if case .failure(let st) = r { return st }
        Issue.record("expected a failure, got \(r)")
        return nil
    }

    @Test func answersAndStatusesArriveOnTheLoop() async throws {
        try await withEchoServer { server, _ in
            try await withClient(server) { client in
                let caller = try await client.loopCaller()
                let ok = await Self.call(caller, request("hello", payload: [1, 2, 3]))
                #expect(ok.onLoop)
                #expect((try? ok.result.get())?.text == "hello")
                #expect((try? ok.result.get())?.payload == [1, 2, 3])
                // A handler's error status is the call's failure, with code and message.
                let failed = await Self.call(caller, request("no", failCode: 9))
                #expect(failed.onLoop)
                guard let st = Self.failure(failed.result) else { return }
                #expect(st.code == .failedPrecondition)
                #expect(st.message == "no")
                // A unary method answered by zero messages is INTERNAL (as GRPCClient.unary says).
                let none = await Self.call(caller, request("none", count: 0), Echotest.Echo.expand)
                guard let st2 = Self.failure(none.result) else { return }
                #expect(st2.code == .internal)
                #expect(st2.message == "grpc: server ended the call without a response message")
                // The caller is still good afterwards.
                #expect((try? await Self.call(caller, request("after")).result.get())?.text == "after")
            }
        }
    }

    /// A chain of calls, each started from the last one's completion (a closed-loop worker): all
    /// answered, in order, on one connection.
    @Test func aChainOfCallsFromCompletions() async throws {
        try await withEchoServer { server, _ in
            try await withClient(server) { client in
                let caller = try await client.loopCaller()
                let loop = caller.eventLoop
                let done = loop.makePromise(of: [String].self)
                final class Chain {
                    var got: [String] = []
                }
                loop.execute {
                    let chain = Chain()
                    func next(_ i: Int) {
                        if i == 200 { return done.succeed(chain.got) }
                        caller.unary(Echotest.Echo.get, request("c\(i)")) { r in
                            switch r {
                            case .success(let resp): chain.got.append(resp.text); next(i + 1)
                            case .failure(let st): done.fail(st)
                            }
                        }
                    }
                    next(0)
                }
                let got = try await done.futureResult.get()
                #expect(got == (0..<200).map { "c\($0)" })
                #expect(server.counters.connectionsAccepted == 1)
            }
        }
    }

    /// After GOAWAY the connection refuses new streams: the caller fails fast with UNAVAILABLE
    /// "connection is closing" (nothing is sent), while the client itself moves to a new connection.
    @Test func aConnectionThatGotGoAwayRefusesWithUnavailable() async throws {
        try await withEchoServer { server, _ in
            try await withClient(server) { client in
                let caller = try await client.loopCaller()
                #expect((try? await Self.call(caller, request("one")).result.get())?.text == "one")
                let streamsBefore = server.counters.streamsOpened
                await server.drainConnections()
                #expect(await eventually { server.counters.connections == 0 })
                let refused = await Self.call(caller, request("two"))
                #expect(refused.onLoop)
                guard let st = Self.failure(refused.result) else { return }
                #expect(st.code == .unavailable)
                #expect(st.message == "connection is closing")
                #expect(server.counters.streamsOpened == streamsBefore)
                // A new caller gets a new connection and works.
                let fresh = try await client.loopCaller()
                #expect((try? await Self.call(fresh, request("three")).result.get())?.text == "three")
                #expect(server.counters.connectionsAccepted == 2)
            }
        }
    }
}
