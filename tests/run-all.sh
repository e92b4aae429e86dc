#!/usr/bin/env bash
# Runs every test: format check, then one build with clang + AddressSanitizer +
# UndefinedBehaviorSanitizer + libFuzzer targets and -Werror, running unit, integration and fuzz
# tests under ctest; then a gcc release build with -Werror (the configuration users build), whose
# unit tests run too. Prints ctest's summary for each. Exit status is non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
jobs=$(nproc)
status=0

bash tests/check-format.sh || status=1

echo "== sanitizer build (clang, address+undefined, fuzzers) =="
CC=clang CXX=clang++ cmake -S . -B "$build/asan" -DCMAKE_BUILD_TYPE=Debug -DRUNNEL_WERROR=ON \
    -DRUNNEL_SANITIZE=ON -DRUNNEL_FUZZ=ON -DRUNNEL_BENCH=OFF >/dev/null || exit 1
cmake --build "$build/asan" -j"$jobs" >/dev/null || { cmake --build "$build/asan" -j1; exit 1; }
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
(cd "$build/asan" && ctest --output-on-failure -j"$jobs" ${CTEST_ARGS:-}) || status=1

echo "== release build (gcc, -Werror) =="
cmake -S . -B "$build/release" -DCMAKE_BUILD_TYPE=Release -DRUNNEL_WERROR=ON >/dev/null || exit 1
cmake --build "$build/release" -j"$jobs" >/dev/null || { cmake --build "$build/release" -j1; exit 1; }
(cd "$build/release" && ctest --output-on-failure -j"$jobs" -L unit) || status=1

exit $status
