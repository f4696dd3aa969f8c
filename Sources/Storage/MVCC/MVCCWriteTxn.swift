import CLMDB
import KeelAPI

/// State of one write{} (one LMDB write transaction).
final class WriteContext {
    let env: LMDBEnv
    let txn: OpaquePointer
    var rev: Int64
    var compactRev: Int64
    /// Where the physical removal of the current compaction resumes (a revs-table key); nil: done.
    var compactNext: [UInt8]?
    var compactBatch = 10_000
    var inlineValueLimit = Rec.inlineValueLimit
    var compactStepDone = false
    var applied: UInt64
    let sizeAtBegin: Int64
    let quota: Int64
    var cost: Int64 = 0
    /// An LMDB failure in the middle of an operation: the batch cannot commit.
    var broken: MVCCError?
    var finished = false
    var events: [Mvccpb.Event] = []
    /// Whether a put's event carries its previous version's value (see `MVCCWriteTxn.eventPrevValues`).
    var eventPrevValues = true
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
        return quota < 0 || sizeAtBegin + cost <= quota
    }

    func persistCounters() throws(MVCCError) {
        var b: [UInt8] = []
        Rec.appendLE(rev, to: &b)
        try t.put(env.sys, Array("rev".utf8), b)
        b = []; Rec.appendLE(compactRev, to: &b)
        try t.put(env.sys, Array("compact".utf8), b)
        b = []; Rec.appendLE(Int64(bitPattern: applied), to: &b)
        try t.put(env.sys, Array("applied".utf8), b)
        if let next = compactNext { try t.put(env.sys, Array("compactNext".utf8), next) }
        else { try t.del(env.sys, Array("compactNext".utf8)) }
    }

    /// One step (at most `compactBatch` revision entries) of removing versions below `compactRev`.
    func compactStep() throws(MVCCError) {
        guard let start = compactNext, !compactStepDone else { return }
        compactStepDone = true
        let target = compactRev
        try mutate { () throws(MVCCError) in
            let rc = try t.cursor(env.revs)
            let kc = try t.cursor(env.keys)
            let lc = try t.cursor(env.longRevs)
            var e = try rc.seek(start)
            var examined = 0
            while let cur = e {
                let main = Int64(bitPattern: Rec.be(cur.key, 0)), sub = Int64(bitPattern: Rec.be(cur.key, 8))
                if main > target { e = nil; break }
                if examined >= compactBatch { break }
                examined += 1
                let key = Array(try Rec.revEntryKey(cur.value))
                if Rec.isFull(cur.value) {
                    // latest-only store: this version (<= target) supersedes the one it points at; a
                    // tombstone below the target goes too, with its key-table entry if it is the latest
                    let f = try Rec.parseFull(cur.value)
                    let here = Array(cur.key)
                    if f.prevMain != 0 { _ = try t.del(env.revs, Rec.revKey(f.prevMain, f.prevSub)) }
                    if f.tombstone && main < target {
                        _ = try t.del(env.keys, Rec.keyTableKey(key, main, sub))
                        _ = try t.del(env.revs, here)
                        e = try rc.seek(here)
                    } else {
                        _ = try rc.seek(here)
                        e = try rc.next()
                    }
                    continue
                }
                let tomb = cur.value[0] == Rec.tombstone
                let v = try t.version(kc.ref, lc.ref, key: key, main: main, sub: sub, neighbor: .next)
                let superseded = v.neighbor.map { $0.main <= target } ?? false
                if superseded || (tomb && main < target) {
                    if let id = v.longID {
                        _ = try lc.seek(v.exact)
                        try lc.deleteCurrent()
                        // the last version of a long key gone: its index entry goes too
                        if try !t.longHasVersions(id) { try t.del(env.longKeys, LongKey.indexKey(key, id: id)) }
                    } else {
                        _ = try kc.seek(v.exact)
                        try kc.deleteCurrent()
                    }
                    try rc.deleteCurrent()
                    e = try rc.op(MDB_GET_CURRENT)
                } else {
                    e = try rc.next()
                }
            }
            compactNext = e.map { Array($0.key) }
        }
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
        let record = Rec.putValue(create: kv.createRevision, version: kv.version, lease: lease, sub: sub, value: value,
                                    inlineLimit: inlineValueLimit)
        var revEntry: [UInt8]?
        if LongKey.isLong(key) {
            let id = try longKeyID(key, create: true)!
            try t.put(env.longRevs, LongKey.revKey(id, main, sub), record)
            if let old = prev?.lease, old != 0 { try t.del(env.leaseKeys, LongKey.leaseEntry(old, key, id: id)) }
            if lease != 0 { try t.put(env.leaseKeys, LongKey.leaseEntry(lease, key, id: id), Array(key[LongKey.prefixLength...])) }
        } else {
            let before = env.latestOnly ? try replaceLatest(key) : nil
            try t.put(env.keys, Rec.keyTableKey(key, main, sub), record)
            if let old = prev?.lease, old != 0 { try t.del(env.leaseKeys, Rec.leaseKey(old) + key) }
            if lease != 0 { try t.put(env.leaseKeys, Rec.leaseKey(lease) + key, []) }
            if env.latestOnly {
                revEntry = Rec.fullRevValue(tombstone: false, key: key, prevMain: before?.main ?? 0, prevSub: before?.sub ?? 0,
                                            create: kv.createRevision, version: kv.version, lease: lease, value: value)
            }
        }
        try t.append(env.revs, Rec.revKey(main, sub), revEntry ?? Rec.revValue(flag: record[0], key: key, value: value))
        changes += 1
        var ev = Mvccpb.Event()
        ev.type = .put
        ev.kv = kv
        ev.prevKv = prev
        events.append(ev)
    }

    func applyDelete(_ prev: Mvccpb.KeyValue) throws(MVCCError) {
        let main = beginRev + 1, sub = Int64(changes)
        var revEntry: [UInt8]?
        if LongKey.isLong(prev.key) {
            guard let id = try longKeyID(prev.key, create: false) else {
                throw .storage("mvcc: live long key without an id")
            }
            try t.put(env.longRevs, LongKey.revKey(id, main, sub), [Rec.tombstone])
            if prev.lease != 0 { try t.del(env.leaseKeys, LongKey.leaseEntry(prev.lease, prev.key, id: id)) }
        } else {
            let before = env.latestOnly ? try replaceLatest(prev.key) : nil
            try t.put(env.keys, Rec.keyTableKey(prev.key, main, sub), [Rec.tombstone])
            if prev.lease != 0 { try t.del(env.leaseKeys, Rec.leaseKey(prev.lease) + prev.key) }
            if env.latestOnly {
                revEntry = Rec.fullRevValue(tombstone: true, key: prev.key, prevMain: before?.main ?? 0, prevSub: before?.sub ?? 0)
            }
        }
        try t.append(env.revs, Rec.revKey(main, sub), revEntry ?? Rec.revValue(flag: Rec.tombstone, key: prev.key, value: []))
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

    /// Latest-only store: removes the key-table entry of `key` (short), its newest version, put or
    /// tombstone; returns its revision for the new version's previous-version pointer.
    func replaceLatest(_ key: [UInt8]) throws(MVCCError) -> (main: Int64, sub: Int64)? {
        let c = try t.cursor(env.keys)
        guard let x = try LMDBTxn.firstEntry(c, of: key) else { return nil }
        try c.deleteCurrent()
        return (x.main, x.sub)
    }

    /// The id of a long key; with `create`, a new one (from sys "longNextID", so every member that
    /// applies the same writes assigns the same ids) and its longKeys entry when it has none.
    func longKeyID(_ key: [UInt8], create: Bool) throws(MVCCError) -> UInt64? {
        if let id = try t.longKeyID(key) { return id }
        guard create else { return nil }
        let id = UInt64(bitPattern: try t.sysInt("longNextID") ?? 1)
        var b: [UInt8] = []
        Rec.appendLE(Int64(bitPattern: id &+ 1), to: &b)
        try t.put(env.sys, Array("longNextID".utf8), b)
        try t.put(env.longKeys, LongKey.indexKey(key, id: id), Array(key[LongKey.prefixLength...]))
        return id
    }

    /// The key's live version as the operation in progress sees it (all earlier writes included);
    /// without `value`, its value is left empty (create and mod revision, version, lease only).
    func current(_ key: [UInt8], value: Bool = true) throws(MVCCError) -> Mvccpb.KeyValue? {
        try t.latest(key, atRev: .max) { (k, mod, v) throws(MVCCError) in
            try Rec.decode(key: k, mod: mod, value: v, keysOnly: !value, revs: t)
        }
    }

    func liveKVs(_ key: [UInt8], _ rangeEnd: [UInt8]) throws(MVCCError) -> [Mvccpb.KeyValue] {
        var out: [Mvccpb.KeyValue] = []
        try t.walkLive(key, RangeEnd(rangeEnd), atRev: .max) { (k, mod, v) throws(MVCCError) in
            out.append(try Rec.decode(key: k, mod: mod, value: v, revs: t))
            return true
        }
        return out
    }

    // MARK: request bodies (inside an operation; headers as etcd fills them)

    func leaseExists(_ id: Int64) throws(MVCCError) -> Bool { try t.lease(id) != nil }

    /// Checks of a put (etcd's order): ignore_value/ignore_lease need the key, lease exists.
    func checkPut(_ p: Etcdserverpb.PutRequest) throws(MVCCError) {
        if p.ignoreValue || p.ignoreLease, try current(p.key) == nil { throw .keyNotFound }
        if p.lease != 0, try !leaseExists(p.lease) { throw .leaseNotFound }
    }

    func doPut(_ p: Etcdserverpb.PutRequest) throws(MVCCError) -> Etcdserverpb.PutResponse {
        // The previous value is a second lookup when it is stored by revision: only when someone
        // reads it (the response's prev_kv, ignore_value, or the events' prevKv).
        let prev = try current(p.key, value: p.prevKv || p.ignoreValue || eventPrevValues)
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
    /// true (default): every put's event has its prevKv with the value, as `events` says. false: a
    /// put's prevKv has an empty value unless the request itself needed the value (prev_kv,
    /// ignore_value); the caller knows the batch's events lack them (nobody watches with prev_kv).
    /// Saves a lookup per put of a key whose value is stored by revision. Other fields are the same.
    public var eventPrevValues: Bool {
        get { ctx.eventPrevValues }
        nonmutating set { ctx.eventPrevValues = newValue }
    }
    /// The store revision as of now inside the batch.
    public var revision: Int64 { ctx.rev }
    public var compactedRevision: Int64 { ctx.compactRev }
    public var appliedIndex: UInt64 { ctx.applied }

    static let kvOverhead: Int64 = 256

    public mutating func put(_ p: Etcdserverpb.PutRequest) throws(MVCCError) -> Etcdserverpb.PutResponse {
        try ctx.usable()
        // etcd (applierV3backend.Put outside a txn): lease first, then the previous key.
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

// MARK: - Txn, compaction, leases

extension WriteContext {
    /// The branch each (nested) txn takes, decided before anything is written (etcd's compareToPath).
    struct Path {
        var succeeded: Bool
        var children: [Path]        // one per nested txn op in the chosen branch, in order
    }

    func comparePath(_ r: Etcdserverpb.TxnRequest) throws(MVCCError) -> Path {
        var ok = true
        for c in r.compare where try !compare(c) { ok = false; break }
        var children: [Path] = []
        for op in ok ? r.success : r.failure {
            if case .requestTxn(let inner) = op.request { children.append(try comparePath(inner)) }
        }
        return Path(succeeded: ok, children: children)
    }

    /// etcd's applyCompare: every key in the compare's range must satisfy it; on no key, a VALUE
    /// compare fails and the others compare against a zero KeyValue.
    func compare(_ c: Etcdserverpb.Compare) throws(MVCCError) -> Bool {
        let kvs = try liveKVs(c.key, c.rangeEnd)
        if kvs.isEmpty {
            if c.target == .value { return false }
            return Self.compareKV(c, Mvccpb.KeyValue())
        }
        return kvs.allSatisfy { Self.compareKV(c, $0) }
    }

    static func compareKV(_ c: Etcdserverpb.Compare, _ kv: Mvccpb.KeyValue) -> Bool {
        func cmp<T: Comparable>(_ a: T, _ b: T) -> Int { a < b ? -1 : (a > b ? 1 : 0) }
        var result = 0
        var have: Int64 = 0, want: Int64 = 0
        switch (c.target, c.targetUnion) {
        case (.value, let u):
            var v: [UInt8] = []
            if case .value(let x) = u { v = x }
            result = kv.value == v ? 0 : (kv.value.lexicographicallyPrecedes(v) ? -1 : 1)
        case (.create, let u):
            have = kv.createRevision
            if case .createRevision(let x) = u { want = x }
        case (.mod, let u):
            have = kv.modRevision
            if case .modRevision(let x) = u { want = x }
        case (.version, let u):
            have = kv.version
            if case .version(let x) = u { want = x }
        case (.lease, let u):
            have = kv.lease
            if case .lease(let x) = u { want = x }
        default: break
        }
        if c.target != .value { result = cmp(have, want) }
        switch c.result {
        case .equal: return result == 0
        case .notEqual: return result != 0
        case .greater: return result > 0
        case .less: return result < 0
        default: return true
        }
    }

    static func ops(_ r: Etcdserverpb.TxnRequest, _ p: Path) -> [Etcdserverpb.RequestOp] { p.succeeded ? r.success : r.failure }

    static func isWrite(_ r: Etcdserverpb.TxnRequest) -> Bool {
        for op in r.success + r.failure {
            switch op.request {
            case .requestPut, .requestDeleteRange: return true
            case .requestTxn(let t): if isWrite(t) { return true }
            default: break
            }
        }
        return false
    }

    /// etcd's checkRequests: puts (when the txn writes), then ranges, along the chosen path.
    func checkTxn(_ r: Etcdserverpb.TxnRequest, _ p: Path, puts: Bool) throws(MVCCError) {
        var child = 0
        for op in Self.ops(r, p) {
            switch op.request {
            case .requestTxn(let inner):
                try checkTxn(inner, p.children[child], puts: puts); child += 1
            case .requestPut(let put) where puts:
                try checkPut(put)
            case .requestRange(let rr) where !puts:
                if rr.revision != 0 && rr.revision > beginRev { throw .futureRevision }
                // etcd compares with its first revision, -1 until the first compaction
                let first = compactRev == 0 ? -1 : compactRev
                if rr.revision != 0 && rr.revision < first { throw .compacted(compactRevision: compactRev) }
            default: break
            }
        }
    }

    func applyTxn(_ r: Etcdserverpb.TxnRequest, _ p: Path) throws(MVCCError) -> Etcdserverpb.TxnResponse {
        var resp = Etcdserverpb.TxnResponse()
        resp.succeeded = p.succeeded
        var child = 0
        for op in Self.ops(r, p) {
            var ro = Etcdserverpb.ResponseOp()
            switch op.request {
            case .requestRange(let rr): ro.response = .responseRange(try doRange(rr))
            case .requestPut(let put): ro.response = .responsePut(try doPut(put))
            case .requestDeleteRange(let d): ro.response = .responseDeleteRange(try doDelete(d))
            case .requestTxn(let inner):
                ro.response = .responseTxn(try applyTxn(inner, p.children[child])); child += 1
            case nil: break
            }
            resp.responses.append(ro)
        }
        var h = Etcdserverpb.ResponseHeader()
        h.revision = opReadRev
        resp.header = h
        return resp
    }

    /// Quota cost of a txn: the larger of its two branches' puts (nested included).
    static func putCost(_ ops: [Etcdserverpb.RequestOp]) -> Int64 {
        var c: Int64 = 0
        for op in ops {
            switch op.request {
            case .requestPut(let p): c += MVCCWriteTxn.kvOverhead + Int64(p.key.count + p.value.count)
            case .requestTxn(let t): c += max(putCost(t.success), putCost(t.failure))
            default: break
            }
        }
        return c
    }
}

/// etcd's checkIntervals (v3rpc): within one txn level, a key may be put once and not also fall in
/// a delete range of that level or of nested txns; a nested txn's then/else branches may put the
/// same key (only one runs). Deletes with range_end "\0" are intervals [key, "\0") there, which
/// contain no key: etcd does not flag them, and neither does this.
enum TxnIntervals {
    struct Interval { var begin: [UInt8]; var end: [UInt8]? }   // end nil = single point

    static func contains(_ dels: [Interval], _ k: [UInt8]) -> Bool {
        for d in dels {
            if let e = d.end {
                if !k.lexicographicallyPrecedes(d.begin) && k.lexicographicallyPrecedes(e) { return true }
            } else if d.begin == k { return true }
        }
        return false
    }

    static func check(_ reqs: [Etcdserverpb.RequestOp]) throws(MVCCError) -> (puts: Set<[UInt8]>, dels: [Interval]) {
        var dels: [Interval] = []
        for op in reqs {
            if case .requestDeleteRange(let d) = op.request {
                dels.append(Interval(begin: d.key, end: d.rangeEnd.isEmpty ? nil : d.rangeEnd))
            }
        }
        var puts: Set<[UInt8]> = []
        for op in reqs {
            guard case .requestTxn(let t) = op.request else { continue }
            let (putsThen, delsThen) = try check(t.success)
            let (putsElse, delsElse) = try check(t.failure)
            for k in putsThen {
                if puts.contains(k) || contains(dels, k) { throw .duplicateKey }
                puts.insert(k)
            }
            for k in putsElse {
                if puts.contains(k) && !putsThen.contains(k) { throw .duplicateKey }
                if contains(dels, k) { throw .duplicateKey }
                puts.insert(k)
            }
            dels += delsThen + delsElse
        }
        for op in reqs {
            guard case .requestPut(let p) = op.request else { continue }
            if puts.contains(p.key) || contains(dels, p.key) { throw .duplicateKey }
            puts.insert(p.key)
        }
        return (puts, dels)
    }
}

extension MVCCWriteTxn {
    /// etcd's Txn: duplicate-key check, compares (on the state before the txn), checks of the chosen
    /// path (puts: ignore_value/ignore_lease need the key, lease must exist; ranges: revision), then
    /// every op of the chosen path (nested txns included) in ONE revision, sub-revisions in order.
    /// header.revision: the new revision if anything changed, else the current one.
    public mutating func txn(_ r: Etcdserverpb.TxnRequest) throws(MVCCError) -> Etcdserverpb.TxnResponse {
        try ctx.usable()
        _ = try TxnIntervals.check(r.success)
        _ = try TxnIntervals.check(r.failure)
        ctx.beginOp()
        let path = try ctx.comparePath(r)
        if WriteContext.isWrite(r) { try ctx.checkTxn(r, path, puts: true) }
        try ctx.checkTxn(r, path, puts: false)
        let cost = max(WriteContext.putCost(r.success), WriteContext.putCost(r.failure))
        let ok = cost == 0 || ctx.quotaAllows(cost)
        let resp = try ctx.applyTxn(r, path)
        ctx.endOp()
        if !ok { throw .noSpace }
        return resp
    }

    /// Compacts history to `revision` (etcd's rules): for each key, every version older than its
    /// newest version at `revision` is removed; that newest version stays if it is a put, or a
    /// tombstone exactly at `revision`; a key deleted before `revision` disappears entirely.
    /// `.compacted` when revision <= the compacted revision, `.futureRevision` beyond the current one.
    /// The compacted revision takes effect at once (reads and history below it fail); the old
    /// versions are removed in steps of `MVCCOptions.compactionBatch` revision entries, one step here
    /// and one in each later write{} until done (etcd also deletes in batches), so a large
    /// compaction never stalls the apply loop. Nothing observable depends on that progress except
    /// dbSize and hash() (Keel's whole-store hash); HashKV follows etcd's `keep` rule and is the same.
    public mutating func compact(_ revision: Int64) throws(MVCCError) {
        try ctx.usable()
        // etcd's compactMainRev is -1 until the first compaction, so compact(0) on a fresh store succeeds
        if revision <= (ctx.compactRev == 0 ? -1 : ctx.compactRev) { throw .compacted(compactRevision: ctx.compactRev) }
        if revision > ctx.rev { throw .futureRevision }
        ctx.compactRev = revision
        ctx.compactNext = Rec.revKey(0, 0)      // (re)start the physical work from the oldest entry
        ctx.compactStepDone = false
        try ctx.compactStep()
    }

    /// True while old versions of the last compaction are still being removed.
    public var compactionPending: Bool { ctx.compactNext != nil }

    /// Grants a lease (the lessor chose id and TTL). `.leaseExists` if the id is taken;
    /// `.leaseNotFound` for id 0 (etcd's NoLease).
    public mutating func leaseGrant(id: Int64, ttl: Int64) throws(MVCCError) {
        try ctx.usable()
        if id == 0 { throw .leaseNotFound }
        if try ctx.leaseExists(id) { throw .leaseExists }
        let ok = ctx.quotaAllows(64)
        let c = ctx
        try c.mutate { () throws(MVCCError) in
            var v: [UInt8] = []
            Rec.appendLE(ttl, to: &v); Rec.appendLE(0, to: &v)
            try c.t.put(c.env.leases, Rec.leaseKey(id), v)
        }
        if !ok { throw .noSpace }
    }

    /// Revokes a lease: its keys are deleted in ONE revision (key order), then the lease record.
    public mutating func leaseRevoke(id: Int64) throws(MVCCError) {
        try ctx.usable()
        guard try ctx.leaseExists(id) else { throw .leaseNotFound }
        let keys = try ctx.t.leaseKeys(id)
        ctx.beginOp()
        let c = ctx
        try c.mutate { () throws(MVCCError) in
            for k in keys {
                if let kv = try c.current(k) { try c.applyDelete(kv) }
                if let entry = try c.t.leaseEntryKey(id, k) { try c.t.del(c.env.leaseKeys, entry) }
            }
            try c.t.del(c.env.leases, Rec.leaseKey(id))
        }
        ctx.endOp()
    }

    /// Records a lease's remaining TTL (etcd's checkpoint); an unknown lease is ignored, as in etcd.
    public mutating func leaseCheckpoint(id: Int64, remainingTTL: Int64) throws(MVCCError) {
        try ctx.usable()
        guard let l = try ctx.t.lease(id) else { return }
        let c = ctx
        try c.mutate { () throws(MVCCError) in
            var v: [UInt8] = []
            Rec.appendLE(l.ttl, to: &v); Rec.appendLE(remainingTTL, to: &v)
            try c.t.put(c.env.leases, Rec.leaseKey(id), v)
        }
    }

    /// Leases as this batch sees them.
    public func lease(id: Int64) throws(MVCCError) -> LeaseRecord? {
        try ctx.usable()
        return try ctx.t.lease(id)
    }
}
