import GRPC
import NIOCore
import ProtoWire
import Synchronization
import Testing

@Suite struct ClientServerTests {
    @Test func unaryRoundTrip() async throws {
        try await withEchoServer { server, _ in
            try await withClient(server) { client in
                let r = try await client.unary(Echotest.Echo.get, request("hello", payload: [1, 2, 3]))
                #expect(r.text == "hello")
                #expect(r.payload == [1, 2, 3])
                let empty = try await client.unary(Echotest.Echo.get, request())
                #expect(empty == Echotest.EchoResponse())
            }
            #expect(await eventually { server.counters.streams == 0 })
        }
    }

    /// A unary call takes exactly one response message before an OK status (grpc-go's rule): a
    /// server that sends two or none fails the call with INTERNAL, and an error status wins over a
    /// message that came before it. (The `expand` method streams `count` replies; called as unary.)
    @Test func unaryCallNeedsExactlyOneResponseMessage() async throws {
        try await withEchoServer { server, _ in
            try await withClient(server) { client in
                let one = try await client.unary(Echotest.Echo.expand, request("one", count: 1))
                #expect(one.text == "one")
                let two = await #expect(throws: GRPCStatus.self) {
                    _ = try await client.unary(Echotest.Echo.expand, request("two", count: 2))
                }
                #expect(two?.code == .internal)
                #expect(two?.message == "grpc: more than one response message for a unary call")
                let none = await #expect(throws: GRPCStatus.self) {
                    _ = try await client.unary(Echotest.Echo.expand, request("none", count: 0))
                }
                #expect(none?.code == .internal)
                #expect(none?.message == "grpc: server ended the call without a response message")
                let failed = await #expect(throws: GRPCStatus.self) {
                    _ = try await client.unary(Echotest.Echo.get, request("no", failCode: 9))
                }
                #expect(failed?.code == .failedPrecondition)
                #expect(failed?.message == "no")
                // The connection is fine after all of them.
                #expect(try await client.unary(Echotest.Echo.get, request("after")).text == "after")
            }
            #expect(await eventually { server.counters.streams == 0 })
        }
    }

    /// Cancelling the task of a unary call resets its stream: the caller gets CANCELLED at once and
    /// the server's handler is cancelled.
    @Test func cancellingAUnaryCallResetsItsStream() async throws {
        try await withEchoServer { server, service in
            try await withClient(server) { client in
                let call = Task { try await client.unary(Echotest.Echo.get, request("slow", delayMs: 60_000)) }
                #expect(await eventually { service.progress.handlersRunning.load(ordering: .relaxed) == 1 })
                call.cancel()
                let error = await #expect(throws: GRPCStatus.self) { _ = try await call.value }
                #expect(error?.code == .cancelled)
                #expect(await eventually { service.progress.handlersCancelled.load(ordering: .relaxed) == 1 })
                // A task cancelled before its call starts fails without reaching the server.
                let early = Task {
                    withUnsafeCurrentTask { $0?.cancel() }
                    return try await client.unary(Echotest.Echo.get, request("never"))
                }
                let earlyError = await #expect(throws: GRPCStatus.self) { _ = try await early.value }
                #expect(earlyError?.code == .cancelled)
                let after = try await client.unary(Echotest.Echo.get, request("after"))
                #expect(after.text == "after")
            }
            #expect(await eventually { server.counters.streams == 0 })
        }
    }

    @Test func serverStreaming() async throws {
        try await withEchoServer { server, _ in
            try await withClient(server) { client in
                let got = try await client.serverStreaming(Echotest.Echo.expand, request("x", count: 50)) { responses in
                    var idx: [Int32] = []
                    for try await r in responses { idx.append(r.index) }
                    return idx
                }
                #expect(got == Array(0..<50))
            }
        }
    }

    @Test func clientStreaming() async throws {
        try await withEchoServer { server, _ in
            try await withClient(server) { client in
                let r = try await client.clientStreaming(Echotest.Echo.collect) { writer in
                    for i in 0..<20 { try await writer.send(request("\(i % 10)", payload: [UInt8](repeating: 7, count: i))) }
                }
                #expect(r.index == 20)
                #expect(r.text == "01234567890123456789")
                #expect(r.totalBytes == Int64((0..<20).reduce(0, +)))
            }
        }
    }

    @Test func bidirectionalStreaming() async throws {
        try await withEchoServer { server, _ in
            try await withClient(server) { client in
                let texts = try await client.bidirectionalStreaming(Echotest.Echo.update) { writer, responses in
                    var out: [String] = []
                    var it = responses.makeAsyncIterator()
                    for i in 0..<30 {
                        try await writer.send(request("m\(i)"))
                        let r = try #require(try await it.next())
                        #expect(r.index == Int32(i))
                        out.append(r.text)
                    }
                    writer.finish()
                    let got1 = try await it.next()
                    #expect(got1 == nil)
                    return out
                }
                #expect(texts == (0..<30).map { "m\($0)" })
            }
        }
    }

    @Test func statusAndPercentEncodedMessage() async throws {
        try await withEchoServer { server, _ in
            try await withClient(server) { client in
                let msg = "nope: 100% ünïcode\nline"
                let err = await #expect(throws: GRPCStatus.self) {
                    _ = try await client.unary(Echotest.Echo.get, request(msg, failCode: 9))
                }
                #expect(err?.code == .failedPrecondition)
                #expect(err?.message == msg)
            }
        }
    }

    @Test func unknownServiceAndMethodAreUnimplemented() async throws {
        try await withEchoServer { server, _ in
            try await withClient(server) { client in
                let badMethod = MethodDescriptor<Echotest.EchoRequest, Echotest.EchoResponse>(
                    serviceName: "echotest.Echo", methodName: "Nope", kind: .unary)
                let e1 = await #expect(throws: GRPCStatus.self) { _ = try await client.unary(badMethod, request()) }
                #expect(e1?.code == .unimplemented)
                #expect(e1?.message == "unknown method Nope for service echotest.Echo")
                let badService = MethodDescriptor<Echotest.EchoRequest, Echotest.EchoResponse>(
                    serviceName: "nope.Svc", methodName: "Get", kind: .unary)
                let e2 = await #expect(throws: GRPCStatus.self) { _ = try await client.unary(badService, request()) }
                #expect(e2?.code == .unimplemented)
                #expect(e2?.message == "unknown service nope.Svc")
            }
        }
    }

    @Test func oneMebibyteMessagesAndLimitPlusOne() async throws {
        try await withEchoServer { server, _ in
            try await withClient(server) { client in
                let big = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
                let r = try await client.unary(Echotest.Echo.get, request("big", payload: big))
                #expect(r.payload == big)
                // The server's limit is etcd's: 1.5 MiB + 512 KiB of gRPC overhead = 2 MiB.
                let limit = HTTP2Configuration().maxReceiveMessageSize
                #expect(limit == 2 * 1024 * 1024)
                // A message of exactly the limit passes; limit + 1 is RESOURCE_EXHAUSTED.
                var atLimit = request(payload: [])
                let overhead = atLimit.serializedSize
                _ = overhead
                var fieldOverhead = 1 + ProtoSizeProbe.varintSize(limit)  // tag + length of payload
                atLimit.payload = [UInt8](repeating: 1, count: limit - fieldOverhead)
                if atLimit.serializedSize < limit {
                    fieldOverhead -= limit - atLimit.serializedSize
                    atLimit.payload = [UInt8](repeating: 1, count: limit - fieldOverhead)
                }
                #expect(atLimit.serializedSize == limit)
                let ok = try await client.unary(Echotest.Echo.get, atLimit, options: CallOptions(metadata: []))
                #expect(ok.payload.count == limit - fieldOverhead)
                var over = atLimit
                over.payload.append(1)
                #expect(over.serializedSize == limit + 1)
                let err = await #expect(throws: GRPCStatus.self) { _ = try await client.unary(Echotest.Echo.get, over) }
                #expect(err?.code == .resourceExhausted)
                // The connection is still fine.
                let got2 = try await client.unary(Echotest.Echo.get, request("after")).text
                #expect(got2 == "after")
            }
        }
    }

    @Test func clientRejectsOversizedResponse() async throws {
        try await withEchoServer { server, _ in
            try await withClient(server, configure: { $0.http2.maxReceiveMessageSize = 1000 }) { client in
                let err = await #expect(throws: GRPCStatus.self) {
                    _ = try await client.unary(Echotest.Echo.get, request(replySize: 2000))
                }
                #expect(err?.code == .resourceExhausted)
                let got3 = try await client.unary(Echotest.Echo.get, request(replySize: 900)).payload.count
                #expect(got3 == 900)
            }
        }
    }

    @Test func gzipBothWays() async throws {
        try await withEchoServer { server, _ in
            try await withClient(server, configure: { $0.compressRequests = true }) { client in
                let payload = [UInt8](repeating: 42, count: 300_000)
                let r = try await client.unary(Echotest.Echo.get, request("z", payload: payload))
                #expect(r.payload == payload)
                let got = try await client.serverStreaming(Echotest.Echo.expand, request(count: 5, replySize: 70_000)) { rs in
                    var sizes: [Int] = []
                    for try await m in rs { sizes.append(m.payload.count) }
                    return sizes
                }
                #expect(got == [70_000, 70_000, 70_000, 70_000, 70_000])
            }
        }
        // Server compressing replies to an uncompressed request.
        try await withEchoServer(configure: { $0.compressResponses = true }) { server, _ in
            try await withClient(server) { client in
                let r = try await client.unary(Echotest.Echo.get, request(replySize: 100_000))
                #expect(r.payload == [UInt8](repeating: 0, count: 100_000))
            }
        }
    }

    @Test func gzipBombIsResourceExhausted() async throws {
        // 10 MiB of zeros compresses to ~10 KiB: the compressed size is under the limit, the
        // decompressed size is not.
        try await withEchoServer { server, _ in
            try await withClient(server, configure: { $0.compressRequests = true }) { client in
                let err = await #expect(throws: GRPCStatus.self) {
                    _ = try await client.unary(Echotest.Echo.get, request(payload: [UInt8](repeating: 0, count: 10 << 20)))
                }
                #expect(err?.code == .resourceExhausted)
            }
        }
    }

    @Test func deadlineExceeded() async throws {
        try await withEchoServer { server, service in
            try await withClient(server) { client in
                let err = await #expect(throws: GRPCStatus.self) {
                    _ = try await client.unary(Echotest.Echo.get, request(delayMs: 10_000),
                                               options: CallOptions(timeout: .milliseconds(1000)))
                }
                #expect(err?.code == .deadlineExceeded)
                // The server's handler was cancelled too (its own deadline or the client's reset).
                #expect(await eventually { service.progress.handlersCancelled.load(ordering: .relaxed) == 1 })
                // A call within its deadline succeeds.
                let ok = try await client.unary(Echotest.Echo.get, request("in time", delayMs: 10),
                                                options: CallOptions(timeout: .seconds(10)))
                #expect(ok.text == "in time")
            }
            #expect(await eventually { server.counters.streams == 0 })
        }
    }

    @Test func clientCancellationResetsServerHandler() async throws {
        try await withEchoServer { server, service in
            try await withClient(server) { client in
                let task = Task { try await client.unary(Echotest.Echo.get, request(delayMs: 30_000)) }
                #expect(await eventually { service.progress.handlersRunning.load(ordering: .relaxed) == 1 })
                task.cancel()
                let result = await task.result
                #expect(throws: (any Error).self) { try result.get() }
                if case .failure(let e as GRPCStatus) = result { #expect(e.code == .cancelled) }
                #expect(await eventually { service.progress.handlersCancelled.load(ordering: .relaxed) == 1 })
                #expect(await eventually { server.counters.streams == 0 })
                let got4 = try await client.unary(Echotest.Echo.get, request("next")).text
                #expect(got4 == "next")
            }
        }
    }

    @Test func thousandConcurrentStreamsOnOneConnection() async throws {
        try await withEchoServer { server, service in
            try await withClient(server) { client in
                // 1,000 unary calls all parked in the handler at once, on one connection.
                let results = try await withThrowingTaskGroup(of: String.self) { group in
                    for i in 0..<1000 {
                        group.addTask { try await client.unary(Echotest.Echo.get, request("c\(i)", delayMs: 300)).text }
                    }
                    var seenMax = 0
                    var out: Set<String> = []
                    for try await t in group {
                        seenMax = max(seenMax, service.progress.handlersRunning.load(ordering: .relaxed))
                        out.insert(t)
                    }
                    return out
                }
                #expect(results == Set((0..<1000).map { "c\($0)" }))
                #expect(server.counters.connectionsAccepted == 1)
                #expect(server.counters.streamsOpened == 1000)
            }
            #expect(await eventually { server.counters.streams == 0 })
        }
    }

    @Test func thousandConcurrentBidiStreams() async throws {
        try await withEchoServer { server, _ in
            try await withClient(server) { client in
                let gate = Gate(count: 1000)
                let total = try await withThrowingTaskGroup(of: Int.self) { group in
                    for i in 0..<1000 {
                        group.addTask {
                            try await client.bidirectionalStreaming(Echotest.Echo.update) { writer, responses in
                                var it = responses.makeAsyncIterator()
                                try await writer.send(request("a\(i)"))
                                _ = try #require(try await it.next())
                                await gate.arriveAndWait()  // all 1,000 streams are open right now
                                try await writer.send(request("b\(i)"))
                                let r = try #require(try await it.next())
                                writer.finish()
                                let got5 = try await it.next()
                                #expect(got5 == nil)
                                return r.text == "b\(i)" ? 1 : 0
                            }
                        }
                    }
                    return try await group.reduce(0, +)
                }
                #expect(total == 1000)
            }
        }
    }

    @Test func streamOutlivesManyUnaryCalls() async throws {
        try await withEchoServer { server, _ in
            try await withClient(server) { client in
                try await client.bidirectionalStreaming(Echotest.Echo.update) { writer, responses in
                    var it = responses.makeAsyncIterator()
                    for round in 0..<20 {
                        for i in 0..<50 {
                            let got6 = try await client.unary(Echotest.Echo.get, request("u\(i)")).text
                            #expect(got6 == "u\(i)")
                        }
                        try await writer.send(request("s\(round)"))
                        let got7 = try await it.next()?.text
                        #expect(got7 == "s\(round)")
                    }
                    writer.finish()
                    let got8 = try await it.next()
                    #expect(got8 == nil)
                }
                #expect(server.counters.streamsOpened == 1001)
            }
        }
    }

    @Test func slowClientReaderBoundsServerBuffering() async throws {
        try await withEchoServer { server, service in
            try await withClient(server) { client in
                // 2,000 replies of 64 KiB (125 MiB) to a client that reads one and then stalls.
                try await client.serverStreaming(Echotest.Echo.expand, request(count: 2000, replySize: 65_536)) { responses in
                    var it = responses.makeAsyncIterator()
                    _ = try await it.next()
                    try await Task.sleep(for: .milliseconds(500))
                    let sent = service.progress.sent.load(ordering: .relaxed)
                    // In flight at most: client window (1 MiB) + its queue + server queue + socket buffers.
                    #expect(sent < 200, "server kept producing for a stalled reader: \(sent) sent")
                    // Reading resumes the flow.
                    var n = 1
                    while try await it.next() != nil { n += 1 }
                    #expect(n == 2000)
                }
            }
        }
    }

    @Test func slowServerReaderBoundsClientSends() async throws {
        try await withEchoServer { server, service in
            try await withClient(server) { client in
                                let clientProgress = EchoProgress()
                let r = try await client.clientStreaming(Echotest.Echo.collect) { writer in
                    // The first message makes the handler sleep 500 ms before reading on.
                    try await writer.send(request(delayMs: 500))
                    clientProgress.sent.add(1, ordering: .relaxed)
                    let sender = Task {
                        for _ in 0..<1000 {
                            try await writer.send(request(payload: [UInt8](repeating: 1, count: 65_536)))
                            clientProgress.sent.add(1, ordering: .relaxed)
                        }
                    }
                    try await Task.sleep(for: .milliseconds(300))
                    let sent = clientProgress.sent.load(ordering: .relaxed)
                    #expect(sent < 200, "client kept sending to a stalled reader: \(sent) sent")
                    #expect(service.progress.received.load(ordering: .relaxed) <= 1)
                    try await sender.value
                }
                #expect(r.index == 1001)
                #expect(r.totalBytes == 1000 * 65_536)
            }
        }
    }

    @Test func gracefulShutdownFinishesInFlightAndRefusesNew() async throws {
        var config = GRPCServer.Configuration()
        config.port = 0
        let service = EchoService()
        let server = try await GRPCServer(configuration: config, services: [service])
        try await withClient(server) { client in
            _ = try await client.unary(Echotest.Echo.get, request("warm"))
            let inFlight = Task { try await client.unary(Echotest.Echo.get, request("slow", delayMs: 500)) }
            #expect(await eventually { service.progress.handlersRunning.load(ordering: .relaxed) == 1 })
            await server.shutdown(timeout: .seconds(10))
            // The in-flight call completed normally during the GOAWAY.
            let got9 = try await inFlight.value.text
            #expect(got9 == "slow")
            // New calls are refused: the listener is gone.
            let err = await #expect(throws: GRPCStatus.self) { _ = try await client.unary(Echotest.Echo.get, request()) }
            #expect(err?.code == .unavailable)
        }
        #expect(await eventually { server.counters.connections == 0 && server.counters.streams == 0 })
    }

    @Test func clientMovesToANewConnectionAfterGoAway() async throws {
        try await withEchoServer { server, service in
            try await withClient(server) { client in
                let one = try await client.unary(Echotest.Echo.get, request("one"))
                #expect(one.text == "one")
                let inFlight = Task { try await client.unary(Echotest.Echo.get, request("slow", delayMs: 300)) }
                #expect(await eventually { service.progress.handlersRunning.load(ordering: .relaxed) == 1 })
                await server.drainConnections()
                let slow = try await inFlight.value
                #expect(slow.text == "slow")  // finished during the GOAWAY
                #expect(await eventually { server.counters.connections == 0 })
                // The client saw the GOAWAY / close and opens a new connection.
                let two = try await client.unary(Echotest.Echo.get, request("two"))
                #expect(two.text == "two")
                #expect(server.counters.connectionsAccepted == 2)
            }
        }
    }

    @Test func keepalivePingsAreAcknowledged() async throws {
        try await withEchoServer(configure: { $0.http2.keepaliveInterval = .milliseconds(50) }) { server, _ in
            try await withClient(server, configure: { $0.http2.keepaliveInterval = .milliseconds(50) }) { client in
                _ = try await client.unary(Echotest.Echo.get, request())
                #expect(await eventually { server.counters.keepalivePingsAcked >= 2 && client.counters.keepalivePingsAcked >= 2 })
                let got10 = try await client.unary(Echotest.Echo.get, request("alive")).text
                #expect(got10 == "alive")
            }
        }
    }

    @Test func manyConnections() async throws {
        try await withEchoServer { server, _ in
            try await withClient(server, configure: { $0.connections = 8 }) { client in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for i in 0..<200 {
                        group.addTask {
                            let r = try await client.unary(Echotest.Echo.get, request("\(i)"))
                            #expect(r.text == "\(i)")
                        }
                    }
                    try await group.waitForAll()
                }
                #expect(server.counters.connectionsAccepted == 8)
            }
            #expect(await eventually { server.counters.connections == 0 })
        }
    }
}

enum ProtoSizeProbe {
    static func varintSize(_ v: Int) -> Int {
        var n = 1
        var x = UInt64(v)
        while x >= 0x80 { x >>= 7; n += 1 }
        return n
    }
}

/// A one-shot barrier for `count` tasks.
actor Gate {
    let count: Int
    var arrived = 0
    var waiters: [CheckedContinuation<Void, Never>] = []
    init(count: Int) { self.count = count }
    func arriveAndWait() async {
        arrived += 1
        if arrived >= count {
            for w in waiters { w.resume() }
            waiters.removeAll()
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }
}
