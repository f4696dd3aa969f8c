import KeelAPI
import KeelClient
import KeelTestSupport
import Testing

/// A write's caller sees it in everything it does next on the same member, as with etcd: a serializable
/// get returns the value and mod revision of the put just answered, a watch created "from now" right
/// after a put starts after that put, and a lease's attached keys include a key just put with it.
///
/// Keel answers KV writes while the batch's LMDB commit (its fdatasync) is still in flight, and local
/// reads wait for that commit (`KeelCore.visibilityBarrier`). The read right after an answer lands in
/// that window whenever the commit takes longer than one client round trip, which is most of the time
/// with fsync on; several writers at once keep commits in flight for each other as well.
@Suite struct ReadYourWritesTests {
    @Test func serializableGetAfterPutSeesThePut() async throws {
        try await withServers { name, endpoint in
            let client = try KeelClient(endpoints: [endpoint])
            defer { Task { await client.close() } }
            let stale = try await withThrowingTaskGroup(of: [String].self) { g in
                for w in 0..<8 {
                    g.addTask {
                        var stale: [String] = []
                        let key = "ryw/\(w)"
                        for i in 0..<150 {
                            let put = try await client.put(key, "\(i)").header!.revision
                            let r = try await client.get(key, GetOptions().serializable())
                            let kv = r.kvs.first
                            if kv?.value != Array("\(i)".utf8) || kv?.modRevision != put || r.header!.revision < put {
                                stale.append("\(key) put \(i) at \(put), read \(kv.map { String(decoding: $0.value, as: UTF8.self) } ?? "nothing")"
                                             + " at \(kv?.modRevision ?? 0), header \(r.header!.revision)")
                            }
                        }
                        return stale
                    }
                }
                return try await g.reduce(into: []) { $0 += $1 }
            }
            #expect(stale.isEmpty, "\(name): \(stale.count) of 1,200 serializable reads missed the put just answered, e.g. \(stale.prefix(3))")
        }
    }

    @Test func watchFromNowAfterPutStartsAfterIt() async throws {
        try await withServers { name, endpoint in
            let client = try KeelClient(endpoints: [endpoint])
            defer { Task { await client.close() } }
            var wrong: [String] = []
            for i in 0..<100 {
                let first = try await client.put("ryw/w", "a\(i)").header!.revision
                let w = client.watch("ryw/w", WatchOptions(createdNotify: true))
                let created = try await within(.seconds(60), "created") { try await w.next() }
                #expect(created?.isCreated == true, "\(name)")
                let second = try await client.put("ryw/w", "b\(i)").header!.revision
                let next = try await within(.seconds(60), "first event") { try await w.next() }
                let revs = next?.events.map { $0.kv?.modRevision ?? 0 } ?? []
                if revs.first != second { wrong.append("#\(i): put at \(first), then \(second); first event(s) at \(revs)") }
                await w.cancel()
            }
            #expect(wrong.isEmpty, "\(name): a watch from now reported the put answered before it was created: \(wrong.prefix(3))")
        }
    }

    @Test func leaseKeysIncludeTheKeyJustPut() async throws {
        try await withServers { name, endpoint in
            let client = try KeelClient(endpoints: [endpoint])
            defer { Task { await client.close() } }
            let lease = try await client.leaseGrant(ttl: 60).id
            var missing: [Int] = []
            for i in 0..<60 {
                try await client.put("ryw/l\(i)", "v", lease: lease)
                let keys = try await client.leaseTimeToLive(lease, keys: true).keys
                if !keys.contains(Array("ryw/l\(i)".utf8)) || keys.count != i + 1 { missing.append(i) }
            }
            #expect(missing.isEmpty, "\(name): TimeToLive(keys) right after a put with the lease missed the key at \(missing)")
            try await client.leaseRevoke(lease)
        }
    }
}
