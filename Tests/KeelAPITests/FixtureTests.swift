import Foundation
import KeelAPI
import Testing

/// Every committed fixture: protoc's bytes decode, print exactly as `protoc --decode` printed
/// them, and re-encode to the identical bytes with an exact serializedSize.
@Suite struct FixtureTests {
    @Test func fixtureDirectoryHasEnoughFixtures() throws {
        let names = try Fixtures.names()
        #expect(names.count >= 60, "found \(names.count) fixtures in \(Fixtures.directory.path)")
    }

    @Test func everyProtoMessageHasAFixture() throws {
        let covered = Set(try Fixtures.all().map(\.messageName))
        let missing = MessageTable.byName.keys.filter { !covered.contains($0) }.sorted()
        // ResponseHeader and UserAddOptions are covered as fields of other fixtures.
        #expect(missing.filter { !["etcdserverpb.ResponseHeader", "authpb.UserAddOptions"].contains($0) } == [])
    }

    @Test(arguments: try Fixtures.names())
    func fixtureRoundTrips(_ name: String) throws {
        let fixture = try Fixtures.load(name)
        let type = try #require(MessageTable.byName[fixture.messageName],
                                "\(fixture.messageName) missing from MessageTable")
        let result = try roundTrip(type, fixture.bytes)
        #expect(result.text == fixture.decodedText)
        #expect(result.serializedSize == fixture.bytes.count)
        #expect(result.reencoded == fixture.bytes, "re-encoding of \(name) differs from protoc's bytes")
    }

    @Test func decodingFromRawBufferMatches() throws {
        for fixture in try Fixtures.all() where fixture.messageName == "etcdserverpb.TxnRequest" {
            let viaArray = try Etcdserverpb.TxnRequest(serializedBytes: fixture.bytes)
            let viaBuffer = try fixture.bytes.withUnsafeBytes { try Etcdserverpb.TxnRequest(decoding: $0) }
            #expect(viaArray == viaBuffer)
        }
    }
}

/// Hand-written checks of decoded values (independent of the text printer).
@Suite struct FixtureValueTests {
    func decode<M: ProtoMessage>(_ name: String, as type: M.Type) throws -> M {
        let fixture = try Fixtures.load(name)
        #expect(fixture.messageName == M.protoMessageName)
        return try M(serializedBytes: fixture.bytes)
    }

    @Test func rangeRequestFields() throws {
        let r = try decode("range_request_basic", as: Etcdserverpb.RangeRequest.self)
        #expect(r.key == Array("foo".utf8))
        #expect(r.rangeEnd == Array("fop".utf8))
        #expect(r.limit == 10)
        #expect(r.revision == 42)
        #expect(r.sortOrder == .descend)
        #expect(r.sortTarget == .mod)
        #expect(r.serializable && r.keysOnly && !r.countOnly)
        #expect(r.minModRevision == 1 && r.maxModRevision == 100)
        #expect(r.minCreateRevision == 2 && r.maxCreateRevision == 99)
        #expect(r.unknownFields.isEmpty)
    }

    @Test func emptyMessageDecodesToDefaults() throws {
        let r = try decode("range_request_empty", as: Etcdserverpb.RangeRequest.self)
        #expect(r == Etcdserverpb.RangeRequest())
        #expect(r.serializedSize == 0)
    }

    @Test func int64Extremes() throws {
        let max = try decode("range_request_int64_max", as: Etcdserverpb.RangeRequest.self)
        #expect(max.limit == Int64.max && max.revision == Int64.max && max.maxCreateRevision == Int64.max)
        let min = try decode("range_request_int64_min", as: Etcdserverpb.RangeRequest.self)
        #expect(min.limit == Int64.min && min.revision == -1 && min.minModRevision == Int64.min)
        #expect(min.maxCreateRevision == -2)
        let kv = try decode("mvcc_key_value_extremes", as: Mvccpb.KeyValue.self)
        #expect(kv.createRevision == Int64.min && kv.modRevision == Int64.max && kv.version == -1)
        #expect(kv.lease == Int64.min && kv.key.isEmpty && kv.value.isEmpty)
    }

    @Test func unsignedExtremes() throws {
        let s = try decode("status_response_max", as: Etcdserverpb.StatusResponse.self)
        #expect(s.header?.clusterId == UInt64.max && s.header?.revision == Int64.max)
        #expect(s.leader == UInt64.max && s.raftAppliedIndex == UInt64.max)
        #expect(s.dbSize == Int64.max && s.dbSizeInUse == Int64.min)
        let h = try decode("hash_response_uint32_max", as: Etcdserverpb.HashResponse.self)
        #expect(h.hash_ == UInt32.max)  // `hash` clashes with Hashable, so the generator names it hash_
        let m = try decode("member_remove_request", as: Etcdserverpb.MemberRemoveRequest.self)
        #expect(m.id == UInt64.max)
    }

    @Test func enumEdgesAndUnknownEnumValuesAreKept() throws {
        let r = try decode("range_request_enum_edges", as: Etcdserverpb.RangeRequest.self)
        #expect(r.sortOrder.rawValue == Int32.min)
        #expect(r.sortTarget.rawValue == Int32.max)
        let u = try decode("range_request_unknown_enum", as: Etcdserverpb.RangeRequest.self)
        #expect(u.sortOrder.rawValue == 7 && u.sortTarget.rawValue == -1)
        let w = try decode("watch_request_create_many_filters", as: Etcdserverpb.WatchRequest.self)
        guard case .createRequest(let create)? = w.requestUnion else {
            Issue.record("expected create_request arm"); return
        }
        #expect(create.filters.map(\.rawValue) == [1, 0, 1, 5, -1])
        #expect(create.filters.first == .nodelete)
    }

    @Test func oneMiBValue() throws {
        let p = try decode("put_request_1mib_value", as: Etcdserverpb.PutRequest.self)
        #expect(p.key == Array("big".utf8))
        #expect(p.value.count == 1 << 20)
        #expect(Array(p.value.prefix(256)) == Array(0...255))
        // The rest is printable ASCII from the generator's fixed LCG.
        #expect(p.value.dropFirst(256).allSatisfy { $0 >= 0x20 && $0 < 0x7f })
        #expect(p.lease == 1)
        #expect(p.serializedSize == 1 + 1 + 3 + 1 + 3 + (1 << 20) + 2)
    }

    @Test func utf8Strings() throws {
        let r = try decode("watch_response_utf8_reason", as: Etcdserverpb.WatchResponse.self)
        #expect(r.cancelReason == "取り消し: 権限がありません 🔒")
        #expect(r.watchId == -1 && r.canceled)
        let a = try decode("authenticate_request", as: Etcdserverpb.AuthenticateRequest.self)
        #expect(a.password == "pässwörd🔑")
        let put = try decode("put_request_utf8", as: Etcdserverpb.PutRequest.self)
        #expect(String(decoding: put.key, as: UTF8.self) == "設定/タイムアウト")
    }

    @Test func nestedTxn() throws {
        let t = try decode("txn_request_nested", as: Etcdserverpb.TxnRequest.self)
        #expect(t.compare.count == 1 && t.success.count == 1 && t.failure.count == 1)
        guard case .requestTxn(let mid)? = t.success[0].request else {
            Issue.record("outer success is not a txn"); return
        }
        #expect(mid.compare.first?.target == .create)
        #expect(mid.compare.first?.targetUnion == .createRevision(3))
        guard case .requestTxn(let inner)? = mid.success.first?.request else {
            Issue.record("middle success is not a txn"); return
        }
        #expect(inner.compare.first?.targetUnion == .lease(9))
        #expect(inner.success.first?.requestPut.value == Array("deep".utf8))
        guard case .requestDeleteRange(let del)? = inner.failure.first?.request else {
            Issue.record("inner failure is not a delete"); return
        }
        #expect(del.key == Array("inner".utf8))
        guard case .requestRange(let range)? = mid.failure.first?.request else {
            Issue.record("middle failure is not a range"); return
        }
        #expect(range.countOnly)
        #expect(t.failure[0].requestPut.value == Array("fallback".utf8))
    }

    @Test func compareTargetUnionArms() throws {
        #expect(try decode("compare_version", as: Etcdserverpb.Compare.self).targetUnion == .version(0))
        #expect(try decode("compare_mod_revision", as: Etcdserverpb.Compare.self).targetUnion == .modRevision(Int64.max))
        #expect(try decode("compare_lease", as: Etcdserverpb.Compare.self).targetUnion == .lease(Int64.min))
        #expect(try decode("compare_value", as: Etcdserverpb.Compare.self).targetUnion == .value(Array("値".utf8)))
        // An empty value still selects the arm (oneof members are always emitted).
        #expect(try decode("compare_value_empty", as: Etcdserverpb.Compare.self).targetUnion == .value([]))
        let c = try decode("compare_range_end", as: Etcdserverpb.Compare.self)
        #expect(c.rangeEnd == Array("b".utf8) && c.result == .greater)
    }

    @Test func watchRequestArms() throws {
        let cancel = try decode("watch_request_cancel_min", as: Etcdserverpb.WatchRequest.self)
        #expect(cancel.requestUnion == .cancelRequest({ var c = Etcdserverpb.WatchCancelRequest(); c.watchId = Int64.min; return c }()))
        let progress = try decode("watch_request_progress", as: Etcdserverpb.WatchRequest.self)
        #expect(progress.requestUnion == .progressRequest(Etcdserverpb.WatchProgressRequest()))
        #expect(progress.serializedSize == 2)
        let op = try decode("request_op_empty_arm", as: Etcdserverpb.RequestOp.self)
        #expect(op.request == .requestPut(Etcdserverpb.PutRequest()))
    }

    @Test func watchEventsAndPrevKv() throws {
        let w = try decode("watch_response_events", as: Etcdserverpb.WatchResponse.self)
        #expect(w.events.count == 20)
        #expect(w.events[0].type == .delete && w.events[1].type == .put)
        #expect(w.events[1].prevKv?.value == Array("old".utf8))
        #expect(w.events[0].prevKv == nil)
        #expect(w.events[19].kv?.modRevision == 29)
    }

    @Test func packedRepeatedUInt64() throws {
        let c = try decode("raft_conf_state", as: Raftpb.ConfState.self)
        #expect(c.voters == [1, 2, 3])
        #expect(c.learners == [4, UInt64.max])
        let many = try decode("raft_conf_state_many_voters", as: Raftpb.ConfState.self)
        #expect(many.voters.count == 100)
        #expect(many.voters[99] == (100 &* 2654435761))
    }

    @Test func raftMessageWithEntries() throws {
        let m = try decode("raft_message_app", as: Raftpb.Message.self)
        #expect(m.type == .app && m.to == 2 && m.from == 1 && m.logTerm == 7 && m.commit == 99)
        #expect(m.entries.count == 11)
        #expect(m.entries.last?.type == .confChange)
        #expect(m.entries.map(\.index) == Array(101...111))
        let unknownType = try decode("raft_message_unknown_type", as: Raftpb.Message.self)
        #expect(unknownType.type.rawValue == 100 && unknownType.rejectHint == UInt64.max)
    }

    @Test func unknownFieldsArePreservedAfterKnownOnes() throws {
        let fixture = try Fixtures.load("unknown_put_request")
        let p = try Etcdserverpb.PutRequest(serializedBytes: fixture.bytes)
        #expect(p.key == Array("foo".utf8) && p.value == Array("bar".utf8) && p.lease == 9 && p.prevKv)
        #expect(!p.unknownFields.isEmpty)
        // Known fields take 14 bytes here (key, value, lease, prev_kv); everything after is unknown.
        #expect(Array(fixture.bytes.dropFirst(14)) == p.unknownFields)
        #expect(p.unknownFields.first == 0xA0 && p.unknownFields[1] == 0x06)  // field 100, varint
        var changed = p
        changed.lease = 10
        #expect(changed.unknownFields == p.unknownFields)
        #expect(Array(changed.serializedBytes().suffix(p.unknownFields.count)) == p.unknownFields)

        let onlyUnknown = try decode("unknown_hash_request_all", as: Etcdserverpb.HashRequest.self)
        #expect(onlyUnknown.unknownFields == (try Fixtures.load("unknown_hash_request_all")).bytes)

        let nested = try decode("unknown_range_response_nested", as: Etcdserverpb.RangeResponse.self)
        #expect(nested.kvs.count == 2 && nested.count == 2)
        #expect(!nested.unknownFields.isEmpty && !nested.kvs[0].unknownFields.isEmpty)
        #expect(nested.kvs[0].value == Array("1".utf8))
    }
}
