"""The jdbc source on SQLite: every mode, positions and resume, conformance (the server
dialects: integration/test_jdbc_source_servers.py)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from meshconnect import ConfigError, ConnectorContext
from meshconnect.connectors.jdbc.config import JdbcSourceConfig
from meshconnect.connectors.jdbc.source import BATCH_BYTES, JdbcSource, fetch_bounded
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

    def input_ids(self, tmp_path: Path) -> list[str]:
        """``<table>:<primary key>``: the tables in name order, each in key order."""
        return [*(f"items:{i}" for i in range(1, 26)), "other:a|b", "other:c"]


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

    def input_ids(self, tmp_path: Path) -> list[str]:
        return [f"items:{i}" for i in range(1, 26)]


class _EndWhenIdle:
    """Wraps an incremental source so that the first empty poll ends it (for the suite)."""

    bounded = True

    def __init__(self, inner: JdbcSource) -> None:
        self.inner = inner
        self.config = inner.config
        self.context = inner.context

    async def start(self, positions: Any) -> Any:
        return await self.inner.start(positions)

    def position_problem(self, partition: str, position: Any) -> str | None:
        return self.inner.position_problem(partition, position)

    async def end_positions(self) -> Any:
        return await self.inner.end_positions()

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


async def test_a_bulk_read_reports_its_progress(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11 asks for a progress bar on bulk loads (a log line when not on a terminal)."""
    seed(tmp_path, 25)
    caplog.set_level(logging.INFO)
    s = source(tmp_path, table="items", batch_size=10)
    await s.start({})
    records, _ = await drain(s)
    await s.stop()
    assert len(records) == 25
    assert any("jdbc bulk items" in m and "25/25 rows" in m for m in caplog.messages), caplog.text


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


async def test_a_query_as_a_psql_user_writes_it(tmp_path: Path) -> None:
    """A query ending in `;`, or in a `--` comment, broke the subquery it is wrapped in
    (``(… ;) AS q``, ``(… -- c) AS q``): a syntax error, the source failing for good (found by
    the verify-1112 trial)."""
    seed(tmp_path, 5)
    s = source(
        tmp_path,
        query="SELECT id, name FROM items\nWHERE id % 2 = 1 -- the odd ones\n;  \n",
        mode="incrementing",
        incrementing_column="id",
    )
    await s.start({})
    records, _ = await drain(s)
    await s.stop()
    assert [r.data["id"] for r in records] == [1, 3, 5]


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


async def _records_of(tmp_path: Path, **config: Any) -> list[Any]:
    s = source(tmp_path, url="sqlite:///in db#1.db", **config)
    await s.start({})
    records: list[Any] = []
    try:
        for _ in range(5):
            batch = await s.poll()
            if batch is None:
                break
            records += batch.records
    finally:
        await s.stop()
    return records


@pytest.mark.parametrize("mode", ["bulk", "incrementing"])
async def test_names_and_keys_a_string_cannot_hold_make_valid_records(
    tmp_path: Path, mode: str
) -> None:
    """A database path with a space and a ``#``, a table name and keys holding a tab: the
    records are valid CloudEvents (a percent-encoded source, names and keys spelled with
    ``\\u0009``, as the canal source spells them), distinct keys distinct (issue 18 item 7)."""
    from meshconnect.eventrules import attribute_problems

    with sqlite3.connect(tmp_path / "in db#1.db") as conn:
        conn.execute('CREATE TABLE "t\tab" (id INTEGER PRIMARY KEY, k TEXT UNIQUE)')
        conn.execute('CREATE TABLE "c" (a TEXT, b TEXT, n INTEGER, PRIMARY KEY (a, b))')
        conn.execute('CREATE TABLE "s" (k TEXT PRIMARY KEY, n INTEGER)')
        conn.execute("INSERT INTO \"t\tab\" VALUES (1, 'x')")
        conn.executemany('INSERT INTO "c" VALUES (?, ?, ?)', [("a\tb", "c|d", 1), ("a", "", 2)])
        conn.executemany(
            'INSERT INTO "s" VALUES (?, ?)', [("k\t1", 1), ("k\\u00091", 2), ("plain", 3)]
        )
    extra: dict[str, Any] = {"tables": ["*"]} if mode == "bulk" else {}
    records = []
    if mode == "bulk":
        records = await _records_of(tmp_path, **extra)
    else:
        for table, column in (("t\tab", "id"), ("c", "n"), ("s", "n")):
            records += await _records_of(
                tmp_path, table=table, mode="incrementing", incrementing_column=column
            )
    got = sorted((r.subject, r.extensions.get("partitionkey"), r.id) for r in records)
    assert got == [
        ("c", "a\\u0009b|c\\|d", "c:a\\u0009b|c\\|d"),
        ("c", "a|", "c:a|"),
        ("s", "k\\\\u00091", "s:k\\\\u00091"),
        ("s", "k\\u00091", "s:k\\u00091"),
        ("s", "plain", "s:plain"),
        ("t\\u0009ab", "1", "t\\u0009ab:1"),
    ]
    folder = str(tmp_path).replace("%", "%25").replace(" ", "%20")
    assert {r.source for r in records} == {f"jdbc:sqlite:///{folder}/in%20db%231.db"}
    for r in records:
        assert attribute_problems(r) == {}, r


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


def test_config_mistakes_are_named_at_their_field_by_validate(tmp_path: Path) -> None:
    """A URL whose driver is not installed failed the connector at every restart ("No
    module named 'MySQLdb'"); a cursor column beside the default mode (bulk) read the table
    once and never again; a `delay` in incrementing mode waited for nothing; `key: []` was
    reported at `config`. Each is now a validate error at its own line."""
    from cli_support import mc

    (tmp_path / "p.yaml").write_text(
        "pipelines:\n"
        "  - name: a\n"
        "    source:\n"
        "      connector: jdbc\n"
        "      config:\n"
        "        url: mysql://root:sekret@db/shop\n"  # line 6
        "        table: t\n"
        "        incrementing_column: id\n"  # line 8: mode is bulk
        "    sinks:\n"
        "      - connector: jdbc\n"
        "        config:\n"
        "          url: sqlite:///x.db\n"
        "          key: []\n"  # line 13
        "  - name: b\n"
        "    source:\n"
        "      connector: jdbc\n"
        "      config:\n"
        "        url: sqlite:///x.db\n"
        "        table: t\n"
        "        mode: incrementing\n"
        "        incrementing_column: id\n"
        "        delay: 5s\n"  # line 22
    )
    result = mc(tmp_path, "validate", "p.yaml")
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert "p.yaml:6:" in out and "pipelines[0].source.config.url" in out
    assert "mysql+pymysql" in out and "sekret" not in out
    assert "p.yaml:8:" in out and "does not use incrementing_column" in out
    assert "p.yaml:13:" in out and "pipelines[0].sinks[0].config.key" in out
    assert "p.yaml:22:" in out and "does not use delay" in out


@pytest.mark.parametrize("mode", ["timestamp", "timestamp+incrementing"])
async def test_sqlite_timestamps_in_any_text_form_are_read_once(tmp_path: Path, mode: str) -> None:
    """SQLite compared the stored text with '2024-01-01 10:00:00.000000': rows written by
    CURRENT_TIMESTAMP ('… 10:00:00') tied on a batch's edge were never read (a batch of them
    stuck the source; in timestamp+incrementing the later ids were skipped), and a row
    written with ISO's 'T' was read again at every poll."""
    with sqlite3.connect(tmp_path / "in.db") as conn:
        conn.execute("CREATE TABLE ev (id INTEGER PRIMARY KEY, ts TIMESTAMP)")
        conn.executemany(
            "INSERT INTO ev VALUES (?, ?)",
            [(i, "2024-01-01 10:00:00") for i in (1, 2, 3)]
            + [(4, "2024-01-01 10:00:01"), (5, "2024-01-01T10:00:02"), (6, None)],
        )
    cfg: dict[str, Any] = {"table": "ev", "mode": mode, "timestamp_column": "ts",
                           "batch_size": 2}  # fmt: skip
    if mode != "timestamp":
        cfg["incrementing_column"] = "id"
    s = source(tmp_path, **cfg)
    await s.start({})
    records, positions = await drain(s, polls=10)
    await s.stop()
    assert sorted(r.data["id"] for r in records) == [1, 2, 3, 4, 5]
    with sqlite3.connect(tmp_path / "in.db") as conn:
        conn.execute("INSERT INTO ev VALUES (7, '2024-01-01 10:00:03')")
    again = source(tmp_path, **cfg)
    await again.start(positions)
    more, _ = await drain(again, polls=10)
    await again.stop()
    assert [r.data["id"] for r in more] == [7]


async def test_timezone_of_a_timestamp_column(tmp_path: Path) -> None:
    """SQLite's clock is UTC: values written in Tokyo's wall time were nine hours in the
    future to the source. `timezone` says the zone; a bad one is a config error."""
    import datetime as dt
    import zoneinfo

    tokyo = dt.datetime.now(zoneinfo.ZoneInfo("Asia/Tokyo")).replace(tzinfo=None)
    with sqlite3.connect(tmp_path / "in.db") as conn:
        conn.execute("CREATE TABLE ev (id INTEGER PRIMARY KEY, ts TIMESTAMP)")
        conn.execute(
            "INSERT INTO ev VALUES (1, ?)", ((tokyo - dt.timedelta(minutes=1)).isoformat(" "),)
        )
    cfg: dict[str, Any] = {"table": "ev", "mode": "timestamp", "timestamp_column": "ts"}
    s = source(tmp_path, timezone="Asia/Tokyo", **cfg)
    await s.start({})
    records, _ = await drain(s, polls=3)
    await s.stop()
    assert [r.data["id"] for r in records] == [1]
    with pytest.raises(ValueError, match="unknown time zone"):
        JdbcSourceConfig(url="sqlite:///in.db", timezone="Mars/Olympus", **cfg)


async def test_a_text_id_for_an_integer_column_fails_the_start(tmp_path: Path) -> None:
    """`offsets reset --to '{"items": {"id": "3"}}'` passes the position check (a text id is
    right for a text column); against an integer column SQLite ordered the text after every
    number and the source read nothing, ever. Only the start knows the column's type."""
    seed(tmp_path, 5)
    s = source(tmp_path, table="items", mode="incrementing", incrementing_column="id")
    try:
        with pytest.raises(
            ConfigError, match=r"table 'items' has id '3', but id is an integer col"
        ):
            await s.start({"items": {"id": "3"}})
    finally:
        await s.stop()
    ok = source(tmp_path, table="items", mode="incrementing", incrementing_column="id")
    await ok.start({"items": {"id": 3}})
    records, _ = await drain(ok)
    await ok.stop()
    assert [r.data["id"] for r in records] == [4, 5]


@pytest.mark.parametrize(
    ("column", "position", "message"),
    [
        ("updated", {"ts": 5}, "has ts 5, but updated is a date-time column: ts must be an ISO"),
        (
            "n",
            {"ts": "2024-01-01T00:00:01"},
            "but n is an integer column: ts must be a whole number",
        ),
    ],
)
async def test_a_timestamp_of_another_type_than_its_column_fails_the_start(
    tmp_path: Path, column: str, position: dict[str, Any], message: str
) -> None:
    """A number for a DATETIME column failed every poll (SQLite's DateTime takes only
    datetimes); an ISO text for an integer timestamp column read nothing, ever."""
    with sqlite3.connect(tmp_path / "in.db") as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, updated DATETIME, n INTEGER)")
        conn.executemany(
            "INSERT INTO items VALUES (?, ?, ?)",
            [(i, f"2024-01-01 00:00:0{i}", i) for i in (1, 2, 3)],
        )
    cfg = {"table": "items", "mode": "timestamp", "timestamp_column": column, "delay": 0}
    s = source(tmp_path, **cfg)
    try:
        with pytest.raises(ConfigError) as info:
            await s.start({"items": position})
    finally:
        await s.stop()
    assert message in str(info.value)
    right = {"ts": 1} if column == "n" else {"ts": "2024-01-01T00:00:01"}
    ok = source(tmp_path, **cfg)
    await ok.start({"items": right})
    records, _ = await drain(ok)
    await ok.stop()
    assert [r.data["id"] for r in records] == [2, 3]


@pytest.mark.parametrize(
    ("position", "message"),
    [
        ({"rows": "x"}, 'rows must be a whole number of at least 0, not "x"'),
        ({"rows": -1}, "rows must be a whole number of at least 0, not -1"),
        ({"rows": 2, "done": "no"}, 'done must be true or false, not "no"'),
    ],
)
async def test_a_stored_bulk_position_the_source_never_writes_fails_the_start(
    tmp_path: Path, position: dict[str, Any], message: str
) -> None:
    """{"rows": "x"} failed every start with ValueError; {"rows": -1} read the table again
    (SQLite's OFFSET -1) or failed every poll (PostgreSQL)."""
    seed(tmp_path, 3)
    s = source(tmp_path, table="items")
    try:
        with pytest.raises(ConfigError) as info:
            await s.start({"items": position})
    finally:
        await s.stop()
    assert f"the stored position of 'items' is not usable: {message}" in str(info.value)


async def test_a_position_of_another_mode_reads_from_the_beginning(tmp_path: Path) -> None:
    """A pipeline switched from bulk to incrementing keeps its bulk position: ignored, as
    before, not an error."""
    seed(tmp_path, 3)
    s = source(tmp_path, table="items", mode="incrementing", incrementing_column="id")
    await s.start({"items": {"rows": 3, "done": True}})
    records, _ = await drain(s)
    await s.stop()
    assert [r.data["id"] for r in records] == [1, 2, 3]


class _Rows:
    """A streaming result over a list: what ``fetchmany`` was asked for is recorded."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows
        self.asked: list[int] = []

    def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        self.asked.append(n)
        out, self.rows = self.rows[:n], self.rows[n:]
        return out


def test_rows_are_fetched_in_chunks_that_fit_the_byte_bound() -> None:
    """A LIMIT 1000 result of 3 MB rows: no fetch asks the server for more rows than fit in
    the 16 MiB left, so the rows in memory stay near the bound, not 3 GB."""
    big = "x" * 3_000_000
    result = _Rows([(i, big) for i in range(1000)])
    rows, extra, why, biggest = fetch_bounded(result, 1000, BATCH_BYTES)
    assert (len(rows), extra, why) == (6, [], "bytes")  # 5 rows below 16 MiB, the 6th crosses
    assert sum(result.asked) == 6
    assert biggest >= 3_000_000


def test_rows_past_the_crossing_one_are_handed_back() -> None:
    """Small rows, then large ones in the same chunk: the batch ends at the row that crosses
    the bound; the rows fetched after it are returned apart (bulk hands them out next)."""
    big = b"x" * 6_000_000
    result = _Rows([(1, b"a"), (2, b"b"), (3, b"c")] + [(i, big) for i in range(4, 10)])
    rows, extra, why, _ = fetch_bounded(result, 1000, BATCH_BYTES)
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r[0] for r in extra] == [7]
    assert why == "bytes"


async def test_a_bulk_batch_stops_at_the_byte_bound_and_loses_nothing(tmp_path: Path) -> None:
    """Small rows then 6 MB ones: each batch holds at most the rows below 16 MiB and the
    one that crosses it; every row arrives once, in order (rows fetched past a bound wait
    for the next batch)."""
    with sqlite3.connect(tmp_path / "in.db") as conn:
        conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, data BLOB)")
        rows = [(i, b"s") for i in range(1, 4)] + [(i, b"x" * 6_000_000) for i in range(4, 14)]
        conn.executemany("INSERT INTO big VALUES (?, ?)", rows)
    s = source(tmp_path, table="big")
    await s.start({})
    sizes, ids = [], []
    while (batch := await s.poll()) is not None:
        ids += [r.data["id"] for r in batch.records]
        sizes.append(len(batch.records))
        if batch.positions["big"].get("done"):
            break
    await s.stop()
    assert ids == list(range(1, 14))
    assert max(sizes) <= 3 + 3  # three tiny rows, two below the bound and the one crossing it
