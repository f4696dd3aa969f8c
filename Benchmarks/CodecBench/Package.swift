// swift-tools-version:6.0
import PackageDescription

// Codec benchmark: Keel's generated protobuf code (KeelAPI on ProtoWire) against
// apple/swift-protobuf 1.39.0 on the same etcd messages. A separate package so the main
// package (and CI) never compiles swift-protobuf. Run:
//   swift run -c release --scratch-path /tmp/codecbench-build
// Results: ../RESULTS.md ("Codec").

let package = Package(
    name: "CodecBench",
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0"),
        .package(name: "Keel", path: "../.."),
    ],
    targets: [
        // swift-protobuf's generated code for Protos/{rpc,kv,auth}.proto, committed once
        // (see generate-swift-protobuf.sh); its own module keeps its names apart from KeelAPI's.
        .target(
            name: "SwiftProtobufMessages",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            path: "Sources/SwiftProtobufMessages"
        ),
        .executableTarget(
            name: "codec-bench",
            dependencies: [
                "SwiftProtobufMessages",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "KeelAPI", package: "Keel"),
            ],
            path: "Sources/codec-bench"
        ),
    ],
    swiftLanguageModes: [.v6]
)
