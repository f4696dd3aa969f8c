import GRPC
import KeelAPI
import Synchronization

/// Watch workloads: `streams` Watch streams (spread over the connections), each with
/// `watchersPerStream` watchers; watcher j watches key j % keySpace. Then puts (the common
/// --total/--rate/--clients) to keys of the same key space, each value stamped with its send time, and
/// every received PUT event's latency is (receipt - stamp). Phases: "watch-event" (events; expected =
/// successful puts x watchers created on their key), "put", "watch-create" (create request sent ->
/// created response, pipelined per stream).
extension Workloads {
    public static func watch(_ c: CommonParams, keys: KeyGenerator, valSize: Int, streams: Int, watchersPerStream: Int,
                             graceSeconds: Double, label: String) async throws -> [PhaseResult] {
        guard streams >= 1, watchersPerStream >= 1 else { throw BenchError("--streams and --watchers-per-stream must be at least 1") }
        guard valSize >= 8 else { throw BenchError("--val-size must be at least 8 for watch workloads (the value carries the send time)") }
        let base = Values.filler(size: valSize)
        return try await withConnections(c) { conns in
            let registry = WatchRegistry(streams: streams)
            let received = EventCounter()
            return try await withThrowingTaskGroup(of: WatchStreamResult?.self) { group in
                for s in 0..<streams {
                    group.addTask(executorPreference: conns.executor(s)) {
                        await watchStream(s, client: conns.client(s), keys: keys, watchers: watchersPerStream,
                                          registry: registry, received: received)
                    }
                }
                // Every stream reports once all its creates are answered (or it failed).
                let createDeadline = monotonicNanos() &+ UInt64((c.timeoutSeconds ?? 60) * 1e9)
                while await !registry.complete {
                    if monotonicNanos() > createDeadline {
                        group.cancelAll()
                        throw BenchError("watchers were not all created within \(c.timeoutSeconds ?? 60) s")
                    }
                    try await Task.sleep(nanoseconds: 5_000_000)
                }
                let watchersOnKey = await registry.watchersOnKey

                let runner = c.runner(conns)
                let putStart = monotonicNanos()
                let (puts, putElapsed) = await runner.runWorkers(clients: c.clients, progressLabel: c.label(label)) { w in
                    var rec = Recorder()
                    var okPerKey: [Int: Int] = [:]
                    let client = conns.client(w)
                    while let i = await runner.next() {
                        let k = keys.index(forRequest: i)
                        var ok = false
                        await rec.measure(runner) {
                            let req = putRequest(keys.key(k), Values.stamped(base, nanos: monotonicNanos()))
                            _ = try await client.unary(Etcdserverpb.KV.put, req, options: conns.options)
                            ok = true
                        }
                        if ok { okPerKey[k, default: 0] += 1 }
                    }
                    return PutWorkerResult(recorder: rec, okPerKey: okPerKey)
                }
                var putRec = Recorder()
                var expected = 0
                for p in puts {
                    putRec.merge(p.recorder)
                    for (k, n) in p.okPerKey { expected += n * (watchersOnKey[k] ?? 0) }
                }

                // Wait for every expected event, at most `graceSeconds` after the last put.
                let deadline = monotonicNanos() &+ UInt64(max(0, graceSeconds) * 1e9)
                while received.value < expected && monotonicNanos() < deadline {
                    try await Task.sleep(nanoseconds: 2_000_000)
                }
                group.cancelAll()
                var createRec = Recorder(), eventRec = Recorder()
                var lastEvent = putStart
                for try await r in group {
                    guard let r else { continue }
                    createRec.merge(r.create)
                    eventRec.merge(r.events)
                    lastEvent = max(lastEvent, r.lastEventNanos)
                }
                let got = Int(eventRec.histogram.count)
                if got < expected { eventRec.errors["MISSING_EVENTS", default: 0] += expected - got }
                if got > expected { eventRec.errors["UNEXPECTED_EVENTS", default: 0] += got - expected }
                return [
                    PhaseResult(name: "watch-event", elapsedNanos: lastEvent &- putStart, recorder: eventRec, expected: expected),
                    PhaseResult(name: "put", elapsedNanos: putElapsed, recorder: putRec),
                    PhaseResult(name: "watch-create", elapsedNanos: createRec.histogram.maxNanos, recorder: createRec,
                                expected: streams * watchersPerStream),
                ]
            }
        }
    }

    /// One Watch stream: creates its watchers (pipelined), then counts events until cancelled.
    static func watchStream(_ s: Int, client: GRPCClient, keys: KeyGenerator, watchers: Int,
                            registry: WatchRegistry, received: EventCounter) async -> WatchStreamResult? {
        var create = Recorder(), events = Recorder()
        var createdKeys: [Int] = []
        var reported = false
        var lastEvent: UInt64 = 0
        do {
            try await client.bidirectionalStreaming(Etcdserverpb.Watch.watch) { writer, responses in
                var sentAt: [UInt64] = []
                var pendingKeys: [Int] = []
                sentAt.reserveCapacity(watchers)
                for k in 0..<watchers {
                    let keyIndex = (s * watchers + k) % keys.space
                    var cr = Etcdserverpb.WatchCreateRequest()
                    cr.key = keys.key(keyIndex)
                    var req = Etcdserverpb.WatchRequest()
                    req.requestUnion = .createRequest(cr)
                    pendingKeys.append(keyIndex)
                    sentAt.append(monotonicNanos())
                    try await writer.send(req)
                }
                var answered = 0
                for try await resp in responses {
                    let now = monotonicNanos()
                    if resp.created {
                        if answered < sentAt.count {
                            if resp.canceled {
                                create.errors["WATCH_CANCELED", default: 0] += 1
                            } else {
                                create.histogram.record(nanos: now &- sentAt[answered])
                                createdKeys.append(pendingKeys[answered])
                            }
                            answered += 1
                        }
                        if answered == watchers && !reported {
                            reported = true
                            await registry.arrive(createdKeys: createdKeys)
                        }
                        continue
                    }
                    if resp.canceled {
                        events.errors["WATCH_CANCELED", default: 0] += 1
                        continue
                    }
                    for ev in resp.events where ev.type == .put {
                        if let stamp = Values.stamp(of: ev.kv?.value ?? []), stamp <= now {
                            events.histogram.record(nanos: now &- stamp)
                        } else {
                            events.errors["CLIENT_ERROR", default: 0] += 1
                        }
                    }
                    if !resp.events.isEmpty {
                        lastEvent = now
                        received.add(resp.events.count)
                    }
                }
            }
        } catch {
            // Cancellation is how the workload ends the streams; anything else is an error of the stream.
            if !Task.isCancelled {
                if reported { events.error(error) } else { create.error(error) }
            }
        }
        if !reported { await registry.arrive(createdKeys: createdKeys) }
        return WatchStreamResult(create: create, events: events, lastEventNanos: lastEvent)
    }
}

struct WatchStreamResult: Sendable {
    var create: Recorder
    var events: Recorder
    var lastEventNanos: UInt64
}

struct PutWorkerResult: Sendable {
    var recorder: Recorder
    var okPerKey: [Int: Int]
}

/// Collects which keys have a created watcher; complete once every stream has reported.
actor WatchRegistry {
    var remaining: Int
    var watchersOnKey: [Int: Int] = [:]

    init(streams: Int) { remaining = streams }

    func arrive(createdKeys: [Int]) {
        remaining -= 1
        for k in createdKeys { watchersOnKey[k, default: 0] += 1 }
    }

    var complete: Bool { remaining <= 0 }
}

/// Events received by all streams (read by the workload to know when every expected event is in).
final class EventCounter: Sendable {
    let count = Atomic<Int>(0)
    func add(_ n: Int) { count.add(n, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
