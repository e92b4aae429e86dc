#!/usr/bin/env bash
# Agent benchmark: starts `runnel dev` on a free 127.0.0.1 port with a temporary data directory,
# runs bench_agent_kafka against it and, in the same run, against librdkafka's mock cluster, and
# prints throughput, paced produce latency, the Runnel/mock ratios, runnel dev's resident memory
# at idle and after the run, and the disk's durable-chain floor right after it (docs/benchmarks.md).
#
#   tests/bench/agent.sh [BUILD_DIR] [bench args...]     e.g. tests/bench/agent.sh build/release --rounds 5
#   tests/bench/agent.sh --mock-only [BUILD_DIR]         only the mock peer (no runnel needed)
#
# BUILD_DIR defaults to build/release (configured here if missing, Release, gcc); RUNNEL=PATH
# takes the runnel binary from elsewhere instead of building it there. The runnel dev
# process is stopped with SIGTERM at the end whatever happens; its log is kept when it fails.
set -uo pipefail
cd "$(dirname "$0")/../.."
mock_only=0
if [ "${1:-}" = "--mock-only" ]; then
    mock_only=1
    shift
fi
build=build/release
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    build=$1
    shift
fi
if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null || exit 1
fi
targets=(bench_agent_kafka)
[ $mock_only = 1 ] || [ -n "${RUNNEL:-}" ] || targets+=(runnel)
cmake --build "$build" --target "${targets[@]}" -j2 >/dev/null || {
    echo "agent.sh: build of ${targets[*]} failed in $build" >&2
    exit 1
}
bench=$build/tests/integration/clients/bench-agent/bench_agent_kafka
if [ $mock_only = 1 ]; then
    exec "$bench" --mock-only "$@"
fi

runnel=${RUNNEL:-$build/agent/runnel}
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$(mktemp -d /tmp/runnel-bench-XXXXXX)
log=$data.log
"$runnel" dev --listen "127.0.0.1:$port" --data-dir "$data" >"$log" 2>&1 </dev/null &
pid=$!
cleanup() {
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    wait "$pid" 2>/dev/null
    rm -rf "$data"
}
trap cleanup EXIT
for _ in $(seq 1 300); do
    if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "agent.sh: runnel dev exited before listening; log: $log" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done
rss() {
    awk '/^VmRSS/ {print $2 " KiB"}' "/proc/$pid/status" 2>/dev/null
}
echo "agent.sh: runnel dev at 127.0.0.1:$port (data $data)"
sleep 2
echo "agent.sh: runnel dev resident memory at idle: $(rss)"
"$bench" --bootstrap "127.0.0.1:$port" "$@"
status=$?
echo "agent.sh: runnel dev resident memory after the run: $(rss)"
# The disk's floor under produce latency right after the run, in the same directory: the bare
# durable chain (object + fdatasync + link + directory fsync, then a journal append + fdatasync)
# for 250 objects at one per 20 ms. The latency's p99 can be no lower than the flush interval
# plus this chain's p99 (docs/benchmarks.md).
if cmake --build "$build" --target bench_storage_durable -j2 >/dev/null 2>&1; then
    mkdir -p "$data/floor"
    "$build/tests/bench_storage_durable" "$data/floor" 250 | grep -E "^  (chain|object)" |
        sed 's/^/agent.sh: disk floor after the run: /'
fi
[ $status -eq 0 ] && rm -f "$log"
exit $status
