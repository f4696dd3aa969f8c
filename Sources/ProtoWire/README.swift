// ProtoWire: Keel's protobuf runtime (no dependencies). Generated code (KeelAPI, or a target's
// own .proto files through ProtoGenPlugin) is written against this API.
//
// Using messages:
//
//     var req = Etcdserverpb.PutRequest()
//     req.key = Array("foo".utf8)
//     let bytes = req.serializedBytes()                      // one allocation, exact size
//     let back = try Etcdserverpb.PutRequest(serializedBytes: bytes)
//     let same = try bytes.withUnsafeBytes { try Etcdserverpb.PutRequest(decoding: $0) }
//     print(req.textFormatString())                           // same text as `protoc --decode`
//
// Encoding into memory you own (e.g. a NIO ByteBuffer's writable bytes):
//
//     let size = msg.serializedSize
//     // ... get `size` writable bytes as an UnsafeMutableRawBufferPointer `out` ...
//     var writer = ProtoWriter(out)
//     msg.encode(to: &writer)                                // writer.bytesWritten == size
//
// Errors: decoding throws `ProtoDecodingError` (typed throws); it never traps on any input.
// Limits: nesting depth `ProtoReader.maxDepth` (100) for messages and groups; every length is
// checked against the remaining bytes; strings must be valid UTF-8.
//
// Wire semantics (as protoc's C++ runtime):
// - proto3 defaults are not encoded (floats/doubles by bit pattern, so -0.0 is encoded);
//   fields are written in field-number order, unknown fields last, verbatim.
// - repeated scalars are written packed and read packed or unpacked.
// - int32/enum negatives are 10-byte varints; wider varints for int32 fields are truncated.
// - a singular message field seen twice is merged; for repeated fields values append; the
//   last oneof member on the wire wins; map entries with missing key/value use defaults,
//   duplicate keys keep the last; maps encode sorted by key (deterministic output).
// - known field numbers arriving with the wrong wire type are kept as unknown fields.
// - groups (wire types 3/4) are skipped and kept as unknown fields.
//
// Equality (`==`/`Hashable`) compares all fields including `unknownFields`.
