#!/usr/bin/env bash
# Regenerates the committed swift-protobuf 1.39.0 code for Protos/{rpc,kv,auth}.proto that the
# codec benchmark compares Keel's own generated code (KeelAPI) against.
# Run from anywhere; needs protoc (Debian protobuf-compiler) and a Swift toolchain.
# protoc-gen-swift is built from the local swift-protobuf mirror at tag 1.39.0 (about 45 s in
# release) into a temporary folder outside the repo; nothing of swift-protobuf is committed
# except the generated files.
#   PROTOC_GEN_SWIFT=/path/to/protoc-gen-swift ./generate-swift-protobuf.sh   # reuse a built plugin
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="$here/Sources/SwiftProtobufMessages/SwiftProtobufGenerated"
SPB_GIT="${SPB_GIT:-/opt/swift-packages/apple/swift-protobuf.git}"
SPB_TAG=1.39.0

if [[ -z "${PROTOC_GEN_SWIFT:-}" ]]; then
    work="$(mktemp -d /tmp/spb-gen.XXXXXX)"
    trap 'rm -rf "$work"' EXIT
    git -c advice.detachedHead=false clone --quiet --branch "$SPB_TAG" "$SPB_GIT" "$work/swift-protobuf"
    swift build -c release --package-path "$work/swift-protobuf" --scratch-path "$work/build" \
        --product protoc-gen-swift
    PROTOC_GEN_SWIFT="$work/build/release/protoc-gen-swift"
fi
"$PROTOC_GEN_SWIFT" --version

rm -rf "$out"
mkdir -p "$out"
# Visibility=Public so the benchmark executable (another module) can use the types;
# FileNaming=DropPath keeps plain rpc.pb.swift / kv.pb.swift / auth.pb.swift.
protoc --plugin=protoc-gen-swift="$PROTOC_GEN_SWIFT" \
    --proto_path="$repo/Protos" \
    --swift_out="$out" --swift_opt=Visibility=Public --swift_opt=FileNaming=DropPath \
    rpc.proto kv.proto auth.proto
ls -l "$out"
