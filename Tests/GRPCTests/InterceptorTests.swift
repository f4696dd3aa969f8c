import GRPC
import ProtoWire
import Synchronization
import Testing

/// `ServerMethod.checked` (refuse a call before its handler) and `.monitored` (end a stream when
/// a monitor returns), the building blocks of the server's `hasleader` interceptors.
@Suite("Interceptors", .timeLimit(.minutes(1)))
struct InterceptorTests {
    final class Flag: Sendable { let raised = Atomic(false) }

    struct Guarded: GRPCService {
        let base = EchoService()
        let end = Flag()
        var methods: [ServerMethod] {
            let end = self.end
            return base.methods.map { m in
                m.checked { ctx in
                    if ctx.header("x-deny") == "yes" { throw GRPCStatus(.unavailable, "denied") }
                }.monitored({ ctx in
                    guard ctx.header("x-watch") == "yes" else { return nil }
                    return { while !end.raised.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(5)) } }
                }, status: GRPCStatus(.unavailable, "monitor ended"))
            }
        }
    }

    func withGuarded<R>(_ body: (GRPCClient, Guarded) async throws -> R) async throws -> R {
        let service = Guarded()
        return try await withServer([service]) { server in
            try await withClient(server) { try await body($0, service) }
        }
    }

    @Test func aCheckRefusesUnaryAndStreamingCallsBeforeTheirHandler() async throws {
        try await withGuarded { client, service in
            let deny = CallOptions(metadata: [("x-deny", "yes")])
            await #expect(throws: GRPCStatus(.unavailable, "denied")) {
                _ = try await client.unary(Echotest.Echo.get, request("a"), options: deny)
            }
            let b = try await client.unary(Echotest.Echo.get, request("b"))
            #expect(b.text == "b")
            await #expect(throws: GRPCStatus(.unavailable, "denied")) {
                try await client.bidirectionalStreaming(Echotest.Echo.update, options: deny) { writer, responses in
                    try await writer.send(request("c"))
                    for try await _ in responses {}
                }
            }
            #expect(service.base.progress.handlersRunning.load(ordering: .relaxed) == 0)
        }
    }

    @Test func aMonitorEndsAStreamWithItsStatusAndOnlyWhenAsked() async throws {
        try await withGuarded { client, service in
            // Without the header: a normal stream that the client ends.
            let plain = try await client.bidirectionalStreaming(Echotest.Echo.update) { writer, responses in
                var it = responses.makeAsyncIterator()
                try await writer.send(request("p"))
                let r = try await it.next()
                writer.finish()
                let end = try await it.next()
                return (r?.text, end == nil)
            }
            #expect(plain.0 == "p" && plain.1)
            // With it: the stream works until the monitor returns, then ends with its status.
            let watched = CallOptions(metadata: [("x-watch", "yes")])
            await #expect(throws: GRPCStatus(.unavailable, "monitor ended")) {
                try await client.bidirectionalStreaming(Echotest.Echo.update, options: watched) { writer, responses in
                    var it = responses.makeAsyncIterator()
                    try await writer.send(request("w"))
                    let first = try await it.next()
                    #expect(first?.text == "w")
                    service.end.raised.store(true, ordering: .relaxed)
                    while try await it.next() != nil {}
                }
            }
            // Unary calls are not monitored (they would only be refused by a check).
            let u = try await client.unary(Echotest.Echo.get, request("u"), options: watched)
            #expect(u.text == "u")
        }
    }
}
