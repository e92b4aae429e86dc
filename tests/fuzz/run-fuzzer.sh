#!/usr/bin/env bash
# Replays a fuzz target's committed corpus, then fuzzes it for a short bounded time
# (RUNNEL_FUZZ_SECONDS, default 20) in a scratch copy so the committed corpus is not changed.
# A crash fails the test; copy the reproducer from the log into the corpus once it is fixed.
set -euo pipefail
target=$1
corpus=$2
secs=${RUNNEL_FUZZ_SECONDS:-20}
mkdir -p "$corpus"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$target" -runs=0 "$corpus"
"$target" -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -artifact_prefix="$work/" \
    "$work" "$corpus"
