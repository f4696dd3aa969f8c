import KeelAPI
import KeelClient
import KeelTestSupport
import Testing

/// Collects the events of a watch until `count` have arrived (bounded by `within`).
func collect(_ w: Watch, events count: Int) async throws -> [Mvccpb.Event] {
    try await within(.seconds(120), "\(count) watch events") {
        var out: [Mvccpb.Event] = []
        for try await r in w {
            out += r.events
            if out.count >= count { break }
        }
        return out
    }
}

/// "key=value@modRevision" of PUTs, "key@rev DELETE" of deletes: easy to compare.
func describe(_ events: [Mvccpb.Event]) -> [String] {
    events.map { e in
        let kv = e.kv ?? Mvccpb.KeyValue()
        return e.type == .delete ? "\(kv.key.text)@\(kv.modRevision) DELETE" : "\(kv.key.text)=\(kv.value.text)@\(kv.modRevision)"
    }
}

@Suite struct WatchTests {
    @Test func eventsPrefixPrevKVFiltersStartRevisionAndCancel() async throws {
        try await withServers { name, endpoint in
            let client = try KeelClient(endpoints: [endpoint])
            defer { Task { await client.close() } }
            let first = try await client.put("w/a", "1").header!.revision
            try await client.put("w/b", "2")
            try await client.put("x", "outside")
            try await client.delete("w/a")
            try await client.put("w/b", "3")
            // From history: every event under w/ since `first`, with prevKV.
            let all = client.watch("w/", WatchOptions(range: .prefix, startRevision: first, prevKV: true))
            let ev = try await collect(all, events: 4)
            #expect(describe(ev) == ["w/a=1@\(first)", "w/b=2@\(first + 1)", "w/a@\(first + 3) DELETE",
                                     "w/b=3@\(first + 4)"], "\(name)")
            #expect(ev[2].prevKv?.value.text == "1" && ev[3].prevKv?.value.text == "2", "\(name)")
            // The server confirms the cancel (WatchCancelRequest answered with canceled).
            #expect(await all.cancel(), "\(name)")
            // noPut: only the delete; noDelete: only puts.
            let deletes = client.watch("w/", WatchOptions(range: .prefix, startRevision: first, noPut: true))
            #expect(describe(try await collect(deletes, events: 1)) == ["w/a@\(first + 3) DELETE"], "\(name)")
            await deletes.cancel()
            let puts = client.watch("w/", WatchOptions(range: .prefix, startRevision: first, noDelete: true))
            #expect(describe(try await collect(puts, events: 3)).count == 3, "\(name)")
            await puts.cancel()
            // From now (start 0) with createdNotify: the created response first, then a new put only.
            let live = client.watch("w/b", WatchOptions(createdNotify: true))
            let created = try await within(.seconds(60), "created") { try await live.next() }
            #expect(created?.isCreated == true, "\(name)")
            let put = try await client.put("w/b", "4").header!.revision
            let next = try await within(.seconds(60), "live event") { try await live.next() }
            #expect(describe(next?.events ?? []) == ["w/b=4@\(put)"], "\(name)")
            // A progress request answers with an empty response at the current revision.
            #expect(await live.requestProgress(), "\(name)")
            let progress = try await within(.seconds(60), "progress notification") { try await live.next() }
            #expect(progress?.isProgressNotify == true && progress?.header.revision == put, "\(name)")
            #expect(await live.cancel(), "\(name)")
        }
    }

    /// A small buffer applies back-pressure without losing anything; a client closed while its watch's
    /// buffer is full (nobody reading) still closes.
    @Test func slowConsumerBackPressureAndCloseWithAFullBuffer() async throws {
        try await withServers { name, endpoint in
            let client = try KeelClient(endpoints: [endpoint])
            var first: Int64 = 0
            for n in 0..<60 {
                let rev = try await client.put("bp/\(n)", String(repeating: "x", count: 1000)).header!.revision
                if n == 0 { first = rev }
            }
            let w = client.watch("bp/", WatchOptions(range: .prefix, startRevision: first, bufferSize: 1))
            let events = try await collect(w, events: 60)
            #expect(events.map { $0.kv!.modRevision } == Array(first..<(first + 60)), "\(name)")
            let stalled = client.watch("bp/", WatchOptions(range: .prefix, startRevision: first, bufferSize: 1))
            try await eventually("the stalled watch's stream") { await stalled.streamsOpened >= 1 }
            try await within(.seconds(60), "close() with a full watch buffer") { await client.close() }
            #expect(client.isClosed, "\(name)")
        }
    }

    @Test func compactedStartRevisionIsATypedError() async throws {
        try await withServers { name, endpoint in
            let client = try KeelClient(endpoints: [endpoint])
            defer { Task { await client.close() } }
            let r1 = try await client.put("wc", "1").header!.revision
            let r2 = try await client.put("wc", "2").header!.revision
            try await client.compact(r2)
            let w = client.watch("wc", WatchOptions(startRevision: r1))
            do {
                _ = try await collect(w, events: 1)
                Issue.record("\(name): a watch from a compacted revision delivered events")
            } catch let e as WatchError {
                #expect(e == .compacted(compactRevision: r2), "\(name)")
            }
            // The iteration's error is typed: `error` is a WatchError here.
            let again = client.watch("wc", WatchOptions(startRevision: r1))
            do throws(WatchError) {
                for try await _ in again {}
                Issue.record("\(name): the compacted watch ended without an error")
            } catch {
                let typed: WatchError = error
                #expect(typed == .compacted(compactRevision: r2), "\(name)")
            }
        }
    }

    @Test func cancellingTheIteratingTaskEndsTheWatch() async throws {
        try await withServers { name, endpoint in
            let client = try KeelClient(endpoints: [endpoint])
            defer { Task { await client.close() } }
            let w = client.watch("wt", WatchOptions(createdNotify: true))
            let task = Task { () -> Int in
                var n = 0
                for try await _ in w { n += 1 }
                return n
            }
            try await eventually("the watch is created") { await w.requestProgress() }
            task.cancel()
            // The iteration ends (nil, not a hang) once its task is cancelled.
            let n = try await within(.seconds(60), "the cancelled iteration") { try await task.value }
            #expect(n >= 1, "\(name)")
            // The stream is gone: no more progress requests can be sent on it.
            try await eventually("the stream to close") { await !w.requestProgress() }
        }
    }

    /// One keel behind two endpoints (the first a dead port): the watch starts, keel is SIGKILLed mid-watch
    /// and restarted on the same port and data; writes go on before and after. The watch reports every
    /// event once, in order.
    @Test func resumesAfterTheServerIsKilledAndRestarted() async throws {
        guard let keel = try await RestartableKeel.start() else { return }
        do {
            let dead = "127.0.0.1:\(try FreePorts.allocate())"
            let client = try KeelClient(endpoints: [dead, keel.endpoint])
            let writer = try KeelClient(endpoints: [keel.endpoint])
            defer { Task { await client.close(); await writer.close() } }
            let w = client.watch("r/", WatchOptions(range: .prefix, createdNotify: true))
            let created = try await within(.seconds(60), "created") { try await w.next() }
            #expect(created?.isCreated == true)
            var expected: [String] = []
            for n in 0..<5 { expected.append("r/\(n)=v@\(try await writer.put("r/\(n)", "v").header!.revision)") }
            var seen: [Mvccpb.Event] = []
            while seen.count < 5 {
                let r = try await within(.seconds(60), "events before the kill") { try await w.next() }
                seen += r?.events ?? []
            }
            await keel.kill()
            try await keel.restart()
            // Written while the watch may still be reconnecting: resumed from history.
            let writer2 = try KeelClient(endpoints: [keel.endpoint])
            defer { Task { await writer2.close() } }
            for n in 5..<10 {
                let rev = try await within(.seconds(60), "a put after restart") {
                    try await writer2.put("r/\(n)", "v").header!.revision
                }
                expected.append("r/\(n)=v@\(rev)")
            }
            while seen.count < 10 {
                let r = try await within(.seconds(120), "events after the restart") { try await w.next() }
                seen += r?.events ?? []
            }
            #expect(describe(seen) == expected)
            #expect(await w.streamsOpened >= 2, "the watch was created again after the kill")
            await w.cancel()
        } catch {
            await keel.stop()
            throw error
        }
        await keel.stop()
    }
}
