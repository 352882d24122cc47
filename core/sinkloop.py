"""A sink's read-write-commit loop, as the worker runs it.

::

    store.read(topic, offset) -> sink chain -> sink.write -> (every commit_interval, or idle)
    sink.flush -> store.commit(group, offsets, state)

Offsets are committed only after ``flush()`` returned, together with the state it returned,
so a committed offset never runs ahead of durable output. Records a sink (or its transforms)
rejects go by its ``errors:`` policy: retried, dead-lettered or failing the sink, which the
worker's supervisor then restarts from the committed offsets.

Dead letters are appended **exactly once**, although the sink's offsets are committed later
(after its next flush): each dead-letter append also stores, in the same store transaction, a
source position ``deadletter/<group>`` per topic saying up to which offset the sink has
dead-lettered what failed. After a crash the sink is re-fed records since its last commit; the
ones below that mark that fail again are not dead-lettered a second time. (A record that failed
before the crash and succeeds after it is written *and* stays in the dead-letter topic.)
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from . import jsonvalue
from .api import Sink
from .errorpolicy import retry_transforms, retrying
from .errors import ConfigError, DataError, RetriableError, StoreError, classify
from .records import Record
from .transforms._common import fresh_copy

if TYPE_CHECKING:
    from .config.loader import LoadedPipeline, LoadedSink
    from .mesh.store import MeshStore
    from .worker import ConnectorStatus, Worker

__all__ = [
    "SinkLoop",
    "dead_letter_id",
    "resolve_topics",
    "sink_group",
    "sink_patterns",
    "template_glob",
]

log = logging.getLogger("meshconnect.worker")


def sink_group(pipeline: str, name: str) -> str:
    """The consumer group of a sink: ``<pipeline>/<sink name>``."""
    return f"{pipeline}/{name}"


def dead_letter_id(group: str) -> str:
    """The id of the positions marking what sink ``group`` has dead-lettered, per topic."""
    return f"deadletter/{group}"


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
        #: Per topic, the offset below which failures were already dead-lettered.
        self.dead_marks: dict[str, int] = {}

    async def _load_dead_marks(self) -> None:
        marks = await self.store.positions(dead_letter_id(self.group))
        self.dead_marks = {t: int(p.get("next", 0)) for t, p in marks.items()}

    async def run(self) -> None:
        worker = self.worker
        batch_size = self.loaded.batch_size
        self.topics = await resolve_topics(self.store, self.patterns)
        last_resolve = time.monotonic()
        await self._load_dead_marks()
        while not worker.stopping:
            progressed = False
            for topic in self.topics:
                offset = self.offsets.get(topic, 0)
                records = await self.store.read(topic, offset, batch_size)
                if not records:
                    continue
                progressed = True
                await self._deliver(topic, records)
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

    async def _deliver(self, topic: str, records: list[Record]) -> None:
        status = self.status
        status.records_in += len(records)
        end = records[-1].offset + 1  # type: ignore[operator]
        chain = self.loaded.chain
        if len(chain):  # stored records may be shared with other sinks: change copies
            records = (
                [_deep_copy(r) for r in records]
                if chain.changes_nested_objects
                else [r.copy() for r in records]
            )
        out, failures = chain.process(records)
        if failures:
            more, failures = await retry_transforms(
                chain, failures, self.loaded.errors.retry, log, f"sink {self.group}"
            )
            out.extend(more)
        problems: list[tuple[Record, BaseException, str]] = [
            (f.record, f.error, f.stage) for f in failures
        ]
        if out:
            started = time.perf_counter()
            problems.extend(await self._write(out))
            status.last_batch_seconds = time.perf_counter() - started
        status.records_out += len(out) - sum(1 for _, _, s in problems if s == "sink")
        if problems:
            await self._dead_letter(topic, end, problems)

    async def _dead_letter(
        self, topic: str, end: int, problems: list[tuple[Record, BaseException, str]]
    ) -> None:
        """Apply the errors policy to ``problems`` of a batch of ``topic`` that ends before
        offset ``end``; dead letters go with the batch's mark in one append."""
        mark = self.dead_marks.get(topic, 0)
        if mark:  # re-fed after a crash: what failed below the mark is in the DLQ already
            fresh = [p for p in problems if p[0].offset is None or p[0].offset >= mark]
            if len(fresh) < len(problems):
                log.info(
                    "sink %s: %d failed record(s) of %s were dead-lettered before a restart",
                    self.group,
                    len(problems) - len(fresh),
                    topic,
                )
                self.status.failed += len(problems) - len(fresh)
            problems = fresh
            if not problems:
                return
        dead = self.worker._dead_letters(
            self.pipeline.name, self.loaded.name, self.loaded.errors, problems, self.status
        )
        if not dead:
            return
        target = self.loaded.errors.dead_letter_topic
        if target is not None and any(fnmatch.fnmatchcase(target, p) for p in self.patterns):
            # validate refuses this; never feed failures back into the sink's own input
            raise ConfigError(
                f"sink {self.group}: dead-letter topic {target!r} is a topic this sink reads "
                f"({', '.join(self.patterns)}); refusing to dead-letter into it (a loop)"
            )
        positions = {(dead_letter_id(self.group), topic): {"next": end}}
        await retrying(
            lambda: self.store.append(dead, positions),
            self.loaded.errors.retry,
            log,
            f"sink {self.group} dead-letter append",
        )
        self.dead_marks[topic] = end
        self.worker._appended()

    async def _write(self, records: list[Record]) -> list[tuple[Record, BaseException, str]]:
        """Write a batch; on a data error, find the bad records by writing one at a time.

        Returns the records that failed for good: data errors, and under ``tolerance: all``
        those whose retriable error outlasted ``retry.max_attempts``. Anything else raises."""
        policy = self.loaded.errors.retry
        what = f"sink {self.group} write"
        try:
            await retrying(lambda: self.sink.write(records), policy, log, what)
            return []
        except Exception as exc:
            if not self._tolerated(exc):
                raise
            if classify(exc) is not DataError or len(records) == 1:
                return [(r, exc, "sink") for r in records]
        failed: list[tuple[Record, BaseException, str]] = []
        for record in records:
            try:
                await retrying(functools.partial(self.sink.write, [record]), policy, log, what)
            except Exception as exc:
                if not self._tolerated(exc):
                    raise
                failed.append((record, exc, "sink"))
        return failed

    def _tolerated(self, exc: BaseException) -> bool:
        """Whether a write error goes by the errors policy (data errors always; retriable ones
        out of attempts under ``tolerance: all``) rather than failing the sink at once."""
        kind = classify(exc)
        if kind is DataError:
            return True
        return kind in (RetriableError, StoreError) and self.loaded.errors.tolerance == "all"


def _deep_copy(record: Record) -> Record:
    """A copy of a stored record sharing no object with it (for transforms that may change
    nested objects in place): from the store's JSON when it is at hand."""
    copy = record.copy()
    encoded = record.encoded_data
    copy.data = (
        jsonvalue.loads(encoded, max_depth=None) if encoded is not None else fresh_copy(record.data)
    )
    return copy


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
