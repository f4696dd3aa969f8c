// Cluster (membership) and Maintenance calls, as clientv3's Cluster and Maintenance interfaces.
// Membership changes are not resent once they may have reached a server (adding a member twice would
// add two); list, status, hash and alarm-get are retried elsewhere. Calls that are about one member
// (status, defragment, hash, hashKV, snapshot) take its endpoint, as etcdctl addresses each member.
import Foundation
import GRPC
import KeelAPI

extension KeelClient {
    // MARK: cluster

    /// Every member (`linearizable`: served through the leader, etcd 3.5's option; 3.4 ignores it).
    public func memberList(linearizable: Bool = false, timeout: Duration? = nil) async throws(KeelClientError)
        -> Etcdserverpb.MemberListResponse {
        var r = Etcdserverpb.MemberListRequest()
        r.linearizable = linearizable
        return try await call(Etcdserverpb.Cluster.memberList, r, idempotent: true, timeout: timeout)
    }

    public func memberAdd(peerURLs: [String], isLearner: Bool = false, timeout: Duration? = nil)
        async throws(KeelClientError) -> Etcdserverpb.MemberAddResponse {
        var r = Etcdserverpb.MemberAddRequest()
        r.peerURLs = peerURLs
        r.isLearner = isLearner
        return try await call(Etcdserverpb.Cluster.memberAdd, r, idempotent: false, timeout: timeout, write: true)
    }

    @discardableResult
    public func memberRemove(_ id: UInt64, timeout: Duration? = nil) async throws(KeelClientError)
        -> Etcdserverpb.MemberRemoveResponse {
        var r = Etcdserverpb.MemberRemoveRequest()
        r.id = id
        return try await call(Etcdserverpb.Cluster.memberRemove, r, idempotent: false, timeout: timeout, write: true)
    }

    @discardableResult
    public func memberUpdate(_ id: UInt64, peerURLs: [String], timeout: Duration? = nil) async throws(KeelClientError)
        -> Etcdserverpb.MemberUpdateResponse {
        var r = Etcdserverpb.MemberUpdateRequest()
        r.id = id
        r.peerURLs = peerURLs
        return try await call(Etcdserverpb.Cluster.memberUpdate, r, idempotent: false, timeout: timeout, write: true)
    }

    @discardableResult
    public func memberPromote(_ id: UInt64, timeout: Duration? = nil) async throws(KeelClientError)
        -> Etcdserverpb.MemberPromoteResponse {
        var r = Etcdserverpb.MemberPromoteRequest()
        r.id = id
        return try await call(Etcdserverpb.Cluster.memberPromote, r, idempotent: false, timeout: timeout, write: true)
    }

    // MARK: maintenance

    /// Status of the member at `endpoint` (nil: any endpoint, through the balancer).
    public func status(endpoint: String? = nil, timeout: Duration? = nil) async throws(KeelClientError)
        -> Etcdserverpb.StatusResponse {
        if let endpoint {
            return try await call(endpoint: endpoint, Etcdserverpb.Maintenance.status, Etcdserverpb.StatusRequest(),
                                  timeout: timeout)
        }
        return try await call(Etcdserverpb.Maintenance.status, Etcdserverpb.StatusRequest(), idempotent: true,
                              timeout: timeout)
    }

    /// Defragments the backend of the member at `endpoint` (etcd runs it on that member only).
    @discardableResult
    public func defragment(endpoint: String, timeout: Duration? = nil) async throws(KeelClientError)
        -> Etcdserverpb.DefragmentResponse {
        try await call(endpoint: endpoint, Etcdserverpb.Maintenance.defragment, Etcdserverpb.DefragmentRequest(),
                       timeout: timeout)
    }

    /// Hash of the whole backend of the member at `endpoint`.
    public func hash(endpoint: String, timeout: Duration? = nil) async throws(KeelClientError)
        -> Etcdserverpb.HashResponse {
        try await call(endpoint: endpoint, Etcdserverpb.Maintenance.hash, Etcdserverpb.HashRequest(), timeout: timeout)
    }

    /// Hash of the key-value history up to `revision` (0: the newest) of the member at `endpoint`.
    public func hashKV(endpoint: String, revision: Int64 = 0, timeout: Duration? = nil) async throws(KeelClientError)
        -> Etcdserverpb.HashKVResponse {
        var r = Etcdserverpb.HashKVRequest()
        r.revision = revision
        return try await call(endpoint: endpoint, Etcdserverpb.Maintenance.hashKV, r, timeout: timeout)
    }

    /// Active alarms of every member.
    public func alarmList(timeout: Duration? = nil) async throws(KeelClientError) -> [Etcdserverpb.AlarmMember] {
        var r = Etcdserverpb.AlarmRequest()
        r.action = .get
        return try await call(Etcdserverpb.Maintenance.alarm, r, idempotent: true, timeout: timeout).alarms
    }

    /// Clears an alarm (memberID 0 and alarm .none: every alarm, as etcdctl's `alarm disarm`).
    @discardableResult
    public func alarmDisarm(memberID: UInt64 = 0, alarm: Etcdserverpb.AlarmType = .none, timeout: Duration? = nil)
        async throws(KeelClientError) -> [Etcdserverpb.AlarmMember] {
        var targets: [Etcdserverpb.AlarmMember] = []
        if memberID == 0 && alarm == .none {
            targets = try await alarmList(timeout: timeout)
        } else {
            var m = Etcdserverpb.AlarmMember()
            m.memberID = memberID
            m.alarm = alarm
            targets = [m]
        }
        var out: [Etcdserverpb.AlarmMember] = []
        for t in targets {
            var r = Etcdserverpb.AlarmRequest()
            r.action = .deactivate
            r.memberID = t.memberID
            r.alarm = t.alarm
            out += try await call(Etcdserverpb.Maintenance.alarm, r, idempotent: true, timeout: timeout, write: true).alarms
        }
        return out
    }

    /// Transfers leadership to member `targetID`. Sent to the leader (learnt with Status on every endpoint);
    /// etcd answers "etcdserver: not leader" elsewhere.
    @discardableResult
    public func moveLeader(to targetID: UInt64, timeout: Duration? = nil) async throws(KeelClientError)
        -> Etcdserverpb.MoveLeaderResponse {
        var r = Etcdserverpb.MoveLeaderRequest()
        r.targetID = targetID
        guard let leader = await learnLeader() else { throw .server(code: .unavailable, message: EtcdError.noLeader.rawValue) }
        let resp = try await call(endpoint: leader, Etcdserverpb.Maintenance.moveLeader, r, timeout: timeout)
        state.withLock { $0.leader = nil }
        return resp
    }

    // MARK: snapshot

    /// The backend snapshot of one member (nil endpoint: the next healthy one) as a stream of chunks. The
    /// last chunk of etcd's stream is the SHA-256 of the data before it (etcd 3.4+ appends it; Keel too).
    /// Errors thrown by the iteration are `KeelClientError`s.
    public func snapshot(endpoint: String? = nil, bufferChunks: Int = 8) throws(KeelClientError) -> SnapshotStream {
        let i: Int
        if let endpoint {
            guard let at = endpoints.firstIndex(where: { $0.address == endpoint }) else { throw .badEndpoint(endpoint) }
            i = at
        } else {
            i = order()[0]
        }
        return SnapshotStream(client: self, index: i, capacity: bufferChunks)
    }

    /// Saves a member's snapshot to `path` (written to "path.part", renamed when complete, as etcdctl does).
    /// Returns the number of bytes written.
    @discardableResult
    public func snapshot(to path: String, endpoint: String? = nil) async throws(KeelClientError) -> Int {
        let part = path + ".part"
        guard FileManager.default.createFile(atPath: part, contents: nil),
              let handle = FileHandle(forWritingAtPath: part)
        else { throw .server(code: .internal, message: "cannot create \(part)") }
        var written = 0
        do {
            for try await chunk in try snapshot(endpoint: endpoint) {
                try handle.write(contentsOf: chunk)
                written += chunk.count
            }
            try handle.synchronize()
            try handle.close()
            if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
            try FileManager.default.moveItem(atPath: part, toPath: path)
        } catch {
            try? handle.close()
            try? FileManager.default.removeItem(atPath: part)
            if let e = error as? KeelClientError { throw e }
            throw .server(code: .internal, message: "snapshot to \(path): \(error)")
        }
        return written
    }
}

/// A member's snapshot as chunks of bytes (see `KeelClient.snapshot(endpoint:)`). Dropping it or cancelling
/// the iterating task ends the stream.
public final class SnapshotStream: AsyncSequence, Sendable {
    public typealias Element = [UInt8]
    let channel: BoundedChannel<[UInt8]>
    let task: Task<Void, Never>?

    init(client: KeelClient, index i: Int, capacity: Int) {
        let channel = BoundedChannel<[UInt8]>(capacity: capacity)
        self.channel = channel
        task = client.spawn {
            let ep = client.endpoints[i]
            do {
                try await client.dial(i)
                try await ep.client.serverStreaming(Etcdserverpb.Maintenance.snapshot, Etcdserverpb.SnapshotRequest()) {
                    responses in
                    for try await r in responses where !r.blob.isEmpty {
                        guard await channel.send(r.blob) else { return }
                    }
                }
                await channel.finish()
            } catch let e as KeelClientError {
                await channel.finish(e)
            } catch let st as GRPCStatus {
                await channel.finish(KeelClientError.server(code: st.code, message: st.message))
            } catch {
                await channel.finish(KeelClientError.unavailable("\(ep.address): \(error)"))
            }
        }
        if task == nil { Task { await channel.finish(KeelClientError.unavailable("client closed")) } }
    }

    deinit {
        task?.cancel()
        let ch = channel
        Task { await ch.abandon() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(stream: self) }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let stream: SnapshotStream
        public mutating func next() async throws -> [UInt8]? {
            let ch = stream.channel
            let task = stream.task
            return try await withTaskCancellationHandler {
                try await ch.next()
            } onCancel: {
                task?.cancel()
            }
        }
    }
}
