import NIOCore

/// Who waits for a proposed entry's apply result: `body` runs once, on `loop` (the caller's
/// connection loop for a KV write, see `KeelCore.answerLoop`). A callback, not a promise, so a
/// write answered through `UnaryResponder` costs no future, no `whenComplete` closure list and no
/// runtime metadata lookup for the future's type per call; `init(_:)` wraps a promise for callers
/// that await.
struct ApplyWaiter: Sendable {
    let loop: any EventLoop
    private let body: @Sendable (ApplyResult) -> Void

    init(loop: any EventLoop, _ body: @escaping @Sendable (ApplyResult) -> Void) {
        self.loop = loop
        self.body = body
    }

    init(_ promise: EventLoopPromise<ApplyResult>) {
        self.init(loop: promise.futureResult.eventLoop) { promise.succeed($0) }
    }

    /// Completes from any thread: at once on `loop`, else in a job on it.
    func complete(_ result: ApplyResult) {
        if loop.inEventLoop {
            body(result)
        } else {
            let body = self.body
            loop.execute { body(result) }
        }
    }

    /// Completes here; the caller runs on `loop`.
    func completeOnLoop(_ result: ApplyResult) {
        assert(loop.inEventLoop)
        body(result)
    }
}
