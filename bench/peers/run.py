"""Runs the peer comparison and prints it as Markdown tables (see README.md).

    python run.py --entries 100000 --runs 2 --python VENV/bin/python \
        --mandate target/release/mandate --example target/release/examples/peer_workload \
        --work target/peers

Every phase is a process of its own, so that its peak resident memory is
its own: for each run, AgentLedger's append and verify, AgentMesh's append
and verify, Mandate's library append (the example) and `mandate verify`,
then `mandate serve` loaded by the example through HTTP, and `mandate verify`
on what it exported. The raw figures go to WORK/results.json.

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Who makes each record durable before the call returns, and how (README.md
# has the evidence: the file and function of each).
DURABILITY = {
    "mandate-library": "yes: WAL fsync (`synchronous=FULL`) before the ack; group commit",
    "mandate-server": "yes: the same, before each answer",
    "agentledger": "no: `write` + `flush` to the page cache per record; no fsync",
    "agentmesh": "no: in memory, + `write` to the page cache per record; no fsync",
}
NAMES = {
    "mandate-library": "Mandate, library (512 tasks)",
    "mandate-server": "Mandate, server (64 connections)",
    "agentledger": "agentledger-llm",
    "agentmesh": "agentmesh-platform",
}
PEERS = ["agentledger", "agentmesh"]
MANDATES = ["mandate-library", "mandate-server"]
# A target from the performance issue: Mandate/peer at least this much.
APPEND_SPEED_TARGET = 10.0
VERIFY_SPEED_TARGET = 20.0


def run_process(argv: list[str], **popen) -> dict:
    """Runs one process to its end; returns its wall time, CPU time (user +
    system), peak resident memory (from wait4) and stdout."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, **popen)
        # Read stdout to its end (so the process never blocks on it), then
        # reap the process with wait4 for its rusage.
        stdout = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        process.stdout.close()
        errors.seek(0)
        stderr = errors.read()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}: {stderr.decode(errors='replace')[-2000:]}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_kib": usage.ru_maxrss,
        "stdout": stdout.decode(errors="replace"),
    }


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def mandate_verify(mandate: str, directory: Path) -> dict:
    process = run_process(
        [mandate, "verify", "--log", str(directory / "log.jsonl"), "--key", str(directory / "log.pub"),
         "--checkpoint", str(directory / "checkpoint")]
    )
    verified = int(process["stdout"].split("ok: ", 1)[1].split(" ", 1)[0])
    return {
        "seconds": process["wall_s"],
        "cpu_s": process["cpu_s"],
        "peak_rss_kib": process["peak_rss_kib"],
        "verified": verified,
        "ok": True,
        "summary": process["stdout"].strip(),
        "log_bytes": (directory / "log.jsonl").stat().st_size,
    }


def peer(python: str, system: str, entries: int, directory: Path) -> dict:
    append_process = run_process([python, str(HERE / "peers.py"), system, "append", str(entries), str(directory)])
    append = last_json(append_process["stdout"])
    append["process"] = {k: v for k, v in append_process.items() if k != "stdout"}
    verify_process = run_process([python, str(HERE / "peers.py"), system, "verify", str(directory)])
    verify = last_json(verify_process["stdout"])
    verify["process"] = {k: v for k, v in verify_process.items() if k != "stdout"}
    if not verify.get("ok") or verify.get("verified") != entries:
        raise RuntimeError(f"{system}: the log did not verify: {verify}")
    return {"append": append, "verify": verify}


def mandate_library(example: str, mandate: str, entries: int, directory: Path) -> dict:
    process = run_process([example, "--entries", str(entries), "--dir", str(directory), "--no-verify"])
    report = last_json(process["stdout"])
    append = report["append"]
    append["process"] = {k: v for k, v in process.items() if k != "stdout"}
    append["export_s"] = report["export"]["seconds"]
    append["store_bytes"] = report.get("store_bytes")
    return {"append": append, "verify": mandate_verify(mandate, directory)}


def mandate_server(example: str, mandate: str, entries: int, directory: Path) -> dict:
    data = directory / "data"
    server = subprocess.Popen(
        [mandate, "serve", "--data", str(data), "--addr", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                break
            if line.startswith("mandate: listening on "):
                url = line.split("listening on ", 1)[1].split(" ", 1)[0]
        if url is None:
            raise RuntimeError("mandate serve did not say where it listens")
        key = (data / "admin.key").read_text().strip()
        process = run_process(
            [example, "--entries", str(entries), "--dir", str(directory), "--url", url, "--key", key,
             "--server-pid", str(server.pid), "--no-verify"]
        )
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    report = last_json(process["stdout"])
    append = report["append"]
    # The system's cost is the server's; the load generator's is apart.
    append["cpu_s"] = append["server"]["cpu_s"]
    append["peak_rss_kib"] = append["server"]["peak_rss_kib"]
    append["process"] = {k: v for k, v in process.items() if k != "stdout"}
    append["export_s"] = report["export"]["seconds"]
    return {"append": append, "verify": mandate_verify(mandate, directory)}


def fsync_floor(directory: Path, records: int = 2000) -> dict:
    """What one fsync per record costs on this disk: the ceiling of any
    logger that makes each record durable alone (no group commit)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "fsync-floor.log"
    line = b"x" * 600 + b"\n"
    started = time.perf_counter()
    with open(path, "ab") as file:
        for _ in range(records):
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
    seconds = time.perf_counter() - started
    path.unlink()
    return {"records": records, "seconds": seconds, "per_second": records / seconds}


def one_run(args, index: int) -> dict:
    work = Path(args.work) / f"run-{index}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result = {"run": index, "load_before": os.getloadavg(), "systems": {}, "load": {}}
    measure = {
        "agentledger": lambda directory: peer(args.python, "agentledger", args.entries, directory),
        "agentmesh": lambda directory: peer(args.python, "agentmesh", args.entries, directory),
        "mandate-library": lambda directory: mandate_library(args.example, args.mandate, args.entries, directory),
        "mandate-server": lambda directory: mandate_server(args.example, args.mandate, args.entries, directory),
    }
    # Odd runs start with the peers, even runs with Mandate, so that a
    # change of load during a run does not always favour the same side.
    order = PEERS + MANDATES if index % 2 else MANDATES + PEERS
    for system in order:
        print(f"run {index}: {system}…", file=sys.stderr, flush=True)
        result["load"][system] = os.getloadavg()
        result["systems"][system] = measure[system](work / system)
    result["fsync_floor"] = fsync_floor(work)
    result["load_after"] = os.getloadavg()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def figures(system: dict) -> dict:
    """The table's figures for one system in one run."""
    append, verify = system["append"], system["verify"]
    return {
        "append_s": append["seconds"],
        "append_per_s": append["per_second"] if "per_second" in append else append["entries"] / append["seconds"],
        "append_cpu_s": append["cpu_s"],
        "append_rss_kib": append["peak_rss_kib"],
        "verify_s": verify["seconds"],
        "verify_per_s": verify["verified"] / verify["seconds"],
        "verify_cpu_s": verify["cpu_s"],
        "verify_rss_kib": verify["peak_rss_kib"],
    }


def ratios(mandate: dict, peer: dict) -> dict:
    return {
        "append_speed": mandate["append_per_s"] / peer["append_per_s"],
        "verify_speed": mandate["verify_per_s"] / peer["verify_per_s"],
        "append_memory": mandate["append_rss_kib"] / peer["append_rss_kib"],
        "verify_memory": mandate["verify_rss_kib"] / peer["verify_rss_kib"],
    }


def median_figures(runs: list[dict]) -> dict:
    systems = runs[0]["figures"].keys()
    return {
        system: {key: statistics.median(run["figures"][system][key] for run in runs) for key in runs[0]["figures"][system]}
        for system in systems
    }


def mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


def rate(per_second: float) -> str:
    return f"{per_second:,.0f}"


def table(figures: dict, entries: int) -> str:
    lines = [
        f"| system | durable per record | append {entries:,} (s) | appends/s | append CPU (s) | append peak RSS "
        f"| verify (s) | verified entries/s | verify CPU (s) | verify peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for system in MANDATES + PEERS:
        f = figures[system]
        lines.append(
            f"| {NAMES[system]} | {DURABILITY[system]} | {f['append_s']:.2f} | {rate(f['append_per_s'])} "
            f"| {f['append_cpu_s']:.2f} | {mib(f['append_rss_kib'])} | {f['verify_s']:.3f} | {rate(f['verify_per_s'])} "
            f"| {f['verify_cpu_s']:.2f} | {mib(f['verify_rss_kib'])} |"
        )
    return "\n".join(lines)


def ratio_table(all_ratios: dict) -> str:
    lines = [
        f"| Mandate / peer | appends/s (target ≥ {APPEND_SPEED_TARGET:.0f}×) | verified entries/s (target ≥ "
        f"{VERIFY_SPEED_TARGET:.0f}×) | append peak RSS (target < 1) | verify peak RSS (target < 1) |",
        "|---|---|---|---|---|",
    ]
    for mandate in MANDATES:
        for peer_name in PEERS:
            r = all_ratios[f"{mandate}/{peer_name}"]
            mark = lambda value, target, more: f"{value:.2f}× " + ("(met)" if (value >= target if more else value < target) else "(missed)")
            lines.append(
                f"| {NAMES[mandate]} / {NAMES[peer_name]} | {mark(r['append_speed'], APPEND_SPEED_TARGET, True)} "
                f"| {mark(r['verify_speed'], VERIFY_SPEED_TARGET, True)} | {mark(r['append_memory'], 1.0, False)} "
                f"| {mark(r['verify_memory'], 1.0, False)} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--python", required=True, help="the virtual environment's python, with the peers installed")
    parser.add_argument("--mandate", required=True, help="target/release/mandate")
    parser.add_argument("--example", required=True, help="target/release/examples/peer_workload")
    parser.add_argument("--work", required=True, help="where the logs go (on the disk measured, not tmpfs)")
    parser.add_argument("--keep", action="store_true", help="keep each run's logs")
    args = parser.parse_args()

    runs = []
    for index in range(1, args.runs + 1):
        run = one_run(args, index)
        run["figures"] = {name: figures(system) for name, system in run["systems"].items()}
        run["ratios"] = {
            f"{mandate}/{peer_name}": ratios(run["figures"][mandate], run["figures"][peer_name])
            for mandate in MANDATES for peer_name in PEERS
        }
        runs.append(run)
        load = ", ".join(f"{value:.2f}" for value in run["load_before"])
        print(f"\n### Run {index} of {args.runs} (load average before: {load})\n")
        print(table(run["figures"], args.entries))
        print()
        print(ratio_table(run["ratios"]))
        floor = run["fsync_floor"]
        print(f"\nOne fsync per record on this disk (the ceiling of a logger without group commit): "
              f"{rate(floor['per_second'])} records/s ({floor['records']} records).")
        sys.stdout.flush()

    medians = median_figures(runs)
    # A ratio compares two systems measured in the same run: the median of
    # the runs' ratios, not the ratio of the medians.
    median_ratios = {
        pair: {key: statistics.median(run["ratios"][pair][key] for run in runs) for key in runs[0]["ratios"][pair]}
        for pair in runs[0]["ratios"]
    }
    if args.runs > 1:
        print(f"\n### Median of {args.runs} runs\n")
        print(table(medians, args.entries))
        print()
        print(ratio_table(median_ratios))
        floors = ", ".join(rate(run["fsync_floor"]["per_second"]) for run in runs)
        print(f"\nOne fsync per record on this disk, run by run: {floors} records/s.")
        loads = "; ".join(", ".join(f"{v:.2f}" for v in run["load_before"]) for run in runs)
        print(f"Load average (1, 5, 15 min) at the start of each run: {loads}.")
    results = {
        "entries": args.entries,
        "runs": runs,
        "median": medians,
        "median_ratios": median_ratios,
        "durability": DURABILITY,
        "cpus": os.cpu_count(),
    }
    out = Path(args.work) / "results.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nRaw results: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
