#!/usr/bin/env bash
# A stand-in for the `runnel` binary, used only to check this folder's process plumbing
# (DevCluster, SplitCluster, kills and restarts, tests/bench/agent.sh) before Runnel serves; not a
# test and not registered. It accepts the contract's command lines:
#   fake_runnel.sh dev --listen 127.0.0.1:P --data-dir D     -> golden capture broker on P
#   fake_runnel.sh agent --listen 127.0.0.1:P ...            -> golden capture broker on P
#   fake_runnel.sh metadata --listen 127.0.0.1:P ...         -> a listener that accepts and idles
# The capture broker keeps everything in memory, so every restart loses data: the restart and
# crash scenarios must FAIL against it (their own validation). Needs the Kafka JSON specs
# (SPEC_DIR, default ../shared/kafka-protocol/messages beside the checkout).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
spec=${SPEC_DIR:-$root/../shared/kafka-protocol/messages}
cmd=${1:-}
shift || true
listen="" dir=""
while [ $# -gt 0 ]; do
    case $1 in
    --listen) listen=$2; shift 2 ;;
    --data-dir) dir=$2; shift 2 ;;
    --*) shift 2 ;;
    *) shift ;;
    esac
done
port=${listen##*:}
[ -n "$port" ] || { echo "fake_runnel: --listen HOST:PORT required" >&2; exit 2; }
case $cmd in
dev | agent)
    out=${dir:-$(mktemp -d /tmp/fake-runnel-XXXXXX)}
    exec /usr/bin/python3 "$root/tests/golden/capture/capture_broker.py" --spec "$spec" \
        --out "$out" --port "$port" ;;
metadata)
    exec /usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
conns = []
while True:
    c, _ = s.accept(); conns.append(c)
' "$port" ;;
*) echo "fake_runnel: unknown command $cmd" >&2; exit 2 ;;
esac
