import GRPC
import NIOCore
import NIOPosix

// Workers run on the event loops of the client's connections through GRPC's `EventLoopTaskExecutor`
// (`--executor loop`, the default): the worker's code, GRPCClient's nonisolated async code and the
// continuations that futures of the connection's loop resume then all run on that loop's thread,
// instead of bouncing between the loop and the cooperative pool with a futex wake-up at every hop.
// Measured in Benchmarks/RESULTS.md ("keel-bench client"). `--executor pool` keeps Swift's default executor.

/// Where the workers of a run execute.
public enum WorkerExecutor: String, Sendable, CaseIterable {
    /// Unary workloads: each worker is a chain of calls on its connection's event loop, the next
    /// started from the last one's completion, without a Swift task (`LoadRunner.runUnary`); the
    /// streaming workloads (watch, lease-keepalive) run as `loop`.
    case callback
    /// Each worker runs on the event loop of the connection it uses.
    case loop
    /// Swift's global concurrent executor (the cooperative pool).
    case pool

    /// One executor per loop of the shared group (GRPCClient's default group).
    public static let loopExecutors: [EventLoopTaskExecutor] = {
        MultiThreadedEventLoopGroup.singleton.makeIterator().map { EventLoopTaskExecutor($0) }
    }()
}
