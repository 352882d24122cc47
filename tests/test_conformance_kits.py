"""The conformance suites fail connectors that break the contract: a kit that passes a broken
connector (or hangs on it) is a fault of the kit. Each broken connector here is one a plugin
author writes by mistake."""

from __future__ import annotations

import contextlib
import datetime
import logging
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from meshconnect import (
    ConnectorConfig,
    ConnectorContext,
    DataError,
    Position,
    Record,
    Sink,
    Source,
    SourceBatch,
)
from meshconnect.testing import SinkConformance, SourceConformance

#: A broken source gives up after this many polls, so a kit that would poll it forever fails
#: the test instead of hanging it.
RUNAWAY = 20_000


class CountConfig(ConnectorConfig):
    count: int = 250
    batch: int = 40
    mistake: str = ""  # "ignores positions", "never ends", "repeats"


class CountSource(Source[CountConfig]):
    bounded = True

    async def start(self, positions: Mapping[str, Position]) -> None:
        self.next = int(positions.get("n", {}).get("next", 0))
        if self.config.mistake == "ignores positions":
            self.next = 0
        if self.config.mistake == "tuple cursor":  # a composite key, compared as a tuple
            key = positions.get("n", {}).get("key", ("n", 0))
            self.next = next(i for i in range(self.config.count + 1) if ("n", i) >= key)
        self.polls = 0

    async def poll(self) -> SourceBatch | None:
        self.polls += 1
        if self.polls > RUNAWAY:
            raise RuntimeError(f"polled {RUNAWAY} times: the kit did not stop")
        if self.next >= self.config.count:
            if self.config.mistake == "never ends":
                return SourceBatch([], {})  # a follow-mode source under a bounded kit
            return None
        end = min(self.config.count, self.next + self.config.batch)
        records = [Record({"n": i}, id=f"n-{i}") for i in range(self.next, end)]
        if self.config.mistake != "repeats":  # forgets to move its cursor
            self.next = end
        if self.config.mistake == "tuple cursor":
            return SourceBatch(records, {"n": {"key": ("n", end)}})
        if self.config.mistake == "drops last":  # a byte bound that forgets the position
            return SourceBatch(records[:-1], {"n": {"next": end}})
        return SourceBatch(records, {"n": {"next": end}})


class Kit(SourceConformance):
    """The suite over CountSource with a config (not collected: no Test prefix)."""

    def __init__(self, **config: Any) -> None:
        self.config = CountConfig(**config)

    def make_source(self, tmp_path: Path) -> CountSource:
        context = ConnectorContext("test", "count", logging.getLogger("test"), str(tmp_path))
        return CountSource(self.config, context)

    def input_ids(self, tmp_path: Path) -> list[str]:
        return [f"n-{i}" for i in range(self.config.count)]


async def test_a_correct_source_passes_every_check(tmp_path: Path) -> None:
    kit = Kit()
    for name in dir(kit):
        if name.startswith("test_"):
            await getattr(kit, name)(tmp_path)


async def test_a_source_that_ignores_stored_positions_fails_even_with_a_small_input(
    tmp_path: Path,
) -> None:
    """With an input of one batch (the docs' example had three names, batches of 100) there
    was no boundary to resume from: every check passed a source that ignores its positions."""
    with pytest.raises(AssertionError, match="resuming after batch 0"):
        await Kit(mistake="ignores positions").test_resume_from_every_batch_boundary(tmp_path)
    with pytest.raises(AssertionError, match="the records came in one batch"):
        await Kit(mistake="ignores positions", count=3).test_resume_from_every_batch_boundary(
            tmp_path
        )


async def test_a_source_resumes_from_positions_as_the_store_gives_them_back(
    tmp_path: Path,
) -> None:
    """The suite resumed from the very objects the source returned; the store gives back
    JSON: a tuple cursor comes back a list, and the source that compares it with a tuple
    fails on every restart. The suite passed it."""
    with pytest.raises(TypeError, match="'>=' not supported between instances of 'tuple' and"):
        await Kit(mistake="tuple cursor").test_resume_from_every_batch_boundary(tmp_path)
    with pytest.raises(TypeError, match="'>=' not supported"):
        await Kit(
            mistake="tuple cursor"
        ).test_a_crash_on_a_sentinel_record_resumes_with_nothing_lost_or_twice(tmp_path)


async def test_a_source_that_skips_records_fails_against_the_input(tmp_path: Path) -> None:
    """Every other check compares the source with its own full read: one that drops the last
    record of each batch (its position already past it) passed them all."""
    kit = Kit(mistake="drops last")
    for name in dir(kit):
        if name.startswith("test_") and name != "test_a_full_read_is_the_whole_input":
            await getattr(kit, name)(tmp_path)
    with pytest.raises(AssertionError, match="n-39"):
        await kit.test_a_full_read_is_the_whole_input(tmp_path)


async def test_a_source_that_never_ends_fails_instead_of_hanging(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="50 polls in a row gave no record"):
        await Kit(mistake="never ends").test_bounded_source_ends(tmp_path)
    with pytest.raises(AssertionError, match="did not end after 10000 polls"):
        await Kit(mistake="repeats").test_acks_may_come_after_later_polls(tmp_path)


class TableConfig(ConnectorConfig):
    rollback_all: bool = False  # the mistake: a failed write rolls back the open transaction


class TableSink(Sink[TableConfig]):
    """Rows in one SQLite transaction per flush; n < 0 violates a CHECK (the poison)."""

    async def open(self, state: Mapping[str, Any] | None) -> None:
        self.db = sqlite3.connect(Path(self.context.base_dir, "t.db"), isolation_level=None)
        self.db.execute("CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY, n INT CHECK (n >= 0))")
        self.db.execute("BEGIN")

    async def write(self, records: Sequence[Record]) -> None:
        rows = [(r.id, r.data["n"]) for r in records]
        if not self.config.rollback_all:
            self.db.execute("SAVEPOINT write")
        try:
            self.db.executemany("INSERT OR REPLACE INTO t VALUES (?, ?)", rows)
        except sqlite3.IntegrityError as exc:
            if self.config.rollback_all:
                self.db.execute("ROLLBACK")  # takes back the earlier writes too
                self.db.execute("BEGIN")
            else:
                self.db.execute("ROLLBACK TO write")
            raise DataError(f"table sink: {exc}") from exc
        if not self.config.rollback_all:
            self.db.execute("RELEASE write")

    async def flush(self) -> dict[str, Any]:
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")
        return {}

    async def close(self) -> None:
        if hasattr(self, "db"):
            self.db.close()


class SinkKit(SinkConformance):
    def __init__(self, **config: Any) -> None:
        self.config = TableConfig(**config)

    def make_sink(self, tmp_path: Path) -> TableSink:
        context = ConnectorContext("test", "table", logging.getLogger("test"), str(tmp_path))
        return TableSink(self.config, context)

    def durable(self, tmp_path: Path) -> list[Any]:
        with contextlib.closing(sqlite3.connect(tmp_path / "t.db")) as db:
            return [n for (n,) in db.execute("SELECT n FROM t ORDER BY n")]

    def poison_record(self, i: int) -> Record:
        return Record({"n": -1}, id="poison")


async def test_a_correct_sink_passes_every_check(tmp_path: Path) -> None:
    kit = SinkKit()
    for name in dir(kit):
        if name.startswith("test_") and "outage" not in name:  # that one: OutageKit
            folder = tmp_path / name
            folder.mkdir()
            if name == "test_redelivery_after_a_crash_before_the_commit":
                for flushed in (False, True):
                    (folder / str(flushed)).mkdir()
                    await getattr(kit, name)(folder / str(flushed), flushed)
            else:
                await getattr(kit, name)(folder)


async def test_a_failed_check_shows_what_it_compared(tmp_path: Path) -> None:
    """A sink that rolls back its whole open transaction on a data error loses what it wrote
    since the last flush. The suite failed it with a bare AssertionError (the suites' asserts
    were not rewritten by pytest): nothing said which records were missing."""
    with pytest.raises(AssertionError, match=r"assert \[10, 11, 12.*\] == \[0, 1, 2"):
        await SinkKit(rollback_all=True).test_a_poison_record_fails_alone(tmp_path)


class Service:
    """A pretend remote store: rows by id, down during an outage (ConnectionError)."""

    rows: ClassVar[dict[str, dict[str, Any]]] = {}
    down = False

    @classmethod
    def put(cls, records: Sequence[Record]) -> None:
        if cls.down:
            raise ConnectionError("service unavailable")
        cls.rows.update((r.id, r.data) for r in records)


class BufferConfig(ConnectorConfig):
    drops_on_failure: bool = False  # the mistake: the buffer is emptied before the send


class BufferSink(Sink[BufferConfig]):
    """Buffers in write, sends the buffer in flush; upserts by id (idempotent)."""

    async def open(self, state: Mapping[str, Any] | None) -> None:
        self.buffer: list[Record] = []

    async def write(self, records: Sequence[Record]) -> None:
        self.buffer.extend(records)

    async def flush(self) -> dict[str, Any]:
        if self.config.drops_on_failure:
            batch, self.buffer = self.buffer, []
            Service.put(batch)
        else:
            Service.put(self.buffer)
            self.buffer = []
        return {}


class OutageKit(SinkConformance):
    def __init__(self, **config: Any) -> None:
        self.config = BufferConfig(**config)
        Service.rows = {}
        Service.down = False

    def make_sink(self, tmp_path: Path) -> BufferSink:
        context = ConnectorContext("test", "buffer", logging.getLogger("test"), str(tmp_path))
        return BufferSink(self.config, context)

    def durable(self, tmp_path: Path) -> list[Any]:
        return sorted(data["n"] for data in Service.rows.values())

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        Service.down = True
        try:
            yield
        finally:
            Service.down = False

    def unavailable(self, tmp_path: Path) -> contextlib.AbstractContextManager[None]:
        return self.outage()


async def test_a_sink_that_loses_its_buffer_on_a_retried_flush_fails(tmp_path: Path) -> None:
    """The suite never made the destination fail: it passed a sink whose flush empties its
    buffer before the send, so the worker's retry of a flush that failed on a connection
    error sends nothing and commits offsets past records that were never written."""
    await OutageKit().test_a_retry_after_an_outage_loses_and_repeats_nothing(tmp_path)
    with pytest.raises(AssertionError, match=r"Right contains 30 more items"):
        await OutageKit(
            drops_on_failure=True
        ).test_a_retry_after_an_outage_loses_and_repeats_nothing(tmp_path)
    for name in dir(OutageKit()):  # the other checks pass the broken sink
        if name.startswith("test_") and "outage" not in name and "poison" not in name:
            folder = tmp_path / name
            folder.mkdir()
            kit = OutageKit(drops_on_failure=True)
            if name == "test_redelivery_after_a_crash_before_the_commit":
                await getattr(kit, name)(folder, True)
            else:
                await getattr(kit, name)(folder)


class StampConfig(ConnectorConfig):
    pass


class StampSink(Sink[StampConfig]):
    """Idempotent rows; its state is the time of its last flush, a datetime: the store gives
    it back as a string, and ``open`` breaks on every restart."""

    async def open(self, state: Mapping[str, Any] | None) -> None:
        self.since = state["at"].timestamp() if state else 0.0

    async def write(self, records: Sequence[Record]) -> None:
        Service.put(records)

    async def flush(self) -> dict[str, Any]:
        return {"at": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)}


class StampKit(SinkConformance):
    def __init__(self) -> None:
        Service.rows = {}
        Service.down = False

    def make_sink(self, tmp_path: Path) -> StampSink:
        context = ConnectorContext("test", "stamp", logging.getLogger("test"), str(tmp_path))
        return StampSink(StampConfig(), context)

    def durable(self, tmp_path: Path) -> list[Any]:
        return sorted(data["n"] for data in Service.rows.values())


async def test_a_sink_is_reopened_with_its_state_as_the_store_gives_it_back(
    tmp_path: Path,
) -> None:
    """The suite reopened a sink with the very object its flush returned, so a state the
    store turns into something else (a datetime into a string) passed."""
    with pytest.raises(AttributeError, match="'str' object has no attribute 'timestamp'"):
        await StampKit().test_redelivery_after_a_crash_before_the_commit(tmp_path, False)
