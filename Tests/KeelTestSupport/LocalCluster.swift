// LocalCluster: N members of etcd 3.4 OR keel on loopback, started with the same etcd flags, for
// multi-process and fault tests: any server, peer links through TCP proxies the test controls, kill -9 / SIGSTOP /
// SIGCONT / restart on the same data dir, new members for `member add`, leader lookup.
// (ReferenceEtcdCluster.start is the etcd-only shorthand for it.)
//
//     try await LocalCluster.with(.keel, members: 3, options: .init(proxiedPeers: true)) { c in
//         let eps = await c.endpoints                     // ["127.0.0.1:p0", ...]
//         let leader = try await c.waitForLeader()        // index of the member that leads
//         await c.kill(leader); try await c.restart(leader)
//         try await c.isolate(1); ...; try await c.healAll()
//     }                                                   // everything stopped and removed, also on throw
//
// Peer proxies: with `proxiedPeers`, member j listens for peers on a private port and advertises the
// port of its PeerProxy instead, so every peer connection to j goes through the proxy. The proxy finds
// which member opened each connection (Linux: the client socket's inode in /proc/net/tcp, then the
// member process holding it in /proc/<pid>/fd), so the test can cut and heal single directed links
// ("connections member i opens to member j") or isolate a member entirely. A cut link closes its open
// connections and refuses new ones (RST) until healed.
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Which server a LocalCluster runs.
public enum ClusterServer: String, Sendable, CustomStringConvertible {
    /// Debian's etcd 3.4 (RepoPaths.etcd).
    case etcd
    /// The built `keel` executable (BuildProducts).
    case keel

    public var description: String { rawValue }

    /// Path of the server binary; throws when it is missing.
    public func executable() throws -> String {
        switch self {
        case .etcd:
            try RepoPaths.requireEtcd()
            return RepoPaths.etcd
        case .keel:
            return try BuildProducts.require("keel")
        }
    }

    /// True when the binary is there (tests use it in `.enabled(if:)`).
    public var isAvailable: Bool {
        switch self {
        case .etcd: return RepoPaths.etcdAvailable
        case .keel: return BuildProducts.executable("keel") != nil && RepoPaths.etcdAvailable
        }
    }
}

/// One member's `etcdctl endpoint status -w json`, numbers kept as decimal text (member IDs are uint64).
public struct MemberStatus: Sendable, Hashable {
    public var memberID: String
    public var leader: String
    public var revision: Int64
    public var raftTerm: Int64
    public var raftIndex: Int64
    public var raftAppliedIndex: Int64
    public var isLeader: Bool { memberID == leader && leader != "0" }

    /// Parses the JSON `etcdctl endpoint status -w json` prints for one endpoint.
    public init?(etcdctlJSON text: String) {
        func number(_ key: String) -> String? {
            guard let r = text.range(of: "\"\(key)\":") else { return nil }
            let digits = text[r.upperBound...].drop { $0 == " " }.prefix { $0.isNumber }
            return digits.isEmpty ? nil : String(digits)
        }
        guard let id = number("member_id"), let leader = number("leader") else { return nil }
        memberID = id
        self.leader = leader
        revision = number("revision").flatMap { Int64($0) } ?? 0
        raftTerm = number("raftTerm").flatMap { Int64($0) } ?? 0
        raftIndex = number("raftIndex").flatMap { Int64($0) } ?? 0
        raftAppliedIndex = number("raftAppliedIndex").flatMap { Int64($0) } ?? 0
    }
}

public actor LocalCluster {
    public struct Options: Sendable {
        public var heartbeatMillis = 100
        public var electionMillis = 1000
        /// Route every peer connection through a PeerProxy (needed for cut/heal/isolate).
        public var proxiedPeers = false
        /// More flags for every member (e.g. ["--snapshot-count", "100"]).
        public var extraArguments: [String] = []
        /// Data dirs chosen by the caller (e.g. on a small filesystem it mounted) by member index; the
        /// cluster does not remove them at stop, but empties them before each start attempt: a member of
        /// a failed attempt leaves a WAL with that attempt's cluster ID, and the next attempt's member would
        /// start on it and refuse its new peers (CI: etcd "request cluster ID mismatch", never serving).
        /// Others live under the cluster's temp dir.
        public var dataDirs: [Int: String] = [:]
        /// More environment variables by member index (e.g. an LD_PRELOAD fault shim for one member).
        public var environments: [Int: [String: String]] = [:]
        /// How long start / restart wait for a member to serve.
        public var startTimeout: Duration = .seconds(90)
        public init(heartbeatMillis: Int = 100, electionMillis: Int = 1000, proxiedPeers: Bool = false,
                    extraArguments: [String] = []) {
            self.heartbeatMillis = heartbeatMillis
            self.electionMillis = electionMillis
            self.proxiedPeers = proxiedPeers
            self.extraArguments = extraArguments
        }
    }

    /// A member's fixed identity: name, ports and data dir survive restarts.
    public struct Slot: Sendable {
        public let name: String
        public let clientPort: Int
        /// The port the member listens on for peers.
        public let peerPort: Int
        /// The port the member advertises to peers (its proxy's, or `peerPort` without proxies).
        public let advertisedPeerPort: Int
        public let dataDir: String
        public var endpoint: String { "127.0.0.1:\(clientPort)" }
        public var clientURL: String { "http://127.0.0.1:\(clientPort)" }
        public var peerURL: String { "http://127.0.0.1:\(advertisedPeerPort)" }
    }

    public nonisolated let server: ClusterServer
    public nonisolated let options: Options
    public nonisolated let token: String
    /// Every member slot, in order (grows with `addSlot`). Behind a Mutex rather than actor state so that
    /// `slots` and `endpoints` can be read synchronously (they change only when a slot is added).
    private let slotList = Mutex<[Slot]>([])
    public nonisolated var slots: [Slot] { slotList.withLock { $0 } }
    /// The `--initial-cluster` each slot is launched with.
    private var initialClusters: [String]
    private var processes: [ChildProcess?]
    private var paused: Set<Int> = []
    private var proxies: [PeerProxy?]
    private let pids: PidTable
    private let baseDir: String
    private let executable: String

    /// Client endpoints ("127.0.0.1:port") of every slot, in order.
    public nonisolated var endpoints: [String] { slots.map(\.endpoint) }
    /// The `--initial-cluster` of the first members.
    public var initialCluster: String { initialClusters.first ?? "" }
    /// Indices of members whose process runs (paused ones included).
    public var running: [Int] { processes.indices.filter { processes[$0]?.isRunning ?? false } }
    public func isRunning(_ i: Int) -> Bool { processes[i]?.isRunning ?? false }
    public func isPaused(_ i: Int) -> Bool { paused.contains(i) }
    /// The process of member i (nil while it is down), e.g. for its log.
    public func process(_ i: Int) -> ChildProcess? { processes[i] }
    /// Member i's log (stderr) of its current process.
    public func log(_ i: Int) -> String { processes[i]?.stderr ?? "" }

    private init(server: ClusterServer, executable: String, options: Options, token: String, baseDir: String,
                 pids: PidTable) {
        self.server = server
        self.executable = executable
        self.options = options
        self.token = token
        self.baseDir = baseDir
        self.pids = pids
        self.initialClusters = []
        self.processes = []
        self.proxies = []
    }

    deinit {
        for p in processes { p?.kill(); _ = p?.exitStatus }
        for p in proxies { p?.stop() }
        try? FileManager.default.removeItem(atPath: baseDir)
    }

    // MARK: start and stop

    /// Starts `n` members and waits until every one serves a linearizable read. Retries with new ports
    /// (up to 3 times) if a member exits during start-up (e.g. a port was taken meanwhile).
    public static func start(_ server: ClusterServer, members n: Int = 3, options: Options = Options())
        async throws -> LocalCluster {
        let exe = try server.executable()
        try RepoPaths.requireEtcd()   // etcdctl drives health and status for both servers
        var lastError: any Error = ChildProcessError("\(server) cluster did not start")
        for attempt in 0..<3 {
            for dir in options.dataDirs.values { try emptyDirectory(dir) }
            let base = try makeTempDirectory(prefix: "keel-localcluster-\(server)")
            let token = "keel-local-\(server)-\(getpid())-\(attempt)-\(UInt32.random(in: 0...UInt32.max))"
            let cluster = LocalCluster(server: server, executable: exe, options: options, token: token, baseDir: base,
                                       pids: PidTable())
            do {
                try await cluster.bootstrap(n)
                return cluster
            } catch {
                lastError = error
                // Only a member that died (e.g. its port was taken) is worth new ports; a slow one is not.
                let someExited = await cluster.running.count < cluster.slots.count
                await cluster.stop()
                if !someExited { throw error }
            }
        }
        throw lastError
    }

    /// Removes everything in `dir` (a data dir the caller chose), keeping `dir` itself if it exists.
    private static func emptyDirectory(_ dir: String) throws {
        let fm = FileManager.default
        guard fm.fileExists(atPath: dir) else { return }
        for name in try fm.contentsOfDirectory(atPath: dir) { try fm.removeItem(atPath: dir + "/" + name) }
    }

    /// Starts a cluster, runs `body`, and stops the cluster whether `body` returns or throws.
    public static func with<R: Sendable>(_ server: ClusterServer, members n: Int = 3, options: Options = Options(),
                                         _ body: (LocalCluster) async throws -> R) async throws -> R {
        let c = try await start(server, members: n, options: options)
        do {
            let r = try await body(c)
            await c.stop()
            return r
        } catch {
            await c.stop()
            throw error
        }
    }

    private func bootstrap(_ n: Int) async throws {
        for i in 0..<n { _ = try makeSlot(name: "m\(i)") }
        let initial = slots.map { "\($0.name)=\($0.peerURL)" }.joined(separator: ",")
        initialClusters = Array(repeating: initial, count: n)
        for i in 0..<n { try launch(i, state: "new") }
        for i in 0..<n { try await waitServing(i) }
        // etcd 3.4 decides the cluster version a moment after start; a member restarted before every
        // member knows it exits with "incompatible with current running cluster" ("not_decided is
        // not in dotted-tri format"), seen in FaultTests. Wait (bounded) until each one reports it.
        for i in 0..<n { await waitClusterVersion(i) }
    }

    /// Waits (up to the start timeout) until member i's /version names a cluster version.
    private func waitClusterVersion(_ i: Int) async {
        let clock = ContinuousClock()
        let deadline = clock.now + options.startTimeout
        while clock.now < deadline {
            if let r = try? plainHTTPGet(port: slots[i].clientPort, path: "/version"), r.status == 200,
               r.body.contains("\"etcdcluster\":\""), !r.body.contains("not_decided") { return }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Adds a slot (ports, data dir, proxy) without starting it.
    private func makeSlot(name: String) throws -> Int {
        let ports = try FreePorts.allocate(2)
        let dir = baseDir + "/" + name
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let i = slots.count
        let dataDir = options.dataDirs[i] ?? dir + "/data"
        var proxy: PeerProxy?
        if options.proxiedPeers {
            proxy = try PeerProxy(destination: i, targetPort: ports[1], pids: pids)
        }
        slotList.withLock {
            $0.append(Slot(name: name, clientPort: ports[0], peerPort: ports[1],
                           advertisedPeerPort: proxy?.listenPort ?? ports[1], dataDir: dataDir))
        }
        processes.append(nil)
        proxies.append(proxy)
        initialClusters.append(initialClusters.first ?? "")
        return i
    }

    /// The etcd flags member i starts with.
    public func arguments(_ i: Int, state: String) -> [String] {
        let s = slots[i]
        return Self.memberFlags(server: server, name: s.name, dataDir: s.dataDir, clientPort: s.clientPort,
                                peerPort: s.peerPort, advertisedPeerPort: s.advertisedPeerPort,
                                initialCluster: initialClusters[i], state: state, token: token,
                                heartbeatMillis: options.heartbeatMillis, electionMillis: options.electionMillis)
            + options.extraArguments
    }

    /// etcd's member flags on 127.0.0.1 (the same for keel; etcd also gets no metrics listener).
    public static func memberFlags(server: ClusterServer, name: String, dataDir: String, clientPort: Int, peerPort: Int,
                                   advertisedPeerPort: Int, initialCluster: String, state: String, token: String,
                                   heartbeatMillis: Int, electionMillis: Int) -> [String] {
        let clientURL = "http://127.0.0.1:\(clientPort)"
        let args = [
            "--name", name, "--data-dir", dataDir,
            "--listen-client-urls", clientURL,
            "--advertise-client-urls", clientURL,
            "--listen-peer-urls", "http://127.0.0.1:\(peerPort)",
            "--initial-advertise-peer-urls", "http://127.0.0.1:\(advertisedPeerPort)",
            "--initial-cluster", initialCluster,
            "--initial-cluster-state", state,
            "--initial-cluster-token", token,
            "--heartbeat-interval", String(heartbeatMillis),
            "--election-timeout", String(electionMillis),
        ]
        return server == .etcd ? args + ["--listen-metrics-urls", ""] : args
    }

    private func launch(_ i: Int, state: String) throws {
        var env = options.environments[i] ?? [:]
        if server == .etcd { env["ETCD_UNSUPPORTED_ARCH"] = "" }
        let p = try ChildProcess.spawn(executable, arguments(i, state: state), extraEnvironment: env)
        processes[i] = p
        paused.remove(i)
        pids.set(i, p.pid)
    }

    /// Waits until member i answers a linearizable read (`etcdctl endpoint health`); throws with its log
    /// if it exits or the start timeout passes.
    public func waitServing(_ i: Int, timeout: Duration? = nil) async throws {
        let limit = timeout ?? options.startTimeout
        let clock = ContinuousClock()
        let deadline = clock.now + limit
        let s = slots[i]
        while clock.now < deadline {
            guard let p = processes[i] else { throw ChildProcessError("member \(s.name) is not running") }
            if let st = p.exitStatus {
                throw ChildProcessError("\(server) \(s.name) exited (\(st)):\n\(p.stderr.suffix(3000))")
            }
            if FreePorts.isListening(s.clientPort), await Etcdctl.isHealthy(s.endpoint) { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw ChildProcessError("\(server) \(s.name) not serving after \(limit):\n\(log(i).suffix(3000))")
    }

    /// Stops every member (SIGCONT, SIGTERM, SIGKILL after `grace`) and proxy, and removes all data.
    public func stop(grace: Duration = .seconds(5)) async {
        for i in processes.indices {
            if let p = processes[i] {
                p.resume()
                await p.stop(grace: grace)
            }
            processes[i] = nil
            pids.set(i, nil)
        }
        paused.removeAll()
        for i in proxies.indices { proxies[i]?.stop() }
        try? FileManager.default.removeItem(atPath: baseDir)
    }

    // MARK: faults on processes

    /// SIGKILLs member i and reaps it (its data stays for `restart`).
    public func kill(_ i: Int) async {
        guard let p = processes[i] else { return }
        p.kill()
        _ = await p.wait(timeout: .seconds(30))
        processes[i] = nil
        paused.remove(i)
        pids.set(i, nil)
    }

    /// SIGSTOPs member i (it keeps its sockets but stops answering).
    public func pause(_ i: Int) {
        processes[i]?.suspend()
        paused.insert(i)
    }

    /// SIGCONTs member i after `pause`.
    public func resume(_ i: Int) {
        processes[i]?.resume()
        paused.remove(i)
    }

    /// Starts member i again (killing it first if it runs) on its ports and data dir, with
    /// `--initial-cluster-state existing`; waits until it serves unless `wait` is false.
    public func restart(_ i: Int, wait: Bool = true) async throws {
        if processes[i] != nil { await kill(i) }
        try launch(i, state: "existing")
        if wait { try await waitServing(i) }
    }

    // MARK: membership

    /// A new slot for `etcdctl member add NAME --peer-urls <slot.peerURL>`; not started.
    public func addSlot(name: String? = nil) throws -> Int {
        try makeSlot(name: name ?? "m\(slots.count)")
    }

    /// Starts an added member with `--initial-cluster-state existing` and the `--initial-cluster` that
    /// `member add` printed (ETCD_INITIAL_CLUSTER). Does not wait (a learner serves no linearizable read).
    public func startAdded(_ i: Int, initialCluster: String) throws {
        initialClusters[i] = initialCluster
        try launch(i, state: "existing")
    }

    // MARK: status and leader

    /// `etcdctl endpoint status` of member i (nil if down, paused, or it does not answer in time).
    public func status(_ i: Int) async -> MemberStatus? {
        guard isRunning(i), !paused.contains(i) else { return nil }
        guard let r = try? await Etcdctl.run(["endpoint", "status", "-w", "json", "--command-timeout=3s",
                                              "--dial-timeout=2s"],
                                             endpoints: [slots[i].endpoint], timeout: .seconds(15)),
              r.status.succeeded else { return nil }
        return MemberStatus(etcdctlJSON: r.stdout)
    }

    /// Index of a running, unpaused member that says it is the leader, or nil.
    public func leaderIndex() async -> Int? {
        for i in slots.indices {
            if let st = await status(i), st.isLeader { return i }
        }
        return nil
    }

    /// Polls `leaderIndex` (every 200 ms) until some member leads and, if `among` is given, it is one of
    /// those; throws after `timeout`.
    public func waitForLeader(among: Set<Int>? = nil, timeout: Duration = .seconds(60)) async throws -> Int {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            if let l = await leaderIndex(), among?.contains(l) ?? true { return l }
            try await Task.sleep(for: .milliseconds(200))
        }
        var seen: [String] = []
        for i in slots.indices {
            let st = await status(i)
            seen.append("m\(i): \(st.map { "id \($0.memberID) leader \($0.leader) term \($0.raftTerm)" } ?? "no status")")
        }
        throw ChildProcessError("no leader\(among.map { " among \($0.sorted())" } ?? "") after \(timeout); "
                                + "\(seen.joined(separator: "; ")); proxies (accepted/unidentified/refused) \(proxyCounts)")
    }

    // MARK: network faults (need `proxiedPeers`)

    private func proxy(_ j: Int) throws -> PeerProxy {
        guard let p = proxies[j] else {
            throw ChildProcessError("peer links are not proxied: start the cluster with Options(proxiedPeers: true)")
        }
        return p
    }

    /// Cuts the connections member `from` opens to member `to` (existing ones closed, new ones refused).
    public func cut(from: Int, to: Int) throws { try proxy(to).block(source: from) }

    /// Lets member `from` connect to member `to` again.
    public func heal(from: Int, to: Int) throws { try proxy(to).unblock(source: from) }

    /// Cuts every link to and from member i (a partition with i alone on one side).
    public func isolate(_ i: Int) throws {
        for j in slots.indices where j != i {
            try cut(from: i, to: j)
            try cut(from: j, to: i)
        }
    }

    /// Heals every cut link.
    public func healAll() throws {
        for j in slots.indices { try proxy(j).unblockAll() }
    }

    /// Connections each proxy forwarded so far, by destination (to check the proxies carry the traffic).
    public func proxiedConnectionCounts() -> [Int] { proxies.map { $0?.acceptedCount ?? 0 } }

    /// Per proxy "accepted/unidentified/refused" connections, for failure messages.
    public var proxyCounts: String {
        proxies.enumerated().map { "m\($0.offset): \($0.element?.counts ?? "-")" }.joined(separator: ", ")
    }
}

// MARK: - which member owns a socket

/// Member index -> current pid, shared by the cluster (writer) and its proxies' accept threads.
/// A Mutex rather than an actor: the proxies run on plain blocking threads.
final class PidTable: Sendable {
    private let table = Mutex<[Int: pid_t]>([:])
    func set(_ i: Int, _ pid: pid_t?) { table.withLock { $0[i] = pid } }
    var all: [Int: pid_t] { table.withLock { $0 } }

    /// The member whose process holds the local end of the loopback TCP connection from
    /// 127.0.0.1:`clientPort` to 127.0.0.1:`serverPort` (Linux /proc), or nil.
    func member(clientPort: Int, serverPort: Int) -> Int? {
        guard let inode = Self.socketInode(localPort: clientPort, remotePort: serverPort) else { return nil }
        let target = "socket:[\(inode)]"
        for (i, pid) in all {
            let fdDir = "/proc/\(pid)/fd"
            guard let fds = try? FileManager.default.contentsOfDirectory(atPath: fdDir) else { continue }
            for fd in fds where (try? FileManager.default.destinationOfSymbolicLink(atPath: fdDir + "/" + fd)) == target {
                return i
            }
        }
        return nil
    }

    /// The inode of the socket with that local and remote port in /proc/net/tcp (then tcp6).
    static func socketInode(localPort: Int, remotePort: Int) -> String? {
        let local = String(format: ":%04X", localPort)
        let remote = String(format: ":%04X", remotePort)
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = readProcFile(file) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let f = line.split(separator: " ", omittingEmptySubsequences: true)
                guard f.count > 9, f[1].hasSuffix(local), f[2].hasSuffix(remote) else { continue }
                return String(f[9])
            }
        }
        return nil
    }
}

/// A /proc file read to its end (they report size 0, so readers that trust the size see only a part).
func readProcFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return String(decoding: out, as: UTF8.self)
}

// MARK: - TCP proxy for one member's peer port

/// Forwards TCP connections from `listenPort` to `targetPort` on 127.0.0.1, and knows which member
/// opened each one, so links can be cut per source. Plain blocking sockets on dedicated threads (two
/// per connection, one for accepting): test-only, a few dozen connections at most.
public final class PeerProxy: Sendable {
    public let destination: Int
    public let listenPort: Int
    public let targetPort: Int
    private let listenFD: Int32
    private let pids: PidTable

    private struct Conn { var source: Int?; var client: Int32; var upstream: Int32; var openHalves: Int }
    private struct State {
        var conns: [Int: Conn] = [:]
        var nextID = 0
        var blocked: Set<Int> = []
        var stopped = false
        var accepted = 0
        var unidentified = 0
        var refused = 0
    }
    private let state = Mutex(State())

    /// Listens on a port the OS picks (bound to port 0 and kept: no other process can take it between
    /// choosing and listening, as it could with a port allocated beforehand and released).
    init(destination: Int, targetPort: Int, pids: PidTable) throws {
        self.destination = destination
        self.targetPort = targetPort
        self.pids = pids
        let fd = try FreePorts.tcpSocket()
        var addr = FreePorts.loopback(port: 0)
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        guard ok == 0, listen(fd, 128) == 0,
              withUnsafeMutablePointer(to: &addr, {
                  $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
              }) == 0 else {
            let e = String(cString: strerror(errno))
            close(fd)
            throw ChildProcessError("proxy bind/listen on 127.0.0.1: \(e)")
        }
        self.listenFD = fd
        self.listenPort = Int(UInt16(bigEndian: addr.sin_port))
        // Members dial this port until they die; FreePorts must not hand it to another cluster later.
        FreePorts.markHandedOut(listenPort)
        let t = Thread { [self] in self.acceptLoop() }
        t.name = "peer-proxy-\(destination)"
        t.start()
    }

    /// Connections accepted so far.
    public var acceptedCount: Int { state.withLock { $0.accepted } }
    /// "accepted/unidentified/refused" connection counts (for failure messages).
    public var counts: String { state.withLock { "\($0.accepted)/\($0.unidentified)/\($0.refused)" } }

    /// Closes the open connections from member `source` and refuses new ones.
    func block(source: Int) {
        let victims = state.withLock { s -> [Conn] in
            s.blocked.insert(source)
            return s.conns.values.filter { $0.source == source || $0.source == nil }
        }
        victims.forEach(Self.sever)
    }

    func unblock(source: Int) { state.withLock { _ = $0.blocked.remove(source) } }
    func unblockAll() { state.withLock { $0.blocked.removeAll() } }

    /// Stops accepting and closes every connection.
    func stop() {
        let all = state.withLock { s -> [Conn]? in
            if s.stopped { return nil }
            s.stopped = true
            return Array(s.conns.values)
        }
        guard let all else { return }
        shutdown(listenFD, Int32(SHUT_RDWR))
        all.forEach(Self.sever)
    }

    private static func sever(_ c: Conn) {
        shutdown(c.client, Int32(SHUT_RDWR))
        shutdown(c.upstream, Int32(SHUT_RDWR))
    }

    private func acceptLoop() {
        while true {
            let fd = accept(listenFD, nil, nil)
            if fd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                if state.withLock({ $0.stopped }) { break }
                usleep(10_000)
                continue
            }
            if state.withLock({ $0.stopped }) { close(fd); break }
            handle(fd)
        }
        close(listenFD)
    }

    private func handle(_ client: Int32) {
        // Who connected: the member process holding the other end (retried: the peer may be mid-exec).
        var source: Int?
        if let port = Self.peerPort(client) {
            for _ in 0..<5 {
                source = pids.member(clientPort: port, serverPort: listenPort)
                if source != nil { break }
                usleep(2_000)
            }
        }
        let refused = state.withLock { s -> Bool in
            s.accepted += 1
            if source == nil { s.unidentified += 1 }
            // An unknown source is refused while any link to this member is cut (a partition stays strict).
            let refuse = source.map { s.blocked.contains($0) } ?? !s.blocked.isEmpty
            if refuse { s.refused += 1 }
            return refuse
        }
        if refused { Self.reset(client); return }
        guard let upstream = try? Self.connectLoopback(port: targetPort) else { Self.reset(client); return }
        let id = state.withLock { s -> Int? in
            // Re-check: the link may have been cut while connecting.
            if s.stopped || (source.map { s.blocked.contains($0) } ?? !s.blocked.isEmpty) { return nil }
            let id = s.nextID
            s.nextID += 1
            s.conns[id] = Conn(source: source, client: client, upstream: upstream, openHalves: 2)
            return id
        }
        guard let id else { close(upstream); Self.reset(client); return }
        for (from, to) in [(client, upstream), (upstream, client)] {
            let t = Thread { [self] in self.pump(id: id, from: from, to: to) }
            t.name = "peer-proxy-\(destination)-c\(id)"
            t.start()
        }
    }

    /// Copies bytes one way until EOF or an error, then half-closes; the second half to end closes both.
    private func pump(id: Int, from: Int32, to: Int32) {
        var buf = [UInt8](repeating: 0, count: 64 * 1024)
        outer: while true {
            let n = buf.withUnsafeMutableBytes { read(from, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            var off = 0
            while off < n {
                let w = buf.withUnsafeBytes { send(to, $0.baseAddress! + off, n - off, Int32(MSG_NOSIGNAL)) }
                if w < 0 && errno == EINTR { continue }
                if w <= 0 { break outer }
                off += w
            }
        }
        shutdown(to, Int32(SHUT_WR))
        shutdown(from, Int32(SHUT_RD))
        let done = state.withLock { s -> Conn? in
            guard var c = s.conns[id] else { return nil }
            c.openHalves -= 1
            if c.openHalves > 0 { s.conns[id] = c; return nil }
            s.conns[id] = nil
            return c
        }
        if let done {
            close(done.client)
            close(done.upstream)
        }
    }

    // MARK: sockets

    private static func connectLoopback(port: Int) throws -> Int32 {
        let fd = try FreePorts.tcpSocket()
        var addr = FreePorts.loopback(port: port)
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard r == 0 else {
            close(fd)
            throw ChildProcessError("connect 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    private static func peerPort(_ fd: Int32) -> Int? {
        var addr = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let r = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) }
        }
        return r == 0 ? Int(UInt16(bigEndian: addr.sin_port)) : nil
    }

    /// Closes with RST (SO_LINGER 0), so the member sees "connection reset" at once.
    private static func reset(_ fd: Int32) {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        close(fd)
    }
}
