"""The worker end to end in one process: delivery, resume, restarts, retries, dead letters."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from meshconnect import Transform, TransformSpec, hookimpl
from meshconnect.mesh import open_store
from meshconnect.testing import MemorySink, MemorySource, collect, run_pipelines, test_registry


@pytest.fixture(autouse=True)
def clean_memory() -> None:
    MemorySink.outputs.clear()
    MemorySource.crashed.clear()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mesh.db'}"


def pipeline(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def registry_with_transform(name: str, transform: Transform) -> Any:
    """The test registry plus a plugin that offers ``transform`` as ``type: name``."""

    class NoOptions(BaseModel):
        pass

    class Plugin:
        @hookimpl
        def meshconnect_transforms(self) -> list[TransformSpec]:
            return [TransformSpec(name, NoOptions, lambda options, compiler: transform)]

    registry = test_registry()
    registry.register(Plugin(), name)
    return registry


def records(n: int, **extra: object) -> str:
    return "[" + ", ".join(f"{{n: {i}}}" for i in range(n)) + "]"


async def test_a_bounded_run_delivers_everything_and_a_rerun_nothing_more(
    tmp_path: Path, store_url: str
) -> None:
    config = pipeline(
        tmp_path,
        f"""
        pipelines:
          - name: p
            source: {{connector: memory, config: {{records: {records(1000)}, batch_size: 64}}}}
            transforms:
              - {{type: filter, where: "data.n % 2 == 0"}}
            sinks:
              - {{connector: memory, config: {{name: out}}}}
        """,
    )
    assert await run_pipelines([config], store_url) == 0
    assert await run_pipelines([config], store_url) == 0
    assert collect("out") == [{"n": i} for i in range(0, 1000, 2)]


async def test_a_source_that_crashes_is_restarted_and_resumes_exactly(
    tmp_path: Path, store_url: str
) -> None:
    config = pipeline(
        tmp_path,
        f"""
        pipelines:
          - name: p
            source:
              connector: memory
              config: {{records: {records(500)}, batch_size: 50, fail_at: 260}}
            sinks:
              - {{connector: memory, config: {{name: out}}}}
        """,
    )
    assert await run_pipelines([config], store_url, restart_backoff=0.01) == 0
    assert collect("out") == [{"n": i} for i in range(500)]


async def test_a_sink_rejecting_records_dead_letters_them_with_context(
    tmp_path: Path, store_url: str
) -> None:
    config = pipeline(
        tmp_path,
        """
        pipelines:
          - name: p
            source:
              connector: memory
              config:
                records: [{n: 0}, {n: 1, bad: true}, {n: 2}, {n: 3, bad: true}, {n: 4}]
            topic: things
            sinks:
              - connector: memory
                config: {name: out, reject_when: bad}
                errors: {tolerance: all, dead_letter_topic: dlq.things}
        """,
    )
    assert await run_pipelines([config], store_url) == 0
    assert collect("out") == [{"n": 0}, {"n": 2}, {"n": 4}]
    store = open_store(store_url, test_registry())
    await store.open()
    dead = await store.read("dlq.things", 0, 10)
    await store.close()
    assert [
        (r.data["n"], r.extensions["errortopic"], r.extensions["erroroffset"]) for r in dead
    ] == [
        (1, "things", 1),
        (3, "things", 3),
    ]
    assert dead[0].extensions["errorstage"] == "sink"
    assert dead[0].extensions["errortype"] == "DataError"
    assert "rejects" in dead[0].extensions["errormessage"]


async def test_with_tolerance_none_the_sink_fails_then_resumes_once_fixed(
    tmp_path: Path, store_url: str
) -> None:
    text = """
        pipelines:
          - name: p
            source:
              connector: memory
              config:
                records: [{n: 0}, {n: 1}, {n: 2, bad: true}, {n: 3}]
                batch_size: 1
            sinks:
              - connector: memory
                batch_size: 1
                config: {name: out, reject_when: %s}
        """
    broken = pipeline(tmp_path, text % "bad")
    assert await run_pipelines([broken], store_url, restart_backoff=0.01) == 1
    assert collect("out") == [{"n": 0}, {"n": 1}]
    fixed = pipeline(tmp_path, text % "nothing")
    assert await run_pipelines([fixed], store_url) == 0
    assert collect("out") == [{"n": 0}, {"n": 1}, {"n": 2, "bad": True}, {"n": 3}]


async def test_a_transiently_failing_sink_gets_everything_through_with_backoff(
    tmp_path: Path, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = pipeline(
        tmp_path,
        f"""
        pipelines:
          - name: p
            source: {{connector: memory, config: {{records: {records(100)}}}}}
            sinks:
              - connector: memory
                config: {{name: out, fail_for: 1.0}}
                errors:
                  retry: {{max_attempts: 50, initial_backoff: 50ms, max_backoff: 200ms}}
        """,
    )
    with caplog.at_level(logging.WARNING, logger="meshconnect.worker"):
        assert await run_pipelines([config], store_url) == 0
    assert collect("out") == [{"n": i} for i in range(100)]
    assert "retrying in" in caplog.text


async def test_failing_transform_records_go_to_the_dead_letter_topic(
    tmp_path: Path, store_url: str
) -> None:
    config = pipeline(
        tmp_path,
        """
        pipelines:
          - name: p
            source:
              connector: memory
              config: {records: [{a: {b: 1}}, {a: "flat"}, {a: {b: 2}}]}
              errors: {tolerance: all, dead_letter_topic: dlq}
            transforms:
              - {type: mask, fields: [data.a.b]}
            topic: t
            sinks:
              - {connector: memory, topics: [t], config: {name: out}}
              - {connector: memory, name: dead, topics: [dlq], config: {name: dead}}
        """,
    )
    assert await run_pipelines([config], store_url) == 0
    assert collect("out") == [{"a": {"b": "****"}}, {"a": {"b": "****"}}]
    dead = MemorySink.outputs["dead"]
    assert [r.data for r in dead] == [{"a": "flat"}]
    assert dead[0].extensions["errorstage"].startswith("transforms[0]")


async def test_stop_drains_and_commits_a_following_source(tmp_path: Path, store_url: str) -> None:
    from meshconnect.config.loader import load_pipeline_files
    from meshconnect.worker import Worker

    config = pipeline(
        tmp_path,
        f"""
        pipelines:
          - name: p
            source: {{connector: memory, config: {{records: {records(300)}, follow: true}}}}
            sinks:
              - {{connector: memory, config: {{name: out}}}}
        """,
    )
    registry = test_registry()
    loaded = load_pipeline_files([str(config)], registry)
    store = open_store(store_url, registry)
    await store.open()
    worker = Worker(loaded, store)
    task = asyncio.create_task(worker.run())
    while len(collect("out")) < 300:
        await asyncio.sleep(0.02)
    worker.stop()
    assert await asyncio.wait_for(task, 10) == 0
    group = await store.group("p/memory")
    await store.close()
    assert group.offsets == {"p": 300}


async def test_a_failing_connector_does_not_stop_the_others(tmp_path: Path, store_url: str) -> None:
    config = pipeline(
        tmp_path,
        f"""
        pipelines:
          - name: healthy
            source: {{connector: memory, config: {{records: {records(200)}, batch_size: 10}}}}
            sinks:
              - {{connector: memory, config: {{name: healthy}}}}
          - name: broken
            source: {{connector: memory, config: {{records: [{{bad: true}}]}}}}
            sinks:
              - {{connector: memory, config: {{name: broken, reject_when: bad}}}}
        """,
    )
    assert await run_pipelines([config], store_url, restart_backoff=0.01) == 1
    assert collect("healthy") == [{"n": i} for i in range(200)]
    assert collect("broken") == []


async def test_a_bounded_run_waits_for_sinks_that_read_another_sinks_dead_letters(
    tmp_path: Path, store_url: str
) -> None:
    config = pipeline(
        tmp_path,
        f"""
        pipelines:
          - name: p
            source:
              connector: memory
              config: {{records: {records(50)}, batch_size: 5}}
            sinks:
              - connector: memory
                batch_size: 3
                # rejects all but n == 0, after failing for a while (so "dead" idles first)
                config: {{name: out, reject_when: n, fail_for: 0.5}}
                errors:
                  tolerance: all
                  dead_letter_topic: dlq
                  retry: {{max_attempts: 100, initial_backoff: 20ms, max_backoff: 50ms}}
          - name: dead
            sinks:
              - {{connector: memory, topics: [dlq], config: {{name: dead}}}}
        """,
    )
    assert await run_pipelines([config], store_url) == 0
    assert collect("out") == [{"n": 0}]
    assert collect("dead") == [{"n": i} for i in range(1, 50)]


async def test_the_files_retention_is_applied_to_the_topics(tmp_path: Path, store_url: str) -> None:
    config = pipeline(
        tmp_path,
        f"""
        retention: {{max_records: 10}}
        pipelines:
          - name: p
            source: {{connector: memory, config: {{records: {records(100)}, batch_size: 7}}}}
        """,
    )
    assert await run_pipelines([config], store_url) == 0
    assert await run_pipelines([config], store_url) == 0  # retention runs as a run starts
    store = open_store(store_url, test_registry())
    await store.open()
    (topic,) = await store.topics()
    kept = await store.read("p", 0, 1000)
    await store.close()
    assert (topic.start, topic.end) == (90, 100)
    assert [r.data["n"] for r in kept] == list(range(90, 100))


async def test_a_sink_that_retention_overtook_says_what_it_skipped(
    tmp_path: Path, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A sink that had not read records retention deleted resumes at the oldest record still
    stored, as the docs say, and logs which records it skipped: it was silent before."""
    store = open_store(store_url, test_registry())
    await store.open()
    from meshconnect.records import Record

    await store.append([Record({"n": i}, topic="p") for i in range(100)])
    await store.close()
    config = pipeline(
        tmp_path,
        """
        retention: {max_records: 10}
        pipelines:
          - name: p
            source: {connector: memory, config: {records: []}}
            sinks:
              - {connector: memory, config: {name: out}}
        """,
    )
    with caplog.at_level(logging.WARNING, logger="meshconnect.worker"):
        assert await run_pipelines([config], store_url) == 0

    assert collect("out") == [{"n": i} for i in range(90, 100)]
    assert (
        "sink p/memory: retention deleted records 0..89 of topic p before this sink read "
        "them (90 records skipped); it resumes at offset 90" in caplog.text
    )


async def test_long_runs_log_progress_per_connector(
    tmp_path: Path, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = pipeline(
        tmp_path,
        f"""
        pipelines:
          - name: p
            source:
              connector: memory
              config: {{records: {records(20)}, batch_size: 1, follow: true}}
            sinks:
              - {{connector: memory, config: {{name: out}}}}
        """,
    )
    from meshconnect.config.loader import load_pipeline_files
    from meshconnect.worker import Worker

    registry = test_registry()
    store = open_store(store_url, registry)
    await store.open()
    worker = Worker(load_pipeline_files([str(config)], registry), store, progress_every=0.05)
    with caplog.at_level(logging.INFO, logger="meshconnect.worker"):
        task = asyncio.create_task(worker.run())
        while len(collect("out")) < 20:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # a few progress periods after everything went through
        worker.stop()
        assert await task == 0
    await store.close()
    assert "progress: source p/memory RUNNING: 20 in, 20 out" in caplog.text
    assert "progress: sink p/memory RUNNING" in caplog.text


async def test_a_record_the_store_cannot_encode_is_dead_lettered_and_the_rest_stored(
    tmp_path: Path, store_url: str
) -> None:
    class Setify(Transform):
        def apply(self, record):  # type: ignore[no-untyped-def]
            if record.data.get("bad"):
                record.data["ratio"] = float("nan")  # not a JSON number
            return record

    registry = registry_with_transform("setify", Setify())
    config = pipeline(
        tmp_path,
        """
        pipelines:
          - name: p
            source:
              connector: memory
              config: {records: [{n: 0}, {n: 1, bad: true}, {n: 2}]}
              errors: {tolerance: all, dead_letter_topic: dlq}
            transforms: [{type: setify}]
            sinks:
              - {connector: memory, config: {name: out}}
              - {connector: memory, name: dead, topics: [dlq], config: {name: dead}}
        """,
    )
    assert await run_pipelines([config], store_url, registry=registry) == 0
    assert collect("out") == [{"n": 0}, {"n": 2}]
    (dead,) = MemorySink.outputs["dead"]
    assert dead.extensions["errorstage"] == "store"
    assert "not JSON-serialisable" in dead.extensions["errormessage"]
    # The nearest JSON value (NaN as null), never a Python repr.
    assert dead.data == {"n": 1, "bad": True, "ratio": None}
    assert dead.datacontenttype == "application/json"


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_a_plugin_transform_that_changes_nested_objects_in_place_cannot_reach_another_sink(
    tmp_path: Path, store_kind: str
) -> None:
    """Sinks of one topic share the stored records; a sink chain with a transform that does
    not declare ``copies_nested_objects`` runs on deep copies."""

    class Scribble(Transform):
        def apply(self, record):  # type: ignore[no-untyped-def]
            record.data["card"]["number"] = "xxxx"  # in place, nested
            return record

    registry = registry_with_transform("scribble", Scribble())
    cards = "[" + ", ".join(f"{{card: {{number: '4111-{i}'}}}}" for i in range(300)) + "]"
    config = pipeline(
        tmp_path,
        f"""
        pipelines:
          - name: p
            source: {{connector: memory, config: {{records: {cards}, batch_size: 50}}}}
            sinks:
              - {{connector: memory, name: masked, transforms: [{{type: scribble}}],
                  config: {{name: masked}}}}
              - {{connector: memory, name: plain, config: {{name: plain}}}}
        """,
    )
    url = "memory://" if store_kind == "memory" else f"sqlite:///{tmp_path / 'mesh.db'}"
    assert await run_pipelines([config], url, registry=registry) == 0
    assert collect("masked") == [{"card": {"number": "xxxx"}}] * 300
    assert collect("plain") == [{"card": {"number": f"4111-{i}"}} for i in range(300)]


async def test_a_source_polls_at_most_the_queue_s_batches_ahead_of_a_stalled_store(
    tmp_path: Path,
) -> None:
    """Backpressure: while the store's first append hangs, the source has polled that batch,
    QUEUE_BATCHES queued behind it and the one waiting to be queued; no more (what a worker
    holds in memory, docs/delivery.md)."""
    from meshconnect.config.loader import load_pipeline_files
    from meshconnect.mesh.memory import MemoryStore
    from meshconnect.worker import QUEUE_BATCHES, Worker

    class Count(Transform):
        seen = 0

        def apply(self, record):  # type: ignore[no-untyped-def]
            Count.seen += 1
            return record

    class StalledStore(MemoryStore):
        release = asyncio.Event()

        async def append(self, records, positions=None):  # type: ignore[no-untyped-def]
            if records:
                await self.release.wait()
            return await super().append(records, positions)

    registry = registry_with_transform("count", Count())
    config = pipeline(
        tmp_path,
        f"""
        pipelines:
          - name: p
            source: {{connector: memory, config: {{records: {records(100)}, batch_size: 1}}}}
            transforms:
              - {{type: count}}
            sinks:
              - {{connector: memory, config: {{name: out}}}}
        """,
    )
    store = StalledStore()
    await store.open()
    task = asyncio.create_task(Worker(load_pipeline_files([str(config)], registry), store).run())
    for _ in range(50):
        await asyncio.sleep(0.01)
    assert Count.seen == QUEUE_BATCHES + 2
    StalledStore.release.set()
    assert await task == 0
    await store.close()
    assert collect("out") == [{"n": i} for i in range(100)]


async def test_sinks_tell_the_store_what_they_delivered(tmp_path: Path) -> None:
    """After each batch it delivers, a sink loop tells the store (``consumed``) the offset
    its group reached, so a store may drop cached records every reader has passed."""
    from meshconnect.config.loader import load_pipeline_files
    from meshconnect.mesh.memory import MemoryStore
    from meshconnect.worker import Worker

    class SpyStore(MemoryStore):
        marks: list[tuple[str, str, int]] = []

        def consumed(self, group: str, topic: str, offset: int) -> None:
            self.marks.append((group, topic, offset))

    config = pipeline(
        tmp_path,
        f"""
        pipelines:
          - name: p
            source: {{connector: memory, config: {{records: {records(10)}, batch_size: 4}}}}
            topic: t
            sinks:
              - {{connector: memory, name: a, config: {{name: a}}}}
              - {{connector: memory, name: b, batch_size: 3, config: {{name: b}}}}
        """,
    )
    store = SpyStore()
    await store.open()
    assert await Worker(load_pipeline_files([str(config)], test_registry()), store).run() == 0
    await store.close()
    for group in {g for g, _, _ in SpyStore.marks}:
        offsets = [o for g, t, o in SpyStore.marks if g == group and t == "t"]
        assert offsets == sorted(offsets) and offsets[-1] == 10
    assert len({g for g, _, _ in SpyStore.marks}) == 2
