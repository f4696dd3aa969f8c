import KeelAPI
import KeelClient
import KeelTestSupport
import Testing

/// The typed KV API (every Range option, put/delete options, the txn builder, compact) against etcd 3.4 and keel.
@Suite struct KVOptionsTests {
    @Test func getWithEveryRangeOption() async throws {
        try await withServers { name, endpoint in
            let client = try KeelClient(endpoints: [endpoint])
            defer { Task { await client.close() } }
            // a=1 (rev r0+1), b=2, c=3, d=4; then b again (version 2).
            var revs: [Int64] = []
            for (k, v) in [("o/a", "1"), ("o/b", "22"), ("o/c", "333"), ("o/d", "4444"), ("o/b", "2")] {
                revs.append(try await client.put(k, v).header!.revision)
            }
            try await client.put("p", "outside")
            func keys(_ r: Etcdserverpb.RangeResponse) -> [String] { r.kvs.map { $0.key.text } }

            #expect(keys(try await client.get("o/", .prefix)) == ["o/a", "o/b", "o/c", "o/d"], "\(name)")
            #expect(keys(try await client.get("o/c", .fromKey)) == ["o/c", "o/d", "p"], "\(name)")
            #expect(keys(try await client.get("o/b", GetOptions().rangeEnd("o/d"))) == ["o/b", "o/c"], "\(name)")
            let limited = try await client.get("o/", GetOptions.prefix.limit(2))
            #expect(keys(limited) == ["o/a", "o/b"] && limited.more && limited.count == 4, "\(name)")
            // At the revision of the 2nd put: only a and b (b's first value).
            let old = try await client.get("o/", GetOptions.prefix.revision(revs[1]))
            #expect(keys(old) == ["o/a", "o/b"] && old.kvs[1].value.text == "22", "\(name)")
            // Sorts.
            #expect(keys(try await client.get("o/", GetOptions.prefix.sort(.key, .descend))) == ["o/d", "o/c", "o/b", "o/a"])
            #expect(keys(try await client.get("o/", GetOptions.prefix.sort(.mod, .descend))) == ["o/b", "o/d", "o/c", "o/a"])
            #expect(keys(try await client.get("o/", GetOptions.prefix.sort(.version, .descend).limit(1))) == ["o/b"])
            #expect(keys(try await client.get("o/", GetOptions.prefix.sort(.value, .ascend))) == ["o/a", "o/b", "o/c", "o/d"])
            #expect(keys(try await client.get("o/", .firstCreate)) == ["o/a"], "\(name)")
            #expect(keys(try await client.get("o/", .lastCreate)) == ["o/d"], "\(name)")
            #expect(keys(try await client.get("o/", .lastKey)) == ["o/d"], "\(name)")
            // Key sort ascending is sent as "no sort" (clientv3's rule).
            #expect(GetOptions.prefix.sort(.key, .ascend).request("x").sortOrder == .none)
            // serializable, keysOnly, countOnly.
            #expect(keys(try await client.get("o/", GetOptions.prefix.serializable())).count == 4, "\(name)")
            let ko = try await client.get("o/", GetOptions.prefix.keysOnly())
            #expect(ko.kvs.count == 4 && ko.kvs.allSatisfy { $0.value.isEmpty }, "\(name)")
            let co = try await client.get("o/", GetOptions.prefix.countOnly())
            #expect(co.kvs.isEmpty && co.count == 4, "\(name)")
            // Revision filters: mod >= rev of c's put; create <= rev of b's create.
            #expect(keys(try await client.get("o/", GetOptions.prefix.minModRevision(revs[2]))) == ["o/b", "o/c", "o/d"])
            #expect(keys(try await client.get("o/", GetOptions.prefix.maxModRevision(revs[3]))) == ["o/a", "o/c", "o/d"])
            #expect(keys(try await client.get("o/", GetOptions.prefix.minCreateRevision(revs[2]))) == ["o/c", "o/d"])
            #expect(keys(try await client.get("o/", GetOptions.prefix.maxCreateRevision(revs[1]))) == ["o/a", "o/b"])
            // Every key with an empty prefix.
            #expect(try await client.get("", .prefix).count == 5, "\(name)")
            // A future revision: etcd's error, typed.
            do {
                _ = try await client.get("o/a", GetOptions().revision(revs[4] + 1000))
                Issue.record("\(name): a future revision was served")
            } catch let error as KeelClientError {
                #expect(error.etcdError == .futureRevision, "\(name): \(error)")
            }
        }
    }

    @Test func putAndDeleteOptions() async throws {
        try await withServers { name, endpoint in
            let client = try KeelClient(endpoints: [endpoint])
            defer { Task { await client.close() } }
            let lease = try await client.leaseGrant(ttl: 600).id
            try await client.put("po/k", "v1", PutOptions(lease: lease))
            let p = try await client.put("po/k", "v2", PutOptions(prevKV: true, ignoreLease: true))
            #expect(p.prevKv?.value.text == "v1", "\(name)")
            var kv = try await client.get("po/k").kvs.first
            #expect(kv?.value.text == "v2" && kv?.lease == lease, "\(name): ignoreLease keeps the lease")
            try await client.put("po/k", "", PutOptions(ignoreValue: true))
            kv = try await client.get("po/k").kvs.first
            #expect(kv?.value.text == "v2" && kv?.lease == 0, "\(name): ignoreValue keeps the value, lease dropped")
            await #expect(throws: KeelClientError.server(code: .invalidArgument, message: "etcdserver: key not found")) {
                try await client.put("po/missing", "", PutOptions(ignoreValue: true))
            }
            await #expect(throws: KeelClientError.server(code: .invalidArgument, message: "etcdserver: key is not provided")) {
                try await client.put("", "x")
            }
            for k in ["po/a", "po/b", "po/c", "pz"] { try await client.put(k, k) }
            let d1 = try await client.delete("po/b", DeleteOptions(range: .fromKey, prevKV: true))
            #expect(d1.deleted == 4 && d1.prevKvs.map { $0.key.text } == ["po/b", "po/c", "po/k", "pz"], "\(name)")
            let d2 = try await client.delete("po/", .prefix)
            #expect(d2.deleted == 1 && d2.prevKvs.isEmpty, "\(name)")
            try await client.leaseRevoke(lease)
        }
    }

    @Test func txnBuilderComparesEveryTarget() async throws {
        try await withServers { name, endpoint in
            let client = try KeelClient(endpoints: [endpoint])
            defer { Task { await client.close() } }
            let lease = try await client.leaseGrant(ttl: 600).id
            let p = try await client.put("tx/a", "1", PutOptions(lease: lease))
            let rev = p.header!.revision
            try await client.put("tx/b", "x")
            // All five targets true: then-branch (put + get + nested txn).
            let t = try await client.txn()
                .when(.value("tx/a", .equal, "1"), .version("tx/a", .equal, 1), .createRevision("tx/a", .equal, rev),
                      .modRevision("tx/a", .less, rev + 1), .lease("tx/a", .equal, lease))
                .then(.put("tx/c", "3"), .get("tx/", .prefix),
                      .txn([.value("tx/b", .notEqual, "x")], then: [.delete("tx/b")], else: [.get("tx/b")]))
                .else(.delete("tx/a"))
                .commit()
            #expect(t.succeeded, "\(name)")
            #expect(t.responses.count == 3, "\(name)")
            #expect(t.responses[1].responseRange.kvs.map { $0.key.text } == ["tx/a", "tx/b", "tx/c"], "\(name)")
            let nested = t.responses[2].responseTxn
            #expect(!nested.succeeded && nested.responses.first?.responseRange.kvs.first?.value.text == "x", "\(name)")
            // One false compare: else-branch.
            let f = try await client.txn()
                .when(.version("tx/a", .greater, 1))
                .then(.delete("tx/a"))
                .else(.put("tx/a", "2", PutOptions(prevKV: true)))
                .commit()
            #expect(!f.succeeded && f.responses.first?.responsePut.prevKv?.value.text == "1", "\(name)")
            // A range compare: every key under tx/ has version > 0.
            let r = try await client.txn().when(Compare.version("tx/", .greater, 0).range(.prefix)).commit()
            #expect(r.succeeded, "\(name)")
            // A read-only txn (retried like a read) and the duplicate-key error.
            let ro = try await client.txn().then(.get("tx/a")).commit()
            #expect(ro.responses.first?.responseRange.kvs.first?.value.text == "2", "\(name)")
            do {
                _ = try await client.txn().then(.put("tx/d", "1"), .put("tx/d", "2")).commit()
                Issue.record("\(name): duplicate keys accepted")
            } catch let error as KeelClientError {
                #expect(error.etcdError == .duplicateKey, "\(name): \(error)")
            }
            try await client.leaseRevoke(lease)
        }
    }

    /// An endpoint whose TCP connect never completes: the dial gives up after `dialTimeout`; nothing was
    /// sent, so even a write is `.unavailable` (not unknown) and goes to the next endpoint.
    @Test func dialTimeoutSkipsAnEndpointThatNeverConnects() async throws {
        let hung = try SilentListener(fullBacklog: true)
        let alone = try KeelClient(endpoints: [hung.endpoint], timeout: .seconds(30), dialTimeout: .milliseconds(300))
        defer { Task { await alone.close() } }
        for attempt in 0..<2 {
            do {
                if attempt == 0 { _ = try await alone.get("k") } else { try await alone.put("k", "v") }
                Issue.record("a call through an endpoint that never connects returned")
            } catch {
                guard case .unavailable(let why) = error else {
                    Issue.record("expected unavailable, got \(error)")
                    continue
                }
                #expect(why.contains("dial failed"), "\(why)")
            }
        }
        try await withServers { name, endpoint in
            let client = try KeelClient(endpoints: [hung.endpoint, endpoint], timeout: .seconds(30),
                                        dialTimeout: .milliseconds(300), unhealthyFor: .seconds(600))
            defer { Task { await client.close() } }
            for n in 0..<4 { try await client.put("d/\(n)", "v") }
            #expect(try await client.get("d/", .prefix).count == 4, "\(name)")
            #expect(client.healthyEndpoints == [endpoint], "\(name)")
        }
    }

    @Test func deadlineAndCancellationOfACallThatHangs() async throws {
        let silent = try SilentListener()
        let client = try KeelClient(endpoints: [silent.endpoint], timeout: .seconds(30))
        defer { Task { await client.close() } }
        do {
            _ = try await client.get("k", timeout: .milliseconds(300))
            Issue.record("a call to a server that never answers returned")
        } catch {
            #expect(error.isDeadlineExceeded, "\(error)")
        }
        let task = Task { try await client.get("k") }
        try await Task.sleep(for: .milliseconds(200))
        task.cancel()
        do {
            _ = try await task.value
            Issue.record("a cancelled call returned")
        } catch let e as KeelClientError {
            #expect(e.isCancelled, "\(e)")
        }
    }
}
