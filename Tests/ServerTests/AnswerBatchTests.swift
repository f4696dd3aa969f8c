@testable import Server
import KeelAPI
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// The apply loop's answers to callers on other loops (`AnswerBatch`): every promise completes
/// with its own result, on its own loop, in the order added per loop; promises of the apply loop
/// itself are completed at once.
@Suite("Answer batch", .timeLimit(.minutes(1)))
struct AnswerBatchTests {
    /// Caller indexes in completion order, per loop.
    final class CompletionLog: Sendable { let seen = Mutex<[Int: [Int]]>([:]) }

    @Test func everyPromiseGetsItsResultOnItsLoopInOrder() async throws {
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
        let completedAtOnce = try await apply.submit { () -> Int in
            var batch = AnswerBatch()
            for (i, p) in promises.enumerated() {
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
        for (i, p) in promises.enumerated() {
            guard case .put(let r) = try await p.futureResult.get() else {
                Issue.record("caller \(i): not a put result")
                continue
            }
            #expect(r.header?.revision == Int64(i))
        }
        let seen = order.seen.withLock { $0 }
        for k in 0..<3 { #expect(seen[k] == Array(stride(from: k, to: 30, by: 3)), "loop \(k)") }
        try await group.shutdownGracefully()
    }
}
