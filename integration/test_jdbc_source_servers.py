"""The jdbc source on the machine's PostgreSQL and MariaDB (a database of their own): each
mode, restart without loss or duplicates, and a row committed late by a transaction held open
across a poll still arriving in timestamp mode thanks to `delay` (and lost without it)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from jdbc_support import my_url, pg_url, query

from meshconnect import ConnectorContext
from meshconnect.connectors.jdbc.config import JdbcSourceConfig
from meshconnect.connectors.jdbc.source import JdbcSource

__all__ = ["my_url", "pg_url"]

_n = iter(range(1_000_000))


@pytest.fixture(params=["postgresql", "mariadb"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.getfixturevalue("pg_url" if request.param == "postgresql" else "my_url")


def make(url: str, **config: Any) -> JdbcSource:
    context = ConnectorContext("it", "src", logging.getLogger("it"))
    return JdbcSource(JdbcSourceConfig(url=url, **config), context)


async def drain(s: JdbcSource, polls: int = 100) -> tuple[list[Any], dict[str, Any]]:
    records: list[Any] = []
    positions: dict[str, Any] = {}
    for _ in range(polls):
        s.next_poll = 0
        batch = await s.poll()
        if batch is None or (not batch.records and s.config.mode != "bulk"):
            break
        records.extend(batch.records)
        positions.update(batch.positions)
    return records, positions


def create(url: str) -> str:
    t = f"src_{next(_n)}"
    my = url.startswith("mysql")
    ident = "INT AUTO_INCREMENT PRIMARY KEY" if my else "SERIAL PRIMARY KEY"
    ts = "DATETIME(6)" if my else "TIMESTAMP(6)"
    price = "DECIMAL(30,10)"
    q = "`" if my else '"'
    query(url, f"CREATE TABLE {q}{t}{q} (id {ident}, name VARCHAR(20), price {price}, ts {ts})")
    return t


def insert(url: str, t: str, rows: list[tuple[str, str, str]]) -> None:
    q = "`" if url.startswith("mysql") else '"'
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.execute(
            sa.text(f"INSERT INTO {q}{t}{q} (name, price, ts) VALUES (:n, :p, :t)"),
            [{"n": n, "p": p, "t": ts} for n, p, ts in rows],
        )
    eng.dispose()


@pytest.mark.parametrize("mode", ["bulk", "incrementing", "timestamp", "timestamp+incrementing"])
async def test_each_mode_then_resume(url: str, mode: str) -> None:
    t = create(url)
    insert(
        url, t, [(f"n{i}", f"{i}.0000000001", f"2024-01-01 00:00:{i:02d}.5") for i in range(1, 8)]
    )
    cfg: dict[str, Any] = {"table": t, "mode": mode, "batch_size": 3}
    if mode != "bulk":  # (a cursor column the mode does not use is a config error)
        cfg["incrementing_column"] = "id"
    if "timestamp" in mode:
        cfg["timestamp_column"] = "ts"
    s = make(url, **cfg)
    await s.start({})
    records, positions = await drain(s)
    await s.stop()
    assert [r.data["id"] for r in records] == list(range(1, 8))
    assert records[0].data == {
        "id": 1,
        "name": "n1",
        "price": "1.0000000001",
        "ts": "2024-01-01T00:00:01.500000",
    }
    insert(url, t, [("late", "9.5", "2024-01-02 00:00:00")])
    again = make(url, **cfg)
    await again.start(positions)
    more, _ = await drain(again)
    await again.stop()
    if mode == "bulk":
        assert more == []  # done: a bulk read is bounded
    else:
        assert [r.data["name"] for r in more] == ["late"]


@pytest.mark.parametrize("delay", [3.0, 0.0])
async def test_a_row_committed_late_still_arrives_with_a_delay(url: str, delay: float) -> None:
    t = create(url)
    q = "`" if url.startswith("mysql") else '"'
    now = "NOW(6)" if url.startswith("mysql") else "clock_timestamp()"
    eng = sa.create_engine(url)
    held = eng.connect()
    held.begin()
    # The long transaction stamps its row now, and commits only after a poll.
    held.execute(sa.text(f"INSERT INTO {q}{t}{q} (name, ts) VALUES ('held', {now})"))
    time.sleep(0.05)
    query(url, f"INSERT INTO {q}{t}{q} (name, ts) VALUES ('early', {now})")
    s = make(url, table=t, mode="timestamp", timestamp_column="ts", delay=delay)
    await s.start({})
    seen: list[str] = []
    # Poll while the transaction is open, until the committed row is in (or, with the delay
    # covering it, nothing is yet: one poll then suffices to show it is held back).
    for _ in range(200):
        s.next_poll = 0
        batch = await s.poll()
        seen += [r.data["name"] for r in batch.records] if batch else []
        if delay or "early" in seen:
            break
        await asyncio.sleep(0.05)
    held.commit()
    held.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (len(seen) < 2 if delay else False):
        s.next_poll = 0
        batch = await s.poll()
        seen += [r.data["name"] for r in batch.records] if batch else []
        await asyncio.sleep(0.2)
    if not delay:  # once more after the commit: the position is already past it
        s.next_poll = 0
        batch = await s.poll()
        seen += [r.data["name"] for r in batch.records] if batch else []
    await s.stop()
    eng.dispose()
    if delay:
        assert sorted(seen) == ["early", "held"]
    else:
        assert seen == ["early"]  # Kafka Connect's loss, which `delay` prevents


async def test_mysql_time_beyond_a_day_and_set_come_as_mysql_writes_them(my_url: str) -> None:
    """SQLAlchemy's MySQL TIME type folded durations into a time of day (``838:59:59`` came out
    ``22:59:59``) and its SET type gave a Python set (``"{'a', 'b'}"``); the page promises
    MySQL's own values (found by the jdbc trial)."""
    t = f"tt_{next(_n)}"
    query(my_url, f"CREATE TABLE {t} (id INT PRIMARY KEY, tm TIME(6), s SET('a','b'))")
    query(
        my_url,
        f"INSERT INTO {t} VALUES (1,'838:59:59','a,b'),(2,'-01:00:00.5','b'),(3,'25:00:00',''),"
        "(4,'-838:59:59',NULL)",
    )
    s = make(my_url, mode="bulk", table=t)
    await s.start({})
    records, _ = await drain(s)
    await s.stop()
    got = sorted((r.data["id"], r.data["tm"], r.data["s"]) for r in records)
    assert got == [
        (1, "838:59:59", "a,b"),
        (2, "-01:00:00.500000", "b"),
        (3, "25:00:00", ""),
        (4, "-838:59:59", None),
    ]


@pytest.mark.parametrize("mode", ["bulk", "incrementing"])
async def test_postgresql_infinity_bc_dates_and_nan_floats_come_as_postgresql_writes_them(
    pg_url: str, mode: str
) -> None:
    """psycopg cannot load ``infinity``, a year BC or past 9999 into a ``datetime``: the fetch
    failed and the source failed for good on a legal row; and a float NaN made a record that
    JSON cannot hold (found by the verify-1112 trial). Such values come as PostgreSQL's text,
    the rows before them as usual."""
    t = f"inf_{next(_n)}"
    query(
        pg_url,
        f"CREATE TABLE {t} (id INT PRIMARY KEY, d DATE, ts TIMESTAMP, tz TIMESTAMPTZ, f FLOAT8)",
    )
    query(
        pg_url,
        f"INSERT INTO {t} VALUES (1, '2024-02-29', '2024-02-29 10:00', '2024-02-29 10:00Z', 1.5),"
        "(2, 'infinity', '-infinity', 'infinity', 'NaN'),"
        "(3, '0044-03-15 BC', '10000-01-01 00:00', '-infinity', 'Infinity'),"
        "(4, '2024-03-01', '2024-03-01 00:00', NULL, '-Infinity')",
    )
    cursor = {"incrementing_column": "id"} if mode != "bulk" else {}
    s = make(pg_url, table=t, mode=mode, batch_size=1, **cursor)
    await s.start({})
    records, _ = await drain(s)
    await s.stop()
    assert [r.data for r in records] == [
        {"id": 1, "d": "2024-02-29", "ts": "2024-02-29T10:00:00", "tz": "2024-02-29T10:00:00Z",
         "f": 1.5},
        {"id": 2, "d": "infinity", "ts": "-infinity", "tz": "infinity", "f": "NaN"},
        {"id": 3, "d": "0044-03-15 BC", "ts": "10000-01-01 00:00:00", "tz": "-infinity",
         "f": "Infinity"},
        {"id": 4, "d": "2024-03-01", "ts": "2024-03-01T00:00:00", "tz": None, "f": "-Infinity"},
    ]  # fmt: skip


async def test_timezone_says_what_zone_a_timestamp_column_is_written_in(url: str) -> None:
    """Values an application writes in UTC, read by a session whose time zone is
    America/New_York (the server's, as many are): `delay` was measured on the session's
    clock, five hours behind, so a row written a minute ago came five hours late (and east
    of UTC rows came before their `delay`). With `timezone: UTC` it comes now."""
    t = create(url)
    my = url.startswith("mysql")
    utc_now = "UTC_TIMESTAMP(6)" if my else "(now() AT TIME ZONE 'utc')"
    minute = "INTERVAL 1 MINUTE" if my else "INTERVAL '1 minute'"
    q = "`" if my else '"'
    query(url, f"INSERT INTO {q}{t}{q} (name, ts) VALUES ('recent', {utc_now} - {minute})")
    session = (
        url + "&init_command=SET+time_zone%3D%27-05%3A00%27"
        if my
        else url + "?options=-c%20TimeZone%3DAmerica/New_York"
    )
    cfg = {"table": t, "mode": "timestamp", "timestamp_column": "ts", "delay": 10.0}
    late = make(session, **cfg)
    await late.start({})
    assert (await drain(late))[0] == []  # the session's clock: not due for five hours
    await late.stop()
    s = make(session, timezone="UTC", **cfg)
    await s.start({})
    records, _ = await drain(s)
    await s.stop()
    assert [r.data["name"] for r in records] == ["recent"]
