"""``meshconnect topics replay``: dead letters published again once fixed (issue 3, item 4)."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from meshconnect.cli import cli
from meshconnect.errorpolicy import ERROR_EXTENSIONS
from meshconnect.errors import StoreError
from meshconnect.mesh import open_store
from meshconnect.mesh.memory import MemoryStore
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


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mesh.db'}"


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
