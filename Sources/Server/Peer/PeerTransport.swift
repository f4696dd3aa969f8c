// Peer transport of a multi-member Keel: Raft messages between members over Keel's own gRPC
// service (Protos/raft.proto, service raftpb.Raft) on the peer listener.
//
// Sending (one `PeerSender` per remote member):
//   - `send(_:)` groups messages by destination and hands each group to that peer's bounded queue
//     in ONE `execute` on the transport's event loop (never blocks, never awaits). A full queue
//     drops the overflow and reports the peer unreachable (Raft resends). Queues, the peer table
//     and in-flight snapshot tasks are confined to that loop (no locks): NIO runs the loop's
//     tasks in submission order, so messages to one peer keep the order of `send` calls.
//   - One task per peer drains its queue: it takes EVERYTHING queued at once and writes it as
//     MessageBatch messages (split at `maxBatchBytes`) on ONE long-lived raftpb.Raft/Stream
//     (bidirectional; the receiver sends one StreamAck when it accepts the stream, or one with
//     `refused` set before ending it; nothing per batch: no per-message round trip). While a
//     batch is being written new messages collect in the queue and go out in the next batch.
//     A full queue reports unreachable once per overflow episode, not once per `send`.
//   - A failed connect, handshake or stream reports the peer unreachable, drops what was queued
//     and retries with back-off (`backoffInitial` doubling to `backoffMax`, reset once a stream
//     was accepted), rotating over the peer's URLs. Each peer has its own connection and task,
//     so a peer that is down never delays messages to the others.
//   - Identity: every call carries `x-etcd-cluster-id` and `x-server-from` (hex, as etcd's
//     rafthttp headers). The receiver refuses another cluster with FailedPrecondition
//     "cluster ID mismatch" (etcd's ErrClusterIDMismatch text) and drops messages whose `to`
//     is not itself. With `Handlers.isMemberRemoved` it refuses removed members ("the member
//     has been permanently removed from the cluster"), who learn it via `removedFromCluster`.
//   - Dead peers: connect refused -> retried with back-off; no StreamAck within
//     `handshakeTimeout` -> given up; an accepted stream to a peer gone silent is closed by
//     HTTP/2 keepalive (2 s ping, 5 s timeout). `shutdown()`/`removePeer` close connections first.
// Snapshots: `sendSnapshot(_:file:)` streams the file in `snapshotChunkSize` chunks over
//   raftpb.Raft/SendSnapshot on a connection of its own (the writer awaits under HTTP/2
//   back-pressure); the first chunk carries the message and the total size, the last the
//   CRC-32C of the file. The receiver writes the chunks to a temp file in `snapshotDir`, checks
//   offsets, size and checksum, fsyncs, calls `Handlers.receiveSnapshot` and answers SnapshotAck;
//   the sender then reports `snapshotStatus(to, failed:)` (and unreachable on failure, as etcd).
// Lease forwarding (followers -> leader): unary raftpb.Raft/LeaseRenew and LeaseTimeToLive on the
//   peer port, answered by `Handlers.leaseRenew` / `leaseTimeToLive` (CORE's closures, optional:
//   without them the calls end Unimplemented); GRPCStatus errors cross unchanged.
// Threads: handlers are called from event loops and tasks of the transport; they must not block
// (hand the work to the Raft loop). Stats: `transport.stats` (atomic counters, for tests/metrics).
// Limits: a batch or chunk up to 16 MiB on the wire (defaultHTTP2.maxReceiveMessageSize); a
// single Raft message larger than that is dropped by the sender with an error log (Raft's
// maxSizePerMsg keeps appends far below it).
import GRPC
import KeelAPI
import Logging
import NIOCore
import NIOPosix
import Raft
import Synchronization

public final class PeerTransport: Sendable {
    public struct Handlers: Sendable {
        /// Incoming messages (any order across peers; in order per sending peer).
        public var receive: @Sendable ([Raft.Message]) -> Void
        /// A MsgSnap and the received snapshot file (a temp file under `snapshotDir`; the callee
        /// owns it after the call, whatever it returns). `true`: applied, acknowledged ok.
        public var receiveSnapshot: @Sendable (Raft.Message, _ file: String) async -> Bool
        /// -> node.reportUnreachable
        public var unreachable: @Sendable (UInt64) -> Void
        /// -> node.reportSnapshot
        public var snapshotStatus: @Sendable (UInt64, _ failed: Bool) -> Void
        /// Leader side of a forwarded LeaseKeepAlive: the lease's TTL after the renewal.
        public var leaseRenew: (@Sendable (_ id: Int64) async throws(GRPCStatus) -> Int64)?
        /// Leader side of a forwarded LeaseTimeToLive.
        public var leaseTimeToLive: (@Sendable (Etcdserverpb.LeaseTimeToLiveRequest) async throws(GRPCStatus)
            -> Etcdserverpb.LeaseTimeToLiveResponse)?
        /// Receiver side: true for a member ID that was removed from the cluster; its streams,
        /// snapshots and lease calls are refused with `memberRemovedMessage` (nil: none refused).
        public var isMemberRemoved: (@Sendable (UInt64) -> Bool)?
        /// Sender side: a peer refused this member as removed (etcd's member then stops: "the
        /// member has been permanently removed from the cluster"). Called once per transport.
        public var removedFromCluster: (@Sendable () -> Void)?

        public init(receive: @escaping @Sendable ([Raft.Message]) -> Void,
                    receiveSnapshot: @escaping @Sendable (Raft.Message, _ file: String) async -> Bool,
                    unreachable: @escaping @Sendable (UInt64) -> Void,
                    snapshotStatus: @escaping @Sendable (UInt64, _ failed: Bool) -> Void,
                    leaseRenew: (@Sendable (_ id: Int64) async throws(GRPCStatus) -> Int64)? = nil,
                    leaseTimeToLive: (@Sendable (Etcdserverpb.LeaseTimeToLiveRequest) async throws(GRPCStatus)
                        -> Etcdserverpb.LeaseTimeToLiveResponse)? = nil,
                    isMemberRemoved: (@Sendable (UInt64) -> Bool)? = nil,
                    removedFromCluster: (@Sendable () -> Void)? = nil) {
            self.receive = receive
            self.receiveSnapshot = receiveSnapshot
            self.unreachable = unreachable
            self.snapshotStatus = snapshotStatus
            self.leaseRenew = leaseRenew
            self.leaseTimeToLive = leaseTimeToLive
            self.isMemberRemoved = isMemberRemoved
            self.removedFromCluster = removedFromCluster
        }
    }

    public struct Options: Sendable {
        /// Messages queued per peer before new ones are dropped (etcd: 4096 per stream).
        public var queueCapacity = 4096
        /// A MessageBatch is closed once it holds this many encoded bytes (one larger message still goes alone).
        public var maxBatchBytes = 1 << 20
        public var backoffInitial: Duration = .milliseconds(50)
        public var backoffMax: Duration = .seconds(1)
        /// A stream the peer has not accepted (StreamAck) within this time counts as failed.
        public var handshakeTimeout: Duration = .seconds(5)
        public var snapshotChunkSize = 1 << 20
        /// Timeout of a forwarded lease call.
        public var forwardTimeout: Duration = .seconds(5)
        /// HTTP/2 settings of the peer connections (clients) and `PeerServer`.
        public var http2: HTTP2Configuration = PeerTransport.defaultHTTP2
        public init() {}
    }

    /// Peer connections: messages up to 16 MiB (a batch, a snapshot chunk), keepalive pings so a
    /// silently dead peer (SIGSTOP, blackholed link) closes the connection within ~7 s and is
    /// retried (a false alarm on a stalled machine only costs a reconnect).
    public static var defaultHTTP2: HTTP2Configuration {
        var h = HTTP2Configuration()
        h.maxReceiveMessageSize = 16 << 20
        h.keepaliveInterval = .seconds(2)
        h.keepaliveTimeout = .seconds(5)
        return h
    }

    /// Counters for tests and metrics.
    public struct Stats: Sendable, Hashable {
        /// Sender side: streams attempted / accepted by the peer (handshake done) / ended by an error.
        public var streamsAttempted = 0, streamsOpened = 0, streamFailures = 0
        /// Streams the peer refused (StreamAck.refused, e.g. cluster ID mismatch).
        public var streamsRefusedByPeer = 0
        public var batchesSent = 0, messagesSent = 0
        /// Dropped on a full queue, a failed stream, or for an unknown peer.
        public var messagesDropped = 0
        public var unreachableReports = 0
        /// Receiver side.
        public var streamsAccepted = 0, streamsRefused = 0, acksSent = 0
        public var batchesReceived = 0, messagesReceived = 0
        /// Received but not delivered (another `to`, undecodable).
        public var messagesRefused = 0
        public var snapshotsSent = 0, snapshotsFailed = 0, snapshotBytesSent = 0
        public var snapshotsReceived = 0, snapshotsRefused = 0
        public var leaseCallsServed = 0, leaseCallsForwarded = 0
    }

    public let localID: UInt64
    public let clusterID: UInt64
    public let snapshotDir: String
    public let options: Options
    let group: any EventLoopGroup
    let logger: Logger
    let handlers: Handlers
    /// The loop that owns `registry` and every peer queue.
    let loop: any EventLoop
    /// Runs the peers' drain tasks on `loop` (see PeerSender).
    let taskExecutor: EventLoopTaskExecutor
    let registry: NIOLoopBoundBox<Registry>
    let counters = Counters()

    public convenience init(localID: UInt64, clusterID: UInt64, snapshotDir: String, group: any EventLoopGroup,
                            logger: Logger, handlers: Handlers) {
        self.init(localID: localID, clusterID: clusterID, snapshotDir: snapshotDir, group: group, logger: logger,
                  handlers: handlers, options: Options())
    }

    public init(localID: UInt64, clusterID: UInt64, snapshotDir: String, group: any EventLoopGroup,
                logger: Logger, handlers: Handlers, options: Options) {
        self.localID = localID
        self.clusterID = clusterID
        self.snapshotDir = snapshotDir
        self.group = group
        self.logger = logger
        self.handlers = handlers
        self.options = options
        self.loop = group.next()
        self.taskExecutor = EventLoopTaskExecutor(loop)
        self.registry = NIOLoopBoundBox.makeBoxSendingValue(Registry(), eventLoop: loop)
        let stale = PeerFile.removeStaleParts(in: snapshotDir)
        if stale > 0 {
            logger.warning("removed unfinished incoming snapshots", metadata: ["dir": "\(snapshotDir)", "files": "\(stale)"])
        }
    }

    public var stats: Stats { counters.snapshot() }

    /// Metadata every call of this member carries.
    var identity: [(name: String, value: String)] {
        [("x-etcd-cluster-id", String(clusterID, radix: 16)), ("x-server-from", String(localID, radix: 16))]
    }

    // MARK: peers

    /// Adds a peer or changes its URLs (a change restarts its sender: queued messages are dropped).
    public func setPeer(id: UInt64, peerURLs: [String]) {
        guard id != localID else { return }
        var urls: [ServerURL] = []
        for raw in peerURLs {
            do {
                urls.append(try URLParsing.parse(raw))
            } catch {
                logger.error("ignoring invalid peer URL", metadata: ["peer": "\(hex(id))", "url": "\(raw)", "error": "\(error)"])
            }
        }
        let reg = registry
        let parsed = urls
        loop.execute {
            let r = reg.value
            guard !r.closed else { return }
            if let old = r.peers[id] {
                if old.urls == parsed { return }
                old.stop()
            }
            r.peers[id] = PeerSender(transport: self, id: id, urls: parsed)
        }
    }

    public func removePeer(id: UInt64) {
        let reg = registry
        loop.execute {
            reg.value.peers.removeValue(forKey: id)?.stop()
        }
    }

    /// Queues messages for their peers; never blocks. MsgSnap must go through `sendSnapshot`.
    public func send(_ messages: [Raft.Message]) {
        guard !messages.isEmpty else { return }
        // Grouped per destination here (per-destination order kept); one loop task for all.
        var byPeer: [UInt64: [Raft.Message]] = [:]
        for m in messages {
            if m.type == .snapshot {
                logger.error("MsgSnap passed to send(_:); use sendSnapshot(_:file:)", metadata: ["peer": "\(hex(m.to))"])
                handlers.snapshotStatus(m.to, true)
                continue
            }
            byPeer[m.to, default: []].append(m)
        }
        guard !byPeer.isEmpty else { return }
        let groups = byPeer
        let reg = registry
        loop.execute {
            let r = reg.value
            for (to, batch) in groups {
                guard !r.closed, let peer = r.peers[to] else {
                    self.counters.messagesDropped.add(batch.count, ordering: .relaxed)
                    continue
                }
                peer.enqueue(batch)
            }
        }
    }

    /// Streams `file` to the message's peer (see the file comment), then reports snapshotStatus.
    public func sendSnapshot(_ message: Raft.Message, file: String) {
        let reg = registry
        let loop = self.loop
        loop.execute {
            let r = reg.value
            guard !r.closed, let peer = r.peers[message.to] else {
                self.logger.warning("snapshot for unknown peer dropped", metadata: ["peer": "\(hex(message.to))"])
                self.counters.snapshotsFailed.add(1, ordering: .relaxed)
                self.handlers.snapshotStatus(message.to, true)
                return
            }
            let urls = peer.urls
            let key = r.nextTaskKey
            r.nextTaskKey += 1
            r.snapshotTasks[key] = Task {
                await SnapshotSender(transport: self).run(message, file: file, urls: urls)
                loop.execute { reg.value.snapshotTasks[key] = nil }
            }
        }
    }

    public var services: [any GRPCService] { [PeerRaftService(transport: self)] }

    /// Stops every sender and snapshot transfer and closes the peer connections.
    public func shutdown() async {
        let reg = registry
        let stopped = try? await loop.submit { () -> ([Task<Void, Never>], [GRPCClient]) in
            let r = reg.value
            r.closed = true
            let senders = Array(r.peers.values)
            r.peers = [:]
            for p in senders { p.stop() }
            let snapshots = Array(r.snapshotTasks.values)
            for task in snapshots { task.cancel() }
            return (senders.compactMap(\.task) + snapshots, senders.flatMap(\.clients))
        }.get()
        // Closing the connections first frees a task waiting on a peer that reads nothing
        // (a stopped process): its stream fails at once instead of at the keepalive timeout.
        for c in stopped?.1 ?? [] { await c.close() }
        for t in stopped?.0 ?? [] { await t.value }
    }

    // MARK: lease forwarding (client side)

    /// Forwards a LeaseKeepAlive to the leader; returns the TTL after renewal. Errors are the
    /// leader's GRPCStatus unchanged (e.g. NotFound "etcdserver: requested lease not found"), or
    /// Unavailable when the leader cannot be reached.
    public func forwardLeaseRenew(to leader: UInt64, id: Int64) async throws(GRPCStatus) -> Int64 {
        var keepAlive = Etcdserverpb.LeaseKeepAliveRequest()
        keepAlive.id = id
        let req = keepAlive
        let resp = try await forward(to: leader) { client, options in
            try await client.unary(Raftpb.Raft.leaseRenew, req, options: options)
        }
        return resp.ttl
    }

    public func forwardLeaseTimeToLive(to leader: UInt64, _ request: Etcdserverpb.LeaseTimeToLiveRequest)
        async throws(GRPCStatus) -> Etcdserverpb.LeaseTimeToLiveResponse {
        try await forward(to: leader) { client, options in
            try await client.unary(Raftpb.Raft.leaseTimeToLive, request, options: options)
        }
    }

    private func forward<R: Sendable>(to leader: UInt64,
                                      _ call: @Sendable (GRPCClient, CallOptions) async throws -> R) async throws(GRPCStatus) -> R {
        let reg = registry
        let clients = (try? await loop.submit { reg.value.peers[leader]?.clients ?? [] }.get()) ?? []
        guard !clients.isEmpty else {
            throw GRPCStatus(.unavailable, "keel: no peer URL known for member \(hex(leader))")
        }
        counters.leaseCallsForwarded.add(1, ordering: .relaxed)
        let options = CallOptions(timeout: self.options.forwardTimeout, metadata: identity)
        var last = GRPCStatus(.unavailable, "keel: member \(hex(leader)) unreachable")
        for client in clients {
            do {
                return try await call(client, options)
            } catch let st as GRPCStatus {
                // Only a transport failure moves on to the peer's next URL; an answer is final.
                guard st.code == .unavailable else { throw st }
                last = st
            } catch {
                last = GRPCStatus(.unavailable, "\(error)")
            }
        }
        throw last
    }

    // MARK: receiver checks

    /// Refuses calls from another cluster (etcd's ErrClusterIDMismatch text, FailedPrecondition).
    func checkCluster(_ ctx: ServerContext) throws(GRPCStatus) {
        guard let raw = ctx.header("x-etcd-cluster-id"), let cid = UInt64(raw, radix: 16), cid == clusterID else {
            logger.warning("request cluster ID mismatch", metadata: [
                "local-member-cluster-id": "\(hex(clusterID))",
                "remote-peer-cluster-id": "\(ctx.header("x-etcd-cluster-id") ?? "")",
                "remote-peer-id": "\(ctx.header("x-server-from") ?? "")"])
            counters.streamsRefused.add(1, ordering: .relaxed)
            throw GRPCStatus(.failedPrecondition, "cluster ID mismatch")
        }
        // A member removed from the cluster is refused (etcd answers 410 Gone and the removed
        // member stops itself; here it learns it from the refusal, see Handlers.removedFromCluster).
        if let isRemoved = handlers.isMemberRemoved, let raw = ctx.header("x-server-from"),
           let from = UInt64(raw, radix: 16), isRemoved(from) {
            logger.warning("rejected stream from remote peer because it was removed", metadata: ["remote-peer-id": "\(raw)"])
            counters.streamsRefused.add(1, ordering: .relaxed)
            throw GRPCStatus(.failedPrecondition, PeerTransport.memberRemovedMessage)
        }
    }

    /// etcd's errMemberRemoved text.
    public static let memberRemovedMessage = "the member has been permanently removed from the cluster"

    /// A peer's refusal text: when it says this member was removed, tell the host (once).
    func peerRefused(_ peer: UInt64, _ text: String) {
        counters.streamsRefusedByPeer.add(1, ordering: .relaxed)
        guard text == PeerTransport.memberRemovedMessage else { return }
        if !counters.removedReported.exchange(true, ordering: .relaxed) {
            logger.error("peer refused this member: \(text)", metadata: ["peer": "\(hex(peer))"])
            handlers.removedFromCluster?()
        }
    }

    func reportUnreachable(_ id: UInt64) {
        counters.unreachableReports.add(1, ordering: .relaxed)
        handlers.unreachable(id)
    }
}

func hex(_ id: UInt64) -> String { String(id, radix: 16) }

/// The transport's loop-confined state.
final class Registry {
    var peers: [UInt64: PeerSender] = [:]
    var snapshotTasks: [Int: Task<Void, Never>] = [:]
    var nextTaskKey = 0
    var closed = false
}

/// Atomic counters behind `PeerTransport.Stats` (written from loops and tasks, read anywhere).
final class Counters: Sendable {
    let streamsAttempted = Atomic<Int>(0), streamsOpened = Atomic<Int>(0), streamFailures = Atomic<Int>(0)
    let streamsRefusedByPeer = Atomic<Int>(0)
    /// Set once a peer said this member was removed (removedFromCluster is called once).
    let removedReported = Atomic<Bool>(false)
    let batchesSent = Atomic<Int>(0), messagesSent = Atomic<Int>(0), messagesDropped = Atomic<Int>(0)
    let unreachableReports = Atomic<Int>(0)
    let streamsAccepted = Atomic<Int>(0), streamsRefused = Atomic<Int>(0), acksSent = Atomic<Int>(0)
    let batchesReceived = Atomic<Int>(0), messagesReceived = Atomic<Int>(0), messagesRefused = Atomic<Int>(0)
    let snapshotsSent = Atomic<Int>(0), snapshotsFailed = Atomic<Int>(0), snapshotBytesSent = Atomic<Int>(0)
    let snapshotsReceived = Atomic<Int>(0), snapshotsRefused = Atomic<Int>(0)
    let leaseCallsServed = Atomic<Int>(0), leaseCallsForwarded = Atomic<Int>(0)

    func snapshot() -> PeerTransport.Stats {
        var s = PeerTransport.Stats()
        s.streamsAttempted = streamsAttempted.load(ordering: .relaxed)
        s.streamsOpened = streamsOpened.load(ordering: .relaxed)
        s.streamFailures = streamFailures.load(ordering: .relaxed)
        s.streamsRefusedByPeer = streamsRefusedByPeer.load(ordering: .relaxed)
        s.batchesSent = batchesSent.load(ordering: .relaxed)
        s.messagesSent = messagesSent.load(ordering: .relaxed)
        s.messagesDropped = messagesDropped.load(ordering: .relaxed)
        s.unreachableReports = unreachableReports.load(ordering: .relaxed)
        s.streamsAccepted = streamsAccepted.load(ordering: .relaxed)
        s.streamsRefused = streamsRefused.load(ordering: .relaxed)
        s.acksSent = acksSent.load(ordering: .relaxed)
        s.batchesReceived = batchesReceived.load(ordering: .relaxed)
        s.messagesReceived = messagesReceived.load(ordering: .relaxed)
        s.messagesRefused = messagesRefused.load(ordering: .relaxed)
        s.snapshotsSent = snapshotsSent.load(ordering: .relaxed)
        s.snapshotsFailed = snapshotsFailed.load(ordering: .relaxed)
        s.snapshotBytesSent = snapshotBytesSent.load(ordering: .relaxed)
        s.snapshotsReceived = snapshotsReceived.load(ordering: .relaxed)
        s.snapshotsRefused = snapshotsRefused.load(ordering: .relaxed)
        s.leaseCallsServed = leaseCallsServed.load(ordering: .relaxed)
        s.leaseCallsForwarded = leaseCallsForwarded.load(ordering: .relaxed)
        return s
    }
}
