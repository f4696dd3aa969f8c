import CJemalloc

/// The process's malloc. `keel` links jemalloc (Debian's libjemalloc-dev, through CJemalloc): its
/// per-thread caches serve the server's many short-lived allocations (request and response
/// buffers, tasks, promises) that glibc's malloc spent a fifth of the CPU on under load, consolidating
/// and coalescing chunks across threads (Benchmarks/RESULTS.md, "Allocator").
enum Allocator {
    /// "jemalloc <version>" when jemalloc serves this process's malloc, else "glibc".
    static var name: String {
        guard let version = keel_jemalloc_version() else { return "glibc" }
        return "jemalloc \(String(cString: version))"
    }
}
