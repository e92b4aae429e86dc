#!/usr/bin/env bash
# Checks (or with --fix, applies) clang-format on every hand-written C file.
# Generated code under protocol/generated/ is produced already formatted by the generator's own
# layout rules and is excluded.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=check
[ "${1:-}" = "--fix" ] && mode=fix
files=$(git ls-files --cached --others --exclude-standard '*.c' '*.h' | grep -v '^protocol/generated/' || true)
bad=0
for f in $files; do
    [ -f "$f" ] || continue
    if [ "$mode" = fix ]; then
        clang-format -i "$f"
    elif ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
        echo "clang-format: $f needs formatting (run: make format)"
        bad=1
    fi
done
[ "$mode" = check ] && [ $bad -eq 0 ] && echo "clang-format: ok"
exit $bad
