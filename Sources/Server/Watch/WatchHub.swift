// WatchHub: every watcher of the server, fed by the apply loop, with etcd's synced / unsynced
// (victim) watcher semantics.
//
// How SERVER wires it in (KeelServer does this through WatchLeaseRuntime, WatchLeaseRuntime.swift,
// held by ServerExtras; the steps it performs are:)
//   let hub = WatchHub(source: mvccStore, options: WatchHubOptions())   // MVCCStore conforms to WatchEventSource
//   let hubTask = Task { await hub.run() }          // ingest loop + catch-up retry + progress-notify timer
//   services: [..., WatchService(hub: hub, header: { server.responseHeader() }, maxRequestBytes: cfg.maxRequestBytes)]
//   apply loop, after each applied batch:            hub.publish(events: batch.events, revision: revisionAfterBatch)
//       (before the batch's LMDB group commit: see "history" below. Synchronous, never blocks,
//        never waits for watchers. Publish batches that produced events:
//        a higher revision without events is taken as a gap and makes every watcher re-read history,
//        which is also what happens, correctly, after a snapshot install replaced the store's data)
//   after each LMDB commit:                           hub.committed()
//   after a compaction is applied:                    hub.compacted(revision: rev)
//   shutdown:                                          await hub.shutdown(); hubTask.cancel()
//   The header closure fills cluster_id / member_id / raft_term; the hub sets `revision` itself.
//
// Semantics (etcd 3.4/3.5, mvcc/watchable_store.go + api/v3rpc/watch.go)
//   - A watcher wants every event with revision >= nextRev in its key range. It is *synced* when
//     nextRev > lastRev (the last revision the hub has been fed): then it gets events straight from
//     `publish`. Otherwise it is *unsynced* and reads store history (`events(from:to:...)`) up to
//     lastRev, in chunks, until it is synced again. History: the apply loop publishes a batch
//     before LMDB commits it (group commit), so the store may not hold the last published
//     revisions yet; an unsynced watcher reads what is committed, then waits for the commit: it
//     asks for one (`setCommitRequest`) and goes on at `committed()` (etcd's unsynced watchers
//     wait for its next 100 ms sync the same way). Because the hub actor does both on one executor,
//     and history is read only up to lastRev while later revisions come only through publish,
//     a watcher never sees a gap or a duplicate.
//   - Each gRPC watch stream has one FIFO outbox (created/canceled/progress/events responses in the
//     order they were decided). Events responses are bounded by `streamBufferCapacity`: when a
//     stream's outbox is full, a synced watcher that matched the new events becomes unsynced (etcd's
//     victim) and later catches up from history; the apply loop and other streams never wait.
//   - `publish` only yields into a bounded AsyncStream (newest kept). If batches were dropped the
//     hub sees a revision gap and moves every synced watcher to unsynced: they catch up from the
//     store once it has committed everything published.
//   - Watchers whose nextRev is below the compacted revision get etcd's compacted response
//     (canceled, compact_revision set, header revision 0) and are removed.
import KeelAPI
import Logging
import Synchronization

/// What the hub needs from the MVCC store (MVCCStore conforms, see WatchStore.swift).
public protocol WatchEventSource: Sendable {
    /// Current store revision.
    var watchRevision: Int64 { get }
    /// Compacted revision (0 = never).
    var watchCompactedRevision: Int64 { get }
    /// Events with start <= revision <= end, for key / [key, rangeEnd) with etcd's range-end
    /// conventions (empty = single key, "\0" = from key), in revision order. `limit` > 0: stop after
    /// that many events, but only at the end of a revision (a revision is never split).
    /// Throws .compacted when start < the compacted revision (etcd's `minRev < compactRev`).
    func watchEvents(from start: Int64, to end: Int64, key: [UInt8], rangeEnd: [UInt8], prevKV: Bool,
                     limit: Int) throws(WatchHistoryError) -> [Mvccpb.Event]
}

public enum WatchHistoryError: Error, Sendable, Equatable {
    case compacted(compactRevision: Int64)
    case failed(String)
}

public struct WatchHubOptions: Sendable {
    /// etcd's progress report interval (`--experimental-watch-progress-notify-interval`, 10 min).
    public var progressNotifyInterval: Duration = .seconds(600)
    /// Events responses waiting per stream before matching watchers fall back to history
    /// (etcd's chanBufLen is 128).
    public var streamBufferCapacity: Int = 128
    /// Events per history read of one unsynced watcher.
    public var historyBatchLimit: Int = 1000
    /// Publish batches waiting for the hub (newest kept; a dropped batch makes watchers catch up).
    public var publishQueueCapacity: Int = 4096
    /// How often unsynced watchers are retried even when nothing else wakes them (etcd: 100 ms).
    public var syncRetryInterval: Duration = .milliseconds(100)
    public init() {}
}

/// One response leaving a watch stream's outbox. `headerRevision` goes into header.revision.
public struct WatchOutgoing: Sendable {
    public var response: Etcdserverpb.WatchResponse
    /// The watcher asked for fragmented responses.
    public var fragment: Bool
}

/// etcd's mvcc watcher errors (their text is what cancel_reason carries).
public enum WatchCreateError: Error, Sendable, Equatable {
    case duplicateID
    case emptyRange
    public var message: String {
        switch self {
        case .duplicateID: "mvcc: duplicate watch ID provided on the WatchStream"
        case .emptyRange: "mvcc: watcher range is empty"
        }
    }
}

public actor WatchHub {
    // MARK: state (all confined to the actor)
    final class Watcher {
        let stream: UInt64
        let id: Int64
        let key: [UInt8]
        /// nil: single key; []: from key; else exclusive end.
        let end: [UInt8]?
        let noPut: Bool, noDelete: Bool, prevKV: Bool, progressNotify: Bool, fragment: Bool
        /// First revision this watcher has not been given yet (while unsynced), or the floor it
        /// starts at (while synced: effective position is max(nextRev, lastRev + 1)).
        var nextRev: Int64
        var synced = false
        /// No events sent since the last progress tick (etcd's sws.progress[id]).
        var quiet = true
        init(stream: UInt64, id: Int64, key: [UInt8], end: [UInt8]?, noPut: Bool, noDelete: Bool,
             prevKV: Bool, progressNotify: Bool, fragment: Bool, nextRev: Int64) {
            self.stream = stream; self.id = id; self.key = key; self.end = end
            self.noPut = noPut; self.noDelete = noDelete; self.prevKV = prevKV
            self.progressNotify = progressNotify; self.fragment = fragment; self.nextRev = nextRev
        }
        func contains(_ k: [UInt8]) -> Bool {
            guard let end else { return k == key }
            if lexLess(k, key) { return false }
            return end.isEmpty || lexLess(k, end)
        }
        var storeRangeEnd: [UInt8] {
            guard let end else { return [] }
            return end.isEmpty ? [0] : end
        }
    }

    struct WKey: Hashable { let stream: UInt64; let id: Int64 }

    final class Stream {
        var watchers: [Int64: Watcher] = [:]
        var nextAutoID: Int64 = 0
        var outbox = FIFO<WatchOutgoing>()
        /// Events responses currently in the outbox (only these are bounded; control responses
        /// are bounded by the request loop waiting for room).
        var eventResponses = 0
        var unsynced: [Int64] = []        // ids, round-robin order
        var waiter: CheckedContinuation<WatchOutgoing?, Never>?
        var roomWaiters: [CheckedContinuation<Void, Never>] = []
        var progressAllPending = false
        var closed = false
    }

    let source: any WatchEventSource
    let options: WatchHubOptions
    let logger: Logger
    private var streams: [UInt64: Stream] = [:]
    private var nextStreamID: UInt64 = 1
    private var singleKeyIndex: [[UInt8]: [WKey: Watcher]] = [:]
    /// Streams with unsynced watchers or a pending progress request (so publish need not scan all).
    private var needsSync: Set<UInt64> = []
    private var rangeWatchers: [WKey: Watcher] = [:]
    /// Last revision fed to the hub (synced watchers have everything up to it in their outbox).
    private(set) var lastRev: Int64
    private(set) var compactRev: Int64
    private var isShutDown = false
    /// A watcher waits for history the store has not committed yet: `committed()` then re-syncs.
    private nonisolated let waitingForCommit = Atomic<Bool>(false)
    /// Asks the apply loop to commit its group-commit transaction now (set by the server).
    private var requestCommit: (@Sendable () -> Void)?
    /// Catch-ups that found the history they need not committed yet (tests, metrics).
    private(set) var commitWaits = 0

    private nonisolated let feed: AsyncStream<(events: [Mvccpb.Event], revision: Int64, prevValues: Bool)>
    private nonisolated let feedIn: AsyncStream<(events: [Mvccpb.Event], revision: Int64, prevValues: Bool)>.Continuation
    /// Watchers that asked for prev_kv (an upper bound is enough: `deliver` sends a watcher that
    /// needs prevKv values a batch lacks to history).
    private nonisolated let prevKVWatchers = Atomic<Int>(0)

    public init(source: any WatchEventSource, options: WatchHubOptions = WatchHubOptions(),
                logger: Logger = Logger(label: "keel.watch")) {
        self.source = source
        self.options = options
        self.logger = logger
        self.lastRev = source.watchRevision
        self.compactRev = source.watchCompactedRevision
        let (s, c) = AsyncStream<(events: [Mvccpb.Event], revision: Int64, prevValues: Bool)>.makeStream(
            bufferingPolicy: .bufferingNewest(max(1, options.publishQueueCapacity)))
        self.feed = s
        self.feedIn = c
    }

    // MARK: feed (apply loop)

    /// Called by the apply loop right after it applied a batch (before the LMDB commit): `events`
    /// are the batch's events (prevKv filled; without their value in put events when `prevValues`
    /// is false), `revision` the store revision after it. Never blocks.
    public nonisolated func publish(events: [Mvccpb.Event], revision: Int64, prevValues: Bool = true) {
        feedIn.yield((events, revision, prevValues))
    }

    /// Whether some watcher asked for prev_kv: the apply loop then gives put events their
    /// previous value (else a batch's events may lack it; such watchers read those from history).
    public nonisolated var wantsPrevValues: Bool { prevKVWatchers.load(ordering: .relaxed) > 0 }

    private func counted(_ w: Watcher, _ delta: Int) {
        if w.prevKV { prevKVWatchers.add(delta, ordering: .relaxed) }
    }

    /// Called by the apply loop after each LMDB commit: watchers waiting for history it holds now
    /// catch up. Cheap when none waits (one atomic exchange). Never blocks.
    public nonisolated func committed() {
        guard waitingForCommit.exchange(false, ordering: .acquiringAndReleasing) else { return }
        Task { await self.syncAll() }
    }

    /// How the hub asks for a commit when a watcher needs history that is not committed yet.
    public func setCommitRequest(_ request: @escaping @Sendable () -> Void) { requestCommit = request }

    /// Called after a compaction is applied. Unsynced watchers below it get the compacted response.
    public nonisolated func compacted(revision: Int64) {
        Task { await self.noteCompaction(revision) }
    }

    /// Runs the ingest loop, the catch-up retry timer and the progress-notify timer until cancelled
    /// or `shutdown()`.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [feed] in
                for await batch in feed {
                    await self.deliver(events: batch.events, revision: batch.revision, prevValues: batch.prevValues)
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: self.options.syncRetryInterval)
                    if await self.tickSync() == false { return }
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: self.options.progressNotifyInterval)
                    if await self.progressTick() == false { return }
                }
            }
            await group.next()
            group.cancelAll()
        }
    }

    /// Ends every stream (their senders see the end) and stops `run()`.
    public func shutdown() {
        isShutDown = true
        feedIn.finish()
        for (id, _) in streams { closeStream(id) }
    }

    func noteCompaction(_ revision: Int64) {
        if revision > compactRev { compactRev = revision }
        syncAll()
    }

    func tickSync() -> Bool {
        if isShutDown { return false }
        syncAll()
        return true
    }

    /// Applies one published batch (also used directly by tests). A watcher with prev_kv that a
    /// batch without prevKv values (`prevValues` false) has events for reads them from history.
    func deliver(events: [Mvccpb.Event], revision: Int64, prevValues: Bool = true) {
        if isShutDown || revision <= lastRev { return }
        let firstRev = events.first.map(eventRevision) ?? Int64.max
        if firstRev != lastRev + 1 {
            // Something between lastRev and this batch never reached us (dropped from the feed):
            // everyone catches up from the store, which has it all.
            for (_, w) in rangeWatchers { makeUnsynced(w, deliveredThrough: lastRev) }
            for (_, ws) in singleKeyIndex { for (_, w) in ws { makeUnsynced(w, deliveredThrough: lastRev) } }
            lastRev = revision
            syncAll()
            return
        }
        let base = lastRev
        lastRev = revision
        var matched: [WKey: (Watcher, [Mvccpb.Event])] = [:]
        for ev in events {
            let rev = eventRevision(ev)
            guard rev > base else { continue }
            let key = ev.kv?.key ?? []
            if let ws = singleKeyIndex[key] {
                for (k, w) in ws { add(ev, rev, w, k, &matched) }
            }
            for (k, w) in rangeWatchers where w.contains(key) { add(ev, rev, w, k, &matched) }
        }
        var touched: Set<UInt64> = []
        for (_, (w, evs)) in matched {
            guard let s = streams[w.stream] else { continue }
            if s.eventResponses >= options.streamBufferCapacity || (w.prevKV && !prevValues) {
                // victim (or the batch lacks the prevKv values it wants): falls back to history
                // from the first revision it did not get
                makeUnsynced(w, deliveredThrough: base)
                touched.insert(w.stream)
                continue
            }
            enqueueEvents(s, w, evs, headerRevision: revision)
        }
        touched.formUnion(needsSync)
        for id in touched { syncStream(id) }
    }

    private func add(_ ev: Mvccpb.Event, _ rev: Int64, _ w: Watcher, _ k: WKey,
                     _ matched: inout [WKey: (Watcher, [Mvccpb.Event])]) {
        guard rev >= w.nextRev, let e = filtered(ev, w) else { return }
        if matched[k] == nil { matched[k] = (w, [e]) } else { matched[k]!.1.append(e) }
    }

    private func filtered(_ ev: Mvccpb.Event, _ w: Watcher) -> Mvccpb.Event? {
        if ev.type == .put && w.noPut { return nil }
        if ev.type == .delete && w.noDelete { return nil }
        if !w.prevKV && ev.prevKv != nil {
            var e = ev
            e.prevKv = nil
            return e
        }
        return ev
    }

    // MARK: streams (WatchService)

    func openStream() -> UInt64 {
        let id = nextStreamID
        nextStreamID += 1
        let s = Stream()
        if isShutDown { s.closed = true }
        streams[id] = s
        return id
    }

    func closeStream(_ id: UInt64) {
        guard let s = streams.removeValue(forKey: id) else { return }
        needsSync.remove(id)
        for (_, w) in s.watchers { unindex(w); counted(w, -1) }
        s.watchers = [:]
        s.closed = true
        s.waiter?.resume(returning: nil)
        s.waiter = nil
        for r in s.roomWaiters { r.resume() }
        s.roomWaiters = []
    }

    /// The next response to send on a stream; nil once the stream is closed.
    func next(_ id: UInt64) async -> WatchOutgoing? {
        guard let s = streams[id] else { return nil }
        if let item = take(s, id) { return item }
        if s.closed { return nil }
        return await withCheckedContinuation { c in
            if s.closed { c.resume(returning: nil) } else { s.waiter = c }
        }
    }

    /// Everything queued on a stream (at most `max`), waiting for at least one; nil once the
    /// stream is closed. One actor hop for a burst of responses (a put seen by many watchers of
    /// one stream) instead of one per response.
    func nextBatch(_ id: UInt64, max: Int = 64) async -> [WatchOutgoing]? {
        guard let first = await next(id) else { return nil }
        guard let s = streams[id] else { return [first] }
        var out = [first]
        while out.count < max, let item = take(s, id) { out.append(item) }
        return out
    }

    private func take(_ s: Stream, _ id: UInt64) -> WatchOutgoing? {
        guard let item = s.outbox.pop() else { return nil }
        if isEventsResponse(item.response) {
            s.eventResponses -= 1
            if s.eventResponses <= options.streamBufferCapacity / 2 && !s.unsynced.isEmpty { syncStream(id) }
        }
        if s.outbox.count <= options.streamBufferCapacity && !s.roomWaiters.isEmpty {
            let ws = s.roomWaiters
            s.roomWaiters = []
            for r in ws { r.resume() }
        }
        return item
    }

    /// Waits while the stream's outbox holds more than its capacity (the request loop calls it, so
    /// a client that floods control requests without reading is slowed down, as etcd's ctrlStream).
    func waitForRoom(_ id: UInt64) async {
        guard let s = streams[id], !s.closed, s.outbox.count > options.streamBufferCapacity else { return }
        await withCheckedContinuation { c in s.roomWaiters.append(c) }
    }

    private func push(_ s: Stream, _ item: WatchOutgoing) {
        if s.closed { return }
        if isEventsResponse(item.response) { s.eventResponses += 1 }
        if let w = s.waiter {
            s.waiter = nil
            if isEventsResponse(item.response) { s.eventResponses -= 1 }
            w.resume(returning: item)
        } else {
            s.outbox.push(item)
        }
    }

    private func isEventsResponse(_ r: Etcdserverpb.WatchResponse) -> Bool {
        !r.events.isEmpty && !r.created && !r.canceled
    }

    private func response(_ watchID: Int64, _ headerRevision: Int64) -> Etcdserverpb.WatchResponse {
        var r = Etcdserverpb.WatchResponse()
        var h = Etcdserverpb.ResponseHeader()
        h.revision = headerRevision
        r.header = h
        r.watchId = watchID
        return r
    }

    private func enqueueEvents(_ s: Stream, _ w: Watcher, _ evs: [Mvccpb.Event], headerRevision: Int64) {
        var r = response(w.id, headerRevision)
        r.events = evs
        w.quiet = false
        push(s, WatchOutgoing(response: r, fragment: w.fragment))
    }

    /// WatchCreateRequest as etcd's recvLoop + watchStream.Watch. Always queues the created
    /// response (canceled with cancel_reason on error); returns the watch id or the error.
    @discardableResult
    func create(stream id: UInt64, _ req: Etcdserverpb.WatchCreateRequest) -> Result<Int64, WatchCreateError> {
        guard let s = streams[id], !s.closed else { return .failure(.duplicateID) }
        var key = req.key
        if key.isEmpty { key = [0] }                       // \x00 is the smallest key
        var end: [UInt8]? = req.rangeEnd.isEmpty ? nil : req.rangeEnd
        if end == [0] { end = [] }                         // >= key
        // "From now" is after the store's current revision, which can be ahead of what the feed has
        // brought here yet (the apply loop publishes after its commit; the ingest task delivers it
        // a moment later): a client told of a put must not get that put from a watch created after.
        // Events up to it that are still in the feed are skipped for this watcher (nextRev).
        let wsrev = max(lastRev, source.watchRevision)
        let start = req.startRevision == 0 ? wsrev + 1 : req.startRevision
        var result: Result<Int64, WatchCreateError>
        if let e = end, !e.isEmpty, !lexLess(key, e) {
            result = .failure(.emptyRange)
        } else if req.watchId != 0 {
            result = s.watchers[req.watchId] == nil ? .success(req.watchId) : .failure(.duplicateID)
        } else {
            while s.watchers[s.nextAutoID] != nil { s.nextAutoID += 1 }
            result = .success(s.nextAutoID)
            s.nextAutoID += 1
        }
        var created = response(-1, wsrev)
        created.created = true
        switch result {
        case .failure(let err):
            created.canceled = true
            created.cancelReason = err.message
            push(s, WatchOutgoing(response: created, fragment: false))
            return result
        case .success(let wid):
            created.watchId = wid
            push(s, WatchOutgoing(response: created, fragment: false))
            let w = Watcher(stream: id, id: wid, key: key, end: end,
                            noPut: req.filters.contains(.noput), noDelete: req.filters.contains(.nodelete),
                            prevKV: req.prevKv, progressNotify: req.progressNotify, fragment: req.fragment,
                            nextRev: start)
            s.watchers[wid] = w
            counted(w, 1)
            if start > lastRev { index(w) } else { s.unsynced.append(wid); syncStream(id) }
            return result
        }
    }

    /// WatchCancelRequest: queues the canceled response if the watcher existed (etcd sends
    /// nothing for an unknown id). Returns whether it existed.
    @discardableResult
    func cancel(stream id: UInt64, watchID: Int64) -> Bool {
        guard let s = streams[id], let w = s.watchers.removeValue(forKey: watchID) else { return false }
        unindex(w)
        counted(w, -1)
        var r = response(watchID, lastRev)
        r.canceled = true
        push(s, WatchOutgoing(response: r, fragment: false))
        return true
    }

    /// WatchProgressRequest: a response with watch_id -1 and the current revision once every
    /// watcher of the stream is synced (etcd 3.5 sends it only then; Keel defers instead of
    /// dropping, as etcd 3.6 does).
    func requestProgress(stream id: UInt64) {
        guard let s = streams[id] else { return }
        s.progressAllPending = true
        flushProgressAll(s)
    }

    private func flushProgressAll(_ s: Stream) {
        guard s.progressAllPending, s.unsynced.isEmpty else { return }
        s.progressAllPending = false
        push(s, WatchOutgoing(response: response(-1, lastRev), fragment: false))
    }

    /// Progress notify tick (etcd's sendLoop progressTicker): every synced watcher created with
    /// progress_notify that got no events since the previous tick gets an empty response at the
    /// current revision (skipped, as etcd's non-blocking send, when its stream's outbox is full).
    @discardableResult
    func progressTick() -> Bool {
        if isShutDown { return false }
        for (_, s) in streams {
            for (_, w) in s.watchers where w.progressNotify {
                if w.quiet && w.synced && s.eventResponses < options.streamBufferCapacity {
                    push(s, WatchOutgoing(response: response(w.id, lastRev), fragment: false))
                }
                w.quiet = true
            }
        }
        return true
    }

    // MARK: synced index

    private func index(_ w: Watcher) {
        w.synced = true
        let k = WKey(stream: w.stream, id: w.id)
        if w.end == nil { singleKeyIndex[w.key, default: [:]][k] = w } else { rangeWatchers[k] = w }
    }

    private func unindex(_ w: Watcher) {
        let k = WKey(stream: w.stream, id: w.id)
        if w.synced {
            if w.end == nil {
                singleKeyIndex[w.key]?[k] = nil
                if singleKeyIndex[w.key]?.isEmpty == true { singleKeyIndex[w.key] = nil }
            } else {
                rangeWatchers[k] = nil
            }
            w.synced = false
        } else if let s = streams[w.stream] {
            s.unsynced.removeAll { $0 == w.id }
        }
    }

    /// A synced watcher leaves the synced set; it has been given everything up to `deliveredThrough`.
    private func makeUnsynced(_ w: Watcher, deliveredThrough: Int64) {
        guard w.synced else { return }
        fallBehindCount += 1
        w.nextRev = max(w.nextRev, deliveredThrough + 1)
        unindex(w)
        streams[w.stream]?.unsynced.append(w.id)
        needsSync.insert(w.stream)
    }

    // MARK: catch-up from history

    private func syncAll() {
        for id in Array(needsSync) { syncStream(id) }
    }

    /// Reads history for the stream's unsynced watchers while its outbox has room.
    func syncStream(_ id: UInt64) {
        guard let s = streams[id], !s.closed else { needsSync.remove(id); return }
        defer {
            if s.unsynced.isEmpty && !s.progressAllPending { needsSync.remove(id) } else { needsSync.insert(id) }
        }
        var rounds = s.unsynced.count
        while rounds > 0, !s.unsynced.isEmpty, s.eventResponses < options.streamBufferCapacity {
            rounds -= 1
            let wid = s.unsynced.removeFirst()
            guard let w = s.watchers[wid] else { continue }
            switch catchUp(s, w) {
            case .synced:
                index(w)
            case .behind:
                s.unsynced.append(wid)
                rounds += 1      // keep going while there is room
            case .removed:
                break
            case .failed:
                s.unsynced.append(wid)
                rounds = 0       // retried by the timer
            case .waitingForCommit:
                s.unsynced.append(wid)
                rounds = 0       // retried at committed() (or by the timer)
            }
        }
        flushProgressAll(s)
    }

    private enum CatchUp { case synced, behind, removed, failed, waitingForCommit }

    private func catchUp(_ s: Stream, _ w: Watcher) -> CatchUp {
        if w.nextRev > lastRev { return .synced }
        if w.nextRev < compactRev { return compactedOut(s, w, compactRev) }
        // Only what the store has committed (published batches can be ahead of it).
        let to = min(lastRev, source.watchRevision)
        if w.nextRev > to { return waitForCommit() }
        let limit = max(1, options.historyBatchLimit)
        let evs: [Mvccpb.Event]
        var upTo = to
        do {
            // the source never splits a revision: a read that reached the limit ends with a whole revision
            evs = try source.watchEvents(from: w.nextRev, to: to, key: w.key, rangeEnd: w.storeRangeEnd,
                                         prevKV: w.prevKV, limit: limit)
            if evs.count >= limit, let last = evs.last { upTo = min(to, eventRevision(last)) }
        } catch .compacted(let c) {
            return compactedOut(s, w, max(c, compactRev))
        } catch {
            logger.warning("watch history read failed", metadata: ["error": "\(error)"])
            return .failed
        }
        let out = evs.compactMap { filtered($0, w) }
        if !out.isEmpty { enqueueEvents(s, w, out, headerRevision: to) }
        w.nextRev = upTo + 1
        if w.nextRev > lastRev { return .synced }
        return w.nextRev > to ? waitForCommit() : .behind
    }

    private func waitForCommit() -> CatchUp {
        commitWaits += 1
        if !waitingForCommit.exchange(true, ordering: .acquiringAndReleasing) { requestCommit?() }
        return .waitingForCommit
    }

    private func compactedOut(_ s: Stream, _ w: Watcher, _ c: Int64) -> CatchUp {
        if s.watchers.removeValue(forKey: w.id) != nil { counted(w, -1) }
        var r = response(w.id, 0)      // etcd: WatchResponse{CompactRevision} has Revision 0
        r.compactRevision = c
        r.canceled = true
        push(s, WatchOutgoing(response: r, fragment: false))
        return .removed
    }

    // MARK: introspection for tests and metrics
    /// How many times a synced watcher fell behind (its stream's outbox was full) or the feed dropped.
    private(set) var fallBehindCount = 0

    /// Everything queued on a stream right now, without waiting (tests).
    func drain(_ id: UInt64) -> [WatchOutgoing] {
        guard let s = streams[id] else { return [] }
        var out: [WatchOutgoing] = []
        while let item = take(s, id) { out.append(item) }
        return out
    }

    func watcherCounts() -> (synced: Int, unsynced: Int) {
        var synced = 0, unsynced = 0
        for (_, s) in streams { for (_, w) in s.watchers { if w.synced { synced += 1 } else { unsynced += 1 } } }
        return (synced, unsynced)
    }
}

@inline(__always)
func eventRevision(_ e: Mvccpb.Event) -> Int64 { e.kv?.modRevision ?? 0 }

/// Byte-wise lexicographic a < b (etcd compares keys with bytes.Compare).
@inline(__always)
func lexLess(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    let n = min(a.count, b.count)
    var i = 0
    while i < n {
        if a[i] != b[i] { return a[i] < b[i] }
        i += 1
    }
    return a.count < b.count
}

/// A small FIFO (array + head index, compacted when half consumed).
struct FIFO<Element> {
    private var items: [Element] = []
    private var head = 0
    var count: Int { items.count - head }
    var isEmpty: Bool { count == 0 }
    mutating func push(_ e: Element) { items.append(e) }
    mutating func pop() -> Element? {
        guard head < items.count else { return nil }
        let e = items[head]
        head += 1
        if head >= 64 && head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
        return e
    }
}
