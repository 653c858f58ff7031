#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds each, starting from the seeds in
# fuzz/seeds/<target>/. New inputs go to fuzz/corpus/<target>/ (ignored by
# git), so the checked-in seeds are never rewritten. Exits non-zero on the
# first crash, leak or timeout; the failing input is in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh 30          # from anywhere; installs cargo-fuzz if missing
set -euo pipefail

seconds="${1:?usage: fuzz/run.sh SECONDS}"
case "$seconds" in
    '' | *[!0-9]*) echo "SECONDS must be a whole number, not '$seconds'" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cargo +nightly fuzz build
mapfile -t targets < <(cargo +nightly fuzz list)

for target in "${targets[@]}"; do
    echo "=== $target (${seconds}s)"
    mkdir -p "fuzz/corpus/$target"
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
echo "all ${#targets[@]} targets ran ${seconds}s each without a crash"
