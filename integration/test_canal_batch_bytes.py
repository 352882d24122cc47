"""The canal source's batches bounded by bytes, on both binlog decoders: a transaction of
multi-megabyte LONGBLOB rows is streamed, and a table of them snapshotted, in batches of about
BATCH_BYTES (the event or row that crosses it included), not ``batch_events`` events or
``chunk_size`` rows of gigabytes; every row arrives exactly once, also across a restart from
a position committed mid-way (inside the transaction, inside the table)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from typing import Any

import pymysql
import pytest
from canal_support import end_positions, mariadb, transaction
from mariadb import MariaDB

from meshconnect.api import ConnectorContext
from meshconnect.connectors.canal.config import CanalSourceConfig
from meshconnect.connectors.canal.events import BATCH_BYTES, RowsEvent
from meshconnect.connectors.canal.source import CanalSource, reader_class

__all__ = ["mariadb"]

ROW = 4_000_000  # bytes of blob per row
ROWS = 12
#: The most rows a batch may hold: those below the bound, and the one that crosses it.
MOST = BATCH_BYTES // ROW + 1

_n = iter(range(1_000_000))


def blobs(server: MariaDB, db: str) -> None:
    """``db.blobs``: ROWS rows of ROW random bytes, written in one transaction."""
    conn = pymysql.connect(**server.connect_args())
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
        cur.execute(f"CREATE TABLE IF NOT EXISTS {db}.blobs (id INT PRIMARY KEY, data LONGBLOB)")
        transaction(
            cur,
            lambda c: [
                c.execute(f"INSERT INTO {db}.blobs VALUES (%s, %s)", (i, os.urandom(ROW)))
                for i in range(1, ROWS + 1)
            ],
        )
    conn.close()


def poll(
    server: MariaDB, positions: dict[str, Any], rows: int, **config: Any
) -> tuple[list[list[int]], dict[str, Any]]:
    """A canal source from ``positions`` polled until it handed out ``rows`` rows (or ended):
    the ids of each batch's rows, and the last positions."""
    settings = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "server_id": 2001,
        "heartbeat_interval": 1,
        "format": "row",
        "ddl": "none",
        **config,
    }

    async def go() -> tuple[list[list[int]], dict[str, Any]]:
        source = CanalSource(
            CanalSourceConfig(**settings),
            ConnectorContext("test", "canal", logging.getLogger("canal-test")),
        )
        out: list[list[int]] = []
        reached = dict(positions)
        try:
            await source.start(reached)
            deadline = time.monotonic() + 120
            while sum(map(len, out)) < rows and time.monotonic() < deadline:
                batch = await source.poll()
                if batch is None:
                    break
                if batch.records:
                    out.append([r.data["id"] for r in batch.records])
                reached.update(batch.positions)
        finally:
            await source.stop()
        return out, reached

    return asyncio.run(go())


@pytest.fixture(params=["library", "fast"])
def decoder(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_transaction_of_large_rows_streams_in_batches_of_the_byte_bound(
    mariadb: MariaDB, decoder: str
) -> None:
    db = f"bb_stream_{next(_n)}"
    start = end_positions(mariadb)
    blobs(mariadb, db)
    config = {"include": [f"{db}\\..*"], "snapshot": "never", "decoder": decoder}
    got, _ = poll(mariadb, start, ROWS, **config)
    assert max(map(len, got)) <= MOST, got
    assert sorted(i for b in got for i in b) == list(range(1, ROWS + 1))


def test_a_restart_inside_the_transaction_reads_each_row_once(
    mariadb: MariaDB, decoder: str
) -> None:
    db = f"bb_restart_{next(_n)}"
    start = end_positions(mariadb)
    blobs(mariadb, db)
    config = {"include": [f"{db}\\..*"], "snapshot": "never", "decoder": decoder}
    first, cut = poll(mariadb, start, 1, **config)
    assert len(first) == 1 and len(first[0]) <= MOST  # the position is inside the transaction
    rest, _ = poll(mariadb, cut, ROWS - len(first[0]), **config)
    assert sorted(i for b in first + rest for i in b) == list(range(1, ROWS + 1))


def test_a_snapshot_of_large_rows_ends_its_chunks_at_the_byte_bound(
    mariadb: MariaDB, decoder: str
) -> None:
    db = f"bb_snap_{next(_n)}"
    blobs(mariadb, db)
    config = {"include": [f"{db}\\..*"], "snapshot": "initial_only", "decoder": decoder}
    got, _ = poll(mariadb, {}, ROWS, **config)
    assert max(map(len, got)) <= MOST, got
    assert sorted(i for b in got for i in b) == list(range(1, ROWS + 1))


def test_a_snapshot_restarted_after_a_chunk_cut_by_bytes_reads_each_row_once(
    mariadb: MariaDB, decoder: str
) -> None:
    db = f"bb_snaprestart_{next(_n)}"
    blobs(mariadb, db)
    config = {"include": [f"{db}\\..*"], "snapshot": "initial_only", "decoder": decoder}
    first, cut = poll(mariadb, {}, 1, **config)
    assert len(first) == 1 and len(first[0]) <= MOST
    rest, _ = poll(mariadb, cut, ROWS - len(first[0]), **config)
    assert sorted(i for b in first + rest for i in b) == list(range(1, ROWS + 1))


def test_the_library_reader_holds_at_most_the_byte_bound_of_events(mariadb: MariaDB) -> None:
    """The library decoder's thread queues events ahead of the reads: it stops once they
    weigh BATCH_BYTES, so a source that polls slowly holds a few 4 MB rows, not thousands."""
    db = f"bb_queue_{next(_n)}"
    start = end_positions(mariadb)["binlog"]
    blobs(mariadb, db)
    reader = reader_class("library")(
        {"host": mariadb.host, "port": mariadb.port, "user": mariadb.user, "password": ""},
        server_id=2002,
        log_file=start["file"],
        log_pos=start["pos"],
        heartbeat_period=1.0,
    )
    try:
        queued, deadline = -1, time.monotonic() + 60
        while time.monotonic() < deadline:  # until the thread stopped queueing for 1 s
            time.sleep(1.0)
            if reader._queue.qsize() == queued:
                break
            queued = reader._queue.qsize()
        held = reader._queued  # what the queued events weigh
        events = reader.read(100_000, 1.0)
    finally:
        reader.close()
    assert held < BATCH_BYTES + 2 * ROW
    assert 0 < sum(isinstance(e, RowsEvent) for e in events) <= MOST


def test_the_fast_reader_hands_over_at_most_the_byte_bound_of_events(mariadb: MariaDB) -> None:
    """Everything the transaction wrote already received (the socket drained into the
    reader's buffer first, so the test does not depend on how fast the server sends): one
    read still hands over a few 4 MB rows, not all of them."""
    db = f"bb_fast_{next(_n)}"
    start = end_positions(mariadb)["binlog"]
    blobs(mariadb, db)
    reader = reader_class("fast")(
        {"host": mariadb.host, "port": mariadb.port, "user": mariadb.user, "password": ""},
        server_id=2003,
        log_file=start["file"],
        log_pos=start["pos"],
        heartbeat_period=1.0,
    )
    try:
        deadline = time.monotonic() + 60
        while len(reader._buf) < ROWS * ROW and time.monotonic() < deadline:
            reader._recv(1.0)
        events = reader.read(100_000, 1.0)
    finally:
        reader.close()
    assert 0 < sum(isinstance(e, RowsEvent) for e in events) <= MOST


def test_the_library_reader_leaves_no_events_to_the_cyclic_collector(mariadb: MariaDB) -> None:
    """pymysqlreplication's event and its packet refer to each other; left so, every 4 MB
    event read stays in memory until the cyclic collector runs, which counts objects, not
    bytes (a worker streaming 200 rows of 8 MB peaked at 3.7 GB). Read with the collector
    off: the events handed over are freed as soon as they are dropped."""
    from pymysqlreplication import row_event

    db = f"bb_cycle_{next(_n)}"
    start = end_positions(mariadb)["binlog"]
    blobs(mariadb, db)
    gc.collect()
    gc.disable()
    try:
        reader = reader_class("library")(
            {"host": mariadb.host, "port": mariadb.port, "user": mariadb.user, "password": ""},
            server_id=2004,
            log_file=start["file"],
            log_pos=start["pos"],
            heartbeat_period=1.0,
        )
        try:
            rows, deadline = 0, time.monotonic() + 60
            while rows < ROWS and time.monotonic() < deadline:
                rows += sum(isinstance(e, RowsEvent) for e in reader.read(100, 1.0))
            alive = sum(isinstance(o, row_event.RowsEvent) for o in gc.get_objects())
        finally:
            reader.close()
    finally:
        gc.enable()
    assert rows == ROWS
    assert alive <= 1
