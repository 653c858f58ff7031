#!/bin/sh
# Two `mandate serve` on one fresh PostgreSQL database, loaded together by
# `mandate bench`; extra arguments go to `mandate bench`.
#
#   cargo build --release -p mandate
#   bench/postgres-two-servers.sh --connections 128 --duration 10
#
# MANDATE_BENCH_DATABASE names the server (default: the local one with trust
# auth); the database `mandate_bench` on it is dropped and created again.
set -eu
BIN=${MANDATE_BIN:-target/release/mandate}
SERVER=${MANDATE_BENCH_DATABASE:-postgres://postgres@127.0.0.1:5432}
DIR=$(mktemp -d)
cleanup() {
    kill $(cat "$DIR"/*.pid 2>/dev/null) 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM
psql -q "$SERVER/postgres" -c "DROP DATABASE IF EXISTS mandate_bench" -c "CREATE DATABASE mandate_bench" >/dev/null 2>&1
for port in 8501 8502; do
    "$BIN" serve --database "$SERVER/mandate_bench" --addr "127.0.0.1:$port" >"$DIR/$port.out" 2>"$DIR/$port.err" &
    echo $! >"$DIR/$port.pid"
    # The first server creates the tenant and prints its key; wait for it.
    until grep -q "listening" "$DIR/$port.out" 2>/dev/null; do sleep 0.1; done
done
KEY=$(sed -n 2p "$DIR/8501.out")
"$BIN" bench --url http://127.0.0.1:8501 --url http://127.0.0.1:8502 --key "$KEY" "$@"
