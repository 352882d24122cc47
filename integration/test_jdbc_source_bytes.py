"""The jdbc source's batches bounded by bytes on the machine's PostgreSQL and MariaDB: a table
of multi-megabyte BYTEA/LONGBLOB rows is read in batches of about BATCH_BYTES (the row that
crosses it included), not ``batch_size`` rows of gigabytes, in every mode; every row arrives
exactly once, also across a restart from a position committed mid-way."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pytest
import sqlalchemy as sa
from jdbc_support import my_url, pg_url, query
from test_jdbc_source_servers import make, url

from meshconnect.connectors.jdbc.source import BATCH_BYTES

__all__ = ["my_url", "pg_url", "url"]

ROW = 4_000_000  # bytes of blob per row
ROWS = 12
#: The most rows a batch may hold: those below the bound, and the one that crosses it.
MOST = BATCH_BYTES // ROW + 1

_n = iter(range(1_000_000))


def create_blobs(url: str, rows: int = ROWS, ties: bool = False) -> str:
    """A table of ``rows`` rows of ROW random bytes each (ids 1.., a timestamp each; with
    ``ties`` rows 5 to 7 share one timestamp)."""
    t = f"blobs_{next(_n)}"
    my = url.startswith("mysql")
    ident = "INT AUTO_INCREMENT PRIMARY KEY" if my else "SERIAL PRIMARY KEY"
    blob = "LONGBLOB" if my else "BYTEA"
    ts = "DATETIME(6)" if my else "TIMESTAMP(6)"
    query(url, f"CREATE TABLE {t} (id {ident}, data {blob}, ts {ts})")
    eng = sa.create_engine(url)
    start = dt.datetime(2024, 1, 1)
    for i in range(1, rows + 1):
        second = 5 if ties and 5 <= i <= 7 else i
        with eng.begin() as conn:  # one row a statement: MariaDB's max_allowed_packet
            conn.execute(
                sa.text(f"INSERT INTO {t} (data, ts) VALUES (:d, :t)"),
                {"d": os.urandom(ROW), "t": start + dt.timedelta(seconds=second)},
            )
    eng.dispose()
    return t


def config(t: str, mode: str) -> dict[str, Any]:
    cfg: dict[str, Any] = {"table": t, "mode": mode, "batch_size": 1000}
    if mode in ("incrementing", "timestamp+incrementing"):
        cfg["incrementing_column"] = "id"
    if "timestamp" in mode:
        cfg["timestamp_column"] = "ts"
    return cfg


async def batches(cfg: dict[str, Any], url: str, positions: dict[str, Any], most: int = 100):
    """Polls a new source from ``positions`` until it has nothing more (at most ``most``
    batches with records); the records' ids of each batch, and the last position."""
    s = make(url, **cfg)
    await s.start(positions)
    out: list[list[int]] = []
    try:
        while len(out) < most:
            s.next_poll = 0
            batch = await s.poll()
            if batch is None or not batch.records:
                if batch is None or cfg["mode"] != "bulk":
                    break
            else:
                out.append([r.data["id"] for r in batch.records])
            positions = {**positions, **batch.positions}
    finally:
        await s.stop()
    return out, positions


@pytest.mark.parametrize("mode", ["bulk", "incrementing", "timestamp", "timestamp+incrementing"])
async def test_batches_of_large_rows_stop_at_the_byte_bound(url: str, mode: str) -> None:
    t = create_blobs(url)
    got, _ = await batches(config(t, mode), url, {})
    assert max(map(len, got)) <= MOST, got
    assert sorted(i for b in got for i in b) == list(range(1, ROWS + 1))


@pytest.mark.parametrize("mode", ["bulk", "incrementing", "timestamp+incrementing"])
async def test_a_restart_from_a_position_cut_by_bytes_reads_each_row_once(
    url: str, mode: str
) -> None:
    t = create_blobs(url)
    first, positions = await batches(config(t, mode), url, {}, most=1)
    rest, _ = await batches(config(t, mode), url, positions)
    ids = [i for b in first + rest for i in b]
    assert len(first[0]) < ROWS
    assert sorted(ids) == list(range(1, ROWS + 1))


async def test_timestamp_mode_cut_by_bytes_keeps_tied_rows_together(url: str) -> None:
    """Rows 5 to 7 share a timestamp: the bound falls among them, and the batch ends before
    them (the position cannot say "half of this timestamp"), so none is lost."""
    t = create_blobs(url, ties=True)
    got, _ = await batches(config(t, "timestamp"), url, {})
    assert sorted(i for b in got for i in b) == list(range(1, ROWS + 1))
    assert any(b[:3] == [5, 6, 7] for b in got), got
    assert max(map(len, got)) <= MOST, got
