import Foundation
import KeelAPI

/// Locates and loads the committed fixtures under <package>/Fixtures (made by Debian's protoc;
/// see Fixtures/regenerate.sh).
enum Fixtures {
    static let directory: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // KeelAPITests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // package root
        .appendingPathComponent("Fixtures")

    struct Fixture: Sendable, CustomStringConvertible {
        let name: String
        let messageName: String
        let bytes: [UInt8]
        let decodedText: String
        var description: String { "\(name) (\(messageName))" }
    }

    /// Every fixture name (the .txtpb files), sorted.
    static func names() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { $0.hasSuffix(".txtpb") }
            .map { String($0.dropLast(".txtpb".count)) }
            .sorted()
    }

    static func load(_ name: String) throws -> Fixture {
        let base = directory.appendingPathComponent(name)
        let txt = try String(contentsOf: base.appendingPathExtension("txtpb"), encoding: .utf8)
        guard let header = txt.split(separator: "\n").first(where: { $0.hasPrefix("# proto-message:") }) else {
            throw FixtureError.noHeader(name)
        }
        let messageName = header.dropFirst("# proto-message:".count).trimmingCharacters(in: .whitespaces)
        let bytes = try [UInt8](Data(contentsOf: base.appendingPathExtension("bin")))
        let decoded = try String(contentsOf: directory.appendingPathComponent(name + ".decoded.txt"), encoding: .utf8)
        return Fixture(name: name, messageName: messageName, bytes: bytes, decodedText: decoded)
    }

    static func all() throws -> [Fixture] { try names().map(load) }

    enum FixtureError: Error { case noHeader(String) }
}

/// Every message type of Protos/*.proto, keyed by its proto full name. A fixture whose type is
/// missing here fails the fixture test.
enum MessageTable {
    static let types: [any ProtoMessage.Type] = [
        // etcdserverpb
        Etcdserverpb.ResponseHeader.self, Etcdserverpb.RangeRequest.self, Etcdserverpb.RangeResponse.self,
        Etcdserverpb.PutRequest.self, Etcdserverpb.PutResponse.self, Etcdserverpb.DeleteRangeRequest.self,
        Etcdserverpb.DeleteRangeResponse.self, Etcdserverpb.RequestOp.self, Etcdserverpb.ResponseOp.self,
        Etcdserverpb.Compare.self, Etcdserverpb.TxnRequest.self, Etcdserverpb.TxnResponse.self,
        Etcdserverpb.CompactionRequest.self, Etcdserverpb.CompactionResponse.self, Etcdserverpb.HashRequest.self,
        Etcdserverpb.HashKVRequest.self, Etcdserverpb.HashKVResponse.self, Etcdserverpb.HashResponse.self,
        Etcdserverpb.SnapshotRequest.self, Etcdserverpb.SnapshotResponse.self, Etcdserverpb.WatchRequest.self,
        Etcdserverpb.WatchCreateRequest.self, Etcdserverpb.WatchCancelRequest.self,
        Etcdserverpb.WatchProgressRequest.self, Etcdserverpb.WatchResponse.self,
        Etcdserverpb.LeaseGrantRequest.self, Etcdserverpb.LeaseGrantResponse.self,
        Etcdserverpb.LeaseRevokeRequest.self, Etcdserverpb.LeaseRevokeResponse.self,
        Etcdserverpb.LeaseCheckpoint.self, Etcdserverpb.LeaseCheckpointRequest.self,
        Etcdserverpb.LeaseCheckpointResponse.self, Etcdserverpb.LeaseKeepAliveRequest.self,
        Etcdserverpb.LeaseKeepAliveResponse.self, Etcdserverpb.LeaseTimeToLiveRequest.self,
        Etcdserverpb.LeaseTimeToLiveResponse.self, Etcdserverpb.LeaseLeasesRequest.self,
        Etcdserverpb.LeaseStatus.self, Etcdserverpb.LeaseLeasesResponse.self, Etcdserverpb.Member.self,
        Etcdserverpb.MemberAddRequest.self, Etcdserverpb.MemberAddResponse.self,
        Etcdserverpb.MemberRemoveRequest.self, Etcdserverpb.MemberRemoveResponse.self,
        Etcdserverpb.MemberUpdateRequest.self, Etcdserverpb.MemberUpdateResponse.self,
        Etcdserverpb.MemberListRequest.self, Etcdserverpb.MemberListResponse.self,
        Etcdserverpb.MemberPromoteRequest.self, Etcdserverpb.MemberPromoteResponse.self,
        Etcdserverpb.DefragmentRequest.self, Etcdserverpb.DefragmentResponse.self,
        Etcdserverpb.MoveLeaderRequest.self, Etcdserverpb.MoveLeaderResponse.self,
        Etcdserverpb.AlarmRequest.self, Etcdserverpb.AlarmMember.self, Etcdserverpb.AlarmResponse.self,
        Etcdserverpb.DowngradeRequest.self, Etcdserverpb.DowngradeResponse.self,
        Etcdserverpb.StatusRequest.self, Etcdserverpb.StatusResponse.self,
        Etcdserverpb.AuthEnableRequest.self, Etcdserverpb.AuthDisableRequest.self,
        Etcdserverpb.AuthStatusRequest.self, Etcdserverpb.AuthenticateRequest.self,
        Etcdserverpb.AuthUserAddRequest.self, Etcdserverpb.AuthUserGetRequest.self,
        Etcdserverpb.AuthUserDeleteRequest.self, Etcdserverpb.AuthUserChangePasswordRequest.self,
        Etcdserverpb.AuthUserGrantRoleRequest.self, Etcdserverpb.AuthUserRevokeRoleRequest.self,
        Etcdserverpb.AuthRoleAddRequest.self, Etcdserverpb.AuthRoleGetRequest.self,
        Etcdserverpb.AuthUserListRequest.self, Etcdserverpb.AuthRoleListRequest.self,
        Etcdserverpb.AuthRoleDeleteRequest.self, Etcdserverpb.AuthRoleGrantPermissionRequest.self,
        Etcdserverpb.AuthRoleRevokePermissionRequest.self, Etcdserverpb.AuthEnableResponse.self,
        Etcdserverpb.AuthDisableResponse.self, Etcdserverpb.AuthStatusResponse.self,
        Etcdserverpb.AuthenticateResponse.self, Etcdserverpb.AuthUserAddResponse.self,
        Etcdserverpb.AuthUserGetResponse.self, Etcdserverpb.AuthUserDeleteResponse.self,
        Etcdserverpb.AuthUserChangePasswordResponse.self, Etcdserverpb.AuthUserGrantRoleResponse.self,
        Etcdserverpb.AuthUserRevokeRoleResponse.self, Etcdserverpb.AuthRoleAddResponse.self,
        Etcdserverpb.AuthRoleGetResponse.self, Etcdserverpb.AuthRoleListResponse.self,
        Etcdserverpb.AuthUserListResponse.self, Etcdserverpb.AuthRoleDeleteResponse.self,
        Etcdserverpb.AuthRoleGrantPermissionResponse.self, Etcdserverpb.AuthRoleRevokePermissionResponse.self,
        // mvccpb, authpb
        Mvccpb.KeyValue.self, Mvccpb.Event.self,
        Authpb.UserAddOptions.self, Authpb.User.self, Authpb.Permission.self, Authpb.Role.self,
        // raftpb
        Raftpb.Entry.self, Raftpb.HardState.self, Raftpb.ConfState.self, Raftpb.ConfChange.self,
        Raftpb.SnapshotMetadata.self, Raftpb.Snapshot.self, Raftpb.Message.self, Raftpb.MessageBatch.self,
        Raftpb.StreamAck.self, Raftpb.SnapshotChunk.self, Raftpb.SnapshotAck.self,
    ]

    static let byName: [String: any ProtoMessage.Type] = Dictionary(
        uniqueKeysWithValues: types.map { ($0.protoMessageName, $0) })
}

/// Decode, print, re-encode: the results the tests compare against the fixture files.
struct RoundTrip {
    var text: String
    var reencoded: [UInt8]
    var serializedSize: Int
}

func roundTrip<M: ProtoMessage>(_ type: M.Type, _ bytes: [UInt8]) throws(ProtoDecodingError) -> RoundTrip {
    let message = try M(serializedBytes: bytes)
    return RoundTrip(text: message.textFormatString(), reencoded: message.serializedBytes(),
                     serializedSize: message.serializedSize)
}

/// Outcome of decoding arbitrary bytes as `type`: a typed error, or a message whose encoding
/// decodes again to an equal message that re-encodes to the same bytes.
enum MutationOutcome: Equatable {
    case rejected(ProtoDecodingError)
    case accepted
    case unstable(String)
}

func decodeMutated<M: ProtoMessage>(_ type: M.Type, _ bytes: [UInt8]) -> MutationOutcome {
    let first: M
    do { first = try M(serializedBytes: bytes) } catch { return .rejected(error) }
    let encoded = first.serializedBytes()
    guard encoded.count == first.serializedSize else { return .unstable("serializedSize \(first.serializedSize) != \(encoded.count)") }
    let second: M
    do { second = try M(serializedBytes: encoded) } catch { return .unstable("re-encoding does not decode: \(error)") }
    guard second == first else { return .unstable("decode(encode(m)) != m") }
    guard second.serializedBytes() == encoded else { return .unstable("second encoding differs") }
    _ = first.textFormatString()
    return .accepted
}
