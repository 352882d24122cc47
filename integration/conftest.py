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
