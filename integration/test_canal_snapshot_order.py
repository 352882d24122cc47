"""A chunked snapshot decides, for each binlog change during a chunk's window, whether its key
was already read, is in the chunk, or comes later — in the server's order of the key, not
Python's. Keys whose orders differ: strings under a case-insensitive collation (``'B' < 'a'``
in Python, ``'a' < 'B'`` to the server), UUIDs (MariaDB sorts time-based ones by their swapped
segments), INET6 (by the 16 bytes, not the text), ENUM (by the member's index). Writers change
rows all over the key range while the snapshot runs; the replayed output equals the table."""

from __future__ import annotations

import base64
import datetime as dt
import random
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymysql
import pytest
from canal_support import events, mariadb, pipeline
from mariadb import MariaDB

from conftest import meshconnect
from meshconnect.connectors.canal.formats import spec_text

__all__ = ["mariadb"]

ROWS = 6000


def _ci(i: int) -> tuple[Any, ...]:
    return (("a" if i % 2 else "B") + f"{i:06d}",)


def _latin1(i: int) -> tuple[Any, ...]:
    return (["z", "ä", "A", "å", "Ö", "o"][i % 6] + f"{i:06d}",)


def _accents(i: int) -> tuple[Any, ...]:
    return (["e", "É", "f", "Z", "ä"][i % 5] + f"{i:06d} ",)


_rng = random.Random(5)


def _uuid(i: int) -> tuple[Any, ...]:
    u = (
        uuid.uuid1(node=i, clock_seq=i % 16000)
        if i % 2
        else uuid.UUID(int=_rng.getrandbits(128), version=4)
    )
    return (str(u),)


def _inet6(i: int) -> tuple[Any, ...]:
    if i % 3 == 0:
        return (f"::ffff:10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",)
    if i % 3 == 1:
        return (f"2001:db8::{i >> 16 & 0xFFFF:x}:{i & 0xFFFF:x}",)
    return (f"::{i >> 16 & 0xFFFF:x}:{i & 0xFFFF:x}",)


def _bin_pad(i: int) -> tuple[Any, ...]:
    # utf8mb4_bin is PAD SPACE: 'a\t' sorts before 'a' (compared as 'a ') and after it in Python.
    return ("a" + ["\t", "", " x", "\u00e9", "A"][i % 5] + f"{i:06d}",)


def _varbinary(i: int) -> tuple[Any, ...]:
    return (bytes([i % 7 * 40, 0xFF - i % 3]) + i.to_bytes(4, "big"),)


def _datetime6(i: int) -> tuple[Any, ...]:
    return (f"2024-01-01 00:00:{i % 60:02d}.{i:06d}",)


def _enum(i: int) -> tuple[Any, ...]:
    return (["z", "m", "a"][i % 3], i)


KINDS: dict[str, tuple[str, str, Callable[[int], tuple[Any, ...]]]] = {
    # name: (key column definitions, primary key, key maker)
    "varchar_ci": ("k VARCHAR(20) COLLATE utf8mb4_general_ci", "k", _ci),
    "varchar_accents": ("k VARCHAR(20) COLLATE utf8mb4_unicode_ci", "k", _accents),
    "latin1_swedish_ci": ("k VARCHAR(20) CHARACTER SET latin1", "k", _latin1),
    "uuid": ("k UUID", "k", _uuid),
    "varchar_bin": ("k VARCHAR(20) COLLATE utf8mb4_bin", "k", _bin_pad),
    "varbinary": ("k VARBINARY(8)", "k", _varbinary),
    "datetime6": ("k DATETIME(6)", "k", _datetime6),
    "inet6": ("k INET6", "k", _inet6),
    "enum": ("e ENUM('z','m','a'), n INT", "e, n", _enum),
}


class Writer(threading.Thread):
    """Updates, inserts and deletes all over the key range; each change a fresh ``ver``."""

    def __init__(self, server: MariaDB, kind: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.server, self.kind, self.stop = server, kind, stop
        self.error: BaseException | None = None
        self.changes = 0

    def run(self) -> None:
        try:
            _, pk, make = KINDS[self.kind]
            cols = [c.strip() for c in pk.split(",")]
            where = " AND ".join(f"{c} = %s" for c in cols)
            rng = random.Random(len(self.kind))
            conn = pymysql.connect(**self.server.connect_args())
            cur = conn.cursor()
            marker = 10_000_000
            while not self.stop.is_set():
                marker += 1
                i = rng.randint(1, ROWS)
                op = rng.random()
                if op < 0.6:
                    cur.execute(f"UPDATE o.t SET ver = %s WHERE {where}", (marker, *make(i)))
                elif op < 0.8:
                    key = make(ROWS + marker)
                    cur.execute(
                        f"INSERT IGNORE INTO o.t VALUES ({', '.join(['%s'] * len(key))}, %s)",
                        (*key, marker),
                    )
                else:
                    cur.execute(f"DELETE FROM o.t WHERE {where}", make(i))
                self.changes += 1
                time.sleep(0.001)
            conn.close()
        except BaseException as exc:
            self.error = exc


def _text(value: Any) -> str:
    """A key value as the records' ``partitionkey`` writes it."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return spec_text(str(value))


def _server_rows(server: MariaDB, pk: str) -> dict[str, int]:
    cols = [c.strip() for c in pk.split(",")]
    conn = pymysql.connect(**server.connect_args())
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT {', '.join(cols)}, ver FROM o.t")
            return {"|".join(_text(v) for v in row[:-1]): row[-1] for row in cur.fetchall()}
    finally:
        conn.close()


@pytest.mark.parametrize("kind", list(KINDS))
def test_snapshot_regions_follow_the_servers_key_order(
    tmp_path: Path, mariadb: MariaDB, kind: str
) -> None:
    columns, pk, make = KINDS[kind]
    mariadb.execute("DROP DATABASE IF EXISTS o", "CREATE DATABASE o")
    mariadb.execute(f"CREATE TABLE o.t ({columns}, ver BIGINT NOT NULL, PRIMARY KEY ({pk}))")
    conn = pymysql.connect(**mariadb.connect_args())
    with conn.cursor() as cur:
        rows = [(*make(i), i) for i in range(1, ROWS + 1)]
        marks = ", ".join(["%s"] * len(rows[0]))
        cur.executemany(f"INSERT INTO o.t VALUES ({marks})", rows)
    conn.close()
    out = tmp_path / "out.jsonl"
    config = tmp_path / "o.yaml"
    config.write_text(
        pipeline(mariadb, out, include=["o\\.t"], format="row", chunk_size=100, ddl="none")
    )
    stop = threading.Event()
    writer = Writer(mariadb, kind, stop)
    writer.start()
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        before = writer.changes
        proc = subprocess.Popen(
            meshconnect(tmp_path / "state", "run", str(config)), stdout=log, stderr=log
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and "snapshot done" not in log_path.read_text():
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        during = writer.changes - before
        # Changes while the worker started and snapshotted, then streamed ones: a busy machine
        # can snapshot the 6,000 rows in fewer writer round trips than the total asks for.
        while time.monotonic() < deadline and writer.changes <= 200 and writer.is_alive():
            time.sleep(0.05)
        stop.set()
        writer.join()
        end = make(10**8)
        conn = pymysql.connect(**mariadb.connect_args())
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO o.t VALUES ({', '.join(['%s'] * len(end))}, -1)", end)
        conn.close()
        while time.monotonic() < deadline and proc.poll() is None:
            if any((r.get("data") or {}).get("ver") == -1 for r in events(out, partial=True)):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    assert writer.error is None, writer.error
    assert during > 0 and writer.changes > 200, (during, writer.changes)
    replayed: dict[str, int] = {}
    for r in events(out):
        if r["type"] == "mysql.delete":
            replayed.pop(r["partitionkey"], None)
        elif r["type"] != "mysql.ddl":
            replayed[r["partitionkey"]] = r["data"]["ver"]
    want = _server_rows(mariadb, pk)
    missing = {k: v for k, v in want.items() if replayed.get(k) != v}
    extra = set(replayed) - set(want)
    assert (len(missing), len(extra)) == (0, 0), (list(missing.items())[:5], list(extra)[:5])
