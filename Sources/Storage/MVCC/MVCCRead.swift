import KeelAPI

// Reads over one LMDB transaction (a read snapshot, or the write transaction, which sees its own
// writes). `atRev` bounds the revisions seen: the newest version of a key with main revision <=
// atRev is its state at atRev; a tombstone there means "not present".

extension LMDBTxn {
    // MARK: internal values

    func sysInt(_ name: String) throws(MVCCError) -> Int64? {
        guard let b = try get(env.sys, Array(name.utf8)), b.count == 8 else { return nil }
        return b.withUnsafeBytes { Rec.le($0, 0) }
    }

    /// (current revision, compacted revision) of this snapshot.
    func revisions() throws(MVCCError) -> (current: Int64, compacted: Int64) {
        (try sysInt("rev") ?? 1, try sysInt("compact") ?? 0)
    }

    // MARK: point and range walks

    /// Positions `c` at the first key-table entry whose user key is >= `key`.
    func seekStart(_ c: borrowing LMDBCursor, _ key: [UInt8]) throws(MVCCError) -> LMDBCursor.Entry? {
        if key.count <= Rec.maxUserKey {
            return try c.seek(Rec.keyTableKey(key, 0, 0))
        }
        // Longer than any stored key: seek to its prefix, then skip the (shorter) keys below it.
        var e = try c.seek(Rec.keyTableKey(Array(key[..<Rec.maxUserKey]), 0, 0))
        while let cur = e, Rec.compare(Rec.splitKey(cur.key).key, key) < 0 { e = try c.next() }
        return e
    }

    /// A search key just after every revision <= atRev of `key`.
    static func boundKey(_ key: UnsafeRawBufferPointer, _ atRev: Int64) -> [UInt8] {
        var b = Array(key)
        Rec.appendBE(UInt64(bitPattern: atRev) &+ 1, to: &b)
        Rec.appendBE(0, to: &b)
        return b
    }

    /// The newest version of `key` at `atRev` if it is a live (put) entry: calls `visit` with the
    /// user key, its mod revision and record bytes.
    func latest<T>(_ key: [UInt8], atRev: Int64,
                   _ visit: (UnsafeRawBufferPointer, Int64, UnsafeRawBufferPointer) throws(MVCCError) -> T)
        throws(MVCCError) -> T? {
        if LongKey.isLong(key) {
            guard let id = try longKeyID(key) else { return nil }
            let c = try cursor(env.longRevs)
            guard let l = try latestLong(c.ref, id, atRev: atRev), !Rec.isTombstone(l.record) else { return nil }
            return try withBytes(key) { (k) throws(MVCCError) in try visit(k, l.main, l.record) }
        }
        let c = try cursor(env.keys)
        if env.latestOnly {
            // the key's one entry, or the version its previous-version chain holds at atRev
            guard let x = try Self.firstEntry(c, of: key) else { return nil }
            let k = Rec.splitKey(x.entry.key).key
            if x.main <= atRev { return Rec.isTombstone(x.entry.value) ? nil : try visit(k, x.main, x.entry.value) }
            guard let o = try olderVersion(of: x.main, x.sub, atRev: atRev) else { return nil }
            return try withBytes(o.record) { (r) throws(MVCCError) in try visit(k, o.main, r) }
        }
        let bound = key.withUnsafeBytes { Self.boundKey($0, atRev) }
        let e: LMDBCursor.Entry? = try c.seek(bound) == nil ? try c.last() : try c.prev()
        guard let x = e else { return nil }
        let s = Rec.splitKey(x.key)
        guard Rec.compare(s.key, key) == 0, !Rec.isTombstone(x.value) else { return nil }
        return try visit(s.key, s.main, x.value)
    }

    /// Latest-only store: the version a short key had at `atRev`, found from its version (main, sub)
    /// newer than atRev through the revs entries' previous-version pointers, as a key-table record;
    /// nil when the key was absent then (a tombstone, no earlier version, or a link that compaction
    /// removed: compaction keeps every version still visible at the compacted revision).
    func olderVersion(of main: Int64, _ sub: Int64, atRev: Int64) throws(MVCCError) -> (main: Int64, record: [UInt8])? {
        var m = main, sb = sub
        while let f = try fullVersion(m, sb), f.prevMain != 0 {
            if f.prevMain <= atRev {
                guard let p = try fullVersion(f.prevMain, f.prevSub), !p.tombstone else { return nil }
                return (f.prevMain, p.record)
            }
            m = f.prevMain; sb = f.prevSub
        }
        return nil
    }

    /// Latest-only store: the revs entry (main, sub) as a full record; nil when it is not there
    /// (compaction removed it) or is not a full record.
    func fullVersion(_ main: Int64, _ sub: Int64) throws(MVCCError) -> Rec.FullRev? {
        guard let e = try getInPlace(env.revs, Rec.revKey(main, sub)), Rec.isFull(e) else { return nil }
        return try Rec.parseFull(e)
    }

    /// Positions `c` (on the key table) at the first entry of short key `key`, in a latest-only
    /// store its only one; nil when the key has none.
    static func firstEntry(_ c: borrowing LMDBCursor, of key: [UInt8]) throws(MVCCError)
        -> (entry: LMDBCursor.Entry, main: Int64, sub: Int64)? {
        guard let x = try c.seek(Rec.keyTableKey(key, 0, 0)) else { return nil }
        let s = Rec.splitKey(x.key)
        guard Rec.compare(s.key, key) == 0 else { return nil }
        return (x, s.main, s.sub)
    }

    /// The value of a putRef version (main, sub) of `key`, from its revs entry.
    func revisionValue(main: Int64, sub: Int64, key: UnsafeRawBufferPointer) throws(MVCCError) -> [UInt8] {
        try Self.checkedValue(try getInPlace(env.revs, Rec.revKey(main, sub)), main, sub, key)
    }

    static func checkedValue(_ entry: UnsafeRawBufferPointer?, _ main: Int64, _ sub: Int64,
                             _ key: UnsafeRawBufferPointer) throws(MVCCError) -> [UInt8] {
        guard let e = entry, e.first == Rec.putRef || e.first == Rec.fullPut, Rec.equal(try Rec.revEntryKey(e), key) else {
            throw .storage("mvcc: value of revision \(main).\(sub) missing from the revision table")
        }
        return Array(try Rec.revEntryValue(e))
    }

    /// Visits the long keys of `long` that sort before `bound` (all when nil) and are live at atRev;
    /// false when `visit` said stop.
    func drainLong(_ long: inout LongKeyStream, before bound: UnsafeRawBufferPointer?, atRev: Int64,
                   _ visit: (UnsafeRawBufferPointer, Int64, UnsafeRawBufferPointer) throws(MVCCError) -> Bool)
        throws(MVCCError) -> Bool {
        while let (key, id) = try long.peek() {
            if let bound, Rec.compare(bound, key) <= 0 { break }
            long.advance()
            guard let revs = long.revs else { break }
            guard let l = try latestLong(revs, id, atRev: atRev), !Rec.isTombstone(l.record) else { continue }
            if try !withBytes(key, { (k) throws(MVCCError) in try visit(k, l.main, l.record) }) { return false }
        }
        return true
    }

    /// Calls `visit(userKey, modRevision, record)` for every key in [start, end) whose newest version
    /// at `atRev` is a put, in key order; stops when `visit` returns false. Short keys come from the
    /// key table, long ones (LongKeys.swift) are merged in by key.
    func walkLive(_ start: [UInt8], _ end: RangeEnd, atRev: Int64,
                  _ visit: (UnsafeRawBufferPointer, Int64, UnsafeRawBufferPointer) throws(MVCCError) -> Bool)
        throws(MVCCError) {
        if end == .single {
            _ = try latest(start, atRev: atRev, visit)
            return
        }
        if case .before(let e) = end, !start.lexicographicallyPrecedes(e) { return }   // empty interval
        var long = try LongKeyStream(self, start: start, end: end)
        let c = try cursor(env.keys)
        var e = try seekStart(c, start)
        while let cur = e {
            let s = Rec.splitKey(cur.key)
            if case .before(let endKey) = end, Rec.compare(s.key, endKey) >= 0 { break }
            if !long.isEmpty, try !drainLong(&long, before: s.key, atRev: atRev, visit) { return }
            if s.main > atRev {
                if env.latestOnly {                   // the key's one entry: its version at atRev, if any
                    if let o = try olderVersion(of: s.main, s.sub, atRev: atRev),
                       try !withBytes(o.record, { (r) throws(MVCCError) in try visit(s.key, o.main, r) }) { return }
                    e = try c.next()
                    continue
                }
                e = try c.seek(Rec.pastKey(s.key))    // created after atRev: not there
                continue
            }
            let n = try c.next()
            guard let nx = n, Rec.equal(Rec.splitKey(nx.key).key, s.key) else {
                // the only version of this key: the common case, one step per key
                if !Rec.isTombstone(cur.value), try !visit(s.key, s.main, cur.value) { return }
                e = n
                continue
            }
            if Rec.splitKey(nx.key).main > atRev {
                if !Rec.isTombstone(cur.value), try !visit(s.key, s.main, cur.value) { return }
            } else {
                // several versions <= atRev: jump to the newest of them
                let l = try c.seek(Self.boundKey(s.key, atRev)) == nil ? try c.last() : try c.prev()
                if let l {
                    let ls = Rec.splitKey(l.key)
                    if !Rec.isTombstone(l.value), try !visit(ls.key, ls.main, l.value) { return }
                }
            }
            e = try c.seek(Rec.pastKey(s.key))
        }
        if !long.isEmpty { _ = try drainLong(&long, before: nil, atRev: atRev, visit) }
    }

    // MARK: Range (etcd's applierV3backend.Range + mvcc rangeKeys)

    func range(_ r: Etcdserverpb.RangeRequest, curRev: Int64, compactRev: Int64) throws(MVCCError)
        -> Etcdserverpb.RangeResponse {
        if r.revision > curRev { throw .futureRevision }
        let rev = r.revision <= 0 ? curRev : r.revision
        if rev < compactRev { throw .compacted(compactRevision: compactRev) }

        var limit = r.limit
        let filtered = r.minModRevision != 0 || r.maxModRevision != 0
            || r.minCreateRevision != 0 || r.maxCreateRevision != 0
        if r.sortOrder != .none || filtered { limit = 0 }   // fetch everything; sort and cut after
        if limit > 0 { limit += 1 }                         // one extra for `more`
        let needValues = !r.keysOnly || r.sortTarget == .value
        let values = RevisionValues(self)
        var kvs: [Mvccpb.KeyValue] = []
        var total: Int64 = 0
        try walkLive(r.key, RangeEnd(r.rangeEnd), atRev: rev) { (k, mod, v) throws(MVCCError) in
            total += 1
            if !r.countOnly && (limit <= 0 || Int64(kvs.count) < limit) {
                kvs.append(try Rec.decode(key: k, mod: mod, value: v, keysOnly: !needValues, revs: self,
                                          values: values))
            }
            return true
        }
        if r.maxModRevision != 0 { kvs.removeAll { $0.modRevision > r.maxModRevision } }
        if r.minModRevision != 0 { kvs.removeAll { $0.modRevision < r.minModRevision } }
        if r.maxCreateRevision != 0 { kvs.removeAll { $0.createRevision > r.maxCreateRevision } }
        if r.minCreateRevision != 0 { kvs.removeAll { $0.createRevision < r.minCreateRevision } }

        var order = r.sortOrder
        if r.sortTarget != .key && order == .none { order = .ascend }
        if order == .ascend || order == .descend {
            let less: ((Mvccpb.KeyValue, Mvccpb.KeyValue) -> Bool)?
            switch r.sortTarget {
            case .key: less = { $0.key.lexicographicallyPrecedes($1.key) }
            case .version: less = { $0.version < $1.version }
            case .create: less = { $0.createRevision < $1.createRevision }
            case .mod: less = { $0.modRevision < $1.modRevision }
            case .value: less = { $0.value.lexicographicallyPrecedes($1.value) }
            default: less = nil
            }
            if let less {
                // Stable (ties stay in key order); etcd's sort is unstable, so ties may differ from it.
                let desc = order == .descend
                kvs = kvs.enumerated().sorted { a, b in
                    if desc ? less(b.element, a.element) : less(a.element, b.element) { return true }
                    if desc ? less(a.element, b.element) : less(b.element, a.element) { return false }
                    return a.offset < b.offset
                }.map(\.element)
            }
        }
        var resp = Etcdserverpb.RangeResponse()
        if r.limit > 0 && kvs.count > Int(r.limit) {
            kvs.removeLast(kvs.count - Int(r.limit))
            resp.more = true
        }
        if r.keysOnly { for i in kvs.indices { kvs[i].value = [] } }
        var h = Etcdserverpb.ResponseHeader()
        h.revision = curRev
        resp.header = h
        resp.count = total
        resp.kvs = kvs
        return resp
    }

    // MARK: history

    static func inRange(_ k: UnsafeRawBufferPointer, _ key: [UInt8], _ end: RangeEnd) -> Bool {
        switch end {
        case .single: return Rec.compare(k, key) == 0
        case .unbounded: return Rec.compare(k, key) >= 0
        case .before(let e): return Rec.compare(k, key) >= 0 && Rec.compare(k, e) < 0
        }
    }

    /// Events with start <= main revision <= end in [key, rangeEnd), in revision order. Stops after
    /// `limit` events (if > 0) at the end of a main revision, so a revision is never split.
    /// prevKv is filled as etcd's watch does it (a range at modRevision - 1): absent for an event at
    /// the compacted revision itself (that read would be compacted), whatever compaction removed yet.
    func events(from start: Int64, to end: Int64, key: [UInt8], rangeEnd: [UInt8], prevKV: Bool,
                limit: Int, compactRev: Int64 = 0) throws(MVCCError) -> [Mvccpb.Event] {
        let re = RangeEnd(rangeEnd)
        let rc = try cursor(env.revs)
        let kc = try cursor(env.keys)
        let lc = try cursor(env.longRevs)
        var out: [Mvccpb.Event] = []
        var e = try rc.seek(Rec.revKey(max(start, 0), 0))
        var lastMain: Int64 = -1
        while let cur = e {
            let main = Int64(bitPattern: Rec.be(cur.key, 0)), sub = Int64(bitPattern: Rec.be(cur.key, 8))
            if main > end { break }
            if limit > 0 && out.count >= limit && main != lastMain { break }
            let uk = try Rec.revEntryKey(cur.value)
            if Self.inRange(uk, key, re) {
                let wantPrev = prevKV && main > compactRev
                let ev: Mvccpb.Event
                if Rec.isFull(cur.value) {
                    // latest-only store: the entry is the version; its previous one is where it points
                    let f = try Rec.parseFull(cur.value)
                    let p = wantPrev && f.prevMain != 0 ? try fullVersion(f.prevMain, f.prevSub) : nil
                    ev = try withBytes(f.record) { (r) throws(MVCCError) in
                        guard let p else { return try historyEvent(uk, main, r, revEntry: nil, prev: nil) }
                        return try withBytes(p.record) { (pr) throws(MVCCError) in
                            try historyEvent(uk, main, r, revEntry: nil, prev: (f.prevMain, pr))
                        }
                    }
                } else {
                    let rec = try version(kc.ref, lc.ref, key: Array(uk), main: main, sub: sub,
                                          neighbor: wantPrev ? .prev : .none)
                    ev = try historyEvent(uk, main, rec.record, revEntry: cur.value, prev: rec.neighbor)
                }
                out.append(ev)
                lastMain = main
            }
            e = try rc.next()
        }
        return out
    }

    /// The event of version `main` of `uk` from its key-table-format `record` (`revEntry`: its revs
    /// entry, for a putRef value); prevKv from `prev` unless that is a tombstone.
    func historyEvent(_ uk: UnsafeRawBufferPointer, _ main: Int64, _ record: UnsafeRawBufferPointer,
                      revEntry: UnsafeRawBufferPointer?, prev: (main: Int64, record: UnsafeRawBufferPointer)?)
        throws(MVCCError) -> Mvccpb.Event {
        var ev = Mvccpb.Event()
        if Rec.isTombstone(record) {
            ev.type = .delete
            var kv = Mvccpb.KeyValue()
            kv.key = Array(uk)
            kv.modRevision = main
            ev.kv = kv
        } else {
            ev.type = .put
            ev.kv = try Rec.decode(key: uk, mod: main, value: record, revs: self, revEntry: revEntry)
        }
        if let p = prev, !Rec.isTombstone(p.record) {
            ev.prevKv = try Rec.decode(key: uk, mod: p.main, value: p.record, revs: self)
        }
        return ev
    }

    // MARK: leases

    func lease(_ id: Int64) throws(MVCCError) -> LeaseRecord? {
        guard let v = try get(env.leases, Rec.leaseKey(id)), v.count == 16 else { return nil }
        return v.withUnsafeBytes { LeaseRecord(id: id, ttl: Rec.le($0, 0), remainingTTL: Rec.le($0, 8)) }
    }

    func allLeases() throws(MVCCError) -> [LeaseRecord] {
        let c = try cursor(env.leases)
        var out: [LeaseRecord] = []
        var e = try c.first()
        while let cur = e {
            if cur.key.count == 8 && cur.value.count == 16 {
                out.append(LeaseRecord(id: Int64(bitPattern: Rec.be(cur.key, 0)),
                                       ttl: Rec.le(cur.value, 0), remainingTTL: Rec.le(cur.value, 8)))
            }
            e = try c.next()
        }
        return out
    }

    func leaseKeys(_ id: Int64) throws(MVCCError) -> [[UInt8]] {
        let c = try cursor(env.leaseKeys)
        let prefix = Rec.leaseKey(id)
        var out: [[UInt8]] = []
        var e = try c.seek(prefix)
        var long = false
        while let cur = e, cur.key.count >= 8, Rec.be(cur.key, 0) == UInt64(bitPattern: id) {
            if cur.key.count == LongKey.leaseEntryLength {
                // a long key: lease ‖ key[0..<495] ‖ id -> key[495...]
                out.append(Array(cur.key[8..<(8 + LongKey.prefixLength)]) + Array(cur.value))
                long = true
            } else {
                out.append(Array(cur.key[8...]))
            }
            e = try c.next()
        }
        // long keys sit after their prefix but in id order within it: restore key order (etcd
        // revokes a lease's keys sorted, and the order decides the sub-revisions)
        if long { out.sort { $0.lexicographicallyPrecedes($1) } }
        return out
    }
}

/// The values of putRef versions a range returns, read through one cursor on revs (opened at the
/// first value). A cursor seek first checks the cursor's current leaf page, so
/// versions written close together (neighbours in revs) cost a search within one page instead of a
/// descent from the root as `mdb_get` does for each. Must not outlive its transaction.
final class RevisionValues {
    private let t: LMDBTxn
    private var cursor: LMDBCursor?     // owns the cursor `ref` points at
    private var ref: CursorRef?
    private var key: [UInt8] = []

    init(_ t: LMDBTxn) { self.t = t }

    func value(main: Int64, sub: Int64, key userKey: UnsafeRawBufferPointer) throws(MVCCError) -> [UInt8] {
        if ref == nil {
            let c = try t.cursor(t.env.revs)
            ref = c.ref
            cursor = consume c
        }
        key.removeAll(keepingCapacity: true)
        Rec.appendBE(UInt64(bitPattern: main), to: &key)
        Rec.appendBE(UInt64(bitPattern: sub), to: &key)
        let e = try ref!.seek(key)       // the first entry >= key: the version, if it is there
        return try LMDBTxn.checkedValue(e.flatMap { Rec.compare($0.key, key) == 0 ? $0.value : nil }, main, sub, userKey)
    }
}
