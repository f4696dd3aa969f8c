#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import Storage

/// A fresh temporary directory, removed by `cleanup()`.
struct TempDir {
    let path: String
    init(_ tag: String = "keel-storage") {
        var template = Array("/tmp/\(tag)-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = String(cString: p!)
    }
    func cleanup() { _ = rmTree(path) }
}

@discardableResult
func rmTree(_ path: String) -> Int32 {
    if let names = try? FileIO.listDir(path) {
        for n in names { rmTree(path + "/" + n) }
        return rmdir(path)
    }
    return unlink(path)
}

func fileBytes(_ path: String) -> [UInt8] {
    let fd = open(path, O_RDONLY)
    defer { close(fd) }
    return (try? FileIO.readAll(fd, path: path)) ?? []
}

/// Writes `bytes` at `offset` of `path` (created if missing).
func writeBytes(_ path: String, at offset: Int, _ bytes: [UInt8]) {
    let fd = open(path, O_RDWR | O_CREAT, 0o644)
    defer { close(fd) }
    bytes.withUnsafeBytes { _ = pwrite(fd, $0.baseAddress!, $0.count, off_t(offset)) }
}

/// Path of an executable built next to the test binary.
func builtProduct(_ name: String) -> String {
    var buf = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buf, buf.count - 1)
    var exe = String(decoding: buf[0..<max(n, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    // .../debug/KeelPackageTests.xctest (a file on Linux)
    while let slash = exe.lastIndex(of: "/") {
        exe = String(exe[..<slash])
        if access(exe + "/" + name, X_OK) == 0 { return exe + "/" + name }
    }
    return name
}

/// A child process with its stdout on a pipe.
final class Child {
    let pid: pid_t
    let out: Int32
    private var pending: [UInt8] = []

    init(_ path: String, _ args: [String]) throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw StorageIOError(operation: "pipe", path: "", errno: errno) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_addclose(&actions, fds[0])
        let argv = ([path] + args).map { strdup($0) } + [nil]
        var p: pid_t = 0
        let rc = posix_spawn(&p, path, &actions, nil, argv, environ)
        argv.forEach { free($0) }
        posix_spawn_file_actions_destroy(&actions)
        close(fds[1])
        guard rc == 0 else { close(fds[0]); throw StorageIOError(operation: "posix_spawn", path: path, errno: rc) }
        pid = p
        out = fds[0]
    }

    /// Next complete line, or nil at EOF.
    func readLine() -> String? {
        while true {
            if let nl = pending.firstIndex(of: 10) {
                let line = String(decoding: pending[..<nl], as: UTF8.self)
                pending.removeSubrange(...nl)
                return line
            }
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = read(out, &buf, buf.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return nil }
            pending += buf[0..<n]
        }
    }

    func kill9() { _ = kill(pid, SIGKILL) }

    /// Reads up to `count` lines, each the number of the last durable write; then SIGKILLs the child
    /// and reaps it. Returns the last number read (or `previous` if none); a line that is not a
    /// number is recorded as an issue with `context`.
    func readAcksThenKill(_ count: Int, previous: UInt64, context: String) -> UInt64 {
        var acked = previous
        var lines = 0
        while lines < count, let line = readLine() {
            guard let n = UInt64(line) else { Issue.record("helper said: \(line) (\(context))"); break }
            acked = n; lines += 1
        }
        kill9()
        wait()
        return acked
    }

    @discardableResult
    func wait() -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        close(out)
        return status
    }
}


func randomSeed() -> UInt64 {
    var g = SystemRandomNumberGenerator()
    return g.next()
}
