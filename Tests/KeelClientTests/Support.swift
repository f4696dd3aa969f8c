// Helpers of the KeelClient tests: the servers every test runs against, a keel that can be killed and
// restarted on the same port and data dir, a listener that never answers, and a bound on waits.
import Foundation
import KeelClient
import KeelTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Servers to run a test against: etcd 3.4 always; keel when the built binary is there.
func withServers(_ body: (String, String) async throws -> Void) async throws {
    let etcd = try await ReferenceEtcd.start(name: "kc0")
    do { try await body("etcd", etcd.endpoint) } catch { await etcd.stop(); throw error }
    await etcd.stop()
    guard let keel = try await BuiltKeel.start() else { return }
    do { try await body("keel", keel.endpoint) } catch { await keel.stop(); throw error }
    await keel.stop()
}

struct WaitTimeout: Error, CustomStringConvertible {
    let what: String
    var description: String { "gave up waiting for \(what)" }
}

/// Runs `body`, giving up (cancelling it and throwing) after `limit`: a bound that keeps a broken test
/// from hanging, not a timing assertion (limits are far above what a loaded machine needs).
func within<T: Sendable>(_ limit: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> T)
    async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { g in
        g.addTask { try await body() }
        g.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { g.cancelAll() }
        guard let first = try await g.next(), let value = first else { throw WaitTimeout(what: what) }
        return value
    }
}

/// Polls `check` (bounded number of tries, `every` apart) until it returns true.
func eventually(_ what: String, tries: Int = 300, every: Duration = .milliseconds(100),
                _ check: () async throws -> Bool) async throws {
    for _ in 0..<tries {
        if try await check() { return }
        try await Task.sleep(for: every)
    }
    throw WaitTimeout(what: what)
}

/// A built keel on a fixed port and data dir that can be SIGKILLed and started again on both.
actor RestartableKeel {
    let executable: String
    let port: Int
    let dir: String
    private var process: ChildProcess?
    nonisolated var endpoint: String { "127.0.0.1:\(port)" }

    private init(executable: String, port: Int, dir: String) {
        self.executable = executable
        self.port = port
        self.dir = dir
    }

    /// nil when keel is not built.
    static func start() async throws -> RestartableKeel? {
        guard let exe = BuildProducts.executable("keel") else { return nil }
        let dir = try makeTempDirectory(prefix: "keel-client-restart")
        var lastError: any Error = ChildProcessError("keel did not start")
        for _ in 0..<3 {
            let k = RestartableKeel(executable: exe, port: try FreePorts.allocate(), dir: dir)
            do {
                try await k.launch()
                return k
            } catch {
                lastError = error
                await k.kill()
            }
        }
        try? FileManager.default.removeItem(atPath: dir)
        throw lastError
    }

    private func launch() async throws {
        let p = try ChildProcess.spawn(executable, ["--data-dir", dir + "/data",
                                                    "--listen-client-urls", "http://127.0.0.1:\(port)",
                                                    "--advertise-client-urls", "http://127.0.0.1:\(port)"])
        process = p
        guard await p.waitForOutput(containing: "ready to serve client requests", stderr: true, timeout: .seconds(60))
        else { throw ChildProcessError("keel did not start: \(p.stderr.suffix(2000))") }
    }

    /// SIGKILL, keeping the data.
    func kill() async {
        guard let p = process else { return }
        p.kill()
        _ = await p.wait(timeout: .seconds(10))
        process = nil
    }

    /// Starts it again on the same port and data dir (a few tries: the port may linger briefly).
    func restart() async throws {
        await kill()
        var lastError: any Error = ChildProcessError("keel did not restart")
        for _ in 0..<5 {
            do {
                try await launch()
                return
            } catch {
                lastError = error
                await kill()
                try await Task.sleep(for: .milliseconds(500))
            }
        }
        throw lastError
    }

    func stop() async {
        if let p = process { _ = await p.stop(grace: .seconds(10)) }
        process = nil
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// A TCP listener that completes handshakes (the kernel's backlog) but never reads or answers: calls to it
/// hang until their deadline. With `fullBacklog`, its accept queue is filled first (backlog 0 and a few
/// connections nobody accepts), so the kernel drops further SYNs and a new connect hangs: a dial that
/// never completes.
final class SilentListener: Sendable {
    let fd: Int32
    let port: Int
    let fillers: [Int32]
    var endpoint: String { "127.0.0.1:\(port)" }

    init(fullBacklog: Bool = false) throws {
        #if canImport(Glibc)
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let s = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard s >= 0 else { throw ChildProcessError("socket failed") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0, listen(s, fullBacklog ? 0 : 16) == 0 else {
            close(s)
            throw ChildProcessError("bind/listen failed")
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) }
        }
        fd = s
        port = Int(UInt16(bigEndian: addr.sin_port))
        var fill: [Int32] = []
        if fullBacklog {
            for _ in 0..<4 {
                #if canImport(Glibc)
                let c = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
                #else
                let c = socket(AF_INET, SOCK_STREAM, 0)
                #endif
                guard c >= 0 else { continue }
                _ = withUnsafePointer(to: &addr) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(c, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
                fill.append(c)
            }
        }
        fillers = fill
    }

    deinit {
        for c in fillers { close(c) }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}

extension Array where Element == UInt8 {
    var text: String { String(decoding: self, as: UTF8.self) }
}

/// A listener that accepts every connection, reads what the client sends first (HTTP/2 preface, and
/// usually the request), then closes it: a server that dies after a request may have reached it.
final class ClosingListener: Sendable {
    let listener: SilentListener
    var endpoint: String { listener.endpoint }

    init() throws {
        listener = try SilentListener()
        let fd = listener.fd
        let thread = Thread {
            while true {
                let c = accept(fd, nil, nil)
                if c < 0 { return }   // the listener was closed
                var buf = [UInt8](repeating: 0, count: 65536)
                var total = 0
                // Up to 200 ms for the first bytes (preface + HEADERS + DATA go out together).
                var tv = timeval(tv_sec: 0, tv_usec: 200_000)
                setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
                while total < 100 {
                    let n = read(c, &buf, buf.count)
                    if n <= 0 { break }
                    total += n
                }
                close(c)
            }
        }
        thread.start()
    }
}
