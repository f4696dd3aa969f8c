// grpc-bench: load generator / server for Keel's gRPC stack (not a test).
//
//   grpc-bench serve [port]                          echo server on 127.0.0.1 (prints PORT n)
//   grpc-bench unary PORT CONNS STREAMS SECONDS [SIZE] unary echo RPCs/s + p50/p99 with our client
//   grpc-bench stream PORT SECONDS [SIZE]            server-streaming and client-streaming MB/s
//   grpc-bench body FILE [SIZE]                      writes a gRPC-framed Payload for h2load -d
import Foundation
import GRPC
import NIOCore
import NIOPosix
import ProtoWire
import Synchronization

struct BenchService: GRPCService {
    var methods: [ServerMethod] {
        [
            .unary(Grpcbench.Bench.echo) { req, _ in req },
            .serverStreaming(Grpcbench.Bench.download) { req, writer, _ in
                var m = Grpcbench.Payload()
                m.data = req.data
                for _ in 0..<req.count { try await writer.send(m) }
            },
            .clientStreaming(Grpcbench.Bench.upload) { reqs, _ in
                var total = 0
                for try await r in reqs { total += r.data.count }
                var m = Grpcbench.Payload()
                m.count = Int32(truncatingIfNeeded: total / 1024)
                return m
            },
        ]
    }
}

let args = CommandLine.arguments
func arg(_ i: Int, _ d: Int) -> Int { args.count > i ? Int(args[i]) ?? d : d }

func percentile(_ sorted: [UInt64], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    return Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1000
}

switch args.count > 1 ? args[1] : "" {
case "serve":
    var c = GRPCServer.Configuration()
    c.port = arg(2, 0)
    c.http2.maxReceiveMessageSize = 4 << 20
    let server = try await GRPCServer(configuration: c, services: [BenchService()])
    FileHandle.standardOutput.write(Data("PORT \(server.port)\n".utf8))
    // Runs until stdin closes.
    _ = await Task.detached { FileHandle.standardInput.readDataToEndOfFile() }.value
    await server.shutdown()

case "body":
    var m = Grpcbench.Payload()
    m.data = [UInt8](repeating: 7, count: arg(3, 16))
    let bytes = m.serializedBytes()
    var framed: [UInt8] = [0, UInt8(bytes.count >> 24 & 0xff), UInt8(bytes.count >> 16 & 0xff), UInt8(bytes.count >> 8 & 0xff), UInt8(bytes.count & 0xff)]
    framed += bytes
    _ = FileManager.default.createFile(atPath: args[2], contents: Data(framed))

case "unary":
    let port = arg(2, 0), conns = arg(3, 1), streams = arg(4, 100), seconds = arg(5, 5), size = arg(6, 16)
    var cc = GRPCClient.Configuration(host: "127.0.0.1", port: port)
    cc.connections = conns
    let client = GRPCClient(configuration: cc)
    var req = Grpcbench.Payload()
    req.data = [UInt8](repeating: 7, count: size)
    let request = req
    // Warm up every connection.
    for _ in 0..<conns { _ = try await client.unary(Grpcbench.Bench.echo, request) }
    let clock = ContinuousClock()
    let end = clock.now + .seconds(seconds)
    let latencies = try await withThrowingTaskGroup(of: [UInt64].self) { group in
        for _ in 0..<(conns * streams) {
            group.addTask {
                var lat: [UInt64] = []
                lat.reserveCapacity(100_000)
                while clock.now < end {
                    let t0 = clock.now
                    _ = try await client.unary(Grpcbench.Bench.echo, request)
                    let d = (clock.now - t0).components
                    lat.append(UInt64(d.seconds) * 1_000_000 + UInt64(d.attoseconds / 1_000_000_000_000))
                }
                return lat
            }
        }
        var all: [UInt64] = []
        for try await l in group { all += l }
        return all.sorted()
    }
    await client.close()
    print(String(format: "unary conns=%d streams/conn=%d size=%d: %.0f RPCs/s, p50 %.2f ms, p99 %.2f ms (%d calls)",
                 conns, streams, size, Double(latencies.count) / Double(seconds),
                 percentile(latencies, 0.5), percentile(latencies, 0.99), latencies.count))

case "stream":
    let port = arg(2, 0), seconds = arg(3, 5), size = arg(4, 1 << 20)
    var cc = GRPCClient.Configuration(host: "127.0.0.1", port: port)
    cc.http2.maxReceiveMessageSize = 4 << 20
    let client = GRPCClient(configuration: cc)
    var req = Grpcbench.Payload()
    req.data = [UInt8](repeating: 7, count: size)
    let clock = ContinuousClock()
    // Download: the server streams `size`-byte messages.
    var bytes = 0
    let t0 = clock.now
    while clock.now - t0 < .seconds(seconds) {
        var r = req
        r.count = 64
        let n = try await client.serverStreaming(Grpcbench.Bench.download, r) { rs in
            var n = 0
            for try await m in rs { n += m.data.count }
            return n
        }
        bytes += n
    }
    let down = Double(bytes) / 1e6 / (clock.now - t0).seconds
    // Upload: the client streams `size`-byte messages.
    var up = 0
    let t1 = clock.now
    while clock.now - t1 < .seconds(seconds) {
        let request = req
        let r = try await client.clientStreaming(Grpcbench.Bench.upload) { w in
            for _ in 0..<64 { try await w.send(request) }
        }
        up += Int(r.count) * 1024
    }
    let upRate = Double(up) / 1e6 / (clock.now - t1).seconds
    await client.close()
    print(String(format: "streaming %d-byte messages: server->client %.0f MB/s, client->server %.0f MB/s", size, down, upRate))

default:
    print("usage: grpc-bench serve [port] | unary PORT CONNS STREAMS SECONDS [SIZE] | stream PORT SECONDS [SIZE] | body FILE [SIZE]")
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
