"""Per-record sink results (BatchError) and partial commits (Flushed, tick), with the toy sinks
of tests/fixtures/toy_sinks.py: a non-idempotent sink that counts deliveries and a
multipart-like sink that holds an open part."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshconnect import ConnectorContext, Record
from meshconnect.mesh.sqlite import SqliteStore
from meshconnect.testing import (
    MemorySink,
    MemorySinkConfig,
    SinkConformance,
    collect,
    run_pipelines,
    test_registry,
)

TOY_SINKS = Path(__file__).parent / "fixtures" / "toy_sinks.py"


def registry() -> Any:
    spec = importlib.util.spec_from_file_location("toy_sinks", TOY_SINKS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    registry = test_registry()
    registry.register(module, "toy_sinks")
    return registry


async def read_topic(store_url: str, topic: str) -> list[Any]:
    store = SqliteStore(store_url)
    await store.open()
    try:
        return await store.read(topic, 0, 10_000)
    finally:
        await store.close()


async def committed(store_url: str, group: str) -> dict[str, int]:
    store = SqliteStore(store_url)
    await store.open()
    try:
        return (await store.group(group)).offsets
    finally:
        await store.close()


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


async def test_a_poison_record_in_a_batch_of_100_is_dead_lettered_and_the_99_delivered_once(
    tmp_path: Path,
) -> None:
    records = [{"n": i, "poison": i == 37, "flaky": i == 60} for i in range(100)]
    config = write(
        tmp_path / "p.yaml",
        f"""
        pipelines:
          - name: p
            source: {{connector: memory, config: {{records: {json.dumps(records)}}}}}
            topic: t
            sinks:
              - name: out
                connector: counting
                batch_size: 100
                config: {{deliveries: deliveries.jsonl}}
                errors:
                  retry: {{max_attempts: 3, initial_backoff: 1ms}}
                  tolerance: all
                  dead_letter_topic: dlq
        """,
    )
    store_url = f"sqlite:///{tmp_path / 'mesh.db'}"
    assert await run_pipelines([config], store_url, registry=registry()) == 0
    delivered = [json.loads(line)["id"] for line in (tmp_path / "deliveries.jsonl").open()]
    expected = [f"p-{i}" for i in range(100) if i != 37]
    # Exactly once each: the flaky record was sent again alone, no success was re-sent.
    assert sorted(delivered) == sorted(expected)
    assert len(delivered) == 99
    dead = await read_topic(store_url, "dlq")
    assert [(r.id, r.extensions["errortype"]) for r in dead] == [("p-37", "DataError")]


async def test_a_poison_record_fails_the_sink_under_tolerance_none(tmp_path: Path) -> None:
    records = [{"n": i, "poison": i == 3} for i in range(10)]
    config = write(
        tmp_path / "p.yaml",
        f"""
        pipelines:
          - name: p
            source: {{connector: memory, config: {{records: {json.dumps(records)}}}}}
            topic: t
            sinks:
              - name: out
                connector: counting
                config: {{deliveries: deliveries.jsonl}}
        """,
    )
    store_url = f"sqlite:///{tmp_path / 'mesh.db'}"
    assert await run_pipelines([config], store_url, registry=registry(), restart_backoff=0.001) == 1
    assert await committed(store_url, "p/out") == {}


async def test_a_partial_flush_commits_only_the_uploaded_parts_and_the_end_closes_the_last(
    tmp_path: Path,
) -> None:
    records = [{"n": i} for i in range(95)]
    config = write(
        tmp_path / "p.yaml",
        f"""
        pipelines:
          - name: p
            source: {{connector: memory, config: {{records: {json.dumps(records)}, batch_size: 7}}}}
            topic: t
            sinks:
              - name: out
                connector: multipart
                batch_size: 13
                commit_interval: 0s
                config: {{path: parts.jsonl, part_size: 10}}
        """,
    )
    store_url = f"sqlite:///{tmp_path / 'mesh.db'}"
    assert await run_pipelines([config], store_url, registry=registry()) == 0
    out = [json.loads(line)["n"] for line in (tmp_path / "parts.jsonl").open()]
    assert out == list(range(95))
    assert await committed(store_url, "p/out") == {"t": 95}


@pytest.mark.slow
def test_a_multipart_sink_killed_mid_part_delivers_every_record_exactly_once(
    tmp_path: Path,
) -> None:
    """A real ``meshconnect run`` with the toy multipart sink as a local plugin, SIGKILLed
    while a part is open; the offsets committed cover exactly the uploaded parts, and the
    re-run completes the output with every record once."""
    total = 500
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"n": i}) + "\n" for i in range(total)))
    (tmp_path / "plugins.toml").write_text(f'[plugins]\npaths = ["{TOY_SINKS}"]\n')

    def pipeline(kill: str) -> Path:
        return write(
            tmp_path / "p.yaml",
            f"""
            pipelines:
              - name: p
                source:
                  connector: file
                  config: {{path: in.jsonl, format: json, follow: false, batch_size: 50}}
                topic: t
                sinks:
                  - name: out
                    connector: multipart
                    batch_size: 13
                    commit_interval: 0s
                    config: {{path: parts.jsonl, part_size: 20{kill}}}
            """,
        )

    state = tmp_path / "state"
    base = [sys.executable, "-m", "meshconnect", "--state", str(state)]
    base += ["--plugins", str(tmp_path / "plugins.toml")]
    config = pipeline(", kill_after_parts: 5")
    proc = subprocess.Popen([*base, "run", str(config)], cwd=tmp_path)
    marker = tmp_path / "parts.jsonl.ready"
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None, "the run ended before the sink held an open part"
        assert time.monotonic() < deadline, "the sink never held an open part"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    import asyncio

    store_url = f"sqlite:///{state / 'mesh.db'}"
    offsets = asyncio.run(committed(store_url, "p/out"))
    # Committed exactly up to uploaded parts, never into the open one.
    assert offsets["t"] > 0 and offsets["t"] % 20 == 0
    assert offsets["t"] < total

    config = pipeline("")
    result = subprocess.run([*base, "run", str(config)], cwd=tmp_path, timeout=120, check=False)
    assert result.returncode == 0
    out = [json.loads(line)["n"] for line in (tmp_path / "parts.jsonl").open()]
    assert out == list(range(total))


def _toy() -> Any:
    spec = importlib.util.spec_from_file_location("toy_sinks_conformance", TOY_SINKS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestMultipartSinkConformance(SinkConformance):
    """The toy multipart sink passes the shipped suite (partial commits included)."""

    def make_sink(self, tmp_path: Path) -> Any:
        toy = _toy()
        context = ConnectorContext("test", "parts", logging.getLogger("test"), str(tmp_path))
        return toy.MultipartSink(toy.MultipartConfig(path="parts.jsonl", part_size=10), context)

    def durable(self, tmp_path: Path) -> list[Any]:
        path = tmp_path / "parts.jsonl"
        return [json.loads(line)["n"] for line in path.open()] if path.exists() else []


class TestMemorySinkConformance(SinkConformance):
    def make_sink(self, tmp_path: Path) -> MemorySink:
        config = MemorySinkConfig(name=f"conformance-{tmp_path.name}", reject_when="poison")
        return MemorySink(config, ConnectorContext("test", "mem", logging.getLogger("test")))

    def durable(self, tmp_path: Path) -> list[Any]:
        return [d["n"] for d in collect(f"conformance-{tmp_path.name}")]

    def poison_record(self, i: int) -> Record:
        return Record({"n": i, "poison": True}, id="poison")


class TestMemorySinkOnFileConformance(TestMemorySinkConformance):
    """With ``path``: the output is rewritten to a file on every flush, read back on open;
    an outage is a full disk (the file's temporary copy is /dev/full: ENOSPC)."""

    def make_sink(self, tmp_path: Path) -> MemorySink:
        config = MemorySinkConfig(
            name=f"conformance-{tmp_path.name}", reject_when="poison", path="mem.jsonl"
        )
        context = ConnectorContext("test", "mem", logging.getLogger("test"), str(tmp_path))
        return MemorySink(config, context)

    def durable(self, tmp_path: Path) -> list[Any]:
        path = tmp_path / "mem.jsonl"
        return [json.loads(line)["data"]["n"] for line in path.open()] if path.exists() else []

    @contextlib.contextmanager
    def _disk_full(self, tmp_path: Path) -> Iterator[None]:
        (tmp_path / "mem.jsonl.tmp").symlink_to("/dev/full")
        try:
            yield
        finally:
            (tmp_path / "mem.jsonl.tmp").unlink()

    def unavailable(self, tmp_path: Path) -> contextlib.AbstractContextManager[None]:
        return self._disk_full(tmp_path)


def test_a_partial_flush_commits_below_every_pending_record_whatever_their_order() -> None:
    """The records still pending after a flush are the newest written; the commit stops below
    the least of their offsets, also when a batch was written out of offset order (a sink-side
    chain that fans out or a plugin's transform), not below the first of them."""
    from meshconnect.sinkloop import SinkLoop, _Written

    def written(*batches: tuple[str, list[int]]) -> list[_Written]:
        return [_Written.of(topic, offsets) for topic, offsets in batches]

    loop = object.__new__(SinkLoop)
    loop.group = "p/s"
    loop.unflushed = written(("t", [0, 1, 2]), ("u", [7]), ("t", [5, 4, 3]))
    assert loop._first_pending(2) == {"t": 3}
    assert loop.unflushed == written(("t", [4, 3]))
    loop.unflushed = written(("t", [0, 1, 2]), ("u", [7]), ("t", [5, 4, 3]))
    assert loop._first_pending(4) == {"t": 3, "u": 7}
    # A transform dropped records (gaps), or fanned one out (an offset twice).
    loop.unflushed = written(("t", [10, 12, 13]), ("t", [14, 14, 15]))
    assert loop._first_pending(4) == {"t": 13}
    assert loop.unflushed == written(("t", [13]), ("t", [14, 14, 15]))


def test_what_a_long_pending_sink_keeps_is_per_batch() -> None:
    """A sink may keep records pending for long (an S3 object of a rare key stays open while
    the others are uploaded): the loop keeps, per batch since its last full flush, its topic
    and offset range, not every record's offset, and counting back needs no copy of them."""
    from meshconnect.sinkloop import SinkLoop, _Written

    loop = object.__new__(SinkLoop)
    loop.group = "p/s"
    loop.unflushed = [_Written.of("t", list(range(i * 1000, (i + 1) * 1000))) for i in range(300)]
    assert all(w.offsets is None for w in loop.unflushed)
    assert loop._first_pending(300_000 - 1500) == {"t": 1500}
    assert len(loop.unflushed) == 299
    assert (loop.unflushed[0].first, loop.unflushed[0].count) == (1500, 500)
    assert all(w.offsets is None for w in loop.unflushed)
