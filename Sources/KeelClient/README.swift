// KeelClient: an etcd v3 client library (works against Keel and etcd) with clientv3's semantics.
//
// Layout
//   KeelClient.swift   the client: endpoints, round-robin balancer with unhealthy marking and probing back,
//                      dial timeout, leader pinning for writes, retry rules, `call` (any unary RPC),
//                      KeelClientError / EtcdError (etcd's codes and messages).
//   KV.swift           get (GetOptions: every RangeRequest option), put (PutOptions), delete (DeleteOptions),
//                      KeyRange (single/prefix/fromKey/end), Txn builder with Compare and Op, compact.
//   Watch.swift        Watch (AsyncSequence of WatchResponse) with resume after failures, WatchError.
//   Lease.swift        grant/revoke/time-to-live/list, LeaseKeepAlive (background), keepAliveOnce.
//   Cluster.swift      member list/add/remove/update/promote; status, defragment, hash, hashKV, alarms,
//                      move-leader, snapshot (SnapshotStream or a file).
//   Concurrency.swift  Concurrency.Session / Mutex / Election (clientv3/concurrency), ConcurrencyError.
//   Channel.swift      BoundedChannel: back-pressured hand-off from a stream's task to its iterator.
//
// Retry rules (clientv3's): idempotent calls (reads, read-only txns, status, lists) move on to the next
// endpoint on UNAVAILABLE or a connection failure. Writes move on only when nothing was sent (the dial
// failed) or the member refused before proposing ("etcdserver: no leader"); otherwise a write whose fate
// is unknown throws `.unknownOutcome` and is never resent.
//
// Streams (watch, keep-alive, snapshot) run as background tasks owned by the client: `close()` cancels
// them and waits for them. Their buffers are bounded (watch: `WatchOptions.bufferSize` responses, then
// back-pressure through HTTP/2 flow control; keep-alive TTL updates: the newest one).
//
// Example
//   let client = try KeelClient(endpoints: ["127.0.0.1:2379", "127.0.0.1:22379", "127.0.0.1:32379"])
//   try await client.put("cfg/a", "1")
//   let r = try await client.get("cfg/", GetOptions.prefix.sort(.mod, .descend).limit(10))
//   let t = try await client.txn().when(.version("cfg/a", .equal, 1)).then(.put("cfg/a", "2")).else(.get("cfg/a")).commit()
//   let w = client.watch("cfg/", WatchOptions(range: .prefix, startRevision: r.header!.revision + 1))
//   for try await resp in w { for e in resp.events { print(e.type, e.kv!.key) } }
//   let session = try await Concurrency.Session(client: client, ttl: 30)
//   let mutex = Concurrency.Mutex(session: session, prefix: "locks/job")
//   try await mutex.lock(); defer { Task { try? await mutex.unlock() } }
//   await client.close()
