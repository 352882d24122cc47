"""``meshconnect`` run as a user runs it: another process, its state under the test's
directory, in that directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def mc(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``meshconnect --state tmp_path/state ARGS`` in ``tmp_path``; never raises on a
    non-zero exit (the test checks ``returncode``)."""
    return subprocess.run(
        [sys.executable, "-m", "meshconnect", "--state", str(tmp_path / "state"), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=timeout,
        check=False,
    )
