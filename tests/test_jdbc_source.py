"""The jdbc source on SQLite: every mode, positions and resume, conformance (the server
dialects: integration/test_jdbc_source_servers.py)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

from meshconnect import ConnectorContext
from meshconnect.connectors.jdbc.config import JdbcSourceConfig
from meshconnect.connectors.jdbc.source import JdbcSource
from meshconnect.testing import SourceConformance


def context(tmp_path: Path) -> ConnectorContext:
    return ConnectorContext("test", "src", logging.getLogger("test"), base_dir=str(tmp_path))


def source(tmp_path: Path, **config: Any) -> JdbcSource:
    config.setdefault("url", "sqlite:///in.db")
    return JdbcSource(JdbcSourceConfig(**config), context(tmp_path))


def seed(tmp_path: Path, n: int = 25) -> None:
    with sqlite3.connect(tmp_path / "in.db") as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT, price NUMERIC, "
            "blob BLOB, updated DATETIME)"
        )
        conn.execute("CREATE TABLE IF NOT EXISTS other (k TEXT PRIMARY KEY)")
        conn.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?, ?)",
            [
                (i, f"n{i}", "1.50", b"\x00\xff", f"2024-01-01 00:00:{i:02d}.000000")
                for i in range(1, n + 1)
            ],
        )
        conn.executemany("INSERT INTO other VALUES (?)", [("a|b",), ("c",)])


class TestBulkConformance(SourceConformance):
    def make_source(self, tmp_path: Path) -> JdbcSource:
        if not (tmp_path / "in.db").exists():
            seed(tmp_path)
        return source(tmp_path, tables=["*"], batch_size=4)


class TestIncrementingConformance(SourceConformance):
    def make_source(self, tmp_path: Path) -> JdbcSource:
        if not (tmp_path / "in.db").exists():
            seed(tmp_path)
        s = source(
            tmp_path,
            table="items",
            mode="incrementing",
            incrementing_column="id",
            batch_size=3,
            poll_interval=0.01,
        )
        s.bounded = True  # conformance needs an end: stop at the first empty poll
        return _EndWhenIdle(s)  # type: ignore[return-value]


class _EndWhenIdle:
    """Wraps an incremental source so that the first empty poll ends it (for the suite)."""

    bounded = True

    def __init__(self, inner: JdbcSource) -> None:
        self.inner = inner
        self.config = inner.config
        self.context = inner.context

    async def start(self, positions: Any) -> Any:
        return await self.inner.start(positions)

    async def poll(self) -> Any:
        self.inner.next_poll = 0
        batch = await self.inner.poll()
        return batch if batch is not None and batch.records else None

    async def stop(self) -> None:
        await self.inner.stop()

    def classify_error(self, exc: BaseException) -> Any:
        return None


async def drain(s: JdbcSource, polls: int = 50) -> tuple[list[Any], dict[str, Any]]:
    records: list[Any] = []
    positions: dict[str, Any] = {}
    for _ in range(polls):
        s.next_poll = 0
        batch = await s.poll()
        if batch is None:
            break
        records.extend(batch.records)
        positions.update(batch.positions)
    return records, positions


async def test_bulk_values_and_keys(tmp_path: Path) -> None:
    seed(tmp_path, 3)
    s = source(tmp_path, tables=["*"], exclude=["oth*"])
    await s.start({})
    records, positions = await drain(s)
    await s.stop()
    assert [r.data["id"] for r in records] == [1, 2, 3]
    first = records[0]
    assert first.data == {
        "id": 1,
        "name": "n1",
        "price": 1.5,
        "blob": "AP8=",
        "updated": "2024-01-01T00:00:01",
    }
    assert first.id == "items:1" and first.extensions["partitionkey"] == "1"
    assert first.subject == "items" and first.type == "jdbc.row"
    assert positions == {"items": {"rows": 3, "done": True}}


async def test_incrementing_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    seed(tmp_path, 10)
    cfg = {"table": "items", "mode": "incrementing", "incrementing_column": "id", "batch_size": 4}
    s = source(tmp_path, **cfg)
    await s.start({})
    first, positions = await drain(s)
    await s.stop()
    assert [r.data["id"] for r in first] == list(range(1, 11))
    with sqlite3.connect(tmp_path / "in.db") as conn:
        conn.execute("INSERT INTO items (id, name) VALUES (11, 'late'), (12, 'later')")
    again = source(tmp_path, **cfg)
    await again.start(positions)
    more, _ = await drain(again)
    await again.stop()
    assert [r.data["id"] for r in more] == [11, 12]


async def test_timestamp_modes(tmp_path: Path) -> None:
    for mode in ("timestamp", "timestamp+incrementing"):
        base = tmp_path / mode.replace("+", "_")
        base.mkdir()
        seed(base, 6)
        with sqlite3.connect(base / "in.db") as conn:  # ties on one timestamp
            conn.execute("UPDATE items SET updated = '2024-01-01 00:00:09.000000' WHERE id > 2")
        cfg = {
            "table": "items",
            "mode": mode,
            "timestamp_column": "updated",
            "incrementing_column": "id",
            "batch_size": 3,
        }
        s = source(base, **cfg)
        await s.start({})
        records, positions = await drain(s)
        await s.stop()
        assert sorted(r.data["id"] for r in records) == [1, 2, 3, 4, 5, 6], mode
        assert positions["items"]["ts"] == "2024-01-01T00:00:09"
        with sqlite3.connect(base / "in.db") as conn:
            conn.execute("UPDATE items SET updated = '2024-01-01 00:00:10' WHERE id = 1")
        again = source(base, **cfg)
        await again.start(positions)
        more, _ = await drain(again)
        await again.stop()
        assert [r.data["id"] for r in more] == [1], mode


async def test_query_mode(tmp_path: Path) -> None:
    seed(tmp_path, 5)
    s = source(
        tmp_path,
        query="SELECT id, name FROM items WHERE id % 2 = 1",
        mode="incrementing",
        incrementing_column="id",
        query_name="odd",
    )
    await s.start({})
    records, positions = await drain(s)
    await s.stop()
    assert [r.data for r in records] == [
        {"id": 1, "name": "n1"},
        {"id": 3, "name": "n3"},
        {"id": 5, "name": "n5"},
    ]
    assert positions == {"odd": {"id": 5}} and records[0].subject == "odd"


def test_numbers_inside_json_stay_exact_numbers() -> None:
    """A DECIMAL column is its exact text, but a number inside a JSON/array column is a
    number: 1.00000000000000000001 in a jsonb came out as a string (found by the jdbc trial)."""
    from decimal import Decimal

    from meshconnect.connectors.jdbc.source import json_safe

    value = {"f": Decimal("1.00000000000000000001"), "l": [Decimal("2.50")], "n": 3}
    assert json_safe(value) == {
        "f": Decimal("1.00000000000000000001"),
        "l": [Decimal("2.50")],
        "n": 3,
    }
    assert json_safe(Decimal("2.50")) == "2.50"


async def test_every_record_has_an_ingestion_time(tmp_path: Path) -> None:
    """Issue 9 item 7: every source sets `time`; a row has no event time the source knows, so
    each record carries the time it was read, in bulk, incrementing and timestamp modes."""
    import re

    seed(tmp_path, 3)
    configs: list[dict[str, Any]] = [
        {"tables": ["items"]},
        {"table": "items", "mode": "incrementing", "incrementing_column": "id"},
        {"table": "items", "mode": "timestamp", "timestamp_column": "updated"},
    ]
    for cfg in configs:
        s = source(tmp_path, **cfg)
        await s.start({})
        records, _ = await drain(s)
        await s.stop()
        assert len(records) == 3, cfg
        for record in records:
            assert record.time is not None, cfg
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", record.time), cfg
