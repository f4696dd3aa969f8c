#!/usr/bin/env bash
# The whole test suite, built once and run in groups, one group after the other.
#
# Swift Testing runs every suite of one `swift test` in parallel. On CI's 2 cores, the multi-process
# suites (3-member clusters, etcd side by side, etcdctl spawns) running all at once starve one
# another and the timing-free but liveness-bounded tests (elections, lease expiry, reconnects)
# with them. Groups keep the parallelism inside each group and bound the peak load; every group
# runs even when an earlier one failed, and the script fails if any did.
#
#   bash Tests/run-suite.sh              # all groups
#   bash Tests/run-suite.sh cluster      # only the groups whose name contains "cluster"
set -uo pipefail
cd "$(dirname "$0")/.."

swift build --build-tests || exit 1

groups=(
    "unit|ProtoWireTests|ProtoGenTests|KeelAPITests|RaftTests|StorageTests|KeelTestSupportTests"
    "net|GRPCTests|ServerTests|KeelBenchTests"
    "e2e|E2ETests|KeelctlTests\\.(?!KeelctlClusterTests)[A-Za-z]+"
    "client|KeelClientTests"
    "cluster|ClusterTests|KeelctlTests\\.KeelctlClusterTests"
)
# Every test target must be in a group: a new target that is not would silently never run.
all="|$(IFS='|'; echo "${groups[*]}")|"
for t in $(grep -o 'testTarget(name: "[A-Za-z]*"' Package.swift | sed 's/.*"\(.*\)"/\1/'); do
    [[ "$all" == *"|$t"[\|\\]* ]] || { echo "test target $t is in no group of $0" >&2; exit 1; }
done
failed=()
for g in "${groups[@]}"; do
    name="${g%%|*}"; filter="${g#*|}"
    [[ $# -gt 0 && "$name" != *"$1"* ]] && continue
    echo "=== test group $name: $filter ($(date -u +%T))"
    start=$SECONDS
    if swift test --skip-build --filter "^($filter)[./]" ; then
        echo "=== test group $name passed in $((SECONDS - start)) s"
    else
        echo "=== test group $name FAILED in $((SECONDS - start)) s"
        failed+=("$name")
    fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "=== failed groups: ${failed[*]}"
    exit 1
fi
echo "=== all test groups passed"
