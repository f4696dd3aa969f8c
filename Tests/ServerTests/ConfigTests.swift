import Testing
@testable import Server

@Suite struct ConfigTests {
    @Test func defaultsMatchEtcd() throws {
        let c = ServerConfig()
        #expect(c.name == "default")
        #expect(c.resolvedDataDir == "default.keel")
        #expect(c.listenClientURLs == "http://localhost:2379")
        #expect(c.initialClusterToken == "etcd-cluster")
        #expect(c.heartbeatIntervalMs == 100 && c.electionTimeoutMs == 1000)
        #expect(c.snapshotCount == 100_000)
        #expect(c.maxRequestBytes == 1_572_864 && c.maxTxnOps == 128)
        #expect(c.effectiveQuota == 2 << 30)
        let r = try c.resolve()
        #expect(r.clientURLs.map(\.description) == ["http://localhost:2379"])
        #expect(r.clientURLs[0].bindHost == "127.0.0.1")
        #expect(r.autoCompaction == nil)
    }

    /// etcd 3.4 started with no flags reports member 8e9e05c52164694d in cluster cdf818194e3a8c32
    /// (the well-known IDs of a default single-member etcd).
    @Test func memberAndClusterIDsAreEtcds() throws {
        let r = try ServerConfig().resolve()
        #expect(String(r.memberID, radix: 16) == "8e9e05c52164694d")
        #expect(String(r.clusterID, radix: 16) == "cdf818194e3a8c32")
        var c = ServerConfig()
        c.initialClusterToken = "other"
        #expect(try c.resolve().memberID != r.memberID)
    }

    @Test func urlErrorsUseEtcdMessages() {
        #expect(throws: ConfigError("URL scheme must be http, https, unix, or unixs: ftp://a:1")) {
            try URLParsing.parseList("ftp://a:1")
        }
        #expect(throws: ConfigError("URL address does not have the form \"host:port\": http://x")) {
            try URLParsing.parseList("http://x")
        }
        #expect(throws: ConfigError("URL must not contain a path: http://a:1/p")) {
            try URLParsing.parseList("http://a:1/p")
        }
        #expect(throws: ConfigError("no valid URLs given")) { try URLParsing.parseList("") }
    }

    @Test func urlListsParseAndSort() throws {
        let l = try URLParsing.parseList(" http://127.0.0.1:2,http://127.0.0.1:1 ,http://[::1]:3")
        #expect(l.map(\.description) == ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://[::1]:3"])
        #expect(l[2].host == "::1" && l[2].port == 3)
    }

    @Test func initialClusterMustNameThisMember() {
        var c = ServerConfig()
        c.name = "n1"
        c.initialCluster = "n2=http://localhost:2380"
        #expect(throws: ConfigError("couldn't find local name \"n1\" in the initial cluster configuration")) {
            try c.resolve()
        }
        c.initialCluster = nil   // derived from --name, as etcd does
        #expect((try? c.resolve()) != nil)
    }

    @Test func otherValidation() {
        var c = ServerConfig()
        c.electionTimeoutMs = 300
        #expect(throws: ConfigError.self) { try c.resolve() }
        c = ServerConfig(); c.initialClusterState = "bogus"
        #expect(throws: ConfigError.self) { try c.resolve() }
        c = ServerConfig(); c.autoCompactionMode = "revision"; c.autoCompactionRetention = "1000"
        #expect((try? c.resolve())?.autoCompaction == .revision(1000))
        c = ServerConfig(); c.autoCompactionRetention = "1h30m"
        #expect((try? c.resolve())?.autoCompaction == .periodic(seconds: 5400))
        c = ServerConfig(); c.autoCompactionRetention = "2"
        #expect((try? c.resolve())?.autoCompaction == .periodic(seconds: 7200))
        c = ServerConfig(); c.logLevel = "loud"
        #expect(throws: ConfigError.self) { try c.resolve() }
    }

    /// --backend-batch-interval / --backend-batch-limit: etcd's defaults (100 ms, 10,000) when unset
    /// or 0; Go duration text of whole units.
    @Test func backendBatchFlags() {
        var c = ServerConfig()
        #expect(c.backendBatchIntervalMillis == 100 && c.backendBatchEntries == 10_000)
        for (text, ms) in [("0", 0), ("100ms", 100), ("1s", 1000), ("1s500ms", 1500), ("2m", 120_000), ("1h", 3_600_000)] {
            #expect(ServerConfig.parseMillis(text) == Int64(ms), "\(text)")
        }
        for bad in ["ms", "10", "10x", "1.5s", "-1s", "s10"] { #expect(ServerConfig.parseMillis(bad) == nil, "\(bad)") }
        c.backendBatchInterval = "250ms"; c.backendBatchLimit = 7
        #expect((try? c.resolve()) != nil)
        #expect(c.backendBatchIntervalMillis == 250 && c.backendBatchEntries == 7)
        c.backendBatchInterval = "soon"
        #expect(throws: ConfigError.self) { try c.resolve() }
        c = ServerConfig(); c.backendBatchLimit = -1
        #expect(throws: ConfigError.self) { try c.resolve() }
    }

    @Test func environmentFillsUnsetFlagsOnly() {
        let env = ["ETCD_NAME": "fromenv", "ETCD_DATA_DIR": "/env", "ETCD_UNRELATED": "x"]
        let out = FlagEnvironment.merge(arguments: ["-data-dir", "/flag"], environment: env,
                                        flags: ["name", "data-dir", "max-txn-ops"])
        #expect(out == ["--data-dir", "/flag", "--name=fromenv"])
        #expect(FlagEnvironment.variable(forFlag: "listen-client-urls") == "ETCD_LISTEN_CLIENT_URLS")
        let eq = FlagEnvironment.merge(arguments: ["--name=x"], environment: env, flags: ["name"])
        #expect(eq == ["--name=x"])
    }
}

@Suite struct HashTests {
    @Test func sha1KnownVectors() {
        #expect(hexString(SHA1.hash(Array("abc".utf8))) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(hexString(SHA1.hash([UInt8]())) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        let long = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(hexString(SHA1.hash(long)) == "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
    }

    @Test func sha256KnownVectors() {
        #expect(hexString(SHA256.hash(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(hexString(SHA256.hash([UInt8]())) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        // one million 'a' fed in uneven pieces through both update paths
        var s = SHA256()
        let chunk = [UInt8](repeating: UInt8(ascii: "a"), count: 999)
        var fed = 0
        while fed + 999 <= 1_000_000 {
            if fed % 2 == 0 { s.update(chunk) } else { chunk.withUnsafeBytes { s.update($0) } }
            fed += 999
        }
        s.update([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000 - fed))
        #expect(hexString(s.finalize()) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }
}
