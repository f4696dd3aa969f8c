#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An I/O failure, with the operation, the path and errno (ENOSPC shows as "No space left on device").
public struct StorageIOError: Error, CustomStringConvertible, Sendable, Equatable {
    public let operation: String
    public let path: String
    public let errno: Int32
    public var description: String {
        "\(operation) \(path): \(String(cString: strerror(errno))) (errno \(errno))"
    }
    public var isNoSpace: Bool { errno == ENOSPC || errno == EDQUOT || errno == EFBIG }
}

enum FileIO {
    static func check(_ rc: Int32, _ op: String, _ path: String) throws(StorageIOError) {
        if rc < 0 { throw StorageIOError(operation: op, path: path, errno: errno) }
    }

    static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0o644) throws(StorageIOError) -> Int32 {
        let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
        if fd < 0 { throw StorageIOError(operation: "open", path: path, errno: errno) }
        return fd
    }

    /// Writes all of `bytes` at `offset`, retrying short writes and EINTR.
    static func pwriteAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int, path: String) throws(StorageIOError) {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw StorageIOError(operation: "pwrite", path: path, errno: errno)
            }
            if n == 0 { throw StorageIOError(operation: "pwrite", path: path, errno: EIO) }
            done += n
        }
    }

    static func readAll(_ fd: Int32, path: String) throws(StorageIOError) -> [UInt8] {
        var st = stat()
        try check(fstat(fd, &st), "fstat", path)
        let size = Int(st.st_size)
        var out = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, size - done, off_t(done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw StorageIOError(operation: "pread", path: path, errno: errno)
            }
            if n == 0 { out.removeLast(size - done); break }
            done += n
        }
        return out
    }

    static func fsyncDir(_ dir: String) throws(StorageIOError) {
        let fd = try open(dir, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        try check(fsync(fd), "fsync", dir)
    }

    static func listDir(_ dir: String) throws(StorageIOError) -> [String] {
        guard let d = opendir(dir) else { throw StorageIOError(operation: "opendir", path: dir, errno: errno) }
        defer { closedir(d) }
        var names: [String] = []
        while let ent = readdir(d) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    static func mkdirs(_ path: String, mode: mode_t = 0o755) throws(StorageIOError) {
        var cur = path.hasPrefix("/") ? "" : "."
        for comp in path.split(separator: "/") {
            cur += "/" + comp
            if mkdir(cur, mode) < 0 && errno != EEXIST {
                throw StorageIOError(operation: "mkdir", path: cur, errno: errno)
            }
        }
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }
}

/// `mkdir -p`: every missing directory of `path`, made with `mode` (existing ones stay as they are).
public func createDirectories(_ path: String, mode: mode_t) throws(StorageIOError) {
    try FileIO.mkdirs(path, mode: mode)
}

/// An exclusive `flock` on `<dir>/LOCK`, held while the object lives (released when the fd closes,
/// also when the process dies). A second open of the same directory, from this or another process,
/// fails with `DirectoryLockedError` once the lock has stayed taken for `waitMillis`: a process that
/// forks a child while it holds the lock (posix_spawn) shares it with the child until the child's exec
/// closes the fd (O_CLOEXEC), so a close-then-reopen in the parent (a snapshot install) can meet it
/// for that moment.
public final class DirectoryLock {
    public let path: String
    private var fd: Int32
    static let waitMillis = 1000

    public init(directory: String) throws {
        try FileIO.mkdirs(directory)
        path = directory + "/LOCK"
        fd = try FileIO.open(path, O_RDWR | O_CREAT)
        var waited = 0
        while flock(fd, LOCK_EX | LOCK_NB) < 0 {
            let e = errno
            if e == EWOULDBLOCK && waited < Self.waitMillis {
                usleep(10_000)
                waited += 10
                continue
            }
            close(fd)
            if e == EWOULDBLOCK { throw DirectoryLockedError(path: path) }
            throw StorageIOError(operation: "flock", path: path, errno: e)
        }
    }

    public func release() {
        if fd >= 0 { close(fd); fd = -1 }
    }

    deinit { release() }
}

public struct DirectoryLockedError: Error, CustomStringConvertible, Sendable, Equatable {
    public let path: String
    public var description: String { "data directory is in use by another process (lock held on \(path))" }
}
