// swift-tools-version:6.0
import PackageDescription

// Keel: an etcd v3 compatible, Raft-replicated key-value store.
// Module layering (see README / DESIGN): ProtoWire <- KeelAPI (generated) <- GRPC <- Server
// Raft and Storage are independent of the transport; the Raft core knows no I/O.

let nio: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")
let nioPosix: Target.Dependency = .product(name: "NIOPosix", package: "swift-nio")
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")

let package = Package(
    name: "Keel",
    products: [
        .executable(name: "keel", targets: ["keel"]),
        .executable(name: "keel-bench", targets: ["keel-bench"]),
        .library(name: "KeelAPI", targets: ["KeelAPI"]),
        .library(name: "KeelClient", targets: ["KeelClient"]),
        .executable(name: "keelctl", targets: ["keelctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        // Protobuf runtime: varints, fixed, length-delimited, readers and writers. No dependencies.
        .target(name: "ProtoWire"),
        // .proto parser and Swift code generator (a library, so it can be unit tested).
        .target(name: "ProtoGenCore"),
        // The generator executable the build-tool plugin runs.
        .executableTarget(name: "ProtoGen", dependencies: ["ProtoGenCore"]),
        // Build-tool plugin: generates Swift for Protos/*.proto (and a target's own .proto files).
        .plugin(name: "ProtoGenPlugin", capability: .buildTool(), dependencies: ["ProtoGen"]),
        // etcd v3 API + Keel's raft.proto message types and service descriptors (all generated).
        .target(name: "KeelAPI", dependencies: ["ProtoWire"], plugins: ["ProtoGenPlugin"]),

        // Raft consensus core: a pure deterministic state machine.
        .target(name: "Raft"),

        // Storage: WAL, snapshots, MVCC on LMDB.
        .systemLibrary(name: "CLMDB", pkgConfig: "lmdb", providers: [.apt(["liblmdb-dev"])]),
        .target(name: "Storage", dependencies: ["CLMDB", "ProtoWire", "KeelAPI"]),

        // gRPC over HTTP/2 (nghttp2 in memory mode) on SwiftNIO, gzip through zlib.
        .systemLibrary(name: "CNGHTTP2", pkgConfig: "libnghttp2", providers: [.apt(["libnghttp2-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .target(name: "GRPC", dependencies: ["CNGHTTP2", "CZlib", "ProtoWire", nio, nioPosix, logging]),

        // The server executable.
        // gRPC transport benchmark (not a test): see Benchmarks/RESULTS.md.
        .executableTarget(name: "grpc-bench", dependencies: ["GRPC", "ProtoWire", nio, nioPosix],
                          path: "Benchmarks/GRPCBench", exclude: ["bench.proto"], plugins: ["ProtoGenPlugin"]),
        // keel-bench: load generator for any etcd v3 endpoint (Benchmarks/KeelBench; see Benchmarks/compare).
        .target(name: "KeelBenchCore", dependencies: ["GRPC", "KeelAPI", nio, nioPosix], path: "Benchmarks/KeelBench/Core"),
        .executableTarget(name: "keel-bench", dependencies: [
            "KeelBenchCore", "CJemalloc", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Benchmarks/KeelBench/CLI"),
        .testTarget(name: "KeelBenchTests", dependencies: ["KeelBenchCore", "keel-bench", "KeelTestSupport", "GRPC"]),

        // The Keel server: etcd v3 services on the Raft loop, the apply loop and the MVCC store.
        .target(name: "Server", dependencies: ["KeelAPI", "GRPC", "Raft", "Storage", nio, nioPosix, logging,
                                               .product(name: "NIOHTTP1", package: "swift-nio")]),
        // jemalloc as the server's malloc (see Sources/keel/Allocator.swift).
        .systemLibrary(name: "CJemalloc", pkgConfig: "jemalloc", providers: [.apt(["libjemalloc-dev"])]),
        .executableTarget(name: "keel", dependencies: [
            "Server", "CJemalloc", logging,
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Helpers shared by the test targets (the seeded PRNG every fuzz/model test replays from).
        .target(name: "KeelTestSupport", path: "Tests/KeelTestSupport"),
        .testTarget(name: "KeelTestSupportTests", dependencies: ["KeelTestSupport"]),
        // etcd v3 client library (balancer over several endpoints) and its tests against etcd 3.4 / keel.
        .target(name: "KeelClient", dependencies: ["GRPC", "KeelAPI", nio, nioPosix]),
        .testTarget(name: "KeelClientTests", dependencies: ["KeelClient", "KeelAPI", "KeelTestSupport", "keel"]),
        .executableTarget(name: "keelctl", dependencies: [
            "KeelClient", "KeelAPI", "GRPC", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "KeelctlTests", dependencies: ["KeelTestSupport", "keelctl", "keel"]),

        .testTarget(name: "ProtoWireTests", dependencies: ["ProtoWire"]),
        .testTarget(name: "ProtoGenTests", dependencies: ["ProtoGenCore", "ProtoWire", "KeelTestSupport"],
                    exclude: ["Protos"], plugins: ["ProtoGenPlugin"]),
        .testTarget(name: "KeelAPITests", dependencies: ["KeelAPI", "ProtoWire", "KeelTestSupport"]),
        .testTarget(name: "RaftTests", dependencies: ["Raft", "KeelTestSupport"]),
        .testTarget(name: "StorageTests", dependencies: ["Storage", "KeelAPI", "storage-crash-helper", "KeelTestSupport"]),
        // Child process for StorageTests' SIGKILL crash and full-disk tests.
        .executableTarget(name: "storage-crash-helper", dependencies: ["Storage", "KeelAPI"], path: "Tests/StorageCrashHelper"),
        // Storage benchmark (not a test): see Benchmarks/RESULTS.md.
        .executableTarget(name: "storage-bench", dependencies: ["Storage", "KeelAPI"], path: "Benchmarks/StorageBench"),
        // Raft benchmark (not a test): see Benchmarks/RESULTS.md. RaftBenchAlloc counts malloc & co.
        .target(name: "RaftBenchAlloc", path: "Benchmarks/RaftBenchAlloc"),
        .executableTarget(name: "raft-bench", dependencies: ["Raft", "RaftBenchAlloc"], path: "Benchmarks/RaftBench"),
        .testTarget(name: "ServerTests", dependencies: ["Server", "KeelAPI", "GRPC", "Storage", "KeelTestSupport", nio, nioPosix,
                                                        .product(name: "NIOHTTP1", package: "swift-nio"),
                                                        .product(name: "NIOEmbedded", package: "swift-nio")]),
        // End-to-end: the real keel binary driven by Debian's etcdctl 3.4, compared with etcd 3.4.
        .testTarget(name: "E2ETests", dependencies: ["keel", "KeelTestSupport"], exclude: ["python"]),
        // Multi-process cluster and fault tests (LocalCluster harness, nemesis, linearizability checker).
        .testTarget(name: "ClusterTests", dependencies: ["KeelTestSupport", "GRPC", "KeelAPI", "keel"]),
        .testTarget(name: "GRPCTests", dependencies: ["GRPC", "ProtoWire", "CNGHTTP2", nio, nioPosix],
                    exclude: ["echo.proto", "python"], plugins: ["ProtoGenPlugin"]),
    ],
    swiftLanguageModes: [.v6]
)
