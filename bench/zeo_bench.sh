#!/usr/bin/env bash
# ZEO server speed: `zodbrs serve` against Python's `runzeo`, same machine,
# same Data.fs, same load generator (`zodbrs bench zeo`, a Rust client
# without cache, one request at a time per connection).
#
#   bench/zeo_bench.sh [DATA.FS] [SECONDS]
#
# First the machine's ceiling for such loads: `zodbrs bench loopback`, the
# same connections and message sizes against a server that only echoes.
# Loads: random loadBefore at 1, 4 and 16 connections, both servers
# serving DATA.FS read-only (nothing is written beside it), each after an
# unmeasured run of the same length. Commits:
# 1-object transactions with 1 and 8 writers, each server on its own fresh
# Data.fs in a scratch directory. Prints one line per run; nothing is
# asserted (machines differ; the ratios are what we track).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
data=${1:-/work/bench-data/bench.fs}
secs=${2:-10}
py=${ZODB_PYTHON:-$root/.venv/bin/python}
runzeo=$(dirname "$py")/runzeo
cargo build --release -p zodbrs --quiet
zodbrs=${CARGO_TARGET_DIR:-$root/target}/release/zodbrs
scratch=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$scratch"
}
trap cleanup EXIT

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 600); do
        if "$py" -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "server on port $1 did not start" >&2; return 1
}

# start NAME CONF PORT: starts a server on CONF listening on PORT.
start() {
    local name=$1 conf=$2 port=$3
    sed -i "s/^ *address .*/  address 127.0.0.1:$port/" "$conf"
    case $name in
        zodbrs) "$zodbrs" serve -C "$conf" 2>"$scratch/$name-$port.log" & ;;
        runzeo) "$runzeo" -C "$conf" >"$scratch/$name-$port.log" 2>&1 & ;;
    esac
    pids+=($!)
    wait_port "$port"
}

stop_last() {
    local p=${pids[-1]}
    kill -TERM "$p"; wait "$p" 2>/dev/null || true
    unset 'pids[-1]'
}

echo "# this machine's loopback ceiling (a server that only echoes), $secs s per run"
for n in 1 4 16; do
    printf '%-7s ' echo
    "$zodbrs" bench loopback --clients "$n" --seconds "$secs"
done

echo "# loads: $data (read-only), $secs s per run"
for server in zodbrs runzeo; do
    conf=$scratch/$server-read.conf
    printf '<zeo>\n  address 127.0.0.1:0\n  read-only true\n</zeo>\n<filestorage 1>\n  path %s\n  read-only true\n</filestorage>\n' "$data" >"$conf"
    port=$(free_port)
    start "$server" "$conf" "$port"
    # Warm-up, not shown: a server that maps the file (ours) takes a page
    # fault on its first touch of each page, which a steady server has
    # long paid; both servers get the same.
    "$zodbrs" bench zeo -a "127.0.0.1:$port" --clients 16 --seconds "$secs" >/dev/null
    for n in 1 4 16; do
        printf '%-7s ' "$server"
        "$zodbrs" bench zeo -a "127.0.0.1:$port" --clients "$n" --seconds "$secs"
    done
    stop_last
done

echo "# commits: 1-object transactions on a fresh Data.fs, $secs s per run"
for server in zodbrs runzeo; do
    for n in 1 8; do
        dir=$scratch/$server-write-$n
        mkdir -p "$dir"
        conf=$dir/zeo.conf
        printf '<zeo>\n  address 127.0.0.1:0\n</zeo>\n<filestorage 1>\n  path %s/Data.fs\n</filestorage>\n' "$dir" >"$conf"
        port=$(free_port)
        start "$server" "$conf" "$port"
        printf '%-7s ' "$server"
        "$zodbrs" bench zeo -a "127.0.0.1:$port" --clients "$n" --seconds "$secs" --write
        stop_last
    done
done
