@testable import Server
import KeelAPI
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// The apply loop's answers to callers on other loops (`AnswerBatch`): every waiter (a callback, as
/// KV writes wait, or a promise) completes with its own result, on its own loop, in the order added
/// per loop; waiters of the apply loop itself are completed at once.
@Suite("Answer batch", .timeLimit(.minutes(1)))
struct AnswerBatchTests {
    /// Caller indexes in completion order, per loop.
    final class CompletionLog: Sendable {
        let seen = Mutex<[Int: [Int]]>([:])
        /// Revision each callback waiter got, by caller.
        let results = Mutex<[Int: Int64]>([:])
    }

    @Test func everyWaiterGetsItsResultOnItsLoopInOrder() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 3)
        let loops = (0..<3).map { _ in group.next() }
        let apply = loops[0]
        // Caller i's promise is made on loops[i % 3]; its result carries i as revision.
        let promises = (0..<30).map { i in loops[i % 3].makePromise(of: ApplyResult.self) }
        let order = CompletionLog()
        for (i, p) in promises.enumerated() {
            let loop = loops[i % 3]
            p.futureResult.whenSuccess { _ in
                precondition(loop.inEventLoop)
                order.seen.withLock { $0[i % 3, default: []].append(i) }
            }
        }
        // Even callers wait with a callback instead (their promise stays unused).
        let waiters = promises.enumerated().map { i, p in
            let loop = loops[i % 3]
            return i % 2 == 1 ? ApplyWaiter(p) : ApplyWaiter(loop: loop) { r in
                precondition(loop.inEventLoop)
                order.seen.withLock { $0[i % 3, default: []].append(i) }
                if case .put(let resp) = r { order.results.withLock { $0[i] = resp.header?.revision } }
            }
        }
        let completedAtOnce = try await apply.submit { () -> Int in
            var batch = AnswerBatch()
            for (i, p) in waiters.enumerated() {
                var resp = Etcdserverpb.PutResponse()
                var h = Etcdserverpb.ResponseHeader()
                h.revision = Int64(i)
                resp.header = h
                batch.add(p, .put(resp))
            }
            // Only the apply loop's own promises are done before `send`.
            let done = order.seen.withLock { $0.values.reduce(0) { $0 + $1.count } }
            batch.send()
            return done
        }.get()
        #expect(completedAtOnce == 10)
        for (i, p) in promises.enumerated() where i % 2 == 1 {
            guard case .put(let r) = try await p.futureResult.get() else {
                Issue.record("caller \(i): not a put result")
                continue
            }
            #expect(r.header?.revision == Int64(i))
        }
        #expect(await eventually { order.seen.withLock { $0.values.reduce(0) { $0 + $1.count } } == 30 })
        #expect(order.results.withLock { $0 } == Dictionary(uniqueKeysWithValues: stride(from: 0, to: 30, by: 2).map { ($0, Int64($0)) }))
        let seen = order.seen.withLock { $0 }
        for k in 0..<3 { #expect(seen[k] == Array(stride(from: k, to: 30, by: 3)), "loop \(k)") }
        try await group.shutdownGracefully()
    }
}
