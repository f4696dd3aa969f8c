import GRPC
import KeelAPI

/// The gRPC clients of a run: `conns` HTTP/2 connections, connection i to endpoint i % endpoints,
/// each its own single-connection GRPCClient pinned to one event loop of the shared group (round
/// robin). Worker w uses connection w % conns; with `--executor loop` it also runs on that
/// connection's loop, so a request never changes threads inside the client.
public final class Connections: Sendable {
    public let endpoints: [String]
    public let clients: [GRPCClient]
    public let executors: [EventLoopTaskExecutor]
    public let options: CallOptions
    public let mode: WorkerExecutor
    public var totalConnections: Int { clients.count }

    /// `endpoints`: "host:port" (an `http://` prefix is accepted, as etcdctl does).
    public init(endpoints: [String], conns: Int, timeoutSeconds: Double?, mode: WorkerExecutor = .callback) throws(BenchError) {
        guard !endpoints.isEmpty else { throw BenchError("no endpoints") }
        guard conns >= 1 else { throw BenchError("--conns must be at least 1") }
        var parsed: [(String, Int)] = []
        for raw in endpoints {
            var e = String(raw.trimmingPrefix("http://"))
            if e.hasPrefix("https://") { throw BenchError("TLS endpoints are not supported: \(raw)") }
            e = e.hasSuffix("/") ? String(e.dropLast()) : e
            guard let colon = e.lastIndex(of: ":"), let port = Int(e[e.index(after: colon)...]), port > 0, port < 65536
            else { throw BenchError("bad endpoint \(raw) (want host:port)") }
            var host = String(e[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            parsed.append((host, port))
        }
        let loops = WorkerExecutor.loopExecutors
        var clients: [GRPCClient] = []
        var executors: [EventLoopTaskExecutor] = []
        for i in 0..<max(conns, parsed.count) {
            let (host, port) = parsed[i % parsed.count]
            var c = GRPCClient.Configuration(host: host, port: port)
            c.connections = 1
            c.http2.maxReceiveMessageSize = 64 << 20
            let executor = loops[i % loops.count]
            clients.append(GRPCClient(configuration: c, group: executor.loop))
            executors.append(executor)
        }
        self.endpoints = endpoints
        self.clients = clients
        self.executors = executors
        self.mode = mode
        self.options = CallOptions(timeout: timeoutSeconds.flatMap { $0 > 0 ? .nanoseconds(Int64($0 * 1e9)) : nil })
    }

    public func client(_ worker: Int) -> GRPCClient { clients[worker % clients.count] }

    /// Where worker (or stream) w runs: its connection's event loop, or nil (Swift's default executor).
    public func executor(_ worker: Int) -> (any TaskExecutor)? {
        mode == .pool ? nil : executors[worker % executors.count]
    }

    /// Opens every connection (one cheap serializable Range per connection) so that connection set-up
    /// is not measured, and fails early with the status when an endpoint does not answer.
    public func warmUp() async throws {
        var req = Etcdserverpb.RangeRequest()
        req.key = Array("keel-bench/warm-up".utf8)
        req.serializable = true
        for c in clients {
            _ = try await c.unary(Etcdserverpb.KV.range, req, options: options)
        }
    }

    public func close() async {
        for c in clients { await c.close() }
    }
}
