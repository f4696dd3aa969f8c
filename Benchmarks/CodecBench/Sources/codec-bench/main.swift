// Codec benchmark: Keel's generated code (KeelAPI on ProtoWire) vs apple/swift-protobuf 1.39.0
// on identical etcd messages. Both sides encode to and decode from `[UInt8]`.
//
// For each message it first checks that both libraries produce byte-identical encodings and
// that each decodes the other's bytes back to a message equal to its own original; then it
// times encode and decode. Each measurement is a run of N iterations (N calibrated so a run
// takes about `runTarget`), repeated `runs` times with Keel and swift-protobuf interleaved
// (the machine is shared, so drift hits both), and the median run is reported.
// Every result feeds a checksum that is printed at the end, so nothing is dead code.
//
//   swift run -c release --scratch-path /tmp/codecbench-build [runs] [milliseconds-per-run]

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import KeelAPI
import SwiftProtobuf
import SwiftProtobufMessages

// MARK: - Settings

let arguments = CommandLine.arguments
let runs = arguments.count > 1 ? max(1, Int(arguments[1]) ?? 7) : 7
let runTargetNs: UInt64 = (arguments.count > 2 ? UInt64(arguments[2]) ?? 200 : 200) * 1_000_000

// MARK: - Deterministic test data

struct SplitMix64 {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func bytes(_ count: Int) -> [UInt8] {
        (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) }
    }
}

var rng = SplitMix64(state: 0x4B45_454C)  // "KEEL"

func keyBytes(_ prefix: String, _ i: Int) -> [UInt8] {
    // "/registry/pods/ns/pod-0000001234"-like keys (32 bytes).
    let digits = String(i)
    return Array((prefix + String(repeating: "0", count: max(0, 10 - digits.count)) + digits).utf8)
}

struct KV {
    var key: [UInt8]
    var createRevision: Int64
    var modRevision: Int64
    var version: Int64
    var value: [UInt8]
    var lease: Int64
}

struct Header {
    var clusterId: UInt64 = 0xCDF8_18E3_6A4B_2D10
    var memberId: UInt64 = 0x8E9E_05C5_2164_694D
    var revision: Int64
    var raftTerm: UInt64 = 7
}

// PutRequest: 16-byte key, 256-byte value, a lease.
let putKey = rng.bytes(16)
let putValue = rng.bytes(256)
let putLease: Int64 = 0x694D_7F3A_12C4

// RangeResponse: 1,000 KeyValues (32-byte keys, 256-byte values), like a prefix read.
let rangeHeader = Header(revision: 1_234_567)
let rangeKVs: [KV] = (0..<1_000).map { i in
    KV(key: keyBytes("/registry/pods/ns/pod-", i),
       createRevision: 1_000_000 + Int64(i) * 3,
       modRevision: 1_200_000 + Int64(i) * 7,
       version: Int64(1 + i % 17),
       value: rng.bytes(256),
       lease: i % 4 == 0 ? 0x694D_7F3A_0000 + Int64(i) : 0)
}

// WatchResponse: 100 events; every 5th a DELETE (tombstone kv, no value), the others PUTs
// with the new kv, half of them with prev_kv as well (watch with prev_kv).
let watchHeader = Header(revision: 2_000_100)
struct Ev { var isDelete: Bool; var kv: KV; var prev: KV? }
let watchEvents: [Ev] = (0..<100).map { i in
    let key = keyBytes("/registry/leases/ns/l-", i)
    let rev = 2_000_000 + Int64(i)
    if i % 5 == 4 {
        return Ev(isDelete: true,
                  kv: KV(key: key, createRevision: 0, modRevision: rev, version: 0, value: [], lease: 0),
                  prev: nil)
    }
    let kv = KV(key: key, createRevision: 1_500_000 + Int64(i), modRevision: rev,
                version: Int64(2 + i % 9), value: rng.bytes(256), lease: 0)
    let prev = i % 2 == 0
        ? KV(key: key, createRevision: kv.createRevision, modRevision: rev - 100,
             version: kv.version - 1, value: rng.bytes(256), lease: 0)
        : nil
    return Ev(isDelete: false, kv: kv, prev: prev)
}

// MARK: - Keel messages

func keelKV(_ k: KV) -> Mvccpb.KeyValue {
    var m = Mvccpb.KeyValue()
    m.key = k.key
    m.createRevision = k.createRevision
    m.modRevision = k.modRevision
    m.version = k.version
    m.value = k.value
    m.lease = k.lease
    return m
}

func keelHeader(_ h: Header) -> Etcdserverpb.ResponseHeader {
    var m = Etcdserverpb.ResponseHeader()
    m.clusterId = h.clusterId
    m.memberId = h.memberId
    m.revision = h.revision
    m.raftTerm = h.raftTerm
    return m
}

let keelPut: Etcdserverpb.PutRequest = {
    var m = Etcdserverpb.PutRequest()
    m.key = putKey
    m.value = putValue
    m.lease = putLease
    return m
}()

let keelRange: Etcdserverpb.RangeResponse = {
    var m = Etcdserverpb.RangeResponse()
    m.header = keelHeader(rangeHeader)
    m.kvs = rangeKVs.map(keelKV)
    m.more = false
    m.count = Int64(rangeKVs.count)
    return m
}()

let keelWatch: Etcdserverpb.WatchResponse = {
    var m = Etcdserverpb.WatchResponse()
    m.header = keelHeader(watchHeader)
    m.watchId = 1
    m.events = watchEvents.map { e in
        var ev = Mvccpb.Event()
        ev.type = e.isDelete ? .delete : .put
        ev.kv = keelKV(e.kv)
        ev.prevKv = e.prev.map(keelKV)
        return ev
    }
    return m
}()

// MARK: - swift-protobuf messages

func spbKV(_ k: KV) -> Mvccpb_KeyValue {
    var m = Mvccpb_KeyValue()
    m.key = Data(k.key)
    m.createRevision = k.createRevision
    m.modRevision = k.modRevision
    m.version = k.version
    m.value = Data(k.value)
    m.lease = k.lease
    return m
}

func spbHeader(_ h: Header) -> Etcdserverpb_ResponseHeader {
    var m = Etcdserverpb_ResponseHeader()
    m.clusterID = h.clusterId
    m.memberID = h.memberId
    m.revision = h.revision
    m.raftTerm = h.raftTerm
    return m
}

let spbPut: Etcdserverpb_PutRequest = {
    var m = Etcdserverpb_PutRequest()
    m.key = Data(putKey)
    m.value = Data(putValue)
    m.lease = putLease
    return m
}()

let spbRange: Etcdserverpb_RangeResponse = {
    var m = Etcdserverpb_RangeResponse()
    m.header = spbHeader(rangeHeader)
    m.kvs = rangeKVs.map(spbKV)
    m.more = false
    m.count = Int64(rangeKVs.count)
    return m
}()

let spbWatch: Etcdserverpb_WatchResponse = {
    var m = Etcdserverpb_WatchResponse()
    m.header = spbHeader(watchHeader)
    m.watchID = 1
    m.events = watchEvents.map { e in
        var ev = Mvccpb_Event()
        ev.type = e.isDelete ? .delete : .put
        ev.kv = spbKV(e.kv)
        if let p = e.prev { ev.prevKv = spbKV(p) }
        return ev
    }
    return m
}()

// MARK: - Timing

@inline(__always)
func nowNs() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// One timed run: `iterations` calls of `body`; returns ns per call. The body's results are
/// folded into `sink`.
@inline(never)
func timeRun(_ iterations: Int, _ sink: inout UInt64, _ body: () throws -> UInt64) rethrows -> Double {
    let start = nowNs()
    var acc: UInt64 = 0
    for _ in 0..<iterations {
        acc &+= try body()
    }
    let elapsed = nowNs() - start
    sink &+= acc
    return Double(elapsed) / Double(iterations)
}

/// Iterations so that one run takes about `runTargetNs`.
func calibrate(_ sink: inout UInt64, _ body: () throws -> UInt64) rethrows -> Int {
    var n = 1
    while true {
        let start = nowNs()
        for _ in 0..<n { sink &+= try body() }
        let elapsed = nowNs() - start
        if elapsed >= runTargetNs / 10 || n >= 1 << 30 {
            let perCall = max(1.0, Double(elapsed) / Double(n))
            return max(1, Int(Double(runTargetNs) / perCall))
        }
        n *= 2
    }
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Times Keel and swift-protobuf alternately (which goes first alternates per round);
/// returns (keel median ns/op, swift-protobuf median ns/op).
func compare(_ sink: inout UInt64, keel: () throws -> UInt64, spb: () throws -> UInt64) throws -> (Double, Double) {
    let nKeel = try calibrate(&sink, keel)
    let nSpb = try calibrate(&sink, spb)
    var k: [Double] = []
    var s: [Double] = []
    for round in 0..<runs {
        if round % 2 == 0 {
            k.append(try timeRun(nKeel, &sink, keel))
            s.append(try timeRun(nSpb, &sink, spb))
        } else {
            s.append(try timeRun(nSpb, &sink, spb))
            k.append(try timeRun(nKeel, &sink, keel))
        }
    }
    return (median(k), median(s))
}

// MARK: - Benchmark

struct BenchError: Error, CustomStringConvertible { var description: String }

struct Row {
    var name: String
    var op: String
    var bytes: Int
    var keelNs: Double
    var spbNs: Double
}

@inline(__always)
func digest(_ bytes: [UInt8]) -> UInt64 {
    UInt64(bytes.count) &+ UInt64(bytes[bytes.count / 2])
}

func bench<K: ProtoMessage, S: SwiftProtobuf.Message & Equatable>(
    _ name: String, keel keelMsg: K, spb spbMsg: S, _ sink: inout UInt64,
    keelDigest: @escaping (K) -> UInt64, spbDigest: @escaping (S) -> UInt64
) throws -> [Row] {
    // Correctness first: identical bytes, and each decodes the other's bytes to its original.
    let keelBytes = keelMsg.serializedBytes()
    let spbBytes: [UInt8] = try spbMsg.serializedBytes()
    guard keelMsg.serializedSize == keelBytes.count else {
        throw BenchError(description: "\(name): Keel serializedSize \(keelMsg.serializedSize) != \(keelBytes.count)")
    }
    guard keelBytes == spbBytes else {
        let at = zip(keelBytes, spbBytes).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            ?? min(keelBytes.count, spbBytes.count)
        throw BenchError(description: "\(name): encodings differ (Keel \(keelBytes.count) B, swift-protobuf \(spbBytes.count) B, first difference at byte \(at))")
    }
    guard try K(serializedBytes: spbBytes) == keelMsg else {
        throw BenchError(description: "\(name): Keel decode of swift-protobuf bytes != original")
    }
    guard try S(serializedBytes: keelBytes) == spbMsg else {
        throw BenchError(description: "\(name): swift-protobuf decode of Keel bytes != original")
    }
    print("\(name): \(keelBytes.count) bytes, encodings byte-identical, cross-decodes equal")

    let (keelEnc, spbEnc) = try compare(&sink,
        keel: { digest(keelMsg.serializedBytes()) },
        spb: { digest(try spbMsg.serializedBytes() as [UInt8]) })
    let (keelDec, spbDec) = try compare(&sink,
        keel: { keelDigest(try K(serializedBytes: keelBytes)) },
        spb: { spbDigest(try S(serializedBytes: spbBytes)) })
    return [
        Row(name: name, op: "encode", bytes: keelBytes.count, keelNs: keelEnc, spbNs: spbEnc),
        Row(name: name, op: "decode", bytes: keelBytes.count, keelNs: keelDec, spbNs: spbDec),
    ]
}

func fmt(_ x: Double, _ decimals: Int) -> String {
    String(format: "%.\(decimals)f", x)
}

func grouped(_ x: Double) -> String {
    // ns/op with thousands separators and no decimals (decimals below 100 ns).
    if x < 100 { return fmt(x, 1) }
    let digits = String(Int(x.rounded()))
    var out = ""
    for (i, c) in digits.enumerated() {
        if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    return out
}

var sink: UInt64 = 0
var rows: [Row] = []
do {
    rows += try bench("PutRequest (16 B key, 256 B value)", keel: keelPut, spb: spbPut, &sink,
                      keelDigest: { UInt64($0.value.count) &+ UInt64($0.key[0]) },
                      spbDigest: { UInt64($0.value.count) &+ UInt64($0.key[0]) })
    rows += try bench("RangeResponse (1,000 KeyValues)", keel: keelRange, spb: spbRange, &sink,
                      keelDigest: { UInt64($0.kvs.count) &+ UInt64($0.kvs[999].value.count) },
                      spbDigest: { UInt64($0.kvs.count) &+ UInt64($0.kvs[999].value.count) })
    rows += try bench("WatchResponse (100 events)", keel: keelWatch, spb: spbWatch, &sink,
                      keelDigest: { UInt64($0.events.count) &+ UInt64($0.events[99].kv?.key.count ?? 0) },
                      spbDigest: { UInt64($0.events.count) &+ UInt64($0.events[99].kv.key.count) })
} catch {
    print("FAILED: \(error)")
    exit(1)
}

print("")
print("median of \(runs) runs of ~\(runTargetNs / 1_000_000) ms each; MB/s = encoded bytes / time, 1 MB = 10^6 B; speedup = swift-protobuf ns / Keel ns")
print("")
print("| message | bytes | op | Keel ns/op | Keel MB/s | swift-protobuf ns/op | swift-protobuf MB/s | speedup |")
print("|---|---:|---|---:|---:|---:|---:|---:|")
for r in rows {
    let keelMBs = Double(r.bytes) / r.keelNs * 1_000
    let spbMBs = Double(r.bytes) / r.spbNs * 1_000
    print("| \(r.name) | \(r.bytes) | \(r.op) | \(grouped(r.keelNs)) | \(fmt(keelMBs, 0)) | \(grouped(r.spbNs)) | \(fmt(spbMBs, 0)) | \(fmt(r.spbNs / r.keelNs, 2))x |")
}
print("")
print("checksum \(sink)")
