"""``meshconnect topics replay``: dead letters published again once fixed (issue 3, item 4)."""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from meshconnect.cli import cli
from meshconnect.errorpolicy import ERROR_EXTENSIONS
from meshconnect.errors import StoreError
from meshconnect.mesh import open_store
from meshconnect.mesh.memory import MemoryStore
from meshconnect.mesh.routing import partition_for, partition_topic
from meshconnect.offsets import partitions_id
from meshconnect.records import Record
from meshconnect.replay import replay_dead_letters
from meshconnect.testing import MemorySink, collect, run_pipelines, test_registry

PIPELINE = """
pipelines:
  - name: p
    source:
      connector: memory
      config:
        records:
          - {n: 0}
          - {n: 1, bad: true}
          - {n: 2}
          - {n: 3, bad: true}%s
    transforms:
      - {type: mask, fields: [data.a.b], when: "data.a != null"}
    topic: things
    sinks:
      - name: out
        connector: memory
        config: {name: out, reject_when: %s}
        errors: {tolerance: all, dead_letter_topic: dlq}
"""


@pytest.fixture(autouse=True)
def clean_memory() -> None:
    MemorySink.outputs.clear()


@pytest.fixture(params=["sqlite", "memory"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty mesh on each embedded store (integration/test_store_redis.py: on Redis)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mesh.db'}"
        return
    name = f"replay-{uuid.uuid4().hex[:12]}"
    yield f"memory://{name}"
    MemoryStore.discard(name)


def run(tmp_path: Path, store_url: str, reject: str = "bad", source_dlq: bool = False) -> None:
    """Run the pipeline; with ``source_dlq`` a record fails the mask transform too, and the
    source's errors policy dead-letters it to the same DLQ."""
    path = tmp_path / "p.yaml"
    text = PIPELINE % ("\n          - {n: 4, a: flat}" if source_dlq else "", reject)
    if source_dlq:
        text = text.replace(
            "      config:\n        records:",
            "      errors: {tolerance: all, dead_letter_topic: dlq}\n"
            "      config:\n        records:",
        )
    path.write_text(textwrap.dedent(text))
    assert asyncio.run(run_pipelines([path], store_url)) == 0


def replay(store_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--store", store_url, "topics", "replay", *args])


def read(store_url: str, topic: str) -> list[Record]:
    async def main() -> list[Record]:
        store = open_store(store_url, test_registry())
        await store.open()
        try:
            return await store.read(topic, 0, 10_000)
        finally:
            await store.close()

    return asyncio.run(main())


def test_replay_publishes_the_dead_letters_without_their_error_context(
    tmp_path: Path, store_url: str
) -> None:
    run(tmp_path, store_url)
    dead = read(store_url, "dlq")
    result = replay(store_url, "dlq", "--to", "fixed")
    assert result.exit_code == 0, result.output
    assert "replayed 2 record(s) from dlq to fixed (offsets 0..2); 0 skipped" in result.output
    replayed = read(store_url, "fixed")
    assert [r.data for r in replayed] == [{"n": 1, "bad": True}, {"n": 3, "bad": True}]
    for before, after in zip(dead, replayed, strict=True):
        assert (after.id, after.source, after.type) == (before.id, before.source, before.type)
        assert not set(after.extensions) & set(ERROR_EXTENSIONS)


def test_a_second_replay_replays_only_new_dead_letters_and_can_start_over(
    tmp_path: Path, store_url: str
) -> None:
    run(tmp_path, store_url)
    assert replay(store_url, "dlq", "--to", "fixed").exit_code == 0
    again = replay(store_url, "dlq", "--to", "fixed")
    assert "replayed 0 record(s)" in again.output
    assert "offsets below 2 were replayed to fixed before" in again.output
    # New dead letters arrive.
    asyncio.run(_append(store_url, "dlq", [Record({"n": 9}, extensions={"errortype": "X"})]))
    third = replay(store_url, "dlq", "--to", "fixed")
    assert "replayed 1 record(s) from dlq to fixed (offsets 2..3)" in third.output
    assert [r.data for r in read(store_url, "fixed")] == [
        {"n": 1, "bad": True},
        {"n": 3, "bad": True},
        {"n": 9},
    ]
    over = replay(store_url, "dlq", "--to", "fixed", "--from-beginning")
    assert "replayed 3 record(s)" in over.output
    assert len(read(store_url, "fixed")) == 6


async def _append(store_url: str, topic: str, records: list[Record]) -> None:
    store = open_store(store_url, test_registry())
    await store.open()
    try:
        for r in records:
            r.topic = topic
        await store.append(records)
    finally:
        await store.close()


def test_where_filters_on_the_error_context(tmp_path: Path, store_url: str) -> None:
    """Source-side dead letters (a transform failed) and sink-side ones share the DLQ; replay
    only those of the sink."""
    run(tmp_path, store_url, source_dlq=True)
    stages = [r.extensions["errorstage"] for r in read(store_url, "dlq")]
    assert sorted(stages) == ["sink", "sink", "transforms[0] (mask)"]
    result = replay(store_url, "dlq", "--to", "fixed", "--where", "errorstage == 'sink'")
    assert result.exit_code == 0, result.output
    assert "replayed 2 record(s)" in result.output
    assert "1 skipped by --where" in result.output
    assert [r.data["n"] for r in read(store_url, "fixed")] == [1, 3]


def test_a_dry_run_counts_and_changes_nothing(tmp_path: Path, store_url: str) -> None:
    run(tmp_path, store_url)
    result = replay(store_url, "dlq", "--to", "fixed", "--dry-run")
    assert "would replay 2 record(s)" in result.output
    assert read(store_url, "fixed") == []
    assert "replayed 2 record(s)" in replay(store_url, "dlq", "--to", "fixed").output


def test_a_bad_where_or_a_missing_topic_is_a_clear_error(tmp_path: Path, store_url: str) -> None:
    run(tmp_path, store_url)
    bad = replay(store_url, "dlq", "--to", "fixed", "--where", "errortype ==")
    assert bad.exit_code == 1
    assert "--where" in bad.output
    itself = replay(store_url, "dlq", "--to", "dlq")
    assert itself.exit_code == 1
    assert "another topic" in itself.output
    missing = replay(store_url, "nope", "--to", "fixed")
    assert missing.exit_code == 1
    assert "no topic 'nope'" in missing.output


def test_replayed_records_reach_the_fixed_sink_and_nothing_is_lost(
    tmp_path: Path, store_url: str
) -> None:
    """The whole story: a sink rejects two records, the sink is fixed, the dead letters are
    replayed into its topic, and the sink now holds every record."""
    run(tmp_path, store_url)
    assert collect("out") == [{"n": 0}, {"n": 2}]
    assert replay(store_url, "dlq", "--to", "things").exit_code == 0
    run(tmp_path, store_url, reject="nothing")
    assert sorted(r["n"] for r in collect("out")) == [0, 1, 2, 3]


class _FailingSecondAppend(MemoryStore):
    """A memory store whose second append fails (a crash mid-replay)."""

    appends = 0

    async def append(
        self,
        records: Sequence[Record],
        positions: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    ) -> list[int]:
        type(self).appends += 1
        if type(self).appends == 2:
            raise StoreError("simulated crash")
        return await super().append(records, positions)


async def test_a_replay_that_fails_midway_resumes_without_duplicates() -> None:
    store = _FailingSecondAppend("memory://replay-crash")
    await store.open()
    dead = [Record({"n": i}, extensions={"errortype": "DataError"}) for i in range(5)]
    for r in dead:
        r.topic = "dlq"
    await store.append(dead)  # append 1: the dead letters
    with pytest.raises(StoreError):
        await replay_dead_letters(store, "dlq", "to", batch_size=2)  # 2 fails: nothing kept
    first = await replay_dead_letters(store, "dlq", "to", batch_size=2)
    assert (first.start, first.replayed) == (0, 5)
    assert [r.data["n"] for r in await store.read("to", 0, 100)] == [0, 1, 2, 3, 4]
    await store.close()


# -- into a partitioned topic (docs/scaleout.md#partitions) ---------------------------------------

PRODUCER = """
pipelines:
  - name: %s
    source:
      connector: memory
      config:
        records: [%s]
    transforms:
      - {type: set_key, fields: [data.k]}
    topic: "%s"
    partitions: %d
"""


def produce(
    tmp_path: Path, store_url: str, topic: str, partitions: int, keys: Sequence[str], name: str
) -> None:
    """Run a partitioned pipeline without sinks that writes one record per key to ``topic``
    (a literal or a template over ``data.t``): the store records its count."""
    path = tmp_path / f"{name}.yaml"
    rows = ", ".join(f"{{k: {k}, t: a, seq: {i}}}" for i, k in enumerate(keys))
    path.write_text(textwrap.dedent(PRODUCER % (name, rows, topic, partitions)))
    assert asyncio.run(run_pipelines([path], store_url)) == 0


def dead_letters(store_url: str, keys: Sequence[str | None]) -> None:
    """Dead letters in ``dlq``, one per key (None: a record without a partitionkey)."""
    records = []
    for i, key in enumerate(keys):
        extensions: dict[str, Any] = {"errortype": "DataError", "errortopic": "orders"}
        if key is not None:
            extensions["partitionkey"] = key
        records.append(Record({"n": i, "k": key}, extensions=extensions))
    asyncio.run(_append(store_url, "dlq", records))


def stored(store_url: str, topic: str, partitions: int) -> dict[str, list[Any]]:
    """The data in each partition of ``topic``, and in the unpartitioned topic."""
    names = [topic, *(partition_topic(topic, p) for p in range(partitions))]
    return {name: [r.data for r in read(store_url, name)] for name in names}


KEYS = [f"c{i}" for i in range(12)]


def test_replay_into_a_partitioned_topic_sends_each_record_to_its_keys_partition(
    tmp_path: Path, store_url: str
) -> None:
    """A replayed record of key K lands in K's partition, after K's earlier records (read by
    the consumer that reads them, in order with them); one without a key in partition 0,
    as the router puts it."""
    produce(tmp_path, store_url, "orders", 4, KEYS, "orders")
    dead_letters(store_url, ["c3", "c7", None, "c10"])
    result = replay(store_url, "dlq", "--to", "orders")
    assert result.exit_code == 0, result.output
    assert "replayed 4 record(s) from dlq to orders (offsets 0..4)" in result.output
    assert "orders has 4 partitions" in result.output
    after = stored(store_url, "orders", 4)
    assert after["orders"] == []  # nothing in the unpartitioned topic
    for n, key in enumerate(["c3", "c7", None, "c10"]):
        partition = after[partition_topic("orders", partition_for(key, 4))]
        assert {"n": n, "k": key} in partition
        if key is not None:  # after the key's own record, in the same partition
            mine = [row for row in partition if row["k"] == key]
            assert mine == [{"k": key, "t": "a", "seq": KEYS.index(key)}, {"n": n, "k": key}]
    assert {"n": 2, "k": None} in after["orders#0"]
    assert sum(len(rows) for rows in after.values()) == len(KEYS) + 4
    # A topic with no recorded count is replayed to as before: unpartitioned.
    assert replay(store_url, "dlq", "--to", "fixed").exit_code == 0
    assert len(read(store_url, "fixed")) == 4
    assert stored(store_url, "fixed", 1)["fixed#0"] == []


def test_records_written_before_the_topic_had_partitions_do_not_stop_a_replay(
    tmp_path: Path, store_url: str
) -> None:
    """A pipeline given ``partitions:`` after it wrote keeps its earlier records in the
    unpartitioned topic (docs/scaleout.md#partitions): a replayed record still goes to its
    key's partition, where the router puts the key's records now."""
    asyncio.run(_append(store_url, "orders", [Record({"old": True})]))
    produce(tmp_path, store_url, "orders", 4, KEYS, "orders")
    dead_letters(store_url, ["c3", None])
    result = replay(store_url, "dlq", "--to", "orders")
    assert result.exit_code == 0, result.output
    after = stored(store_url, "orders", 4)
    assert after["orders"] == [{"old": True}]
    assert {"n": 0, "k": "c3"} in after[partition_topic("orders", partition_for("c3", 4))]
    assert {"n": 1, "k": None} in after["orders#0"]


def test_a_dry_run_says_how_many_would_go_to_each_partition(tmp_path: Path, store_url: str) -> None:
    produce(tmp_path, store_url, "orders", 4, KEYS, "orders")
    keys = ["c1", "c1", "c5", None, "c9", "c2"]
    dead_letters(store_url, keys)
    before = stored(store_url, "orders", 4)
    result = replay(store_url, "dlq", "--to", "orders", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would replay 6 record(s) from dlq to orders" in result.output
    expected: dict[str, int] = {}
    for key in keys:
        name = partition_topic("orders", partition_for(key, 4))
        expected[name] = expected.get(name, 0) + 1
    lines = [line.strip() for line in result.output.splitlines() if line.startswith("  ")]
    assert lines == [f"{name}: {count}" for name, count in sorted(expected.items())]
    assert stored(store_url, "orders", 4) == before  # nothing written, nothing moved
    assert "replayed 6 record(s) from dlq to orders (offsets 0..6)" in (
        replay(store_url, "dlq", "--to", "orders").output
    )


def test_a_second_partitioned_replay_replays_nothing(tmp_path: Path, store_url: str) -> None:
    """The position is appended with the records of every partition at once: a second run
    finds nothing new, and the partitions hold each dead letter once."""
    produce(tmp_path, store_url, "orders", 3, KEYS, "orders")
    dead_letters(store_url, KEYS)
    assert replay(store_url, "dlq", "--to", "orders").exit_code == 0
    first = stored(store_url, "orders", 3)
    again = replay(store_url, "dlq", "--to", "orders")
    assert again.exit_code == 0, again.output
    assert "replayed 0 record(s)" in again.output
    assert stored(store_url, "orders", 3) == first
    replayed = {row["n"]: name for name, rows in first.items() for row in rows if "n" in row}
    assert replayed == {
        n: partition_topic("orders", partition_for(k, 3)) for n, k in enumerate(KEYS)
    }


def test_a_templated_topic_takes_the_count_of_the_partitioned_pipelines(
    tmp_path: Path, store_url: str
) -> None:
    """``cdc.{data.t}`` writes cdc.a#k; the store records the pipeline's count, not the topics
    its template made: the one count of the store's partitioned pipelines is the count."""
    produce(tmp_path, store_url, "cdc.{data.t}", 3, KEYS, "cdc")
    dead_letters(store_url, ["c4", None])
    result = replay(store_url, "dlq", "--to", "cdc.a")
    assert result.exit_code == 0, result.output
    assert "cdc.a has 3 partitions (the count of partitioned pipeline(s) cdc)" in result.output
    after = stored(store_url, "cdc.a", 3)
    assert {"n": 0, "k": "c4"} in after[partition_topic("cdc.a", partition_for("c4", 3))]
    assert {"n": 1, "k": None} in after["cdc.a#0"]
    # A topic the template has not written: unpartitioned, as before.
    assert replay(store_url, "dlq", "--to", "cdc.b").exit_code == 0
    assert len(read(store_url, "cdc.b")) == 2


def test_an_ambiguous_partition_count_is_refused_and_nothing_changes(
    tmp_path: Path, store_url: str
) -> None:
    produce(tmp_path, store_url, "cdc.{data.t}", 3, KEYS, "cdc")
    produce(tmp_path, store_url, "orders", 4, KEYS, "orders")
    dead_letters(store_url, ["c1", None])
    # Two counts in the store, and which pipeline's template wrote cdc.a is not recorded.
    two = replay(store_url, "dlq", "--to", "cdc.a")
    assert two.exit_code == 1
    assert "--to 'cdc.a': the store holds its partitions cdc.a#0" in two.output
    assert "different counts (partitions: 3 (cdc); partitions: 4 (orders))" in two.output
    # A partition beyond the recorded count.
    asyncio.run(_append(store_url, "cdc.b#5", [Record({"old": True})]))
    produce(tmp_path, store_url, "cdc.b", 3, ["c1"], "cdcb")
    beyond = replay(store_url, "dlq", "--to", "cdc.b")
    assert beyond.exit_code == 1
    assert "holds its partitions cdc.b#5 beyond it" in beyond.output
    # Partitions and no count recorded for them or any pipeline (another store's data).
    asyncio.run(_append(store_url, "loose#1", [Record({"old": True})]))
    asyncio.run(_set_positions(store_url, "partitions/cdc", None))
    asyncio.run(_set_positions(store_url, "partitions/orders", None))
    asyncio.run(_set_positions(store_url, "partitions/cdcb", None))
    loose = replay(store_url, "dlq", "--to", "loose")
    assert loose.exit_code == 1
    assert "holds its partitions loose#1 but no partition count is recorded" in loose.output
    # An explicit partition: the topic is what --to names.
    explicit = replay(store_url, "dlq", "--to", "orders#2")
    assert explicit.exit_code == 1
    assert "--to 'orders#2' names partition 2 of topic 'orders': give the topic" in (
        explicit.output
    )
    # Nothing replayed anywhere, and no replay position stored.
    assert read(store_url, "orders") == []
    for topic, count in [("orders", 4), ("cdc.a", 3)]:
        rows = [row for rows in stored(store_url, topic, count).values() for row in rows]
        assert not [row for row in rows if "n" in row]
    assert not asyncio.run(_replay_positions(store_url))


async def _set_positions(store_url: str, ident: str, positions: Any) -> None:
    store = open_store(store_url, test_registry())
    await store.open()
    try:
        await store.set_positions(ident, positions)
    finally:
        await store.close()


async def _replay_positions(store_url: str) -> list[str]:
    store = open_store(store_url, test_registry())
    await store.open()
    try:
        return [i for i in await store.source_ids() if i.startswith("replay/")]
    finally:
        await store.close()


async def test_a_partitioned_replay_that_fails_midway_resumes_without_duplicates() -> None:
    """The crash guarantee holds across partitions: a failed append keeps none of its
    records in any partition, and the resumed replay writes each dead letter once."""
    _FailingSecondAppend.appends = 0
    store = _FailingSecondAppend("memory://replay-crash-partitioned")
    await store.open()
    await store.set_positions(partitions_id("topic:to"), {"count": {"n": 3}})
    dead = [Record({"n": i}, extensions={"partitionkey": f"k{i}"}) for i in range(6)]
    for r in dead:
        r.topic = "dlq"
    await store.append(dead)  # append 1: the dead letters
    with pytest.raises(StoreError):
        await replay_dead_letters(store, "dlq", "to", batch_size=2)  # 2 fails: nothing kept
    first = await replay_dead_letters(store, "dlq", "to", batch_size=2)
    assert (first.start, first.replayed) == (0, 6)
    where = {
        r.data["n"]: p for p in range(3) for r in await store.read(partition_topic("to", p), 0, 99)
    }
    assert where == {i: partition_for(f"k{i}", 3) for i in range(6)}
    assert (await replay_dead_letters(store, "dlq", "to")).replayed == 0
    await store.close()
    MemoryStore.discard("replay-crash-partitioned")
