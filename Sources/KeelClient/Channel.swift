// A bounded single-consumer channel between a background task (a watch or snapshot stream) and the
// iterator the caller drives: `send` waits while `capacity` elements are queued (back-pressure reaches the
// gRPC stream's flow control), `next` waits while empty. Confined to an actor.

actor BoundedChannel<Element: Sendable> {
    private var buffer: [Element] = []
    private var head = 0
    private let capacity: Int
    private var consumer: CheckedContinuation<Element?, any Error>?
    private var producers: [CheckedContinuation<Bool, Never>] = []
    /// Set once: nil error = normal end.
    private var end: (any Error)??
    /// The consumer went away: producers stop.
    private var abandoned = false

    init(capacity: Int) { self.capacity = max(capacity, 1) }

    private var count: Int { buffer.count - head }

    /// Queues `element`; waits while the buffer is full. False when the consumer is gone or the channel ended.
    func send(_ element: Element) async -> Bool {
        while true {
            if abandoned || end != nil { return false }
            if let c = consumer {
                consumer = nil
                c.resume(returning: element)
                return true
            }
            if count < capacity {
                buffer.append(element)
                return true
            }
            // A cancelled producer (the watch being closed) must not stay parked behind a slow consumer.
            if Task.isCancelled { return false }
            let go = await withTaskCancellationHandler {
                await withCheckedContinuation { producers.append($0) }
            } onCancel: {
                Task { await self.releaseProducers() }
            }
            if !go || Task.isCancelled { return false }
        }
    }

    /// Ends the channel once the queued elements are consumed (`error` nil: a normal end).
    func finish(_ error: (any Error)? = nil) {
        guard end == nil else { return }
        end = .some(error)
        if let c = consumer, count == 0 {
            consumer = nil
            if let error { c.resume(throwing: error) } else { c.resume(returning: nil) }
        }
        wakeProducers(false)
    }

    /// The consumer is gone: drop everything, release producers.
    func abandon() {
        abandoned = true
        buffer = []
        head = 0
        consumer?.resume(returning: nil)
        consumer = nil
        wakeProducers(false)
    }

    /// Wakes parked producers so they look at their cancellation (they stop) or the buffer again.
    func releaseProducers() { wakeProducers(true) }

    private func wakeProducers(_ go: Bool) {
        let p = producers
        producers = []
        for c in p { c.resume(returning: go) }
    }

    func next() async throws -> Element? {
        if count > 0 {
            let e = buffer[head]
            head += 1
            if head > 64 && head * 2 > buffer.count {
                buffer.removeFirst(head)
                head = 0
            }
            wakeProducers(true)
            return e
        }
        if abandoned { return nil }
        if let end {
            if let error = end { throw error }
            return nil
        }
        // Checked here, with no suspension before the continuation is stored: a cancellation either comes
        // before (seen now) or after (cancelNext finds the continuation).
        if Task.isCancelled { return nil }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { consumer = $0 }
        } onCancel: {
            Task { await self.cancelNext() }
        }
    }

    /// Wakes a waiting consumer with nil (its task was cancelled: `next` returns nil).
    func cancelNext() {
        consumer?.resume(returning: nil)
        consumer = nil
    }
}
