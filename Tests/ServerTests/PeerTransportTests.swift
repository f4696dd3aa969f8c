import Foundation
import GRPC
import KeelAPI
import Logging
import NIOCore
import NIOPosix
import Raft
import Synchronization
import KeelTestSupport
import Storage
import Testing
@testable import Server

/// What a test transport's handlers saw (handlers run on transport threads).
final class PeerRecorder: Sendable {
    let received = Mutex<[Raft.Message]>([])
    let unreachable = Mutex<[UInt64]>([])
    let snapshotStatus = Mutex<[(UInt64, Bool)]>([])
    let snapshots = Mutex<[(Raft.Message, [UInt8])]>([])
    let acceptSnapshots = Atomic<Bool>(true)

    var messages: [Raft.Message] { received.withLock { $0 } }
    func messages(from id: UInt64) -> [Raft.Message] { received.withLock { $0.filter { $0.from == id } } }
    var unreachableIDs: [UInt64] { unreachable.withLock { $0 } }
    var statuses: [(UInt64, Bool)] { snapshotStatus.withLock { $0 } }
}

/// One member: transport + peer listener on 127.0.0.1:0 (or a given port).
struct PeerNode {
    let id: UInt64
    let transport: PeerTransport
    var server: PeerServer?
    let recorder: PeerRecorder
    let dir: String
    var port: Int { server?.ports.first ?? 0 }
    var url: String { "http://127.0.0.1:\(port)" }

    static func start(id: UInt64, cluster: UInt64 = 0xc1, port: Int = 0,
                      leaseRenew: (@Sendable (Int64) async throws(GRPCStatus) -> Int64)? = nil,
                      leaseTimeToLive: (@Sendable (Etcdserverpb.LeaseTimeToLiveRequest) async throws(GRPCStatus)
                          -> Etcdserverpb.LeaseTimeToLiveResponse)? = nil,
                      isMemberRemoved: (@Sendable (UInt64) -> Bool)? = nil,
                      removedFromCluster: (@Sendable () -> Void)? = nil,
                      options: PeerTransport.Options = fastOptions,
                      outsideEphemeralRange: Bool = false) async throws -> PeerNode {
        let rec = PeerRecorder()
        let dir = try makeTempDirectory(prefix: "keel-peer-\(id)")
        let handlers = PeerTransport.Handlers(
            receive: { ms in rec.received.withLock { $0.append(contentsOf: ms) } },
            receiveSnapshot: { m, file in
                let bytes = readWholeFile(file)
                try? FileManager.default.removeItem(atPath: file)
                rec.snapshots.withLock { $0.append((m, bytes)) }
                return rec.acceptSnapshots.load(ordering: .relaxed)
            },
            unreachable: { id in rec.unreachable.withLock { $0.append(id) } },
            snapshotStatus: { id, failed in rec.snapshotStatus.withLock { $0.append((id, failed)) } },
            leaseRenew: leaseRenew, leaseTimeToLive: leaseTimeToLive,
            isMemberRemoved: isMemberRemoved, removedFromCluster: removedFromCluster)
        var logger = Logger(label: "peer-test-\(id)")
        logger.logLevel = .error
        let t = PeerTransport(localID: id, clusterID: cluster, snapshotDir: dir, group: MultiThreadedEventLoopGroup.singleton,
                              logger: logger, handlers: handlers, options: options)
        let s = outsideEphemeralRange
            ? try await bindOutsideEphemeralRange { p in
                try await PeerServer(urls: [ServerURL(scheme: "http", host: "127.0.0.1", port: p)], transport: t,
                                     group: MultiThreadedEventLoopGroup.singleton, logger: logger)
            }
            : try await PeerServer(urls: [ServerURL(scheme: "http", host: "127.0.0.1", port: port)], transport: t,
                                   group: MultiThreadedEventLoopGroup.singleton, logger: logger)
        return PeerNode(id: id, transport: t, server: s, recorder: rec, dir: dir)
    }

    /// Members 1 and 2, member 1 knowing member 2.
    static func pair(_ options: PeerTransport.Options = fastOptions) async throws -> (PeerNode, PeerNode) {
        let a = try await PeerNode.start(id: 1, options: options)
        let b = try await PeerNode.start(id: 2)
        a.transport.setPeer(id: 2, peerURLs: [b.url])
        return (a, b)
    }

    static var fastOptions: PeerTransport.Options {
        var o = PeerTransport.Options()
        o.handshakeTimeout = .seconds(10)
        return o
    }

    func stop() async {
        await server?.shutdown(timeout: .milliseconds(100))
        await transport.shutdown()
        removeTree(dir)
    }
}

func removeTree(_ dir: String) {
    try? FileManager.default.removeItem(atPath: dir)
}

func readWholeFile(_ path: String) -> [UInt8] {
    FileManager.default.contents(atPath: path).map { [UInt8]($0) } ?? []
}

func listDir(_ dir: String) -> [String] {
    (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
}

/// Polls `condition` every 10 ms for up to `limit` (a bound against hangs, not a speed assertion).
/// Binds on a random port outside Linux's ephemeral range (32768-60999), for tests that release a
/// port and bind it again or need it to stay refused: there, no port-0 listener and no outgoing
/// connection of a test running in parallel can take it in between (seen in whole-suite runs), and
/// `FreePorts.outsideEphemeralRange` never gives two tests of this process the same one (a restart
/// test's rebind once got EADDRINUSE in CI; another test of the process drawing the same random port
/// while the server was down is the cause this rules out).
func bindOutsideEphemeralRange<T>(_ bind: (Int) async throws -> T) async throws -> T {
    var last: (any Error)?
    for _ in 0..<200 {
        do { return try await bind(try FreePorts.outsideEphemeralRange()) } catch { last = error }
    }
    throw last!
}

func eventually(_ limit: Duration = .seconds(90), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

/// A stand-in for CORE's extra peer services.
struct PeerExtraService: GRPCService {
    var methods: [ServerMethod] {
        [.unary(Etcdserverpb.Maintenance.status) { _, _ in
            var r = Etcdserverpb.StatusResponse()
            r.version = "peer-extra"
            return r
        }]
    }
}

/// A MsgSnap from member 1 to member 2 (voters 1 and 2).
func snapshotMessage(index: UInt64, term: UInt64, learners: [UInt64] = []) -> Raft.Message {
    let meta = Raft.SnapshotMetadata(index: index, term: term, confState: Raft.ConfState(voters: [1, 2], learners: learners))
    return Raft.Message(type: .snapshot, from: 1, to: 2, term: term, snapshot: Raft.Snapshot(metadata: meta))
}

/// Exactly messages 0..<n, in order.
func numberedInOrder(_ ms: [Raft.Message], _ n: Int) -> Bool {
    ms.count == n && ms.enumerated().allSatisfy { $0.element.index == UInt64($0.offset) }
}

/// A message whose `index` numbers it (so order can be checked).
func numbered(_ n: Int, from: UInt64, to: UInt64, payload: Int = 0) -> Raft.Message {
    Raft.Message(type: .append, from: from, to: to, term: 1, logTerm: 1, index: UInt64(n),
                 entries: payload > 0 ? [Raft.Entry(term: 1, index: UInt64(n) + 1, data: [UInt8](repeating: 7, count: payload))] : [],
                 commit: UInt64(n))
}

/// Serialized: the tests are short (about 2 s together), and in parallel one test's released port
/// could become another's listener.
@Suite(.serialized) struct PeerTransportTests {
    @Test func twoMembersDeliverInOrderBothWays() async throws {
        let (a, b) = try await PeerNode.pair()
        b.transport.setPeer(id: 1, peerURLs: [a.url])
        for round in 0..<20 {
            a.transport.send((0..<50).map { numbered(round * 50 + $0, from: 1, to: 2) })
            b.transport.send((0..<50).map { numbered(round * 50 + $0, from: 2, to: 1) })
        }
        let ok = await eventually { b.recorder.messages.count == 1000 && a.recorder.messages.count == 1000 }
        #expect(ok)
        #expect(numberedInOrder(b.recorder.messages, 1000))
        #expect(numberedInOrder(a.recorder.messages, 1000))
        #expect(b.recorder.messages.allSatisfy { $0.from == 1 && $0.to == 2 && $0.type == .append })
        #expect(a.recorder.unreachableIDs.isEmpty && b.recorder.unreachableIDs.isEmpty)
        await a.stop()
        await b.stop()
    }

    @Test func threeMembersInOrderPerPair() async throws {
        var nodes: [PeerNode] = []
        for id in UInt64(1)...3 { nodes.append(try await PeerNode.start(id: id)) }
        for n in nodes {
            for p in nodes where p.id != n.id { n.transport.setPeer(id: p.id, peerURLs: [p.url]) }
        }
        // Each sends interleaved messages to both others in one call per round.
        for round in 0..<30 {
            for n in nodes {
                var batch: [Raft.Message] = []
                for k in 0..<10 {
                    for p in nodes where p.id != n.id { batch.append(numbered(round * 10 + k, from: n.id, to: p.id)) }
                }
                n.transport.send(batch)
            }
        }
        let ok = await eventually {
            nodes.allSatisfy { $0.recorder.messages.count == 600 && $0.transport.stats.streamsOpened == 2 }
        }
        #expect(ok)
        for n in nodes {
            for p in nodes where p.id != n.id {
                let got = n.recorder.messages(from: p.id)
                #expect(numberedInOrder(got, 300), "\(p.id) -> \(n.id)")
                #expect(got.allSatisfy { $0.to == n.id })
            }
            #expect(n.transport.stats.streamsOpened == 2)
            #expect(n.transport.stats.streamsAccepted == 2)
        }
        for n in nodes { await n.stop() }
    }

    /// 5,000 messages in 50 `send` calls: one stream, at most one batch per call, no per-message
    /// or per-batch answer (the receiver sends one StreamAck per stream).
    @Test func thousandsOfMessagesOneStreamFewBatches() async throws {
        var big = PeerNode.fastOptions
        big.queueCapacity = 10_000  // all 5,000 may be queued at once: none is dropped
        let (a, b) = try await PeerNode.pair(big)
        for round in 0..<50 {
            a.transport.send((0..<100).map { numbered(round * 100 + $0, from: 1, to: 2, payload: 16) })
        }
        // The sender counts a batch once its write returned, which may be after the receiver got it.
        let ok = await eventually {
            b.recorder.messages.count == 5000 && a.transport.stats.messagesSent == 5000 && a.transport.stats.streamsOpened == 1
        }
        #expect(ok)
        #expect(numberedInOrder(b.recorder.messages, 5000))
        let sa = a.transport.stats, sb = b.transport.stats
        #expect(sa.streamsAttempted == 1 && sa.streamsOpened == 1)
        #expect(sa.messagesSent == 5000 && sa.messagesDropped == 0)
        #expect(sa.batchesSent <= 50)
        #expect(sb.streamsAccepted == 1 && sb.acksSent == 1)
        #expect(sb.batchesReceived == sa.batchesSent && sb.messagesReceived == 5000)
        // One HTTP/2 stream for all of it on the receiving server.
        #expect(b.server!.servers[0].counters.streamsOpened == 1)
        await a.stop()
        await b.stop()
    }

    /// A message the receiver could not take (over its 16 MiB message limit) is dropped by the
    /// sender; the stream stays up and the messages around it arrive.
    @Test func oversizedMessageIsDroppedNotTheStream() async throws {
        let (a, b) = try await PeerNode.pair()
        let big = numbered(1, from: 1, to: 2, payload: 17 << 20)
        a.transport.send([numbered(0, from: 1, to: 2), big, numbered(2, from: 1, to: 2)])
        let ok = await eventually { b.recorder.messages.count == 2 && a.transport.stats.messagesSent == 2 }
        #expect(ok)
        #expect(b.recorder.messages.map(\.index) == [0, 2])
        #expect(a.transport.stats.messagesDropped == 1 && a.transport.stats.streamsAttempted == 1)
        await a.stop()
        await b.stop()
    }

    /// Throughput figure (not an assertion on speed): KEEL_PEER_BENCH=1 sends 200,000 small
    /// messages and 20,000 appends with a 4 KiB entry, and prints messages/s and MB/s.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["KEEL_PEER_BENCH"] == "1"))
    func throughputFigures() async throws {
        var options = PeerNode.fastOptions
        options.queueCapacity = 300_000
        let (a, b) = try await PeerNode.pair(options)
        for (count, payload) in [(200_000, 0), (20_000, 4096)] {
            let before = b.recorder.messages.count
            let start = ContinuousClock.now
            for round in 0..<(count / 100) {
                a.transport.send((0..<100).map { numbered(round * 100 + $0, from: 1, to: 2, payload: payload) })
            }
            let ok = await eventually(.seconds(600)) { b.recorder.messages.count == before + count }
            #expect(ok)
            let secs = Double((ContinuousClock.now - start).components.attoseconds) / 1e18
                + Double((ContinuousClock.now - start).components.seconds)
            let s = a.transport.stats
            print("peer bench: \(count) messages with \(payload)-byte entries in \(secs) s: \(Int(Double(count) / secs)) msg/s, "
                  + "\(Int(Double(count * payload) / secs / 1e6)) MB/s of entries; batches so far \(s.batchesSent)")
        }
        await a.stop()
        await b.stop()
    }

    @Test func downPeerIsReportedAndDoesNotDelayOthers() async throws {
        var options = PeerNode.fastOptions
        options.queueCapacity = 12_000  // member 2's 10,000 always fit; member 3's 30,000 do not
        let a = try await PeerNode.start(id: 1, options: options)
        let b = try await PeerNode.start(id: 2)
        // Member 3's port: held by a socket that is bound but never listens, for the whole test, so
        // connecting is refused and no parallel test can bind it meanwhile (a port closed again could
        // be taken by another test's random bind: CI once saw 15,000 messages "sent" to member 3).
        let dead = try FreePorts.reserveRefusing()
        defer { close(dead.fd) }
        let deadURL = "http://127.0.0.1:\(dead.port)"
        a.transport.setPeer(id: 2, peerURLs: [b.url])
        a.transport.setPeer(id: 3, peerURLs: [deadURL])
        // send never waits for member 3: its overflow is dropped, the rest dropped on each failure.
        for round in 0..<100 {
            var batch: [Raft.Message] = []
            for k in 0..<100 {
                for j in 0..<3 { batch.append(numbered((round * 100 + k) * 3 + j, from: 1, to: 3)) }
                batch.append(numbered(round * 100 + k, from: 1, to: 2))
            }
            a.transport.send(batch)
        }
        let ok = await eventually {
            b.recorder.messages.count == 10_000 && a.transport.stats.messagesSent == 10_000
                && a.recorder.unreachableIDs.contains(3)
                && a.transport.stats.messagesDropped >= 30_000 - options.queueCapacity
        }
        #expect(ok, "received \(b.recorder.messages.count), stats \(a.transport.stats), unreachable \(a.recorder.unreachableIDs)")
        #expect(numberedInOrder(b.recorder.messages, 10_000))
        #expect(!a.recorder.unreachableIDs.contains(2))
        let s = a.transport.stats
        #expect(s.messagesSent == 10_000)
        #expect(s.streamFailures >= 1)
        await a.stop()
        await b.stop()
    }

    /// A peer that accepts the connection but never reads or answers (like a stopped process):
    /// its stream is given up after the handshake timeout and reported, the other peer gets
    /// everything, and shutdown does not wait for the silent peer.
    @Test(.timeLimit(.minutes(2))) func silentPeerIsGivenUpAndDoesNotDelayOthers() async throws {
        var options = PeerNode.fastOptions
        options.handshakeTimeout = .seconds(1)
        let a = try await PeerNode.start(id: 1, options: options)
        let b = try await PeerNode.start(id: 2)
        let silent = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.autoRead, value: false)
            .bind(host: "127.0.0.1", port: 0).get()
        a.transport.setPeer(id: 2, peerURLs: [b.url])
        a.transport.setPeer(id: 3, peerURLs: ["http://127.0.0.1:\(silent.localAddress!.port!)"])
        for round in 0..<20 {
            a.transport.send((0..<100).flatMap { k in
                [numbered(round * 100 + k, from: 1, to: 3, payload: 1024), numbered(round * 100 + k, from: 1, to: 2)]
            })
        }
        let ok = await eventually { b.recorder.messages.count == 2000 && a.recorder.unreachableIDs.contains(3) }
        #expect(ok)
        #expect(numberedInOrder(b.recorder.messages, 2000))
        #expect(!a.recorder.unreachableIDs.contains(2))
        #expect(a.transport.stats.streamFailures >= 1)
        await a.stop()
        await b.stop()
        try await silent.close()
    }

    @Test func reconnectsAfterPeerServerRestarts() async throws {
        let a = try await PeerNode.start(id: 1)
        var b = try await PeerNode.start(id: 2, outsideEphemeralRange: true)
        a.transport.setPeer(id: 2, peerURLs: [b.url])
        a.transport.send([numbered(0, from: 1, to: 2)])
        #expect(await eventually { b.recorder.messages.count == 1 })
        let port = b.port
        await b.server!.shutdown(timeout: .milliseconds(50))
        b.server = nil
        // Keep the port from other processes' tests (which bind random ports in the same range)
        // until the restarted server has it again.
        let hold = try FreePorts.holdForRebind(port)
        defer { close(hold) }
        // While member 2 is down, sends are reported unreachable.
        var n = 1
        let down = await eventually {
            a.transport.send([numbered(n, from: 1, to: 2)])
            n += 1
            return a.recorder.unreachableIDs.contains(2)
        }
        #expect(down)
        // Same port again (SO_REUSEADDR), same transport.
        b.server = try await PeerServer(urls: [ServerURL(scheme: "http", host: "127.0.0.1", port: port)],
                                        transport: b.transport, group: MultiThreadedEventLoopGroup.singleton,
                                        logger: Logger(label: "peer-test-2b"))
        let before = b.recorder.messages.count
        let marker = 1_000_000
        var k = 0
        let back = await eventually {
            a.transport.send([numbered(marker + k, from: 1, to: 2)])
            k += 1
            return b.recorder.messages.count > before && a.transport.stats.streamsOpened >= 2
        }
        #expect(back)
        // Order still holds across the reconnect (lost messages are allowed, reordering is not).
        let idx = b.recorder.messages.map(\.index)
        #expect(zip(idx, idx.dropFirst()).allSatisfy { $0 < $1 })
        await a.stop()
        await b.stop()
    }

    @Test func snapshotOf21MiBArrivesByteIdentical() async throws {
        let (a, b) = try await PeerNode.pair()
        var rng = KeelTestSupport.SplitMix64(seed: 42)
        let size = 21 * 1024 * 1024 + 12345
        var data = [UInt8](repeating: 0, count: size)
        data.withUnsafeMutableBytes { raw in
            for i in 0..<(size / 8) { raw.storeBytes(of: rng.next(), toByteOffset: i * 8, as: UInt64.self) }
        }
        let file = "\(a.dir)/out.snap"
        #expect(FileManager.default.createFile(atPath: file, contents: Data(data)))
        let msg = snapshotMessage(index: 5000, term: 6, learners: [4])
        a.transport.sendSnapshot(msg, file: file)
        let ok = await eventually(.seconds(180)) { !a.recorder.statuses.isEmpty }
        #expect(ok)
        let statuses = a.recorder.statuses
        #expect(statuses.count == 1 && statuses.first?.0 == 2 && statuses.first?.1 == false)
        let got = b.recorder.snapshots.withLock { $0 }
        try #require(got.count == 1)
        #expect(got[0].0 == msg)
        #expect(got[0].1.count == size)
        #expect(got[0].1 == data)
        #expect(a.transport.stats.snapshotsSent == 1 && a.transport.stats.snapshotBytesSent == size)
        #expect(b.transport.stats.snapshotsReceived == 1)
        await a.stop()
        await b.stop()
    }

    @Test func snapshotFailuresAreReported() async throws {
        let (a, b) = try await PeerNode.pair()
        let msg = snapshotMessage(index: 10, term: 2)
        // 1. The file does not exist.
        a.transport.sendSnapshot(msg, file: "\(a.dir)/missing.snap")
        #expect(await eventually { a.recorder.statuses.count == 1 })
        #expect(a.recorder.statuses.last?.1 == true)
        // 2. The receiver does not apply it.
        b.recorder.acceptSnapshots.store(false, ordering: .relaxed)
        let file = "\(a.dir)/small.snap"
        #expect(FileManager.default.createFile(atPath: file, contents: Data(repeating: 3, count: 3 * 1024 * 1024 + 1)))
        a.transport.sendSnapshot(msg, file: file)
        #expect(await eventually { a.recorder.statuses.count == 2 })
        #expect(a.recorder.statuses.last?.1 == true)
        #expect(b.recorder.snapshots.withLock { $0.count } == 1)
        #expect(a.recorder.unreachableIDs.contains(2))
        await a.stop()
        await b.stop()
    }

    /// Broken chunk sequences are refused (a gap, a short stream, a wrong checksum); nothing is
    /// handed to the member and no file is left behind.
    @Test func brokenChunkSequenceIsRefused() async throws {
        let b = try await PeerNode.start(id: 2)
        let client = GRPCClient(host: "127.0.0.1", port: b.port)
        func chunk(_ offset: UInt64, _ byte: UInt8, last: Bool = false, crc: UInt32 = 0) -> Raftpb.SnapshotChunk {
            var c = Raftpb.SnapshotChunk()
            if offset == 0 {
                c.from = 1
                c.to = 2
                c.message = PeerWire.encode(snapshotMessage(index: 10, term: 2))
                c.size = 200
            }
            c.offset = offset
            c.data = [UInt8](repeating: byte, count: 100)
            c.last = last
            c.crc32c = crc
            return c
        }
        let good = CRC32C.checksum([UInt8](repeating: 1, count: 100) + [UInt8](repeating: 2, count: 100))
        let cases: [([Raftpb.SnapshotChunk], GRPCStatus)] = [
            ([chunk(0, 1), chunk(150, 2)], GRPCStatus(.invalidArgument, "keel: snapshot chunk at offset 150, expected offset 100")),
            ([chunk(0, 1, last: true)], GRPCStatus(.invalidArgument, "keel: snapshot ended at 100 of 200 bytes")),
            ([chunk(0, 1), chunk(100, 2, last: true, crc: good ^ 1)], GRPCStatus(.dataLoss, "keel: snapshot CRC-32C mismatch")),
            ([chunk(0, 1), chunk(100, 2), chunk(200, 3, last: true)],
             GRPCStatus(.invalidArgument, "keel: snapshot data beyond its announced size 200")),
        ]
        let headers: [(name: String, value: String)] = [("x-etcd-cluster-id", "c1"), ("x-server-from", "1")]
        for (chunks, expected) in cases {
            await #expect(throws: expected) {
                _ = try await client.clientStreaming(Raftpb.Raft.sendSnapshot, options: CallOptions(metadata: headers)) { w in
                    for c in chunks { try await w.send(c) }
                }
            }
        }
        #expect(b.recorder.snapshots.withLock { $0.isEmpty })
        #expect(b.transport.stats.snapshotsRefused == cases.count)
        #expect(listDir(b.dir).isEmpty)
        // The same chunks with the right checksum are accepted.
        let ack = try await client.clientStreaming(Raftpb.Raft.sendSnapshot, options: CallOptions(metadata: headers)) { w in
            try await w.send(chunk(0, 1))
            try await w.send(chunk(100, 2, last: true, crc: good))
        }
        #expect(ack.ok)
        #expect(b.recorder.snapshots.withLock { $0.map(\.1) } == [[UInt8](repeating: 1, count: 100) + [UInt8](repeating: 2, count: 100)])
        await client.close()
        // A transfer cut by a crash leaves a `.part`; the next transport on the directory removes it.
        let stale = "\(b.dir)/incoming-1-2-10-abc.snap.part"
        #expect(FileManager.default.createFile(atPath: stale, contents: Data([1, 2, 3])))
        let keep = "\(b.dir)/other.snap"
        #expect(FileManager.default.createFile(atPath: keep, contents: Data([4])))
        let restarted = PeerTransport(localID: 2, clusterID: 0xc1, snapshotDir: b.dir, group: MultiThreadedEventLoopGroup.singleton,
                                      logger: Logger(label: "peer-restart"), handlers: b.transport.handlers)
        #expect(listDir(b.dir) == ["other.snap"])
        await restarted.shutdown()
        await b.stop()
    }

    @Test func clusterIDMismatchIsRefused() async throws {
        // The refusal arrives as a StreamAck (the handshake timeout, 10 s here, is not what ends it).
        let a = try await PeerNode.start(id: 1, cluster: 0xaaaa)
        let b = try await PeerNode.start(id: 2, cluster: 0xbbbb)
        a.transport.setPeer(id: 2, peerURLs: [b.url])
        let refused = await eventually {
            a.transport.send([numbered(1, from: 1, to: 2)])
            return a.recorder.unreachableIDs.contains(2) && b.transport.stats.streamsRefused > 0
        }
        #expect(refused)
        #expect(b.recorder.messages.isEmpty)
        #expect(a.transport.stats.streamsOpened == 0)
        #expect(a.transport.stats.streamsRefusedByPeer >= 1)
        // The status as a client sees it: etcd's text.
        let client = GRPCClient(host: "127.0.0.1", port: b.port)
        await #expect {
            try await client.unary(Raftpb.Raft.leaseRenew, Etcdserverpb.LeaseKeepAliveRequest(),
                                   options: CallOptions(metadata: [("x-etcd-cluster-id", "aaaa")]))
        } throws: { error in
            (error as? GRPCStatus) == GRPCStatus(.failedPrecondition, "cluster ID mismatch")
        }
        // Messages for another member are dropped by the receiver.
        try await client.bidirectionalStreaming(Raftpb.Raft.stream,
                                                options: CallOptions(metadata: [("x-etcd-cluster-id", "bbbb")])) { w, r in
            var batch = Raftpb.MessageBatch()
            batch.messages = [PeerWire.encode(numbered(1, from: 1, to: 9)), PeerWire.encode(numbered(2, from: 1, to: 2))]
            try await w.send(batch)
            w.finish()
            for try await _ in r {}
        }
        #expect(b.recorder.messages.map(\.index) == [2])
        #expect(b.transport.stats.messagesRefused == 1)
        await client.close()
        await a.stop()
        await b.stop()
    }

    /// PeerServer serves the caller's extra services next to raftpb.Raft, and a URL it cannot
    /// bind fails the whole start with the already bound listeners released.
    @Test func peerServerExtraServicesAndBindFailure() async throws {
        let a = try await PeerNode.start(id: 1)
        let group = MultiThreadedEventLoopGroup.singleton
        let server = try await bindOutsideEphemeralRange { p in
            try await PeerServer(urls: [ServerURL(scheme: "http", host: "127.0.0.1", port: p)], transport: a.transport,
                                 extraServices: [PeerExtraService()], group: group, logger: Logger(label: "peer-extra"))
        }
        let client = GRPCClient(host: "127.0.0.1", port: server.ports[0])
        #expect(try await client.unary(Etcdserverpb.Maintenance.status, Etcdserverpb.StatusRequest()).version == "peer-extra")
        // raftpb.Raft is there too (refusing a foreign cluster).
        await #expect(throws: GRPCStatus(.failedPrecondition, "cluster ID mismatch")) {
            try await client.unary(Raftpb.Raft.leaseRenew, Etcdserverpb.LeaseKeepAliveRequest(),
                                   options: CallOptions(metadata: [("x-etcd-cluster-id", "1")]))
        }
        await client.close()
        let taken = server.ports[0]
        await server.shutdown()
        // The second URL's port is held by member 1's own listener: the start fails as a whole.
        await #expect(throws: (any Error).self) {
            _ = try await PeerServer(urls: [ServerURL(scheme: "http", host: "127.0.0.1", port: taken),
                                            ServerURL(scheme: "http", host: "127.0.0.1", port: a.port)],
                                     transport: a.transport, group: group, logger: Logger(label: "peer-extra"))
        }
        // The first URL was released again: it binds.
        let again = try await PeerServer(urls: [ServerURL(scheme: "http", host: "127.0.0.1", port: taken)], transport: a.transport,
                                         group: group, logger: Logger(label: "peer-extra"))
        #expect(again.ports == [taken])
        await again.shutdown()
        await a.stop()
    }

    /// A member the receiver knows as removed is refused with etcd's text, and learns it.
    @Test func removedMemberIsRefusedAndTold() async throws {
        let removed = Atomic<Int>(0)
        let a = try await PeerNode.start(id: 1, removedFromCluster: { removed.add(1, ordering: .relaxed) })
        let b = try await PeerNode.start(id: 2, isMemberRemoved: { $0 == 1 })
        let c = try await PeerNode.start(id: 3, isMemberRemoved: { $0 == 1 })
        a.transport.setPeer(id: 2, peerURLs: [b.url])
        a.transport.setPeer(id: 3, peerURLs: [c.url])
        c.transport.setPeer(id: 2, peerURLs: [b.url])
        let told = await eventually {
            a.transport.send([numbered(1, from: 1, to: 2), numbered(1, from: 1, to: 3)])
            return removed.load(ordering: .relaxed) == 1 && a.transport.stats.streamsRefusedByPeer >= 2
        }
        #expect(told)
        #expect(removed.load(ordering: .relaxed) == 1)  // once, though two peers refused
        #expect(b.recorder.messages.isEmpty && c.recorder.messages.isEmpty)
        // Members not removed still talk.
        c.transport.send([numbered(7, from: 3, to: 2)])
        #expect(await eventually { b.recorder.messages.map(\.index) == [7] })
        let client = GRPCClient(host: "127.0.0.1", port: b.port)
        await #expect(throws: GRPCStatus(.failedPrecondition, "the member has been permanently removed from the cluster")) {
            try await client.unary(Raftpb.Raft.leaseRenew, Etcdserverpb.LeaseKeepAliveRequest(),
                                   options: CallOptions(metadata: [("x-etcd-cluster-id", "c1"), ("x-server-from", "1")]))
        }
        await client.close()
        for n in [a, b, c] { await n.stop() }
    }

    @Test func leaseForwardingRoundTripAndErrors() async throws {
        let leader = try await PeerNode.start(
            id: 2,
            leaseRenew: { id async throws(GRPCStatus) -> Int64 in
                guard id == 7 else { throw GRPCStatus(.notFound, "etcdserver: requested lease not found") }
                return 42
            },
            leaseTimeToLive: { req async throws(GRPCStatus) -> Etcdserverpb.LeaseTimeToLiveResponse in
                guard req.id == 7 else { throw GRPCStatus(.notFound, "etcdserver: requested lease not found") }
                var r = Etcdserverpb.LeaseTimeToLiveResponse()
                r.id = 7
                r.ttl = 41
                r.grantedTTL = 60
                r.keys = req.keys ? [Array("k1".utf8)] : []
                return r
            })
        let follower = try await PeerNode.start(id: 1)
        follower.transport.setPeer(id: 2, peerURLs: [leader.url])
        leader.transport.setPeer(id: 1, peerURLs: [follower.url])
        #expect(try await follower.transport.forwardLeaseRenew(to: 2, id: 7) == 42)
        await #expect(throws: GRPCStatus(.notFound, "etcdserver: requested lease not found")) {
            try await follower.transport.forwardLeaseRenew(to: 2, id: 8)
        }
        var req = Etcdserverpb.LeaseTimeToLiveRequest()
        req.id = 7
        req.keys = true
        let r = try await follower.transport.forwardLeaseTimeToLive(to: 2, req)
        #expect(r.id == 7 && r.ttl == 41 && r.grantedTTL == 60 && r.keys == [Array("k1".utf8)])
        req.id = 9
        await #expect(throws: GRPCStatus(.notFound, "etcdserver: requested lease not found")) {
            try await follower.transport.forwardLeaseTimeToLive(to: 2, req)
        }
        // A member without lease handlers, and an unknown member.
        await #expect(throws: GRPCStatus.self) { try await leader.transport.forwardLeaseRenew(to: 1, id: 7) }
        do {
            _ = try await follower.transport.forwardLeaseRenew(to: 5, id: 7)
            Issue.record("forwarding to an unknown member succeeded")
        } catch {
            #expect(error.code == .unavailable)
        }
        #expect(leader.transport.stats.leaseCallsServed == 4)
        await follower.stop()
        await leader.stop()
    }
}

