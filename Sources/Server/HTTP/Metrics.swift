#if canImport(Glibc)
import Glibc
#endif

/// A Prometheus histogram with fixed upper bounds (seconds). Owned by one loop (confined);
/// /metrics asks the owner for a copy.
public struct Histogram: Sendable, Hashable {
    public var bounds: [Double]
    public var counts: [UInt64]
    public var sum: Double = 0
    public var count: UInt64 = 0

    /// etcd's disk histograms: 0.001 s doubling 14 times (up to 8.192 s).
    public static func etcdDisk() -> Histogram {
        Histogram(bounds: (0..<14).map { 0.001 * Double(1 << $0) })
    }

    public init(bounds: [Double]) {
        self.bounds = bounds
        self.counts = Array(repeating: 0, count: bounds.count)
    }

    public mutating func observe(_ seconds: Double) {
        sum += seconds
        count += 1
        if let i = bounds.firstIndex(where: { seconds <= $0 }) { counts[i] += 1 }
    }
}

/// Builds the Prometheus text exposition format (version 0.0.4).
public struct PrometheusText {
    public private(set) var text = ""
    public init() {}

    public mutating func gauge(_ name: String, _ help: String, _ value: Double) {
        header(name, help, "gauge"); text += "\(name) \(format(value))\n"
    }

    public mutating func counter(_ name: String, _ help: String, _ value: Double) {
        header(name, help, "counter"); text += "\(name) \(format(value))\n"
    }

    public mutating func histogram(_ name: String, _ help: String, _ h: Histogram) {
        header(name, help, "histogram")
        var cumulative: UInt64 = 0
        for (b, c) in zip(h.bounds, h.counts) {
            cumulative += c
            text += "\(name)_bucket{le=\"\(format(b))\"} \(cumulative)\n"
        }
        text += "\(name)_bucket{le=\"+Inf\"} \(h.count)\n"
        text += "\(name)_sum \(format(h.sum))\n"
        text += "\(name)_count \(h.count)\n"
    }

    private mutating func header(_ name: String, _ help: String, _ type: String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    func format(_ v: Double) -> String {
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }
}

/// Process facts from /proc (Linux), as Prometheus' process collector reports them.
public enum ProcessStats {
    public static var residentMemoryBytes: Double {
        guard let statm = readFile("/proc/self/statm") else { return 0 }
        let fields = statm.split(separator: " ")
        guard fields.count > 1, let pages = Double(fields[1]) else { return 0 }
        return pages * Double(sysconf(Int32(_SC_PAGESIZE)))
    }

    public static var cpuSeconds: Double {
        guard let stat = readFile("/proc/self/stat"),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // after ")": state(0) ... utime(11) stime(12)
        guard fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    public static var openFDs: Double {
        guard let d = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(d) }
        var n = 0
        while readdir(d) != nil { n += 1 }
        return Double(max(0, n - 2))
    }

    static func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 4096) }
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
