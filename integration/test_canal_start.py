"""``snapshot: never`` on fresh state streams "from the end of the binlog": that end must be
committed before the worker says the source started, or a stop before the first change makes
the next start pick a later end and lose everything written in between. A real
``meshconnect run`` is stopped with SIGTERM, and killed with SIGKILL, right after it logged
"started"; rows inserted while it is down arrive at the next start, exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from canal_support import events, mariadb, pipeline
from mariadb import MariaDB

from conftest import meshconnect, run_cli

__all__ = ["mariadb"]


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in path.read_text():
            return
        assert proc.poll() is None, path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in {path.read_text()}")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_rows_written_while_stopped_before_any_change_arrive(
    tmp_path: Path, mariadb: MariaDB, stop: signal.Signals
) -> None:
    db = f"st_{stop.name.lower()}"
    mariadb.execute(f"CREATE DATABASE {db}", f"CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT)")
    out = tmp_path / "out.jsonl"
    config = tmp_path / "cdc.yaml"
    config.write_text(
        pipeline(mariadb, out, include=[f"{db}\\..*"], snapshot="never", format="row")
    )
    state = tmp_path / "state"
    shown = run_cli(state, "offsets", "show", str(config))
    assert shown.stdout.splitlines() == [
        "source cdc/canal",
        "  (no committed position: snapshots the captured tables, then streams (`snapshot: "
        "never`: streams from the end of the binlog at the first start, a position committed "
        "before it reports started))",
        "sink cdc/out",
        "  (no committed offset: starts from the beginning)",
    ]

    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(meshconnect(state, "run", str(config)), stdout=log, stderr=log)
        _wait_for(log_path, "source cdc/canal started", proc)
        proc.send_signal(stop)
        code = proc.wait(timeout=60)
    assert code == (0 if stop == signal.SIGTERM else -signal.SIGKILL)

    committed = json.loads(run_cli(state, "offsets", "show", str(config), "--json").stdout)
    position = committed["sources"][0]["positions"]["binlog"]
    (end,) = mariadb.execute("SHOW MASTER STATUS")
    assert (position["file"], position["pos"], position["events"]) == (end[0], end[1], 0)

    mariadb.execute(f"INSERT INTO {db}.t VALUES (1, 10), (2, 20)", f"DELETE FROM {db}.t WHERE id=1")

    with log_path.open("a") as log:
        proc = subprocess.Popen(meshconnect(state, "run", str(config)), stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while len(events(out, partial=True)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    got = [(r["type"], r["partitionkey"], r["data"]) for r in events(out)]
    assert got == [
        ("mysql.insert", "1", {"id": 1, "v": 10}),
        ("mysql.insert", "2", {"id": 2, "v": 20}),
        ("mysql.delete", "1", {"id": 1, "v": 10}),
    ]
