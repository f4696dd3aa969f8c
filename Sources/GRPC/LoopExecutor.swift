import NIOCore

/// A `TaskExecutor` that runs jobs on one event loop. A task that prefers it (`Task(executorPreference:)`)
/// runs its nonisolated code on the loop's thread: its hops to the loop (`submit`, `execute`) and the
/// continuations the loop resumes (a future, an inbound message, a promise) stay on that thread instead
/// of crossing to the cooperative pool and back. For code that only moves messages between a
/// connection and a queue on the same loop, where every thread switch is latency; never for work
/// that blocks or runs long (it would stall every connection on the loop).
public final class EventLoopTaskExecutor: TaskExecutor {
    public let loop: any EventLoop

    public init(_ loop: any EventLoop) { self.loop = loop }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
