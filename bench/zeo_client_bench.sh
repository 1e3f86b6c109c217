#!/usr/bin/env bash
# ZEO client speed: zodbrs' client against Python's ClientStorage, each
# against `zodbrs serve` and against `runzeo`, serving DATA.FS read-only
# (`zodbrs bench zeo-client`: caches off, sequential loadBefore latency
# and pipelined loads/s from one process). Nothing is asserted.
#
#   bench/zeo_client_bench.sh [DATA.FS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
data=${1:-/work/bench-data/bench.fs}
secs=${2:-5}
py=${ZODB_PYTHON:-$root/.venv/bin/python}
runzeo=$(dirname "$py")/runzeo
cargo build --release -p zodbrs --quiet
zodbrs=${CARGO_TARGET_DIR:-$root/target}/release/zodbrs
scratch=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$scratch"
}
trap cleanup EXIT
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
for server in zodbrs runzeo; do
    conf=$scratch/$server.conf
    printf '<zeo>\n  address 127.0.0.1:%s\n  read-only true\n</zeo>\n<filestorage 1>\n  path %s\n  read-only true\n</filestorage>\n' "$port" "$data" >"$conf"
    case $server in
        zodbrs) "$zodbrs" serve -C "$conf" 2>"$scratch/$server.log" & ;;
        runzeo) "$runzeo" -C "$conf" >"$scratch/$server.log" 2>&1 & ;;
    esac
    pid=$!
    for _ in $(seq 1 600); do
        if "$py" -c "import socket; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "# server: $server ($data)"
    "$zodbrs" bench zeo-client "zeo://127.0.0.1:$port?read_only=true" --python "$py" --seconds "$secs"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    pid=
done
