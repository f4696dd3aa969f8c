// KeelAPI: the etcd v3 API (Protos/rpc.proto, kv.proto, auth.proto) and Keel's raft.proto as
// Swift types, generated at build time by ProtoGenPlugin from Protos/*.proto (nothing generated
// is committed). See README.md ("Generated code") for the naming contract:
//   package etcdserverpb -> enum Etcdserverpb, message RangeRequest -> Etcdserverpb.RangeRequest,
//   service KV -> Etcdserverpb.KV with `range: MethodDescriptor<RangeRequest, RangeResponse>`.
//
// The protobuf runtime is re-exported, so `import KeelAPI` is enough to encode and decode.
@_exported import ProtoWire
