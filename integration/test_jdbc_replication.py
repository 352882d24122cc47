"""MariaDB → PostgreSQL replication through the mesh, with the worker SIGKILLed at random
moments mid-stream: a private binlog MariaDB (3 tables, one with a composite key; inserts,
updates, deletes, primary-key changes, an ADD COLUMN midway; 50,000+ row changes), the
`canal` source in each format, the `jdbc` sink into a fresh PostgreSQL database. Afterwards
the PostgreSQL tables equal the MariaDB tables row for row.

`canal` format: the target tables are auto-created from Canal's `mysqlType`, with
`exactly_once`; `debezium` and `row`: the tables exist beforehand (those formats carry no
column types), effectively once by upsert."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from canal_support import DECODER, mariadb
from jdbc_support import pg_replica
from mariadb import MariaDB

from conftest import meshconnect, start_worker

__all__ = ["mariadb"]

CHANGES = 50_000
KILLS = 5

PG_TABLES = {
    "t1": "id INTEGER PRIMARY KEY, ver NUMERIC(20,0) NOT NULL, note VARCHAR(40), "
    "amount NUMERIC(12,2), at TIMESTAMP(6)",
    "t2": "a INTEGER NOT NULL, b VARCHAR(20) NOT NULL, ver BIGINT NOT NULL, note TEXT, "
    "PRIMARY KEY (a, b)",
    "t3": "id BIGINT PRIMARY KEY, ver BIGINT NOT NULL, flag SMALLINT, d DATE",
    "zz_end": "id INTEGER PRIMARY KEY",
}


def setup(server: MariaDB, db: str) -> None:
    server.execute(f"CREATE DATABASE {db}")
    server.execute(
        f"CREATE TABLE {db}.t1 (id INT PRIMARY KEY, ver BIGINT UNSIGNED NOT NULL, "
        "note VARCHAR(40), amount DECIMAL(12,2), at DATETIME(6))",
        f"CREATE TABLE {db}.t2 (a INT NOT NULL, b VARCHAR(20) NOT NULL, ver BIGINT NOT NULL, "
        "note TEXT, PRIMARY KEY (a, b))",
        f"CREATE TABLE {db}.t3 (id BIGINT PRIMARY KEY, ver BIGINT NOT NULL, flag TINYINT, d DATE)",
        f"CREATE TABLE {db}.zz_end (id INT PRIMARY KEY)",
        f"INSERT INTO {db}.t1 SELECT seq, seq, CONCAT('seed ', seq), seq / 4, "
        "'2024-01-01 00:00:00.123456' FROM seq_1_to_2000",
        f"INSERT INTO {db}.t2 SELECT seq DIV 3, CONCAT('k|', seq MOD 3), seq, 'seed' "
        "FROM seq_3_to_2002",
        f"INSERT INTO {db}.t3 SELECT seq, seq, seq MOD 2, '2024-02-29' FROM seq_1_to_2000",
        database=db,
    )


class Writer(threading.Thread):
    """Mixed transactions over ~``seconds`` until ``CHANGES`` row changes are written (an ADD
    COLUMN on t1 halfway), then more, slower, until ``stop`` is set: the worker always has
    something to do when it is killed."""

    def __init__(self, server: MariaDB, db: str, seconds: float) -> None:
        super().__init__(daemon=True)
        self.server, self.db, self.seconds = server, db, seconds
        self.changes = 0
        self.ver = 10_000_000
        self.next_id = {"t1": 2001, "t3": 2001, "t2": 1000}
        self.altered = False
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc

    def _run(self) -> None:
        rng = random.Random(3)
        conn = pymysql.connect(**self.server.connect_args(self.db))
        cur = conn.cursor()
        start = time.monotonic()
        while self.changes < CHANGES or not self.stop.is_set():
            # pace: spread the changes over `seconds`, then a trickle
            due = start + self.seconds * self.changes / CHANGES
            wait = due - time.monotonic()
            if wait > 0:  # (read once: a second reading may already be past `due`)
                time.sleep(min(0.05, wait))
            if self.changes >= CHANGES:
                time.sleep(0.02)
            if not self.altered and self.changes >= CHANGES // 2:
                cur.execute("ALTER TABLE t1 ADD COLUMN extra VARCHAR(20) AFTER note")
                self.altered = True
            done = self.changes
            try:
                cur.execute("BEGIN")
                for _ in range(rng.randint(1, 4)):
                    self._one(cur, rng)
                cur.execute("COMMIT")
            except pymysql.err.OperationalError as exc:
                if exc.args[0] not in (1205, 1213):  # lock wait timeout, deadlock: again
                    raise
                cur.execute("ROLLBACK")
                self.changes = done
        conn.close()

    def _one(self, cur: Any, rng: random.Random) -> None:
        self.ver += 100
        v = self.ver
        t = rng.choice(["t1", "t2", "t3"])
        op = rng.random()
        if t == "t2":
            if op < 0.4:
                a = self.next_id["t2"]
                self.next_id["t2"] += 1
                n = rng.randint(1, 20)
                values = ",".join(f"({a}, 'k{i}', {v + i}, 'n{v}')" for i in range(n))
                cur.execute(f"INSERT INTO t2 VALUES {values}")
            elif op < 0.75:
                a = rng.randint(1, self.next_id["t2"])
                cur.execute(
                    f"UPDATE t2 SET ver = {v}, note = 'u\\\\{v}' WHERE a BETWEEN {a} AND {a + 5}"
                )
            elif op < 0.9:
                a = rng.randint(1, self.next_id["t2"])
                cur.execute(f"DELETE FROM t2 WHERE a = {a}")
            else:  # a change of the composite key
                a = rng.randint(1, self.next_id["t2"])
                cur.execute(
                    f"UPDATE IGNORE t2 SET b = CONCAT(b, 'x'), ver = {v} WHERE a = {a} LIMIT 1"
                )
        else:
            hi = self.next_id[t]
            if op < 0.35:
                n = rng.randint(1, 30)
                self.next_id[t] += n
                if t == "t1":
                    extra = ", 'e'" if self.altered else ""
                    cols = "(id, ver, note, amount, at" + (", extra)" if self.altered else ")")
                    values = ",".join(
                        f"({hi + i}, {v + i}, 'n \"{v}\"', {i}.25, NOW(6){extra})" for i in range(n)
                    )
                    cur.execute(f"INSERT INTO t1 {cols} VALUES {values}")
                else:
                    values = ",".join(f"({hi + i}, {v + i}, {i % 3}, CURDATE())" for i in range(n))
                    cur.execute(f"INSERT INTO t3 VALUES {values}")
            elif op < 0.75:
                lo = rng.randint(1, hi)
                if t == "t1":
                    extra = ", extra = 'x'" if self.altered else ""
                    cur.execute(
                        f"UPDATE t1 SET ver = {v} + id - {lo}, amount = amount + 1{extra}, "
                        f"note = NULL WHERE id >= {lo} AND id < {lo + 20}"
                    )
                else:
                    cur.execute(
                        f"UPDATE t3 SET ver = {v} + id - {lo}, flag = NULL "
                        f"WHERE id >= {lo} AND id < {lo + 20}"
                    )
            elif op < 0.9:
                lo = rng.randint(1, hi)
                cur.execute(f"DELETE FROM {t} WHERE id >= {lo} AND id < {lo + 3}")
            else:  # a primary-key change
                old = rng.randint(1, hi)
                self.next_id[t] += 1
                cur.execute(f"UPDATE {t} SET id = {hi}, ver = {v} WHERE id = {old}")
        self.changes += max(cur.rowcount, 0)


def norm(v: Any) -> Any:
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() and v.as_tuple().exponent >= 0 else str(v)
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    return v


def my_rows(server: MariaDB, db: str, table: str, key: tuple[str, ...]) -> dict[Any, Any]:
    conn = pymysql.connect(**server.connect_args(db), cursorclass=pymysql.cursors.DictCursor)
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {table}")
        rows = cur.fetchall()
    conn.close()
    return {tuple(r[k] for k in key): {k: norm(v) for k, v in r.items()} for r in rows}


def pg_rows(dsn: str, table: str, key: tuple[str, ...]) -> dict[Any, Any]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(f'SELECT * FROM "{table}"')
        rows = cur.fetchall()
    return {tuple(r[k] for k in key): {k: norm(v) for k, v in r.items()} for r in rows}


def pg_progress(dsn: str) -> int:
    """A number that changes whenever the target changes (sum of the ver columns)."""
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            total = 0
            for t in ("t1", "t2", "t3"):
                if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0]:
                    row = conn.execute(f'SELECT coalesce(sum(ver), 0), count(*) FROM "{t}"')
                    s, n = row.fetchone()
                    total += int(s) + int(n)
            return total
    except psycopg.Error:
        return -1


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["canal", "debezium", "row"])
def test_replication_survives_sigkills(tmp_path: Path, mariadb: MariaDB, fmt: str) -> None:
    db = f"rep_{fmt}"
    setup(mariadb, db)
    with pg_replica() as (url, dsn):
        _run(tmp_path, mariadb, db, url, dsn, fmt)


def _run(tmp_path: Path, server: MariaDB, db: str, url: str, dsn: str, fmt: str) -> None:
    if fmt != "canal":
        with psycopg.connect(dsn, autocommit=True) as conn:
            for t, cols in PG_TABLES.items():
                conn.execute(f'CREATE TABLE "{t}" ({cols})')
    sink: dict[str, Any] = {"url": url, "ddl": "apply"}
    if fmt == "canal":
        sink.update(auto_create=True, exactly_once=True)
    config = tmp_path / "replicate.yaml"
    config.write_text(
        json.dumps(
            {
                "pipelines": [
                    {
                        "name": "replicate",
                        "source": {
                            "connector": "canal",
                            "config": {
                                "host": server.host,
                                "port": server.port,
                                "user": server.user,
                                "server_id": 1100 + len(fmt),
                                "decoder": DECODER,
                                "heartbeat_interval": 1,
                                "include": [f"{db}\\..*"],
                                "format": fmt,
                                "ddl": "tables",
                                "batch_events": 200,
                            },
                        },
                        "topic": f"cdc_{fmt}",
                        "sinks": [{"name": "pg", "connector": "jdbc", "config": sink}],
                    }
                ]
            }
        )
    )
    state = tmp_path / "state"
    log_path = tmp_path / "worker.log"
    writer = Writer(server, db, seconds=12)
    writer.start()
    rng = random.Random(11)
    kills_mid_stream = 0
    kills = 0
    while (kills_mid_stream < KILLS or writer.changes < CHANGES) and writer.is_alive():
        before = pg_progress(dsn)
        proc = start_worker(meshconnect(state, "run", str(config)), log_path)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if pg_progress(dsn) != before:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.05, 0.6))
        moved = pg_progress(dsn) != before
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        kills_mid_stream += moved
        assert kills < 40, log_path.read_text()[-3000:]
    writer.stop.set()
    writer.join()
    assert writer.error is None, writer.error
    assert writer.changes >= CHANGES and writer.altered
    server.execute(f"INSERT INTO {db}.zz_end VALUES (1)")
    with log_path.open("ab") as log:
        proc = subprocess.Popen(meshconnect(state, "run", str(config)), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 180
        done = False
        while time.monotonic() < deadline and not done:
            try:
                with psycopg.connect(dsn) as conn:
                    done = bool(conn.execute("SELECT to_regclass('zz_end')").fetchone()[0]) and (
                        conn.execute("SELECT count(*) FROM zz_end").fetchone()[0] == 1
                    )
            except psycopg.Error:
                pass
            time.sleep(0.3)
        assert done, log_path.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    keys = {"t1": ("id",), "t2": ("a", "b"), "t3": ("id",)}
    for t, key in keys.items():
        want, got = my_rows(server, db, t, key), pg_rows(dsn, t, key)
        assert len(want) > 1000
        diff = [k for k in set(want) | set(got) if want.get(k) != got.get(k)]
        assert not diff, (t, [(want.get(k), got.get(k)) for k in diff[:5]])
    assert kills >= KILLS and kills_mid_stream >= KILLS, (kills, kills_mid_stream)
