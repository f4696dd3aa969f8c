import GRPC
import KeelAPI
import NIOCore
import ProtoWire

/// One kind of unary request of a closed-loop workload: what request number i sends, which phase
/// (recorder) it counts in, and what its response must satisfy.
public struct UnaryOp<Req: ProtoMessage, Resp: ProtoMessage>: Sendable {
    public let method: MethodDescriptor<Req, Resp>
    public let request: @Sendable (Int) -> Req
    /// The recorder (index into the phase names) request i counts in.
    public let phase: @Sendable (Int) -> Int
    /// Throws (a `BenchError` "MISMATCH: ...") when a response is not what the request asked for.
    public let check: @Sendable (Resp) throws -> Void

    public init(_ method: MethodDescriptor<Req, Resp>, phase: @escaping @Sendable (Int) -> Int = { _ in 0 },
                check: @escaping @Sendable (Resp) throws -> Void = { _ in },
                request: @escaping @Sendable (Int) -> Req) {
        self.method = method
        self.request = request
        self.phase = phase
        self.check = check
    }
}

extension LoadRunner {
    /// Runs `op` closed-loop with `clients` workers over `conns` and returns one phase per name.
    /// `--executor callback` (the default): each worker is a chain of calls on its connection's event
    /// loop, the next started from the last one's completion (`LoopUnaryCaller`: no Swift task per
    /// worker or per call); `loop` / `pool`: a task per worker awaiting `GRPCClient.unary`.
    public func runUnary<Req, Resp>(names: [String], clients: Int, progressLabel: String?, conns: Connections,
                                    _ op: UnaryOp<Req, Resp>) async throws -> [PhaseResult] {
        guard conns.mode == .callback else {
            return await run(names: names, clients: clients, progressLabel: progressLabel) { w in
                var recs = names.map { _ in Recorder() }
                let client = conns.client(w)
                while let i = await self.next() {
                    await recs[op.phase(i)].measure(self) { try op.check(try await client.unary(op.method, op.request(i), options: conns.options)) }
                }
                return recs
            }
        }
        var callers: [LoopUnaryCaller] = []
        for c in conns.clients { callers.append(try await c.loopCaller()) }
        let bound = callers
        return await run(names: names, clients: clients, progressLabel: progressLabel) { w in
            let caller = bound[w % bound.count]
            let loop = caller.eventLoop
            let done = loop.makePromise(of: [Recorder].self)
            let runner = self
            loop.execute {
                CallbackWorker(runner: runner, caller: caller, op: op, options: conns.options, phases: names.count, done: done).step()
            }
            return (try? await done.futureResult.get()) ?? names.map { _ in Recorder() }
        }
    }
}

/// A closed-loop worker confined to its connection's event loop: claims a request number, sends it,
/// records the outcome when it completes and claims the next, until the phase is over.
final class CallbackWorker<Req: ProtoMessage, Resp: ProtoMessage> {
    let runner: LoadRunner
    let caller: LoopUnaryCaller
    let op: UnaryOp<Req, Resp>
    let options: CallOptions
    var recorders: [Recorder]
    let done: EventLoopPromise<[Recorder]>

    init(runner: LoadRunner, caller: LoopUnaryCaller, op: UnaryOp<Req, Resp>, options: CallOptions, phases: Int,
         done: EventLoopPromise<[Recorder]>) {
        self.runner = runner
        self.caller = caller
        self.op = op
        self.options = options
        self.recorders = Array(repeating: Recorder(), count: phases)
        self.done = done
    }

    func step() {
        guard let (i, wait) = runner.claim() else { return finish() }
        guard wait == 0 else {
            caller.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(Int64(wait))) { [self] in
                if runner.durationOver() { return finish() }
                send(i)
            }
            return
        }
        send(i)
    }

    private func send(_ i: Int) {
        let phase = op.phase(i)
        let t0 = monotonicNanos()
        // The completion never runs inside `unary` (a call that fails at once completes in a later
        // job), so starting the next call from it does not recurse.
        caller.unary(op.method, op.request(i), options: options) { [self] result in
            do {
                try op.check(try result.get())
                recorders[phase].histogram.record(nanos: monotonicNanos() &- t0)
            } catch {
                recorders[phase].error(error)
            }
            runner.completed.add(1, ordering: .relaxed)
            step()
        }
    }

    private func finish() { done.succeed(recorders) }
}
