// Reference etcd 3.4 (Debian's binaries, unpacked by Tests/install-deps.sh into .cache/etcd) for
// end-to-end tests, plus the paths and ports those tests need.
//
//     let etcd = try await ReferenceEtcd.start()              // one member on free 127.0.0.1 ports
//     let r = try await Etcdctl.run(["put", "k", "v"], endpoints: [etcd.endpoint])
//     #expect(r.status.succeeded && r.stdout == "OK\n")
//     await etcd.stop()                                        // also done by deinit (SIGKILL + rm -r)
//
//     let cluster = try await ReferenceEtcdCluster.start(members: 3)   // 3 members on loopback
//     await cluster.endpoints  // ["127.0.0.1:p1", ...]; await cluster.kill(i); try await cluster.restart(i)
//
//     RepoPaths.root                      // the repository (from #filePath)
//     RepoPaths.etcd / RepoPaths.etcdctl  // .cache/etcd/usr/bin/..., or $KEEL_ETCD_BIN_DIR/...
//     BuildProducts.executable("keel")    // a built executable next to the test bundle (or $KEEL_BIN_DIR)
//     FreePorts.allocate(3)               // distinct free ports on 127.0.0.1 (bound to port 0, then released)
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: paths

public enum RepoPaths {
    /// The repository root: three levels above this file (Tests/KeelTestSupport/ReferenceEtcd.swift).
    public static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// Directory with the reference `etcd` and `etcdctl`: $KEEL_ETCD_BIN_DIR, else <root>/.cache/etcd/usr/bin.
    public static var etcdBinDir: String {
        if let d = ProcessInfo.processInfo.environment["KEEL_ETCD_BIN_DIR"], !d.isEmpty { return d }
        return root + "/.cache/etcd/usr/bin"
    }

    public static var etcd: String { etcdBinDir + "/etcd" }
    public static var etcdctl: String { etcdBinDir + "/etcdctl" }

    /// True when both reference binaries are there and executable.
    public static var etcdAvailable: Bool { access(etcd, X_OK) == 0 && access(etcdctl, X_OK) == 0 }

    static func requireEtcd() throws {
        guard etcdAvailable else {
            throw ChildProcessError("reference etcd not found in \(etcdBinDir): run `bash Tests/install-deps.sh` "
                                    + "or set KEEL_ETCD_BIN_DIR")
        }
    }
}

/// Executables built by SwiftPM into the same products directory as the running test bundle.
public enum BuildProducts {
    /// The products directory: $KEEL_BIN_DIR, else the directory of this process's executable
    /// (`.../debug/KeelPackageTests.xctest` on Linux) or the nearest parent holding `name`.
    public static func executable(_ name: String) -> String? {
        if let d = ProcessInfo.processInfo.environment["KEEL_BIN_DIR"], !d.isEmpty {
            let p = d + "/" + name
            return access(p, X_OK) == 0 ? p : nil
        }
        var dir = URL(fileURLWithPath: selfExecutablePath()).deletingLastPathComponent()
        while dir.path != "/" && !dir.path.isEmpty {
            let p = dir.path + "/" + name
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: p, isDirectory: &isDir), !isDir.boolValue, access(p, X_OK) == 0 {
                return p
            }
            dir.deleteLastPathComponent()
        }
        return nil
    }

    /// Like `executable`, but throws a clear error when it is missing.
    public static func require(_ name: String) throws -> String {
        guard let p = executable(name) else {
            throw ChildProcessError("built executable \(name) not found next to \(selfExecutablePath()) "
                                    + "(build it, or set KEEL_BIN_DIR)")
        }
        return p
    }

    static func selfExecutablePath() -> String {
        #if os(Linux)
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        if n > 0 { return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        #endif
        return Bundle.main.executablePath ?? CommandLine.arguments[0]
    }
}

// MARK: ports

public enum FreePorts {
    /// `count` distinct TCP ports on 127.0.0.1 that were free a moment ago: each is bound to port 0 (the OS
    /// picks) and all are released together. Another process may still take one before it is used;
    /// callers that start servers retry on "address in use".
    /// Every port handed out in this process: never handed out twice. A member a test stopped for good
    /// leaves its ports to the OS while its cluster mates keep dialing them; a later cluster given one of
    /// them got their requests (CI: etcd "request cluster ID mismatch" on a new member that never served).
    private static let handedOut = Mutex<Set<Int>>([])

    public static func allocate(_ count: Int) throws -> [Int] {
        var fds: [Int32] = []
        defer { fds.forEach { close($0) } }
        var ports: [Int] = []
        var attempts = 0
        while ports.count < count {
            attempts += 1
            guard attempts <= 1000 + count else { throw ChildProcessError("no port that was not handed out before") }
            // Bound until the end of this call (also when refused below), so the OS does not pick it again now.
            let fd = try tcpSocket()
            fds.append(fd)
            var addr = loopback(port: 0)
            let ok = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard ok == 0 else { throw ChildProcessError("bind: \(String(cString: strerror(errno)))") }
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let got = withUnsafeMutablePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
            }
            guard got == 0 else { throw ChildProcessError("getsockname: \(String(cString: strerror(errno)))") }
            let port = Int(UInt16(bigEndian: addr.sin_port))
            if handedOut.withLock({ $0.insert(port).inserted }) { ports.append(port) }
        }
        return ports
    }

    /// One free port.
    public static func allocate() throws -> Int { try allocate(1)[0] }

    /// Records a port bound some other way (e.g. a proxy's port 0), so `allocate` never returns it.
    public static func markHandedOut(_ port: Int) { _ = handedOut.withLock { $0.insert(port) } }

    /// A port outside the ephemeral range (20,000-31,999) that this process has not handed out before.
    /// The OS never picks such a port by itself, so a test may bind it, release it and bind it again
    /// (a peer server restarted on the same port) without another test of this process taking it between.
    public static func outsideEphemeralRange() throws -> Int {
        for _ in 0..<1000 {
            let p = Int.random(in: 20_000..<32_000)
            if handedOut.withLock({ $0.insert(p).inserted }) { return p }
        }
        throw ChildProcessError("no port outside the ephemeral range that was not handed out before")
    }

    /// A 127.0.0.1 port outside the ephemeral range, bound by a socket that does not listen: connecting
    /// to it is refused, and nothing else can bind it until the socket is closed. Returns (fd, port).
    public static func reserveRefusing() throws -> (fd: Int32, port: Int) {
        for _ in 0..<200 {
            let p = try outsideEphemeralRange()
            let fd = try tcpSocket()
            if bindLoopback(fd, p) == 0 { return (fd, p) }
            close(fd)
        }
        throw ChildProcessError("no free port to reserve")
    }

    /// Holds 127.0.0.1:port, just released by a server that will bind it again, with a socket that
    /// is bound (SO_REUSEADDR) but does not listen: connecting is refused, as with no server, and a
    /// process that binds without SO_REUSEADDR (another test picking random ports) cannot take the
    /// port meanwhile, while a new listener with SO_REUSEADDR can still bind it. Close the returned
    /// fd once the new server is bound. A server's shutdown may return before its listening socket
    /// is closed (the close runs on its event loop), and a listening socket blocks the bind: on
    /// EADDRINUSE this retries for up to 5 s.
    public static func holdForRebind(_ port: Int) throws -> Int32 {
        var e: Int32 = 0
        for attempt in 0..<250 {
            if attempt > 0 { usleep(20_000) }
            let fd = try tcpSocket()
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            if bindLoopback(fd, port) == 0 { return fd }
            e = errno
            close(fd)
            if e != EADDRINUSE { break }
        }
        throw ChildProcessError("hold port \(port): \(String(cString: strerror(e)))")
    }

    /// True if something accepts TCP connections on 127.0.0.1:port right now.
    public static func isListening(_ port: Int) -> Bool {
        guard let fd = try? tcpSocket() else { return false }
        defer { close(fd) }
        var addr = loopback(port: port)
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        } == 0
    }

    /// A new IPv4 TCP socket (the caller closes it).
    static func tcpSocket() throws -> Int32 {
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw ChildProcessError("socket: \(String(cString: strerror(errno)))") }
        return fd
    }

    /// 127.0.0.1:port as a sockaddr_in.
    /// bind(2) of `fd` to 127.0.0.1:port; 0 or -1 (errno set).
    static func bindLoopback(_ fd: Int32, _ port: Int) -> Int32 {
        var addr = loopback(port: port)
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }

    static func loopback(port: Int) -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(truncatingIfNeeded: port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return addr
    }
}

// MARK: etcdctl

public enum Etcdctl {
    /// Runs the reference `etcdctl` (API v3) with `--endpoints` set (comma-joined) before `args`.
    public static func run(_ args: [String], endpoints: [String], stdin: String? = nil,
                           timeout: Duration = .seconds(30)) async throws -> CommandResult {
        try RepoPaths.requireEtcd()
        return try await ChildProcess.run(RepoPaths.etcdctl, ["--endpoints", endpoints.joined(separator: ",")] + args,
                                          extraEnvironment: ["ETCDCTL_API": "3"], stdin: stdin, timeout: timeout)
    }

    /// Runs it with the arguments exactly as given (no `--endpoints` added).
    public static func runRaw(_ args: [String], stdin: String? = nil,
                              timeout: Duration = .seconds(30)) async throws -> CommandResult {
        try RepoPaths.requireEtcd()
        return try await ChildProcess.run(RepoPaths.etcdctl, args, extraEnvironment: ["ETCDCTL_API": "3"],
                                          stdin: stdin, timeout: timeout)
    }

    /// True once `etcdctl endpoint health` reports the endpoint healthy (a quorum read went through).
    public static func isHealthy(_ endpoint: String) async -> Bool {
        guard let r = try? await run(["endpoint", "health", "--command-timeout=2s", "--dial-timeout=1s"],
                                     endpoints: [endpoint], timeout: .seconds(10)) else { return false }
        // etcdctl 3.4 prints "... is healthy: ..." on stderr (3.5 on stdout): accept either.
        return r.status.succeeded && (r.stdout + r.stderr).contains("is healthy")
    }
}

// MARK: one member

/// One reference etcd member (a child process with its own temp data dir).
public final class ReferenceEtcd: Sendable {
    public let name: String
    public let clientPort: Int
    public let peerPort: Int
    public let dataDir: String
    /// True when this object created (and therefore removes) the data dir.
    private let ownsDataDir: Bool
    public let process: ChildProcess

    /// "127.0.0.1:clientPort" (what `--endpoints` takes).
    public var endpoint: String { "127.0.0.1:\(clientPort)" }
    public var clientURL: String { "http://127.0.0.1:\(clientPort)" }
    public var peerURL: String { "http://127.0.0.1:\(peerPort)" }

    /// Tuning for tests: etcd's defaults are heartbeat 100 ms, election 1000 ms.
    public struct Options: Sendable {
        public var heartbeatMillis = 100
        public var electionMillis = 1000
        /// More flags for etcd.
        public var extraArguments: [String] = []
        /// How long to wait for the member (or cluster) to become healthy.
        public var startTimeout: Duration = .seconds(30)
        public init() {}
        /// Faster elections for failover tests (heartbeat 25 ms, election 250 ms).
        public static var fastElections: Options {
            var o = Options()
            o.heartbeatMillis = 25
            o.electionMillis = 250
            return o
        }
    }

    private init(name: String, clientPort: Int, peerPort: Int, dataDir: String, ownsDataDir: Bool,
                 process: ChildProcess) {
        self.name = name
        self.clientPort = clientPort
        self.peerPort = peerPort
        self.dataDir = dataDir
        self.ownsDataDir = ownsDataDir
        self.process = process
    }

    deinit {
        process.kill()
        _ = process.exitStatus
        if ownsDataDir { try? FileManager.default.removeItem(atPath: dataDir) }
    }

    /// Starts a single-member etcd on free ports and waits until it is healthy.
    /// Retries with new ports (up to 3 times) if the member dies early (e.g. a port was taken meanwhile).
    public static func start(name: String = "ref0", options: Options = Options()) async throws -> ReferenceEtcd {
        try RepoPaths.requireEtcd()
        var lastError: any Error = ChildProcessError("etcd did not start")
        for _ in 0..<3 {
            let ports = try FreePorts.allocate(2)
            let member = try launch(name: name, clientPort: ports[0], peerPort: ports[1], dataDir: nil,
                                    initialCluster: "\(name)=http://127.0.0.1:\(ports[1])",
                                    token: "keel-ref-\(ports[0])", state: "new", options: options)
            do {
                try await member.waitHealthy(timeout: options.startTimeout)
                return member
            } catch {
                lastError = error
                await member.stop()
            }
        }
        throw lastError
    }

    /// Spawns one member (no waiting). `dataDir` nil: a new temp dir owned by the result.
    static func launch(name: String, clientPort: Int, peerPort: Int, dataDir: String?, initialCluster: String,
                       token: String, state: String, options: Options) throws -> ReferenceEtcd {
        let dir = try dataDir ?? makeTempDirectory(prefix: "keel-etcd-\(name)")
        let args = LocalCluster.memberFlags(server: .etcd, name: name, dataDir: dir, clientPort: clientPort,
                                            peerPort: peerPort, advertisedPeerPort: peerPort,
                                            initialCluster: initialCluster, state: state, token: token,
                                            heartbeatMillis: options.heartbeatMillis,
                                            electionMillis: options.electionMillis) + options.extraArguments
        let p: ChildProcess
        do {
            p = try ChildProcess.spawn(RepoPaths.etcd, args, extraEnvironment: ["ETCD_UNSUPPORTED_ARCH": ""])
        } catch {
            if dataDir == nil { try? FileManager.default.removeItem(atPath: dir) }
            throw error
        }
        return ReferenceEtcd(name: name, clientPort: clientPort, peerPort: peerPort, dataDir: dir,
                             ownsDataDir: dataDir == nil, process: p)
    }

    /// Waits until `etcdctl endpoint health` succeeds; throws (with etcd's log) if the member exits or
    /// the time runs out.
    public func waitHealthy(timeout: Duration) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            if let st = process.exitStatus {
                throw ChildProcessError("etcd \(name) exited (\(st)) during start-up:\n\(process.stderr.suffix(3000))")
            }
            if FreePorts.isListening(clientPort), await Etcdctl.isHealthy(endpoint) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ChildProcessError("etcd \(name) not healthy after \(timeout):\n\(process.stderr.suffix(3000))")
    }

    /// Kills the member at once (SIGKILL), keeps the data dir.
    public func kill() { process.kill() }

    /// SIGTERM (then SIGKILL after `grace`), and removes the data dir if this object created it.
    public func stop(grace: Duration = .seconds(5)) async {
        await process.stop(grace: grace)
        if ownsDataDir { try? FileManager.default.removeItem(atPath: dataDir) }
    }

    /// etcd's log so far (stderr).
    public var log: String { process.stderr }
}

// MARK: a cluster

/// A reference etcd cluster on loopback: shorthand for a LocalCluster of etcd 3.4 members (LocalCluster.swift:
/// kill / pause / resume / restart on the same ports and data, leader lookup, peer proxies, keel too).
public enum ReferenceEtcdCluster {
    /// Starts `members` members on free ports and waits until every one is healthy (retrying with new ports
    /// if a member dies during start-up). `stop()` (or deinit) ends them and removes their data.
    public static func start(members n: Int = 3, options: ReferenceEtcd.Options = .init()) async throws -> LocalCluster {
        var o = LocalCluster.Options(heartbeatMillis: options.heartbeatMillis, electionMillis: options.electionMillis,
                                     extraArguments: options.extraArguments)
        o.startTimeout = options.startTimeout
        return try await LocalCluster.start(.etcd, members: n, options: o)
    }
}

// MARK: the built keel

/// A single-node `keel` (the built executable) on a free port with a temp data dir, for suites that
/// run the same checks against etcd 3.4 and keel. `stop()` / deinit end it and remove the dir.
public final class BuiltKeel: Sendable {
    public let process: ChildProcess
    public let port: Int
    public let dir: String
    public var endpoint: String { "127.0.0.1:\(port)" }

    private init(process: ChildProcess, port: Int, dir: String) {
        self.process = process
        self.port = port
        self.dir = dir
    }

    deinit {
        process.kill()
        _ = process.exitStatus
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Starts keel (nil if it is not built) and waits for "ready to serve client requests".
    public static func start() async throws -> BuiltKeel? {
        guard let exe = BuildProducts.executable("keel") else { return nil }
        let dir = try makeTempDirectory(prefix: "keel-built")
        var last = ""
        for _ in 0..<3 {
            let port = try FreePorts.allocate()
            let p = try ChildProcess.spawn(exe, ["--data-dir", dir + "/data",
                                                 "--listen-client-urls", "http://127.0.0.1:\(port)",
                                                 "--advertise-client-urls", "http://127.0.0.1:\(port)"])
            if await p.waitForOutput(containing: "ready to serve client requests", stderr: true, timeout: .seconds(30)) {
                return BuiltKeel(process: p, port: port, dir: dir)
            }
            last = p.stderr
            p.kill()
        }
        try? FileManager.default.removeItem(atPath: dir)
        throw ChildProcessError("keel did not start: \(last.suffix(2000))")
    }

    /// SIGTERM (SIGKILL after `grace`); removes the data dir. Returns how keel ended.
    @discardableResult
    public func stop(grace: Duration = .seconds(10)) async -> ExitStatus {
        let st = await process.stop(grace: grace)
        try? FileManager.default.removeItem(atPath: dir)
        return st
    }
}
