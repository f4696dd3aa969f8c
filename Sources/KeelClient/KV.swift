// KV: get (every Range option), put, delete, txn builder, compact; the options follow clientv3's OpOptions.
import KeelAPI

/// Keys and values: `String` (UTF-8), `[UInt8]`, `Substring`.
public protocol KeelBytes: Sendable {
    var keelBytes: [UInt8] { get }
}

extension String: KeelBytes { public var keelBytes: [UInt8] { Array(utf8) } }
extension Substring: KeelBytes { public var keelBytes: [UInt8] { Array(utf8) } }
extension Array: KeelBytes where Element == UInt8 { public var keelBytes: [UInt8] { self } }

/// Which keys an operation covers, as clientv3's WithPrefix / WithFromKey / WithRange.
public enum KeyRange: Sendable, Hashable {
    /// Exactly the key.
    case single
    /// Every key starting with the key (an empty key: every key).
    case prefix
    /// Every key >= the key (an empty key: every key).
    case fromKey
    /// [key, end).
    case end([UInt8])

    /// The (key, range_end) pair etcd receives.
    public func resolve(_ key: [UInt8]) -> (key: [UInt8], rangeEnd: [UInt8]) {
        switch self {
        case .single: return (key, [])
        case .prefix: return key.isEmpty ? ([0], [0]) : (key, KeelClient.prefixEnd(key))
        case .fromKey: return (key.isEmpty ? [0] : key, [0])
        case .end(let e): return (key, e)
        }
    }
}

public typealias SortTarget = Etcdserverpb.RangeRequest.SortTarget
public typealias SortOrder = Etcdserverpb.RangeRequest.SortOrder

/// Every option of etcd's RangeRequest. Build with the initializer or the chainable methods:
/// `GetOptions.prefix.limit(10).sort(.create, .descend)`.
public struct GetOptions: Sendable, Hashable {
    public var range: KeyRange
    public var limit: Int64
    /// Read at this revision (0: the newest).
    public var revision: Int64
    public var sortTarget: SortTarget
    public var sortOrder: SortOrder
    /// Answer from the member's local state without a linearizable round (etcd's --consistency=s).
    public var serializable: Bool
    public var keysOnly: Bool
    public var countOnly: Bool
    public var minModRevision: Int64
    public var maxModRevision: Int64
    public var minCreateRevision: Int64
    public var maxCreateRevision: Int64

    public init(range: KeyRange = .single, limit: Int64 = 0, revision: Int64 = 0, sortTarget: SortTarget = .key,
                sortOrder: SortOrder = .none, serializable: Bool = false, keysOnly: Bool = false,
                countOnly: Bool = false, minModRevision: Int64 = 0, maxModRevision: Int64 = 0,
                minCreateRevision: Int64 = 0, maxCreateRevision: Int64 = 0) {
        self.range = range
        self.limit = limit
        self.revision = revision
        self.sortTarget = sortTarget
        self.sortOrder = sortOrder
        self.serializable = serializable
        self.keysOnly = keysOnly
        self.countOnly = countOnly
        self.minModRevision = minModRevision
        self.maxModRevision = maxModRevision
        self.minCreateRevision = minCreateRevision
        self.maxCreateRevision = maxCreateRevision
    }

    public static var prefix: GetOptions { GetOptions(range: .prefix) }
    public static var fromKey: GetOptions { GetOptions(range: .fromKey) }
    /// The oldest-created key under the prefix (clientv3's WithFirstCreate).
    public static var firstCreate: GetOptions { GetOptions.prefix.sort(.create, .ascend).limit(1) }
    /// The newest-created key under the prefix (WithLastCreate).
    public static var lastCreate: GetOptions { GetOptions.prefix.sort(.create, .descend).limit(1) }
    /// The smallest key under the prefix (WithFirstKey).
    public static var firstKey: GetOptions { GetOptions.prefix.sort(.key, .ascend).limit(1) }
    /// The largest key under the prefix (WithLastKey).
    public static var lastKey: GetOptions { GetOptions.prefix.sort(.key, .descend).limit(1) }

    public func rangeEnd(_ end: some KeelBytes) -> GetOptions { with { $0.range = .end(end.keelBytes) } }
    public func limit(_ n: Int64) -> GetOptions { with { $0.limit = n } }
    public func revision(_ r: Int64) -> GetOptions { with { $0.revision = r } }
    /// As clientv3's WithSort: sorting by key ascending is the server's order anyway, so it is sent as
    /// "no sort" (else the server would fetch the whole range before applying the limit).
    public func sort(_ target: SortTarget, _ order: SortOrder) -> GetOptions {
        with {
            $0.sortTarget = target
            $0.sortOrder = target == .key && order == .ascend ? .none : order
        }
    }
    public func serializable(_ on: Bool = true) -> GetOptions { with { $0.serializable = on } }
    public func keysOnly(_ on: Bool = true) -> GetOptions { with { $0.keysOnly = on } }
    public func countOnly(_ on: Bool = true) -> GetOptions { with { $0.countOnly = on } }
    public func minModRevision(_ r: Int64) -> GetOptions { with { $0.minModRevision = r } }
    public func maxModRevision(_ r: Int64) -> GetOptions { with { $0.maxModRevision = r } }
    public func minCreateRevision(_ r: Int64) -> GetOptions { with { $0.minCreateRevision = r } }
    public func maxCreateRevision(_ r: Int64) -> GetOptions { with { $0.maxCreateRevision = r } }

    private func with(_ f: (inout GetOptions) -> Void) -> GetOptions {
        var o = self
        f(&o)
        return o
    }

    public func request(_ key: some KeelBytes) -> Etcdserverpb.RangeRequest {
        var r = Etcdserverpb.RangeRequest()
        (r.key, r.rangeEnd) = range.resolve(key.keelBytes)
        r.limit = limit
        r.revision = revision
        r.sortTarget = sortTarget
        r.sortOrder = sortOrder
        r.serializable = serializable
        r.keysOnly = keysOnly
        r.countOnly = countOnly
        r.minModRevision = minModRevision
        r.maxModRevision = maxModRevision
        r.minCreateRevision = minCreateRevision
        r.maxCreateRevision = maxCreateRevision
        return r
    }
}

public struct PutOptions: Sendable, Hashable {
    /// Attach the key to this lease (0: none).
    public var lease: Int64
    /// Return the previous key-value.
    public var prevKV: Bool
    /// Keep the current value (the key must exist: "etcdserver: key not found").
    public var ignoreValue: Bool
    /// Keep the current lease (the key must exist).
    public var ignoreLease: Bool
    public init(lease: Int64 = 0, prevKV: Bool = false, ignoreValue: Bool = false, ignoreLease: Bool = false) {
        self.lease = lease
        self.prevKV = prevKV
        self.ignoreValue = ignoreValue
        self.ignoreLease = ignoreLease
    }

    public func request(_ key: some KeelBytes, _ value: some KeelBytes) -> Etcdserverpb.PutRequest {
        var r = Etcdserverpb.PutRequest()
        r.key = key.keelBytes
        r.value = value.keelBytes
        r.lease = lease
        r.prevKv = prevKV
        r.ignoreValue = ignoreValue
        r.ignoreLease = ignoreLease
        return r
    }
}

public struct DeleteOptions: Sendable, Hashable {
    public var range: KeyRange
    public var prevKV: Bool
    public init(range: KeyRange = .single, prevKV: Bool = false) {
        self.range = range
        self.prevKV = prevKV
    }
    public static var prefix: DeleteOptions { DeleteOptions(range: .prefix) }
    public static var fromKey: DeleteOptions { DeleteOptions(range: .fromKey) }

    public func request(_ key: some KeelBytes) -> Etcdserverpb.DeleteRangeRequest {
        var r = Etcdserverpb.DeleteRangeRequest()
        (r.key, r.rangeEnd) = range.resolve(key.keelBytes)
        r.prevKv = prevKV
        return r
    }
}

/// One comparison of a txn: `Compare.value("k", .equal, "v")`, `Compare.version("k", .greater, 0)`,
/// `Compare.createRevision("k", .equal, 0)` (the key does not exist), `.modRevision`, `.lease`;
/// `.range(.prefix)` compares every key of the range.
public struct Compare: Sendable, Hashable {
    public typealias Result = Etcdserverpb.Compare.CompareResult
    public var raw: Etcdserverpb.Compare

    init(_ key: some KeelBytes, _ result: Result, _ target: Etcdserverpb.Compare.CompareTarget,
         _ union: Etcdserverpb.Compare.OneOf_TargetUnion) {
        raw = Etcdserverpb.Compare()
        raw.key = key.keelBytes
        raw.result = result
        raw.target = target
        raw.targetUnion = union
    }

    public static func value(_ key: some KeelBytes, _ result: Result, _ value: some KeelBytes) -> Compare {
        Compare(key, result, .value, .value(value.keelBytes))
    }
    public static func version(_ key: some KeelBytes, _ result: Result, _ version: Int64) -> Compare {
        Compare(key, result, .version, .version(version))
    }
    public static func createRevision(_ key: some KeelBytes, _ result: Result, _ revision: Int64) -> Compare {
        Compare(key, result, .create, .createRevision(revision))
    }
    public static func modRevision(_ key: some KeelBytes, _ result: Result, _ revision: Int64) -> Compare {
        Compare(key, result, .mod, .modRevision(revision))
    }
    public static func lease(_ key: some KeelBytes, _ result: Result, _ lease: Int64) -> Compare {
        Compare(key, result, .lease, .lease(lease))
    }

    /// Compare every key of a range (etcd's range_end on Compare).
    public func range(_ range: KeyRange) -> Compare {
        var c = self
        (c.raw.key, c.raw.rangeEnd) = range.resolve(raw.key)
        return c
    }
}

/// One operation of a txn (or a standalone request via `KeelClient.do`).
public struct Op: Sendable, Hashable {
    public var raw: Etcdserverpb.RequestOp

    public static func get(_ key: some KeelBytes, _ options: GetOptions = GetOptions()) -> Op {
        var o = Etcdserverpb.RequestOp()
        o.request = .requestRange(options.request(key))
        return Op(raw: o)
    }
    public static func put(_ key: some KeelBytes, _ value: some KeelBytes, _ options: PutOptions = PutOptions()) -> Op {
        var o = Etcdserverpb.RequestOp()
        o.request = .requestPut(options.request(key, value))
        return Op(raw: o)
    }
    public static func delete(_ key: some KeelBytes, _ options: DeleteOptions = DeleteOptions()) -> Op {
        var o = Etcdserverpb.RequestOp()
        o.request = .requestDeleteRange(options.request(key))
        return Op(raw: o)
    }
    /// A nested txn (etcd 3.3+).
    public static func txn(_ compares: [Compare], then: [Op], else otherwise: [Op] = []) -> Op {
        var o = Etcdserverpb.RequestOp()
        o.request = .requestTxn(Txn.request(compares, then, otherwise))
        return Op(raw: o)
    }

    /// True when the op changes nothing (a range, or a txn made only of ranges).
    var isReadOnly: Bool {
        switch raw.request {
        case .requestRange: return true
        case .requestTxn(let t): return (t.success + t.failure).allSatisfy { Op(raw: $0).isReadOnly }
        default: return false
        }
    }
}

/// A txn builder as clientv3's: `client.txn().when(...).then(...).else(...).commit()`.
public struct Txn: Sendable {
    let client: KeelClient
    public var compares: [Compare] = []
    public var success: [Op] = []
    public var failure: [Op] = []

    public func when(_ c: Compare...) -> Txn { var t = self; t.compares += c; return t }
    public func when(_ c: [Compare]) -> Txn { var t = self; t.compares += c; return t }
    public func then(_ ops: Op...) -> Txn { var t = self; t.success += ops; return t }
    public func then(_ ops: [Op]) -> Txn { var t = self; t.success += ops; return t }
    public func `else`(_ ops: Op...) -> Txn { var t = self; t.failure += ops; return t }
    public func `else`(_ ops: [Op]) -> Txn { var t = self; t.failure += ops; return t }

    public var request: Etcdserverpb.TxnRequest { Txn.request(compares, success, failure) }

    static func request(_ c: [Compare], _ s: [Op], _ f: [Op]) -> Etcdserverpb.TxnRequest {
        var r = Etcdserverpb.TxnRequest()
        r.compare = c.map(\.raw)
        r.success = s.map(\.raw)
        r.failure = f.map(\.raw)
        return r
    }

    /// Sends the txn. A txn that only reads is retried on another endpoint; one that writes is not.
    public func commit(timeout: Duration? = nil) async throws(KeelClientError) -> Etcdserverpb.TxnResponse {
        let readOnly = (success + failure).allSatisfy(\.isReadOnly)
        return try await client.call(Etcdserverpb.KV.txn, request, idempotent: readOnly, timeout: timeout,
                                     write: !readOnly)
    }
}

extension KeelClient {
    /// Range with a ready-made request.
    public func range(_ r: Etcdserverpb.RangeRequest, timeout: Duration? = nil) async throws(KeelClientError)
        -> Etcdserverpb.RangeResponse {
        try await call(Etcdserverpb.KV.range, r, idempotent: true, timeout: timeout)
    }

    /// Get a key or a range: `get("k")`, `get("dir/", .prefix)`, `get("a", GetOptions.fromKey.limit(5).revision(7))`.
    public func get(_ key: some KeelBytes, _ options: GetOptions = GetOptions(), timeout: Duration? = nil)
        async throws(KeelClientError) -> Etcdserverpb.RangeResponse {
        try await range(options.request(key), timeout: timeout)
    }

    @discardableResult
    public func put(_ key: some KeelBytes, _ value: some KeelBytes, _ options: PutOptions = PutOptions(),
                    timeout: Duration? = nil) async throws(KeelClientError) -> Etcdserverpb.PutResponse {
        try await call(Etcdserverpb.KV.put, options.request(key, value), idempotent: false, timeout: timeout, write: true)
    }

    /// Put with a lease (the first API's spelling; `put(k, v, PutOptions(lease:prevKV:))` says the same).
    @discardableResult
    public func put(_ key: String, _ value: String, lease: Int64, prevKV: Bool = false) async throws(KeelClientError)
        -> Etcdserverpb.PutResponse {
        try await put(key, value, PutOptions(lease: lease, prevKV: prevKV))
    }

    @discardableResult
    public func delete(_ key: some KeelBytes, _ options: DeleteOptions = DeleteOptions(), timeout: Duration? = nil)
        async throws(KeelClientError) -> Etcdserverpb.DeleteRangeResponse {
        try await deleteRange(options.request(key), timeout: timeout)
    }

    /// DeleteRange with a ready-made request.
    @discardableResult
    public func deleteRange(_ r: Etcdserverpb.DeleteRangeRequest, timeout: Duration? = nil)
        async throws(KeelClientError) -> Etcdserverpb.DeleteRangeResponse {
        try await call(Etcdserverpb.KV.deleteRange, r, idempotent: false, timeout: timeout, write: true)
    }

    /// A txn builder.
    public func txn() -> Txn { Txn(client: self) }

    /// Txn with a ready-made request (not resent once it may have been sent, unless it only reads).
    public func txn(_ r: Etcdserverpb.TxnRequest, timeout: Duration? = nil) async throws(KeelClientError)
        -> Etcdserverpb.TxnResponse {
        let readOnly = (r.success + r.failure).allSatisfy { Op(raw: $0).isReadOnly }
        return try await call(Etcdserverpb.KV.txn, r, idempotent: readOnly, timeout: timeout, write: !readOnly)
    }

    /// Compacts the history up to `revision`; `physical` waits until the backend has removed it.
    @discardableResult
    public func compact(_ revision: Int64, physical: Bool = false, timeout: Duration? = nil)
        async throws(KeelClientError) -> Etcdserverpb.CompactionResponse {
        var r = Etcdserverpb.CompactionRequest()
        r.revision = revision
        r.physical = physical
        // Not resent: a second compaction of the same revision fails with "compacted", hiding the first's success.
        return try await call(Etcdserverpb.KV.compact, r, idempotent: false, timeout: timeout, write: true)
    }
}
