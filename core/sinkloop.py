"""A sink's read-write-commit loop, as the worker runs it.

::

    store.read(topic, offset) -> sink chain -> sink.write -> (every commit_interval, or idle)
    sink.flush -> store.commit(group, offsets, state)

Offsets are committed only after ``flush()`` returned, together with the state it returned,
so a committed offset never runs ahead of durable output. Records a sink (or its transforms)
rejects go by its ``errors:`` policy: retried, dead-lettered or failing the sink, which the
worker's supervisor then restarts from the committed offsets.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from .api import Sink
from .errorpolicy import retrying
from .errors import DataError, classify
from .records import Record

if TYPE_CHECKING:
    from .config.loader import LoadedPipeline, LoadedSink
    from .mesh.store import MeshStore
    from .worker import ConnectorStatus, Worker

__all__ = ["SinkLoop", "resolve_topics", "sink_group", "sink_patterns", "template_glob"]

log = logging.getLogger("meshconnect.worker")


def sink_group(pipeline: str, name: str) -> str:
    """The consumer group of a sink: ``<pipeline>/<sink name>``."""
    return f"{pipeline}/{name}"


def sink_patterns(pipeline: LoadedPipeline, sink: LoadedSink) -> list[str]:
    """The topic names or globs a sink reads."""
    if sink.topics:
        return list(sink.topics)
    # The pipeline's topic: what its source writes, or for a sink-only pipeline the topic
    # named like the pipeline (or its `topic:`), written by other pipelines or workers.
    template = pipeline.topic
    if template.is_literal:
        return [str(template.literal)]
    # A templated topic: subscribe to everything the template can produce.
    return [template_glob(template.text)]


async def resolve_topics(store: MeshStore, patterns: list[str]) -> list[str]:
    """The topics that exist now (or are named literally) matching ``patterns``."""
    literal = [p for p in patterns if not any(c in p for c in "*?[")]
    globs = [p for p in patterns if p not in literal]
    names = set(literal)
    if globs:
        for info in await store.topics():
            if any(fnmatch.fnmatchcase(info.name, g) for g in globs):
                names.add(info.name)
    return sorted(names)


class SinkLoop:
    """One sink's read-write-commit loop (one instance per start)."""

    def __init__(
        self,
        worker: Worker,
        pipeline: LoadedPipeline,
        loaded: LoadedSink,
        sink: Sink[Any],
        status: ConnectorStatus,
        committed: dict[str, int],
    ) -> None:
        self.worker = worker
        self.store = worker.store
        self.pipeline = pipeline
        self.loaded = loaded
        self.sink = sink
        self.status = status
        self.patterns = sink_patterns(pipeline, loaded)
        self.group = sink_group(pipeline.name, loaded.name)
        self.offsets: dict[str, int] = dict(committed)
        self.committed: dict[str, int] = dict(committed)
        self.topics: list[str] = []
        self.last_commit = time.monotonic()

    async def run(self) -> None:
        worker = self.worker
        batch_size = self.loaded.batch_size
        self.topics = await resolve_topics(self.store, self.patterns)
        last_resolve = time.monotonic()
        while not worker.stopping:
            progressed = False
            for topic in self.topics:
                offset = self.offsets.get(topic, 0)
                records = await self.store.read(topic, offset, batch_size)
                if not records:
                    continue
                progressed = True
                await self._deliver(records)
                self.offsets[topic] = records[-1].offset + 1  # type: ignore[operator]
                if time.monotonic() - self.last_commit >= self.loaded.commit_interval:
                    await self._commit()
                if worker.stopping:
                    break
            if progressed:
                continue
            # Idle: commit what is pending, see whether the run is over, wait for data.
            await self._commit()
            if worker._sources_done.is_set() and worker.bounded:
                generation = worker._appends
                if await self._caught_up():
                    worker._verified[self.group] = generation
                    worker._check_sinks_done()
                if worker._sinks_done.is_set():
                    return
            changed = self.store.data_changed()
            stop = asyncio.ensure_future(worker._stopping.wait())
            done = asyncio.ensure_future(worker._sinks_done.wait())
            try:
                await asyncio.wait(
                    [asyncio.ensure_future(changed), stop, done],
                    timeout=1.0,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                stop.cancel()
                done.cancel()
            if time.monotonic() - last_resolve > 1.0 or worker._sources_done.is_set():
                self.topics = await resolve_topics(self.store, self.patterns)
                last_resolve = time.monotonic()
        await self._commit()

    async def _caught_up(self) -> bool:
        self.topics = await resolve_topics(self.store, self.patterns)
        ends = await self.store.end_offsets(self.topics)
        return all(self.committed.get(t, 0) >= end for t, end in ends.items())

    async def _commit(self) -> None:
        if self.offsets == self.committed:
            self.last_commit = time.monotonic()
            return
        state, _ = await retrying(
            self.sink.flush, self.loaded.errors.retry, log, f"sink {self.group} flush"
        )
        offsets = dict(self.offsets)
        await retrying(
            lambda: self.store.commit(self.group, offsets, state),
            self.loaded.errors.retry,
            log,
            f"sink {self.group} commit",
        )
        self.committed = offsets
        self.last_commit = time.monotonic()

    async def _deliver(self, records: list[Record]) -> None:
        status = self.status
        status.records_in += len(records)
        chain = self.loaded.chain
        if len(chain):  # stored records may be shared with other sinks: change copies
            records = [r.copy() for r in records]
        out, failures = chain.process(records)
        problems: list[tuple[Record, BaseException, str]] = [
            (f.record, f.error, f.stage) for f in failures
        ]
        if out:
            started = time.perf_counter()
            problems.extend(await self._write(out))
            status.last_batch_seconds = time.perf_counter() - started
        if problems:
            dead = self.worker._dead_letters(
                self.pipeline.name, self.loaded.name, self.loaded.errors, problems, status
            )
            if dead:
                await retrying(
                    lambda: self.store.append(dead),
                    self.loaded.errors.retry,
                    log,
                    f"sink {self.group} dead-letter append",
                )
                self.worker._appended()
        status.records_out += len(out) - sum(1 for _, _, s in problems if s == "sink")

    async def _write(self, records: list[Record]) -> list[tuple[Record, BaseException, str]]:
        """Write a batch; on a data error, find the bad records by writing one at a time."""
        policy = self.loaded.errors.retry
        what = f"sink {self.group} write"
        try:
            await retrying(lambda: self.sink.write(records), policy, log, what)
            return []
        except Exception as exc:
            if classify(exc) is not DataError:
                raise
            if len(records) == 1:
                return [(records[0], exc, "sink")]
        failed: list[tuple[Record, BaseException, str]] = []
        for record in records:
            try:
                await retrying(functools.partial(self.sink.write, [record]), policy, log, what)
            except Exception as exc:
                if classify(exc) is not DataError:
                    raise
                failed.append((record, exc, "sink"))
        return failed


def template_glob(text: str) -> str:
    """``cdc.{data.db}.{data.table}`` -> ``cdc.*.*`` (what a templated topic can produce)."""
    out: list[str] = []
    depth = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if depth == 0 and text.startswith(("{{", "}}"), i):
            out.append(ch)
            i += 2
            continue
        if ch == "{":
            if depth == 0:
                out.append("*")
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
        i += 1
    return "".join(out)
