// The client side of one keelctl run: KeelClient (balancer over --endpoints) for unary calls, a GRPCClient
// per endpoint for the streaming ones (watch, keep-alive, snapshot), and etcdctl's error texts.
import Foundation
import GRPC
import KeelAPI
import KeelClient

struct Connection: Sendable {
    let endpoints: [String]
    let commandTimeout: Duration
    let dialTimeout: Duration
    let format: OutputFormat
    let hex: Bool
    let client: KeelClient

    init(endpoints: [String], commandTimeout: Duration, dialTimeout: Duration, format: OutputFormat, hex: Bool)
        throws(CtlFailure) {
        self.endpoints = endpoints
        self.commandTimeout = commandTimeout
        self.dialTimeout = dialTimeout
        self.format = format
        self.hex = hex
        client = try Self.makeClient(endpoints, commandTimeout: commandTimeout, dialTimeout: dialTimeout)
    }

    static func makeClient(_ endpoints: [String], commandTimeout: Duration, dialTimeout: Duration)
        throws(CtlFailure) -> KeelClient {
        var config = KeelClient.Configuration(endpoints: endpoints)
        config.timeout = commandTimeout
        config.dialTimeout = dialTimeout
        do {
            return try KeelClient(configuration: config)
        } catch {
            throw CtlFailure(.badArgs, CtlFailure.message(for: error))
        }
    }

    /// A client for one endpoint (endpoint status/health/defrag address each member on its own, also the
    /// ones `--cluster` found in the member list).
    func single(_ endpoint: String) throws(CtlFailure) -> KeelClient {
        try Self.makeClient([endpoint], commandTimeout: commandTimeout, dialTimeout: dialTimeout)
    }

    /// One unary call through KeelClient's balancer. While no endpoint can be reached it keeps trying until
    /// the command timeout, as etcdctl's gRPC client waits for a connection, then fails with "context
    /// deadline exceeded". `wrap` decorates the message (e.g. "failed to grant lease (...)").
    func unary<Req, Resp>(_ method: MethodDescriptor<Req, Resp>, _ request: Req, idempotent: Bool,
                          on one: KeelClient? = nil, timeout: Duration? = nil, code: ExitCode = .error,
                          wrap: (String) -> String = { $0 }) async throws(CtlFailure) -> Resp {
        let clock = ContinuousClock()
        let deadline = clock.now + (timeout ?? commandTimeout)
        var delay = Duration.milliseconds(50)
        let c = one ?? client
        while true {
            let remaining = deadline - clock.now
            if remaining <= .zero { throw CtlFailure(code, wrap("context deadline exceeded")) }
            do {
                return try await c.call(method, request, idempotent: idempotent, timeout: remaining)
            } catch {
                if case .unavailable = error, clock.now + delay < deadline {
                    try? await Task.sleep(for: delay)
                    delay = min(delay * 2, .milliseconds(500))
                    continue
                }
                throw CtlFailure(code, wrap(CtlFailure.message(for: error)))
            }
        }
    }

    /// A raw gRPC client for one endpoint ("host:port" or "http://host:port"), for streaming calls.
    static func grpc(_ endpoint: String) throws(CtlFailure) -> GRPCClient {
        var s = Substring(endpoint)
        if s.hasPrefix("http://") { s = s.dropFirst(7) }
        guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), port > 0, port < 65536 else {
            throw CtlFailure(.badArgs, "bad endpoint \(endpoint)")
        }
        return GRPCClient(host: String(s[..<colon]), port: port)
    }

    /// The text etcdctl prints for a failed streaming call.
    static func message(for error: any Error) -> String {
        if let st = error as? GRPCStatus {
            if st.code == .unavailable { return "context deadline exceeded" }
            return CtlFailure.message(for: .server(code: st.code, message: st.message))
        }
        if let e = error as? KeelClientError { return CtlFailure.message(for: e) }
        return "\(error)"
    }
}
