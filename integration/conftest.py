"""Fixtures for integration tests: real processes, real servers.

Set MESHCONNECT_REQUIRE_SERVERS=1 (CI does) to turn a missing server into a failure instead of
a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
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


def require_server(what: str, reason: str) -> None:
    """Skip, or fail in CI, when a server a test needs is missing."""
    if os.environ.get("MESHCONNECT_REQUIRE_SERVERS"):
        pytest.fail(f"{what} is required in CI: {reason}")
    pytest.skip(f"{what} not available: {reason}")


def lines(path: Path) -> Sequence[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []
