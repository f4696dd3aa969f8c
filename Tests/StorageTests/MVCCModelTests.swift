#if canImport(Glibc)
import Glibc
#endif
import KeelAPI
import KeelTestSupport
import Testing
@testable import Storage

/// A deliberately simple in-memory reference of etcd's revision model: every version of every key in
/// a list, scanned linearly. Written from etcd's documented semantics, independently of the store.
final class RefModel {
    struct Version { var main: Int64; var sub: Int64; var tomb: Bool; var value: [UInt8]; var lease: Int64; var create: Int64; var version: Int64 }
    var hist: [[UInt8]: [Version]] = [:]
    var rev: Int64 = 1
    var compacted: Int64 = 0
    var leases: [Int64: Int64] = [:]
    // the op in progress
    var sub: Int64 = 0

    func live(_ k: [UInt8], at: Int64) -> Version? {
        guard let v = hist[k]?.last(where: { $0.main <= at }), !v.tomb else { return nil }
        return v
    }
    func kv(_ k: [UInt8], _ v: Version) -> Mvccpb.KeyValue {
        var kv = Mvccpb.KeyValue()
        kv.key = k; kv.value = v.value; kv.lease = v.lease; kv.createRevision = v.create; kv.modRevision = v.main; kv.version = v.version
        return kv
    }
    func range(_ from: [UInt8], _ end: [UInt8], at: Int64) -> [Mvccpb.KeyValue] {
        hist.keys.filter { k in
            if end.isEmpty { return k == from }
            if end == [0] { return !k.lexicographicallyPrecedes(from) }
            return !k.lexicographicallyPrecedes(from) && k.lexicographicallyPrecedes(end)
        }.sorted { $0.lexicographicallyPrecedes($1) }.compactMap { k in live(k, at: at).map { kv(k, $0) } }
    }
    func begin() { sub = 0 }
    func end() { if sub > 0 { rev += 1 } }
    func put(_ k: [UInt8], _ value: [UInt8], lease: Int64) {
        let prev = live(k, at: .max)
        hist[k, default: []].append(Version(main: rev + 1, sub: sub, tomb: false, value: value, lease: lease,
                                            create: prev?.create ?? rev + 1, version: (prev?.version ?? 0) + 1))
        sub += 1
    }
    func delete(_ k: [UInt8]) {
        guard live(k, at: .max) != nil else { return }
        hist[k]!.append(Version(main: rev + 1, sub: sub, tomb: true, value: [], lease: 0, create: 0, version: 0))
        sub += 1
    }
    func compact(_ r: Int64) {
        for (k, vs) in hist {
            guard let li = vs.lastIndex(where: { $0.main <= r }) else { continue }
            var keep = Array(vs[li...])
            if vs[li].tomb && vs[li].main < r { keep.removeFirst() }
            hist[k] = keep.isEmpty ? nil : keep
        }
        compacted = r
    }
    func events(from: Int64) -> [(main: Int64, sub: Int64, ev: Mvccpb.Event)] {
        var out: [(Int64, Int64, Mvccpb.Event)] = []
        for (k, vs) in hist {
            for (i, v) in vs.enumerated() where v.main >= from {
                var e = Mvccpb.Event()
                if v.tomb {
                    e.type = .delete
                    var kv = Mvccpb.KeyValue(); kv.key = k; kv.modRevision = v.main
                    e.kv = kv
                } else { e.type = .put; e.kv = kv(k, v) }
                if i > 0 && !vs[i - 1].tomb { e.prevKv = kv(k, vs[i - 1]) }
                out.append((v.main, v.sub, e))
            }
        }
        return out.sorted { ($0.0, $0.1) < ($1.0, $1.1) }
    }
    func leaseKeys(_ id: Int64) -> [[UInt8]] {
        hist.keys.filter { live($0, at: .max)?.lease == id }.sorted { $0.lexicographicallyPrecedes($1) }
    }
}

@Suite("MVCC randomized model", .serialized)
struct MVCCModelTests {
    static let keys: [[UInt8]] = (0..<10).map { Array("k\($0)".utf8) } + [Array("k1a".utf8), Array("z".utf8)]

    /// The seeds to run: MVCC_MODEL_SEED replays one, otherwise `defaults` and a random one; and the
    /// operations per run (MVCC_MODEL_OPS, default 300).
    static func seedsAndOps(_ defaults: [UInt64]) -> (seeds: [UInt64], ops: Int) {
        let ops = getenv("MVCC_MODEL_OPS").flatMap { Int(String(cString: $0)) } ?? 300
        if let s = getenv("MVCC_MODEL_SEED"), let v = UInt64(String(cString: s)) { return ([v], ops) }
        return (defaults + [randomSeed()], ops)
    }

    @Test func randomOpsAgainstReferenceModel() throws {
        let (seeds, ops) = Self.seedsAndOps([1, 2, 3, 0xC0FFEE])
        for seed in seeds {
            print("MVCC model: seed \(seed), \(ops) ops (replay: MVCC_MODEL_SEED=\(seed) swift test --filter MVCCModelTests)")
            try run(seed: seed, ops: ops)
        }
    }

    /// Inline keys around the 495-byte boundary and long keys (LongKeys.swift) that share prefixes
    /// with them and with each other: etcd has no key length limit, so the order is plain bytewise.
    static let mixedKeys: [[UInt8]] = {
        let p = [UInt8](repeating: 0x6B, count: 495)             // the longest inline key
        let p494 = [UInt8](repeating: 0x6B, count: 494)
        return [b("a"), b("k"), p494, p, p494 + [0x6C], b("z"),
                p + [0], p + [0x61], p + [0x61] + [UInt8](repeating: 0x61, count: 300), p + [0x61, 0x62],
                p + [UInt8](repeating: 0x62, count: 1000), p + [0x6B], p494 + [0x6A] + b("xx"), p494 + [0x6C, 0],
                [UInt8](repeating: 0x7A, count: 600), [UInt8](repeating: 0x7A, count: 600) + [0x61]]
    }()

    @Test func randomOpsWithLongAndBoundaryKeys() throws {
        let (seeds, ops) = Self.seedsAndOps([11, 12, 0xBEEF])
        for seed in seeds {
            print("MVCC model (long keys): seed \(seed), \(ops) ops (replay: MVCC_MODEL_SEED=\(seed) swift test --filter MVCCModelTests)")
            try run(seed: seed, ops: ops, keys: Self.mixedKeys)
        }
    }

    /// The same random operations on a latest-only store (MVCCOptions.latestOnlyKeyTable): old
    /// revisions come from the previous-version chain in revs, and the model sees no difference.
    @Test func randomOpsAgainstReferenceModelLatestOnly() throws {
        let (seeds, ops) = Self.seedsAndOps([21, 22, 23, 0xFEED])
        for seed in seeds {
            print("MVCC model (latest-only key table): seed \(seed), \(ops) ops (replay: MVCC_MODEL_SEED=\(seed) swift test --filter MVCCModelTests)")
            try run(seed: seed, ops: ops, latestOnly: true)
            try run(seed: seed &+ 1000, ops: ops, keys: Self.mixedKeys, latestOnly: true)
        }
    }

    /// etcd's Range on the model (v3.4 applierV3backend.Range): count of every live key in range;
    /// revision filters, then the sort (ties in key order, as the store), then limit/more; keys_only,
    /// count_only (no KVs, more false).
    static func modelRange(_ m: RefModel, _ r: Etcdserverpb.RangeRequest, at: Int64) -> Etcdserverpb.RangeResponse {
        let all = m.range(r.key, r.rangeEnd, at: at)
        // etcd reads only limit+1 keys (in key order) unless the REQUEST asks for a sort order or a
        // filter: a sort target without an order then sorts just those (etcd's quirk, kept)
        let filtered = r.minModRevision != 0 || r.maxModRevision != 0 || r.minCreateRevision != 0 || r.maxCreateRevision != 0
        let fetched = r.sortOrder == .none && !filtered && r.limit > 0 ? Array(all.prefix(Int(r.limit) + 1)) : all
        var kvs = fetched.filter { kv in
            (r.minModRevision == 0 || kv.modRevision >= r.minModRevision) && (r.maxModRevision == 0 || kv.modRevision <= r.maxModRevision)
                && (r.minCreateRevision == 0 || kv.createRevision >= r.minCreateRevision)
                && (r.maxCreateRevision == 0 || kv.createRevision <= r.maxCreateRevision)
        }
        var order = r.sortOrder
        if r.sortTarget != .key && order == .none { order = .ascend }
        if order != .none {
            func cmp(_ a: Mvccpb.KeyValue, _ b: Mvccpb.KeyValue) -> Int {
                func c<T: Comparable>(_ x: T, _ y: T) -> Int { x < y ? -1 : (x > y ? 1 : 0) }
                switch r.sortTarget {
                case .version: return c(a.version, b.version)
                case .create: return c(a.createRevision, b.createRevision)
                case .mod: return c(a.modRevision, b.modRevision)
                case .value: return a.value == b.value ? 0 : (a.value.lexicographicallyPrecedes(b.value) ? -1 : 1)
                default: return a.key == b.key ? 0 : (a.key.lexicographicallyPrecedes(b.key) ? -1 : 1)
                }
            }
            let sign = order == .descend ? -1 : 1
            kvs = kvs.enumerated().sorted { x, y in
                let c = cmp(x.element, y.element) * sign
                return c != 0 ? c < 0 : x.offset < y.offset
            }.map(\.element)
        }
        var resp = Etcdserverpb.RangeResponse()
        // count_only: etcd's mvcc returns no KVs at all, so `more` stays false
        if r.limit > 0 && !r.countOnly && kvs.count > Int(r.limit) { kvs = Array(kvs.prefix(Int(r.limit))); resp.more = true }
        if r.keysOnly { for i in kvs.indices { kvs[i].value = [] } }
        resp.count = Int64(all.count)
        resp.kvs = r.countOnly ? [] : kvs
        return resp
    }

    func run(seed: UInt64, ops: Int, keys keySet: [[UInt8]] = Self.keys, latestOnly: Bool = false) throws {
        var g = SplitMix64(seed: seed)
        // small compaction steps, so reads also run against half-done physical compactions
        var opts = MVCCOptions(quotaBackendBytes: 2 << 30, mapSize: 256 << 20, compactionBatch: 1 + Int(seed % 4))
        opts.latestOnlyKeyTable = latestOnly
        let t = try TestStore(opts)
        #expect(try t.store.currentEnv().latestOnly == latestOnly)
        let m = RefModel()
        let ctx = "seed \(seed) (MVCC_MODEL_SEED=\(seed))"
        func key() -> [UInt8] { keySet[g.below(keySet.count)] }
        // mostly short values (inline in the key table), one in four longer than the inline limit
        // (stored in the revision table): the model sees no difference
        func value() -> [UInt8] {
            let n = g.below(4) == 0 ? MVCCOptions.defaultInlineValueLimit - 1 + g.below(100) : g.below(6)
            return (0..<n).map { _ in UInt8(97 + g.below(3)) }
        }
        func rangeEnd(_ k: [UInt8]) -> [UInt8] {
            switch g.below(5) {
            case 0: return []
            case 1: return [0]
            case 2: return k + [0xFF]
            case 3: return prefixEnd(k)                                  // etcdctl --prefix
            default: return key()
            }
        }
        /// A range start: a stored key, or a prefix of one (cut inside or at the 495-byte boundary).
        func rangeStart() -> [UInt8] {
            let k = key()
            guard g.below(3) == 0, k.count > 1 else { return k }
            let cuts = [1, k.count / 2, min(495, k.count - 1), min(496, k.count - 1), k.count - 1]
            return Array(k.prefix(max(1, cuts[g.below(cuts.count)])))
        }
        for step in 0..<ops {
            let what = g.below(100)
            let c = "\(ctx) step \(step)"
            if what < 40 {
                // a batch of 1-3 puts / deletes in one write{}
                let n = 1 + g.below(3)
                var reqs: [(put: Etcdserverpb.PutRequest?, del: Etcdserverpb.DeleteRangeRequest?)] = []
                for _ in 0..<n {
                    if g.below(4) == 0 {
                        var d = Etcdserverpb.DeleteRangeRequest(); d.key = key(); d.rangeEnd = rangeEnd(d.key); d.prevKv = true
                        reqs.append((nil, d))
                    } else {
                        var p = Etcdserverpb.PutRequest(); p.key = key(); p.value = value(); p.prevKv = true
                        if g.below(3) == 0 { p.lease = Int64(1 + g.below(4)) }
                        if g.below(8) == 0 { p.ignoreValue = true }
                        reqs.append((p, nil))
                    }
                }
                let got = try t.store.write { (w) throws(MVCCError) -> [String] in
                    reqs.map { r in
                        do throws(MVCCError) {
                            if let p = r.put {
                                let resp = try w.put(p)
                                return "put \(resp.header!.revision) \(resp.prevKv.map { "\($0)" } ?? "-")"
                            }
                            let resp = try w.deleteRange(r.del!)
                            return "del \(resp.header!.revision) \(resp.deleted) \(resp.prevKvs)"
                        } catch { return "err \(error)" }
                    }
                }
                var want: [String] = []
                for r in reqs {
                    if let p = r.put {
                        if p.lease != 0 && m.leases[p.lease] == nil { want.append("err \(MVCCError.leaseNotFound)"); continue }
                        let prev = m.live(p.key, at: .max)
                        if p.ignoreValue && prev == nil { want.append("err \(MVCCError.keyNotFound)"); continue }
                        m.begin(); m.put(p.key, p.ignoreValue ? prev!.value : p.value, lease: p.lease); m.end()
                        want.append("put \(m.rev) \(prev.map { "\(m.kv(p.key, $0))" } ?? "-")")
                    } else {
                        let d = r.del!
                        let kvs = m.range(d.key, d.rangeEnd, at: .max)
                        m.begin(); for kv in kvs { m.delete(kv.key) }; m.end()
                        want.append("del \(m.rev) \(kvs.count) \(kvs)")
                    }
                }
                #expect(got == want, "\(c)")
            } else if what < 60 {
                // txn: compare on one key's version/value, puts + a delete on distinct keys
                let ck = key()
                let cv = Int64(g.below(3))
                var cm = Etcdserverpb.Compare(); cm.key = ck
                let useValue = g.below(3) == 0
                if useValue { cm.target = .value; cm.targetUnion = .value(value()) } else { cm.target = .version; cm.targetUnion = .version(cv) }
                cm.result = [.equal, .notEqual, .less, .greater][g.below(4)]
                var pool = keySet.shuffled(using: &g)
                var succ: [Etcdserverpb.RequestOp] = [], fail: [Etcdserverpb.RequestOp] = []
                for _ in 0..<(1 + g.below(3)) { succ.append(opPut(s(pool.removeLast()), s(value()))) }
                if g.below(2) == 0 { var o = Etcdserverpb.RequestOp(); o.request = .requestDeleteRange(delReq(s(pool.removeLast()))); succ.append(o) }
                if g.below(2) == 0 { succ.append(opRange("\0", "\0")) }
                fail.append(opPut(s(pool.removeLast()), s(value())))
                let dupe = g.below(10) == 0
                if dupe { succ.append(succ[0]) }
                let req = txnReq([cm], succ, fail)
                let got: String
                do {
                    let r = try t.txn(req)
                    got = "ok \(r.succeeded) \(r.header!.revision)"
                } catch { got = "err \(error)" }
                // model
                var want: String
                if dupe { want = "err \(MVCCError.duplicateKey)" } else {
                    let cur = m.live(ck, at: .max)
                    let holds: Bool
                    func rel(_ r: Int) -> Bool {
                        switch cm.result { case .equal: r == 0; case .notEqual: r != 0; case .less: r < 0; default: r > 0 }
                    }
                    if useValue {
                        var v: [UInt8] = []
                        if case .value(let x) = cm.targetUnion { v = x }
                        if let cur { holds = rel(cur.value == v ? 0 : (cur.value.lexicographicallyPrecedes(v) ? -1 : 1)) } else { holds = false }
                    } else {
                        let ver = cur?.version ?? 0
                        holds = rel(ver == cv ? 0 : (ver < cv ? -1 : 1))
                    }
                    m.begin()
                    for op in holds ? succ : fail {
                        switch op.request {
                        case .requestPut(let p): m.put(p.key, p.value, lease: 0)
                        case .requestDeleteRange(let d): m.delete(d.key)
                        default: break
                        }
                    }
                    m.end()
                    want = "ok \(holds) \(m.rev)"
                }
                #expect(got == want, "\(c) txn \(req.textFormatString())")
            } else if what < 68 {
                // compaction to a random revision, sometimes invalid
                let target = m.compacted + Int64(g.below(Int(m.rev - m.compacted) + 2))
                let got = mvccError { try t.compact(target) }
                var want: MVCCError?
                if target <= (m.compacted == 0 ? -1 : m.compacted) { want = .compacted(compactRevision: m.compacted) }
                else if target > m.rev { want = .futureRevision }
                else { m.compact(target) }
                #expect(got == want, "\(c) compact \(target)")
            } else if what < 80 {
                let id = Int64(1 + g.below(4))
                let got = mvccError { try t.grant(id, ttl: Int64(g.below(100))) }
                let want: MVCCError? = m.leases[id] != nil ? .leaseExists : nil
                if want == nil { m.leases[id] = 1 }
                #expect(got == want, "\(c) grant \(id)")
            } else if what < 88 {
                let id = Int64(1 + g.below(4))
                let got = mvccError { _ = try t.revoke(id) }
                var want: MVCCError?
                if m.leases[id] == nil { want = .leaseNotFound } else {
                    m.begin(); for k in m.leaseKeys(id) { m.delete(k) }; m.end()
                    m.leases[id] = nil
                }
                #expect(got == want, "\(c) revoke \(id)")
            } else if what < 92 {
                try t.reopen()
            } else {
                // a range with random options at a random revision
                let at = Int64(g.below(Int(m.rev) + 2))
                var rq = Etcdserverpb.RangeRequest()
                rq.key = rangeStart(); rq.rangeEnd = rangeEnd(rq.key); rq.revision = at
                rq.limit = Int64([0, 1, 2, 5][g.below(4)])
                if g.below(2) == 0 {
                    rq.sortOrder = [.none, .ascend, .descend][g.below(3)]
                    rq.sortTarget = [.key, .version, .create, .mod, .value][g.below(5)]
                }
                rq.keysOnly = g.below(4) == 0
                rq.countOnly = g.below(6) == 0
                if g.below(5) == 0 {
                    let r = Int64(1 + g.below(Int(m.rev)))
                    switch g.below(4) {
                    case 0: rq.minModRevision = r
                    case 1: rq.maxModRevision = r
                    case 2: rq.minCreateRevision = r
                    default: rq.maxCreateRevision = r
                    }
                }
                let got: String
                do {
                    let r = try t.store.range(rq)
                    got = "\(r.kvs) \(r.count) \(r.more)"
                } catch { got = "err \(error)" }
                let want: String
                let eff = at == 0 ? m.rev : at
                if at > m.rev { want = "err \(MVCCError.futureRevision)" }
                else if eff < m.compacted { want = "err \(MVCCError.compacted(compactRevision: m.compacted))" }
                else { let r = Self.modelRange(m, rq, at: eff); want = "\(r.kvs) \(r.count) \(r.more)" }
                #expect(got == want, "\(c) range \(rq.textFormatString())")
            }
            // after every operation: the whole state, one old revision, history and leases
            #expect(t.store.revision == m.rev && t.store.compactedRevision == m.compacted, "\(c)")
            #expect(try t.get("\0", "\0").kvs == m.range([0], [0], at: m.rev), "\(c) current state")
            let old = m.compacted + Int64(g.below(Int(m.rev - m.compacted) + 1))
            if old >= 1 {
                #expect(try t.get("\0", "\0", rev: old).kvs == m.range([0], [0], at: old), "\(c) state at \(old)")
            }
            let from = max(m.compacted, 1) + Int64(g.below(4))
            let evs = try t.store.events(from: from, key: [0], rangeEnd: [0], prevKV: true)
            #expect(evs == m.events(from: from).map(\.ev), "\(c) events from \(from)")
            #expect(try t.store.leases().map(\.id) == m.leases.keys.sorted(), "\(c) leases")
            for id in m.leases.keys { #expect(try t.store.leaseKeys(id: id) == m.leaseKeys(id), "\(c) lease keys \(id)") }
            if m.compacted > 1 {
                #expect(mvccError { _ = try t.get("k1", rev: m.compacted - 1) } == .compacted(compactRevision: m.compacted), "\(c)")
            }
        }
    }
}
