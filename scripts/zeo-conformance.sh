#!/usr/bin/env bash
# Runs ZEO's own client test classes (from the installed ZEO and ZODB wheels)
# against `zodbrs serve -C {conf}`, one server process per test, with
# tests/py/ext_zeo.py (the recipe of shared/spec/zeo-conformance.md).
#
#   scripts/zeo-conformance.sh                 # every class the ZEO issue lists
#   scripts/zeo-conformance.sh FileStorageTests ZEO.tests.testZEO.DemoStorageTests
#   ZEO_EXT_CMD='runzeo -C {conf}' scripts/zeo-conformance.sh ...   # the reference server
#   -t REGEX                                   # only tests whose id matches
#   -x                                         # skip the known exclusions
#                                              # (tests/py/zeo_exclusions.txt, with reasons)
#
# Short class names are looked up in ZEO.tests.testZEO, then testConnection.
# Prints a per-class table; exits non-zero if any test failed. Summaries go
# to $ZEO_CONFORMANCE_OUT (default target/zeo-conformance/) as JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=${ZODB_PYTHON:-$root/.venv/bin/python}
if [ ! -x "$py" ]; then
    ./scripts/setup-python.sh
    py=$root/.venv/bin/python
fi
args=()
classes=()
while [ $# -gt 0 ]; do
    case "$1" in
        -t) args+=(-t "$2"); shift 2 ;;
        -x) args+=(--exclude "$root/tests/py/zeo_exclusions.txt"); shift ;;
        *) classes+=("$1"); shift ;;
    esac
done
if [ ${#classes[@]} -eq 0 ]; then
    classes=(
        ZEO.tests.testZEO.FileStorageTests
        ZEO.tests.testZEO.MappingStorageTests
        ZEO.tests.testZEO.BlobAdaptedFileStorageTests
        ZEO.tests.testZEO.ClientConflictResolutionTests
        ZEO.tests.testZEO.FileStorageRecoveryTests
        ZEO.tests.testZEO.ZRPCConnectionTests
        ZEO.tests.testZEO.DemoStorageTests
        ZEO.tests.testConnection.FileStorageConnectionTests
        ZEO.tests.testConnection.FileStorageReconnectionTests
        ZEO.tests.testConnection.FileStorageInvqTests
        ZEO.tests.testConnection.FileStorageTimeoutTests
    )
fi
full=()
for c in "${classes[@]}"; do
    case "$c" in
        *.*) full+=("$c") ;;
        *Connection*Tests|*InvqTests|*TimeoutTests) full+=("ZEO.tests.testConnection.$c") ;;
        *) full+=("ZEO.tests.testZEO.$c") ;;
    esac
done
if [ -z "${ZEO_EXT_CMD:-}" ]; then
    cargo build --release -p zodbrs --quiet
    target=${CARGO_TARGET_DIR:-$root/target}
    export ZEO_EXT_CMD="$target/release/zodbrs serve -C {conf}"
fi
out=${ZEO_CONFORMANCE_OUT:-$root/target/zeo-conformance}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
echo "server: $ZEO_EXT_CMD"
status=0
"$py" "$root/tests/py/ext_zeo.py" "${args[@]}" --json "$out/summary.json" "${full[@]}" || status=$?
echo "summary: $out/summary.json"
exit $status
