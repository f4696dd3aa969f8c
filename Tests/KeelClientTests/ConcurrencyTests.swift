import KeelAPI
import KeelClient
import KeelTestSupport
import Testing

/// Counts how many holders are inside the critical section at once.
actor Occupancy {
    var inside = 0
    var most = 0
    func enter() {
        inside += 1
        most = max(most, inside)
    }
    func leave() { inside -= 1 }
}

actor ObservedLog {
    var values: [String] = []
    func append(_ v: String) { values.append(v) }
}

@Suite struct ConcurrencyTests {
    /// Three clients, each with its own session, take the same lock five times each and increment a counter
    /// stored in the server with a plain read-then-write: mutual exclusion makes every increment count.
    @Test func mutexExcludesAndOrdersSeveralClients() async throws {
        try await withServers { name, endpoint in
            let occupancy = Occupancy()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<3 {
                    group.addTask {
                        let client = try KeelClient(endpoints: [endpoint])
                        let session = try await Concurrency.Session(client: client, ttl: 60)
                        let mutex = Concurrency.Mutex(session: session, prefix: "lock/counter")
                        for _ in 0..<5 {
                            try await within(.seconds(120), "the lock") { try await mutex.lock() }
                            await occupancy.enter()
                            let v = Int(try await client.get("counter").kvs.first?.value.text ?? "0") ?? -1000
                            try await client.put("counter", String(v + 1))
                            await occupancy.leave()
                            try await mutex.unlock()
                        }
                        try await session.close()
                        await client.close()
                    }
                }
                try await group.waitForAll()
            }
            let client = try KeelClient(endpoints: [endpoint])
            defer { Task { await client.close() } }
            #expect(try await client.get("counter").kvs.first?.value.text == "15", "\(name)")
            #expect(await occupancy.most == 1, "\(name)")
            // Every waiter key is gone (sessions revoked).
            #expect(try await client.get("lock/counter/", .prefix).kvs.isEmpty, "\(name)")
        }
    }

    /// A holder whose session dies (keep-alive stopped, lease not revoked, as a crashed process): the waiter
    /// gets the lock once the lease expires and deletes the holder's key. tryLock meanwhile says `.locked`.
    @Test func lockPassesWhenTheHoldersLeaseExpires() async throws {
        try await withServers { name, endpoint in
            let client = try KeelClient(endpoints: [endpoint])
            defer { Task { await client.close() } }
            let dying = try await Concurrency.Session(client: client, ttl: 8)   // renewed every ~2.7 s while alive; expires 8 s after orphan()
            let holder = Concurrency.Mutex(session: dying, prefix: "lock/x")
            try await holder.lock()
            let holderKey = await holder.key
            #expect(holderKey == Array("lock/x/\(String(UInt64(bitPattern: dying.lease), radix: 16))".utf8), "\(name)")

            let other = try KeelClient(endpoints: [endpoint])
            defer { Task { await other.close() } }
            let live = try await Concurrency.Session(client: other, ttl: 60)
            let probe = Concurrency.Mutex(session: live, prefix: "lock/x")
            await #expect(throws: ConcurrencyError.locked) { try await probe.tryLock() }
            #expect(try await other.get("lock/x/", .prefix).kvs.count == 1, "\(name): tryLock removed its key")

            let waiter = Concurrency.Mutex(session: live, prefix: "lock/x")
            let waiting = Task { try await waiter.lock() }
            // The waiter queues behind the holder (its key exists, created later) ...
            try await eventually("the waiter's key") { try await other.get("lock/x/", .prefix).kvs.count == 2 }
            // ... and gets the lock only after the holder's lease expires.
            await dying.orphan()
            try await within(.seconds(120), "the lock after the holder's lease expired") { try await waiting.value }
            #expect(await dying.done() == .stopped, "\(name)")
            #expect(try await other.get(holderKey).kvs.isEmpty, "\(name): the holder's key went with its lease")
            let owner = try await other.get("lock/x/", .firstCreate).kvs.first?.key
            #expect(owner == (await waiter.key), "\(name)")
            // The owner compare holds in a txn.
            #expect(try await other.txn().when(await waiter.isOwner()).commit().succeeded, "\(name)")
            try await waiter.unlock()
            try await live.close()
        }
    }

    @Test func electionCampaignProclaimResignObserveAndLeaderDeath() async throws {
        try await withServers { name, endpoint in
            let client = try KeelClient(endpoints: [endpoint])
            defer { Task { await client.close() } }
            let s1 = try await Concurrency.Session(client: client, ttl: 60)
            let s2 = try await Concurrency.Session(client: client, ttl: 8)
            let s3 = try await Concurrency.Session(client: client, ttl: 60)
            let e1 = Concurrency.Election(session: s1, prefix: "elect/x")
            let e2 = Concurrency.Election(session: s2, prefix: "elect/x")
            let e3 = Concurrency.Election(session: s3, prefix: "elect/x")
            await #expect(throws: ConcurrencyError.noLeader) { _ = try await e1.leader() }
            await #expect(throws: ConcurrencyError.notLeader) { try await e1.proclaim("nope") }

            // Observe from a background task into a log; checks wait (bounded) for the expected latest value.
            let log = ObservedLog()
            let observer = Task {
                for try await kv in e3.observe() { await log.append(kv.value.text) }
            }
            defer { observer.cancel() }
            func observes(_ v: String) async throws {
                try await eventually("observe to report \(v)") { await log.values.last == v }
            }
            try await e1.campaign("a")
            #expect(try await e1.leader().value.text == "a", "\(name)")
            try await observes("a")

            let second = Task { try await e2.campaign("b") }
            try await eventually("the second candidate") { try await client.get("elect/x/", .prefix).kvs.count == 2 }
            try await e1.proclaim("a2")
            #expect(try await e1.leader().value.text == "a2", "\(name)")
            try await observes("a2")

            try await e1.resign()
            try await within(.seconds(120), "the second candidate's election") { try await second.value }
            #expect(try await e2.leader().value.text == "b", "\(name)")
            try await observes("b")
            await #expect(throws: ConcurrencyError.notLeader) { try await e1.proclaim("late") }

            // The leader dies (its lease expires): the next candidate is elected.
            let third = Task { try await e3.campaign("c") }
            try await eventually("the third candidate") { try await client.get("elect/x/", .prefix).kvs.count == 2 }
            await s2.orphan()
            try await within(.seconds(120), "the third candidate's election") { try await third.value }
            #expect(try await e3.leader().value.text == "c", "\(name)")
            try await observes("c")
            #expect(await log.values == ["a", "a2", "b", "c"], "\(name)")
            try await e3.resign()
            try await s1.close()
            try await s3.close()
        }
    }
}
