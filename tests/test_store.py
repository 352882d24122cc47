"""The mesh store contract (meshconnect.testing.StoreConformance), run against both built-in
backends, and what only they can do: the SQLite file from other processes and under SIGKILL,
the memory store's names, the plugin registration and URLs.

Every store a class's factory makes shares one set of data (the same file, the same memory
name), so the tests of reopening and of a second instance run against both.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from meshconnect.errors import ConfigError, StoreError
from meshconnect.mesh import codec
from meshconnect.mesh.memory import MemoryStore
from meshconnect.mesh.sqlite import SqliteStore
from meshconnect.mesh.store import MeshStore
from meshconnect.records import Record
from meshconnect.testing import FakeClock, StoreConformance


class TestSqliteStore(StoreConformance):
    def store_factory(self, tmp_path: Path, clock: FakeClock) -> Callable[[], MeshStore]:
        url = f"sqlite:///{tmp_path / 'state' / 'mesh.db'}"
        return lambda: SqliteStore(url, clock=clock, poll_interval=0.05)


class TestMemoryStore(StoreConformance):
    def store_factory(self, tmp_path: Path, clock: FakeClock) -> Callable[[], MeshStore]:
        name = f"test-{uuid.uuid4().hex}"
        return lambda: MemoryStore(f"memory://{name}", clock=clock, poll_interval=0.05)


@pytest.mark.parametrize("name", StoreConformance.EDGE_TOPICS)
def test_the_conformance_suites_edge_topics_obey_the_topic_rule(name: str) -> None:
    """They test that every name the rule accepts works: each must be one it accepts, at its
    length limit where it says so."""
    from meshconnect.config.topics import MAX_TOPIC_LENGTH, partition_of, topic_problem

    base, _ = partition_of(name)

    assert topic_problem(base) is None and len(base) == MAX_TOPIC_LENGTH


def rec(topic: str | None = "orders", data: Any = None, **attributes: Any) -> Record:
    return Record(data, topic=topic, **attributes)


def batch(n: int, topic: str = "orders", start: int = 0) -> list[Record]:
    return [rec(topic, {"i": i}) for i in range(start, start + n)]


async def read_all(store: MeshStore, topic: str) -> list[Record]:
    return await store.read(topic, 0, 1_000_000)


def test_the_codec_sets_every_record_slot() -> None:
    """decode_rows fills Record slots directly; a new slot must be added to the codec."""
    assert sorted(codec.RECORD_SLOTS) == sorted(Record.__slots__)


async def test_unnamed_memory_stores_share_nothing() -> None:
    first, second = MemoryStore("memory://"), MemoryStore("memory://")
    await first.open()
    await second.open()

    await first.append(batch(1))

    assert await second.topics() == []


def test_both_backends_are_registered_through_the_plugin_hook(tmp_path: Path) -> None:
    from meshconnect.mesh import plugin
    from meshconnect.plugins import Registry

    registry = Registry()
    registry.register(plugin, "stores")

    sqlite = registry.store("sqlite").factory(f"sqlite:///{tmp_path / 'x.db'}")
    memory = registry.store("memory").factory("memory://")
    assert isinstance(sqlite, SqliteStore)
    assert isinstance(memory, MemoryStore)
    assert not (tmp_path / "x.db").exists()  # factories build unopened stores


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://relative.db",
        "sqlite:///",
        "postgres:///x.db",
        "sqlite:///x.db?journal=off",
        "memory:/x",
        "memory://a/b",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    factory = MemoryStore if url.startswith("memory") else SqliteStore
    with pytest.raises(ConfigError, match="URL"):
        factory(url)


# -- SQLite only: files, processes, crashes ----------------------------------------------------


async def test_a_relative_sqlite_url_creates_its_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = SqliteStore("sqlite:///.meshconnect/deep/mesh.db")

    await store.open()
    await store.append(batch(1))
    await store.close()

    assert (tmp_path / ".meshconnect" / "deep" / "mesh.db").is_file()


def test_sqlite_options_in_the_url(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'm.db'}?synchronous=full&busy_timeout=250")

    assert (store.synchronous, store.busy_timeout_ms) == ("FULL", 250)


async def test_a_file_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "mesh.db"
    store = SqliteStore(f"sqlite:///{path}")
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()

    with pytest.raises(StoreError, match="newer"):
        await SqliteStore(f"sqlite:///{path}").open()


async def test_a_damaged_file_is_named_with_what_to_do(tmp_path: Path) -> None:
    """A mesh.db whose pages were overwritten: the error says the file is damaged and what to
    do, not only SQLite's "database disk image is malformed"."""
    path = tmp_path / "mesh.db"
    store = SqliteStore(f"sqlite:///{path}")
    await store.open()
    await store.append([Record({"n": i}, topic="t") for i in range(100)])
    await store.close()
    with path.open("r+b") as f:
        f.seek(4096)
        f.write(random.Random(1).randbytes(8192))

    with pytest.raises(StoreError, match=r"malformed \(the file is damaged: restore it"):
        await SqliteStore(f"sqlite:///{path}").open()


def test_a_state_directory_on_a_read_only_file_system_is_named(tmp_path: Path) -> None:
    """A store whose directory is on a read-only mount (a tmpfs remounted read-only; needs
    the right to mount, as root has): the error names the directory and why, where SQLite
    only says "unable to open database file"."""
    mount = tmp_path / "ro"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        url = f"sqlite:///{mount / 'state' / 'mesh.db'}"

        async def open_close() -> None:
            store = SqliteStore(url)
            await store.open()
            await store.close()

        asyncio.run(open_close())
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)

        with pytest.raises(StoreError, match="unable to open database file") as failure:
            asyncio.run(open_close())
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert f"the directory {mount / 'state'} is on a read-only file system" in str(failure.value)


def run_python(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_another_process_reads_what_this_one_appended(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    store = SqliteStore(url)
    await store.open()
    await store.append(batch(5))

    reader = run_python(
        """
        import asyncio, sys
        from meshconnect.mesh.sqlite import SqliteStore

        async def main():
            store = SqliteStore(sys.argv[1])
            await store.open()
            print([r.data["i"] for r in await store.read("orders", 0, 100)])
            await store.close()

        asyncio.run(main())
        """,
        url,
    )
    out, _ = await asyncio.to_thread(reader.communicate, timeout=60)
    await store.close()

    assert out.strip() == "[0, 1, 2, 3, 4]"


async def test_two_processes_append_to_one_topic(tmp_path: Path) -> None:
    # Both open the same new file at once: switching it to WAL must wait for the other.
    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    script = """
        import asyncio, sys
        from meshconnect.mesh.sqlite import SqliteStore
        from meshconnect.records import Record

        async def main():
            store = SqliteStore(sys.argv[1])
            await store.open()
            for n in range(100):
                batch = [Record({"who": sys.argv[2], "n": n}, topic="t") for _ in range(10)]
                await store.append(batch, {(sys.argv[2], "p"): {"n": n}})
            await store.close()

        asyncio.run(main())
    """
    children = [run_python(script, url, who) for who in ("a", "b")]
    for child in children:
        _, err = await asyncio.to_thread(child.communicate, timeout=120)
        assert child.returncode == 0, err

    store = SqliteStore(url)
    await store.open()
    records = await read_all(store, "t")
    positions = [await store.positions(who) for who in ("a", "b")]
    await store.close()
    assert [r.offset for r in records] == list(range(2000))
    assert sorted((r.data["who"], r.data["n"]) for r in records[::10]) == sorted(
        (who, n) for who in ("a", "b") for n in range(100)
    )
    assert positions == [{"p": {"n": 99}}, {"p": {"n": 99}}]


async def test_a_small_append_never_blocks_the_loop_on_another_process_lock(
    tmp_path: Path,
) -> None:
    """Small appends commit on the loop's thread, but must not sleep there in SQLite's busy
    handler while another connection holds the write lock: they go to the store thread and
    wait there, and the loop keeps running."""
    import sqlite3

    path = tmp_path / "mesh.db"
    store = SqliteStore(f"sqlite:///{path}?busy_timeout=30000")
    await store.open()
    assert await store.append(batch(1)) == [0]  # small: committed inline
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock
    try:
        append = asyncio.ensure_future(store.append(batch(2, start=1)))
        for _ in range(20):
            await asyncio.sleep(0.01)  # the loop runs while the append waits for the lock
        assert not append.done()
    finally:
        other.execute("COMMIT")
        other.close()
    assert await append == [1, 2]
    assert await store.append(batch(1, start=3)) == [3]  # and inline again
    assert [r.data["i"] for r in await read_all(store, "orders")] == [0, 1, 2, 3]
    await store.close()


@pytest.mark.parametrize(
    "sizes", [[1, 40, 1, 1, 5000, 3], [4097, 4096, 1, 5000, 2]]
)  # around 4,096
async def test_inline_and_threaded_appends_keep_offsets_dense(
    tmp_path: Path, sizes: list[int]
) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'mesh.db'}")
    await store.open()
    start = 0
    for n in sizes:
        offsets = await store.append(batch(n, start=start), {("c", "p"): {"n": start + n}})
        assert offsets == list(range(start, start + n))
        start += n
    # appends racing reads: the thread serves the reads, small appends wait for it
    results = await asyncio.gather(
        *(store.append(batch(1, start=start + i)) for i in range(10)),
        *(store.read("orders", 0, 3) for _ in range(5)),
    )
    assert sorted(o for r in results[:10] for o in r) == list(range(start, start + 10))
    await store.close()

    reopened = SqliteStore(f"sqlite:///{tmp_path / 'mesh.db'}")
    await reopened.open()
    records = await read_all(reopened, "orders")
    assert [r.offset for r in records] == list(range(start + 10))
    assert sorted(r.data["i"] for r in records) == list(range(start + 10))
    assert await reopened.positions("c") == {"p": {"n": sum(sizes)}}
    await reopened.close()


APPENDER = """
    import asyncio, sys
    from meshconnect.mesh.sqlite import SqliteStore
    from meshconnect.records import Record

    async def main():
        store = SqliteStore(sys.argv[1])
        await store.open()
        total = (await store.positions("c")).get("p", {}).get("n", 0)
        print("appending", flush=True)
        while True:
            size = 1 + total % 97
            records = [Record({"i": total + i}, topic="t") for i in range(size)]
            total += size
            await store.append(records, {("c", "p"): {"n": total}})

    asyncio.run(main())
"""


@pytest.mark.slow
async def test_records_and_positions_survive_sigkill_together(tmp_path: Path) -> None:
    """A child appends batches with the running total as its position; killed at a random
    moment, what it stored must be exactly what its committed position says: never records
    without their position, never a position without its records."""
    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    rng = random.Random(7)
    committed = []
    for _ in range(4):
        child = run_python(APPENDER, url)
        assert child.stdout is not None
        assert await asyncio.to_thread(child.stdout.readline) == "appending\n"
        await asyncio.sleep(rng.uniform(0.05, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        await asyncio.to_thread(child.communicate)

        store = SqliteStore(url)
        await store.open()
        position = (await store.positions("c")).get("p", {"n": 0})["n"]
        records = await read_all(store, "t")
        await store.close()
        assert len(records) == position
        assert [r.data["i"] for r in records] == list(range(position))
        committed.append(position)

    assert committed == sorted(committed) and committed[-1] > committed[0]


def test_numbers_on_disk_are_what_the_store_serves() -> None:
    """What a reader in another process gets (the segment as stored on disk) has the same
    digits as what the appending process serves; a float made by code is read back as the
    Decimal of its shortest text."""
    from decimal import Decimal as D

    from meshconnect import jsonvalue
    from meshconnect.mesh import codec

    data = {"big": 2**70, "scale": D("1.10"), "huge": jsonvalue.loads("1e400"), "float": 0.1}
    record = Record(data=data, id="n", source="/t", type="t", topic="orders")
    (on_disk, *_) = codec.decode_segment(codec.encode_segment([record]), "orders", 0)
    assert on_disk.data == dict(data, float=D("0.1"))
    assert (
        jsonvalue.dumps(on_disk.data)
        == b'{"big":1180591620717411303424,"scale":1.10,"huge":1E+400,"float":0.1}'
    )


async def test_the_tail_cache_is_trimmed_at_every_append_and_reads_stay_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records appended by this process are served from memory, at most TAIL_BYTES of stored
    segments for all topics together (and always the newest TAIL_SEGMENTS segments), trimmed
    at every append a segment at a time (so they are freed a batch at a time); older offsets
    come from SQLite, with the same data."""
    from meshconnect.mesh import tail

    monkeypatch.setattr(tail, "TAIL_BYTES", 1500)
    monkeypatch.setattr(tail, "TAIL_SEGMENTS", 1)
    store = SqliteStore(f"sqlite:///{tmp_path / 'mesh.db'}")
    await store.open()
    try:
        appended: list[Record] = []
        for start in range(0, 100, 10):
            records = batch(10, start=start) + batch(3, topic="other", start=start)
            offsets = await store.append(records)
            assert offsets == [
                *range(start, start + 10),
                *range(start // 10 * 3, start // 10 * 3 + 3),
            ]
            appended += records[:10]
            first, cached = store._tail.topics["orders"]
            assert first + len(cached) == start + 10  # the newest records, contiguous
            assert len(cached) % 10 == 0  # whole segments
            assert store._tail.size <= 1500 or len(store._tail.segments) == 1
            assert store._tail.size == sum(size for _, _, size in store._tail.segments)
        first, cached = store._tail.topics["orders"]
        assert 0 < len(cached) < 100  # bounded, not empty
        assert all(a is b for a, b in zip(cached, appended[first:], strict=True))
        recent = await store.read("orders", 95, 5)
        assert [r.offset for r in recent] == [95, 96, 97, 98, 99]
        assert all(a is b for a, b in zip(recent, appended[95:], strict=True))  # from memory
        everything = await store.read("orders", 0, 1000)
        assert [r.data for r in everything] == [{"i": i} for i in range(100)]
        assert [r.offset for r in everything] == list(range(100))
        assert everything[0] is not appended[0]  # the oldest came from SQLite
    finally:
        await store.close()


async def test_a_reader_at_the_end_waits_for_an_append_in_flight_instead_of_decoding_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader at a topic's end while this store appends to it (the sink at the start of a
    run, before anything is cached) gets nothing for now, then the appended records from
    memory: not the same segment decoded from SQLite behind the append. A reader of a topic
    this store is not appending to is not held back."""
    import meshconnect.mesh.sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "INLINE_APPEND_RECORDS", 16)  # 100 go to the thread
    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    store = SqliteStore(url)
    await store.open()
    try:
        records = batch(100)  # more than an inline append: it goes to the store thread
        appending = asyncio.ensure_future(store.append(records))
        await asyncio.sleep(0)  # the append is on the store thread now
        assert await store.read("orders", 0, 10) == []
        await appending
        got = await store.read("orders", 0, 10)
        assert all(a is b for a, b in zip(got, records[:10], strict=True))
        more = batch(100, start=100)
        appending = asyncio.ensure_future(store.append(more))
        await asyncio.sleep(0)
        assert await store.read("orders", 100, 10) == []
        await appending
        got = await store.read("orders", 100, 10)
        assert all(a is b for a, b in zip(got, more[:10], strict=True))

        other = SqliteStore(url)  # another process appends to another topic
        await other.open()
        await other.append(batch(5, topic="other"))
        await other.close()
        appending = asyncio.ensure_future(store.append(batch(100, start=200)))
        await asyncio.sleep(0)
        got = await store.read("other", 0, 10)
        assert [r.data for r in got] == [{"i": i} for i in range(5)]
        await appending
    finally:
        await store.close()


async def test_the_newest_segments_stay_cached_beyond_the_tail_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newest TAIL_SEGMENTS segments are kept even when they exceed TAIL_BYTES (large
    batches): a sink a couple of batches behind the source reads them from memory."""
    from meshconnect.mesh import tail

    monkeypatch.setattr(tail, "TAIL_BYTES", 10)
    monkeypatch.setattr(tail, "TAIL_SEGMENTS", 2)
    store = SqliteStore(f"sqlite:///{tmp_path / 'mesh.db'}")
    await store.open()
    try:
        await store.append(batch(5))
        records = batch(5, start=5) + batch(5, start=10)
        await store.append(records[:5])
        await store.append(records[5:])
        assert store._tail.topics["orders"] == (5, records)
        assert len(store._tail.segments) == 2
        got = await store.read("orders", 5, 10)
        assert all(a is b for a, b in zip(got, records, strict=True))
    finally:
        await store.close()


async def test_the_tail_drops_the_segments_every_reader_has_consumed(tmp_path: Path) -> None:
    """A cached segment goes once every group that said where it is (``consumed``) has
    passed it, not before: the slowest reader keeps it. Reads below the cache are answered
    from SQLite, and a reader at the end of an emptied tail waits for the next append."""
    store = SqliteStore(f"sqlite:///{tmp_path / 'mesh.db'}")
    await store.open()
    try:
        first, second = batch(5), batch(5, start=5)
        await store.append(first)
        await store.append(second)
        store.consumed("slow", "orders", 3)
        store.consumed("fast", "orders", 7)
        assert store._tail.topics["orders"] == (0, first + second)

        store.consumed("slow", "orders", 5)  # both past the first segment
        assert store._tail.topics["orders"] == (5, second)
        assert [s[1] for s in store._tail.segments] == [5]
        assert [r.data for r in await store.read("orders", 0, 10)] == [{"i": i} for i in range(10)]

        store.consumed("slow", "orders", 10)
        store.consumed("fast", "orders", 10)
        assert store._tail.topics["orders"] == (10, [])
        assert store._tail.size == 0
        third = batch(5, start=10)
        await store.append(third)
        got = await store.read("orders", 10, 5)
        assert all(a is b for a, b in zip(got, third, strict=True))
    finally:
        await store.close()


async def test_the_page_cache_is_small_and_a_segment_larger_than_it_round_trips(
    tmp_path: Path,
) -> None:
    """SQLite's page cache is bounded to CACHE_KIB (this process reads its own appends from
    the tail cache); a segment several times that size is written (spilling the cache) and
    read back whole by another store, from the file."""
    from meshconnect.mesh import sqlite

    url = f"sqlite:///{tmp_path / 'mesh.db'}"
    store = SqliteStore(url)
    await store.open()
    try:
        pragma = await store._query(lambda c: c.execute("PRAGMA cache_size").fetchone()[0])
        assert pragma == -sqlite.CACHE_KIB
        records = [rec("orders", {"i": i, "pad": f"{i:08d}" * 16}) for i in range(8_000)]
        await store.append(records)
        size = await store._query(
            lambda c: c.execute("SELECT length(body) FROM segments").fetchone()
        )
        assert size[0] > 4 * sqlite.CACHE_KIB * 1024
        other = SqliteStore(url)
        await other.open()
        try:
            got = await other.read("orders", 0, len(records))
        finally:
            await other.close()
        assert [r.data for r in got] == [r.data for r in records]
    finally:
        await store.close()


def test_segment_columns_check_every_record_shared_or_not() -> None:
    """encode_segment stores an attribute the batch shares once and checks it once; one that
    varies is checked for every record; the rows layout then names the culprit."""
    from meshconnect.mesh.codec import RecordEncodingError, decode_segment, encode_segment

    def make(i: int, **attributes: Any) -> Record:
        return Record({"i": i}, id=f"r{i}", source="/s", type="t", topic="orders", **attributes)

    mixed = [make(0), make(1, subject="a", dataschema="urn:x"), make(2, subject="b")]
    back = decode_segment(encode_segment(mixed), "orders", 0)
    assert [(r.subject, r.dataschema, r.data) for r in back] == [
        (None, None, {"i": 0}),
        ("a", "urn:x", {"i": 1}),
        ("b", None, {"i": 2}),
    ]
    shared_bad = [make(i, subject=7) for i in range(3)]  # type: ignore[arg-type]
    with pytest.raises(RecordEncodingError, match=r"record 0 of the batch.*'subject'"):
        encode_segment(shared_bad)
    one_bad_id = [make(0), make(1), make(2)]
    one_bad_id[2].id = 2  # type: ignore[assignment]
    with pytest.raises(RecordEncodingError, match=r"record 2 of the batch.*'id'"):
        encode_segment(one_bad_id)
    one_bad_time = [make(0, time="t0"), make(1, time=b"t1"), make(2)]  # type: ignore[arg-type]
    with pytest.raises(RecordEncodingError, match=r"record 1 of the batch.*'time'"):
        encode_segment(one_bad_time)
    none_id = [make(i) for i in range(2)]
    for r in none_id:
        r.id = None  # type: ignore[assignment]
    with pytest.raises(RecordEncodingError, match=r"record 0 of the batch.*'id'"):
        encode_segment(none_id)


def test_segment_stores_an_encoded_records_bytes_as_they_are() -> None:
    """An EncodedRecord still holding its encoding is stored as those bytes (the store does
    not decode it); one whose data was read or set, and plain records beside it, are
    encoded; the segment reads back as the records appended."""
    from meshconnect.mesh.codec import RecordEncodingError, decode_segment, encode_segment
    from meshconnect.records import EncodedRecord

    def encoded(i: int, raw: bytes) -> EncodedRecord:
        return EncodedRecord.of(raw, f"e{i}", "/s", "t", None, None, {"partitionkey": str(i)})

    # Bytes no encoder writes for the value (a space): stored as given, so not re-encoded.
    untouched = encoded(0, b'{"a": 1.50}')
    read = encoded(1, b'{"a":2}')
    read.data["a"] = 3  # a transform changing the value it read, in place
    replaced = encoded(2, b'{"a":4}')
    replaced.data = [5, None]
    plain = Record({"b": 1}, id="r3", source="/s", type="t")
    body = encode_segment([untouched, read, replaced, plain])
    assert b'{"a": 1.50}' in body
    back = decode_segment(body, "orders", 10)
    assert [(r.offset, r.data) for r in back] == [
        (10, {"a": Decimal("1.50")}),
        (11, {"a": 3}),
        (12, [5, None]),
        (13, {"b": 1}),
    ]
    assert [r.encoded_data for r in (untouched, read, replaced, plain)] == [
        b'{"a": 1.50}',
        b'{"a":3}',
        b"[5,null]",
        b'{"b":1}',
    ]
    bad = encoded(4, b"{}")
    bad.data = {"x": float("nan")}
    with pytest.raises(RecordEncodingError, match="record 1 of the batch"):
        encode_segment([encoded(5, b"{}"), bad])


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("tab\there", "extension 'partitionkey'"),
        (2**31, "32-bit integer"),
        (-(2**31) - 1, "32-bit integer"),
        (1.5, "extension 'partitionkey'"),
        ("\ufdd0", "extension 'partitionkey'"),
    ],
)
def test_segment_extensions_are_checked_for_the_batch_and_the_culprit_named(
    value: object, problem: str
) -> None:
    """The batch's extensions are checked at once (names once, strings as one text, integers
    by their bounds); a bad one still fails the batch naming its record and extension."""
    from meshconnect.mesh.codec import RecordEncodingError, decode_segment, encode_segment

    def make(i: int, key: object) -> Record:
        ext = {"partitionkey": key, "binlogpos": 2**31 - 1, "flag": True}
        return Record({"i": i}, id=f"r{i}", source="/s", type="t", topic="t", extensions=ext)

    good = [make(i, f"k{i}") for i in range(3)] + [make(3, -(2**31))]
    assert [r.extensions for r in decode_segment(encode_segment(good), "t", 0)] == [
        r.extensions for r in good
    ]
    batch = [make(0, "a"), make(1, value), make(2, "c")]
    with pytest.raises(RecordEncodingError, match=rf"record 1 of the batch.*{problem}"):
        encode_segment(batch)
    badname = [make(0, "a"), make(1, "b")]
    badname[1].extensions["Bad-Name"] = "x"
    with pytest.raises(RecordEncodingError, match=r"record 1 of the batch.*'Bad-Name'"):
        encode_segment(badname)


def test_only_encodings_a_source_gives_as_its_own_go_unchecked() -> None:
    """``EncodedRecord.of`` bytes are checked by the store (one JSON value, UTF-8, one line);
    with ``check=False`` (meshconnect's own encoder's output, as the canal source gives) they
    are stored as given: a caller that passes other bytes so breaks only its own promise."""
    from meshconnect.mesh.codec import RecordEncodingError, decode_segment, encode_segment
    from meshconnect.records import EncodedRecord

    spliced = b'{"a":1},{"a":2}'
    checked = EncodedRecord.of(spliced, "c", "/s", "t", None, None, {})
    with pytest.raises(RecordEncodingError, match=r"record 0 of the batch.*one JSON value"):
        encode_segment([checked])
    assert checked.data == spliced  # its dead letter keeps the bytes
    own = EncodedRecord.of(b'{"a":1}', "o", "/s", "t", None, None, {}, check=False)
    assert isinstance(own, EncodedRecord)
    back = decode_segment(encode_segment([own]), "t", 0)
    assert [r.data for r in back] == [{"a": 1}]
    # Extensions too: the maker's word with check=False, checked otherwise, also next to
    # records given unchecked.
    big = {"binlogpos": 2**31}  # an Integer is 32 bits
    own = EncodedRecord.of(b"1", "o", "/s", "t", None, None, dict(big), check=False)
    assert decode_segment(encode_segment([own]), "t", 0)[0].extensions == big
    checked = EncodedRecord.of(b"1", "c", "/s", "t", None, None, dict(big))
    plain = Record(1, id="p", source="/s", type="t", extensions={"tab": "a\tb"})
    for batch in ([checked], [own, checked], [own, plain]):
        with pytest.raises(RecordEncodingError, match=r"record [01] of the batch"):
            encode_segment(batch)
