// Concurrency recipes on leases, revisions and watches, as etcd's clientv3/concurrency:
//   Session  a lease kept alive in the background; its keys vanish when the session ends or dies.
//   Mutex    lock/unlock: each waiter puts "<pfx>/<lease hex>" (attached to its session's lease); the key
//            with the smallest create revision holds the lock; a waiter waits for the deletion of the
//            waiter created just before it (not for the holder: no thundering herd), then re-checks.
//   Election campaign/proclaim/resign/leader/observe on the same ordering of keys under a prefix.
import GRPC
import KeelAPI

public enum ConcurrencyError: Error, Sendable, Equatable, CustomStringConvertible {
    case client(KeelClientError)
    case watch(WatchError)
    /// The session's lease is gone (its key was deleted while waiting): etcd's ErrSessionExpired.
    case sessionExpired
    /// TryLock found the mutex held by another session: etcd's ErrLocked.
    case locked
    /// Proclaim/Resign by a campaigner that is not (or no longer) the leader: ErrElectionNotLeader.
    case notLeader
    /// No leader is elected: ErrElectionNoLeader.
    case noLeader
    /// The waiting task was cancelled (its waiter key was removed again).
    case cancelled

    public var description: String {
        switch self {
        case .client(let e): return e.description
        case .watch(let e): return e.description
        case .sessionExpired: return "session expired"
        case .locked: return "mutex: Locked by another session"
        case .notLeader: return "election: not leader"
        case .noLeader: return "election: no leader"
        case .cancelled: return "context canceled"
        }
    }
}

/// Namespace of the recipes (clientv3/concurrency).
public enum Concurrency {}

extension Concurrency {
    /// A lease with a background keep-alive (etcd's concurrency.Session; default TTL 60 s as etcd's).
    public final class Session: Sendable {
        public let client: KeelClient
        /// The session's lease ID.
        public let lease: Int64
        public let ttl: Int64
        public let keepAlive: LeaseKeepAlive

        /// Grants a lease of `ttl` seconds (or adopts `lease`) and starts keeping it alive.
        public init(client: KeelClient, ttl: Int64 = 60, lease: Int64 = 0) async throws(ConcurrencyError) {
            self.client = client
            self.ttl = ttl
            if lease != 0 {
                self.lease = lease
            } else {
                do { self.lease = try await client.leaseGrant(ttl: ttl).id } catch { throw .client(error) }
            }
            keepAlive = client.keepAlive(self.lease)
        }

        /// Stops the keep-alive without revoking: the lease (and every key on it) expires after its TTL, as
        /// when the owning process dies.
        public func orphan() async { await keepAlive.stop() }

        /// Stops the keep-alive and revokes the lease (its keys are deleted at once).
        public func close() async throws(ConcurrencyError) {
            await keepAlive.stop()
            do {
                try await client.leaseRevoke(lease, timeout: .seconds(ttl))
            } catch where error.etcdError == .leaseNotFound {
                return
            } catch {
                throw .client(error)
            }
        }

        /// Waits until the session ends (stopped, or the lease expired).
        public func done() async -> LeaseKeepAliveEnd { await keepAlive.ended() }
    }
}

// MARK: waiting for deletions

extension Concurrency {
    /// Waits until `key` is deleted, watching from `revision`.
    static func waitDelete(_ client: KeelClient, key: [UInt8], revision: Int64) async throws(ConcurrencyError) {
        let w = client.watch(key, WatchOptions(startRevision: revision, bufferSize: 4))
        do {
            for try await r in w where r.events.contains(where: { $0.type == .delete }) {
                await w.cancel(timeout: .seconds(1))
                return
            }
        } catch let e as WatchError {
            throw .watch(e)
        } catch {
            throw .client(.unavailable("\(error)"))
        }
        await w.cancel(timeout: .seconds(1))
        if Task.isCancelled { throw .cancelled }
        throw .client(.unavailable("lost watcher waiting for delete"))
    }

    /// Waits until every key under `prefix` created at or before `maxCreateRevision` is gone (etcd's
    /// waitDeletes: always waits on the newest such key, so each waiter watches exactly one other key).
    static func waitDeletes(_ client: KeelClient, prefix: [UInt8], maxCreateRevision: Int64)
        async throws(ConcurrencyError) -> Etcdserverpb.ResponseHeader {
        while true {
            let r: Etcdserverpb.RangeResponse
            do {
                r = try await client.get(prefix, GetOptions.lastCreate.maxCreateRevision(maxCreateRevision))
            } catch { throw .client(error) }
            guard let last = r.kvs.first else { return r.header ?? Etcdserverpb.ResponseHeader() }
            try await waitDelete(client, key: last.key, revision: r.header?.revision ?? 0)
        }
    }

    static func leaseKey(_ prefix: [UInt8], _ lease: Int64) -> [UInt8] {
        prefix + Array(String(UInt64(bitPattern: lease), radix: 16).utf8)
    }
}

// MARK: mutex

extension Concurrency {
    /// A distributed lock on a key prefix (etcd's concurrency.Mutex). One Mutex object per session and lock.
    public actor Mutex {
        public let session: Session
        /// "<pfx>/" as etcd's NewMutex adds the slash.
        public nonisolated let prefix: [UInt8]
        /// This waiter's key ("<pfx>/<lease hex>") and its create revision, while locked or waiting.
        public private(set) var key: [UInt8] = []
        public private(set) var revision: Int64 = -1
        /// Header of the response that acquired the lock.
        public private(set) var header: Etcdserverpb.ResponseHeader?

        public init(session: Session, prefix: some KeelBytes) {
            self.session = session
            self.prefix = prefix.keelBytes + [UInt8(ascii: "/")]
        }

        /// One txn: create the key if it is not there (else read it), and read the current owner (the key with
        /// the smallest create revision).
        private func tryAcquire() async throws(ConcurrencyError) -> Etcdserverpb.TxnResponse {
            let client = session.client
            let myKey = Concurrency.leaseKey(prefix, session.lease)
            key = myKey
            let getOwner = Op.get(prefix, GetOptions.firstCreate)
            let resp: Etcdserverpb.TxnResponse
            do {
                resp = try await client.txn()
                    .when(.createRevision(myKey, .equal, 0))
                    .then(.put(myKey, "", PutOptions(lease: session.lease)), getOwner)
                    .else(.get(myKey), getOwner)
                    .commit()
            } catch { throw .client(error) }
            revision = resp.header?.revision ?? 0
            if !resp.succeeded {
                revision = resp.responses.first?.responseRange.kvs.first?.createRevision ?? revision
            }
            return resp
        }

        private func ownsLock(_ resp: Etcdserverpb.TxnResponse) -> Bool {
            let owner = resp.responses.count > 1 ? resp.responses[1].responseRange.kvs : []
            return owner.isEmpty || owner[0].createRevision == revision
        }

        /// Takes the lock if it is free (or already ours); else removes its waiter key and throws `.locked`.
        public func tryLock() async throws(ConcurrencyError) {
            let resp = try await tryAcquire()
            if ownsLock(resp) {
                header = resp.header
                return
            }
            do { try await session.client.delete(key) } catch { throw .client(error) }
            key = []
            revision = -1
            throw .locked
        }

        /// Waits until the lock is ours: queues behind the keys created before ours and waits for the
        /// deletion of the one just before (as etcd). On failure or cancellation the waiter key is removed.
        public func lock() async throws(ConcurrencyError) {
            let resp = try await tryAcquire()
            if ownsLock(resp) {
                header = resp.header
                return
            }
            let client = session.client
            do throws(ConcurrencyError) {
                _ = try await Concurrency.waitDeletes(client, prefix: prefix, maxCreateRevision: revision - 1)
                if Task.isCancelled { throw ConcurrencyError.cancelled }
            } catch {
                // Unlock in a fresh task: this one may be cancelled.
                let k = key
                _ = await Task { try? await client.delete(k) }.value
                key = []
                revision = -1
                throw error
            }
            // Our key must still exist: if the session's lease expired meanwhile, we do not hold the lock.
            let g: Etcdserverpb.RangeResponse
            do { g = try await client.get(key) } catch {
                let k = key
                _ = await Task { try? await client.delete(k) }.value
                throw .client(error)
            }
            guard !g.kvs.isEmpty else { throw .sessionExpired }
            header = g.header
        }

        /// Releases the lock (deletes the waiter key).
        public func unlock() async throws(ConcurrencyError) {
            guard !key.isEmpty else { return }
            do { try await session.client.delete(key) } catch { throw .client(error) }
            key = []
            revision = -1
        }

        /// A txn compare that holds while we own the lock (etcd's IsOwner).
        public func isOwner() -> Compare { .createRevision(key, .equal, revision) }
    }
}

// MARK: election

extension Concurrency {
    /// Leader election on a key prefix (etcd's concurrency.Election).
    public actor Election {
        public let session: Session
        public nonisolated let prefix: [UInt8]
        /// Our key and its create revision while campaigning or leading.
        public private(set) var leaderKey: [UInt8] = []
        public private(set) var leaderRevision: Int64 = 0
        private var leading = false
        public private(set) var header: Etcdserverpb.ResponseHeader?

        public init(session: Session, prefix: some KeelBytes) {
            self.session = session
            self.prefix = prefix.keelBytes + [UInt8(ascii: "/")]
        }

        /// Puts `value` as a candidate and waits until elected (every older candidate is gone).
        public func campaign(_ value: some KeelBytes) async throws(ConcurrencyError) {
            let client = session.client
            let k = Concurrency.leaseKey(prefix, session.lease)
            let resp: Etcdserverpb.TxnResponse
            do {
                resp = try await client.txn()
                    .when(.createRevision(k, .equal, 0))
                    .then(.put(k, value, PutOptions(lease: session.lease)))
                    .else(.get(k))
                    .commit()
            } catch { throw .client(error) }
            leaderKey = k
            leaderRevision = resp.header?.revision ?? 0
            leading = true
            if !resp.succeeded, let kv = resp.responses.first?.responseRange.kvs.first {
                leaderRevision = kv.createRevision
                if kv.value != value.keelBytes {
                    do { try await proclaim(value) } catch {
                        try? await resign()
                        throw error
                    }
                }
            }
            do throws(ConcurrencyError) {
                _ = try await Concurrency.waitDeletes(client, prefix: prefix, maxCreateRevision: leaderRevision - 1)
                if Task.isCancelled { throw ConcurrencyError.cancelled }
            } catch {
                if Task.isCancelled || error == .cancelled {
                    // Cancelled while waiting: withdraw the candidacy (in a task that is not cancelled).
                    let me = self
                    _ = await Task { try? await me.resign() }.value
                    throw .cancelled
                }
                leading = false
                throw error
            }
            header = resp.header
        }

        /// A new value from the leader without a new election.
        public func proclaim(_ value: some KeelBytes) async throws(ConcurrencyError) {
            guard leading else { throw .notLeader }
            let resp: Etcdserverpb.TxnResponse
            do {
                resp = try await session.client.txn()
                    .when(.createRevision(leaderKey, .equal, leaderRevision))
                    .then(.put(leaderKey, value, PutOptions(lease: session.lease)))
                    .commit()
            } catch { throw .client(error) }
            guard resp.succeeded else {
                leaderKey = []
                throw .notLeader
            }
            header = resp.header
        }

        /// Gives up leadership (deletes our key if it is still the one we created).
        public func resign() async throws(ConcurrencyError) {
            guard leading else { return }
            defer {
                leaderKey = []
                leading = false
            }
            do {
                let resp = try await session.client.txn()
                    .when(.createRevision(leaderKey, .equal, leaderRevision))
                    .then(.delete(leaderKey))
                    .commit()
                header = resp.header
            } catch { throw .client(error) }
        }

        /// The current leader's key-value (the oldest candidate); `.noLeader` when there is none.
        public nonisolated func leader() async throws(ConcurrencyError) -> Mvccpb.KeyValue {
            let r: Etcdserverpb.RangeResponse
            do { r = try await session.client.get(prefix, GetOptions.firstCreate) } catch { throw .client(error) }
            guard let kv = r.kvs.first else { throw .noLeader }
            return kv
        }

        /// The successive leaders' key-values (each proclaimed value of a leader, then the next leader...), as
        /// etcd's Observe: not necessarily every historical value, but always the latest (the newest are kept
        /// when the reader is slow). Ends with an error when a watch fails; cancel by dropping the iteration.
        public nonisolated func observe() -> AsyncThrowingStream<Mvccpb.KeyValue, any Error> {
            let (stream, cont) = AsyncThrowingStream<Mvccpb.KeyValue, any Error>.makeStream(bufferingPolicy: .bufferingNewest(16))
            let client = session.client
            let prefix = self.prefix
            let task = Task {
                do {
                    try await Election.observeLoop(client, prefix, cont)
                    cont.finish()
                } catch {
                    cont.finish(throwing: error)
                }
            }
            cont.onTermination = { _ in task.cancel() }
            return stream
        }

        static func observeLoop(_ client: KeelClient, _ prefix: [UInt8],
                                _ cont: AsyncThrowingStream<Mvccpb.KeyValue, any Error>.Continuation) async throws {
            while !Task.isCancelled {
                let r = try await client.get(prefix, GetOptions.firstCreate)
                var kv: Mvccpb.KeyValue
                var rev: Int64
                if let first = r.kvs.first {
                    kv = first
                    rev = r.header?.revision ?? 0
                } else {
                    // No leader: wait for the first put under the prefix.
                    let w = client.watch(prefix, WatchOptions(range: .prefix, startRevision: r.header?.revision ?? 0))
                    var found: Mvccpb.KeyValue?
                    for try await wr in w {
                        if let e = wr.events.first(where: { $0.type == .put }), let k = e.kv {
                            found = k
                            break
                        }
                    }
                    await w.cancel(timeout: .seconds(1))
                    guard let found else { return }
                    kv = found
                    rev = found.modRevision
                }
                cont.yield(kv)
                // Follow this leader's key until it is deleted.
                let w = client.watch(kv.key, WatchOptions(startRevision: rev + 1))
                var deleted = false
                for try await wr in w {
                    for e in wr.events {
                        if e.type == .delete {
                            deleted = true
                            break
                        }
                        if let k = e.kv { cont.yield(k) }
                    }
                    if deleted { break }
                }
                await w.cancel(timeout: .seconds(1))
                if !deleted { return }
            }
        }
    }
}
