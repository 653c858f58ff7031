#!/usr/bin/env bash
# Each thread's share of a core in a running process, over an interval.
#
#   bench/thread_cpu.sh PID [SECONDS]      # default 4 s
#
# Reads utime + stime of /proc/PID/task/*/stat before and after; prints the
# threads that ran, by name (tokio-rt-worker, mandate-ledger-…).
set -euo pipefail
pid=$1
seconds=${2:-4}
ticks=$(getconf CLK_TCK)
snapshot() {
    for task in /proc/"$pid"/task/*; do
        echo "$(basename "$task") $(awk '{print $14 + $15}' "$task"/stat) $(cat "$task"/comm)"
    done | sort
}
before=$(snapshot)
sleep "$seconds"
after=$(snapshot)
join <(echo "$before") <(echo "$after") |
    awk -v s="$seconds" -v t="$ticks" '$4 > $2 { printf "%-18s %5.1f%%\n", $3, ($4 - $2) * 100 / (s * t) }'
