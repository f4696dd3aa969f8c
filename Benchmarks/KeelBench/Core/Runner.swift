import GRPC
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What one client (worker) measured: latencies of its successful requests and its errors by code.
/// Confined to its worker; the runner merges them when every worker is done.
public struct Recorder: Sendable {
    public var histogram = LatencyHistogram()
    public var errors: [String: Int] = [:]

    public init() {}

    public mutating func error(_ e: any Error) { errors[Self.code(of: e), default: 0] += 1 }

    /// gRPC status code name (`UNAVAILABLE`, ...) of an error; other client-side failures are grouped.
    public static func code(of e: any Error) -> String {
        if let s = e as? GRPCStatus { return s.code.description }
        if e is CancellationError { return "CANCELLED" }
        if let b = e as? BenchError { return b.message.hasPrefix("MISMATCH") ? "RESPONSE_MISMATCH" : "CLIENT_ERROR" }
        return "CLIENT_ERROR"
    }

    public mutating func merge(_ o: Recorder) {
        histogram.merge(o.histogram)
        for (k, v) in o.errors { errors[k, default: 0] += v }
    }

    public var errorCount: Int { errors.values.reduce(0, +) }

    /// Times `body`; records its latency on success, its code on failure; counts it as completed.
    public mutating func measure(_ runner: LoadRunner, _ body: () async throws -> Void) async {
        let t0 = monotonicNanos()
        do {
            try await body()
            histogram.record(nanos: monotonicNanos() &- t0)
        } catch {
            self.error(error)
        }
        runner.completed.add(1, ordering: .relaxed)
    }
}

/// The outcome of one phase (a named latency distribution over one time span).
public struct PhaseResult: Sendable {
    public var name: String
    public var elapsedNanos: UInt64
    public var recorder: Recorder
    /// For phases whose count is known in advance (watch events): how many were expected.
    public var expected: Int?

    public init(name: String, elapsedNanos: UInt64, recorder: Recorder, expected: Int? = nil) {
        self.name = name
        self.elapsedNanos = elapsedNanos
        self.recorder = recorder
        self.expected = expected
    }
}

/// A closed-loop load runner in the style of etcd's benchmark tool: `clients` workers each issue one
/// request at a time; request numbers come from a shared counter until `total` are issued or the
/// duration is over; with a rate, request i is not sent before start + i / rate.
public final class LoadRunner: Sendable {
    public let total: Int?
    public let durationNanos: UInt64?
    public let rate: Double
    /// Executor preference of worker w (nil: Swift's default executor).
    let placement: @Sendable (Int) -> (any TaskExecutor)?
    let issued = Atomic<Int>(0)
    public let completed = Atomic<Int>(0)
    let start = Atomic<UInt64>(0)

    public init(total: Int?, durationSeconds: Double?, rate: Double,
                placement: @escaping @Sendable (Int) -> (any TaskExecutor)? = { _ in nil }) {
        self.placement = placement
        self.total = total
        self.durationNanos = durationSeconds.map { UInt64(max(0, $0) * 1e9) }
        self.rate = rate
    }

    /// The next request number for a worker, after pacing; nil when the phase is over.
    public func next() async -> Int? {
        guard let (i, wait) = claim() else { return nil }
        if wait > 0 {
            do { try await Task.sleep(nanoseconds: wait) } catch { return nil }
            if durationOver() { return nil }
        }
        return i
    }

    /// The next request number and how long to wait before sending it (the pacing of `rate`, in
    /// nanoseconds; 0: now); nil when the phase is over. After a wait, check `durationOver()`.
    public func claim() -> (request: Int, waitNanos: UInt64)? {
        let i = issued.wrappingAdd(1, ordering: .relaxed).oldValue
        if let total, i >= total { return nil }
        let t0 = start.load(ordering: .relaxed)
        let now = monotonicNanos()
        if let d = durationNanos, now &- t0 >= d { return nil }
        guard rate > 0 else { return (i, 0) }
        let due = t0 &+ UInt64(Double(i) / rate * 1e9)
        return (i, due > now ? due - now : 0)
    }

    /// Whether the phase's --duration has passed.
    public func durationOver() -> Bool {
        guard let d = durationNanos else { return false }
        return monotonicNanos() &- start.load(ordering: .relaxed) >= d
    }

    /// Runs `clients` workers concurrently and returns what each produced, with the phase's duration.
    public func runWorkers<Out: Sendable>(clients: Int, progressLabel: String?,
                                          worker: @escaping @Sendable (Int) async -> Out) async -> (results: [Out], elapsedNanos: UInt64) {
        issued.store(0, ordering: .relaxed)
        completed.store(0, ordering: .relaxed)
        let t0 = monotonicNanos()
        start.store(t0, ordering: .relaxed)
        let bar = progressLabel.map { ProgressBar(label: $0, runner: self) }
        let printer = bar.map { b in Task { await b.loop() } }
        let results = await withTaskGroup(of: Out.self) { group in
            for w in 0..<max(1, clients) {
                group.addTask(executorPreference: placement(w)) { await worker(w) }
            }
            var all: [Out] = []
            for await r in group { all.append(r) }
            return all
        }
        let elapsed = monotonicNanos() &- t0
        printer?.cancel()
        await printer?.value
        bar?.finish()
        return (results, elapsed)
    }

    /// Runs `clients` workers; each returns one Recorder per name in `names` (merged by position).
    public func run(names: [String], clients: Int, progressLabel: String?,
                    worker: @escaping @Sendable (Int) async -> [Recorder]) async -> [PhaseResult] {
        let (results, elapsed) = await runWorkers(clients: clients, progressLabel: progressLabel, worker: worker)
        var all = names.map { _ in Recorder() }
        for recs in results {
            for (k, r) in recs.enumerated() where k < all.count { all[k].merge(r) }
        }
        return zip(names, all).map { PhaseResult(name: $0, elapsedNanos: elapsed, recorder: $1) }
    }

    var elapsedNanos: UInt64 { monotonicNanos() &- start.load(ordering: .relaxed) }
}

/// Writes to standard error without going through a shared C `FILE*`.
public func writeStderr(_ s: String) {
    var bytes = Array(s.utf8)
    var off = 0
    while off < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress! + off, $0.count - off) }
        if n <= 0 { return }
        off += n
    }
}

/// True when standard error is a terminal (then the progress bar is drawn).
public var stderrIsTerminal: Bool { isatty(2) == 1 }

/// A one-line progress bar on standard error, redrawn every 200 ms.
final class ProgressBar: Sendable {
    let label: String
    let runner: LoadRunner

    init(label: String, runner: LoadRunner) {
        self.label = label
        self.runner = runner
    }

    func loop() async {
        while !Task.isCancelled {
            draw()
            do { try await Task.sleep(nanoseconds: 200_000_000) } catch { return }
        }
    }

    func draw() {
        let done = runner.completed.load(ordering: .relaxed)
        let secs = Double(runner.elapsedNanos) / 1e9
        var fraction = 0.0
        if let t = runner.total, t > 0 { fraction = Double(done) / Double(t) }
        if let d = runner.durationNanos, d > 0 { fraction = max(fraction, min(1, Double(runner.elapsedNanos) / Double(d))) }
        let width = 30
        let filled = min(width, Int(fraction * Double(width)))
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let rate = secs > 0 ? Double(done) / secs : 0
        let of = runner.total.map { "/\($0)" } ?? ""
        writeStderr("\r\(label) [\(bar)] \(done)\(of) \(Int(fraction * 100))% \(Int(rate)) req/s   ")
    }

    func finish() {
        draw()
        writeStderr("\n")
    }
}
