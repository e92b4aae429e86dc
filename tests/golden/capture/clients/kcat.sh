#!/usr/bin/env bash
# Golden capture driver for kcat 1.7 / librdkafka 2.0.2: metadata (also after SASL/PLAIN),
# produce with every codec
# (5 records each, key k<i>, value v<i>-<codec>: followed by "0123456789abcdef" x 8), an
# idempotent producer, an acks=0 producer, a plain consumer, offsets by time and a group consumer.
# Usage: kcat.sh HOST:PORT
set -u
b=$1
pad=$(printf '0123456789abcdef%.0s' 1 2 3 4 5 6 7 8)
t() { timeout 20 "$@"; }
t kcat -b "$b" -L >/dev/null
t kcat -b "$b" -L -t golden-none -X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=PLAIN \
    -X sasl.username=golden -X sasl.password=golden-secret >/dev/null
for codec in none gzip snappy lz4 zstd; do
    for i in 0 1 2 3 4; do printf 'k%d\tv%d-%s:%s\n' "$i" "$i" "$codec" "$pad"; done |
        t kcat -b "$b" -P -t "golden-$codec" -K '\t' -z "$codec" -X linger.ms=200
done
for i in 0 1 2 3 4; do printf 'k%d\tv%d-none:%s\n' "$i" "$i" "$pad"; done |
    t kcat -b "$b" -P -t golden-idem -K '\t' -X linger.ms=200 -X enable.idempotence=true
for i in 0 1 2 3 4; do printf 'k%d\tv%d-none:%s\n' "$i" "$i" "$pad"; done |
    t kcat -b "$b" -P -t golden-acks0 -K '\t' -X linger.ms=200 -X acks=0
t kcat -b "$b" -C -t golden-gzip -o beginning -e -q >/dev/null
t kcat -b "$b" -Q -t golden-none:0:0 >/dev/null
t kcat -b "$b" -G golden-kcat-group -X auto.offset.reset=earliest -X enable.auto.commit=true \
    -X auto.commit.interval.ms=100 -e -q golden-lz4 >/dev/null
exit 0
