#!/usr/bin/env bash
# `make bench`: runs every benchmark on a release build and prints their figures. Benchmarks are
# never part of `make test` (no timing assertions in CI); their results are recorded by hand in
# docs/benchmarks.md with the command that produced them.
# Usage: tests/bench/run-all.sh [BUILD_DIR]   (default build/release, built by `make build`)
set -uo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build/release}
status=0
run() {
    echo
    echo "######## $*"
    "$@" || status=1
}
for b in "$build"/tests/bench_protocol_* "$build"/tests/bench_common_* "$build"/tests/bench_metadata_*; do
    [ -x "$b" ] && run "$b"
done
run env BUILD_DIR="$build" tests/bench/storage.sh 30
run tests/bench/agent.sh "$build"
[ -x "$build/agent/runnel" ] && run /usr/bin/python3 -B tests/bench/cluster_bench.py --runnel "$build/agent/runnel"
exit $status
