import GRPC
import KeelAPI
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import Storage
import KeelTestSupport
import Testing
@testable import Server

#if canImport(Glibc)
import Glibc
#endif

@Suite struct ValidationTests {
    @Test func emptyKeysAndFlagsAsEtcdsGRPCLayer() {
        var r = Etcdserverpb.RangeRequest()
        #expect(throws: EtcdError.emptyKey) { try RequestValidation.checkRange(r) }
        r.key = [1]
        #expect((try? RequestValidation.checkRange(r)) != nil)
        var p = Etcdserverpb.PutRequest()
        p.key = [1]; p.ignoreValue = true; p.value = [2]
        #expect(throws: EtcdError.valueProvided) { try RequestValidation.checkPut(p) }
        p.ignoreValue = false; p.ignoreLease = true; p.lease = 7
        #expect(throws: EtcdError.leaseProvided) { try RequestValidation.checkPut(p) }
        #expect(throws: EtcdError.emptyKey) { try RequestValidation.checkDelete(Etcdserverpb.DeleteRangeRequest()) }
    }

    @Test func longKeysPassValidation() {
        // etcd limits keys only by the request size (checked on the whole request, not here); the
        // store takes keys of any length, so nothing refuses a long key before Raft
        var p = Etcdserverpb.PutRequest()
        p.key = [UInt8](repeating: 0x6b, count: 2_000)
        #expect((try? RequestValidation.checkPut(p)) != nil)
        p.key = [UInt8](repeating: 0x6b, count: 1 << 20)
        #expect((try? RequestValidation.checkPut(p)) != nil)
        var op = Etcdserverpb.RequestOp()
        op.requestPut = p
        var t = Etcdserverpb.TxnRequest()
        t.success = [op]
        #expect((try? RequestValidation.checkTxn(t, maxTxnOps: 128)) != nil)
    }

    @Test func txnLimitsAndOps() {
        func put(_ k: String) -> Etcdserverpb.RequestOp {
            var op = Etcdserverpb.RequestOp(); var p = Etcdserverpb.PutRequest(); p.key = Array(k.utf8)
            op.request = .requestPut(p); return op
        }
        var t = Etcdserverpb.TxnRequest()
        t.success = (0..<129).map { put("k\($0)") }
        #expect(throws: EtcdError.tooManyOps) { try RequestValidation.checkTxn(t, maxTxnOps: 128) }
        t.success = (0..<128).map { put("k\($0)") }
        #expect((try? RequestValidation.checkTxn(t, maxTxnOps: 128)) != nil)
        // An op with no request set is "key not found", as in etcd.
        t.success = [Etcdserverpb.RequestOp()]
        #expect(throws: EtcdError.keyNotFound) { try RequestValidation.checkTxn(t, maxTxnOps: 128) }
        var c = Etcdserverpb.Compare(); c.key = []
        t.success = []; t.compare = [c]
        #expect(throws: EtcdError.emptyKey) { try RequestValidation.checkTxn(t, maxTxnOps: 128) }
        // Nested txns get what is left of the limit.
        var inner = Etcdserverpb.TxnRequest(); inner.success = (0..<3).map { put("i\($0)") }
        var op = Etcdserverpb.RequestOp(); op.request = .requestTxn(inner)
        t.compare = []; t.success = [op, op]
        #expect(throws: EtcdError.tooManyOps) { try RequestValidation.checkTxn(t, maxTxnOps: 4) }
        #expect((try? RequestValidation.checkTxn(t, maxTxnOps: 5)) != nil)
    }

    @Test func storeErrorsMapToEtcdCodesAndMessages() {
        let cases: [(MVCCError, GRPCStatusCode, String)] = [
            (.compacted(compactRevision: 3), .outOfRange, "etcdserver: mvcc: required revision has been compacted"),
            (.futureRevision, .outOfRange, "etcdserver: mvcc: required revision is a future revision"),
            (.keyNotFound, .invalidArgument, "etcdserver: key not found"),
            (.leaseNotFound, .notFound, "etcdserver: requested lease not found"),
            (.leaseExists, .failedPrecondition, "etcdserver: lease already exists"),
            (.duplicateKey, .invalidArgument, "etcdserver: duplicate key given in txn request"),
            (.noSpace, .resourceExhausted, "etcdserver: mvcc: database space exceeded"),
        ]
        for (e, code, msg) in cases {
            let s = EtcdError.from(e)
            #expect(s.code == code && s.message == msg)
            #expect(e.message == msg)
        }
    }
}

@Suite struct ApplyHelperTests {
    @Test func requestIDIsReadFromTheEncodedEntry() {
        for id: UInt64 in [1, 127, 128, 0xDEAD_BEEF, UInt64.max] {
            var r = Keelpb.InternalRequest()
            r.id = id
            var p = Etcdserverpb.PutRequest(); p.key = [1]; r.request = .put(p)
            #expect(RaftHost.peekID(r.serializedBytes()) == id)
        }
        #expect(RaftHost.peekID([]) == nil)
        #expect(RaftHost.peekID([0x12, 0x00]) == nil)          // field 2 first: not ours
        #expect(RaftHost.peekID([0x08, 0xFF]) == nil)          // truncated varint
    }

    @Test func alarmsActivateDeactivateAndList() {
        var alarms: [Etcdserverpb.AlarmMember] = []
        var a = Etcdserverpb.AlarmRequest()
        a.action = .activate; a.memberID = 9; a.alarm = .nospace
        var resp = Applier.applyAlarm(a, &alarms, revision: 5)
        #expect(alarms.count == 1 && resp.alarms.count == 1 && resp.header?.revision == 5)
        resp = Applier.applyAlarm(a, &alarms, revision: 5)
        #expect(alarms.count == 1)                               // raised once
        a.action = .get
        #expect(Applier.applyAlarm(a, &alarms, revision: 5).alarms == alarms)
        #expect(MaintenanceService.alarmText(alarms[0]) == "memberID:9 alarm:NOSPACE ")
        a.action = .deactivate
        resp = Applier.applyAlarm(a, &alarms, revision: 6)
        #expect(alarms.isEmpty && resp.alarms.count == 1)
        resp = Applier.applyAlarm(a, &alarms, revision: 6)
        #expect(resp.alarms.isEmpty)
    }

    @Test func txnWritesDetectsNestedPuts() {
        var t = Etcdserverpb.TxnRequest()
        var get = Etcdserverpb.RequestOp(); get.request = .requestRange(Etcdserverpb.RangeRequest())
        t.success = [get]
        #expect(!Applier.txnWrites(t))
        var inner = Etcdserverpb.TxnRequest()
        var put = Etcdserverpb.RequestOp(); put.request = .requestPut(Etcdserverpb.PutRequest())
        inner.failure = [put]
        var nested = Etcdserverpb.RequestOp(); nested.request = .requestTxn(inner)
        t.failure = [nested]
        #expect(Applier.txnWrites(t))
    }

    @Test func histogramAndPrometheusText() {
        var h = Histogram.etcdDisk()
        h.observe(0.0005); h.observe(0.003); h.observe(100)
        var p = PrometheusText()
        p.histogram("x_seconds", "help", h)
        p.gauge("g", "gauge help", 2)
        let t = p.text
        #expect(t.contains("# TYPE x_seconds histogram\n"))
        #expect(t.contains("x_seconds_bucket{le=\"0.001\"} 1\n"))
        #expect(t.contains("x_seconds_bucket{le=\"0.004\"} 2\n"))
        #expect(t.contains("x_seconds_bucket{le=\"8.192\"} 2\n"))
        #expect(t.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"))
        #expect(t.contains("x_seconds_count 3\n"))
        #expect(t.contains("# TYPE g gauge\ng 2\n"))
    }
}

@Suite struct HTTPSniffingTests {
    @Test func prefaceClassification() {
        let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        #expect(PrefaceVerdict.classify(preface) == .http2)
        #expect(PrefaceVerdict.classify(preface + [0, 0, 4]) == .http2)
        #expect(PrefaceVerdict.classify(preface.prefix(10)) == .needMoreBytes)
        #expect(PrefaceVerdict.classify([UInt8]()) == .needMoreBytes)
        #expect(PrefaceVerdict.classify(Array("GET /health HTTP/1.1\r\n".utf8)) == .other)
        #expect(PrefaceVerdict.classify(Array("PRI * HTTP/1.1".utf8)) == .other)
    }

    static let router: HTTPRouter = { _, path in
        path == "/health" ? HTTPReply(body: "{\"health\":\"true\"}") : nil
    }

    @Test(.timeLimit(.minutes(1))) func http1HandlerAnswersOnAnEmbeddedChannel() async throws {
        let ch = NIOAsyncTestingChannel()
        try await ch.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2379))   // the handler writes only to an active channel
        let initializer = HTTPEndpoints.initializer(router: Self.router)
        try await ch.eventLoop.submit { try initializer(ch) }.get()
        try await ch.writeInbound(ByteBuffer(string: "GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n"))
        var out = ""
        while !(out.contains("{\"health\":\"true\"}") && out.contains("404 page not found")) {
            let part = try await ch.waitForOutboundWrite(as: IOData.self)
            if case .byteBuffer(let b) = part { out += String(buffer: b) }
        }
        // Pipelined requests are answered in order.
        let first = out.range(of: "HTTP/1.1 200 OK")!, second = out.range(of: "HTTP/1.1 404 Not Found")!
        #expect(first.lowerBound < second.lowerBound)
        #expect(out.contains("Content-Length: 17\r\n"))
        _ = try? await ch.finish()
    }

    /// The GRPC seam on a real listener: a plain HTTP/1.1 client and an HTTP/2 gRPC client on the
    /// same port each get their protocol.
    @Test func grpcAndHTTP1ShareOnePort() async throws {
        var cfg = GRPCServer.Configuration()
        cfg.host = "127.0.0.1"; cfg.port = 0
        let server = try await GRPCServer(configuration: cfg, services: [],
                                          nonHTTP2Initializer: HTTPEndpoints.initializer(router: Self.router))
        let port = server.port
        let reply = try await NIOThreadPool.singleton.runIfActive { try plainHTTPGet(port: port, path: "/health") }
        #expect(reply.status == 200 && reply.head.hasPrefix("HTTP/1.1 200 OK") && reply.body == "{\"health\":\"true\"}")
        let client = GRPCClient(host: "127.0.0.1", port: port)
        await #expect(throws: GRPCStatus(.unimplemented, "unknown service etcdserverpb.KV")) {
            _ = try await client.unary(Etcdserverpb.KV.range, Etcdserverpb.RangeRequest(),
                                       options: CallOptions(timeout: .seconds(10)))
        }
        await client.close()
        await server.shutdown(timeout: .seconds(2))
    }
}
