import GRPC
import KeelBenchCore
import Testing

@Suite struct RunnerTests {
    @Test(arguments: [WorkerExecutor.loop, .pool])
    func everyRequestNumberIsIssuedExactlyOnce(executor: WorkerExecutor) async {
        let loops = WorkerExecutor.loopExecutors
        let runner = LoadRunner(total: 1000, durationSeconds: nil, rate: 0,
                                placement: { executor == .loop ? loops[$0 % loops.count] : nil })
        let (results, _) = await runner.runWorkers(clients: 8, progressLabel: nil) { _ in
            var mine: [Int] = []
            while let i = await runner.next() { mine.append(i) }
            return mine
        }
        #expect(results.count == 8)
        let all = results.flatMap { $0 }.sorted()
        #expect(all == Array(0..<1000))
    }

    @Test func recordersCountSuccessesAndErrorsByCode() async {
        let runner = LoadRunner(total: 300, durationSeconds: nil, rate: 0)
        let phases = await runner.run(names: ["op"], clients: 4, progressLabel: nil) { _ in
            var r = Recorder()
            while let i = await runner.next() {
                await r.measure(runner) {
                    switch i % 3 {
                    case 0: return
                    case 1: throw GRPCStatus(.unavailable, "down")
                    default: throw GRPCStatus(.resourceExhausted, "full")
                    }
                }
            }
            return [r]
        }
        #expect(phases.count == 1)
        let r = phases[0].recorder
        #expect(r.histogram.count == 100)
        #expect(r.errors == ["UNAVAILABLE": 100, "RESOURCE_EXHAUSTED": 100])
        #expect(runner.completed.load(ordering: .relaxed) == 300)
        let s = PhaseSummary(phases[0])
        #expect(s.requests == 300 && s.ok == 100)
    }

    /// `claim()`, what callback workers use instead of `next()`: numbers in order up to the total,
    /// no wait without a rate, never a wait past the request's due time with one, nothing once the
    /// duration is over.
    @Test func claimsNumberPaceAndStop() async {
        let free = LoadRunner(total: 5, durationSeconds: nil, rate: 0)
        let (claims, _) = await free.runWorkers(clients: 1, progressLabel: nil) { _ in
            var all: [Int] = []
            while let (i, wait) = free.claim() { #expect(wait == 0); all.append(i) }
            return all
        }
        #expect(claims == [[0, 1, 2, 3, 4]])
        let paced = LoadRunner(total: 10, durationSeconds: nil, rate: 100)   // request i due i * 10 ms after the start
        let (waits, _) = await paced.runWorkers(clients: 1, progressLabel: nil) { _ in
            var all: [(Int, UInt64)] = []
            while let c = paced.claim() { all.append(c) }
            return all
        }
        #expect(waits[0].map(\.0) == Array(0..<10))
        for (i, wait) in waits[0] { #expect(wait <= UInt64(i) * 10_000_000) }
        let over = LoadRunner(total: nil, durationSeconds: 0, rate: 0)
        let (none, _) = await over.runWorkers(clients: 1, progressLabel: nil) { _ in (over.claim() == nil, over.durationOver()) }
        #expect(none.count == 1 && none[0] == (true, true))
    }

    @Test func reportJSONRoundTrips() throws {
        var rec = Recorder()
        for k in 1...50 { rec.histogram.record(nanos: UInt64(k) * 100_000) }
        rec.errors["UNAVAILABLE"] = 2
        let phase = PhaseResult(name: "put", elapsedNanos: 2_000_000_000, recorder: rec)
        let report = BenchReport(command: "put", endpoints: ["127.0.0.1:1"], conns: 2, clients: 3,
                                 parameters: ["val_size": "256"], phases: [phase], startedAt: .init(timeIntervalSince1970: 0))
        let back = try BenchReport.decode(report.json())
        #expect(back.command == "put" && back.conns == 2 && back.clients == 3)
        let p = try #require(back.phases.first)
        #expect(p.ok == 50 && p.requests == 52 && p.errors == ["UNAVAILABLE": 2])
        #expect(p.rps == 25)
        #expect(p.latencyMs.min == 0.1 && p.latencyMs.max == 5)
        #expect(report.json().contains("\"latency_ms\""))
        #expect(report.text().contains("UNAVAILABLE x2"))
    }

    @Test func badParametersAreTypedErrors() {
        #expect(throws: BenchError.self) { try Connections(endpoints: ["nohost"], conns: 1, timeoutSeconds: nil) }
        #expect(throws: BenchError.self) { try Connections(endpoints: ["https://127.0.0.1:2379"], conns: 1, timeoutSeconds: nil) }
        #expect(throws: BenchError.self) { try Connections(endpoints: ["127.0.0.1:2379"], conns: 0, timeoutSeconds: nil) }
    }
}
