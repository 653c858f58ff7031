#!/usr/bin/env python3
"""Where a batch's time goes, from the sequencer's trace.

    MANDATE_LOG=mandate_server=trace mandate serve ... 2> trace.log
    python3 bench/trace.py trace.log [--last N]

Prints the median, p90 and p99 of each step of the batches (`hold_us`,
`recall_us`, `decide_us`, `commit_us`, and `entries`), and for batches of 16
entries or more the median time to decide one entry.
"""

import argparse
import re

STEPS = ["entries", "hold_us", "recall_us", "decide_us", "commit_us"]
FIELD = re.compile(r"(\w+)=(\d+)")


def percentile(values: list[int | float], fraction: float) -> int | float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("log", help="the server's output with MANDATE_LOG=mandate_server=trace")
    parser.add_argument("--last", type=int, default=0, help="only the last N batches")
    args = parser.parse_args()
    with open(args.log, encoding="utf-8", errors="replace") as lines:
        batches = [
            {key: int(value) for key, value in FIELD.findall(line)} for line in lines if "commit_us=" in line
        ]
    batches = batches[-args.last :] if args.last else batches
    if not batches:
        print("no batch lines in this log (is MANDATE_LOG=mandate_server=trace set?)")
        return 1
    print(f"{len(batches)} batches")
    for step in STEPS:
        values = [batch[step] for batch in batches if step in batch]
        if values:
            print(f"{step:10} p50 {percentile(values, 0.5):>6}  p90 {percentile(values, 0.9):>6}  p99 {percentile(values, 0.99):>6}")
    full = [batch for batch in batches if batch.get("entries", 0) >= 16 and "decide_us" in batch]
    if full:
        per_entry = [batch["decide_us"] / batch["entries"] for batch in full]
        print(f"batches of 16 or more: {len(full)}, decide per entry p50 {percentile(per_entry, 0.5):.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
