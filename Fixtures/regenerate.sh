#!/bin/sh
# Rebuilds every Fixtures/*.txtpb (gen_fixtures.py), then from each one:
#   <name>.bin          protoc --encode=<encode type> (the independent encoder)
#   <name>.decoded.txt  protoc --decode=<proto-message type> of that .bin
# Header lines of a .txtpb: "# proto-message: <type>" (the type the fixture is decoded as) and,
# for unknown-field fixtures, "# encode-message: <type>" (a twin in unknown/extended.proto).
set -eu
cd "$(dirname "$0")"
command -v protoc >/dev/null || { echo "protoc missing: apt-get install -y protobuf-compiler" >&2; exit 1; }
echo "using $(command -v protoc): $(protoc --version)"
python3 gen_fixtures.py
rm -f ./*.bin ./*.decoded.txt
PROTOS="rpc.proto kv.proto auth.proto raft.proto"
n=0
for t in ./*.txtpb; do
  name=${t%.txtpb}
  msg=$(sed -n 's/^# proto-message: *//p' "$t" | head -n 1)
  enc=$(sed -n 's/^# encode-message: *//p' "$t" | head -n 1)
  [ -n "$msg" ] || { echo "$t: no '# proto-message:' header" >&2; exit 1; }
  if [ -n "$enc" ]; then
    protoc --proto_path=../Protos --proto_path=unknown --encode="$enc" extended.proto < "$t" > "$name.bin"
  else
    protoc --proto_path=../Protos --encode="$msg" $PROTOS < "$t" > "$name.bin"
  fi
  protoc --proto_path=../Protos --decode="$msg" $PROTOS < "$name.bin" > "$name.decoded.txt"
  n=$((n + 1))
done
echo "$n fixtures encoded"
