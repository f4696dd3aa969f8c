import Foundation
import GRPC
import NIOCore
import NIOPosix
import ProtoWire
import Synchronization
import Testing

/// Progress counters the tests read to check back-pressure.
final class EchoProgress: Sendable {
    let sent = Atomic<Int>(0)
    let received = Atomic<Int>(0)
    let handlersRunning = Atomic<Int>(0)
    let handlersCancelled = Atomic<Int>(0)
}

/// The test service: all four call kinds.
struct EchoService: GRPCService {
    let progress = EchoProgress()

    static func reply(_ req: Echotest.EchoRequest, index: Int32 = 0) -> Echotest.EchoResponse {
        var r = Echotest.EchoResponse()
        r.text = req.text
        r.index = index
        r.payload = req.replySize > 0 ? [UInt8](repeating: UInt8(truncatingIfNeeded: index), count: Int(req.replySize))
                                      : req.payload
        return r
    }

    func behave(_ req: Echotest.EchoRequest) async throws {
        if req.delayMs > 0 {
            progress.handlersRunning.add(1, ordering: .relaxed)
            defer { progress.handlersRunning.add(-1, ordering: .relaxed) }
            do {
                try await Task.sleep(for: .milliseconds(Int(req.delayMs)))
            } catch {
                progress.handlersCancelled.add(1, ordering: .relaxed)
                throw error
            }
        }
        if req.failCode != 0 { throw GRPCStatus(GRPCStatusCode(rawValue: Int(req.failCode)), req.text) }
    }

    var methods: [ServerMethod] {
        [
            .unary(Echotest.Echo.get) { req, _ in
                try await behave(req)
                return Self.reply(req)
            },
            .serverStreaming(Echotest.Echo.expand) { req, writer, _ in
                try await behave(req)
                for i in 0..<req.count {
                    try await writer.send(Self.reply(req, index: i))
                    progress.sent.add(1, ordering: .relaxed)
                }
            },
            .clientStreaming(Echotest.Echo.collect) { requests, _ in
                var r = Echotest.EchoResponse()
                var n: Int32 = 0
                for try await req in requests {
                    if req.delayMs > 0 { try await Task.sleep(for: .milliseconds(Int(req.delayMs))) }
                    progress.received.add(1, ordering: .relaxed)
                    r.totalBytes += Int64(req.payload.count)
                    r.text += req.text
                    n += 1
                }
                r.index = n
                return r
            },
            .bidirectionalStreaming(Echotest.Echo.update) { requests, writer, _ in
                var i: Int32 = 0
                for try await req in requests {
                    try await behave(req)
                    try await writer.send(Self.reply(req, index: i))
                    i += 1
                }
            },
        ]
    }
}

/// Runs `body` against a fresh server of `services` on 127.0.0.1 (OS-chosen port); always shuts it down.
func withServer<R>(
    _ services: [any GRPCService],
    configure: (inout GRPCServer.Configuration) -> Void = { _ in },
    _ body: (GRPCServer) async throws -> R
) async throws -> R {
    var config = GRPCServer.Configuration()
    config.host = "127.0.0.1"
    config.port = 0
    configure(&config)
    let server = try await GRPCServer(configuration: config, services: services)
    do {
        let r = try await body(server)
        await server.shutdown(timeout: .seconds(5))
        return r
    } catch {
        await server.shutdown(timeout: .seconds(5))
        throw error
    }
}

/// `withServer` of an EchoService.
func withEchoServer<R>(
    configure: (inout GRPCServer.Configuration) -> Void = { _ in },
    _ body: (GRPCServer, EchoService) async throws -> R
) async throws -> R {
    let service = EchoService()
    return try await withServer([service], configure: configure) { try await body($0, service) }
}

/// Runs `body` with a client of `server`; always closes it.
func withClient<R>(_ server: GRPCServer, configure: (inout GRPCClient.Configuration) -> Void = { _ in },
                   _ body: (GRPCClient) async throws -> R) async throws -> R {
    var c = GRPCClient.Configuration(host: "127.0.0.1", port: server.port)
    configure(&c)
    let client = GRPCClient(configuration: c)
    do {
        let r = try await body(client)
        await client.close()
        return r
    } catch {
        await client.close()
        throw error
    }
}

func request(_ text: String = "", payload: [UInt8] = [], count: Int32 = 0, delayMs: Int32 = 0,
             replySize: Int32 = 0, failCode: Int32 = 0) -> Echotest.EchoRequest {
    var r = Echotest.EchoRequest()
    r.text = text
    r.payload = payload
    r.count = count
    r.delayMs = delayMs
    r.replySize = replySize
    r.failCode = failCode
    return r
}

/// Waits (bounded) until `condition` holds; returns whether it did. Not a timing assertion:
/// tests use it to wait for asynchronous clean-up before checking counters.
func eventually(_ condition: () -> Bool, tries: Int = 1200) async -> Bool {  // up to ~30 s: CI shares 2 cores with many parallel tests
    for _ in 0..<tries {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(25))
    }
    return condition()
}

/// Runs blocking work (pipe reads, process waits) on a thread of its own, never on the
/// cooperative pool: on 2 cores, two blocked pool threads would starve the server's handlers.
func onThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { cont in
        Thread { cont.resume(returning: work()) }.start()
    }
}
