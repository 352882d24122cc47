"""StoreConformance: the mesh store contract (:mod:`meshconnect.mesh.store`) as a pytest class.

Subclass it in a test module and say how to make stores::

    class TestRedisStore(StoreConformance):
        def store_factory(self, tmp_path, clock):
            url = f"redis://localhost:6379/{db}"
            return lambda: RedisStore(url, clock=clock)

``store_factory(tmp_path, clock)`` returns a function that makes *unopened* stores which all
share one set of data (the same file, database or stream prefix), so the tests of reopening
and of a second instance work; ``clock`` is a :class:`FakeClock` (unix seconds, moved by the
tests) the store must use for record ages (retention by age). Each test starts on empty data.
The built-in ``sqlite`` and ``memory`` backends run it in ``tests/test_store.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from .. import jsonvalue
from ..config.topics import MAX_TOPIC_LENGTH, PARTITION_MARK
from ..errors import DataError, StoreError
from ..mesh import codec
from ..mesh.store import GroupInfo, MeshStore, Retention, TopicInfo
from ..records import Record

__all__ = ["FakeClock", "StoreConformance"]


class FakeClock:
    """A clock the tests move by hand (unix seconds)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rec(topic: str | None = "orders", data: Any = None, **attributes: Any) -> Record:
    return Record(data, topic=topic, **attributes)


def batch(n: int, topic: str = "orders", start: int = 0) -> list[Record]:
    return [rec(topic, {"i": i}) for i in range(start, start + n)]


async def read_all(store: MeshStore, topic: str) -> list[Record]:
    return await store.read(topic, 0, 1_000_000)


class StoreConformance:
    """The store contract; subclass and define :meth:`store_factory` (module docstring)."""

    #: Topic names at the edges of the rule (:mod:`meshconnect.config.topics`): the longest;
    #: one of punctuation only, which a backend that escapes names may triple; one of
    #: four-byte UTF-8 letters; one that differs from the first only in its last character; a
    #: partition of the longest name (docs/scaleout.md#partitions).
    EDGE_TOPICS = (
        "t" * MAX_TOPIC_LENGTH,
        "._-" * (MAX_TOPIC_LENGTH // 3),
        "\U0001d538" * MAX_TOPIC_LENGTH,  # MATHEMATICAL DOUBLE-STRUCK CAPITAL A
        "t" * (MAX_TOPIC_LENGTH - 1) + "u",
        "p." * (MAX_TOPIC_LENGTH // 2) + "p" + PARTITION_MARK + "63",
    )
    #: A consumer group and a connector named far beyond what a backend might keep in a key
    #: as it is (pipeline and sink names have no length limit).
    LONG_NAME = "pipeline-" + "\u00e9" * 4000 + "/sink"

    def store_factory(
        self, tmp_path: Path, clock: FakeClock
    ) -> Callable[[], MeshStore]:  # pragma: no cover - abstract
        raise NotImplementedError

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def make_store(self, tmp_path: Path, clock: FakeClock) -> Callable[[], MeshStore]:
        """Makes unopened stores that all share the same data."""
        return self.store_factory(tmp_path, clock)

    @pytest.fixture
    async def open_store(
        self, make_store: Callable[[], MeshStore]
    ) -> AsyncIterator[Callable[[], Awaitable[MeshStore]]]:
        """Opens another store on the same data; every one is closed after the test."""
        opened: list[MeshStore] = []

        async def _open() -> MeshStore:
            store = make_store()
            await store.open()
            opened.append(store)
            return store

        yield _open
        for store in opened:
            await store.close()

    @pytest.fixture
    async def store(self, open_store: Callable[[], Awaitable[MeshStore]]) -> MeshStore:
        return await open_store()

    # -- append ------------------------------------------------------------------------------------

    async def test_append_assigns_consecutive_offsets_per_topic(self, store: MeshStore) -> None:
        records = [rec("a"), rec("b"), rec("a"), rec("a"), rec("b")]

        first = await store.append(records)
        second = await store.append([rec("b"), rec("a")])

        assert first == [0, 0, 1, 2, 1]
        assert [r.offset for r in records] == first
        assert [r.topic for r in records] == ["a", "b", "a", "a", "b"]
        assert second == [2, 3]

    async def test_append_commits_source_positions_with_the_records(self, store: MeshStore) -> None:
        await store.append(batch(2), {("file", "a.jsonl"): {"offset": 10}})
        await store.append(batch(1), {("file", "a.jsonl"): {"offset": 15}, ("file", "b"): {"x": 1}})
        await store.append([], {("other", "p"): {"n": 1}})

        assert await store.positions("file") == {"a.jsonl": {"offset": 15}, "b": {"x": 1}}
        assert await store.positions("other") == {"p": {"n": 1}}
        assert await store.positions("unknown") == {}
        assert await store.source_ids() == ["file", "other"]

    async def test_append_with_a_bad_position_writes_nothing(self, store: MeshStore) -> None:
        await store.append(batch(1), {("c", "p"): {"n": 1}})
        records = batch(3)

        with pytest.raises(StoreError, match="not JSON-serialisable"):
            await store.append(records, {("c", "p"): {"n": 4}, ("c", "q"): {"bad": object()}})

        assert await store.end_offsets(["orders"]) == {"orders": 1}
        assert await store.positions("c") == {"p": {"n": 1}}
        assert [r.offset for r in records] == [None, None, None]

    async def test_append_with_unserialisable_data_names_the_record_and_writes_nothing(
        self,
        store: MeshStore,
    ) -> None:
        records = [*batch(2), rec("orders", {"an object": object()}), rec("new-topic", {"ok": 1})]

        with pytest.raises(DataError, match="record 2 of the batch") as caught:
            await store.append(records, {("c", "p"): {"n": 4}})

        assert isinstance(caught.value, codec.RecordEncodingError)
        assert caught.value.record is records[2]
        assert await store.topics() == []
        assert await store.positions("c") == {}
        assert await store.append([rec("new-topic")]) == [0]

    async def test_a_record_with_a_non_string_attribute_names_the_record(
        self, store: MeshStore
    ) -> None:
        records = [rec(), rec(subject={"not": "a string"})]

        with pytest.raises(DataError, match=r"record 1 of the batch.*subject"):
            await store.append(records)

        assert await store.topics() == []

    async def test_a_record_without_topic_is_rejected(self, store: MeshStore) -> None:
        with pytest.raises(ValueError, match="topic is None"):
            await store.append([rec("orders"), rec(None)], {("c", "p"): {"n": 2}})

        assert await store.topics() == []
        assert await store.positions("c") == {}

    async def test_concurrent_appends_get_distinct_offsets(self, store: MeshStore) -> None:
        results = await asyncio.gather(*(store.append(batch(10)) for _ in range(5)))

        assert sorted(offset for offsets in results for offset in offsets) == list(range(50))
        assert all(offsets == list(range(offsets[0], offsets[0] + 10)) for offsets in results)

    # -- read --------------------------------------------------------------------------------------

    async def test_read_from_an_offset_with_a_limit(self, store: MeshStore) -> None:
        await store.append(batch(10))

        got = await store.read("orders", 3, 4)

        assert [(r.topic, r.offset, r.data) for r in got] == [
            ("orders", 3, {"i": 3}),
            ("orders", 4, {"i": 4}),
            ("orders", 5, {"i": 5}),
            ("orders", 6, {"i": 6}),
        ]

    async def test_read_past_the_end_or_of_an_unknown_topic_is_empty(
        self, store: MeshStore
    ) -> None:
        await store.append(batch(3))

        assert await store.read("orders", 3, 10) == []
        assert await store.read("orders", 0, 0) == []
        assert await store.read("nothing-here", 0, 10) == []

    async def test_every_field_survives_the_round_trip(self, store: MeshStore) -> None:
        records = [
            rec(
                data={
                    "name": "Zoë",
                    "emoji": "🦀",
                    "n": 2**63 - 1,
                    "f": D("0.1"),
                    "nested": [1, None],
                }
            ),
            rec(data=b"\x00\xffbinary"),
            rec(data=None),
            rec(data="just a string"),
            rec(data=[1, "two", D("3.0")]),
            rec(data=0),
            rec(data=False),
            rec(
                data={"x": 1},
                id="id-1",
                source="/mysql/shop",
                type="com.example.created",
                subject="orders/42",
                time="2024-05-01T12:00:00Z",
                datacontenttype="application/json",
                dataschema="https://example.com/schema",
                extensions={"partitionkey": "42", "sequence": 7, "replay": True},
            ),
            rec(data="text", datacontenttype=None, extensions={"unicode": "välue"}),
        ]
        await store.append(records)

        got = await read_all(store, "orders")

        assert got == records
        assert [r.offset for r in got] == list(range(len(records)))
        assert type(got[1].data) is bytes
        assert got[2].data is None
        assert got[7].extensions == {"partitionkey": "42", "sequence": 7, "replay": True}

    async def test_numbers_keep_every_digit_through_the_store(self, store: MeshStore) -> None:
        """Integers of any size and decimals (as meshconnect.jsonvalue reads them) come back
        with the same digits and scale (a float made by code may come back as the Decimal of
        its shortest text)."""
        data = {
            "big": 123456789012345678901234567890,
            "neg": -(2**70),
            "exact": D("169299987.35345112"),
            "scale": D("1.10"),
            "huge": jsonvalue.loads("1e400"),
            "tiny": jsonvalue.loads("1E-7"),
            "negzero": D("-0.0"),
            "list": [[2**65, D("0.00000001")], {"k": D("-2.50e-3")}],
            "float": 0.1,
        }
        records = [rec(data=data), rec(data=[2**64, D("9.99")]), rec(data=b"\x00")]
        await store.append(records)

        got = await read_all(store, "orders")

        assert {k: v for k, v in got[0].data.items() if k != "float"} == {
            k: v for k, v in data.items() if k != "float"
        }
        assert [x.as_tuple() for x in (got[0].data["scale"], got[0].data["negzero"])] == [
            (0, (1, 1, 0), -2),
            (1, (0,), -1),
        ]
        assert jsonvalue.dumps(got[0].data) == (
            b'{"big":123456789012345678901234567890,"neg":-1180591620717411303424,'
            b'"exact":169299987.35345112,"scale":1.10,"huge":1E+400,"tiny":1E-7,"negzero":-0.0,'
            b'"list":[[36893488147419103232,1E-8],{"k":-0.00250}],"float":0.1}'
        )
        assert got[1].data == [2**64, D("9.99")]

    async def test_non_finite_numbers_are_not_stored(self, store: MeshStore) -> None:
        for bad in (D("NaN"), float("inf")):
            with pytest.raises(
                codec.RecordEncodingError, match=r"not a JSON number|are not JSON numbers"
            ):
                await store.append([rec(data={"v": [bad]})])
        assert await store.topics() == []

    async def test_reads_from_every_offset_agree_with_what_was_appended(
        self, store: MeshStore
    ) -> None:
        """Whatever serves a read (SQL or this process's tail of recent appends), every window of
        the topic comes back in order with the right offsets."""
        for start in range(0, 30, 7):
            await store.append(batch(7, start=start))

        windows = [await store.read("orders", offset, 5) for offset in range(0, 36)]

        for offset, window in enumerate(windows):
            assert [r.offset for r in window] == list(range(offset, min(offset + 5, 35)))
            assert [r.data["i"] for r in window] == list(range(offset, min(offset + 5, 35)))

    async def test_bytearray_data_is_stored_as_bytes(self, store: MeshStore) -> None:
        await store.append([rec(data=bytearray(b"abc"))])

        (got,) = await read_all(store, "orders")

        assert got.data == b"abc"

    async def test_topics_and_end_offsets(self, store: MeshStore) -> None:
        await store.append([*batch(3, "b"), *batch(2, "a")])

        assert await store.topics() == [TopicInfo("a", 0, 2), TopicInfo("b", 0, 3)]
        assert await store.end_offsets(["a", "b", "unknown"]) == {"a": 2, "b": 3, "unknown": 0}

    # -- consumer groups ---------------------------------------------------------------------------

    async def test_commit_and_read_back_a_group(self, store: MeshStore) -> None:
        await store.commit("archive", {"orders": 3, "users": 7}, {"size": 1024})

        assert await store.group("archive") == GroupInfo(
            "archive", {"orders": 3, "users": 7}, {"size": 1024}
        )

    async def test_a_group_never_committed_is_empty(self, store: MeshStore) -> None:
        assert await store.group("nobody") == GroupInfo("nobody", {}, None)

    async def test_commit_of_some_topics_keeps_the_others(self, store: MeshStore) -> None:
        await store.commit("g", {"a": 1, "b": 2}, {"v": 1})

        await store.commit("g", {"b": 5})

        assert await store.group("g") == GroupInfo("g", {"a": 1, "b": 5}, None)

    async def test_commit_with_a_bad_state_commits_nothing(self, store: MeshStore) -> None:
        await store.commit("g", {"a": 1}, {"v": 1})

        with pytest.raises(StoreError, match="not JSON-serialisable"):
            await store.commit("g", {"a": 2}, {"v": object()})

        assert await store.group("g") == GroupInfo("g", {"a": 1}, {"v": 1})

    async def test_groups_lists_every_group(self, store: MeshStore) -> None:
        await store.commit("b", {"t": 1})
        await store.commit("a", {}, {"s": 1})

        assert await store.groups() == [GroupInfo("a", {}, {"s": 1}), GroupInfo("b", {"t": 1})]

    async def test_reset_group_replaces_offsets_and_keeps_the_sink_state(
        self, store: MeshStore
    ) -> None:
        """The state says what output the sink owns (a file's size): a reset moves offsets
        only, or the sink would start a fresh output and discard what it wrote."""
        await store.commit("g", {"a": 10, "b": 20}, {"size": 5})

        await store.reset_group("g", {"a": 0})

        assert await store.group("g") == GroupInfo("g", {"a": 0}, {"size": 5})

    async def test_reset_group_to_none_forgets_the_offsets_and_keeps_the_state(
        self, store: MeshStore
    ) -> None:
        await store.commit("g", {"a": 10}, {"size": 5})

        await store.reset_group("g", None)

        assert await store.group("g") == GroupInfo("g", {}, {"size": 5})

    async def test_reset_group_of_a_group_without_state_forgets_it(self, store: MeshStore) -> None:
        await store.commit("g", {"a": 10})

        await store.reset_group("g", None)

        assert await store.group("g") == GroupInfo("g", {}, None)

    # -- source positions --------------------------------------------------------------------------

    async def test_set_positions_replaces_one_connectors_positions(self, store: MeshStore) -> None:
        await store.append([], {("c", "p1"): {"n": 1}, ("c", "p2"): {"n": 2}, ("d", "p"): {"n": 3}})

        await store.set_positions("c", {"p3": {"n": 0}})
        assert await store.positions("c") == {"p3": {"n": 0}}

        await store.set_positions("c", None)
        assert await store.positions("c") == {}
        assert await store.positions("d") == {"p": {"n": 3}}

    # -- retention ---------------------------------------------------------------------------------

    async def test_retention_by_count_keeps_the_newest(self, store: MeshStore) -> None:
        await store.append(batch(10))

        deleted = await store.apply_retention("orders", Retention(max_records=3))

        assert deleted == 7
        assert await store.topics() == [TopicInfo("orders", 7, 10)]
        assert [(r.offset, r.data) for r in await read_all(store, "orders")] == [
            (7, {"i": 7}),
            (8, {"i": 8}),
            (9, {"i": 9}),
        ]

    async def test_retention_by_size_drops_the_oldest_batches_and_keeps_the_newest(
        self,
        store: MeshStore,
    ) -> None:
        for start in range(0, 100, 10):
            await store.append(
                [rec(data={"i": i, "pad": "x" * 200}) for i in range(start, start + 10)]
            )

        deleted = await store.apply_retention("orders", Retention(max_bytes=6_000))
        alone = await store.apply_retention("orders", Retention(max_bytes=1))

        (topic,) = await store.topics()
        kept = [r.data["i"] for r in await read_all(store, "orders")]
        assert 40 <= deleted < 100  # ~2.3 kB a batch: about a quarter of them fit in 6 kB
        # what stays is the newest: at least its last record (the last batch, where the backend
        # stores batches)
        assert topic.end == 100 and 1 <= len(kept) <= 10
        assert kept == list(range(100 - len(kept), 100)) and deleted + alone == 100 - len(kept)

    async def test_retention_by_age_drops_what_is_older(
        self, store: MeshStore, clock: FakeClock
    ) -> None:
        await store.append(batch(4))
        clock.now += 100
        await store.append(batch(2, start=4))
        clock.now += 50

        deleted = await store.apply_retention("orders", Retention(max_age_s=120))

        assert deleted == 4
        assert await store.topics() == [TopicInfo("orders", 4, 6)]
        assert await store.apply_retention("orders", Retention(max_age_s=120)) == 0

    async def test_retention_of_everything_leaves_an_empty_topic_with_its_end(
        self, store: MeshStore, clock: FakeClock
    ) -> None:
        await store.append(batch(5))
        clock.now += 1000

        deleted = await store.apply_retention("orders", Retention(max_age_s=10, max_records=100))

        assert deleted == 5
        assert await store.topics() == [TopicInfo("orders", 5, 5)]
        assert await store.append(batch(1)) == [5]

    async def test_reading_below_the_start_reads_from_the_start(self, store: MeshStore) -> None:
        await store.append(batch(10))
        await store.apply_retention("orders", Retention(max_records=4))

        got = await store.read("orders", 2, 2)

        assert [r.offset for r in got] == [6, 7]

    async def test_retention_of_an_unknown_topic_deletes_nothing(self, store: MeshStore) -> None:
        assert await store.apply_retention("nothing", Retention(max_records=0)) == 0

    # -- lifecycle, reopening, a second instance ---------------------------------------------------

    async def test_data_survives_close_and_reopen(
        self, store: MeshStore, open_store: Callable[[], Awaitable[MeshStore]]
    ) -> None:
        await store.append(batch(3), {("c", "p"): {"n": 3}})
        await store.commit("g", {"orders": 2}, {"size": 9})
        await store.close()

        reopened = await open_store()

        assert [r.data for r in await read_all(reopened, "orders")] == [
            {"i": 0},
            {"i": 1},
            {"i": 2},
        ]
        assert await reopened.positions("c") == {"p": {"n": 3}}
        assert await reopened.group("g") == GroupInfo("g", {"orders": 2}, {"size": 9})

    async def test_offsets_continue_after_reopen(
        self, store: MeshStore, open_store: Callable[[], Awaitable[MeshStore]]
    ) -> None:
        await store.append(batch(3))
        await store.close()
        reopened = await open_store()

        assert await reopened.append(batch(2)) == [3, 4]

    async def test_a_second_instance_reads_and_appends_alongside_the_first(
        self, store: MeshStore, open_store: Callable[[], Awaitable[MeshStore]]
    ) -> None:
        other = await open_store()

        await store.append(batch(2))
        assert len(await read_all(other, "orders")) == 2
        assert await other.append(batch(2)) == [2, 3]
        assert await store.append([*batch(1), rec("new")]) == [4, 0]
        assert await other.append([rec("new")]) == [1]

        assert [r.offset for r in await read_all(store, "orders")] == [0, 1, 2, 3, 4]
        assert [r.offset for r in await store.read("orders", 3, 10)] == [3, 4]
        assert [r.offset for r in await other.read("orders", 1, 10)] == [1, 2, 3, 4]

    async def test_topics_named_at_the_edges_of_the_rule_work_across_a_reopen(
        self, store: MeshStore, open_store: Callable[[], Awaitable[MeshStore]]
    ) -> None:
        """Every name the topic rule accepts is a topic of its own, however long and whatever
        its characters: appended to, read, listed by its real name, committed, trimmed, and
        found again by a store opened later."""
        topics = self.EDGE_TOPICS
        for k, topic in enumerate(topics):
            await store.append(batch(k + 2, topic))
        await store.commit("g", dict.fromkeys(topics, 1))
        await store.close()

        reopened = await open_store()
        offsets = [await reopened.append(batch(1, topic)) for topic in topics]
        deleted = [await reopened.apply_retention(t, Retention(max_records=1)) for t in topics]

        assert offsets == [[k + 2] for k in range(len(topics))]
        assert deleted == [k + 2 for k in range(len(topics))]
        assert await reopened.topics() == sorted(
            (TopicInfo(topic, k + 2, k + 3) for k, topic in enumerate(topics)),
            key=lambda info: info.name,
        )
        assert [[(r.topic, r.offset) for r in await read_all(reopened, t)] for t in topics] == [
            [(topic, k + 2)] for k, topic in enumerate(topics)
        ]
        assert await reopened.group("g") == GroupInfo("g", dict.fromkeys(topics, 1))

    async def test_groups_and_sources_with_very_long_names(
        self, store: MeshStore, open_store: Callable[[], Awaitable[MeshStore]]
    ) -> None:
        name = self.LONG_NAME
        await store.append(batch(1), {(name, "p"): {"n": 1}})
        await store.commit(name, {"orders": 1}, {"size": 2})
        await store.close()

        reopened = await open_store()
        listed = (await reopened.source_ids(), await reopened.groups())
        await reopened.set_positions(name, None)
        await reopened.reset_group(name, {"orders": 0})

        assert listed == ([name], [GroupInfo(name, {"orders": 1}, {"size": 2})])
        assert await reopened.positions(name) == {}
        assert await reopened.group(name) == GroupInfo(name, {"orders": 0}, {"size": 2})

    async def test_open_and_close_are_idempotent(self, make_store: Callable[[], MeshStore]) -> None:
        store = make_store()
        await store.close()  # before open: nothing to release
        await store.open()
        await store.open()
        await store.append(batch(1))
        await store.close()
        await store.close()

        with pytest.raises(StoreError, match="not open"):
            await store.read("orders", 0, 10)

    async def test_data_changed_wakes_a_reader_on_append(self, store: MeshStore) -> None:
        waiter = asyncio.ensure_future(store.data_changed())
        await asyncio.sleep(0)

        await store.append(batch(1))

        await asyncio.wait_for(waiter, 1.0)

    async def test_data_changed_also_completes_without_appends(self, store: MeshStore) -> None:
        """Readers poll too: another process may append without telling this one."""
        await asyncio.wait_for(store.data_changed(), 2.0)

    # -- the plugin --------------------------------------------------------------------------------
