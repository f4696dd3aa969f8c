#!/usr/bin/env python3
"""Writes every Fixtures/<name>.txtpb (text-format inputs for protoc --encode).

Deterministic: same output on every run (no clock, no randomness beyond a fixed LCG).
Header lines:  # proto-message: <type the fixture is decoded as>
   optional:   # encode-message: <type protoc encodes it with>  (unknown-field fixtures)
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
I64_MIN, I64_MAX, U64_MAX = -9223372036854775808, 9223372036854775807, 18446744073709551615
I32_MIN, I32_MAX, U32_MAX = -2147483648, 2147483647, 4294967295
HDR = 'header { cluster_id: 14841639068965178418 member_id: 10276657743932975437 revision: 42 raft_term: 7 }'
HDR_MAX = f'header {{ cluster_id: {U64_MAX} member_id: {U64_MAX} revision: {I64_MAX} raft_term: {U64_MAX} }}'
KV = 'key: "foo" create_revision: 2 mod_revision: 5 version: 3 value: "bar" lease: 7587869011862400522'
MEMBER = 'ID: 10276657743932975437 name: "infra1" peerURLs: "http://127.0.0.1:2380" clientURLs: "http://127.0.0.1:2379" clientURLs: "http://[::1]:2379"'

def esc(data: bytes) -> str:
    out = []
    for b in data:
        if b == 0x22: out.append('\\"')
        elif b == 0x5c: out.append('\\\\')
        elif 0x20 <= b < 0x7f: out.append(chr(b))
        else: out.append('\\%03o' % b)
    return '"' + ''.join(out) + '"'

def big_value() -> bytes:
    """1 MiB: first 256 bytes are 0..255, the rest printable ASCII from a fixed LCG."""
    n = 1 << 20
    out = bytearray(range(256))
    x = 0x2545F4914F6CDD1D
    alphabet = b'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/+=~'
    while len(out) < n:
        x = (x * 6364136223846793005 + 1442695040888963407) & U64_MAX
        out.append(alphabet[(x >> 33) % len(alphabet)])
    return bytes(out)

F = []  # (name, message type, body, encode type or None)
def fx(name, typ, body='', enc=None):
    F.append((name, typ, body, enc))

E = 'etcdserverpb.'
# ---- KV
fx('range_request_basic', E+'RangeRequest', 'key: "foo" range_end: "fop" limit: 10 revision: 42 sort_order: DESCEND sort_target: MOD serializable: true keys_only: true count_only: false min_mod_revision: 1 max_mod_revision: 100 min_create_revision: 2 max_create_revision: 99')
fx('range_request_empty', E+'RangeRequest', '')
fx('range_request_all_keys', E+'RangeRequest', r'key: "\000" range_end: "\000"')
fx('range_request_int64_max', E+'RangeRequest', f'key: "k" limit: {I64_MAX} revision: {I64_MAX} min_mod_revision: {I64_MAX} max_mod_revision: {I64_MAX} min_create_revision: {I64_MAX} max_create_revision: {I64_MAX}')
fx('range_request_int64_min', E+'RangeRequest', f'key: "k" limit: {I64_MIN} revision: -1 min_mod_revision: {I64_MIN} max_create_revision: -2')
fx('range_request_enum_edges', E+'RangeRequest', f'key: "k" sort_order: {I32_MIN} sort_target: {I32_MAX}')
fx('range_request_unknown_enum', E+'RangeRequest', 'sort_order: 7 sort_target: -1 count_only: true')
fx('range_request_all_sort_targets', E+'RangeRequest', 'key: "a" sort_order: ASCEND sort_target: VALUE')
fx('range_request_utf8_key', E+'RangeRequest', 'key: "キー/設定/🚀" range_end: "キー/設定/🚁"')
fx('range_request_binary_key', E+'RangeRequest', 'key: ' + esc(bytes(range(256))) + ' range_end: ' + esc(b'\xff\xff\xff\xff'))
fx('range_response_basic', E+'RangeResponse', f'{HDR} kvs {{ {KV} }} kvs {{ key: "foo2" create_revision: 6 mod_revision: 6 version: 1 value: "" }} more: true count: 2')
fx('range_response_empty', E+'RangeResponse', '')
fx('range_response_header_max', E+'RangeResponse', f'{HDR_MAX} count: {I64_MAX}')
fx('range_response_many_kvs', E+'RangeResponse', HDR + ' ' + ' '.join(
    f'kvs {{ key: "key/{i:04d}" create_revision: {i+2} mod_revision: {i*3+2} version: {i%5+1} value: "value-{i}" lease: {i*1000003 if i%3==0 else 0} }}' for i in range(200)) + ' count: 200')
fx('range_response_utf8', E+'RangeResponse', HDR + ' kvs { key: "日本語のキー" create_revision: 3 mod_revision: 3 version: 1 value: "こんにちは世界 🌏🎌👍🏽 Ünïcödé" } count: 1')
fx('put_request_basic', E+'PutRequest', 'key: "foo" value: "bar" lease: 7587869011862400522 prev_kv: true')
fx('put_request_flags', E+'PutRequest', 'key: "foo" ignore_value: true ignore_lease: true')
fx('put_request_empty', E+'PutRequest', '')
fx('put_request_empty_value', E+'PutRequest', 'key: "k" value: ""')
fx('put_request_1mib_value', E+'PutRequest', 'key: "big" value: ' + esc(big_value()) + ' lease: 1')
fx('put_request_lease_min', E+'PutRequest', f'key: "k" lease: {I64_MIN}')
fx('put_request_lease_max', E+'PutRequest', f'key: "k" lease: {I64_MAX}')
fx('put_request_lease_negative', E+'PutRequest', 'key: "k" lease: -1')
fx('put_request_utf8', E+'PutRequest', 'key: "設定/タイムアウト" value: "三十秒 ⏱️ 🐢→🐇"')
fx('put_response_basic', E+'PutResponse', f'{HDR} prev_kv {{ {KV} }}')
fx('put_response_empty_prev_kv', E+'PutResponse', f'{HDR} prev_kv {{ }}')
fx('delete_range_request_basic', E+'DeleteRangeRequest', 'key: "a" range_end: "z" prev_kv: true')
fx('delete_range_response_basic', E+'DeleteRangeResponse', f'{HDR} deleted: 2 prev_kvs {{ {KV} }} prev_kvs {{ key: "foo2" create_revision: 6 mod_revision: 6 version: 1 value: "x" }}')
fx('delete_range_response_deleted_max', E+'DeleteRangeResponse', f'deleted: {I64_MAX}')
fx('compaction_request_basic', E+'CompactionRequest', 'revision: 1000 physical: true')
fx('compaction_request_int64_min', E+'CompactionRequest', f'revision: {I64_MIN}')
fx('compaction_response_basic', E+'CompactionResponse', HDR)
# ---- Txn, RequestOp, ResponseOp, Compare
fx('compare_version', E+'Compare', 'result: EQUAL target: VERSION key: "k" version: 0')
fx('compare_create_revision', E+'Compare', 'result: GREATER target: CREATE key: "k" create_revision: 5')
fx('compare_mod_revision', E+'Compare', f'result: LESS target: MOD key: "k" mod_revision: {I64_MAX}')
fx('compare_value', E+'Compare', 'result: NOT_EQUAL target: VALUE key: "k" value: "値"')
fx('compare_value_empty', E+'Compare', 'result: EQUAL target: VALUE key: "k" value: ""')
fx('compare_lease', E+'Compare', f'result: EQUAL target: LEASE key: "k" lease: {I64_MIN}')
fx('compare_range_end', E+'Compare', 'result: GREATER target: MOD key: "a" mod_revision: 1 range_end: "b"')
fx('request_op_range', E+'RequestOp', 'request_range { key: "a" range_end: "b" limit: 1 }')
fx('request_op_put', E+'RequestOp', 'request_put { key: "a" value: "1" }')
fx('request_op_delete_range', E+'RequestOp', 'request_delete_range { key: "a" prev_kv: true }')
fx('request_op_txn', E+'RequestOp', 'request_txn { compare { key: "a" version: 1 } success { request_put { key: "a" value: "2" } } }')
fx('request_op_empty_arm', E+'RequestOp', 'request_put { }')
fx('response_op_range', E+'ResponseOp', f'response_range {{ {HDR} kvs {{ {KV} }} count: 1 }}')
fx('response_op_put', E+'ResponseOp', f'response_put {{ {HDR} }}')
fx('response_op_delete_range', E+'ResponseOp', f'response_delete_range {{ {HDR} deleted: 1 }}')
fx('response_op_txn', E+'ResponseOp', f'response_txn {{ {HDR} succeeded: true responses {{ response_put {{ }} }} }}')
fx('txn_request_basic', E+'TxnRequest',
   'compare { result: EQUAL target: VALUE key: "lock" value: "" } '
   'compare { result: LESS target: MOD key: "cfg" mod_revision: 100 } '
   'success { request_put { key: "lock" value: "me" lease: 42 } } '
   'success { request_range { key: "cfg" } } '
   'failure { request_range { key: "lock" } } '
   'failure { request_delete_range { key: "stale/" range_end: "stale0" } }')
fx('txn_request_nested', E+'TxnRequest',
   'compare { target: VERSION key: "outer" version: 1 } '
   'success { request_txn { '
   '  compare { result: GREATER target: CREATE key: "mid" create_revision: 3 } '
   '  success { request_txn { compare { target: LEASE key: "inner" lease: 9 } success { request_put { key: "inner" value: "deep" } } failure { request_delete_range { key: "inner" } } } } '
   '  failure { request_range { key: "mid" count_only: true } } '
   '} } '
   'failure { request_put { key: "outer" value: "fallback" } }')
fx('txn_request_empty', E+'TxnRequest', '')
fx('txn_response_basic', E+'TxnResponse',
   f'{HDR} succeeded: true responses {{ response_put {{ {HDR} prev_kv {{ {KV} }} }} }} '
   f'responses {{ response_range {{ {HDR} kvs {{ {KV} }} count: 1 }} }} '
   f'responses {{ response_delete_range {{ {HDR} deleted: 0 }} }}')
fx('txn_response_nested', E+'TxnResponse',
   f'{HDR} succeeded: true responses {{ response_txn {{ {HDR} succeeded: false responses {{ response_txn {{ succeeded: true responses {{ response_put {{ }} }} }} }} responses {{ response_range {{ count: 0 }} }} }} }}')
fx('txn_response_failed', E+'TxnResponse', f'{HDR} succeeded: false')
# ---- Hash / Snapshot / maintenance
fx('hash_request', E+'HashRequest')
fx('hash_response_uint32_max', E+'HashResponse', f'{HDR} hash: {U32_MAX}')
fx('hash_kv_request', E+'HashKVRequest', 'revision: 12345')
fx('hash_kv_response', E+'HashKVResponse', f'{HDR} hash: 3735928559 compact_revision: 100')
fx('hash_kv_response_zero', E+'HashKVResponse', 'hash: 0 compact_revision: 0')
fx('snapshot_request', E+'SnapshotRequest')
fx('snapshot_response_chunk', E+'SnapshotResponse', f'{HDR} remaining_bytes: 1048576 blob: ' + esc(bytes((i * 7 + 3) & 0xff for i in range(4096))))
fx('snapshot_response_last', E+'SnapshotResponse', f'remaining_bytes: 0 blob: ""')
fx('snapshot_response_remaining_max', E+'SnapshotResponse', f'remaining_bytes: {U64_MAX}')
# ---- Watch
fx('watch_request_create', E+'WatchRequest', 'create_request { key: "foo" range_end: "fop" start_revision: 10 progress_notify: true filters: NOPUT filters: NODELETE prev_kv: true watch_id: 3 fragment: true }')
fx('watch_request_create_many_filters', E+'WatchRequest', 'create_request { key: "k" filters: [NODELETE, NOPUT, NODELETE, 5, -1] }')
fx('watch_request_cancel', E+'WatchRequest', 'cancel_request { watch_id: 3 }')
fx('watch_request_cancel_min', E+'WatchRequest', f'cancel_request {{ watch_id: {I64_MIN} }}')
fx('watch_request_progress', E+'WatchRequest', 'progress_request { }')
fx('watch_create_request_plain', E+'WatchCreateRequest', f'key: "a" start_revision: {I64_MAX} watch_id: -1')
fx('watch_cancel_request', E+'WatchCancelRequest', 'watch_id: 7')
fx('watch_progress_request', E+'WatchProgressRequest')
fx('watch_response_created', E+'WatchResponse', f'{HDR} watch_id: 3 created: true')
fx('watch_response_events', E+'WatchResponse', HDR + ' watch_id: 3 ' + ' '.join(
    f'events {{ type: {"PUT" if i % 4 else "DELETE"} kv {{ key: "foo/{i}" create_revision: {i+2} mod_revision: {i+10} version: {i%3+1} value: "v{i}" }}'
    + (f' prev_kv {{ key: "foo/{i}" create_revision: {i+2} mod_revision: {i+9} version: 1 value: "old" }}' if i % 2 else '') + ' }' for i in range(20)))
fx('watch_response_canceled', E+'WatchResponse', f'{HDR} watch_id: 3 canceled: true compact_revision: 17 cancel_reason: "etcdserver: mvcc: required revision has been compacted"')
fx('watch_response_fragment', E+'WatchResponse', f'watch_id: 0 fragment: true events {{ kv {{ key: "f" value: "ragment" }} }}')
fx('watch_response_utf8_reason', E+'WatchResponse', 'watch_id: -1 canceled: true cancel_reason: "取り消し: 権限がありません 🔒"')
# ---- Lease
fx('lease_grant_request', E+'LeaseGrantRequest', 'TTL: 60 ID: 7587869011862400522')
fx('lease_grant_request_zero', E+'LeaseGrantRequest', 'TTL: 0 ID: 0')
fx('lease_grant_response', E+'LeaseGrantResponse', f'{HDR} ID: 7587869011862400522 TTL: 60 error: ""')
fx('lease_grant_response_error', E+'LeaseGrantResponse', f'ID: -1 TTL: {I64_MIN} error: "etcdserver: lease already exists"')
fx('lease_revoke_request', E+'LeaseRevokeRequest', f'ID: {I64_MAX}')
fx('lease_revoke_response', E+'LeaseRevokeResponse', HDR)
fx('lease_checkpoint', E+'LeaseCheckpoint', 'ID: 1 remaining_TTL: 30')
fx('lease_checkpoint_request', E+'LeaseCheckpointRequest', 'checkpoints { ID: 1 remaining_TTL: 30 } checkpoints { ID: 2 remaining_TTL: -5 } checkpoints { }')
fx('lease_checkpoint_response', E+'LeaseCheckpointResponse', HDR)
fx('lease_keep_alive_request', E+'LeaseKeepAliveRequest', 'ID: 7587869011862400522')
fx('lease_keep_alive_response', E+'LeaseKeepAliveResponse', f'{HDR} ID: 7587869011862400522 TTL: 59')
fx('lease_time_to_live_request', E+'LeaseTimeToLiveRequest', 'ID: 5 keys: true')
fx('lease_time_to_live_response', E+'LeaseTimeToLiveResponse', f'{HDR} ID: 5 TTL: 42 grantedTTL: 60 keys: "a" keys: "" keys: "鍵" keys: "\\377\\000"')
fx('lease_time_to_live_response_expired', E+'LeaseTimeToLiveResponse', 'ID: 5 TTL: -1')
fx('lease_leases_request', E+'LeaseLeasesRequest')
fx('lease_leases_response', E+'LeaseLeasesResponse', f'{HDR} leases {{ ID: 1 }} leases {{ ID: {I64_MAX} }} leases {{ ID: {I64_MIN} }} leases {{ }}')
fx('lease_status', E+'LeaseStatus', 'ID: 99')
# ---- Cluster
fx('member', E+'Member', MEMBER + ' isLearner: true')
fx('member_add_request', E+'MemberAddRequest', 'peerURLs: "http://10.0.0.1:2380" peerURLs: "http://10.0.0.2:2380" isLearner: true')
fx('member_add_response', E+'MemberAddResponse', f'{HDR} member {{ ID: 2 peerURLs: "http://10.0.0.2:2380" isLearner: true }} members {{ {MEMBER} }} members {{ ID: 2 peerURLs: "http://10.0.0.2:2380" isLearner: true }}')
fx('member_remove_request', E+'MemberRemoveRequest', f'ID: {U64_MAX}')
fx('member_remove_response', E+'MemberRemoveResponse', f'{HDR} members {{ {MEMBER} }}')
fx('member_update_request', E+'MemberUpdateRequest', 'ID: 10276657743932975437 peerURLs: "https://ノード1.example:2380"')
fx('member_update_response', E+'MemberUpdateResponse', f'{HDR} members {{ {MEMBER} }}')
fx('member_list_request', E+'MemberListRequest', 'linearizable: true')
fx('member_list_response', E+'MemberListResponse', HDR + ' ' + ' '.join(f'members {{ ID: {i*1111111111111111111} name: "node-{i}" peerURLs: "http://10.0.0.{i}:2380" clientURLs: "http://10.0.0.{i}:2379" }}' for i in range(1, 6)) + ' members { ID: 0 name: "" }')
fx('member_promote_request', E+'MemberPromoteRequest', 'ID: 2')
fx('member_promote_response', E+'MemberPromoteResponse', f'{HDR} members {{ {MEMBER} }}')
fx('defragment_request', E+'DefragmentRequest')
fx('defragment_response', E+'DefragmentResponse', HDR)
fx('move_leader_request', E+'MoveLeaderRequest', f'targetID: {U64_MAX}')
fx('move_leader_response', E+'MoveLeaderResponse', HDR)
fx('alarm_request_get', E+'AlarmRequest', 'action: GET')
fx('alarm_request_activate', E+'AlarmRequest', 'action: ACTIVATE memberID: 10276657743932975437 alarm: NOSPACE')
fx('alarm_request_deactivate', E+'AlarmRequest', 'action: DEACTIVATE memberID: 1 alarm: CORRUPT')
fx('alarm_member', E+'AlarmMember', 'memberID: 3 alarm: CORRUPT')
fx('alarm_response', E+'AlarmResponse', f'{HDR} alarms {{ memberID: 1 alarm: NOSPACE }} alarms {{ memberID: 2 alarm: CORRUPT }} alarms {{ memberID: 3 alarm: 99 }}')
fx('downgrade_request', E+'DowngradeRequest', 'action: ENABLE version: "3.4.0"')
fx('downgrade_request_cancel', E+'DowngradeRequest', 'action: CANCEL')
fx('downgrade_response', E+'DowngradeResponse', f'{HDR} version: "3.5.0"')
fx('status_request', E+'StatusRequest')
fx('status_response', E+'StatusResponse', f'{HDR} version: "3.5.17" dbSize: 25165824 leader: 10276657743932975437 raftIndex: 1234567 raftTerm: 7 raftAppliedIndex: 1234560 errors: "etcdserver: mvcc: database space exceeded" errors: "警告" dbSizeInUse: 16777216 isLearner: true')
fx('status_response_max', E+'StatusResponse', f'{HDR_MAX} dbSize: {I64_MAX} leader: {U64_MAX} raftIndex: {U64_MAX} raftTerm: {U64_MAX} raftAppliedIndex: {U64_MAX} dbSizeInUse: {I64_MIN}')
# ---- Auth
for req in ['AuthEnableRequest', 'AuthDisableRequest', 'AuthStatusRequest', 'AuthUserListRequest', 'AuthRoleListRequest']:
    fx(''.join('_' + c.lower() if c.isupper() else c for c in req).lstrip('_'), E+req)
fx('auth_enable_response', E+'AuthEnableResponse', HDR)
fx('auth_disable_response', E+'AuthDisableResponse', HDR)
fx('auth_status_response', E+'AuthStatusResponse', f'{HDR} enabled: true authRevision: {U64_MAX}')
fx('authenticate_request', E+'AuthenticateRequest', 'name: "root" password: "pässwörd🔑"')
fx('authenticate_response', E+'AuthenticateResponse', f'{HDR} token: "eyJhbGciOiJSUzI1NiJ9.payload.sig"')
fx('auth_user_add_request', E+'AuthUserAddRequest', 'name: "ユーザー" password: "" options { no_password: true } hashedPassword: "$2a$10$abcdefghijklmnopqrstuv"')
fx('auth_user_add_request_empty_options', E+'AuthUserAddRequest', 'name: "u" password: "p" options { }')
fx('auth_user_add_response', E+'AuthUserAddResponse', HDR)
fx('auth_user_get_request', E+'AuthUserGetRequest', 'name: "root"')
fx('auth_user_get_response', E+'AuthUserGetResponse', f'{HDR} roles: "root" roles: "読み取り専用" roles: ""')
fx('auth_user_delete_request', E+'AuthUserDeleteRequest', 'name: "old"')
fx('auth_user_delete_response', E+'AuthUserDeleteResponse', HDR)
fx('auth_user_change_password_request', E+'AuthUserChangePasswordRequest', 'name: "root" password: "new" hashedPassword: "$2a$10$zzz"')
fx('auth_user_change_password_response', E+'AuthUserChangePasswordResponse', HDR)
fx('auth_user_grant_role_request', E+'AuthUserGrantRoleRequest', 'user: "alice" role: "admin"')
fx('auth_user_grant_role_response', E+'AuthUserGrantRoleResponse', HDR)
fx('auth_user_revoke_role_request', E+'AuthUserRevokeRoleRequest', 'name: "alice" role: "admin"')
fx('auth_user_revoke_role_response', E+'AuthUserRevokeRoleResponse', HDR)
fx('auth_role_add_request', E+'AuthRoleAddRequest', 'name: "reader"')
fx('auth_role_add_response', E+'AuthRoleAddResponse', HDR)
fx('auth_role_get_request', E+'AuthRoleGetRequest', 'role: "reader"')
fx('auth_role_get_response', E+'AuthRoleGetResponse', f'{HDR} perm {{ permType: READ key: "a" range_end: "b" }} perm {{ permType: WRITE key: "c" }} perm {{ permType: READWRITE key: "\\000" range_end: "\\000" }}')
fx('auth_role_list_response', E+'AuthRoleListResponse', f'{HDR} roles: "admin" roles: "reader" roles: "役割"')
fx('auth_user_list_response', E+'AuthUserListResponse', f'{HDR} users: "alice" users: "bob" users: "😀"')
fx('auth_role_delete_request', E+'AuthRoleDeleteRequest', 'role: "reader"')
fx('auth_role_delete_response', E+'AuthRoleDeleteResponse', HDR)
fx('auth_role_grant_permission_request', E+'AuthRoleGrantPermissionRequest', 'name: "reader" perm { permType: READWRITE key: "cfg/" range_end: "cfg0" }')
fx('auth_role_grant_permission_response', E+'AuthRoleGrantPermissionResponse', HDR)
fx('auth_role_revoke_permission_request', E+'AuthRoleRevokePermissionRequest', 'role: "reader" key: "cfg/" range_end: "cfg0"')
fx('auth_role_revoke_permission_response', E+'AuthRoleRevokePermissionResponse', HDR)
# ---- mvccpb / authpb
fx('mvcc_key_value', 'mvccpb.KeyValue', KV)
fx('mvcc_key_value_extremes', 'mvccpb.KeyValue', f'key: "" create_revision: {I64_MIN} mod_revision: {I64_MAX} version: -1 value: "" lease: {I64_MIN}')
fx('mvcc_event_delete', 'mvccpb.Event', 'type: DELETE kv { key: "gone" mod_revision: 9 } prev_kv { key: "gone" create_revision: 2 mod_revision: 8 version: 4 value: "was" }')
fx('auth_user', 'authpb.User', 'name: "alice" password: "$2a$10$hash" roles: "admin" roles: "reader" options { no_password: false }')
fx('auth_role', 'authpb.Role', 'name: "admin" keyPermission { permType: READWRITE key: "" range_end: "\\000" } keyPermission { permType: READ key: "ro/" }')
fx('auth_permission_unknown_type', 'authpb.Permission', 'permType: 3 key: "k"')
# ---- raftpb
R = 'raftpb.'
fx('raft_entry_normal', R+'Entry', 'term: 3 index: 42 type: NORMAL data: "put foo bar"')
fx('raft_entry_conf_change', R+'Entry', 'term: 3 index: 43 type: CONF_CHANGE data: "\\010\\002\\020\\005"')
fx('raft_entry_max', R+'Entry', f'term: {U64_MAX} index: {U64_MAX} data: ""')
fx('raft_hard_state', R+'HardState', 'term: 7 vote: 2 commit: 1234')
fx('raft_hard_state_empty', R+'HardState')
fx('raft_conf_state', R+'ConfState', 'voters: [1, 2, 3] learners: [4, 18446744073709551615]')
fx('raft_conf_state_many_voters', R+'ConfState', 'voters: [' + ', '.join(str((i * 2654435761) & U64_MAX) for i in range(1, 101)) + ']')
fx('raft_conf_change_add', R+'ConfChange', 'type: ADD_NODE node_id: 4 context: "{\\"name\\":\\"n4\\",\\"peerURLs\\":[\\"http://10.0.0.4:2380\\"]}"')
fx('raft_conf_change_remove', R+'ConfChange', 'type: REMOVE_NODE node_id: 2')
fx('raft_conf_change_learner', R+'ConfChange', 'type: ADD_LEARNER node_id: 5 context: "学習者"')
fx('raft_conf_change_promote', R+'ConfChange', f'type: PROMOTE_LEARNER node_id: {U64_MAX}')
fx('raft_snapshot_metadata', R+'SnapshotMetadata', 'conf_state { voters: [1, 2, 3] learners: [4] } index: 100000 term: 9')
fx('raft_snapshot', R+'Snapshot', 'data: ' + esc(bytes((i * 13 + 1) & 0xff for i in range(1024))) + ' metadata { conf_state { voters: [1] } index: 5 term: 1 }')
fx('raft_message_heartbeat', R+'Message', 'type: HEARTBEAT to: 2 from: 1 term: 7 commit: 1234 context: "ri-0001"')
fx('raft_message_heartbeat_resp', R+'Message', 'type: HEARTBEAT_RESP to: 1 from: 2 term: 7')
fx('raft_message_app', R+'Message', 'type: APP to: 2 from: 1 term: 7 log_term: 7 index: 100 commit: 99 ' + ' '.join(
    f'entries {{ term: 7 index: {101+i} data: "op-{i}" }}' for i in range(10)) + ' entries { term: 7 index: 111 type: CONF_CHANGE data: "\\010\\001" }')
fx('raft_message_app_resp_reject', R+'Message', f'type: APP_RESP to: 1 from: 3 term: 7 index: 100 reject: true reject_hint: 57')
fx('raft_message_vote', R+'Message', 'type: VOTE to: 3 from: 1 term: 8 log_term: 7 index: 111')
fx('raft_message_vote_resp', R+'Message', 'type: VOTE_RESP to: 1 from: 3 term: 8 reject: false')
fx('raft_message_pre_vote', R+'Message', 'type: PRE_VOTE to: 2 from: 1 term: 9 log_term: 7 index: 111')
fx('raft_message_pre_vote_resp', R+'Message', 'type: PRE_VOTE_RESP to: 1 from: 2 term: 9 reject: true')
fx('raft_message_snap', R+'Message', 'type: SNAP to: 4 from: 1 term: 9 snapshot { data: "state" metadata { conf_state { voters: [1, 2, 3] learners: [4] } index: 100000 term: 9 } }')
fx('raft_message_snap_status', R+'Message', 'type: SNAP_STATUS to: 1 from: 1 reject: true')
fx('raft_message_timeout_now', R+'Message', 'type: TIMEOUT_NOW to: 2 from: 1 term: 9')
fx('raft_message_read_index', R+'Message', 'type: READ_INDEX to: 1 from: 3 entries { data: "\\001\\002\\003\\004\\005\\006\\007\\010" }')
fx('raft_message_read_index_resp', R+'Message', 'type: READ_INDEX_RESP to: 3 from: 1 term: 9 index: 120 entries { data: "\\001\\002\\003\\004\\005\\006\\007\\010" }')
fx('raft_message_transfer_leader', R+'Message', 'type: TRANSFER_LEADER to: 1 from: 2 term: 9')
fx('raft_message_prop', R+'Message', 'type: PROP to: 1 from: 2 entries { data: "forwarded" } entries { data: "" }')
fx('raft_message_unknown_type', R+'Message', f'type: 100 to: {U64_MAX} from: {U64_MAX} term: {U64_MAX} log_term: {U64_MAX} index: {U64_MAX} commit: {U64_MAX} reject_hint: {U64_MAX}')
fx('raft_message_batch', R+'MessageBatch', 'messages { type: HEARTBEAT to: 2 from: 1 term: 7 } messages { type: APP to: 2 from: 1 term: 7 index: 5 entries { term: 7 index: 6 data: "x" } } messages { }')
fx('raft_stream_ack', R+'StreamAck', f'received: {U64_MAX}')
fx('raft_snapshot_chunk_first', R+'SnapshotChunk', 'from: 1 to: 4 metadata { conf_state { voters: [1, 2, 3] } index: 100000 term: 9 } offset: 0 data: ' + esc(bytes(range(256)) * 4))
fx('raft_snapshot_chunk_last', R+'SnapshotChunk', 'from: 1 to: 4 offset: 4294967296 data: "" last: true')
fx('raft_snapshot_ack', R+'SnapshotAck', 'ok: false error: "スナップショット破損: crc mismatch ❌"')
# ---- unknown fields (encoded with Fixtures/unknown/extended.proto twins)
fx('unknown_put_request', E+'PutRequest',
   'key: "foo" value: "bar" lease: 9 prev_kv: true '
   f'x_varint: 150 x_fixed32: 4294967295 x_fixed64: 81985529216486895 x_string: "未知のフィールド" x_bytes: "\\000\\001\\377" '
   f'x_sint64: {I64_MIN} x_message {{ note: "nested" n: 1 }} x_packed: [1, -1, 300] x_negative: -2 x_double: 2.5 x_max_field: 7', 'keeltest.PutRequestV2')
fx('unknown_put_request_only_unknown', E+'PutRequest', 'x_varint: 1 x_string: "only unknown"', 'keeltest.PutRequestV2')
fx('unknown_range_response_nested', E+'RangeResponse',
   f'{HDR} kvs {{ key: "a" value: "1" x_owner: "team-α" x_checksum: {U64_MAX} }} kvs {{ key: "b" x_checksum: 1 }} count: 2 x_trailer: 1311768467463790320', 'keeltest.RangeResponseV2')
fx('unknown_watch_request_oneof', E+'WatchRequest', 'create_request { key: "w" filters: [NOPUT] } x_token: "tok"', 'keeltest.WatchRequestV2')
fx('unknown_hash_request_all', E+'HashRequest', 'x_a: 18446744073709551615 x_b: "" x_c: 0', 'keeltest.HashRequestV2')
fx('unknown_hash_request_message_like', E+'HashRequest', 'x_a: 0 x_b: "\\010\\001\\022\\003abc" x_c: 3', 'keeltest.HashRequestV2')

def main():
    for old in os.listdir(HERE):
        if old.endswith('.txtpb'):
            os.remove(os.path.join(HERE, old))
    names = set()
    for name, typ, body, enc in F:
        assert name not in names, name
        names.add(name)
        with open(os.path.join(HERE, name + '.txtpb'), 'w', encoding='utf-8') as f:
            f.write(f'# proto-message: {typ}\n')
            if enc:
                f.write(f'# encode-message: {enc}\n')
            f.write(body.strip() + '\n')
    print(f'{len(F)} fixtures written')

if __name__ == '__main__':
    main()
