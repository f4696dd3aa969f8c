import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Structured logs as etcd writes them (zap's JSON encoder): one JSON object per line on stderr,
/// {"level":"info","ts":"2026-11-25T07:00:00.123Z","caller":"keel","msg":"...",<metadata>}.
/// Each line goes out with a single write(2), so lines from different threads never interleave.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    /// etcd's level names -> swift-log levels.
    public static func level(etcd name: String) -> Logger.Level {
        switch name {
        case "debug": .debug
        case "warn": .warning
        case "error": .error
        case "panic", "fatal": .critical
        default: .info
        }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let levelName: String
        switch event.level {
        case .trace, .debug: levelName = "debug"
        case .info, .notice: levelName = "info"
        case .warning: levelName = "warn"
        case .error: levelName = "error"
        case .critical: levelName = "fatal"
        }
        var line = "{\"level\":\"\(levelName)\",\"ts\":\"\(Self.timestamp())\",\"caller\":\(Self.quote(label)),\"msg\":\(Self.quote(event.message.description))"
        var all = metadata
        if let m = event.metadata { all.merge(m) { _, new in new } }
        for key in all.keys.sorted() {
            line += ",\(Self.quote(key)):\(Self.quote("\(all[key]!)"))"
        }
        line += "}\n"
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { raw in
            var off = 0
            while off < raw.count {
                let n = write(2, raw.baseAddress! + off, raw.count - off)
                if n <= 0 { break }
                off += n
            }
        }
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }

    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = ts.tv_sec
        var tmv = tm()
        gmtime_r(&t, &tmv)
        func pad(_ v: Int32, _ w: Int) -> String {
            let s = String(v); return String(repeating: "0", count: max(0, w - s.count)) + s
        }
        return "\(pad(tmv.tm_year + 1900, 4))-\(pad(tmv.tm_mon + 1, 2))-\(pad(tmv.tm_mday, 2))T"
            + "\(pad(tmv.tm_hour, 2)):\(pad(tmv.tm_min, 2)):\(pad(tmv.tm_sec, 2)).\(pad(Int32(ts.tv_nsec / 1_000_000), 3))Z"
    }
}
