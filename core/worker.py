"""The worker: runs every pipeline of a set of files in one asyncio process.

::

    source.poll ─▶ chain ─▶ router ─▶ [bounded queue] ─▶ store.append(records, positions)
                                                                      │
    sink.write ◀─ sink chain ◀─ store.read(topic, offset) ◀───────────┘
         └─ sink.flush ─▶ store.commit(group, offsets, state)

* A source's batch and the positions it reached are appended in one store transaction, so the
  mesh holds each record exactly once. Between polling and appending sits a bounded queue: a
  slow store slows the source instead of filling memory.
* A sink reads from its committed offsets, writes, and only after ``flush()`` commits the
  offsets with the sink's state. After a crash it is re-fed what it wrote since the last
  commit; its ``open(state)`` discards that (truncate-to-checkpoint) or it is idempotent.
* Every source and sink runs under a supervisor: an exception marks it FAILED with the reason
  and it is restarted with backoff from its committed offsets; the others keep running. A
  config error (classified by :func:`~meshconnect.errors.classify`) stops it for good.
* SIGINT/SIGTERM stop the sources, drain what was polled into the store, flush the sinks and
  commit. When every source is bounded, the run ends once all is delivered and committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .api import ConnectorContext, Sink, Source, SourceBatch
from .config.topics import topic_problem
from .errorpolicy import dead_letter_record, retry_transforms, retrying
from .errors import ConfigError, DataError, classify
from .mesh.codec import RecordEncodingError
from .mesh.store import Retention
from .records import Record
from .sinkloop import SinkLoop, sink_group

if TYPE_CHECKING:
    from .config.loader import LoadedConfig, LoadedPipeline, LoadedSink
    from .mesh.store import MeshStore

__all__ = ["ConnectorStatus", "Worker", "route", "sink_group", "source_id"]

log = logging.getLogger("meshconnect.worker")

#: Restarts of a failing connector in a bounded run before the run gives up (exit 1).
BOUNDED_MAX_RESTARTS = 5
#: Cap of the supervisor's restart backoff.
MAX_RESTART_BACKOFF = 60.0
#: Seconds between two retention passes.
RETENTION_EVERY = 60.0
_DONE = object()


def source_id(pipeline: str, name: str) -> str:
    """The id under which a source's positions are stored: ``<pipeline>/<source name>``."""
    return f"{pipeline}/{name}"


def route(
    pipeline: LoadedPipeline, records: list[Record]
) -> tuple[list[Record], list[tuple[Record, BaseException, str]]]:
    """Give each record without a topic the pipeline's topic. Failures of the ``topic`` stage:
    records whose topic template cannot be rendered, and records whose topic (rendered, or
    set by a ``route`` step) breaks the topic-name rule of :mod:`meshconnect.config.topics`.
    A literal pipeline topic was checked by ``validate``."""
    template = pipeline.topic
    literal = template.literal
    render = template.render
    routed: list[Record] = []
    failures: list[tuple[Record, BaseException, str]] = []
    for record in records:
        topic = record.topic
        if topic is None:
            if literal is not None:
                record.topic = literal
                routed.append(record)
                continue
            try:
                topic = render(record)
            except Exception as exc:
                failures.append((record, exc, "topic"))
                continue
        problem = topic_problem(topic)
        if problem is not None:
            how = (
                "rendered from the topic template" if record.topic is None else "set by a transform"
            )
            failures.append((record, DataError(f"topic {topic!r} ({how}): {problem}"), "topic"))
            continue
        record.topic = topic
        routed.append(record)
    return routed, failures


@dataclass(slots=True)
class ConnectorStatus:
    """What the worker knows about one running source or sink (never holds config values)."""

    id: str
    kind: str
    connector: str
    state: str = "STARTING"  # STARTING RUNNING FAILED DONE STOPPED
    reason: str = ""
    records_in: int = 0
    records_out: int = 0
    failed: int = 0
    dead_lettered: int = 0
    restarts: int = 0
    last_batch_seconds: float = 0.0
    updated: float = field(default_factory=time.time)

    def set(self, state: str, reason: str = "") -> None:
        self.state = state
        self.reason = reason
        self.updated = time.time()


class Worker:
    """Runs loaded pipelines against a store until they are done or it is told to stop."""

    def __init__(
        self,
        config: LoadedConfig,
        store: MeshStore,
        *,
        queue_batches: int = 4,
        restart_backoff: float = 1.0,
        progress_every: float = 30.0,
    ) -> None:
        self.config = config
        self.store = store
        self.queue_batches = queue_batches
        self.restart_backoff = restart_backoff
        self.progress_every = progress_every
        #: By ``"source <id>"`` / ``"sink <group>"`` (a source and a sink may share a name).
        self.statuses: dict[str, ConnectorStatus] = {}
        self._stopping = asyncio.Event()
        self._sources_done = asyncio.Event()
        # Bounded runs end when every sink has seen the end of its topics *after the last
        # append of this worker* (a sink's dead letters may feed another sink):
        self._appends = 0  # appends so far, a generation number
        self._verified: dict[str, int] = {}  # sink group -> generation it was caught up at
        self._live_sinks: set[str] = set()  # sinks that have not given up
        self._sinks_done = asyncio.Event()
        self._gave_up: list[str] = []
        self.bounded = False

    # -- control -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask everything to stop: sources stop polling, sinks flush and commit."""
        if not self._stopping.is_set():
            log.info("stopping: draining sources, flushing sinks, committing offsets")
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> int:
        """Run until done (bounded) or stopped; returns the exit code (0 ok, 1 a connector gave
        up). First takes the store's leases on every source and sink consumer group
        (:mod:`~meshconnect.mesh.ownership`): OwnershipError when another worker owns one."""
        from .mesh.ownership import Ownership, lease_names

        ownership = Ownership(self.store, lease_names(self.config))
        await ownership.acquire()

        def lost(reason: str) -> None:
            log.error("%s: stopping", reason)
            self._gave_up.append(reason)
            self.stop()

        ownership.keep(lost)
        try:
            return await self._run_owned()
        finally:
            await ownership.release()

    async def _run_owned(self) -> int:
        pipelines = self.config.pipelines
        await self._apply_retention()
        with_source = [p for p in pipelines if p.source is not None]
        sources: list[tuple[LoadedPipeline, Source[Any]]] = []
        for p in with_source:
            assert p.source is not None
            sources.append((p, self._make_source(p)))
        # A run is bounded when it has sources and every one of them is bounded.
        self.bounded = bool(sources) and all(s.bounded for _, s in sources)
        source_tasks = [
            asyncio.create_task(
                self._supervise(
                    f"source {source_id(p.name, p.source.name)}",  # type: ignore[union-attr]
                    lambda p=p, first=s: self._run_source(p, first),  # type: ignore[misc]
                ),
                name=f"source:{p.name}",
            )
            for p, s in sources
        ]
        sink_tasks = [
            asyncio.create_task(
                self._supervise(
                    f"sink {sink_group(p.name, sink.name)}",
                    lambda p=p, sink=sink: self._run_sink(p, sink),  # type: ignore[misc]
                ),
                name=f"sink:{p.name}/{sink.name}",
            )
            for p in pipelines
            for sink in p.sinks
        ]
        for p in pipelines:
            for sink in p.sinks:
                ident = sink_group(p.name, sink.name)
                self.statuses.setdefault(
                    f"sink {ident}", ConnectorStatus(ident, "sink", sink.connector)
                )
                self._live_sinks.add(ident)
        retention = asyncio.create_task(self._retention_loop(), name="retention")
        progress = asyncio.create_task(self._progress_loop(), name="progress")
        if not sources:
            log.info("no sources in this run: sinks follow their topics until stopped")
        try:
            if source_tasks:
                await asyncio.gather(*source_tasks)
            if not self.stopping:
                self._sources_done.set()
                if not self.bounded:
                    await self._stopping.wait()
            await asyncio.gather(*sink_tasks)
        finally:
            background = (retention, progress)
            for task in (*source_tasks, *sink_tasks, *background):
                task.cancel()
            await asyncio.gather(*source_tasks, *sink_tasks, *background, return_exceptions=True)
        if self._gave_up:
            log.error("run failed: %s", "; ".join(self._gave_up))
            return 1
        return 0

    async def _retention_loop(self) -> None:
        """Apply the files' ``retention:`` every ``RETENTION_EVERY`` seconds (``run`` applies
        it once before anything starts)."""
        while True:
            await asyncio.sleep(RETENTION_EVERY)
            await self._apply_retention()

    async def _progress_loop(self) -> None:
        """A progress line per connector every ``progress_every`` seconds (long runs)."""
        last: dict[str, int] = {}
        while True:
            await asyncio.sleep(self.progress_every)
            for key, s in self.statuses.items():
                rate = (s.records_in - last.get(key, 0)) / self.progress_every
                last[key] = s.records_in
                log.info(
                    "progress: %s %s %s: %d in, %d out, %d failed, %d dead-lettered, %.0f/s%s",
                    s.kind,
                    s.id,
                    s.state,
                    s.records_in,
                    s.records_out,
                    s.failed,
                    s.dead_lettered,
                    rate,
                    f" ({s.reason})" if s.state == "FAILED" else "",
                )

    async def _apply_retention(self) -> None:
        config = self.config.retention
        if config.max_age is None and config.max_records is None and config.max_bytes is None:
            return
        retention = Retention(
            max_age_s=config.max_age, max_records=config.max_records, max_bytes=config.max_bytes
        )
        try:
            for info in await self.store.topics():
                removed = await self.store.apply_retention(info.name, retention)
                if removed:
                    log.info("retention: removed %d records from %s", removed, info.name)
        except Exception as exc:  # retention must never stop a pipeline
            log.warning("retention failed: %s: %s", type(exc).__name__, exc)

    # -- supervision ---------------------------------------------------------------------------

    async def _supervise(self, key: str, start: Callable[[], Awaitable[None]]) -> None:
        status = self.statuses[key]
        ident = status.id
        while True:
            try:
                await start()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                status.set("FAILED", reason)
                status.restarts += 1
                log.error("%s %s FAILED: %s", status.kind, ident, reason, exc_info=exc)
                # A wrong config, path or permission: restarting cannot help.
                fatal = classify(exc) is ConfigError
                if (
                    fatal
                    or (self.bounded and status.restarts > BOUNDED_MAX_RESTARTS)
                    or self.stopping
                ):
                    if not self.stopping or fatal:
                        self._gave_up.append(f"{status.kind} {ident}: {reason}")
                    # A sink that gives up must not hold the run open.
                    self._live_sinks.discard(ident)
                    self._check_sinks_done()
                    return
                delay = min(
                    MAX_RESTART_BACKOFF, self.restart_backoff * 2 ** min(status.restarts - 1, 8)
                )
                delay = random.uniform(delay / 2, delay)
                log.info(
                    "restarting %s %s in %.1fs (restart %d)",
                    status.kind,
                    ident,
                    delay,
                    status.restarts,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

    def _appended(self) -> None:
        self._appends += 1

    def _check_sinks_done(self) -> None:
        """In a bounded run: done once every live sink was caught up at the latest append."""
        if self._sources_done.is_set() and all(
            self._verified.get(group) == self._appends for group in self._live_sinks
        ):
            self._sinks_done.set()

    # -- sources -------------------------------------------------------------------------------

    def _context(self, pipeline: LoadedPipeline, name: str) -> ConnectorContext:
        return ConnectorContext(
            pipeline=pipeline.name,
            name=name,
            logger=logging.getLogger(f"meshconnect.connector.{pipeline.name}.{name}"),
            base_dir=pipeline.base_dir,
        )

    def _make_source(self, pipeline: LoadedPipeline) -> Source[Any]:
        loaded = pipeline.source
        assert loaded is not None
        ident = source_id(pipeline.name, loaded.name)
        self.statuses.setdefault(
            f"source {ident}", ConnectorStatus(ident, "source", loaded.connector)
        )
        cls = loaded.spec.load()
        source = cls(loaded.config, self._context(pipeline, loaded.name))
        assert isinstance(source, Source)
        return source

    async def _run_source(self, pipeline: LoadedPipeline, first: Source[Any] | None) -> None:
        loaded = pipeline.source
        assert loaded is not None
        ident = source_id(pipeline.name, loaded.name)
        status = self.statuses[f"source {ident}"]
        # The first attempt uses the instance made in run(); restarts make a fresh one.
        source = (
            first if status.restarts == 0 and first is not None else self._make_source(pipeline)
        )
        queue: asyncio.Queue[Any] = asyncio.Queue(self.queue_batches)
        appender = asyncio.create_task(self._append_loop(pipeline, queue, status))
        try:
            positions = await self.store.positions(ident)
            begun = await source.start(positions)
            if begun:  # "from now" made durable before the source counts as started
                await self.store.append([], {(ident, p): dict(v) for p, v in begun.items()})
            status.set("RUNNING")
            log.info("source %s started (%d committed partition positions)", ident, len(positions))
            while not self.stopping:
                batch, _ = await retrying(
                    source.poll, loaded.errors.retry, log, f"source {ident} poll"
                )
                if batch is None:
                    break
                if not batch.records and not batch.positions and not batch.failures:
                    continue
                routed = await self._route_source_batch(pipeline, batch, status)
                if not await _put(queue, routed, appender):
                    break
        finally:
            with contextlib.suppress(Exception):
                await source.stop()
            await _put(queue, _DONE, appender)
            # Everything polled is appended before the source counts as stopped.
            await appender
        self._finished(status, "in", "stored")

    async def _route_source_batch(
        self, pipeline: LoadedPipeline, batch: SourceBatch, status: ConnectorStatus
    ) -> tuple[list[Record], dict[tuple[str, str], Any]]:
        loaded = pipeline.source
        assert loaded is not None
        status.records_in += len(batch.records) + len(batch.failures)
        records, failures = pipeline.chain.process(batch.records)
        if failures:
            more, failures = await retry_transforms(
                pipeline.chain,
                failures,
                loaded.errors.retry,
                log,
                f"source {source_id(pipeline.name, loaded.name)}",
            )
            records.extend(more)
        records, unroutable = route(pipeline, records)
        out = records
        problems: list[tuple[Record, BaseException, str]] = [
            (r, e, "source") for r, e in batch.failures
        ]
        problems.extend((f.record, f.error, f.stage) for f in failures)
        problems.extend(unroutable)
        if problems:
            out = list(records)
            out.extend(
                self._dead_letters(pipeline.name, loaded.name, loaded.errors, problems, status)
            )
        status.records_out += len(records)
        ident = source_id(pipeline.name, loaded.name)
        positions = {(ident, part): pos for part, pos in batch.positions.items()}
        return out, positions

    def _dead_letters(
        self,
        pipeline: str,
        connector: str,
        policy: Any,
        problems: list[tuple[Record, BaseException, str]],
        status: ConnectorStatus,
    ) -> list[Record]:
        status.failed += len(problems)
        if policy.tolerance == "none":
            record, error, stage = problems[0]
            raise DataError(
                f"{stage}: {error} (record id {record.id!r}"
                + (f", topic {record.topic!r} offset {record.offset}" if record.topic else "")
                + "); set errors.tolerance: all to dead-letter such records"
            ) from error
        out: list[Record] = []
        for record, error, stage in problems:
            dead = dead_letter_record(
                record, error, stage=stage, pipeline=pipeline, connector=connector, policy=policy
            )
            if dead is None:
                log.warning(
                    "%s/%s: skipped a failed record (%s): %s", pipeline, connector, stage, error
                )
            else:
                out.append(dead)
        status.dead_lettered += len(out)
        return out

    async def _append_loop(
        self, pipeline: LoadedPipeline, queue: asyncio.Queue[Any], status: ConnectorStatus
    ) -> None:
        loaded = pipeline.source
        assert loaded is not None
        ident = source_id(pipeline.name, loaded.name)
        while True:
            item = await queue.get()
            if item is _DONE:
                return
            records, positions = item
            made: set[int] = set()  # ids of the dead letters made for this batch
            started = time.perf_counter()
            while True:
                try:
                    await retrying(
                        functools.partial(self.store.append, records, positions),
                        loaded.errors.retry,
                        log,
                        f"source {ident} append to the mesh store",
                    )
                    break
                except RecordEncodingError as exc:
                    # One record the store cannot encode (a transform made a set, say): it
                    # goes by the errors policy and the rest of the batch is appended again.
                    # Each pass removes a record; a dead letter is always storable, and one
                    # that were not would be dropped rather than retried forever.
                    records = self._unstorable(pipeline, records, exc, status, made)
                    await asyncio.sleep(0)  # let a stop signal in between passes
            self._appended()
            status.last_batch_seconds = time.perf_counter() - started

    def _unstorable(
        self,
        pipeline: LoadedPipeline,
        records: list[Record],
        exc: RecordEncodingError,
        status: ConnectorStatus,
        made: set[int],
    ) -> list[Record]:
        loaded = pipeline.source
        assert loaded is not None
        bad = exc.record
        rest = [r for r in records if r is not bad]
        if id(bad) in made:
            log.error("dropped a dead letter the store cannot encode: %s", exc)
            return rest
        status.records_out -= 1
        dead = self._dead_letters(
            pipeline.name, loaded.name, loaded.errors, [(bad, exc, "store")], status
        )
        made.update(map(id, dead))
        rest.extend(dead)
        return rest

    # -- sinks ---------------------------------------------------------------------------------

    async def _run_sink(self, pipeline: LoadedPipeline, loaded: LoadedSink) -> None:
        group = sink_group(pipeline.name, loaded.name)
        status = self.statuses[f"sink {group}"]
        cls = loaded.spec.load()
        sink = cls(loaded.config, self._context(pipeline, loaded.name))
        assert isinstance(sink, Sink)
        try:
            info = await self.store.group(group)
            await sink.open(info.state)
            if info.state is None:
                # Commit the fresh sink's state before any record: the output it just created
                # is then its own, and a crash before the first flush does not leave behind
                # a file it would have to treat as someone else's (see the file sink).
                state = await sink.flush()
                if state is not None:
                    await self.store.commit(group, {}, state)
            status.set("RUNNING")
            log.info("sink %s started at %s", group, info.offsets or "the beginning")
            await SinkLoop(self, pipeline, loaded, sink, status, info.offsets).run()
        finally:
            with contextlib.suppress(Exception):
                await sink.close()
        self._finished(status, "read", "written")

    def _finished(self, status: ConnectorStatus, came: str, went: str) -> None:
        status.set("STOPPED" if self.stopping else "DONE")
        log.info(
            "%s %s %s: %d records %s, %d %s, %d failed (%d dead-lettered)",
            status.kind,
            status.id,
            status.state.lower(),
            status.records_in,
            came,
            status.records_out,
            went,
            status.failed,
            status.dead_lettered,
        )


async def _put(queue: asyncio.Queue[Any], item: Any, consumer: asyncio.Task[None]) -> bool:
    """Put ``item`` unless the consumer has ended (then a full queue would block forever)."""
    if consumer.done():
        return False
    put = asyncio.ensure_future(queue.put(item))
    await asyncio.wait([put, consumer], return_when=asyncio.FIRST_COMPLETED)
    if not put.done():
        put.cancel()
        return False
    return True
