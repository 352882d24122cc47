"""Snapshot of a 200,000-row table while writers insert, update and delete all over its key
range: the final state is exact, and the hand-off between snapshot reads and binlog changes
neither loses nor duplicates a change."""

from __future__ import annotations

import collections
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pymysql
from canal_support import events, mariadb, pipeline, replay, table_rows
from mariadb import MariaDB

from conftest import meshconnect

__all__ = ["mariadb"]

ROWS = 200_000


class Writer(threading.Thread):
    """Inserts odd keys, updates and deletes even ones; each change gets a fresh ``ver``."""

    def __init__(self, server: MariaDB, seed: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.server, self.seed, self.stop = server, seed, stop
        self.error: BaseException | None = None
        self.changes = 0

    def run(self) -> None:
        try:
            rng = random.Random(self.seed)
            conn = pymysql.connect(**self.server.connect_args())
            cur = conn.cursor()
            marker = self.seed * 100_000_000
            while not self.stop.is_set():
                marker += 1
                key = rng.randint(1, ROWS) * 2
                op = rng.random()
                if op < 0.4:
                    cur.execute(
                        "INSERT IGNORE INTO snap.big VALUES (%s, %s, 'new')", (key - 1, marker)
                    )
                elif op < 0.85:
                    cur.execute(
                        "UPDATE snap.big SET ver = %s, v = 'upd' WHERE id = %s", (marker, key)
                    )
                else:
                    cur.execute("DELETE FROM snap.big WHERE id = %s", (key,))
                self.changes += 1
                time.sleep(0.002)
            conn.close()
        except BaseException as exc:
            self.error = exc


def test_snapshot_under_concurrent_writes_is_exact(tmp_path: Path, mariadb: MariaDB) -> None:
    mariadb.execute("CREATE DATABASE snap")
    mariadb.execute(
        "CREATE TABLE snap.big (id INT PRIMARY KEY, ver BIGINT NOT NULL, v VARCHAR(10))",
        f"INSERT INTO snap.big SELECT seq * 2, seq, 'seed' FROM seq_1_to_{ROWS}",
        database="snap",
    )
    out = tmp_path / "out.jsonl"
    config = tmp_path / "snap.yaml"
    config.write_text(pipeline(mariadb, out, include=["snap\\..*"], format="row", chunk_size=5000))
    stop = threading.Event()
    writers = [Writer(mariadb, seed, stop) for seed in (1, 2)]
    for w in writers:
        w.start()
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            meshconnect(tmp_path / "state", "run", str(config)), stdout=log, stderr=log
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and "snapshot done" not in log_path.read_text():
            time.sleep(0.2)
        time.sleep(1.0)  # writes after the snapshot are streamed
        stop.set()
        for w in writers:
            w.join()
        mariadb.execute("INSERT INTO snap.big VALUES (0, 0, 'end')")
        while time.monotonic() < deadline:
            if any(r.get("partitionkey") == "0" for r in events(out, partial=True)):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert all(w.error is None for w in writers), [w.error for w in writers]
    records = events(out)
    reads = [r for r in records if r["type"] == "mysql.read"]
    changes = [r for r in records if r["type"] != "mysql.read"]
    assert sum(w.changes for w in writers) > 500 and changes
    # Exact final state.
    assert replay(records)["snap.big"] == table_rows(mariadb, "snap.big")
    # No key read twice, no change delivered twice, no change both read and streamed.
    assert len({r["partitionkey"] for r in reads}) == len(reads)
    streamed = collections.Counter(
        (r["type"], r["partitionkey"], r["data"]["ver"]) for r in changes
    )
    assert [c for c, n in streamed.items() if n > 1] == []
    read_versions = {(r["partitionkey"], r["data"]["ver"]) for r in reads}
    upserts = {(k, v) for t, k, v in streamed if t != "mysql.delete"}
    assert read_versions & upserts == set()
    # Progress was logged while the snapshot ran.
    assert "snapshot snap.big: " in log_path.read_text()
