"""Fixtures: a real ``mandate serve`` built from this repository.

The binary is ``$MANDATE_BIN`` or ``<repo>/target/debug/mandate`` (built with
``cargo build -p mandate`` when missing). One server runs for the session;
each test gets a tenant of its own (``mandate tenant create`` works while the
server runs), so tests cannot see each other's identities, policies or log.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import mandate

REPO = Path(__file__).resolve().parents[3]
STARTUP_S_MAX = 60.0
STOP_S_MAX = 15.0

HUMAN = "user:alice"
AGENT = "agent:shopper"
BUDGET = "shopper-daily"
BUDGET_LIMIT = 1_000


def mandate_binary() -> Path:
    """The server binary, built once if it is missing."""
    configured = os.environ.get("MANDATE_BIN")
    binary = Path(configured) if configured else REPO / "target" / "debug" / "mandate"
    if not binary.exists():
        if configured:
            raise RuntimeError(f"MANDATE_BIN={configured} does not exist")
        subprocess.run(["cargo", "build", "-p", "mandate"], cwd=REPO, check=True)
    return binary


class Server:
    """One ``mandate serve --data <tmp> --addr 127.0.0.1:0`` process."""

    def __init__(self, binary: Path, data_dir: Path) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self._log = open(data_dir.parent / f"{data_dir.name}.stderr", "wb")
        self.process = subprocess.Popen(
            [str(binary), "serve", "--data", str(data_dir), "--addr", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "NO_COLOR": "1"},
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.process.stdout is not None
            for raw in self.process.stdout:
                lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        self.url = ""
        self.admin_key = ""
        seen: list[str] = []
        while not self.url:
            try:
                line = lines.get(timeout=STARTUP_S_MAX)
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"mandate serve printed no address within {STARTUP_S_MAX} s: {seen}") from None
            if line is None:
                raise RuntimeError(f"mandate serve exited ({self.process.wait()}) before listening: {seen}")
            seen.append(line)
            if line.startswith("mk_"):
                self.admin_key = line.strip()
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                self.url = match.group(1)
        if not self.admin_key:
            self.admin_key = (data_dir / "admin.key").read_text().strip()

    def admin(self, **options: object) -> mandate.Client:
        """A client with the default tenant's admin key."""
        return mandate.Client(self.url, self.admin_key, **options)  # type: ignore[arg-type]

    def new_tenant(self) -> str:
        """A fresh tenant's admin key."""
        name = f"t{uuid.uuid4().hex[:12]}"
        done = subprocess.run(
            [str(self.binary), "tenant", "create", name, "--data", str(self.data_dir)],
            capture_output=True,
            text=True,
            check=True,
        )
        keys = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith("mk_")]
        assert keys, done.stdout + done.stderr
        return keys[-1]

    def stop(self) -> int:
        """SIGTERM, then the exit code (killed if it does not stop in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_S_MAX)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="session")
def binary() -> Path:
    return mandate_binary()


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mandate-sdk-tests-") as directory:
        yield Path(directory)


@pytest.fixture(scope="session")
def server(binary: Path, workdir: Path) -> Iterator[Server]:
    started = Server(binary, workdir / "shared")
    yield started
    assert started.stop() == 0, "mandate serve did not stop cleanly on SIGTERM"


@pytest.fixture
def own_server(binary: Path, workdir: Path) -> Iterator[Server]:
    """A server of the test's own, which the test may stop."""
    started = Server(binary, workdir / f"own-{uuid.uuid4().hex[:8]}")
    yield started
    started.stop()


@dataclass
class Shop:
    """A tenant set up through the SDK: ``user:alice`` (human) delegates
    ``payments.*`` on ``merchant://*`` to ``agent:shopper``, which has a daily
    budget of 1,000 ``usd_cents`` and an agent token."""

    url: str
    admin: mandate.Client
    agent: mandate.Client
    agent_token: str
    token_id: str

    def spent(self) -> tuple[int, int]:
        """The budget's ``(spent, reserved)``."""
        budget = self.admin.get_budget(BUDGET)
        assert budget["remaining"] == budget["limit"] - budget["spent"] - budget["reserved"], budget
        return budget["spent"], budget["reserved"]

    def events(self) -> list[dict[str, object]]:
        """The bodies of the log's ``event.recorded`` entries, oldest first."""
        page = self.admin.search(type="event.recorded", limit=100)
        return [entry["body"] for entry in page["entries"]]


def make_shop(url: str, admin_key: str) -> Shop:
    admin = mandate.Client(url, admin_key)
    admin.create_identity(HUMAN, "human")
    admin.create_identity(AGENT, "agent", parent=HUMAN, attributes={"team": "shopping"})
    admin.create_grant(AGENT, HUMAN, ["payments.*"], ["merchant://*"])
    admin.create_budget(AGENT, "usd_cents", "day", BUDGET_LIMIT, id=BUDGET)
    token = admin.create_token(AGENT, 600)
    agent = mandate.Client(url, token["token"])
    return Shop(url=url, admin=admin, agent=agent, agent_token=token["token"], token_id=token["id"])


@pytest.fixture
def shop(server: Server) -> Shop:
    """A fresh tenant with the shop's identities, grant, budget and token."""
    return make_shop(server.url, server.new_tenant())
