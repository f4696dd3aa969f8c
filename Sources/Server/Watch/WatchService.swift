// WatchService: etcdserverpb.Watch/Watch, one bidi stream carrying many watches (etcd's
// api/v3rpc/watch.go serverWatchStream: a receive loop and a send loop per stream).
import GRPC
import KeelAPI

public struct WatchService: GRPCService {
    public let hub: WatchHub
    let header: @Sendable () -> Etcdserverpb.ResponseHeader
    let maxRequestBytes: Int
    let visible: @Sendable () async throws -> Void
    let leader: LeaderWatch?

    /// How a stream created with etcd's `hasleader: true` metadata (clientv3.WithRequireLeader) follows
    /// this member's leader, as etcd's v3rpc stream interceptor does: refused at once with
    /// "etcdserver: no leader" when there is none, and ended with that status once the member has been
    /// without a leader for `checks` consecutive looks, one per `interval` (etcd: 3, election timeout).
    public struct LeaderWatch: Sendable {
        public let hasLeader: @Sendable () -> Bool
        public let interval: Duration
        public let checks: Int
        public init(hasLeader: @escaping @Sendable () -> Bool, interval: Duration, checks: Int = 3) {
            self.hasLeader = hasLeader
            self.interval = interval
            self.checks = checks
        }

        /// Returns when the member has been without a leader for `checks` looks in a row.
        func untilLost() async throws {
            var without = 0
            while without < checks {
                try await Task.sleep(for: interval)
                without = hasLeader() ? 0 : without + 1
            }
        }
    }

    /// - header: cluster_id / member_id / raft_term for responses (the hub sets revision).
    /// - maxRequestBytes: `--max-request-bytes`; responses of watchers created with `fragment`
    ///   are split at this size as etcd does.
    /// - visible: waits until every write answered so far is committed to the store
    ///   (`KeelCore.visibilityBarrier`), before a watch is created: one created "from now" right
    ///   after a put was answered starts after that put, as in etcd (the hub starts it after the
    ///   store's revision even when its feed has not delivered that revision yet).
    /// - leader: for streams that require a leader (nil: the metadata is ignored).
    public init(hub: WatchHub, header: @escaping @Sendable () -> Etcdserverpb.ResponseHeader,
                maxRequestBytes: Int = 1_572_864, visible: @escaping @Sendable () async throws -> Void = {},
                leader: LeaderWatch? = nil) {
        self.hub = hub
        self.header = header
        self.maxRequestBytes = maxRequestBytes
        self.visible = visible
        self.leader = leader
    }

    public var methods: [ServerMethod] {
        [.bidirectionalStreaming(Etcdserverpb.Watch.watch) { requests, writer, context in
            let leader = context.header("hasleader") == "true" ? self.leader : nil
            if let leader, !leader.hasLeader() { throw EtcdError.noLeader }
            try await self.serve(requests, send: { try await writer.send($0) },
                                 sendAll: { try await writer.send(contentsOf: $0) }, leader: leader)
        }]
    }

    /// Runs one watch stream until the client closes its side, the call ends or the hub shuts down.
    /// (Public for in-process use, e.g. tests without sockets.)
    /// With `leader`, the stream also ends, with "etcdserver: no leader", when the member loses its leader.
    /// `sendAll`: sends a batch of responses at once (one hop to the connection instead of one per
    /// response); nil: `send` one by one.
    public func serve<Requests: AsyncSequence & Sendable>(
        _ requests: Requests,
        send: @escaping @Sendable (Etcdserverpb.WatchResponse) async throws -> Void,
        sendAll: (@Sendable ([Etcdserverpb.WatchResponse]) async throws -> Void)? = nil,
        leader: LeaderWatch? = nil
    ) async throws where Requests.Element == Etcdserverpb.WatchRequest {
        let hub = self.hub
        let sid = await hub.openStream()
        let header = self.header
        let limit = maxRequestBytes
        let visible = self.visible
        do {
            // Each task returns whether it saw the member lose its leader.
            try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask {
                    let sendMany = sendAll ?? { rs in for r in rs { try await send(r) } }
                    while let batch = await hub.nextBatch(sid) {
                        var responses: [Etcdserverpb.WatchResponse] = []
                        responses.reserveCapacity(batch.count)
                        for out in batch {
                            var r = out.response
                            var h = header()
                            h.revision = r.header?.revision ?? 0
                            r.header = h
                            if out.fragment {
                                responses += fragmentWatchResponse(r, maxRequestBytes: limit)
                            } else {
                                responses.append(r)
                            }
                        }
                        try await sendMany(responses)
                    }
                    return false
                }
                group.addTask {
                    for try await req in requests {
                        switch req.requestUnion {
                        case .createRequest(let c):
                            try await visible()
                            await hub.create(stream: sid, c)
                        case .cancelRequest(let c):
                            await hub.cancel(stream: sid, watchID: c.watchId)
                        case .progressRequest:
                            await hub.requestProgress(stream: sid)
                        case nil:
                            continue    // etcd ignores an empty request
                        }
                        await hub.waitForRoom(sid)
                    }
                    // etcd ends the whole call when the client closes its sending side
                    return false
                }
                if let leader {
                    group.addTask {
                        try await leader.untilLost()
                        return true
                    }
                }
                // Whichever side finishes first ends the stream (closing it ends the sending task).
                let leaderLost = try await group.next() ?? false
                await hub.closeStream(sid)
                group.cancelAll()
                if leaderLost { throw EtcdError.noLeader }
            }
        } catch {
            await hub.closeStream(sid)
            throw error
        }
        await hub.closeStream(sid)
    }
}

/// etcd's sendFragments: a response bigger than maxRequestBytes with at least two events is split
/// into several, each with as many events as fit (at least one), all but the last with fragment set.
func fragmentWatchResponse(_ r: Etcdserverpb.WatchResponse, maxRequestBytes: Int) -> [Etcdserverpb.WatchResponse] {
    if r.serializedSize < maxRequestBytes || r.events.count < 2 { return [r] }
    var out: [Etcdserverpb.WatchResponse] = []
    var shell = r
    shell.events = []
    shell.fragment = true
    // size of the shell plus each event's field (tag + length prefix + bytes)
    let shellSize = shell.serializedSize
    var cur = shell
    var size = shellSize
    for ev in r.events {
        let evSize = ev.serializedSize
        let fieldSize = 1 + varintSize(UInt64(evSize)) + evSize
        if !cur.events.isEmpty && size + fieldSize >= maxRequestBytes {
            out.append(cur)
            cur = shell
            size = shellSize
        }
        cur.events.append(ev)
        size += fieldSize
    }
    cur.fragment = false
    out.append(cur)
    return out
}

@inline(__always)
func varintSize(_ v: UInt64) -> Int {
    var n = 1
    var x = v >> 7
    while x != 0 { n += 1; x >>= 7 }
    return n
}
