#!/usr/bin/env bash
# Recaptures Runnel's golden request frames from real Kafka clients (see README.md here).
# For each client: start capture_broker.py on a free loopback port, run that client's driver
# against it, stop the broker; then select.py picks the frames into tests/golden/frames/ and
# rewrites MANIFEST.tsv. Needs the JSON message definitions (SPEC_DIR, default
# ../shared/kafka-protocol/messages next to the checkout) and the clients installed by
# deploy/install-deps.sh (+ python3-snappy python3-lz4 python3-zstandard for kafka-python codecs).
# Usage: tests/golden/capture/capture.sh [client ...]   (default: all five)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
spec=${SPEC_DIR:-$root/../shared/kafka-protocol/messages}
work=${WORK_DIR:-$root/build/golden-capture}
clients=("$@")
if [ ${#clients[@]} -eq 0 ]; then
    clients=(kcat confluent kafka-python kafkajs platformatic)
fi
if [ ! -d "$spec" ]; then
    echo "capture: no message definitions at $spec (set SPEC_DIR)" >&2
    exit 1
fi
if [ ! -d "$root/tests/node/node_modules" ]; then
    (cd "$root/tests/node" && npm ci --no-audit --no-fund --loglevel=error)
fi

topics=()
for t in none gzip snappy lz4 zstd idem txn acks0; do
    topics+=(--topic "golden-$t:1")
done

for client in "${clients[@]}"; do
    out=$work/$client
    rm -rf "$out"
    mkdir -p "$out"
    /usr/bin/python3 "$here/capture_broker.py" --spec "$spec" --out "$out" "${topics[@]}" \
        >"$out/broker.out" 2>"$out/broker.err" &
    broker=$!
    for _ in $(seq 50); do
        if grep -q LISTEN "$out/broker.out" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    port=$(awk '/LISTEN/ {print $2}' "$out/broker.out")
    if [ -z "$port" ]; then
        kill "$broker" 2>/dev/null || true
        echo "capture: broker did not start for $client" >&2
        exit 1
    fi
    addr=127.0.0.1:$port
    echo "capture: $client against $addr"
    case $client in
    kcat) timeout 180 "$here/clients/kcat.sh" "$addr" ;;
    confluent) timeout 180 /usr/bin/python3 "$here/clients/confluent.py" "$addr" ;;
    kafka-python) timeout 180 /usr/bin/python3 "$here/clients/kafka_python.py" "$addr" ;;
    kafkajs) (cd "$root/tests/node" && timeout 180 node "$here/clients/kafkajs.js" "$addr") ;;
    platformatic) (cd "$root/tests/node" && timeout 180 node "$here/clients/platformatic.mjs" "$addr") ;;
    *) echo "capture: unknown client $client" >&2 ;;
    esac >"$out/client.log" 2>&1 || echo "capture: $client driver exited non-zero (see $out/client.log)"
    kill "$broker" 2>/dev/null || true
    wait "$broker" 2>/dev/null || true
    echo "capture: $client: $(($(wc -l <"$out/raw/log.tsv"))) request frames"
done
/usr/bin/python3 "$here/select.py" --spec "$spec" --work "$work" --frames "$root/tests/golden/frames"
