// ChildProcess: a real child process for end-to-end tests (servers, CLIs), spawned with posix_spawn.
//
//     let p = try ChildProcess.spawn("/bin/sh", ["-c", "echo hi"])
//     let status = await p.wait(timeout: .seconds(10))      // nil: still running after 10 s
//     #expect(status == .exited(0)); #expect(p.stdout == "hi\n")
//
//     let r = try await ChildProcess.run("/bin/echo", ["a"], timeout: .seconds(10))   // (status, stdout, stderr)
//
// - stdout/stderr go to files in a private temp dir (read them any time with `stdout`/`stderr`, or wait
//   for a line with `waitForOutput`); stdin comes from a string (written to a file) or /dev/null.
// - The child leads its own process group; signals go to the group, so helpers it forks die with it.
// - Waiting polls `waitpid(WNOHANG)` with short sleeps: no thread blocks in the cooperative pool.
// - Always cleaned up: `deinit` SIGKILLs a child that still runs, reaps it and removes the temp dir.
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// How a child ended.
public enum ExitStatus: Sendable, Hashable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    public var description: String {
        switch self {
        case .exited(let c): return "exit \(c)"
        case .signaled(let s): return "signal \(s)"
        }
    }

    /// True for `exit 0`.
    public var succeeded: Bool { self == .exited(0) }
}

/// Errors of the test-support process helpers.
public struct ChildProcessError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The outcome of `ChildProcess.run`: exit status and the captured output.
public struct CommandResult: Sendable, CustomStringConvertible {
    public var status: ExitStatus
    public var stdout: String
    public var stderr: String
    public init(status: ExitStatus, stdout: String, stderr: String) {
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
    }
    public var description: String { "[\(status)] stdout: \(stdout.debugDescription) stderr: \(stderr.debugDescription)" }
}

public final class ChildProcess: Sendable {
    public let pid: pid_t
    public let executable: String
    public let arguments: [String]
    /// Files that receive the child's stdout and stderr (nil when not captured).
    public let stdoutPath: String?
    public let stderrPath: String?
    private let tempDir: String
    /// The exit status once reaped (the pid must not be signalled after that: it may be reused).
    private let reaped = Mutex<ExitStatus?>(nil)

    /// Where the child's output goes.
    public enum Output: Sendable {
        /// A file in the process's private temp dir (the default).
        case capture
        /// The test process's own stdout/stderr.
        case inherit
        /// /dev/null.
        case discard
    }

    private init(pid: pid_t, executable: String, arguments: [String], stdoutPath: String?, stderrPath: String?,
                 tempDir: String) {
        self.pid = pid
        self.executable = executable
        self.arguments = arguments
        self.stdoutPath = stdoutPath
        self.stderrPath = stderrPath
        self.tempDir = tempDir
    }

    /// Spawns `executable` (a path; a bare name is looked up in PATH) with `arguments`.
    /// - environment: the full environment (nil: inherit this process's), plus `extraEnvironment` on top.
    /// - workingDirectory: the child's cwd (nil: inherit).
    /// - stdin: text fed on stdin (nil: /dev/null).
    public static func spawn(_ executable: String, _ arguments: [String] = [],
                             environment: [String: String]? = nil, extraEnvironment: [String: String] = [:],
                             workingDirectory: String? = nil, stdin: String? = nil,
                             stdout: Output = .capture, stderr: Output = .capture) throws -> ChildProcess {
        let path = try resolveExecutable(executable)
        let dir = try makeTempDirectory(prefix: "keel-child")
        do {
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }

            // stdin
            let inPath: String
            if let stdin {
                inPath = dir + "/stdin"
                guard FileManager.default.createFile(atPath: inPath, contents: Data(stdin.utf8)) else {
                    throw ChildProcessError("cannot write \(inPath)")
                }
            } else {
                inPath = "/dev/null"
            }
            posix_spawn_file_actions_addopen(&actions, 0, inPath, O_RDONLY, 0)

            func route(_ fd: Int32, _ o: Output, _ name: String) -> String? {
                switch o {
                case .inherit: return nil
                case .discard:
                    posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", O_WRONLY, 0)
                    return nil
                case .capture:
                    let p = dir + "/" + name
                    posix_spawn_file_actions_addopen(&actions, fd, p, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0o644)
                    return p
                }
            }
            let outPath = route(1, stdout, "stdout")
            let errPath = route(2, stderr, "stderr")

            var attr = posix_spawnattr_t()
            posix_spawnattr_init(&attr)
            defer { posix_spawnattr_destroy(&attr) }
            // Own process group (signals reach its helpers too); default signal dispositions and mask.
            let flags = Int32(POSIX_SPAWN_SETPGROUP) | Int32(POSIX_SPAWN_SETSIGMASK) | Int32(POSIX_SPAWN_SETSIGDEF)
            posix_spawnattr_setflags(&attr, Int16(truncatingIfNeeded: flags))
            posix_spawnattr_setpgroup(&attr, 0)
            var empty = sigset_t()
            sigemptyset(&empty)
            posix_spawnattr_setsigmask(&attr, &empty)
            var defaults = sigset_t()
            sigemptyset(&defaults)
            for s in [SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2] { sigaddset(&defaults, s) }
            posix_spawnattr_setsigdefault(&attr, &defaults)

            var env = environment ?? ProcessInfo.processInfo.environment
            for (k, v) in extraEnvironment { env[k] = v }
            // A working directory goes through /bin/sh (`cd DIR && exec PATH ARGS...`): glibc's
            // posix_spawn_file_actions_addchdir_np is not visible to Swift without _GNU_SOURCE.
            let spawnPath = workingDirectory == nil ? path : "/bin/sh"
            let spawnArgs = workingDirectory.map { ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", $0, path] + arguments }
                ?? ([path] + arguments)
            let argv: [UnsafeMutablePointer<CChar>?] = spawnArgs.map { strdup($0) } + [nil]
            let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
            defer {
                argv.forEach { free($0) }
                envp.forEach { free($0) }
            }
            var pid: pid_t = 0
            let rc = posix_spawn(&pid, spawnPath, &actions, &attr, argv, envp)
            guard rc == 0 else {
                throw ChildProcessError("posix_spawn \(path): \(String(cString: strerror(rc)))")
            }
            return ChildProcess(pid: pid, executable: path, arguments: arguments, stdoutPath: outPath,
                                stderrPath: errPath, tempDir: dir)
        } catch {
            try? FileManager.default.removeItem(atPath: dir)
            throw error
        }
    }

    /// Runs a command to completion (SIGKILL after `timeout`, then the status is the signal) and returns
    /// its status and output.
    public static func run(_ executable: String, _ arguments: [String] = [],
                           environment: [String: String]? = nil, extraEnvironment: [String: String] = [:],
                           workingDirectory: String? = nil, stdin: String? = nil,
                           timeout: Duration = .seconds(60)) async throws -> CommandResult {
        let p = try spawn(executable, arguments, environment: environment, extraEnvironment: extraEnvironment,
                          workingDirectory: workingDirectory, stdin: stdin)
        let status = await p.waitOrKill(timeout: timeout)
        return CommandResult(status: status, stdout: p.stdout, stderr: p.stderr)
    }

    deinit {
        let pid = self.pid
        reaped.withLock { st in
            if st == nil {
                posixKill(-pid, SIGKILL)
                posixKill(pid, SIGKILL)
                var raw: Int32 = 0
                while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
                st = .signaled(SIGKILL)
            }
        }
        try? FileManager.default.removeItem(atPath: tempDir)
    }

    // MARK: status and signals

    /// The exit status if the child has ended (reaps it), nil while it runs.
    public var exitStatus: ExitStatus? {
        reaped.withLock { st in
            if let st { return st }
            var raw: Int32 = 0
            var r: pid_t
            repeat { r = waitpid(pid, &raw, WNOHANG) } while r < 0 && errno == EINTR
            guard r == pid else { return nil }
            st = Self.decode(raw)
            return st
        }
    }

    public var isRunning: Bool { exitStatus == nil }

    /// Sends `sig` to the child's process group (and the child); no-op once it has been reaped.
    public func signal(_ sig: Int32) {
        reaped.withLock { st in
            guard st == nil else { return }
            posixKill(-pid, sig)
            posixKill(pid, sig)
        }
    }

    public func terminate() { signal(SIGTERM) }
    public func kill() { signal(SIGKILL) }
    /// SIGSTOP: the child freezes (its sockets stay open but nothing answers).
    public func suspend() { signal(SIGSTOP) }
    /// SIGCONT after `suspend()`.
    public func resume() { signal(SIGCONT) }

    /// Waits until the child ends; nil if it still runs after `timeout`.
    public func wait(timeout: Duration) async -> ExitStatus? {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var pause = Duration.milliseconds(2)
        while true {
            if let st = exitStatus { return st }
            if clock.now >= deadline { return nil }
            try? await Task.sleep(for: pause)
            pause = min(pause * 2, .milliseconds(50))
        }
    }

    /// Waits up to `timeout`, then SIGKILLs the child and reaps it.
    @discardableResult
    public func waitOrKill(timeout: Duration) async -> ExitStatus {
        if let st = await wait(timeout: timeout) { return st }
        kill()
        return await wait(timeout: .seconds(30)) ?? .signaled(SIGKILL)
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL. Returns how it ended.
    @discardableResult
    public func stop(grace: Duration = .seconds(5)) async -> ExitStatus {
        if let st = exitStatus { return st }
        terminate()
        return await waitOrKill(timeout: grace)
    }

    // MARK: output

    /// Everything the child wrote to stdout so far ("" when not captured).
    public var stdout: String { Self.read(stdoutPath) }
    /// Everything the child wrote to stderr so far.
    public var stderr: String { Self.read(stderrPath) }

    /// Waits until captured stdout (or stderr) satisfies `predicate`; false on timeout or if the child
    /// ends without it.
    public func waitForOutput(stderr useStderr: Bool = false, timeout: Duration,
                              _ predicate: (String) -> Bool) async -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            let text = useStderr ? stderr : stdout
            if predicate(text) { return true }
            if exitStatus != nil { return predicate(useStderr ? stderr : stdout) }
            if clock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Waits until stdout (or stderr) contains `text`.
    public func waitForOutput(containing text: String, stderr useStderr: Bool = false,
                              timeout: Duration) async -> Bool {
        await waitForOutput(stderr: useStderr, timeout: timeout) { $0.contains(text) }
    }

    // MARK: helpers

    private static func read(_ path: String?) -> String {
        guard let path, let d = FileManager.default.contents(atPath: path) else { return "" }
        return String(decoding: d, as: UTF8.self)
    }

    private static func decode(_ raw: Int32) -> ExitStatus {
        let sig = raw & 0x7F
        return sig == 0 ? .exited((raw >> 8) & 0xFF) : .signaled(sig)
    }

    /// `name` itself if it holds a slash, else its first executable match in PATH.
    public static func resolveExecutable(_ name: String) throws -> String {
        if name.contains("/") {
            guard access(name, X_OK) == 0 else { throw ChildProcessError("not executable: \(name)") }
            return name
        }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let p = "\(dir)/\(name)"
            if access(p, X_OK) == 0 { return p }
        }
        throw ChildProcessError("\(name) not found in PATH")
    }
}

/// A new empty directory under the system temp dir (mkdtemp); the caller removes it.
public func makeTempDirectory(prefix: String) throws -> String {
    let base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
    var template = Array("\(base)/\(prefix)-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { buf -> Bool in mkdtemp(buf.baseAddress!) != nil }
    guard made else { throw ChildProcessError("mkdtemp in \(base): \(String(cString: strerror(errno)))") }
    return template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}

private func posixKill(_ pid: pid_t, _ sig: Int32) {
    _ = kill(pid, sig)
}
