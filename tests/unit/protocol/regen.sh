#!/bin/sh
# Regenerates the codec from the JSON specs into a temporary directory and fails if the output
# differs in any byte from the committed protocol/generated/. Skips (exit 77) when the Kafka
# spec directory is not present (the specs are not part of the repository).
# Usage: regen.sh <source dir> <kafka spec dir>
set -eu
src=$1
spec=$2
if [ ! -d "$spec" ]; then
    echo "regen: spec directory $spec not present, skipping"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 "$src/protocol/gen/generate.py" --spec "$spec" --own-spec "$src/protocol/spec" --out "$tmp"
if ! diff -r "$src/protocol/generated" "$tmp" >"$tmp.diff" 2>&1; then
    head -n 60 "$tmp.diff"
    rm -f "$tmp.diff"
    echo "regen: protocol/generated differs from the generator's output; run the 'regen' target"
    exit 1
fi
rm -f "$tmp.diff"
echo "regen: protocol/generated matches the generator's output"
