#!/usr/bin/env bash
# Installs everything Runnel's build, tests and benchmarks need on Debian 12, as root.
# Idempotent: when every package is present it only checks and returns within a second or two.
# npm packages used by the integration tests go into tests/node/node_modules (ignored by git),
# pinned by tests/node/package.json and package-lock.json.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)

# Build: compiler, CMake, the libraries protocol/, storage/, metadata/ and agent/ link.
build_pkgs=(build-essential cmake pkg-config python3 clang libclang-rt-14-dev clang-format
    libuv1-dev libcurl4-openssl-dev libssl-dev libzstd-dev zlib1g-dev liblz4-dev libsnappy-dev
    libcmocka-dev)
# Tests and benchmarks: real Kafka clients, real servers, fault tools.
test_pkgs=(kcat librdkafka-dev python3-confluent-kafka python3-kafka curl
    python3-snappy python3-lz4 python3-zstandard
    radosgw ceph-mon ceph-osd ceph-common openssl postgresql haproxy prometheus systemd python3-yaml
    fiu-utils libfiu-dev faketime hyperfine iproute2 procps psmisc
    eatmydata) # eatmydata: the metadata benchmark's runs with fdatasync made free

missing=()
for p in "${build_pkgs[@]}" "${test_pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if ! command -v node >/dev/null 2>&1; then
    missing+=(nodejs npm)
fi

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: missing packages: ${missing[*]}; run this script as root" >&2
        exit 1
    fi
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The ceph and postgresql packages may start system services; the tests start their own.
    for svc in ceph-mon.target ceph-osd.target ceph-radosgw.target ceph.target postgresql haproxy prometheus; do
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    done
fi

# npm packages for the integration tests, pinned, into an ignored folder of the repo.
if [ -f "$here/tests/node/package.json" ]; then
    if [ ! -f "$here/tests/node/node_modules/.installed" ] ||
        [ "$here/tests/node/package.json" -nt "$here/tests/node/node_modules/.installed" ]; then
        echo "install-deps: installing npm packages into tests/node/node_modules"
        (cd "$here/tests/node" && npm ci --no-audit --no-fund --loglevel=error)
        touch "$here/tests/node/node_modules/.installed"
    fi
fi
echo "install-deps: ok"
