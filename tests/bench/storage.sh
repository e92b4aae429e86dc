#!/usr/bin/env bash
# Storage benchmarks: builds the benchmark programs (gcc, Release) unless BUILD_DIR is given,
# starts a throwaway Ceph RGW (tests/integration/lib/rgw.sh) and runs
#   bench_storage_io      against RGW (s3://) and the file backend (durable and nosync),
#                         with libcurl doing the same requests as the peer (for durable file
#                         PUTs also curl + fdatasync + rename + directory fsync)
#   bench_storage_writer  object sealing throughput at zstd level 1 (log-line and key=value data)
# Usage: tests/bench/storage.sh [ROUNDS]   (requests per case and client, default 30)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-30}
build=${BUILD_DIR:-build/bench-release}
if [ -z "${BUILD_DIR:-}" ]; then
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$build" --target bench_storage_io bench_storage_writer -j2 >/dev/null
fi
io=$build/tests/bench_storage_io
writer=$build/tests/bench_storage_writer
tmp=$(mktemp -d "${TMPDIR:-/tmp}/runnel-bench-storage.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "== machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "== writer (zstd level 1)"
"$writer" 20 1 log
"$writer" 20 1 kv
echo "== file backend (fdatasync + rename + directory fsync per PUT) vs curl file:// (no fsync)"
echo "   and vs curl+sync (curl file:// upload to a temporary, fdatasync, rename, directory fsync);"
echo "   Runnel and curl+sync alternate, plain curl's PUTs run in a pass of their own"
"$io" "file://$tmp/durable" "$rounds"
echo "== file backend, reads through the thread pool only (fd_cache=0, the read path before"
echo "   the descriptor cache), same comparison"
"$io" "file://$tmp/pool?fd_cache=0" "$rounds"
echo "== file backend with nosync=true vs curl file:// and curl+rename (upload to a temporary, rename)"
"$io" "file://$tmp/nosync?nosync=true" "$rounds"
echo "== Ceph RGW (memstore OSD, loopback)"
tests/integration/lib/rgw.sh run bash -c "\"$io\" \"\$RUNNEL_S3_URL\" $rounds"
