// The client side of the fault tests: concurrent clients issue puts, linearizable gets,
// compare-and-set txns and deletes on a few keys through Keel's own GRPC client (KeelAPI request
// types, one GRPCClient per member), and record every invocation and return for the
// linearizability checker, plus every acknowledged write with its revision for the convergence
// checks after healing.
import Foundation
import GRPC
import KeelAPI
import KeelTestSupport
import Synchronization

/// An acknowledged write: `value` nil is a delete that removed the key. `revision` is the response
/// header's (the revision the write created).
struct AckedWrite: Sendable, Hashable {
    var key: Int
    var value: UInt64?
    var revision: Int64
    var client: Int
}

/// What one client did.
struct ClientRecord: Sendable {
    var ops: [Linearizability.Op] = []
    var acked: [AckedWrite] = []
    /// Counts by outcome ("ok put", "unknown txn: DEADLINE_EXCEEDED", "failed get: UNAVAILABLE", ...).
    var outcomes: [String: Int] = [:]
}

/// Shared between the nemesis and the clients: when the last fault healed, and when to stop.
final class StopFlag: Sendable {
    private let stop = Atomic<Bool>(false)
    private let healed = Atomic<Int>(-1)
    private let afterHeal = Atomic<Int>(0)
    var isSet: Bool { stop.load(ordering: .relaxed) }
    func set() { stop.store(true, ordering: .relaxed) }
    /// Time (History.now) at which every fault had healed; -1 while faults go on.
    var healedAt: Int { healed.load(ordering: .relaxed) }
    func markHealed(at t: Int) { healed.store(t, ordering: .relaxed) }
    /// Writes invoked after `healedAt` and acknowledged.
    var ackedAfterHeal: Int { afterHeal.load(ordering: .relaxed) }
    func noteAck(invokedAt t: Int) {
        let h = healedAt
        if h >= 0 && t >= h { afterHeal.add(1, ordering: .relaxed) }
    }
}

/// Monotonic nanoseconds since the start of a run (the times in the history).
struct HistoryClock: Sendable {
    let start = ContinuousClock.now
    var now: Int {
        let d = ContinuousClock.now - start
        return Int(d.components.seconds) * 1_000_000_000 + Int(d.components.attoseconds / 1_000_000_000)
    }
}

struct KVWorkload: Sendable {
    var keys = 4
    var prefix = "fault/"
    /// gRPC deadline per operation (the call ends locally with DEADLINE_EXCEEDED after it).
    var opTimeout: Duration = .seconds(3)

    func key(_ k: Int) -> [UInt8] { Array("\(prefix)k\(k)".utf8) }
    static func encode(_ v: UInt64) -> [UInt8] { Array(String(v).utf8) }
    static func decode(_ b: [UInt8]) -> UInt64? { UInt64(String(decoding: b, as: UTF8.self)) }

    enum Outcome<T> {
        case ok(T)
        /// The request may have been applied (sent, then timeout / reset / error).
        case unknown(String)
        /// Definitely not applied (no connection could be made).
        case failed(String)
    }

    /// One call with the gRPC deadline, plus a guard in case the call itself hangs.
    func call<Req: ProtoMessage, Resp: ProtoMessage>(_ client: GRPCClient, _ method: MethodDescriptor<Req, Resp>,
                                                     _ request: Req) async -> Outcome<Resp> {
        let options = CallOptions(timeout: opTimeout)
        let result = await withGuard(opTimeout + .seconds(10)) {
            try await client.unary(method, request, options: options)
        }
        switch result {
        case .success(let r)?: return .ok(r)
        case nil: return .unknown("guard timeout")
        case .failure(let e):
            if let s = e as? GRPCStatus {
                // The client could not connect: nothing was sent.
                if s.code == .unavailable && s.message.hasPrefix("connect to ") { return .failed("UNAVAILABLE connect") }
                return .unknown("\(s.code) \(s.message.prefix(48))")
            }
            return .unknown("\(type(of: e))")
        }
    }

    /// Runs client `id` against `client` until `stop` is set.
    func runClient(id: Int, client: GRPCClient, seed: UInt64, clock: HistoryClock, stop: StopFlag) async -> ClientRecord {
        var rng = SplitMix64(seed: seed)
        var rec = ClientRecord()
        var lastSeen: [Int: UInt64?] = [:]
        var counter: UInt64 = 0
        while !stop.isSet {
            let k = rng.below(keys)
            let roll = rng.below(100)
            counter += 1
            let value = UInt64(id + 1) << 40 | counter   // unique per write
            let t0 = clock.now
            var failedOrUnknown = false
            func note(_ s: String) { rec.outcomes[s, default: 0] += 1 }
            func ack(_ v: UInt64?, _ header: Etcdserverpb.ResponseHeader?) {
                rec.acked.append(AckedWrite(key: k, value: v, revision: header?.revision ?? 0, client: id))
                stop.noteAck(invokedAt: t0)
            }
            if roll < 35 {
                var r = Etcdserverpb.RangeRequest()
                r.key = key(k)
                switch await call(client, Etcdserverpb.KV.range, r) {
                case .ok(let resp):
                    let v = resp.kvs.first.flatMap { Self.decode($0.value) }
                    rec.ops.append(.init(key: k, kind: .get(v), call: t0, ret: clock.now, client: id))
                    lastSeen[k] = v
                    note("ok get")
                case .unknown(let why): note("no answer get: \(why)"); failedOrUnknown = true
                case .failed(let why): note("failed get: \(why)"); failedOrUnknown = true
                }
            } else if roll < 65 {
                var r = Etcdserverpb.PutRequest()
                r.key = key(k)
                r.value = Self.encode(value)
                switch await call(client, Etcdserverpb.KV.put, r) {
                case .ok(let resp):
                    rec.ops.append(.init(key: k, kind: .put(value), call: t0, ret: clock.now, client: id))
                    ack(value, resp.header)
                    note("ok put")
                case .unknown(let why):
                    rec.ops.append(.init(key: k, kind: .put(value), call: t0, ret: nil, client: id))
                    note("unknown put: \(why)"); failedOrUnknown = true
                case .failed(let why): note("failed put: \(why)"); failedOrUnknown = true
                }
            } else if roll < 85 {
                let expect = lastSeen[k] ?? nil
                var cmp = Etcdserverpb.Compare()
                cmp.key = key(k)
                cmp.result = .equal
                if let expect {
                    cmp.target = .value
                    cmp.value = Self.encode(expect)
                } else {
                    cmp.target = .version
                    cmp.version = 0
                }
                var put = Etcdserverpb.PutRequest()
                put.key = key(k)
                put.value = Self.encode(value)
                var op = Etcdserverpb.RequestOp()
                op.requestPut = put
                var r = Etcdserverpb.TxnRequest()
                r.compare = [cmp]
                r.success = [op]
                switch await call(client, Etcdserverpb.KV.txn, r) {
                case .ok(let resp):
                    rec.ops.append(.init(key: k, kind: .cas(expect: expect, new: value, succeeded: resp.succeeded),
                                         call: t0, ret: clock.now, client: id))
                    if resp.succeeded {
                        ack(value, resp.header)
                        lastSeen[k] = value
                    }
                    note("ok txn \(resp.succeeded ? "succeeded" : "failed")")
                case .unknown(let why):
                    rec.ops.append(.init(key: k, kind: .cas(expect: expect, new: value, succeeded: false),
                                         call: t0, ret: nil, client: id))
                    note("unknown txn: \(why)"); failedOrUnknown = true
                case .failed(let why): note("failed txn: \(why)"); failedOrUnknown = true
                }
            } else {
                var r = Etcdserverpb.DeleteRangeRequest()
                r.key = key(k)
                switch await call(client, Etcdserverpb.KV.deleteRange, r) {
                case .ok(let resp):
                    rec.ops.append(.init(key: k, kind: .delete(existed: resp.deleted > 0), call: t0, ret: clock.now,
                                         client: id))
                    if resp.deleted > 0 { ack(nil, resp.header) }
                    lastSeen[k] = .some(nil)
                    note("ok delete")
                case .unknown(let why):
                    rec.ops.append(.init(key: k, kind: .delete(existed: false), call: t0, ret: nil, client: id))
                    note("unknown delete: \(why)"); failedOrUnknown = true
                case .failed(let why): note("failed delete: \(why)"); failedOrUnknown = true
                }
            }
            // Don't spin against a member that is down or cut off.
            if failedOrUnknown { try? await Task.sleep(for: .milliseconds(100 + rng.below(100))) }
        }
        return rec
    }
}

/// Runs `body` in a task and returns its result, or nil if `limit` passes first (the task is then
/// cancelled and left to finish on its own: the caller moves on).
func withGuard<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async
    -> Result<T, any Error>? {
    await withCheckedContinuation { (cont: CheckedContinuation<Result<T, any Error>?, Never>) in
        let once = Once(cont)
        let work = Task {
            do { once.resume(.success(try await body())) } catch { once.resume(.failure(error)) }
        }
        Task {
            try? await Task.sleep(for: limit)
            if once.resume(nil) { work.cancel() }
        }
    }
}

/// A continuation resumed by whoever comes first.
private final class Once<T: Sendable>: Sendable {
    private let cont: Mutex<CheckedContinuation<T, Never>?>
    init(_ c: CheckedContinuation<T, Never>) { cont = Mutex(c) }
    /// True if this call resumed the continuation.
    @discardableResult
    func resume(_ v: T) -> Bool {
        guard let c = cont.withLock({ $0.take() }) else { return false }
        c.resume(returning: v)
        return true
    }
}
