#!/usr/bin/env bash
# Throwaway Ceph RGW (S3-compatible) for integration tests and benchmarks: one monitor, one
# memstore OSD and one radosgw on free 127.0.0.1 ports, all state in a temporary directory.
#
#   rgw.sh start DIR      start everything under DIR (must be empty or absent); prints
#                         `export NAME=value` lines (also saved in DIR/env) and returns
#   rgw.sh stop DIR       stop the daemons started under DIR and delete DIR
#   rgw.sh run CMD ARGS   start in a fresh temporary directory, run CMD with the variables
#                         exported, stop and clean up however CMD ends; exits with CMD's status
#
# Variables: RUNNEL_S3_ENDPOINT (http://127.0.0.1:PORT), RUNNEL_S3_TLS_ENDPOINT (https://...,
# self-signed certificate in RUNNEL_S3_CA_FILE), RUNNEL_S3_BUCKET, RUNNEL_S3_URL
# (s3://BUCKET?endpoint=...&region=us-east-1&path_style=true), AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION. Start takes ~10-15 s and is bounded by
# RGW_START_TIMEOUT (default 60 s). RGW_MEMSTORE_MB sizes the in-memory OSD (default 2048).
set -uo pipefail

rgw_free_port() {
    /usr/bin/python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

rgw_log() {
    echo "rgw.sh: $*" >&2
}

rgw_stop() {
    local dir=$1
    [ -d "$dir" ] || return 0
    local name pid
    # SIGKILL, not SIGTERM: the cluster is throwaway, and on SIGTERM a memstore OSD first saves
    # every stored object to its data directory, which after a data-heavy test is a long disk
    # write (seen taking minutes on a loaded machine).
    for name in radosgw osd mon; do
        if [ -f "$dir/$name.pid" ]; then
            pid=$(cat "$dir/$name.pid")
            if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
                kill -KILL "$pid" 2>/dev/null
                for _ in $(seq 1 100); do
                    # Gone, or a zombie waiting for its parent to reap it: either way dead.
                    kill -0 "$pid" 2>/dev/null || break
                    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
                    sleep 0.1
                done
            fi
        fi
    done
    rm -rf "$dir"
}

rgw_start() {
    local dir=$1
    local deadline=$((SECONDS + ${RGW_START_TIMEOUT:-60}))
    mkdir -p "$dir" || return 1
    dir=$(cd "$dir" && pwd)
    local mon_port rgw_port tls_port fsid osd_uuid
    mon_port=$(rgw_free_port)
    rgw_port=$(rgw_free_port)
    tls_port=$(rgw_free_port)
    # A self-signed certificate for the HTTPS endpoint; it is its own CA file.
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
        -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
        -keyout "$dir/tls-key.pem" -out "$dir/tls-cert.pem" >/dev/null 2>&1 ||
        { rgw_log "openssl could not make a certificate"; return 1; }
    fsid=$(cat /proc/sys/kernel/random/uuid)
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    local mb=${RGW_MEMSTORE_MB:-2048}
    cat >"$dir/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
ms client mode = crc secure
ms mon service mode = crc secure
ms service mode = crc secure
ms bind ipv4 = true
ms bind ipv6 = false
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
mon warn on pool no redundancy = false
osd objectstore = memstore
memstore device bytes = $((mb * 1024 * 1024))
run dir = $dir/run
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.asok
pid file = $dir/\$name.pidfile
keyring = $dir/keyring
[mon.a]
mon data = $dir/mon
[osd.0]
osd data = $dir/osd
osd max object size = 134217728
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port ssl_endpoint=127.0.0.1:$tls_port ssl_certificate=$dir/tls-cert.pem ssl_private_key=$dir/tls-key.pem tcp_nodelay=1
rgw data = $dir/rgw
rgw dns name = localhost
rgw enable usage log = false
rgw thread pool size = 64
# Overwritten and deleted objects' data is collected within seconds, not after RGW's default two
# hours: benchmarks overwrite the same keys hundreds of times and would fill the memstore OSD,
# after which writes wait forever.
rgw gc obj min wait = 2
rgw gc processor period = 2
rgw gc processor max time = 2
CONF
    mkdir -p "$dir/run" "$dir/log" "$dir/mon" "$dir/osd" "$dir/rgw"
    local conf="-c $dir/ceph.conf"
    monmaptool --create --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" "$dir/monmap" \
        >"$dir/log/setup.log" 2>&1 || { rgw_log "monmaptool failed"; return 1; }
    ceph-mon $conf --mkfs -i a --monmap "$dir/monmap" >>"$dir/log/setup.log" 2>&1 ||
        { rgw_log "ceph-mon --mkfs failed"; return 1; }
    ceph-mon $conf -i a >>"$dir/log/setup.log" 2>&1 || { rgw_log "ceph-mon failed"; return 1; }
    rgw_pidof "$dir" mon "$dir/mon.a.pidfile" || return 1
    timeout 20 ceph $conf osd new "$osd_uuid" 0 >>"$dir/log/setup.log" 2>&1 ||
        { rgw_log "ceph osd new failed (see $dir/log)"; return 1; }
    ceph-osd $conf -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$dir/log/setup.log" 2>&1 ||
        { rgw_log "ceph-osd --mkfs failed"; return 1; }
    ceph-osd $conf -i 0 >>"$dir/log/setup.log" 2>&1 || { rgw_log "ceph-osd failed"; return 1; }
    rgw_pidof "$dir" osd "$dir/osd.0.pidfile" || return 1
    radosgw $conf -n client.rgw.a >>"$dir/log/setup.log" 2>&1 || { rgw_log "radosgw failed"; return 1; }
    rgw_pidof "$dir" radosgw "$dir/client.rgw.a.pidfile" || return 1
    # radosgw creates its pools on first start; it answers HTTP once they exist.
    until curl -s -o /dev/null "http://127.0.0.1:$rgw_port/"; do
        if [ $SECONDS -ge $deadline ]; then
            rgw_log "radosgw did not answer on port $rgw_port in time (see $dir/log)"
            return 1
        fi
        sleep 0.2
    done
    local key=RUNNELTESTKEY$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
    local secret
    secret=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
    until timeout 20 radosgw-admin $conf user create --uid=runnel --display-name=runnel \
        --access-key="$key" --secret="$secret" >>"$dir/log/setup.log" 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            rgw_log "radosgw-admin user create failed (see $dir/log)"
            return 1
        fi
        sleep 0.5
    done
    local bucket=runnel-test
    until curl -s -f -o /dev/null -X PUT -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" --aws-sigv4 "aws:amz:us-east-1:s3" -u "$key:$secret" \
        "http://127.0.0.1:$rgw_port/$bucket"; do
        if [ $SECONDS -ge $deadline ]; then
            rgw_log "could not create bucket $bucket"
            return 1
        fi
        sleep 0.3
    done
    cat >"$dir/env" <<ENV
export RUNNEL_S3_ENDPOINT=http://127.0.0.1:$rgw_port
export RUNNEL_S3_TLS_ENDPOINT=https://127.0.0.1:$tls_port
export RUNNEL_S3_CA_FILE=$dir/tls-cert.pem
export RUNNEL_S3_BUCKET=$bucket
export RUNNEL_S3_URL='s3://$bucket?endpoint=http://127.0.0.1:$rgw_port&region=us-east-1&path_style=true'
export AWS_ACCESS_KEY_ID=$key
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_DEFAULT_REGION=us-east-1
export RUNNEL_RGW_DIR=$dir
ENV
    cat "$dir/env"
}

# Waits for a daemon's pid file and records the pid as DIR/NAME.pid for rgw_stop.
rgw_pidof() {
    local dir=$1 name=$2 file=$3
    for _ in $(seq 1 100); do
        if [ -s "$file" ]; then
            cp "$file" "$dir/$name.pid"
            return 0
        fi
        sleep 0.1
    done
    rgw_log "$name did not write $file"
    return 1
}

case "${1:-}" in
start)
    [ $# -eq 2 ] || { echo "usage: rgw.sh start DIR" >&2; exit 2; }
    if ! rgw_start "$2"; then
        tail -n 20 "$2"/log/*.log >&2 2>/dev/null
        rgw_stop "$2"
        exit 1
    fi
    ;;
stop)
    [ $# -eq 2 ] || { echo "usage: rgw.sh stop DIR" >&2; exit 2; }
    rgw_stop "$2"
    ;;
run)
    shift
    [ $# -ge 1 ] || { echo "usage: rgw.sh run CMD [ARGS...]" >&2; exit 2; }
    RGW_DIR=$(mktemp -d "${TMPDIR:-/tmp}/runnel-rgw.XXXXXX")
    trap 'rgw_stop "$RGW_DIR"' EXIT
    trap 'exit 130' INT TERM
    # If this script is killed outright (SIGKILL from a test timeout), a watchdog in its own
    # session stops the daemons, which have daemonized and would otherwise outlive us.
    setsid "$0" __watch $$ "$RGW_DIR" </dev/null >/dev/null 2>&1 &
    start=$SECONDS
    if ! rgw_start "$RGW_DIR" >/dev/null; then
        tail -n 20 "$RGW_DIR"/log/*.log >&2 2>/dev/null
        exit 1
    fi
    rgw_log "RGW ready in $((SECONDS - start)) s"
    # shellcheck disable=SC1091
    . "$RGW_DIR/env"
    "$@"
    exit $?
    ;;
__watch)
    while kill -0 "$2" 2>/dev/null; do
        sleep 1
    done
    rgw_stop "$3"
    ;;
*)
    echo "usage: rgw.sh start DIR | stop DIR | run CMD [ARGS...]" >&2
    exit 2
    ;;
esac
