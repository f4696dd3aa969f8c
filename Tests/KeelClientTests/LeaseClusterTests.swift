import Foundation
import KeelAPI
import KeelClient
import KeelTestSupport
import Testing

@Suite struct LeaseKeepAliveTests {
    @Test func keepAliveRenewsUntilStoppedAndReportsRevocation() async throws {
        try await withServers { name, endpoint in
            let client = try KeelClient(endpoints: [endpoint])
            defer { Task { await client.close() } }
            // 6 s: renewed every 2 s; two renewals take ~2 s after the first.
            let id = try await client.leaseGrant(ttl: 6).id
            let ka = client.keepAlive(id)
            let ttls = try await within(.seconds(120), "three renewals") {
                var seen: [Int64] = []
                for try await t in ka {
                    seen.append(t)
                    if seen.count >= 3 { break }
                }
                return seen
            }
            #expect(ttls == [6, 6, 6], "\(name)")
            let (ttl, renewals, end) = (await ka.ttl, await ka.renewals, await ka.end)
            #expect(ttl == 6 && renewals >= 3 && end == nil, "\(name)")
            #expect(try await client.leaseTimeToLive(id).ttl > 0, "\(name)")
            await ka.stop()
            #expect(await ka.ended() == .stopped, "\(name)")

            // Revoked while kept alive: the next renewal answers TTL 0 and the keep-alive reports expiry.
            let id2 = try await client.leaseGrant(ttl: 6).id
            let ka2 = client.keepAlive(id2)
            try await eventually("first renewal") { await ka2.renewals >= 1 }
            try await client.leaseRevoke(id2)
            #expect(try await within(.seconds(120), "expiry") { await ka2.ended() } == .expired, "\(name)")
            do {
                for try await _ in ka2 {}
                Issue.record("\(name): the keep-alive of a revoked lease ended without an error")
            } catch let e as LeaseError {
                #expect(e == .expired(id: id2), "\(name)")
            }
            #expect(try await client.keepAliveOnce(id2).ttl <= 0, "\(name)")

            // Cancelling the task that iterates the TTL updates stops the keep-alive; so does leaving withKeepAlive.
            let id4 = try await client.leaseGrant(ttl: 60).id
            let ka4 = client.keepAlive(id4)
            let reader = Task { for try await _ in ka4 {} }
            try await eventually("first renewal") { await ka4.renewals >= 1 }
            reader.cancel()
            #expect(try await within(.seconds(60), "the keep-alive to stop") { await ka4.ended() } == .stopped, "\(name)")
            let ka5 = try await client.withKeepAlive(id4) { ka in
                try await eventually("a renewal inside withKeepAlive") { await ka.renewals >= 1 }
                return ka
            }
            #expect(await ka5.end == .stopped, "\(name)")

            // close() stops every keep-alive.
            let id3 = try await client.leaseGrant(ttl: 60).id
            #expect(try await client.keepAliveOnce(id3).ttl == 60, "\(name): one renewal")
            let ka3 = client.keepAlive(id3)
            try await eventually("first renewal") { await ka3.renewals >= 1 }
            await client.close()
            #expect(await ka3.ended() == .stopped, "\(name)")
        }
    }
}

@Suite struct ClusterMaintenanceTests {
    @Test func memberStatusHashDefragAlarmSnapshotMoveLeader() async throws {
        try await withServers { name, endpoint in
            let client = try KeelClient(endpoints: [endpoint])
            defer { Task { await client.close() } }
            try await client.put("m/k", "v")
            let members = try await client.memberList()
            #expect(members.members.count == 1, "\(name)")
            let me = try #require(members.members.first)
            #expect(me.clientURLs == ["http://\(endpoint)"], "\(name)")
            let st = try await client.status(endpoint: endpoint)
            #expect(st.leader == me.id && st.header?.memberId == me.id && st.dbSize > 0 && !st.version.isEmpty, "\(name)")
            #expect(await client.learnLeader() == endpoint, "\(name)")
            // Hashes of an unchanged store agree; a write changes hashKV.
            let h1 = try await client.hashKV(endpoint: endpoint)
            let h2 = try await client.hashKV(endpoint: endpoint)
            #expect(h1.hash_ == h2.hash_ && h1.header?.revision == h2.header?.revision, "\(name)")
            try await client.put("m/k", "w")
            #expect(try await client.hashKV(endpoint: endpoint).hash_ != h1.hash_, "\(name)")
            _ = try await client.hash(endpoint: endpoint)
            try await client.defragment(endpoint: endpoint)
            #expect(try await client.get("m/k").kvs.first?.value.text == "w", "\(name): data survives defrag")
            #expect(try await client.alarmList().isEmpty, "\(name)")
            // Snapshot: as chunks and to a file; same length (nothing written in between), SHA-256 appended.
            var streamed = 0
            for try await chunk in try client.snapshot(endpoint: endpoint) { streamed += chunk.count }
            let path = NSTemporaryDirectory() + "keel-client-snap-\(UInt32.random(in: 0...UInt32.max)).db"
            defer { try? FileManager.default.removeItem(atPath: path) }
            let written = try await client.snapshot(to: path)
            let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? -1
            #expect(written == size && written == streamed && written > 32, "\(name): \(written) \(size) \(streamed)")
            #expect(!FileManager.default.fileExists(atPath: path + ".part"), "\(name)")
            // Leadership to itself is a no-op; to an unknown member etcd's error.
            try await client.moveLeader(to: me.id)
            do {
                try await client.moveLeader(to: me.id &+ 1)
                Issue.record("\(name): moved leadership to a member that does not exist")
            } catch let error as KeelClientError {
                #expect(error.etcdError == .badLeaderTransferee, "\(name): \(error)")
            }
            // Removing an unknown member: etcd's error, typed.
            do {
                try await client.memberRemove(me.id &+ 1)
                Issue.record("\(name): removed a member that does not exist")
            } catch let error as KeelClientError {
                #expect(error.etcdError == .memberNotFound, "\(name): \(error)")
            }
        }
    }
}
