// keel-bench: a load generator for any etcd v3 endpoint (Keel or etcd), in the spirit of etcd's
// `benchmark` tool, built directly on Keel's GRPCClient and the generated etcd API types.
//
//   keel-bench put --endpoints 127.0.0.1:2379 --conns 10 --clients 100 --total 100000 --key-space 100000 --val-size 256
//   keel-bench range --consistency s --prefill 1000 --key-space 1000 --total 50000 --clients 100
//   keel-bench txn-mixed --rw-ratio 4 ...   keel-bench watch --streams 10 --watchers-per-stream 100 ...
//   add --json for a machine-readable report on stdout (progress goes to stderr, only on a terminal).
import ArgumentParser
import CJemalloc
import Foundation
import KeelBenchCore

@main
struct KeelBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keel-bench",
        abstract: "Load generator for etcd v3 endpoints (Keel or etcd).",
        subcommands: [Put.self, Range.self, TxnPut.self, TxnMixed.self, Watch.self, WatchLatency.self, LeaseKeepalive.self])
}

struct CommonOptions: ParsableArguments {
    @Option(help: "Comma-separated host:port list.")
    var endpoints: String = "127.0.0.1:2379"
    @Option(help: "HTTP/2 connections in total (spread over the endpoints).")
    var conns: Int = 1
    @Option(help: "Concurrent requests (client workers) in total.")
    var clients: Int = 1
    @Option(help: "Stop after this many seconds (with or instead of --total).")
    var duration: Double?
    @Option(help: "Requests per second for all clients together (0: as fast as possible).")
    var rate: Double = 0
    @Option(help: "Per-request timeout in seconds (0: none, as etcd's benchmark tool; a deadline costs a timer per request).")
    var timeout: Double = 0
    @Flag(help: "Print the report as JSON on stdout.")
    var json = false
    @Flag(help: "No progress bar (it is drawn only when stderr is a terminal anyway).")
    var noProgress = false
    @Option(help: "How client workers run: callback (unary workloads: chains of calls on the connections' event loops, no task per call), loop (a task per worker on its connection's event loop) or pool (a task per worker on Swift's default executor).")
    var executor: WorkerExecutor = .callback

    /// `total` nil: `defaultTotal` unless --duration is given (then the duration alone ends the run).
    func params(total: Int?, defaultTotal: Int) -> CommonParams {
        CommonParams(endpoints: endpoints.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
                        .filter { !$0.isEmpty },
                     conns: conns, clients: clients, total: total ?? (duration == nil ? defaultTotal : nil),
                     durationSeconds: duration, rate: rate, timeoutSeconds: timeout > 0 ? timeout : nil,
                     progress: !noProgress && stderrIsTerminal, executor: executor)
    }
}

struct KeyOptions: ParsableArguments {
    @Option(help: "Key size in bytes (fixed-width decimal key numbers, after --key-prefix).")
    var keySize: Int = 8
    @Option(help: "Value size in bytes.")
    var valSize: Int = 8
    @Option(help: "Number of distinct keys.")
    var keySpace: Int = 1
    @Flag(help: "Use keys in order (0, 1, 2, ...) instead of a random pick per request.")
    var sequentialKeys = false
    @Option(help: "Prefix of every key.")
    var keyPrefix: String = ""

    func generator() throws -> KeyGenerator {
        try KeyGenerator(prefix: keyPrefix, size: keySize, space: keySpace, sequential: sequentialKeys)
    }

    var parameters: [String: String] {
        ["key_size": "\(keySize)", "val_size": "\(valSize)", "key_space": "\(keySpace)",
         "sequential_keys": "\(sequentialKeys)", "key_prefix": keyPrefix]
    }
}

/// Runs a workload, prints its report, and sets the exit status (2 when nothing succeeded).
func emit(_ command: String, _ common: CommonOptions, _ c: CommonParams, _ parameters: [String: String],
          _ body: () async throws -> [PhaseResult]) async throws {
    let started = Date()
    let phases: [PhaseResult]
    do {
        phases = try await body()
    } catch let e as BenchError {
        throw ValidationError(e.message)
    }
    var params = parameters
    params["total"] = c.total.map { "\($0)" } ?? "-"
    params["duration"] = c.durationSeconds.map { "\($0)" } ?? "-"
    params["rate"] = "\(c.rate)"
    // jemalloc, as the server's: glibc's malloc took ~10% of keel-bench's CPU at 128 clients.
    params["malloc"] = keel_jemalloc_version().map { "jemalloc " + String(cString: $0) } ?? "glibc"
    let report = BenchReport(command: command, endpoints: c.endpoints, conns: c.conns, clients: c.clients,
                             parameters: params, phases: phases, startedAt: started)
    print(common.json ? report.json() : report.text())
    if let first = phases.first, first.recorder.histogram.count == 0 { throw ExitCode(2) }
}

extension Consistency: ExpressibleByArgument {}
extension WorkerExecutor: ExpressibleByArgument {}

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Put requests.")
    @OptionGroup var common: CommonOptions
    @OptionGroup var keys: KeyOptions
    @Option(help: "Requests in total (default 10000, or none with --duration).") var total: Int?

    func run() async throws {
        let c = common.params(total: total, defaultTotal: 10000)
        let gen = try keys.generator()
        try await emit("put", common, c, keys.parameters) {
            try await Workloads.put(c, keys: gen, valSize: keys.valSize)
        }
    }
}

struct Range: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Range requests: [key, end) as given, or --range-size consecutive keys from a key of the key space.")
    @OptionGroup var common: CommonOptions
    @OptionGroup var keys: KeyOptions
    @Argument(help: "Fixed key to read (optional; default: keys of the key space).") var key: String?
    @Argument(help: "Fixed range end (optional).") var end: String?
    @Option(help: "Requests in total (default 10000, or none with --duration).") var total: Int?
    @Option(help: "l (linearizable) or s (serializable).") var consistency: Consistency = .linearizable
    @Option(help: "Keys per range when reading from the key space.") var rangeSize: Int = 1
    @Option(help: "Range limit (0: none).") var limit: Int64 = 0
    @Option(help: "Put keys 0..<N of the key space first (not measured).") var prefill: Int = 0

    func run() async throws {
        let c = common.params(total: total, defaultTotal: 10000)
        let gen = try keys.generator()
        var p = keys.parameters
        p["consistency"] = consistency.rawValue
        p["range_size"] = "\(rangeSize)"
        p["prefill"] = "\(prefill)"
        let fixed = key.map { (key: Array($0.utf8), end: Array((end ?? "").utf8)) }
        try await emit("range", common, c, p) {
            try await Workloads.range(c, keys: gen, fixed: fixed, rangeSize: rangeSize, consistency: consistency,
                                      limit: limit, prefill: prefill, valSize: keys.valSize)
        }
    }
}

struct TxnPut: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "txn-put", abstract: "Txn requests of --txn-ops puts each.")
    @OptionGroup var common: CommonOptions
    @OptionGroup var keys: KeyOptions
    @Option(help: "Requests in total (default 10000, or none with --duration).") var total: Int?
    @Option(help: "Puts per txn.") var txnOps: Int = 1

    func run() async throws {
        let c = common.params(total: total, defaultTotal: 10000)
        let gen = try keys.generator()
        var p = keys.parameters
        p["txn_ops"] = "\(txnOps)"
        try await emit("txn-put", common, c, p) {
            try await Workloads.txnPut(c, keys: gen, valSize: keys.valSize, opsPerTxn: txnOps)
        }
    }
}

struct TxnMixed: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "txn-mixed",
                                                    abstract: "Txn requests, each one Range (read) or one Put (write).")
    @OptionGroup var common: CommonOptions
    @OptionGroup var keys: KeyOptions
    @Option(help: "Requests in total (default 10000, or none with --duration).") var total: Int?
    @Option(help: "Reads per write.") var rwRatio: Double = 1
    @Option(help: "l (linearizable) or s (serializable) reads.") var consistency: Consistency = .linearizable
    @Option(help: "Keys per read.") var rangeSize: Int = 1
    @Option(help: "Put keys 0..<N of the key space first (not measured).") var prefill: Int = 0

    func run() async throws {
        let c = common.params(total: total, defaultTotal: 10000)
        let gen = try keys.generator()
        var p = keys.parameters
        p["rw_ratio"] = "\(rwRatio)"
        p["consistency"] = consistency.rawValue
        p["range_size"] = "\(rangeSize)"
        p["prefill"] = "\(prefill)"
        try await emit("txn-mixed", common, c, p) {
            try await Workloads.txnMixed(c, keys: gen, valSize: keys.valSize, readsPerWrite: rwRatio, rangeSize: rangeSize,
                                         consistency: consistency, prefill: prefill)
        }
    }
}

struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Watchers on --key-space keys, then puts to those keys; put -> event latency per event.")
    @OptionGroup var common: CommonOptions
    @OptionGroup var keys: KeyOptions
    @Option(help: "Puts in total (default 1000, or none with --duration).") var total: Int?
    @Option(help: "Watch streams (spread over the connections).") var streams: Int = 10
    @Option(help: "Watchers per stream.") var watchersPerStream: Int = 10
    @Option(help: "Seconds to wait for missing events after the last put.") var grace: Double = 10

    func run() async throws {
        let c = common.params(total: total, defaultTotal: 1000)
        let gen = try keys.generator()
        var p = keys.parameters
        p["streams"] = "\(streams)"
        p["watchers_per_stream"] = "\(watchersPerStream)"
        try await emit("watch", common, c, p) {
            try await Workloads.watch(c, keys: gen, valSize: keys.valSize, streams: streams,
                                      watchersPerStream: watchersPerStream, graceSeconds: grace, label: "watch")
        }
    }
}

struct WatchLatency: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch-latency",
        abstract: "All watchers on one key; paced puts (--rate, default 100/s); put -> event latency of every watcher.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Key size in bytes.") var keySize: Int = 8
    @Option(help: "Value size in bytes (>= 8).") var valSize: Int = 8
    @Option(help: "Puts in total (default 1000, or none with --duration).") var total: Int?
    @Option(help: "Put rate (puts per second; overrides --rate).") var putRate: Double = 100
    @Option(help: "Watch streams.") var streams: Int = 10
    @Option(help: "Watchers per stream.") var watchersPerStream: Int = 10
    @Option(help: "Seconds to wait for missing events after the last put.") var grace: Double = 10

    func run() async throws {
        var c = common.params(total: total, defaultTotal: 1000)
        c.rate = putRate
        let gen = try KeyGenerator(size: keySize, space: 1, sequential: true)
        let p = ["key_size": "\(keySize)", "val_size": "\(valSize)", "streams": "\(streams)",
                 "watchers_per_stream": "\(watchersPerStream)", "put_rate": "\(putRate)"]
        try await emit("watch-latency", common, c, p) {
            try await Workloads.watch(c, keys: gen, valSize: valSize, streams: streams,
                                      watchersPerStream: watchersPerStream, graceSeconds: grace, label: "watch-latency")
        }
    }
}

struct LeaseKeepalive: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lease-keepalive", abstract: "Lease keep-alive round trips (one lease and stream per client).")
    @OptionGroup var common: CommonOptions
    @Option(help: "Keep-alives in total (default 10000, or none with --duration).") var total: Int?
    @Option(help: "Lease TTL in seconds.") var ttl: Int64 = 60

    func run() async throws {
        let c = common.params(total: total, defaultTotal: 10000)
        try await emit("lease-keepalive", common, c, ["ttl": "\(ttl)"]) {
            try await Workloads.leaseKeepAlive(c, ttl: ttl)
        }
    }
}
