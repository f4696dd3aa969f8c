// The receiving side of the peer transport (service raftpb.Raft) and the peer listener.
import GRPC
import KeelAPI
import Logging
import NIOCore
import NIOPosix
import Raft

/// raftpb.Raft: Stream (raft messages), SendSnapshot, LeaseRenew, LeaseTimeToLive.
struct PeerRaftService: GRPCService {
    let transport: PeerTransport

    var methods: [ServerMethod] {
        let t = transport
        return [
            // Decoding a batch and handing it to the Raft loop is all it does per message: on the
            // connection's loop, a received message reaches the Raft loop with one thread switch.
            .bidirectionalStreaming(Raftpb.Raft.stream) { requests, writer, ctx in
                try await t.serveStream(requests, writer, ctx)
            }.onConnectionLoop(),
            .clientStreaming(Raftpb.Raft.sendSnapshot) { chunks, ctx in
                try await t.receiveSnapshot(chunks, ctx)
            },
            .unary(Raftpb.Raft.leaseRenew) { req, ctx in
                try t.checkCluster(ctx)
                guard let renew = t.handlers.leaseRenew else {
                    throw GRPCStatus(.unimplemented, "keel: lease forwarding is not served by member \(hex(t.localID))")
                }
                t.counters.leaseCallsServed.add(1, ordering: .relaxed)
                var resp = Etcdserverpb.LeaseKeepAliveResponse()
                resp.id = req.id
                resp.ttl = try await renew(req.id)
                return resp
            },
            .unary(Raftpb.Raft.leaseTimeToLive) { req, ctx in
                try t.checkCluster(ctx)
                guard let ttl = t.handlers.leaseTimeToLive else {
                    throw GRPCStatus(.unimplemented, "keel: lease forwarding is not served by member \(hex(t.localID))")
                }
                t.counters.leaseCallsServed.add(1, ordering: .relaxed)
                return try await ttl(req)
            },
        ]
    }
}

extension PeerTransport {
    /// One incoming raft stream: accept (one StreamAck), then deliver each batch's messages.
    func serveStream(_ requests: RequestStream<Raftpb.MessageBatch>, _ writer: ResponseWriter<Raftpb.StreamAck>,
                     _ ctx: ServerContext) async throws {
        do throws(GRPCStatus) {
            try checkCluster(ctx)
        } catch {
            var refusal = Raftpb.StreamAck()
            refusal.refused = error.message
            try? await writer.send(refusal)
            throw error
        }
        let from = ctx.header("x-server-from") ?? "?"
        counters.streamsAccepted.add(1, ordering: .relaxed)
        try await writer.send(Raftpb.StreamAck())
        counters.acksSent.add(1, ordering: .relaxed)
        logger.debug("raft stream from peer accepted", metadata: ["peer": "\(from)"])
        let local = localID
        for try await batch in requests {
            counters.batchesReceived.add(1, ordering: .relaxed)
            var messages: [Raft.Message] = []
            messages.reserveCapacity(batch.messages.count)
            var refused = 0
            for pb in batch.messages {
                guard pb.to == local else {
                    refused += 1
                    continue
                }
                do {
                    messages.append(try PeerWire.decode(pb))
                } catch {
                    refused += 1
                    logger.warning("undecodable raft message dropped", metadata: ["peer": "\(from)", "error": "\(error)"])
                }
            }
            if refused > 0 { counters.messagesRefused.add(refused, ordering: .relaxed) }
            if !messages.isEmpty {
                counters.messagesReceived.add(messages.count, ordering: .relaxed)
                handlers.receive(messages)
            }
        }
    }
}

/// Listener for `--listen-peer-urls`: one GRPCServer per URL on the same HTTP/2 stack, serving
/// the transport's services plus the caller's extra ones. CORE starts it in KeelServer and
/// stops it with `shutdown()`.
public final class PeerServer: Sendable {
    public let servers: [GRPCServer]

    /// Binds every URL (`http://host:port`; port 0 picks a free one) or none: on a bind error the
    /// ones already bound are shut down and the error is thrown.
    public init(urls: [ServerURL], transport: PeerTransport, extraServices: [any GRPCService] = [],
                group: any EventLoopGroup, logger: Logger) async throws {
        var config = GRPCServer.Configuration()
        config.http2 = transport.options.http2
        let services = transport.services + extraServices
        var started: [GRPCServer] = []
        do {
            for url in urls {
                config.host = url.bindHost
                config.port = url.port
                let s = try await GRPCServer(configuration: config, services: services, group: group)
                started.append(s)
                logger.info("serving peer traffic", metadata: ["url": "\(url)", "port": "\(s.port)"])
            }
        } catch {
            for s in started { await s.shutdown(timeout: .seconds(1)) }
            throw error
        }
        self.servers = started
    }

    /// Bound ports, in the order of the URLs.
    public var ports: [Int] { servers.map(\.port) }

    /// Stops listening; open streams get GOAWAY and are closed after `timeout`. Long-lived raft
    /// streams never end by themselves, so a short timeout is the normal case.
    public func shutdown(timeout: TimeAmount = .milliseconds(500)) async {
        for s in servers { await s.shutdown(timeout: timeout) }
    }
}
