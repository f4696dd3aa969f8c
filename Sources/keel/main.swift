import ArgumentParser
import Logging
import Server

#if canImport(Glibc)
import Glibc
#endif

/// `keel`: etcd's flags (same names, defaults and meanings; `-flag` works like `--flag`, and every
/// flag can come from its ETCD_* environment variable, the command line winning).
struct KeelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keel",
        abstract: "Keel: a distributed key-value store that speaks the etcd v3 API.")

    @Flag(name: .long, help: "Print the version and exit.")
    var version = false
    @Option(name: .long, help: "Human-readable name for this member.")
    var name = "default"
    @Option(name: .customLong("data-dir"), help: "Path to the data directory (default: ${name}.keel).")
    var dataDir: String?
    @Option(name: .customLong("listen-client-urls"), help: "List of URLs to listen on for client traffic.")
    var listenClientURLs = "http://localhost:2379"
    @Option(name: .customLong("advertise-client-urls"), help: "List of this member's client URLs to advertise to the public.")
    var advertiseClientURLs = "http://localhost:2379"
    @Option(name: .customLong("listen-peer-urls"), help: "List of URLs to listen on for peer traffic (a lone member on the default URL runs without a peer listener).")
    var listenPeerURLs = "http://localhost:2380"
    @Option(name: .customLong("initial-advertise-peer-urls"), help: "List of this member's peer URLs to advertise to the rest of the cluster.")
    var initialAdvertisePeerURLs = "http://localhost:2380"
    @Option(name: .customLong("initial-cluster"), help: "Initial cluster configuration for bootstrapping (default: ${name}=${initial-advertise-peer-urls}).")
    var initialCluster: String?
    @Option(name: .customLong("initial-cluster-state"), help: "Initial cluster state ('new' or 'existing').")
    var initialClusterState = "new"
    @Option(name: .customLong("initial-cluster-token"), help: "Initial cluster token for the cluster during bootstrap.")
    var initialClusterToken = "etcd-cluster"
    @Option(name: .customLong("heartbeat-interval"), help: "Time (in milliseconds) of a heartbeat interval.")
    var heartbeatInterval = 100
    @Option(name: .customLong("election-timeout"), help: "Time (in milliseconds) for an election to timeout.")
    var electionTimeout = 1000
    @Option(name: .customLong("snapshot-count"), help: "Number of committed transactions to trigger a snapshot to disk.")
    var snapshotCount: UInt64 = 100_000
    @Option(name: .customLong("backend-batch-interval"), help: "BackendBatchInterval is the maximum time before commit the backend transaction.")
    var backendBatchInterval = ""
    @Option(name: .customLong("backend-batch-limit"), help: "BackendBatchLimit is the maximum operations before commit the backend transaction.")
    var backendBatchLimit = 0
    @Option(name: .customLong("experimental-snapshot-catchup-entries"), help: "Number of entries for a slow follower to catch up after compacting the raft storage entries.")
    var snapshotCatchUpEntries: UInt64 = 5000
    @Option(name: .customLong("quota-backend-bytes"), help: "Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).")
    var quotaBackendBytes: Int64 = 0
    @Option(name: .customLong("max-request-bytes"), help: "Maximum client request size in bytes the server will accept.")
    var maxRequestBytes = 1_572_864
    @Option(name: .customLong("max-txn-ops"), help: "Maximum number of operations permitted in a transaction.")
    var maxTxnOps = 128
    @Option(name: .customLong("auto-compaction-mode"), help: "Interpret 'auto-compaction-retention' one of: periodic|revision.")
    var autoCompactionMode = "periodic"
    @Option(name: .customLong("auto-compaction-retention"), help: "Auto compaction retention (0 disables; periodic: hours or a duration).")
    var autoCompactionRetention = "0"
    @Option(name: .customLong("log-level"), help: "Configures log level: debug, info, warn, error, panic, or fatal.")
    var logLevel = "info"
    @Option(name: .long, help: "Restore a new data dir from a snapshot file (from `etcdctl snapshot save`) before starting.")
    var restore: String?

    static let valueFlags = [
        "name", "data-dir", "listen-client-urls", "advertise-client-urls", "listen-peer-urls",
        "initial-advertise-peer-urls", "initial-cluster", "initial-cluster-state", "initial-cluster-token",
        "heartbeat-interval", "election-timeout", "snapshot-count", "backend-batch-interval", "backend-batch-limit", "experimental-snapshot-catchup-entries", "quota-backend-bytes", "max-request-bytes",
        "max-txn-ops", "auto-compaction-mode", "auto-compaction-retention", "log-level",
    ]

    var serverConfig: ServerConfig {
        var c = ServerConfig()
        c.name = name
        c.dataDir = dataDir
        c.listenClientURLs = listenClientURLs
        c.advertiseClientURLs = advertiseClientURLs
        c.listenPeerURLs = listenPeerURLs
        c.initialAdvertisePeerURLs = initialAdvertisePeerURLs
        c.initialCluster = initialCluster
        c.initialClusterState = initialClusterState
        c.initialClusterToken = initialClusterToken
        c.heartbeatIntervalMs = heartbeatInterval
        c.electionTimeoutMs = electionTimeout
        c.snapshotCount = snapshotCount
        c.backendBatchInterval = backendBatchInterval
        c.backendBatchLimit = backendBatchLimit
        c.snapshotCatchUpEntries = snapshotCatchUpEntries
        c.quotaBackendBytes = quotaBackendBytes
        c.maxRequestBytes = maxRequestBytes
        c.maxTxnOps = maxTxnOps
        c.autoCompactionMode = autoCompactionMode
        c.autoCompactionRetention = autoCompactionRetention
        c.logLevel = logLevel
        c.restoreFile = restore
        return c
    }
}

func fail(_ message: String, code: Int32) -> Never {
    let line = "keel: " + (message.split(separator: "\n").first.map(String.init) ?? message) + "\n"
    _ = line.utf8CString.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count - 1) }
    exit(code)
}

var environment: [String: String] = [:]
for f in KeelCommand.valueFlags {
    let v = FlagEnvironment.variable(forFlag: f)
    if let p = getenv(v) { environment[v] = String(cString: p) }
}
let arguments = FlagEnvironment.merge(arguments: Array(CommandLine.arguments.dropFirst()), environment: environment,
                                      flags: KeelCommand.valueFlags)
let command: KeelCommand
do {
    command = try KeelCommand.parse(arguments)
} catch {
    if KeelCommand.exitCode(for: error) == .success {
        print(KeelCommand.fullMessage(for: error))
        exit(0)
    }
    fail(KeelCommand.message(for: error), code: 2)
}
if command.version {
    print("keel Version: \(KeelVersion.keel)")
    print("API Version: \(KeelVersion.etcdAPI)")
    exit(0)
}
let config = command.serverConfig
do { _ = try config.resolve() } catch { fail(error.message, code: 2) }

let level = JSONLogHandler.level(etcd: config.logLevel)
LoggingSystem.bootstrap { label in JSONLogHandler(label: label, level: level) }
let logger = Logger(label: "keel")

// SIGINT / SIGTERM: clean shutdown (in-flight calls end, WAL and store closed).
let signalTask = Task { await SignalWaiter.wait(for: [SIGINT, SIGTERM]) }

let server: KeelServer
do {
    server = try await KeelServer.start(config: config, logger: logger)
} catch {
    logger.critical("failed to start", metadata: ["error": "\(error)"])
    fail("\(error)", code: 1)
}
logger.info("ready to serve client requests", metadata: ["ports": "\(server.clientPorts)", "malloc": "\(Allocator.name)"])
// etcd stops a member that applied its own removal; it stays up two election timeouts first (the
// others may still need its vote until they have applied the removal too).
let removedTask = Task {
    while !Task.isCancelled && !server.core.shared.isRemoved { try? await Task.sleep(for: .milliseconds(100)) }
    try? await Task.sleep(for: .milliseconds(2 * config.electionTimeoutMs))
    return SIGTERM
}
let sig = await withTaskGroup(of: Int32.self) { g in
    g.addTask { await signalTask.value }
    g.addTask { await removedTask.value }
    let first = await g.next() ?? SIGTERM
    removedTask.cancel()
    signalTask.cancel()
    g.cancelAll()
    return first
}
if server.core.shared.isRemoved {
    logger.warning("the member has been permanently removed from the cluster; shutting down")
} else {
    logger.info("received signal; shutting down", metadata: ["signal": "\(sig == SIGINT ? "SIGINT" : "SIGTERM")"])
}
await server.shutdown()
exit(0)
