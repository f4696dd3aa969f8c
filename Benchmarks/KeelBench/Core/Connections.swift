import GRPC
import KeelAPI

/// The gRPC clients of a run: one GRPCClient per endpoint, `conns` HTTP/2 connections spread over
/// the endpoints; worker w uses endpoint w % endpoints (GRPCClient round-robins its connections).
public final class Connections: Sendable {
    public let endpoints: [String]
    public let clients: [GRPCClient]
    public let options: CallOptions
    public let totalConnections: Int
    let connectionsPerClient: [Int]

    /// `endpoints`: "host:port" (an `http://` prefix is accepted, as etcdctl does).
    public init(endpoints: [String], conns: Int, timeoutSeconds: Double?) throws(BenchError) {
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
        var clients: [GRPCClient] = []
        var total = 0
        var per: [Int] = []
        for (n, (host, port)) in parsed.enumerated() {
            var c = GRPCClient.Configuration(host: host, port: port)
            c.connections = max(1, conns / parsed.count + (n < conns % parsed.count ? 1 : 0))
            c.http2.maxReceiveMessageSize = 64 << 20
            total += c.connections
            per.append(c.connections)
            clients.append(GRPCClient(configuration: c))
        }
        self.endpoints = endpoints
        self.clients = clients
        self.totalConnections = total
        self.connectionsPerClient = per
        self.options = CallOptions(timeout: timeoutSeconds.flatMap { $0 > 0 ? .nanoseconds(Int64($0 * 1e9)) : nil })
    }

    public func client(_ worker: Int) -> GRPCClient { clients[worker % clients.count] }

    /// Opens every connection (one cheap serializable Range per connection) so that connection set-up
    /// is not measured, and fails early with the status when an endpoint does not answer.
    public func warmUp() async throws {
        var req = Etcdserverpb.RangeRequest()
        req.key = Array("keel-bench/warm-up".utf8)
        req.serializable = true
        for (c, n) in zip(clients, connectionsPerClient) {
            for _ in 0..<n {
                _ = try await c.unary(Etcdserverpb.KV.range, req, options: options)
            }
        }
    }

    public func close() async {
        for c in clients { await c.close() }
    }
}
