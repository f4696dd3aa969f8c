import KeelAPI
import Testing
import KeelTestSupport

enum Mutator {
    static let kinds = 9

    /// Applies one mutation of kind `kind` to `bytes`.
    static func mutate(_ input: [UInt8], kind: Int, rng: inout SplitMix64) -> [UInt8] {
        var b = input
        switch kind {
        case 0:  // truncation
            if !b.isEmpty { b.removeLast(1 + rng.below(b.count)) }
        case 1:  // bit flips
            if !b.isEmpty { for _ in 0...rng.below(4) { b[rng.below(b.count)] ^= 1 << UInt8(rng.below(8)) } }
        case 2:  // byte insertion
            for _ in 0...rng.below(3) { b.insert(rng.byte(), at: rng.below(b.count + 1)) }
        case 3:  // oversize length: a length-delimited field claiming more bytes than there are
            let tag = UInt8((1 + rng.below(15)) << 3 | 2)
            let len = [UInt64(b.count + 1), 0x7FFF_FFFF, 0xFFFF_FFFF, UInt64.max, 1 << 40][rng.below(5)]
            b.insert(contentsOf: [tag] + varint(len) + [0x01, 0x02], at: rng.below(b.count + 1))
        case 4:  // varint overflow: 10+ continuation bytes
            let tag = UInt8((1 + rng.below(15)) << 3)
            let n = 10 + rng.below(4)
            b.insert(contentsOf: [tag] + Array(repeating: 0xFF, count: n) + [0x7F], at: rng.below(b.count + 1))
        case 5:  // deep nesting bomb
            let depth = 90 + rng.below(200)
            if rng.below(2) == 0 {
                // Unknown field 1000 as nested groups (start-group x depth, then end-group x depth).
                let start: [UInt8] = [0xC3, 0x3E], end: [UInt8] = [0xC4, 0x3E]
                let bomb = Array([[UInt8]](repeating: start, count: depth).joined())
                    + Array([[UInt8]](repeating: end, count: depth).joined())
                b.insert(contentsOf: bomb, at: 0)
            } else {
                // Length-delimited field 1 nested: a message bomb in types whose field 1 is a message.
                var bomb: [UInt8] = []
                for _ in 0..<depth { bomb = [0x0A] + varint(UInt64(bomb.count)) + bomb }
                b = bomb + b
            }
        case 6:  // invalid wire types and field number 0
            let bad: [[UInt8]] = [[0x0E], [0x0F], [0x00, 0x01], [0x03], [0x04], [0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0x00]]
            b.insert(contentsOf: bad[rng.below(bad.count)], at: rng.below(b.count + 1))
        case 7:  // splice a random slice somewhere else (duplicate / reorder fields)
            if b.count > 2 {
                let start = rng.below(b.count - 1)
                let end = start + 1 + rng.below(min(64, b.count - start))
                b.insert(contentsOf: Array(b[start..<end]), at: rng.below(b.count + 1))
            }
        default:  // random bytes overwrite a window
            if !b.isEmpty {
                let start = rng.below(b.count)
                for i in start..<min(b.count, start + 1 + rng.below(8)) { b[i] = rng.byte() }
            }
        }
        return b
    }

    static func varint(_ v: UInt64) -> [UInt8] {
        var v = v, out: [UInt8] = []
        while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        out.append(UInt8(v))
        return out
    }
}

@Suite struct MutationTests {
    static let seeds: [UInt64] = [0x4B45_454C_2026_0002, 0x9E37_79B9_7F4A_7C15, 42]  // fixed: reproducible
    static let rounds = 60  // mutations per fixture and seed: ~200 fixtures x 60 = 12,000 decodes per seed

    @Test(arguments: seeds)
    func mutatedFixturesThrowTypedErrorsOrRoundTrip(seed: UInt64) throws {
        // The 1 MiB fixture is mutated less often to keep the run short; its small neighbours cover the same code.
        let fixtures = try Fixtures.all()
        var rng = SplitMix64(seed: seed)
        var rejected = 0, accepted = 0, total = 0
        var rejectedKinds: [ProtoDecodingError: Int] = [:]
        for fixture in fixtures {
            let type = try #require(MessageTable.byName[fixture.messageName])
            let rounds = fixture.bytes.count > 100_000 ? 4 : Self.rounds
            for round in 0..<rounds {
                let kind = round % Mutator.kinds
                let mutated = Mutator.mutate(fixture.bytes, kind: kind, rng: &rng)
                total += 1
                switch decodeMutated(type, mutated) {
                case .rejected(let error):
                    rejected += 1
                    rejectedKinds[error, default: 0] += 1
                case .accepted:
                    accepted += 1
                case .unstable(let why):
                    Issue.record("seed \(seed) fixture \(fixture.name) round \(round) kind \(kind): \(why); bytes \(mutated.prefix(64))")
                }
            }
        }
        print("mutation test: seed \(seed): \(total) mutations, \(rejected) rejected, \(accepted) accepted; errors \(rejectedKinds)")
        #expect(total >= 10_000)
        // Both outcomes must actually occur, or the mutator is not doing its job.
        #expect(rejected > total / 10)
        #expect(accepted > total / 10)
        #expect(rejectedKinds[.depthLimitExceeded, default: 0] > 0)
        #expect(rejectedKinds[.truncated, default: 0] + rejectedKinds[.lengthExceedsBuffer, default: 0] > 0)
        #expect(rejectedKinds[.malformedVarint, default: 0] > 0)
    }

    @Test func deepNestingBombThrowsDepthLimit() {
        // TxnRequest -> RequestOp(request_txn) -> TxnRequest ... 10,000 levels: a typed error, not a stack overflow.
        var bomb: [UInt8] = []
        for level in 0..<10_000 {
            let tag: UInt8 = level % 2 == 0 ? 0x22 : 0x12  // RequestOp.request_txn = 4, TxnRequest.success = 2
            bomb = [tag] + Mutator.varint(UInt64(bomb.count)) + bomb
        }
        #expect(throws: ProtoDecodingError.depthLimitExceeded) {
            _ = try Etcdserverpb.TxnRequest(serializedBytes: bomb)
        }
    }

    @Test func unknownGroupBombThrowsDepthLimit() {
        // 10,000 nested start-groups of an unknown field inside a PutRequest.
        let bytes: [UInt8] = [0x0A, 0x01, 0x6B] + Array([[UInt8]](repeating: [0xC3, 0x3E], count: 10_000).joined())
        #expect(throws: ProtoDecodingError.depthLimitExceeded) {
            _ = try Etcdserverpb.PutRequest(serializedBytes: bytes)
        }
    }

    @Test func everyTruncationOfNestedTxnIsHandled() throws {
        let fixture = try Fixtures.load("txn_request_nested")
        var outcomes = (rejected: 0, accepted: 0)
        for cut in 0..<fixture.bytes.count {
            switch decodeMutated(Etcdserverpb.TxnRequest.self, Array(fixture.bytes.prefix(cut))) {
            case .rejected: outcomes.rejected += 1
            case .accepted: outcomes.accepted += 1
            case .unstable(let why): Issue.record("cut at \(cut): \(why)")
            }
        }
        #expect(outcomes.rejected > 0)
        #expect(outcomes.accepted >= 1)  // the empty prefix is a valid empty message
    }

    @Test func varintOverflowIsMalformed() {
        // RangeRequest.limit (field 3, varint) with 11 continuation bytes.
        let bytes: [UInt8] = [0x18] + Array(repeating: 0xFF, count: 11) + [0x01]
        #expect(throws: ProtoDecodingError.malformedVarint) {
            _ = try Etcdserverpb.RangeRequest(serializedBytes: bytes)
        }
    }

    @Test func oversizeLengthIsRejected() {
        // PutRequest.value (field 2) claiming 2^32 bytes with 3 present.
        let bytes: [UInt8] = [0x12] + Mutator.varint(1 << 32) + [1, 2, 3]
        #expect(throws: ProtoDecodingError.lengthExceedsBuffer) {
            _ = try Etcdserverpb.PutRequest(serializedBytes: bytes)
        }
    }

    @Test func invalidUTF8InStringIsRejected() {
        // AuthenticateRequest.name (field 1, string) with a lone continuation byte.
        let bytes: [UInt8] = [0x0A, 0x02, 0x61, 0x80]
        #expect(throws: ProtoDecodingError.invalidUTF8) {
            _ = try Etcdserverpb.AuthenticateRequest(serializedBytes: bytes)
        }
    }
}
