import Foundation

/// Latency figures in milliseconds.
public struct LatencySummary: Codable, Sendable, Equatable {
    public var min: Double
    public var avg: Double
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var p999: Double
    public var max: Double

    public init(_ h: LatencyHistogram) {
        func ms(_ ns: Double) -> Double { (ns / 1e6 * 1000).rounded() / 1000 }   // µs precision
        min = h.count == 0 ? 0 : ms(Double(h.minNanos))
        avg = ms(h.meanNanos)
        p50 = ms(h.percentileNanos(50))
        p90 = ms(h.percentileNanos(90))
        p99 = ms(h.percentileNanos(99))
        p999 = ms(h.percentileNanos(99.9))
        max = ms(Double(h.maxNanos))
    }
}

/// One phase of a run, as printed and as written by `--json`.
public struct PhaseSummary: Codable, Sendable {
    public var name: String
    /// Requests (or events) attempted: ok + errors.
    public var requests: Int
    public var ok: Int
    public var errors: [String: Int]
    public var seconds: Double
    /// Successful requests (events) per second over the phase.
    public var rps: Double
    public var latencyMs: LatencySummary
    /// [percentile, milliseconds] pairs for CDF plots.
    public var cdf: [[Double]]
    /// Only for phases with a known target count (watch events).
    public var expected: Int?

    static let cdfPercentiles: [Double] = Array(stride(from: 0.0, through: 99.0, by: 1.0))
        + [99.5, 99.9, 99.95, 99.99, 100]

    public init(_ p: PhaseResult) {
        let h = p.recorder.histogram
        name = p.name
        ok = Int(h.count)
        errors = p.recorder.errors
        requests = ok + p.recorder.errorCount
        seconds = Double(p.elapsedNanos) / 1e9
        rps = seconds > 0 ? (Double(ok) / seconds * 10).rounded() / 10 : 0
        latencyMs = LatencySummary(h)
        cdf = h.count == 0 ? [] : Self.cdfPercentiles.map { [$0, (h.percentileNanos($0) / 1e3).rounded() / 1e3] }
        expected = p.expected
    }
}

/// The whole output of one keel-bench invocation.
public struct BenchReport: Codable, Sendable {
    public var tool = "keel-bench"
    public var command: String
    public var endpoints: [String]
    public var conns: Int
    public var clients: Int
    public var parameters: [String: String]
    public var phases: [PhaseSummary]
    public var startedAt: String

    public init(command: String, endpoints: [String], conns: Int, clients: Int, parameters: [String: String],
                phases: [PhaseResult], startedAt: Date) {
        self.command = command
        self.endpoints = endpoints
        self.conns = conns
        self.clients = clients
        self.parameters = parameters
        self.phases = phases.map(PhaseSummary.init)
        self.startedAt = ISO8601DateFormatter().string(from: startedAt)
    }

    public func json() -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.keyEncodingStrategy = .convertToSnakeCase
        guard let d = try? e.encode(self) else { return "{}" }
        return String(decoding: d, as: UTF8.self)
    }

    public static func decode(_ text: String) throws -> BenchReport {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return try d.decode(BenchReport.self, from: Data(text.utf8))
    }

    /// Human-readable summary, one block per phase.
    public func text() -> String {
        var out = "keel-bench \(command): endpoints \(endpoints.joined(separator: ",")), conns \(conns), clients \(clients)\n"
        let params = parameters.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        if !params.isEmpty { out += "  \(params)\n" }
        for p in phases {
            out += "\nSummary (\(p.name)):\n"
            out += "  Total:        \(String(format: "%.4f", p.seconds)) s\n"
            var line = "  Requests:     \(p.requests) (\(p.ok) ok, \(p.requests - p.ok) errors)"
            if let e = p.expected { line += ", expected \(e)" }
            out += line + "\n"
            out += "  Requests/sec: \(String(format: "%.1f", p.rps))\n"
            let l = p.latencyMs
            out += "  Latency (ms): " + String(format: "min %.3f  avg %.3f  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f",
                                                 l.min, l.avg, l.p50, l.p90, l.p99, l.p999, l.max) + "\n"
            if !p.errors.isEmpty {
                out += "  Errors:       " + p.errors.sorted { $0.key < $1.key }.map { "\($0.key) x\($0.value)" }.joined(separator: ", ") + "\n"
            }
        }
        return out
    }
}
