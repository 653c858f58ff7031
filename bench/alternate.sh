#!/usr/bin/env bash
# Two or more builds of `mandate`, alternated, each run on a new server: the
# way the A/B figures of docs/benchmarks.md were taken (the machine's noise
# drifts over minutes, so the builds take turns rather than run in blocks).
#
#   bench/alternate.sh rate DIR ROUNDS BIN...   # 1,000/s: a 20 s warm-up, then two 8 s runs
#   bench/alternate.sh flat DIR ROUNDS BIN...   # flat out, 64 connections, 8 s; and the peak RSS
#
# DIR is where each server's data directory goes (/tmp for the disk,
# /dev/shm for tmpfs); it is removed and made again for every run.
set -euo pipefail
mode=$1 dir=$2/alternate rounds=$3
shift 3
addr=127.0.0.1:8440
for _ in $(seq "$rounds"); do
    for bin in "$@"; do
        rm -rf "$dir"
        "$bin" serve --data "$dir" --addr "$addr" >/dev/null 2>&1 &
        server=$!
        for _ in $(seq 50); do [ -s "$dir/admin.key" ] && curl -sf "http://$addr/healthz" >/dev/null && break; sleep 0.1; done
        key=$(cat "$dir/admin.key")
        if [ "$mode" = rate ]; then
            "$bin" bench --url "http://$addr" --key "$key" --rate 1000 --connections 16 --duration 20 --warmup 1 >/dev/null
            for _ in 1 2; do
                echo "$bin $("$bin" bench --url "http://$addr" --key "$key" --rate 1000 --connections 16 --duration 8 --warmup 1 | grep latency)"
            done
        else
            out=$("$bin" bench --url "http://$addr" --key "$key" --connections 64 --duration 8 --warmup 1 | grep 'decisions in')
            echo "$bin $out $(grep VmHWM "/proc/$server/status")"
        fi
        kill "$server"
        wait "$server" || true
    done
done
rm -rf "$dir"
