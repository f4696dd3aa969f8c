@testable import KeelClient
import Testing

/// BoundedChannel (the hand-off between a stream's task and its iterator), without a server.
@Suite struct ChannelTests {
    struct Boom: Error, Equatable {}

    @Test func deliversInOrderUnderBackPressureThenTheEnd() async throws {
        let ch = BoundedChannel<Int>(capacity: 2)
        let producer = Task {
            for i in 0..<100 { guard await ch.send(i) else { return false } }
            await ch.finish(Boom())
            return true
        }
        var got: [Int] = []
        do {
            while let v = try await ch.next() { got.append(v) }
            Issue.record("the channel ended without its error")
        } catch let e as Boom {
            #expect(e == Boom())
        }
        #expect(got == Array(0..<100))
        #expect(await producer.value)
        // After the end, next keeps reporting it; send is refused.
        await #expect(throws: Boom.self) { _ = try await ch.next() }
        #expect(await !ch.send(1))
    }

    @Test func abandonReleasesAParkedProducer() async throws {
        let ch = BoundedChannel<Int>(capacity: 1)
        #expect(await ch.send(1))
        let parked = Task { await ch.send(2) }     // waits: the buffer is full
        await ch.abandon()
        #expect(await parked.value == false)
        #expect(try await ch.next() == nil)
    }

    @Test func cancellingAParkedProducerOrAWaitingConsumer() async throws {
        let ch = BoundedChannel<Int>(capacity: 1)
        #expect(await ch.send(1))
        let parked = Task { await ch.send(2) }
        parked.cancel()
        #expect(await parked.value == false)
        #expect(try await ch.next() == 1)
        let waiting = Task { try await ch.next() }  // empty: waits
        waiting.cancel()
        let r = try await waiting.value
        #expect(r == nil)
    }
}
