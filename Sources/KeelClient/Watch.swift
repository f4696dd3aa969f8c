// Watch as an AsyncSequence, with clientv3's resume rule: after a failure (connection lost, endpoint down,
// stream ended) the watch is created again on the next endpoint from the revision after the last one it
// reported, so the caller sees no gap and no duplicate.
//
//     let w = client.watch("dir/", WatchOptions(range: .prefix, prevKV: true))
//     for try await r in w { for e in r.events { ... } }       // throws WatchError.compacted(...) etc.
//
// Resume revision (etcd's serveSubstream rule): a watch created "from now" (start 0) resumes at the header
// revision of its created response; after events at the last event's revision + 1; after a progress
// notification at its header revision + 1. Events at or below the last delivered revision are dropped.
import GRPC
import KeelAPI

public struct WatchOptions: Sendable, Hashable {
    public var range: KeyRange
    /// First revision to report (0: changes after the watch is created).
    public var startRevision: Int64
    /// Events carry the key-value before the change.
    public var prevKV: Bool
    /// The server sends empty responses (progress notifications) while the watch is idle.
    public var progressNotify: Bool
    /// Leave out PUT events / DELETE events.
    public var noPut: Bool
    public var noDelete: Bool
    /// Deliver the "created" response as the first element (clientv3's WithCreatedNotify).
    public var createdNotify: Bool
    /// Responses buffered for a slow consumer before the stream applies back-pressure.
    public var bufferSize: Int
    /// clientv3's WithRequireLeader: the member ends the stream ("etcdserver: no leader") once it has had no
    /// leader for a few election timeouts (e.g. it is partitioned), and the watch resumes on another member.
    public var requireLeader: Bool

    public init(range: KeyRange = .single, startRevision: Int64 = 0, prevKV: Bool = false, progressNotify: Bool = false,
                noPut: Bool = false, noDelete: Bool = false, createdNotify: Bool = false, bufferSize: Int = 64,
                requireLeader: Bool = false) {
        self.range = range
        self.startRevision = startRevision
        self.prevKV = prevKV
        self.progressNotify = progressNotify
        self.noPut = noPut
        self.noDelete = noDelete
        self.createdNotify = createdNotify
        self.bufferSize = bufferSize
        self.requireLeader = requireLeader
    }

    public static var prefix: WatchOptions { WatchOptions(range: .prefix) }
}

/// One response of a watch: events (in revision order), or a progress notification (no events), or the
/// created notification (`isCreated`, only with `createdNotify`).
public struct WatchResponse: Sendable, Hashable {
    public var header: Etcdserverpb.ResponseHeader
    public var events: [Mvccpb.Event]
    public var isCreated: Bool
    /// The endpoint whose stream delivered it.
    public var endpoint: String
    public var isProgressNotify: Bool { events.isEmpty && !isCreated }
}

public enum WatchError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The start (or resume) revision was compacted: etcd's ErrCompacted, with the compacted revision.
    case compacted(compactRevision: Int64)
    /// The server canceled the watch for another reason (its cancel_reason).
    case canceled(reason: String)
    /// The server refused the watch with a status that another endpoint would not change (e.g. permission).
    case server(code: GRPCStatusCode, message: String)

    public var description: String {
        switch self {
        case .compacted(let r): return "\(EtcdError.compacted.rawValue) (compact revision \(r))"
        case .canceled(let r): return "etcdserver: watch canceled: \(r)"
        case .server(let c, let m): return "\(c): \(m)"
        }
    }
}

/// The stream of a watch. Iterate it (once); `cancel()` ends it, as do dropping it, cancelling the
/// iterating task, and `client.close()`. The iteration throws `WatchError` (typed).
public final class Watch: AsyncSequence, Sendable {
    public typealias Element = WatchResponse
    let channel: BoundedChannel<WatchResponse>
    let control: WatchControl
    let task: Task<Void, Never>?

    init(client: KeelClient, key: [UInt8], options: WatchOptions) {
        let channel = BoundedChannel<WatchResponse>(capacity: options.bufferSize)
        let control = WatchControl()
        self.channel = channel
        self.control = control
        let loop = WatchLoop(client: client, key: key, options: options, channel: channel, control: control)
        task = client.spawn { await loop.run() }
        if task == nil { Task { await channel.finish(WatchError.canceled(reason: "client closed")) } }
    }

    deinit {
        task?.cancel()
        let ch = channel
        Task { await ch.abandon() }
    }

    /// Cancels the watch: asks the server to cancel it (WatchCancelRequest) and waits up to `timeout` for its
    /// confirmation, then closes the stream. True when the server confirmed.
    @discardableResult
    public func cancel(timeout: Duration = .seconds(5)) async -> Bool {
        let sent = await control.requestCancel()
        if sent, let task {
            await withTaskGroup(of: Void.self) { g in
                g.addTask { await task.value }
                g.addTask { try? await Task.sleep(for: timeout) }
                await g.next()
                g.cancelAll()
            }
        }
        task?.cancel()
        await task?.value
        await channel.finish()
        return await control.confirmed
    }

    /// How many watch streams this watch has opened (1 + the times it was resumed after a failure).
    public var streamsOpened: Int { get async { await control.streams } }

    /// Asks the server for a progress notification (WatchProgressRequest) on the current stream; false when
    /// no stream is up at the moment.
    @discardableResult
    public func requestProgress() async -> Bool {
        await control.requestProgress()
    }

    /// The next response (nil once the watch ended normally); what iterating does. Cancelling the calling
    /// task ends the watch (its stream is reset, so the server drops it) and returns nil.
    public func next() async throws(WatchError) -> WatchResponse? {
        let ch = channel
        let task = self.task
        do {
            return try await withTaskCancellationHandler {
                try await ch.next()
            } onCancel: {
                task?.cancel()
            }
        } catch let e as WatchError {
            throw e
        } catch {
            // The channel only ends with a WatchError; anything else would be a bug here: reported, not trapped.
            throw .canceled(reason: "\(error)")
        }
    }

    public typealias Failure = WatchError

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(watch: self) }

    public struct AsyncIterator: AsyncIteratorProtocol, Sendable {
        public typealias Failure = WatchError
        let watch: Watch
        public mutating func next() async throws(WatchError) -> WatchResponse? { try await watch.next() }
        public mutating func next(isolation actor: isolated (any Actor)?) async throws(WatchError) -> WatchResponse? {
            try await watch.next()
        }
    }
}

/// The live stream's writer and watch ID, for cancel and progress requests from the caller's task.
actor WatchControl {
    var writer: RequestWriter<Etcdserverpb.WatchRequest>?
    var generation = 0
    var watchID: Int64 = -1
    var cancelRequested = false
    var confirmed = false
    var streams = 0

    /// A new stream is up; returns its generation (detach only clears the stream it belongs to).
    func attach(_ w: RequestWriter<Etcdserverpb.WatchRequest>) -> Int {
        generation += 1
        streams += 1
        writer = w
        watchID = -1
        return generation
    }
    func detach(_ g: Int) {
        guard g == generation else { return }
        writer = nil
        watchID = -1
    }
    func created(_ id: Int64) { watchID = id }
    func confirm() { confirmed = true }

    func requestCancel() async -> Bool {
        cancelRequested = true
        guard let writer, watchID >= 0 else { return false }
        var c = Etcdserverpb.WatchCancelRequest()
        c.watchId = watchID
        var r = Etcdserverpb.WatchRequest()
        r.requestUnion = .cancelRequest(c)
        do { try await writer.send(r) } catch { return false }
        return true
    }

    func requestProgress() async -> Bool {
        guard let writer, watchID >= 0 else { return false }
        var r = Etcdserverpb.WatchRequest()
        r.requestUnion = .progressRequest(Etcdserverpb.WatchProgressRequest())
        do { try await writer.send(r) } catch { return false }
        return true
    }
}

/// The background task of one watch.
struct WatchLoop: Sendable {
    let client: KeelClient
    let key: [UInt8]
    let options: WatchOptions
    let channel: BoundedChannel<WatchResponse>
    let control: WatchControl

    /// How one stream ended. Errors are returned, not thrown, from the call's body: GRPCClient reports a
    /// body's error as the call's own status (CANCELLED) when it resets the stream.
    enum Outcome { case retry, done, failed(WatchError) }

    func run() async {
        var nextRev = options.startRevision
        var lastDelivered: Int64 = 0
        var createdDelivered = false
        var delay = Duration.milliseconds(50)
        var failure: WatchError?
        attempts: while !Task.isCancelled {
            let i = client.order()[0]
            let ep = client.endpoints[i]
            var outcome = Outcome.retry
            do {
                try await client.dial(i)
                let call = CallOptions(metadata: options.requireLeader ? [("hasleader", "true")] : [])
                outcome = try await ep.client.bidirectionalStreaming(Etcdserverpb.Watch.watch, options: call) {
                    writer, responses in
                    var create = Etcdserverpb.WatchCreateRequest()
                    (create.key, create.rangeEnd) = options.range.resolve(key)
                    create.startRevision = nextRev
                    create.prevKv = options.prevKV
                    create.progressNotify = options.progressNotify
                    if options.noPut { create.filters.append(.noput) }
                    if options.noDelete { create.filters.append(.nodelete) }
                    var req = Etcdserverpb.WatchRequest()
                    req.requestUnion = .createRequest(create)
                    let generation = await control.attach(writer)
                    defer { Task { await control.detach(generation) } }
                    if await control.cancelRequested { return .done }
                    try await writer.send(req)
                    for try await resp in responses {
                        let header = resp.header ?? Etcdserverpb.ResponseHeader()
                        if resp.canceled {
                            if resp.compactRevision > 0 { return .failed(.compacted(compactRevision: resp.compactRevision)) }
                            if await control.cancelRequested {
                                await control.confirm()
                                return .done
                            }
                            return .failed(.canceled(reason: resp.cancelReason))
                        }
                        if resp.created {
                            await control.created(resp.watchId)
                            client.mark(i, healthy: true)
                            delay = .milliseconds(50)
                            if nextRev == 0 { nextRev = max(header.revision, 1) }
                            if options.createdNotify && !createdDelivered {
                                createdDelivered = true
                                let r = WatchResponse(header: header, events: [], isCreated: true, endpoint: ep.address)
                                guard await channel.send(r) else { return .done }
                            }
                            continue
                        }
                        if resp.events.isEmpty {
                            nextRev = max(nextRev, header.revision + 1)
                            let r = WatchResponse(header: header, events: [], isCreated: false, endpoint: ep.address)
                            guard await channel.send(r) else { return .done }
                            continue
                        }
                        let lastRev = resp.events.last?.kv?.modRevision ?? 0
                        nextRev = max(nextRev, lastRev + 1)
                        let fresh = resp.events.filter { ($0.kv?.modRevision ?? 0) > lastDelivered }
                        guard !fresh.isEmpty else { continue }
                        lastDelivered = fresh.last?.kv?.modRevision ?? lastDelivered
                        let r = WatchResponse(header: header, events: fresh, isCreated: false, endpoint: ep.address)
                        guard await channel.send(r) else { return .done }
                    }
                    return .retry   // the server ended the stream: create the watch again
                }
            } catch let st as GRPCStatus {
                if Task.isCancelled { break attempts }
                switch st.code {
                case .invalidArgument, .permissionDenied, .unauthenticated, .unimplemented, .failedPrecondition,
                     .outOfRange:
                    failure = .server(code: st.code, message: st.message)
                    break attempts
                default:
                    client.mark(i, healthy: false)
                }
            } catch {
                if Task.isCancelled { break attempts }
                client.mark(i, healthy: false)
            }
            switch outcome {
            case .done: break attempts
            case .failed(let e):
                failure = e
                break attempts
            case .retry: break
            }
            if await control.cancelRequested { break attempts }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(1))
        }
        await channel.finish(failure)
    }
}

extension KeelClient {
    /// Watches a key or range (see `WatchOptions`). The watch starts at once; iterate the result.
    public func watch(_ key: some KeelBytes, _ options: WatchOptions = WatchOptions()) -> Watch {
        Watch(client: self, key: key.keelBytes, options: options)
    }
}
