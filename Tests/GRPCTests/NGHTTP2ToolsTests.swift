import Foundation
import GRPC
import ProtoWire
import Testing

/// nghttp2's own command-line peers (Debian's nghttp2-client) against our server.
@Suite struct NGHTTP2ToolsTests {
    /// Runs a tool with a bounded lifetime; returns (exit status, stdout+stderr).
    static func run(_ args: [String], input: URL? = nil) async throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let killer = Task {
            try await Task.sleep(for: .seconds(60))
            if p.isRunning { p.terminate() }
        }
        let data = await onThread { out.fileHandleForReading.readDataToEndOfFile() }
        p.waitUntilExit()
        killer.cancel()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func framedBody(_ text: String) throws -> URL {
        var req = Echotest.EchoRequest()
        req.text = text
        let body = req.serializedBytes()
        let framed = [0, 0, 0, 0, UInt8(body.count)] + body
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("keel-grpc-\(UUID().uuidString).bin")
        try Data(framed).write(to: url)
        return url
    }

    @Test func nghttpUnaryCallShowsTrailers() async throws {
        try await withEchoServer { server, _ in
            let body = try Self.framedBody("from nghttp")
            defer { try? FileManager.default.removeItem(at: body) }
            let (status, out) = try await Self.run([
                "nghttp", "-v", "-d", body.path, "-H", "content-type: application/grpc", "-H", "te: trailers",
                "http://127.0.0.1:\(server.port)/echotest.Echo/Get"])
            #expect(status == 0, "\(out)")
            #expect(out.contains(":status: 200"))
            #expect(out.contains("content-type: application/grpc"))
            #expect(out.contains("grpc-status: 0"))
            #expect(out.contains("from nghttp"))
        }
    }

    @Test func h2loadThousandConcurrentStreams() async throws {
        try await withEchoServer { server, _ in
            let body = try Self.framedBody("load")
            defer { try? FileManager.default.removeItem(at: body) }
            // 4,000 unary calls, 1,000 in flight at once on one connection.
            let (status, out) = try await Self.run([
                "h2load", "-n", "4000", "-c", "1", "-m", "1000", "-d", body.path,
                "-H", "content-type: application/grpc", "-H", "te: trailers",
                "http://127.0.0.1:\(server.port)/echotest.Echo/Get"])
            #expect(status == 0, "\(out)")
            #expect(out.contains("requests: 4000 total, 4000 started, 4000 done, 4000 succeeded, 0 failed"), "\(out)")
            #expect(out.contains("status codes: 4000 2xx"), "\(out)")
            #expect(server.counters.streamsOpened == 4000)
            #expect(await eventually { server.counters.streams == 0 && server.counters.connections == 0 })
        }
    }
}
