"""The ``errors:`` block applied by the worker, source side and sink side (issue 3, item 3)."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

from meshconnect import RetriableError, Transform, TransformSpec, hookimpl
from meshconnect.errorpolicy import ERROR_EXTENSIONS
from meshconnect.mesh import open_store
from meshconnect.records import Record
from meshconnect.testing import (
    PLUGIN_SOURCE,
    MemorySink,
    MemorySource,
    collect,
    run_pipelines,
    test_registry,
)


@pytest.fixture(autouse=True)
def clean_memory() -> None:
    MemorySink.outputs.clear()
    MemorySink.crashed.clear()
    MemorySource.crashed.clear()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mesh.db'}"


def pipeline(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text))
    return path


async def read_topic(store_url: str, topic: str) -> list[Record]:
    store = open_store(store_url, test_registry())
    await store.open()
    try:
        return await store.read(topic, 0, 10_000)
    finally:
        await store.close()


BAD_EVERY_FIFTH = (
    "[" + ", ".join(f"{{n: {i}, bad: {str(i % 5 == 2).lower()}}}" for i in range(40)) + "]"
)


async def test_a_crash_between_dead_lettering_and_committing_dead_letters_once(
    tmp_path: Path, store_url: str
) -> None:
    """The sink dead-letters two records, then crashes before its commit; restarted, it is
    re-fed the same records, which fail again, and the DLQ still holds each of them once."""
    config = pipeline(
        tmp_path,
        f"""
        pipelines:
          - name: p
            source: {{connector: memory, config: {{records: {BAD_EVERY_FIFTH}}}}}
            topic: t
            sinks:
              - connector: memory
                config: {{name: out, reject_when: bad, crash_before_commit: true}}
                errors: {{tolerance: all, dead_letter_topic: dlq}}
        """,
    )
    assert await run_pipelines([config], store_url, restart_backoff=0.01) == 0
    assert MemorySink.crashed == {"out"}  # the crash did happen
    assert collect("out") == [{"n": i, "bad": False} for i in range(40) if i % 5 != 2]
    dead = await read_topic(store_url, "dlq")
    assert [r.extensions["erroroffset"] for r in dead] == [i for i in range(40) if i % 5 == 2]


def test_an_offsets_reset_of_the_sink_dead_letters_again(tmp_path: Path, store_url: str) -> None:
    from click.testing import CliRunner

    from meshconnect.cli import cli

    config = pipeline(
        tmp_path,
        """
        pipelines:
          - name: p
            source: {connector: memory, config: {records: [{n: 0}, {n: 1, bad: true}]}}
            topic: t
            sinks:
              - name: out
                connector: memory
                config: {name: out, reject_when: bad}
                errors: {tolerance: all, dead_letter_topic: dlq}
        """,
    )
    assert asyncio.run(run_pipelines([config], store_url)) == 0
    plugins = tmp_path / "plugins.toml"
    plugins.write_text('[plugins]\npaths = ["memory_plugin.py"]\n')
    (tmp_path / "memory_plugin.py").write_text(PLUGIN_SOURCE)
    args = ["--store", store_url, "--plugins", str(plugins), "offsets", "reset", str(config)]
    result = CliRunner().invoke(cli, [*args, "p", "--sink", "out", "--yes"])
    assert result.exit_code == 0, result.output
    assert asyncio.run(run_pipelines([config], store_url)) == 0
    assert len(asyncio.run(read_topic(store_url, "dlq"))) == 2


async def test_a_retriable_error_that_outlasts_the_attempts_is_dead_lettered_under_all(
    tmp_path: Path, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = pipeline(
        tmp_path,
        """
        pipelines:
          - name: p
            source: {connector: memory, config: {records: [{n: 0}, {n: 1}]}}
            topic: t
            sinks:
              - connector: memory
                config: {name: out, fail_for: 60}
                errors:
                  retry: {max_attempts: 3, initial_backoff: 1ms, max_backoff: 2ms}
                  tolerance: all
                  dead_letter_topic: dlq
        """,
    )
    with caplog.at_level(logging.WARNING, logger="meshconnect.worker"):
        assert await run_pipelines([config], store_url) == 0
    assert collect("out") == []
    dead = await read_topic(store_url, "dlq")
    assert [(r.data, r.extensions["errortype"], r.extensions["errorattempts"]) for r in dead] == [
        ({"n": 0}, "RetriableError", 3),
        ({"n": 1}, "RetriableError", 3),
    ]
    assert "(attempt 2 of 3)" in caplog.text


async def test_a_retriable_error_that_outlasts_the_attempts_fails_the_sink_under_none(
    tmp_path: Path, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = pipeline(
        tmp_path,
        """
        pipelines:
          - name: p
            source: {connector: memory, config: {records: [{n: 0}]}}
            sinks:
              - connector: memory
                config: {name: out, fail_for: 60}
                errors: {retry: {max_attempts: 2, initial_backoff: 1ms, max_backoff: 1ms}}
        """,
    )
    with caplog.at_level(logging.ERROR, logger="meshconnect.worker"):
        assert await run_pipelines([config], store_url, restart_backoff=0.001) == 1
    assert "sink p/memory FAILED: RetriableError: memory sink: simulated" in caplog.text


async def test_a_config_error_stops_the_connector_without_restarts(
    tmp_path: Path, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A path that cannot be created is a config error (ENOTDIR): restarting cannot help."""
    (tmp_path / "afile").write_text("")
    config = pipeline(
        tmp_path,
        """
        pipelines:
          - name: p
            source: {connector: memory, config: {records: [{n: 0}]}}
            sinks:
              - {connector: file, config: {path: afile/sub/out.jsonl}}
        """,
    )
    with caplog.at_level(logging.INFO, logger="meshconnect.worker"):
        assert await run_pipelines([config], store_url, restart_backoff=0.001) == 1
    assert "sink p/file FAILED: ConfigError: file sink" in caplog.text
    assert "fix the path or its permissions" in caplog.text
    assert "restarting sink" not in caplog.text


async def test_source_side_tolerance_none_fails_then_resumes_once_fixed(
    tmp_path: Path, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A transform failure under ``tolerance: none`` fails the source with the reason; fixed,
    it resumes from its committed position and nothing is lost or repeated."""
    text = """
        pipelines:
          - name: p
            source:
              connector: memory
              config:
                records: [{n: 0}, {n: 1}, {n: 2, a: "flat"}, {n: 3}]
                batch_size: 1
            transforms:
              - {type: mask, fields: [data.a.b], when: "%s"}
            sinks:
              - {connector: memory, config: {name: out}}
        """
    broken = pipeline(tmp_path, text % "data.n >= 0")
    with caplog.at_level(logging.ERROR, logger="meshconnect.worker"):
        assert await run_pipelines([broken], store_url, restart_backoff=0.001) == 1
    assert "source p/memory FAILED: DataError: transforms[0] (mask)" in caplog.text
    assert collect("out") == [{"n": 0}, {"n": 1}]
    fixed = pipeline(tmp_path, text % "data.n < 0")
    assert await run_pipelines([fixed], store_url) == 0
    assert collect("out") == [{"n": 0}, {"n": 1}, {"n": 2, "a": "flat"}, {"n": 3}]


async def test_a_dead_letter_carries_every_context_extension(
    tmp_path: Path, store_url: str
) -> None:
    config = pipeline(
        tmp_path,
        """
        pipelines:
          - name: p
            source:
              connector: memory
              config: {records: [{n: 1, bad: true}]}
            topic: t
            sinks:
              - name: out
                connector: memory
                transforms: [{type: insert_field, field: data.seen, value: true}]
                config: {name: out, reject_when: bad}
                errors: {tolerance: all, dead_letter_topic: dlq}
        """,
    )
    assert await run_pipelines([config], store_url) == 0
    (dead,) = await read_topic(store_url, "dlq")
    assert set(ERROR_EXTENSIONS) <= set(dead.extensions)
    assert {k: dead.extensions[k] for k in ERROR_EXTENSIONS if k != "errortime"} == {
        "errorstage": "sink",
        "errorpipeline": "p",
        "errorconnector": "out",
        "errortype": "DataError",
        "errormessage": "memory sink rejects records with 'bad'",
        "errortopic": "t",
        "erroroffset": 0,
        "errorattempts": 1,
    }
    # The dead letter is the record as the sink saw it (after the sink's transforms).
    assert dead.data == {"n": 1, "bad": True, "seen": True}


class _FlakyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Flaky(Transform):
    """Raises RetriableError for its first ``failures_left`` calls, and always for records
    with ``data.never`` (a lookup service that is down for a while, or for good)."""

    failures_left: ClassVar[int] = 0

    def apply(self, record: Record) -> Record:
        if record.data.get("never") or _Flaky.failures_left > 0:
            _Flaky.failures_left -= 1
            raise RetriableError("lookup service unavailable")
        return record


class _FlakyPlugin:
    @hookimpl
    def meshconnect_transforms(self) -> list[TransformSpec]:
        return [TransformSpec("flaky", _FlakyOptions, lambda options, compiler: _Flaky())]


def flaky_registry() -> Any:
    registry = test_registry()
    registry.register(_FlakyPlugin(), "flaky")
    return registry


async def test_a_transform_failing_transiently_is_retried_with_backoff(
    tmp_path: Path, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    _Flaky.failures_left = 3
    config = pipeline(
        tmp_path,
        f"""
        pipelines:
          - name: p
            source:
              connector: memory
              config: {{records: {[{"n": i} for i in range(10)]}}}
              errors: {{retry: {{max_attempts: 5, initial_backoff: 1ms, max_backoff: 2ms}}}}
            transforms: [{{type: flaky}}]
            sinks: [{{connector: memory, config: {{name: out}}}}]
        """,
    )
    with caplog.at_level(logging.WARNING, logger="meshconnect.worker"):
        assert await run_pipelines([config], store_url, registry=flaky_registry()) == 0
    # The three retried records are back in their places.
    assert collect("out") == [{"n": i} for i in range(10)]
    assert (
        "source p/memory transforms[0] (flaky) failed for 3 record(s) (attempt 1 of 5): "
        "RetriableError: lookup service unavailable; retrying in" in caplog.text
    )


async def test_a_sink_transform_failing_for_good_is_dead_lettered_after_its_attempts(
    tmp_path: Path, store_url: str
) -> None:
    config = pipeline(
        tmp_path,
        """
        pipelines:
          - name: p
            source: {connector: memory, config: {records: [{n: 0}, {n: 1, never: true}]}}
            topic: t
            sinks:
              - connector: memory
                config: {name: out}
                transforms: [{type: flaky}]
                errors:
                  retry: {max_attempts: 3, initial_backoff: 1ms, max_backoff: 2ms}
                  tolerance: all
                  dead_letter_topic: dlq
        """,
    )
    assert await run_pipelines([config], store_url, registry=flaky_registry()) == 0
    assert collect("out") == [{"n": 0}]
    (dead,) = await read_topic(store_url, "dlq")
    assert dead.extensions["errorstage"] == "sinks[0].transforms[0] (flaky)"
    assert dead.extensions["errorattempts"] == 3
    assert "lookup service unavailable" in dead.extensions["errormessage"]


def test_one_backoff_with_equal_jitter_for_retries_and_restarts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The wait after attempt n lies between half and all of min(max, initial * 2^(n-1)), as
    docs/errors.md says; retries (backoff_delay) and the supervisor's restarts use it."""
    import random

    from meshconnect import worker
    from meshconnect.config.model import RetryPolicy
    from meshconnect.errorpolicy import backoff, backoff_delay

    policy = RetryPolicy(initial_backoff=0.2, max_backoff=3.0)
    for attempt, ceiling in [(1, 0.2), (2, 0.4), (4, 1.6), (5, 3.0), (200, 3.0)]:
        waits = [backoff_delay(policy, attempt) for _ in range(300)]
        assert ceiling / 2 <= min(waits) and max(waits) <= ceiling
        assert max(waits) - min(waits) > ceiling / 4  # jittered, not fixed
    random.seed(7)
    first = backoff(3, 1.0, 60.0)
    random.seed(7)
    assert backoff_delay(RetryPolicy(initial_backoff=1.0, max_backoff=60.0), 3) == first
    assert worker.backoff is backoff  # the supervisor's restarts use the same function


async def test_a_stop_while_a_write_is_retried_leaves_the_batch_for_the_next_run(
    tmp_path: Path, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping a worker whose target was down (the cdctrial: PostgreSQL stopped under a
    replication) waited out the whole retry budget (minutes with `max_backoff: 30s`) and then,
    under `tolerance: all`, dead-lettered the batch: the copy missed those changes. A stop now
    ends the retries at once; the batch is neither written, nor dead-lettered, nor committed,
    and the next run delivers it."""
    from meshconnect.config.loader import load_pipeline_files
    from meshconnect.worker import Worker

    text = """
        pipelines:
          - name: p
            source: {connector: memory, config: {records: [{n: 0}, {n: 1}]}}
            topic: t
            sinks:
              - name: out
                connector: memory
                config: {name: out, fail_for: FAIL}
                errors:
                  retry: {max_attempts: 3, initial_backoff: 500ms, max_backoff: 500ms}
                  tolerance: all
                  dead_letter_topic: dlq
        """
    config = pipeline(tmp_path, text.replace("FAIL", "600"))
    store = open_store(store_url, test_registry())
    await store.open()
    worker = Worker(load_pipeline_files([str(config)], test_registry()), store)
    with caplog.at_level(logging.WARNING, logger="meshconnect.worker"):
        run = asyncio.ensure_future(worker.run())
        for _ in range(3000):  # until the first retry is announced
            if any("write failed (attempt 1 of 3)" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.01)
        worker.stop()
        code = await run
    await store.close()
    messages = [r.getMessage() for r in caplog.records]
    assert code == 0
    assert not any("attempt 2 of 3" in m for m in messages), messages
    assert any("stopping while a write is retried" in m for m in messages), messages
    # Not a failure: nothing at ERROR, the sink "stopped while retrying".
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], messages
    assert any("sink p/out stopped while retrying" in m for m in messages), messages
    assert collect("out") == []
    assert await read_topic(store_url, "dlq") == []

    config = pipeline(tmp_path, text.replace("FAIL", "0"))
    assert await run_pipelines([config], store_url) == 0
    assert collect("out") == [{"n": 0}, {"n": 1}]
    assert await read_topic(store_url, "dlq") == []
