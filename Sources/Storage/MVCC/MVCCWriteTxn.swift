import CLMDB
import KeelAPI

/// State of one write{} (one LMDB write transaction).
final class WriteContext {
    let env: LMDBEnv
    let txn: OpaquePointer
    var rev: Int64
    var compactRev: Int64
    var applied: UInt64
    let sizeAtBegin: Int64
    let quota: Int64
    var cost: Int64 = 0
    /// An LMDB failure in the middle of an operation: the batch cannot commit.
    var broken: MVCCError?
    var finished = false
    var events: [Mvccpb.Event] = []
    // the operation in progress: it writes at main revision beginRev + 1
    var beginRev: Int64 = 0
    var changes = 0

    init(env: LMDBEnv, txn: OpaquePointer, rev: Int64, compactRev: Int64, applied: UInt64,
         sizeAtBegin: Int64, quota: Int64) {
        self.env = env; self.txn = txn; self.rev = rev; self.compactRev = compactRev
        self.applied = applied; self.sizeAtBegin = sizeAtBegin; self.quota = quota
    }

    var t: LMDBTxn { LMDBTxn(env: env, txn: txn) }

    func usable() throws(MVCCError) {
        if finished { throw .storage("mvcc: write transaction has ended") }
        if let broken { throw broken }
    }

    /// Runs the writing part of an operation; an error there breaks the whole batch.
    func mutate<T>(_ body: () throws(MVCCError) -> T) throws(MVCCError) -> T {
        do throws(MVCCError) { return try body() } catch {
            broken = error
            throw error
        }
    }

    func beginOp() { beginRev = rev; changes = 0 }
    func endOp() { if changes > 0 { rev = beginRev + 1 } }

    /// The revision reads inside the operation see (etcd: beginRev, +1 once it has written).
    var opReadRev: Int64 { changes > 0 ? beginRev + 1 : beginRev }

    /// etcd's quota rule: the op is applied, but it reports NOSPACE when the DB would exceed the quota.
    func quotaAllows(_ c: Int64) -> Bool {
        cost += c
        return quota <= 0 || sizeAtBegin + cost <= quota
    }

    func persistCounters() throws(MVCCError) {
        var b: [UInt8] = []
        Rec.appendLE(rev, to: &b)
        try t.put(env.sys, Array("rev".utf8), b)
        b = []; Rec.appendLE(compactRev, to: &b)
        try t.put(env.sys, Array("compact".utf8), b)
        b = []; Rec.appendLE(Int64(bitPattern: applied), to: &b)
        try t.put(env.sys, Array("applied".utf8), b)
    }

    // MARK: the two mutations everything is made of

    func applyPut(key: [UInt8], value: [UInt8], lease: Int64, prev: Mvccpb.KeyValue?) throws(MVCCError) {
        let main = beginRev + 1, sub = Int64(changes)
        var kv = Mvccpb.KeyValue()
        kv.key = key
        kv.value = value
        kv.createRevision = prev?.createRevision ?? main
        kv.modRevision = main
        kv.version = (prev?.version ?? 0) + 1
        kv.lease = lease
        try t.put(env.keys, Rec.keyTableKey(key, main, sub),
                  Rec.putValue(create: kv.createRevision, version: kv.version, lease: lease, value: value))
        try t.put(env.revs, Rec.revKey(main, sub), [Rec.put] + key)
        if let old = prev?.lease, old != 0 { try t.del(env.leaseKeys, Rec.leaseKey(old) + key) }
        if lease != 0 { try t.put(env.leaseKeys, Rec.leaseKey(lease) + key, []) }
        changes += 1
        var ev = Mvccpb.Event()
        ev.type = .put
        ev.kv = kv
        ev.prevKv = prev
        events.append(ev)
    }

    func applyDelete(_ prev: Mvccpb.KeyValue) throws(MVCCError) {
        let main = beginRev + 1, sub = Int64(changes)
        try t.put(env.keys, Rec.keyTableKey(prev.key, main, sub), [Rec.tombstone])
        try t.put(env.revs, Rec.revKey(main, sub), [Rec.tombstone] + prev.key)
        if prev.lease != 0 { try t.del(env.leaseKeys, Rec.leaseKey(prev.lease) + prev.key) }
        changes += 1
        var ev = Mvccpb.Event()
        ev.type = .delete
        var kv = Mvccpb.KeyValue()
        kv.key = prev.key
        kv.modRevision = main
        ev.kv = kv
        ev.prevKv = prev
        events.append(ev)
    }

    /// The key's live version as the operation in progress sees it (all earlier writes included).
    func current(_ key: [UInt8]) throws(MVCCError) -> Mvccpb.KeyValue? {
        try t.latestKV(key, atRev: .max)
    }

    func liveKVs(_ key: [UInt8], _ rangeEnd: [UInt8]) throws(MVCCError) -> [Mvccpb.KeyValue] {
        var out: [Mvccpb.KeyValue] = []
        try t.walkLive(key, RangeEnd(rangeEnd), atRev: .max) { (k, mod, v) throws(MVCCError) in
            out.append(try Rec.decode(key: k, mod: mod, value: v))
            return true
        }
        return out
    }

    // MARK: request bodies (inside an operation; headers as etcd fills them)

    func checkKeySize(_ key: [UInt8]) throws(MVCCError) {
        if key.count > Rec.maxUserKey {
            throw .storage("mvcc: key of \(key.count) bytes is longer than this store supports (\(Rec.maxUserKey) bytes)")
        }
    }

    func leaseExists(_ id: Int64) throws(MVCCError) -> Bool { try t.lease(id) != nil }

    /// Checks of a put (etcd's order): key size, ignore_value/ignore_lease need the key, lease exists.
    func checkPut(_ p: Etcdserverpb.PutRequest) throws(MVCCError) {
        try checkKeySize(p.key)
        if p.ignoreValue || p.ignoreLease, try current(p.key) == nil { throw .keyNotFound }
        if p.lease != 0, try !leaseExists(p.lease) { throw .leaseNotFound }
    }

    func doPut(_ p: Etcdserverpb.PutRequest) throws(MVCCError) -> Etcdserverpb.PutResponse {
        let prev = try current(p.key)
        var value = p.value, lease = p.lease
        if let prev {
            if p.ignoreValue { value = prev.value }
            if p.ignoreLease { lease = prev.lease }
        }
        try mutate { () throws(MVCCError) in try applyPut(key: p.key, value: value, lease: lease, prev: prev) }
        var resp = Etcdserverpb.PutResponse()
        var h = Etcdserverpb.ResponseHeader()
        h.revision = beginRev + 1
        resp.header = h
        if p.prevKv { resp.prevKv = prev }
        return resp
    }

    func doDelete(_ d: Etcdserverpb.DeleteRangeRequest) throws(MVCCError) -> Etcdserverpb.DeleteRangeResponse {
        let kvs = try liveKVs(d.key, d.rangeEnd)
        try mutate { () throws(MVCCError) in for kv in kvs { try applyDelete(kv) } }
        var resp = Etcdserverpb.DeleteRangeResponse()
        resp.deleted = Int64(kvs.count)
        if d.prevKv { resp.prevKvs = kvs }
        var h = Etcdserverpb.ResponseHeader()
        h.revision = opReadRev
        resp.header = h
        return resp
    }

    func doRange(_ r: Etcdserverpb.RangeRequest) throws(MVCCError) -> Etcdserverpb.RangeResponse {
        try t.range(r, curRev: opReadRev, compactRev: compactRev)
    }
}

/// The batch's view of the store inside `MVCCStore.write`. Every operation is all-or-nothing: one
/// that throws a request error (keyNotFound, leaseNotFound, duplicateKey, compacted, futureRevision,
/// leaseExists) checked everything before writing and leaves no trace; the batch goes on.
/// Two exceptions: `.noSpace` from the quota is thrown AFTER the operation was applied (etcd applies
/// it on every member and reports NOSPACE), and an LMDB failure (`.storage`, or `.noSpace` when the
/// LMDB map / the disk is full) breaks the batch: later calls rethrow it and write{} commits nothing.
public struct MVCCWriteTxn {
    let ctx: WriteContext
    init(_ ctx: WriteContext) { self.ctx = ctx }

    /// Every event this batch made, in order, prevKv filled: the watch feed.
    public var events: [Mvccpb.Event] { ctx.events }
    /// The store revision as of now inside the batch.
    public var revision: Int64 { ctx.rev }
    public var compactedRevision: Int64 { ctx.compactRev }
    public var appliedIndex: UInt64 { ctx.applied }

    static let kvOverhead: Int64 = 256

    public mutating func put(_ p: Etcdserverpb.PutRequest) throws(MVCCError) -> Etcdserverpb.PutResponse {
        try ctx.usable()
        // etcd (applierV3backend.Put outside a txn): lease first, then the previous key.
        try ctx.checkKeySize(p.key)
        if p.lease != 0, try !ctx.leaseExists(p.lease) { throw .leaseNotFound }
        if p.ignoreValue || p.ignoreLease, try ctx.current(p.key) == nil { throw .keyNotFound }
        let ok = ctx.quotaAllows(Self.kvOverhead + Int64(p.key.count + p.value.count))
        ctx.beginOp()
        let resp = try ctx.doPut(p)
        ctx.endOp()
        if !ok { throw .noSpace }
        return resp
    }

    public mutating func deleteRange(_ d: Etcdserverpb.DeleteRangeRequest) throws(MVCCError)
        -> Etcdserverpb.DeleteRangeResponse {
        try ctx.usable()
        ctx.beginOp()
        let resp = try ctx.doDelete(d)
        ctx.endOp()
        return resp
    }

    /// A range that sees this batch's writes.
    public mutating func range(_ r: Etcdserverpb.RangeRequest) throws(MVCCError) -> Etcdserverpb.RangeResponse {
        try ctx.usable()
        ctx.beginOp()
        return try ctx.doRange(r)
    }

    /// Writes (nil: deletes) a caller's meta record in this batch. (Does not throw: an LMDB failure
    /// here breaks the batch and write{} throws it.)
    public mutating func setMeta(_ key: String, _ value: [UInt8]?) {
        guard (try? ctx.usable()) != nil else { return }
        _ = try? ctx.mutate { () throws(MVCCError) in
            if let value { try ctx.t.put(ctx.env.meta, Array(key.utf8), value) }
            else { try ctx.t.del(ctx.env.meta, Array(key.utf8)) }
        }
    }

    public mutating func setAppliedIndex(_ index: UInt64) {
        ctx.applied = index
    }
}
