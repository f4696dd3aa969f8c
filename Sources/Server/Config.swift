// Server configuration: etcd's flags (names, defaults, meanings), their ETCD_* environment
// variables, URL validation with etcd's messages, and etcd's member / cluster ID derivation.

/// A parsed `scheme://host:port` URL as etcd accepts it (types.NewURLs rules).
public struct ServerURL: Sendable, Hashable, CustomStringConvertible {
    public var scheme: String
    public var host: String
    public var port: Int
    /// The text as given (trimmed); etcd hashes the URL's string form, which for the accepted
    /// shapes (no path, no query) is scheme://host:port.
    public var description: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return "\(scheme)://\(h):\(port)"
    }

    /// The address to bind: etcd resolves `localhost` to the loopback address.
    public var bindHost: String {
        switch host {
        case "localhost": "127.0.0.1"
        case "": "0.0.0.0"
        default: host
        }
    }
}

public struct ConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public enum URLParsing {
    /// Parses a comma-separated URL list as etcd's types.NewURLs: trims blanks, requires a
    /// scheme of http/https/unix/unixs, a host:port address and no path; result sorted.
    public static func parseList(_ list: String) throws(ConfigError) -> [ServerURL] {
        let parts = list.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        if list.isEmpty || parts.isEmpty { throw ConfigError("no valid URLs given") }
        var out: [ServerURL] = []
        for raw in parts { out.append(try parse(raw)) }
        return out.sorted { $0.description < $1.description }
    }

    public static func parse(_ raw: String) throws(ConfigError) -> ServerURL {
        let s = raw.trimmingSpaces()
        guard let sep = s.firstRange(of: "://") else {
            throw ConfigError("URL scheme must be http, https, unix, or unixs: \(s)")
        }
        let scheme = String(s[s.startIndex..<sep.lowerBound]).lowercased()
        guard ["http", "https", "unix", "unixs"].contains(scheme) else {
            throw ConfigError("URL scheme must be http, https, unix, or unixs: \(s)")
        }
        var rest = Substring(s[sep.upperBound...])
        var path = ""
        if let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) {
            path = String(rest[slash...]); rest = rest[..<slash]
        }
        // host:port, host may be [v6]
        let host: String, portText: Substring
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]"), rest[rest.index(after: close)...].hasPrefix(":") else {
                throw ConfigError("URL address does not have the form \"host:port\": \(s)")
            }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            portText = rest[rest.index(close, offsetBy: 2)...]
        } else {
            guard let colon = rest.lastIndex(of: ":"), !rest[..<colon].contains(":") else {
                throw ConfigError("URL address does not have the form \"host:port\": \(s)")
            }
            host = String(rest[..<colon])
            portText = rest[rest.index(after: colon)...]
        }
        if !path.isEmpty { throw ConfigError("URL must not contain a path: \(s)") }
        guard let port = Int(portText), port >= 0, port <= 65535 else {
            throw ConfigError("URL address does not have the form \"host:port\": \(s)")
        }
        if scheme != "http" {
            throw ConfigError("keel: only http:// URLs are supported (no TLS or unix sockets yet): \(s)")
        }
        return ServerURL(scheme: scheme, host: host, port: port)
    }
}

/// One node's configuration, with etcd's defaults.
public struct ServerConfig: Sendable {
    public var name = "default"
    /// nil: etcd's default `${name}.etcd`, Keel's `${name}.keel`.
    public var dataDir: String?
    public var listenClientURLs = "http://localhost:2379"
    public var advertiseClientURLs = "http://localhost:2379"
    public var listenPeerURLs = "http://localhost:2380"
    public var initialAdvertisePeerURLs = "http://localhost:2380"
    /// nil: `${name}=${initial-advertise-peer-urls}` (etcd derives it from --name when unset).
    public var initialCluster: String?
    public var initialClusterState = "new"
    public var initialClusterToken = "etcd-cluster"
    public var heartbeatIntervalMs = 100
    public var electionTimeoutMs = 1000
    public var snapshotCount: UInt64 = 100_000
    /// etcd's --backend-batch-interval: the longest the apply loop keeps applied writes in its
    /// group-commit transaction before committing it to the backend ("" or 0: 100ms).
    public var backendBatchInterval = ""
    /// etcd's --backend-batch-limit: the most entries in one backend commit (0: 10,000).
    public var backendBatchLimit = 0
    /// Entries kept in the Raft log after a snapshot for slow followers (etcd's
    /// --experimental-snapshot-catchup-entries); a follower further behind gets a snapshot.
    public var snapshotCatchUpEntries: UInt64 = 5000
    /// 0 = etcd's default quota (2 GiB).
    public var quotaBackendBytes: Int64 = 0
    public var maxRequestBytes = 1_572_864
    public var maxTxnOps = 128
    public var autoCompactionMode = "periodic"
    public var autoCompactionRetention = "0"
    public var logLevel = "info"
    /// Keel: restore the data dir from a `Maintenance.Snapshot` file before starting.
    public var restoreFile: String?

    public init() {}

    public static let defaultQuotaBytes: Int64 = 2 << 30

    public var resolvedDataDir: String { dataDir ?? "\(name).keel" }
    public var effectiveQuota: Int64 { quotaBackendBytes <= 0 ? Self.defaultQuotaBytes : quotaBackendBytes }

    /// Everything checked and derived at start-up.
    public struct Resolved: Sendable {
        public var clientURLs: [ServerURL]
        public var advertiseClientURLs: [ServerURL]
        public var peerURLs: [ServerURL]
        public var memberID: UInt64
        public var clusterID: UInt64
        public var autoCompaction: AutoCompaction?
        /// --initial-cluster as members (sorted by ID), IDs derived as etcd does (peer URLs + token).
        public var initialMembers: [InitialMember] = []
        /// --initial-cluster-state existing: join a running cluster (IDs come from its members).
        public var joinExisting = false
        /// --listen-peer-urls (the peer listener binds these).
        public var listenPeerURLs: [ServerURL] = []
    }

    /// One `name=url,...` group of --initial-cluster.
    public struct InitialMember: Sendable, Hashable {
        public var name: String
        public var peerURLs: [String]
        public var id: UInt64
    }

    public enum AutoCompaction: Sendable, Hashable {
        case periodic(seconds: Int64)
        case revision(Int64)
    }

    public func resolve() throws(ConfigError) -> Resolved {
        let client = try URLParsing.parseList(listenClientURLs)
        let advClient = try URLParsing.parseList(advertiseClientURLs)
        let listenPeer = try URLParsing.parseList(listenPeerURLs)
        let advPeer = try URLParsing.parseList(initialAdvertisePeerURLs)
        guard ["new", "existing"].contains(initialClusterState) else {
            throw ConfigError("unexpected initial-cluster-state \"\(initialClusterState)\" (valid: new, existing)")
        }
        guard heartbeatIntervalMs > 0 else { throw ConfigError("--heartbeat-interval must be > 0") }
        guard electionTimeoutMs >= 5 * heartbeatIntervalMs else {
            throw ConfigError("--election-timeout[\(electionTimeoutMs)ms] should be at least as 5 times as --heartbeat-interval[\(heartbeatIntervalMs)ms]")
        }
        guard snapshotCount > 0 else { throw ConfigError("--snapshot-count must be > 0") }
        guard Self.parseMillis(backendBatchInterval) != nil else {
            throw ConfigError("invalid value \"\(backendBatchInterval)\" for flag -backend-batch-interval: parse error")
        }
        guard backendBatchLimit >= 0 else { throw ConfigError("--backend-batch-limit must be >= 0") }
        guard maxRequestBytes > 0 else { throw ConfigError("--max-request-bytes must be > 0") }
        guard maxTxnOps > 0 else { throw ConfigError("--max-txn-ops must be > 0") }
        guard ["debug", "info", "warn", "error", "panic", "fatal"].contains(logLevel) else {
            throw ConfigError("unknown log level \"\(logLevel)\" (valid: debug, info, warn, error, panic, fatal)")
        }
        // --initial-cluster: name=url,... ; our own name must be there with our advertised peer URLs.
        let clusterText = initialCluster ?? advPeer.map { "\(name)=\($0)" }.joined(separator: ",")
        var members: [String: [String]] = [:]
        var seenURLs: Set<String> = []
        for item in clusterText.split(separator: ",") {
            guard let eq = item.firstIndex(of: "=") else {
                throw ConfigError("invalid --initial-cluster entry \"\(item)\" (want name=url)")
            }
            let url = try URLParsing.parse(String(item[item.index(after: eq)...]))
            // etcd (types.NewURLsMap + NewClusterFromURLsMap): one URL belongs to one member.
            guard seenURLs.insert(url.description).inserted else {
                throw ConfigError("duplicate URL \(url.description) in --initial-cluster")
            }
            members[String(item[..<eq]), default: []].append(url.description)
        }
        guard let mine = members[name] else {
            throw ConfigError("couldn't find local name \"\(name)\" in the initial cluster configuration")
        }
        if mine.sorted() != advPeer.map(\.description).sorted() {
            throw ConfigError("--initial-cluster has \(name)=\(mine.sorted().joined(separator: ",")) but missing from --initial-advertise-peer-urls=\(advPeer.map(\.description).joined(separator: ","))")
        }
        let initial = members.map { name, urls in
            InitialMember(name: name, peerURLs: urls.sorted(),
                          id: Identity.memberID(peerURLs: urls, token: initialClusterToken))
        }.sorted { $0.id < $1.id }
        for (a, b) in zip(initial, initial.dropFirst()) where a.id == b.id {
            throw ConfigError("member exists with identical ID \(String(a.id, radix: 16)) (\(a.name), \(b.name))")
        }
        let memberID = Identity.memberID(peerURLs: mine, token: initialClusterToken)
        var r = Resolved(clientURLs: client, advertiseClientURLs: advClient, peerURLs: advPeer,
                         memberID: memberID, clusterID: Identity.clusterID(memberIDs: initial.map(\.id)),
                         autoCompaction: try parseAutoCompaction())
        r.initialMembers = initial
        r.joinExisting = initialClusterState == "existing"
        r.listenPeerURLs = listenPeer
        return r
    }

    func parseAutoCompaction() throws(ConfigError) -> AutoCompaction? {
        switch autoCompactionMode {
        case "periodic":
            // etcd: an integer is hours; otherwise a Go duration ("30m", "1h30m", "90s").
            if let h = Int64(autoCompactionRetention) { return h == 0 ? nil : .periodic(seconds: h * 3600) }
            guard let secs = Self.parseDuration(autoCompactionRetention) else {
                throw ConfigError("invalid auto-compaction-retention \"\(autoCompactionRetention)\"")
            }
            return secs == 0 ? nil : .periodic(seconds: secs)
        case "revision":
            guard let r = Int64(autoCompactionRetention), r >= 0 else {
                throw ConfigError("invalid auto-compaction-retention \"\(autoCompactionRetention)\"")
            }
            return r == 0 ? nil : .revision(r)
        default:
            throw ConfigError("unknown auto-compaction-mode \"\(autoCompactionMode)\" (valid: periodic, revision)")
        }
    }

    /// --backend-batch-interval in milliseconds (etcd's default 100 ms when unset or 0).
    public var backendBatchIntervalMillis: Int64 {
        let ms = Self.parseMillis(backendBatchInterval) ?? 0
        return ms > 0 ? ms : 100
    }
    /// --backend-batch-limit (etcd's default 10,000 when 0).
    public var backendBatchEntries: Int { backendBatchLimit > 0 ? backendBatchLimit : 10_000 }

    /// Go-style durations of whole h/m/s/ms parts ("100ms", "1s500ms"), in milliseconds; "" is 0.
    static func parseMillis(_ s: String) -> Int64? {
        if s.isEmpty || s == "0" { return 0 }
        var total: Int64 = 0, num = "", unit = ""
        func flush() -> Bool {
            guard let n = Int64(num) else { return false }
            switch unit {
            case "h": total += n * 3_600_000
            case "m": total += n * 60_000
            case "s": total += n * 1000
            case "ms": total += n
            default: return false
            }
            num = ""; unit = ""
            return true
        }
        for c in s {
            if c.isNumber {
                if !unit.isEmpty { guard flush() else { return nil } }
                num.append(c)
            } else {
                guard !num.isEmpty else { return nil }
                unit.append(c)
            }
        }
        return flush() ? total : nil
    }

    /// Go-style durations made of h/m/s parts ("1h30m", "45s"); whole seconds.
    static func parseDuration(_ s: String) -> Int64? {
        var total: Int64 = 0, num = "", any = false
        for c in s {
            if c.isNumber { num.append(c); continue }
            guard let n = Int64(num) else { return nil }
            switch c {
            case "h": total += n * 3600
            case "m": total += n * 60
            case "s": total += n
            default: return nil
            }
            num = ""; any = true
        }
        return num.isEmpty && any ? total : nil
    }
}

/// etcd's member and cluster IDs, so a Keel node started with etcd's flags has etcd's IDs.
public enum Identity {
    /// SHA-1 over the sorted peer URLs concatenated, then the cluster token; the first 8 bytes
    /// big-endian (etcd's membership.NewMember without a timestamp).
    public static func memberID(peerURLs: [String], token: String) -> UInt64 {
        var sha = SHA1()
        for u in peerURLs.sorted() { sha.update(Array(u.utf8)) }
        sha.update(Array(token.utf8))
        return bigEndian64(sha.finalize())
    }

    /// SHA-1 over the sorted member IDs as 8-byte big-endian values; first 8 bytes big-endian.
    public static func clusterID(memberIDs: [UInt64]) -> UInt64 {
        var bytes: [UInt8] = []
        for id in memberIDs.sorted() {
            for k in (0..<8).reversed() { bytes.append(UInt8(truncatingIfNeeded: id >> (UInt64(k) * 8))) }
        }
        return bigEndian64(SHA1.hash(bytes))
    }

    static func bigEndian64(_ b: [UInt8]) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v = v << 8 | UInt64(b[i]) }
        return v
    }
}

/// etcd flag names -> ETCD_* variables, and etcd's single-dash flag style.
public enum FlagEnvironment {
    /// `--data-dir` -> `ETCD_DATA_DIR`.
    public static func variable(forFlag flag: String) -> String {
        "ETCD_" + flag.uppercased().replacingDashes()
    }

    /// Normalises etcd-style arguments (`-name x` as `--name x`) and appends `--flag=value` for every
    /// known flag set in the environment but not on the command line (the flag wins, as in etcd).
    public static func merge(arguments: [String], environment: [String: String], flags: [String],
                             booleanFlags: Set<String> = []) -> [String] {
        var args: [String] = []
        for a in arguments {
            if a.hasPrefix("-") && !a.hasPrefix("--") && a.count > 2 { args.append("-" + a) } else { args.append(a) }
        }
        let given = Set(args.compactMap { a -> String? in
            guard a.hasPrefix("--") else { return nil }
            let body = a.dropFirst(2)
            return String(body.split(separator: "=", maxSplits: 1).first ?? body)
        })
        for f in flags where !given.contains(f) {
            guard let v = environment[variable(forFlag: f)] else { continue }
            if booleanFlags.contains(f) {
                if v == "true" || v == "1" { args.append("--\(f)") }
            } else {
                args.append("--\(f)=\(v)")
            }
        }
        return args
    }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\n" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\n" { s = s.dropLast() }
        return String(s)
    }

    func replacingDashes() -> String { String(map { $0 == "-" ? "_" : $0 }) }
}
