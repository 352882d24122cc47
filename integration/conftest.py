"""Fixtures for integration tests: real processes, real servers.

Set MESHCONNECT_REQUIRE_SERVERS=1 (CI does) to turn a missing server into a failure instead of
a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def meshconnect(state: Path, *args: str) -> list[str]:
    """The command line that runs meshconnect with its state in ``state``."""
    return [sys.executable, "-m", "meshconnect", "--state", str(state), *args]


def run_cli(
    state: Path, *args: str, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        meshconnect(state, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def start_worker(
    command: Sequence[str], log_path: Path, timeout: float = 60
) -> subprocess.Popen[bytes]:
    """Start a worker whose output is appended to ``log_path`` and return once it logged that
    its sources started (or exited, or ``timeout`` seconds passed): a SIGKILL test then kills
    it at a random moment of its work, not of its interpreter start-up, however loaded the
    machine is."""
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        proc = subprocess.Popen(list(command), stdout=log, stderr=log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with log_path.open("rb") as f:
            f.seek(offset)
            if b" started" in f.read():
                break
        time.sleep(0.02)
    return proc


def require_server(what: str, reason: str) -> None:
    """Skip, or fail in CI, when a server a test needs is missing."""
    if os.environ.get("MESHCONNECT_REQUIRE_SERVERS"):
        pytest.fail(f"{what} is required in CI: {reason}")
    pytest.skip(f"{what} not available: {reason}")


def lines(path: Path) -> Sequence[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


# -- redis and mongodb connectors ----------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A private redis-server (integration/redis_support.py), one per test session."""
    from redis_support import RedisServer, private_redis

    missing = RedisServer.missing()
    if missing:
        require_server("redis-server", missing)
    with private_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A private nats-server with JetStream (integration/nats_support.py), one per session."""
    from nats_support import NatsServer, private_nats

    missing = NatsServer.missing()
    if missing:
        require_server("nats-server", missing)
    with private_nats(tmp_path_factory.mktemp("nats")) as server:
        yield server


#: Real-server MongoDB tests that did not run (no MESHCONNECT_TEST_MONGODB_URI): reported in
#: the terminal summary, so CI's log says plainly what was not verified. (Kept for the tests'
#: import; the summary reads the skip reports, which pytest-xdist's workers send back.)
MONGODB_NOT_RUN: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    names = sorted(
        {
            report.nodeid.rpartition("::")[2]
            for report in terminalreporter.stats.get("skipped", [])
            if "MESHCONNECT_TEST_MONGODB_URI" in str(getattr(report, "longrepr", ""))
        }
    )
    if names:
        terminalreporter.write_line(
            f"mongodb real-server tests: not run ({len(names)}: "
            "MESHCONNECT_TEST_MONGODB_URI is not set; no MongoDB server on this machine): "
            + ", ".join(names)
        )
