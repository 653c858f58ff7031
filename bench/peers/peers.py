"""The peer comparison's workload on the two Python peers, one phase per process.

    python peers.py agentledger append N DIR    # record N tool calls into DIR
    python peers.py agentledger verify DIR      # verify the whole log in DIR
    python peers.py agentmesh append N DIR
    python peers.py agentmesh verify DIR

Each prints one JSON object: the phase's wall time and CPU time (measured
around the calls alone, after the imports), the process's peak resident
memory, and whether the log verified. Only public APIs are called, the way
the packages' READMEs and docstrings show them; README.md says exactly which
calls, and what each one writes and checks.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

HUMAN = "user:peers-alice"
AGENT = "agent:peers-buyer"
ACTION = "payments.charge"
INPUT_DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
OUTPUT_DIGEST = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
# AgentMesh's FileAuditSink signs each entry with HMAC-SHA256 under this key.
AGENTMESH_HMAC_KEY = b"peers-benchmark-hmac-key-32-bytes!"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_kib() -> int:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measured(phase):
    """Runs `phase()` and returns its timing, with what it returned."""
    cpu_before, started = cpu_seconds(), time.perf_counter()
    result = phase()
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    return {"seconds": seconds, "cpu_s": cpu, "peak_rss_kib": peak_rss_kib(), **result}


# --------------------------------------------------------------------------
# agentledger-llm: `Ledger.record` decorating a tool; `HashChain.verify`.
# --------------------------------------------------------------------------

AGENTLEDGER_LOG = "agent-proofs.jsonl"


def agentledger_append(entries: int, directory: Path) -> dict:
    from agentledger import Ledger

    path = directory / AGENTLEDGER_LOG
    # No TraceForge span enrichment: it is optional and not installed.
    ledger = Ledger(proof_log=str(path), auto_integrate_traceforge=False)
    receipt = ledger.issue_receipt(
        principal=HUMAN,
        agent=AGENT,
        permitted_tools=[ACTION],
        permitted_scopes=["write:payments"],
        expires_in=3600,
    )

    @ledger.record(receipt=receipt, tool_name=ACTION)
    def charge(params, context=None):
        return {"status": "ok", "output_digest": OUTPUT_DIGEST}

    def phase():
        for n in range(entries):
            charge({"resource": f"merchant://books/{n}", "usd_cents": 4723})
        return {}

    result = measured(phase)
    result["log_bytes"] = path.stat().st_size
    return result


def agentledger_verify(directory: Path) -> dict:
    # `Ledger.verify_chain()` is `HashChain().verify(JSONLStore(path).all())`
    # (agentledger/ledger.py); the Ledger constructor would first read the
    # whole log once more to restore the chain head, so this calls the two
    # public classes it is made of directly, which favours the peer.
    from agentledger.chain import HashChain
    from agentledger.storage.jsonl_store import JSONLStore

    path = directory / AGENTLEDGER_LOG

    def phase():
        proofs = JSONLStore(str(path)).all()
        return {"ok": HashChain().verify(proofs), "verified": len(proofs)}

    return measured(phase)


# --------------------------------------------------------------------------
# agentmesh-platform: `AuditLog.log` with a `FileAuditSink`;
# `FileAuditSink.verify_integrity` (the file's hash chain and HMACs).
# --------------------------------------------------------------------------

AGENTMESH_LOG = "audit.jsonl"


def agentmesh_append(entries: int, directory: Path) -> dict:
    from agentmesh.governance import AuditLog, FileAuditSink

    path = directory / AGENTMESH_LOG
    log = AuditLog(sink=FileAuditSink(path, secret_key=AGENTMESH_HMAC_KEY))

    def phase():
        for n in range(entries):
            log.log(
                event_type="tool_invocation",
                agent_did=AGENT,
                action=ACTION,
                resource=f"merchant://books/{n}",
                data={
                    "duration_ms": n % 250,
                    "input_digest": INPUT_DIGEST,
                    "output_digest": OUTPUT_DIGEST,
                },
                outcome="failure" if n % 100 == 0 else "success",
                policy_decision="allow",
            )
        return {}

    result = measured(phase)
    # Not part of the comparison (the in-memory chain dies with the
    # process), but measured since it is the AuditLog's own check.
    started = time.perf_counter()
    ok, _ = log.verify_integrity()
    result["in_memory_verify"] = {"seconds": time.perf_counter() - started, "ok": ok}
    result["log_bytes"] = path.stat().st_size
    return result


def agentmesh_verify(directory: Path) -> dict:
    from agentmesh.governance import FileAuditSink

    path = directory / AGENTMESH_LOG

    def phase():
        ok, error = FileAuditSink(path, secret_key=AGENTMESH_HMAC_KEY).verify_integrity()
        return {"ok": ok, "error": error}

    result = measured(phase)
    with open(path, "rb") as file:
        result["verified"] = sum(1 for _ in file)
    return result


def main(argv: list[str]) -> int:
    usage = "usage: peers.py (agentledger|agentmesh) (append N DIR | verify DIR)"
    if len(argv) < 3:
        print(usage, file=sys.stderr)
        return 2
    system, command = argv[1], argv[2]
    if command == "append" and len(argv) == 5:
        entries, directory = int(argv[3]), Path(argv[4])
        directory.mkdir(parents=True, exist_ok=True)
        run = {"agentledger": agentledger_append, "agentmesh": agentmesh_append}[system]
        result = run(entries, directory)
        result["entries"] = entries
    elif command == "verify" and len(argv) == 4:
        run = {"agentledger": agentledger_verify, "agentmesh": agentmesh_verify}[system]
        result = run(Path(argv[3]))
    else:
        print(usage, file=sys.stderr)
        return 2
    result["system"] = system
    result["pid"] = os.getpid()
    print(json.dumps(result))
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
