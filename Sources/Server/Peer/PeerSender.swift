// One remote member's sending side: a bounded queue (confined to the transport's loop) and one
// task that drains it onto a long-lived raftpb.Raft/Stream (see PeerTransport.swift).
import GRPC
import KeelAPI
import Logging
import NIOCore
import Raft
import Synchronization

/// What the drain task gets from its queue.
enum PeerTake: Sendable {
    /// Everything queued, in `send` order.
    case batch([Raft.Message])
    /// The peer was removed or the transport shut down.
    case closed
    /// The waiting task was cancelled.
    case interrupted
}

/// Bounded queue of one peer; every access on the transport's loop.
final class PeerQueue {
    let capacity: Int
    var pending: [Raft.Message] = []
    var waiter: EventLoopPromise<PeerTake>?
    var closed = false
    /// Set by the first overflow after the drain task last took messages: a peer that stays
    /// full is reported unreachable once per take, not once per `send`.
    var overflowReported = false

    init(capacity: Int) { self.capacity = max(capacity, 1) }

    /// Appends what fits; returns how many messages did not fit (dropped) and whether to report
    /// the peer unreachable.
    func enqueue(_ messages: [Raft.Message]) -> (dropped: Int, report: Bool) {
        guard !closed else { return (messages.count, false) }
        let room = capacity - pending.count
        var dropped = 0
        if messages.count <= room {
            pending.append(contentsOf: messages)
        } else {
            pending.append(contentsOf: messages.prefix(max(room, 0)))
            dropped = messages.count - max(room, 0)
        }
        if let w = waiter, !pending.isEmpty {
            waiter = nil
            w.succeed(.batch(takeAll()))
        }
        let report = dropped > 0 && !overflowReported
        if report { overflowReported = true }
        return (dropped, report)
    }

    func takeAll() -> [Raft.Message] {
        let b = pending
        pending = []
        overflowReported = false
        return b
    }

    func close() {
        closed = true
        pending = []
        if let w = waiter {
            waiter = nil
            w.succeed(.closed)
        }
    }

    func drain() -> Int {
        takeAll().count
    }
}

/// The drain task's handle on its queue.
struct PeerQueueHandle: Sendable {
    let queue: NIOLoopBound<PeerQueue>
    let loop: any EventLoop

    /// Waits for queued messages and takes all of them.
    func take() async -> PeerTake {
        let q = queue, loop = self.loop
        let promise = loop.makePromise(of: PeerTake.self)
        loop.execute {
            let queue = q.value
            if queue.closed {
                promise.succeed(.closed)
            } else if !queue.pending.isEmpty {
                promise.succeed(.batch(queue.takeAll()))
            } else {
                queue.waiter = promise
            }
        }
        return await withTaskCancellationHandler {
            (try? await promise.futureResult.get()) ?? .interrupted
        } onCancel: {
            // Runs after the registration above (same loop, submitted later).
            loop.execute {
                if let w = q.value.waiter, w.futureResult === promise.futureResult {
                    q.value.waiter = nil
                    promise.succeed(.interrupted)
                }
            }
        }
    }

    /// Drops everything queued; returns how many.
    func drain() async -> Int {
        let q = queue
        return (try? await loop.submit { q.value.drain() }.get()) ?? 0
    }
}

/// Registry entry of one peer (confined to the transport's loop).
final class PeerSender {
    let id: UInt64
    let urls: [ServerURL]
    let clients: [GRPCClient]
    let queue: NIOLoopBound<PeerQueue>
    let transport: PeerTransport
    private(set) var task: Task<Void, Never>?

    init(transport: PeerTransport, id: UInt64, urls: [ServerURL]) {
        self.transport = transport
        self.id = id
        self.urls = urls
        // The queue, the peer's connections and the drain task all live on the transport's loop:
        // a message the Raft loop hands over is queued, taken, encoded and written to the socket
        // on that one thread (no hop through the cooperative pool and back).
        self.clients = urls.map { url in
            var c = GRPCClient.Configuration(host: url.bindHost, port: url.port)
            c.http2 = transport.options.http2
            return GRPCClient(configuration: c, group: transport.loop)
        }
        self.queue = NIOLoopBound(PeerQueue(capacity: transport.options.queueCapacity), eventLoop: transport.loop)
        let runner = PeerStreamRunner(transport: transport, id: id, clients: clients,
                                      queue: PeerQueueHandle(queue: queue, loop: transport.loop))
        self.task = Task(executorPreference: transport.taskExecutor) { await runner.run() }
    }

    /// On the loop: queue messages, or drop them and report the peer unreachable.
    func enqueue(_ messages: [Raft.Message]) {
        let (dropped, report) = queue.value.enqueue(messages)
        if dropped > 0 {
            transport.counters.messagesDropped.add(dropped, ordering: .relaxed)
        }
        if report {
            transport.logger.debug("peer queue full, messages dropped", metadata: ["peer": "\(hex(id))", "dropped": "\(dropped)"])
            transport.reportUnreachable(id)
        }
    }

    /// On the loop: ends the drain task (queued messages are dropped) and closes the peer's
    /// connections, so a stream stuck on a peer that reads nothing ends too.
    func stop() {
        queue.value.close()
        task?.cancel()
        let clients = self.clients
        Task { for c in clients { await c.close() } }
    }
}

/// One stream attempt: accepted once the peer's StreamAck arrived; messages taken from the
/// queue and written, so the ones lost with a failed stream are counted as dropped.
final class SessionState: Sendable {
    let accepted = Atomic<Bool>(false)
    let taken = Atomic<Int>(0)
    let written = Atomic<Int>(0)
    var unsent: Int { max(taken.load(ordering: .relaxed) - written.load(ordering: .relaxed), 0) }
}

/// The drain task of one peer: connect, stream batches, back off and retry.
struct PeerStreamRunner: Sendable {
    let transport: PeerTransport
    let id: UInt64
    let clients: [GRPCClient]
    let queue: PeerQueueHandle

    func run() async {
        let opts = transport.options
        var backoff = opts.backoffInitial
        var urlIndex = 0
        var healthy = true
        loop: while !Task.isCancelled {
            let first: [Raft.Message]
            switch await queue.take() {
            case .batch(let b): first = b
            case .closed, .interrupted: break loop
            }
            let error: any Error
            if clients.isEmpty {
                error = GRPCStatus(.unavailable, "no valid peer URL")
                transport.counters.messagesDropped.add(first.count, ordering: .relaxed)
            } else {
                let client = clients[urlIndex % clients.count]
                let state = SessionState()
                do {
                    try await session(client, first: first, state: state)
                    break loop  // queue closed: peer removed or shutdown
                } catch let e {
                    error = e
                }
                transport.counters.messagesDropped.add(state.unsent, ordering: .relaxed)
                if state.accepted.load(ordering: .relaxed) {
                    backoff = opts.backoffInitial
                    healthy = true
                }
                if Task.isCancelled { break loop }
                urlIndex += 1
            }
            transport.counters.streamFailures.add(1, ordering: .relaxed)
            let dropped = await queue.drain()
            transport.counters.messagesDropped.add(dropped, ordering: .relaxed)
            if healthy {
                transport.logger.warning("peer unreachable", metadata: ["peer": "\(hex(id))", "error": "\(error)"])
                healthy = false
            }
            transport.reportUnreachable(id)
            do {
                try await Task.sleep(for: backoff)
            } catch {
                break loop
            }
            backoff = min(backoff * 2, opts.backoffMax)
        }
        for c in clients { await c.close() }
    }

    /// One stream: returns when the queue closes, throws when the stream fails or the peer
    /// does not accept it within the handshake timeout (cancelling the call resets the stream,
    /// which also frees a writer waiting for flow-control window).
    func session(_ client: GRPCClient, first: [Raft.Message], state: SessionState) async throws {
        let timeout = transport.options.handshakeTimeout
        transport.counters.streamsAttempted.add(1, ordering: .relaxed)
        // Taken from the queue now: if the call fails before its body runs (connection refused),
        // these count as unsent (dropped) like any other.
        state.taken.add(first.count, ordering: .relaxed)
        try await withThrowingTaskGroup(of: Bool.self) { outer in
            outer.addTask {
                try await stream(client, first: first, state: state)
                return true
            }
            outer.addTask {
                try await Task.sleep(for: timeout)
                if !state.accepted.load(ordering: .relaxed) {
                    throw GRPCStatus(.deadlineExceeded, "peer did not accept the raft stream within \(timeout)")
                }
                return false
            }
            while let done = try await outer.next() {
                if done {
                    outer.cancelAll()
                    return
                }
            }
        }
    }

    private func stream(_ client: GRPCClient, first: [Raft.Message], state: SessionState) async throws {
        let counters = transport.counters
        let options = CallOptions(metadata: transport.identity)
        let peer = id
        let logger = transport.logger
        try await client.bidirectionalStreaming(Raftpb.Raft.stream, options: options) { writer, responses in
            try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask {
                    for try await ack in responses {
                        if !ack.refused.isEmpty {
                            transport.peerRefused(peer, ack.refused)
                            throw GRPCStatus(.failedPrecondition, "peer refused the raft stream: \(ack.refused)")
                        }
                        if !state.accepted.exchange(true, ordering: .relaxed) {
                            counters.streamsOpened.add(1, ordering: .relaxed)
                            logger.info("raft stream to peer established", metadata: ["peer": "\(hex(peer))"])
                        }
                    }
                    throw GRPCStatus(.unavailable, "peer ended the raft stream")
                }
                group.addTask {
                    try await write(first, writer, state)
                    while true {
                        switch await queue.take() {
                        case .batch(let b):
                            state.taken.add(b.count, ordering: .relaxed)
                            try await write(b, writer, state)
                        case .closed:
                            writer.finish()
                            return true
                        case .interrupted: throw CancellationError()
                        }
                    }
                }
                while let done = try await group.next() {
                    if done {
                        group.cancelAll()
                        return
                    }
                }
            }
        }
    }

    /// Writes messages as MessageBatch messages of at most `maxBatchBytes` (a larger single
    /// message goes alone).
    private func write(_ messages: [Raft.Message], _ writer: RequestWriter<Raftpb.MessageBatch>,
                       _ state: SessionState) async throws {
        let limit = transport.options.maxBatchBytes
        var batch = Raftpb.MessageBatch()
        batch.messages.reserveCapacity(messages.count)
        var bytes = 0
        // What the receiver accepts in one gRPC message (same configuration on every member).
        let hardLimit = transport.options.http2.maxReceiveMessageSize - 64
        for m in messages {
            let pb = PeerWire.encode(m)
            let size = pb.serializedSize + 6
            if size > hardLimit {
                // Sending it would only get the stream reset by the receiver (and Raft would
                // resend it forever): drop it, count it written so it is not counted twice.
                transport.logger.error("raft message too large for the peer transport, dropped", metadata: [
                    "peer": "\(hex(id))", "type": "\(m.type)", "bytes": "\(size)", "limit": "\(hardLimit)"])
                transport.counters.messagesDropped.add(1, ordering: .relaxed)
                state.written.add(1, ordering: .relaxed)
                continue
            }
            if !batch.messages.isEmpty && bytes + size > limit {
                try await sendBatch(batch, writer, state)
                batch = Raftpb.MessageBatch()
                bytes = 0
            }
            batch.messages.append(pb)
            bytes += size
        }
        if !batch.messages.isEmpty { try await sendBatch(batch, writer, state) }
    }

    private func sendBatch(_ batch: Raftpb.MessageBatch, _ writer: RequestWriter<Raftpb.MessageBatch>,
                           _ state: SessionState) async throws {
        try await writer.send(batch)
        state.written.add(batch.messages.count, ordering: .relaxed)
        transport.counters.batchesSent.add(1, ordering: .relaxed)
        transport.counters.messagesSent.add(batch.messages.count, ordering: .relaxed)
    }
}
