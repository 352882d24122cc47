"""SIGKILL the CDC worker at random moments while a writer runs mixed transactions (single
rows, multi-row statements, primary-key changes, deletes, 10,000-row transactions, a table
that is not captured); after the last restart the file sink's ``row`` records, replayed by
primary key, equal the source tables exactly, and no change arrives twice."""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pymysql
from canal_support import events, mariadb, pipeline, replay, table_rows, transaction
from mariadb import MariaDB

from conftest import meshconnect, start_worker

__all__ = ["mariadb"]

TABLES = ["shop.t1", "shop.t2", "shop.t3"]


def setup(server: MariaDB) -> None:
    statements = ["CREATE DATABASE shop"]
    for t in [*TABLES, "shop.ignored"]:
        statements.append(
            f"CREATE TABLE {t} (id INT PRIMARY KEY, ver BIGINT NOT NULL, "
            "note VARCHAR(40), amount DECIMAL(12,2))"
        )
    # Written last, snapshotted last: once its row arrives, everything before it did.
    statements.append("CREATE TABLE shop.zz_end (id INT PRIMARY KEY)")
    # Rows before the first run: the snapshot delivers them.
    for t in TABLES:
        values = ",".join(f"({i}, {i}, 'seed', {i}.25)" for i in range(1, 2001))
        statements.append(f"INSERT INTO {t} VALUES {values}")
    server.execute(*statements)


class Writer(threading.Thread):
    """Mixed transactions; every row change sets ``ver`` to a value never used before."""

    def __init__(self, server: MariaDB, seconds: float) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.seconds = seconds
        self.marker = 10_000_000
        self.next_id = {t: 2001 for t in TABLES}
        self.big = 0
        self.error: BaseException | None = None

    def mark(self, n: int = 1) -> int:
        base = self.marker
        self.marker += n + 1
        return base

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _run(self) -> None:
        rng = random.Random(1)
        conn = pymysql.connect(**self.server.connect_args())
        cur = conn.cursor()
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            t = rng.choice(TABLES)
            big = rng.random() < 0.03 and self.big < 3
            transaction(cur, lambda cur, t=t, big=big: self._changes(cur, rng, t, big))
            self.big += big
            if not big:
                time.sleep(rng.uniform(0.0, 0.01))
        conn.close()

    def _changes(self, cur: Any, rng: random.Random, t: str, big: bool) -> None:
        """One transaction's statements (run again, with new values, when InnoDB rolls it
        back)."""
        if big:
            # A 10,000-row transaction: a bulk insert and an update of all its rows.
            start = self.next_id[t]
            self.next_id[t] += 10_000
            m = self.mark(20_000)
            values = ",".join(
                f"({i}, {m + i - start}, 'big', 1.5)" for i in range(start, start + 10_000)
            )
            cur.execute(f"INSERT INTO {t} VALUES {values}")
            cur.execute(
                f"UPDATE {t} SET ver = {m + 10_000} + id - {start}, note = 'big2' "
                f"WHERE id >= {start} AND id < {start + 10_000}"
            )
            return
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            if op < 0.35:
                n = rng.randint(1, 30)
                start = self.next_id[t]
                self.next_id[t] += n
                m = self.mark(n)
                values = ",".join(
                    f"({i}, {m + i - start}, 'n{i}', {i % 1000}.5)" for i in range(start, start + n)
                )
                cur.execute(f"INSERT INTO {t} VALUES {values}")
            elif op < 0.7:
                lo = rng.randint(1, self.next_id[t])
                m = self.mark(50)
                cur.execute(
                    f"UPDATE {t} SET ver = {m} + (id - {lo}), note = 'u{m}', "
                    f"amount = amount + 1 WHERE id >= {lo} AND id < {lo + 20}"
                )
            elif op < 0.85:
                lo = rng.randint(1, self.next_id[t])
                cur.execute(f"DELETE FROM {t} WHERE id >= {lo} AND id < {lo + 3}")
            else:
                old = rng.randint(1, self.next_id[t])
                new = self.next_id[t]
                self.next_id[t] += 1
                cur.execute(f"UPDATE {t} SET id = {new}, ver = {self.mark()} WHERE id = {old}")
        cur.execute(f"INSERT INTO shop.ignored VALUES ({self.mark()}, 0, 'x', 0)")


def test_sigkill_at_random_moments_keeps_the_tables_exact(tmp_path: Path, mariadb: MariaDB) -> None:
    setup(mariadb)
    out = tmp_path / "out.jsonl"
    config = tmp_path / "cdc.yaml"
    config.write_text(
        pipeline(
            mariadb,
            out,
            include=["shop\\..*"],
            exclude=["shop\\.ignored"],
            format="row",
            batch_events=40,
            chunk_size=500,
        )
    )
    state = tmp_path / "state"
    log_path = tmp_path / "worker.log"
    log = log_path.open("a")
    writer = Writer(mariadb, seconds=14)
    writer.start()
    rng = random.Random(9)
    progress = []
    while writer.is_alive() or len(progress) < 10:
        before = out.stat().st_size if out.exists() else 0
        proc = start_worker(meshconnect(state, "run", str(config)), log_path)
        # Kill mid-stream by construction, however loaded the machine: once this worker has
        # delivered something (or, with nothing left to deliver, after a while), at a random
        # moment of what follows.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if (out.stat().st_size if out.exists() else 0) != before:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.05, 0.8))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        progress.append(len(events(out, partial=True)))
    writer.join()
    assert writer.error is None, writer.error
    mariadb.execute("INSERT INTO shop.zz_end VALUES (1)")
    proc = subprocess.Popen(meshconnect(state, "run", str(config)), stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(r["subject"] == "shop.zz_end" for r in events(out, partial=True)):
            break
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    records = events(out)
    state_by_table = replay(records)
    for t in TABLES:
        want = {
            k: {**row, "amount": f"{row['amount']:.2f}"}
            for k, row in table_rows(mariadb, t).items()
        }
        assert state_by_table.get(t) == want, t
    assert "shop.ignored" not in state_by_table
    ids = collections.Counter(r["id"] for r in records)
    assert [i for i, n in ids.items() if n > 1] == []
    changes = collections.Counter(
        (r["type"], r["subject"], r["partitionkey"], r["data"]["ver"])
        for r in records
        if r["subject"] in TABLES
    )
    assert [c for c, n in changes.items() if n > 1] == []
    assert writer.big >= 1
    mid_stream = [n for n in progress if n > 0]
    assert len(progress) >= 10 and len(mid_stream) >= 8, (progress, log_path.read_text()[-4000:])
