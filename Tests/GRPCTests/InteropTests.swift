import Foundation
import GRPC
import NIOCore
import ProtoWire
import Testing

/// grpcio (Python) against our server, and our client against a grpcio server.
/// Needs `python3 -c "import grpc, grpc_tools"` (Tests/install-deps.sh installs them); without
/// them these tests fail rather than skip.
@Suite(.serialized)
struct InteropTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("python/echo_interop.py").path

    /// Runs the Python client against our server; every check it runs must print OK.
    @Test func grpcioClientAgainstOurServer() async throws {
        try await withEchoServer { server, _ in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3", Self.script, "client", String(server.port)]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = out
            try p.run()
            // Bounded: kill it if it has not finished in 120 s.
            let killer = Task {
                try await Task.sleep(for: .seconds(120))
                if p.isRunning { p.terminate() }
            }
            let data = await onThread { out.fileHandleForReading.readDataToEndOfFile() }
            p.waitUntilExit()
            killer.cancel()
            let text = String(decoding: data, as: UTF8.self)
            let lines = text.split(separator: "\n").map(String.init)
            let oks = lines.filter { $0.hasPrefix("OK ") }
            let fails = lines.filter { $0.hasPrefix("FAIL ") }
            #expect(fails.isEmpty, "\(fails)")
            #expect(oks.count == 12, "\(text)")
            #expect(p.terminationStatus == 0, "\(text)")
            #expect(await eventually { server.counters.streams == 0 })
        }
    }

    /// Starts the Python server, runs `body` with a client of it, always kills the server.
    func withPythonServer(_ body: (GRPCClient) async throws -> Void) async throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", Self.script, "server"]
        let out = Pipe()
        let input = Pipe()
        p.standardOutput = out
        p.standardInput = input
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer {
            try? input.fileHandleForWriting.close()
            if p.isRunning { p.terminate() }
            p.waitUntilExit()
        }
        let line = await onThread { () -> String in
            var buf = Data()
            while !buf.contains(UInt8(ascii: "\n")) {
                let d = out.fileHandleForReading.availableData
                if d.isEmpty { break }
                buf.append(d)
            }
            return String(decoding: buf, as: UTF8.self)
        }
        let port = try #require(line.split(separator: "\n").first.flatMap { l in
            l.hasPrefix("PORT ") ? Int(l.dropFirst(5)) : nil
        }, "python server said: \(line)")
        var config = GRPCClient.Configuration(host: "127.0.0.1", port: port)
        config.http2.maxReceiveMessageSize = 4 << 20
        let client = GRPCClient(configuration: config)
        do {
            try await body(client)
            await client.close()
        } catch {
            await client.close()
            throw error
        }
    }

    @Test func ourClientAgainstGrpcioServer() async throws {
        try await withPythonServer { client in
            // Unary
            let r = try await client.unary(Echotest.Echo.get, request("hi", payload: [9, 8]))
            #expect(r.text == "hi" && r.payload == [9, 8])
            // Server streaming
            let idx = try await client.serverStreaming(Echotest.Echo.expand, request(count: 100, replySize: 100)) { rs in
                var out: [Int32] = []
                for try await m in rs { out.append(m.index) }
                return out
            }
            #expect(idx == Array(0..<100))
            // Client streaming
            let c = try await client.clientStreaming(Echotest.Echo.collect) { w in
                for i in 0..<10 { try await w.send(request("\(i)", payload: [UInt8](repeating: 1, count: i))) }
            }
            #expect(c.index == 10 && c.text == "0123456789" && c.totalBytes == 45)
            // Bidi
            let texts = try await client.bidirectionalStreaming(Echotest.Echo.update) { w, rs in
                var it = rs.makeAsyncIterator()
                var out: [String] = []
                for i in 0..<20 {
                    try await w.send(request("b\(i)"))
                    out.append(try #require(try await it.next()).text)
                }
                w.finish()
                let got1 = try await it.next()
                #expect(got1 == nil)
                return out
            }
            #expect(texts == (0..<20).map { "b\($0)" })
            // 1 MiB both ways
            let big = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let got2 = try await client.unary(Echotest.Echo.get, request(payload: big)).payload
            #expect(got2 == big)
            // Over grpcio's 2 MiB limit: RESOURCE_EXHAUSTED from grpcio.
            let e1 = await #expect(throws: GRPCStatus.self) {
                _ = try await client.unary(Echotest.Echo.get, request(payload: [UInt8](repeating: 0, count: 2 << 20)))
            }
            #expect(e1?.code == .resourceExhausted)
            // gzip requests; grpcio answers in kind.
            let payload = [UInt8](repeating: 3, count: 200_000)
            #expect(try await client.unary(Echotest.Echo.get, request(payload: payload),
                                           options: CallOptions(compress: true)).payload == payload)
            // Status + message
            let e2 = await #expect(throws: GRPCStatus.self) {
                _ = try await client.unary(Echotest.Echo.get, request("no way: ü%", failCode: 5))
            }
            #expect(e2?.code == .notFound)
            #expect(e2?.message == "no way: ü%")
            // Deadline
            let e3 = await #expect(throws: GRPCStatus.self) {
                _ = try await client.unary(Echotest.Echo.get, request(delayMs: 3000), options: CallOptions(timeout: .milliseconds(200)))
            }
            #expect(e3?.code == .deadlineExceeded)
            // Unimplemented
            let bad = MethodDescriptor<Echotest.EchoRequest, Echotest.EchoResponse>(serviceName: "echotest.Echo", methodName: "Nope", kind: .unary)
            let e4 = await #expect(throws: GRPCStatus.self) { _ = try await client.unary(bad, request()) }
            #expect(e4?.code == .unimplemented)
            // Cancellation
            let t = Task { try await client.unary(Echotest.Echo.get, request(delayMs: 5000)) }
            try await Task.sleep(for: .milliseconds(100))
            t.cancel()
            if case .failure(let e as GRPCStatus) = await t.result { #expect(e.code == .cancelled) } else { Issue.record("not cancelled") }
            // Many concurrent calls on one connection
            let n = try await withThrowingTaskGroup(of: Int.self) { g in
                for i in 0..<300 { g.addTask { try await client.unary(Echotest.Echo.get, request("\(i)")).text == "\(i)" ? 1 : 0 } }
                return try await g.reduce(0, +)
            }
            #expect(n == 300)
            #expect(client.counters.connectionsAccepted == 1)
        }
    }
}
