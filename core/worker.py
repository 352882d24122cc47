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
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from .api import Ack, ConnectorContext, Flushed, Sink, Source, SourceBatch
from .config.interpolate import register_secrets
from .deliveries import Deliveries
from .errorpolicy import backoff, dead_letters, retry_transforms, retrying
from .errors import (
    Classifier,
    ConfigError,
    PluginError,
    PluginLoadError,
    RetriableError,
    classify,
)
from .httplisten import HttpListeners, HttpRoutes
from .mesh.codec import RecordEncodingError
from .mesh.routing import route, subscription
from .mesh.store import FencedError, Retention
from .metrics import ConnectorMeters, MetricsRegistry, store_file_bytes
from .offsets import (
    check_partitions,
    sink_group,
    sink_groups,
    sink_lags,
    source_id,
)
from .progress import ProgressReporter
from .records import Record
from .runstate import ConnectorStatus, PipelineRunState, RunState
from .sinkloop import SinkLoop, check_flushed
from .tracing import BatchTrace, Tracing
from .tracing import from_environment as tracing_from_environment

if TYPE_CHECKING:
    from .config.loader import LoadedConfig, LoadedPipeline, LoadedSink
    from .mesh.ownership import Ownership
    from .mesh.store import MeshStore

__all__ = ["ConnectorStatus", "Worker", "sink_group", "source_id"]

log = logging.getLogger("meshconnect.worker")

#: Restarts of a failing connector in a bounded run before the run gives up (exit 1).
BOUNDED_MAX_RESTARTS = 5
#: Cap of the supervisor's restart backoff.
MAX_RESTART_BACKOFF = 60.0
#: A line break and the blanks around it, in a failure's message (made one line).
_LINE_BREAKS = re.compile(r"\s*[\r\n]\s*")
#: Seconds between two retention passes.
RETENTION_EVERY = 60.0
#: Seconds between two refreshes of the metrics that need the store (consumer lag, store size).
METRICS_EVERY = 5.0
_DONE = object()
#: Seconds a stopping run waits for its background loops (retention, progress, metrics).
BACKGROUND_STOP_TIMEOUT = 5.0


def _reraise_cancellation(exc: BaseException) -> None:
    """Raise CancelledError when the current task is being cancelled: a store client that
    turned the cancellation into an error of its own (a lost connection) must not keep a
    background loop of a stopping run alive."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


#: Batches a source may poll ahead of the store's appends (the bounded queue between them):
#: with two, the next batch is ready when an append ends; each further one held ~1 MB of
#: records of the file pipeline benchmark in memory, for no speed (4 -> 2: ~1.7 MB less
#: peak RSS, the same CPU seconds; docs/benchmarks.md, session mem23).
QUEUE_BATCHES = 2


class Worker:
    """Runs loaded pipelines against a store until they are done or it is told to stop."""

    def __init__(
        self,
        config: LoadedConfig,
        store: MeshStore,
        *,
        queue_batches: int = QUEUE_BATCHES,
        restart_backoff: float = 1.0,
        progress_every: float = 30.0,
        tracer_provider: Any = None,
    ) -> None:
        self.config = config
        # The secrets of the pipelines (interpolated and literal) are masked in everything
        # this process logs or stores, dead letters included, however the worker was started
        # (``meshconnect run`` registers them too; an embedding program may not).
        register_secrets(config.secrets)
        self.store = store
        self.queue_batches = queue_batches
        self.restart_backoff = restart_backoff
        self.progress_every = progress_every
        #: What the worker, its supervisors and the sink loops share (:mod:`.runstate`).
        self.state = RunState()
        #: By ``"source <id>"`` / ``"sink <group>"`` (a source and a sink may share a name).
        self.statuses: dict[str, ConnectorStatus] = self.state.statuses
        #: The metrics every connector's ``context.metrics`` adds to.
        self.metrics = MetricsRegistry()
        self.metrics.refresher = self.refresh_metrics
        #: The shared HTTP listeners of ``context.http``, one server per listen address.
        self.http = HttpListeners()
        self.deliveries = Deliveries()
        #: OpenTelemetry spans per batch (:mod:`.tracing`): ``tracer_provider``'s, else as the
        #: ``OTEL_*`` variables say; ``None``: off.
        self.tracing: Tracing | None = (
            Tracing(tracer_provider) if tracer_provider is not None else tracing_from_environment()
        )
        #: Connectors that stopped for good (a config error): when all did, the run stops.
        self._failed_for_good: set[str] = set()
        #: Each connector's ``classify_error``, by status key (for the supervisor).
        self._classifiers: dict[str, Classifier] = {}
        #: Each pipeline's view of the run state (pause, stop of that pipeline alone) and the
        #: supervisor tasks of its source and sinks, by pipeline name (see :meth:`spawn`).
        self.pipeline_states: dict[str, PipelineRunState] = {}
        self.tasks: dict[str, list[asyncio.Task[None]]] = {}
        #: The store leases of this run (set by :meth:`run`; :meth:`spawn` of a pipeline
        #: added while running takes its leases through it).
        self.ownership: Ownership | None = None
        #: Cluster mode (:mod:`meshconnect.cluster`): the member that owns this worker's units,
        #: set by :meth:`run` when ``config.cluster`` is set. It is told of a unit whose
        #: store write was fenced (that unit stops for good instead of restarting).
        self.member: Any = None
        #: The plugin registry, for pipelines a cluster member loads from the store.
        self.registry: Any = None

    # -- control -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask everything to stop: sources stop polling, sinks flush and commit."""
        if self.state.stop():
            log.info("stopping: draining sources, flushing sinks, committing offsets")

    @property
    def stopping(self) -> bool:
        return self.state.stopping

    @property
    def bounded(self) -> bool:
        """Whether every source of the run is bounded (the run ends by itself)."""
        return self.state.bounded

    async def run(self) -> int:
        """Run until done (bounded) or stopped; returns the exit code (0 ok, 1 a connector gave
        up). First takes the store's leases on every source and sink consumer group
        (:mod:`~meshconnect.mesh.ownership`): OwnershipError when another worker owns one."""
        from .mesh.ownership import Ownership, lease_names

        if self.config.cluster is not None:
            from .cluster import ClusterMember

            self.member = ClusterMember(self)
            try:
                return await self.member.run()
            finally:
                if self.tracing is not None:
                    self.tracing.shutdown()
        ownership = Ownership(self.store, lease_names(self.config))
        await ownership.acquire()
        self.ownership = ownership

        def lost(reason: str) -> None:
            log.error("%s: stopping", reason)
            self.state.gave_up.append(reason)
            self.stop()

        ownership.keep(lost)
        try:
            return await self._run_owned()
        finally:
            await ownership.release()
            if self.tracing is not None:
                self.tracing.shutdown()

    async def _run_owned(self) -> int:
        pipelines = self.config.pipelines
        await self._apply_retention()
        with_source = [p for p in pipelines if p.source is not None]
        sources: list[tuple[LoadedPipeline, Source[Any]]] = []
        for p in with_source:
            assert p.source is not None
            sources.append((p, self._make_source(p)))
        # A run is bounded when it has sources and every one of them is bounded.
        self.state.bounded = bool(sources) and all(s.bounded for _, s in sources)
        first = {p.name: s for p, s in sources}
        # Every sink counts for a wait for delivery before any source runs.
        for p in pipelines:
            self.add_delivery_groups(p)
        source_tasks: list[asyncio.Task[None]] = []
        sink_tasks: list[asyncio.Task[None]] = []
        for p in pipelines:
            made = self.spawn(p, first.get(p.name))
            source_tasks += made[: 1 if p.source is not None else 0]
            sink_tasks += made[1 if p.source is not None else 0 :]
        retention = asyncio.create_task(self._retention_loop(), name="retention")
        progress = asyncio.create_task(self._progress_loop(), name="progress")
        metrics = asyncio.create_task(self._metrics_loop(), name="metrics")
        if not sources:
            log.info("no sources in this run: sinks follow their topics until stopped")
        try:
            if source_tasks:
                await asyncio.gather(*source_tasks)
            if not self.stopping:
                dead = {f"source {source_id(p.name, p.source.name)}" for p, _ in sources}  # type: ignore[union-attr]
                if sources and dead <= self._failed_for_good and not self.bounded:
                    # No source will ever produce again: end like a bounded run, the sinks
                    # finishing what is stored, rather than idle until a signal (exit 1).
                    log.error("every source of this run failed for good: ending the run")
                    self.state.bounded = True
                self.state.set_sources_done()
                if not self.bounded:
                    await self.state.stopped()
            await asyncio.gather(*sink_tasks)
            # Pipelines restarted or added over the admin API run tasks of their own.
            while later := [t for ts in self.tasks.values() for t in ts if not t.done()]:
                await asyncio.gather(*later)
        finally:
            background = (retention, progress, metrics)
            every = {*source_tasks, *sink_tasks, *(t for ts in self.tasks.values() for t in ts)}
            for task in (*every, *background):
                task.cancel()
            await asyncio.gather(*every, return_exceptions=True)
            # The background loops only read the store: never wait on one for long (a store
            # client that swallowed the cancellation kept a refused run from exiting).
            await asyncio.wait(background, timeout=BACKGROUND_STOP_TIMEOUT)
            await self.http.close()
        if self.state.gave_up:
            log.error("run failed: %s", "; ".join(self.state.gave_up))
            return 1
        return 0

    def add_delivery_groups(self, pipeline: LoadedPipeline) -> None:
        """Count ``pipeline``'s sinks in waits for delivery (before its source runs)."""
        for sink in pipeline.sinks:
            for slot in pipeline.slots():
                self.deliveries.add_group(
                    sink_group(pipeline.name, sink.name, slot), subscription(pipeline, sink, slot)
                )

    def _forget_failure(self, key: str) -> None:
        """A connector started again (the admin API's restart) no longer counts as failed for
        good: neither for stopping an idle run nor for the run's exit code."""
        self._failed_for_good.discard(key)
        self.state.gave_up = [g for g in self.state.gave_up if not g.startswith(f"{key}: ")]

    def spawn(
        self, p: LoadedPipeline, first: Source[Any] | None = None
    ) -> list[asyncio.Task[None]]:
        """Start the supervisors of ``p``'s source (first in the list) and sinks under a fresh
        :class:`PipelineRunState`; the admin API calls it again for a stopped pipeline."""
        view = self.pipeline_states[p.name] = PipelineRunState(self.state, p.name)
        # Transforms that count something themselves (the llm transform's tokens) get a
        # handle on the worker's metrics, labelled with the pipeline and their stage.
        for chain in [p.chain, *(sink.chain for sink in p.sinks)]:
            for transform, stage in zip(chain.transforms, chain.stages, strict=True):
                bind = getattr(transform, "bind_metrics", None)
                if callable(bind):
                    bind(self.metrics.handle(pipeline=p.name, transform=stage))

        def supervised(
            kind: str, ident: str, connector: str, start: Callable[[], Awaitable[None]]
        ) -> asyncio.Task[None]:
            key = f"{kind} {ident}"
            self.statuses.setdefault(key, ConnectorStatus(ident, kind, connector))
            self._forget_failure(key)
            return asyncio.create_task(self._supervise(key, start, view), name=f"{kind}:{ident}")

        tasks: list[asyncio.Task[None]] = []
        if p.source is not None:
            tasks.append(
                supervised(
                    "source",
                    source_id(p.name, p.source.name),
                    p.source.connector,
                    lambda: self._run_source(p, first),
                )
            )
        for sink in p.sinks:
            for slot in p.slots():
                ident = sink_group(p.name, sink.name, slot)
                self.state.sink_started(ident)
                tasks.append(
                    supervised(
                        "sink",
                        ident,
                        sink.connector,
                        lambda sink=sink, slot=slot: self._run_sink(p, sink, None, slot),  # type: ignore[misc]
                    )
                )
        self.tasks[p.name] = tasks
        return tasks

    async def halt(self, name: str) -> None:
        """Stop pipeline ``name`` alone, as SIGTERM stops a run (sources drained, sinks
        flushed and committed), and wait until its tasks ended."""
        view = self.pipeline_states.get(name)
        if view is not None:
            view.halt()
        tasks = self.tasks.get(name, [])
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for p in self.config.pipelines:  # its sinks no longer hold a bounded run open
            if p.name == name:
                for sink in p.sinks:
                    for group in sink_groups(p, sink.name):
                        self.state.sink_gave_up(group)

    def spawn_unit(
        self,
        p: LoadedPipeline,
        sink: LoadedSink | None,
        view: PipelineRunState,
        slot: int | None = None,
    ) -> asyncio.Task[None]:
        """Cluster mode: start the supervisor of ``p``'s source (``sink`` None) or of one of
        its sinks' consumers alone (``slot``: which, for a pipeline with ``partitions:``),
        under ``view`` (:meth:`PipelineRunState.halt` stops that unit)."""
        if sink is None:
            assert p.source is not None
            kind, ident, connector = "source", source_id(p.name, p.source.name), p.source.connector

            def start() -> Awaitable[None]:
                return self._run_source(p, None, view)
        else:
            kind, ident, connector = "sink", sink_group(p.name, sink.name, slot), sink.connector
            self.state.sink_started(ident)

            def start() -> Awaitable[None]:
                return self._run_sink(p, sink, view, slot)

        key = f"{kind} {ident}"
        self.statuses.setdefault(key, ConnectorStatus(ident, kind, connector))
        self._forget_failure(key)
        return asyncio.create_task(self._supervise(key, start, view), name=f"{kind}:{ident}")

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

    async def _metrics_loop(self) -> None:
        """Keep the metrics that need the store fresh for :meth:`MetricsRegistry.render`."""
        while True:
            await self.refresh_metrics()
            await asyncio.sleep(METRICS_EVERY)

    async def refresh_metrics(self) -> None:
        """Set each of this run's sink groups' consumer lag per topic (the topic's end offset
        minus the group's committed offset) and the store's size on disk."""
        lag: dict[tuple[str, str], int] = {}
        try:
            for p in self.config.pipelines:
                lag.update(await sink_lags(self.store, p))
        except Exception as exc:  # metrics must never stop a pipeline
            _reraise_cancellation(exc)
            log.debug("metrics refresh failed: %s: %s", type(exc).__name__, exc)
            return
        self.metrics.consumer_lag = lag
        self.metrics.store_bytes = store_file_bytes(self.store)

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
            _reraise_cancellation(exc)
            log.warning("retention failed: %s: %s", type(exc).__name__, exc)

    # -- supervision ---------------------------------------------------------------------------

    async def _supervise(
        self, key: str, start: Callable[[], Awaitable[None]], view: PipelineRunState
    ) -> None:
        status = self.statuses[key]
        ident = status.id
        while True:
            try:
                await start()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, FencedError) and self.member is not None:
                    # Cluster mode: another worker owns this unit now. Stop, never restart.
                    status.set("STOPPED", f"fenced: {exc}")
                    self.member.fenced(key, exc)
                    return
                # One line: a driver's message may span several (psycopg's "connection
                # failed: …" then "\tIs the server running on that host …?"), and the reason
                # goes into the status, the progress lines and the exit summary.
                reason = _LINE_BREAKS.sub(" ", f"{type(exc).__name__}: {exc}").strip()
                status.set("FAILED", reason)
                status.failed_topic, status.failed_offset = getattr(
                    exc, "failed_record", (None, None)
                )
                status.restarts += 1
                # A wrong config, path or permission: restarting cannot help (and the message
                # says what to fix: no traceback for it). A failure the connector or the
                # taxonomy knows as transient (a refused connection, a timeout) is one line
                # per restart too: a database that is down for an hour must not fill the log
                # with the same stack every minute. The traceback is kept for failures nobody
                # classified (a connector's bug), and at DEBUG for the others.
                kind = classify(exc, self._classifiers.get(key))
                fatal = kind is ConfigError
                if view.stopping and kind is RetriableError:
                    # Stopped while it waited out a transient failure (the target down): it
                    # gave up what it had not written, and the next run starts from the last
                    # commit. Nothing failed for good: no ERROR, and the exit status stays 0.
                    log.warning("%s %s stopped while retrying: %s", status.kind, ident, reason)
                else:
                    log.error(
                        "%s %s FAILED: %s",
                        status.kind,
                        ident,
                        reason,
                        exc_info=exc if kind is None else None,
                    )
                if kind is not None and not fatal:
                    log.debug("%s %s failure in full", status.kind, ident, exc_info=exc)
                if (
                    fatal
                    or (self.bounded and status.restarts > BOUNDED_MAX_RESTARTS)
                    or view.stopping
                ):
                    if not view.stopping or fatal:
                        self.state.gave_up.append(f"{status.kind} {ident}: {reason}")
                    if status.kind == "sink":
                        self.state.sink_gave_up(ident)
                    if fatal:
                        self._failed_for_good.add(key)
                        if (
                            self._failed_for_good >= set(self.statuses)
                            and not self.stopping
                            and self.member is None  # a cluster member stays a member
                        ):
                            # Nothing left that could do work: a run that would idle forever.
                            log.error("every connector of this run failed for good: stopping")
                            self.stop()
                    return
                delay = backoff(status.restarts, self.restart_backoff, MAX_RESTART_BACKOFF)
                status.restart_delay = delay  # the admin API's status shows the backoff
                status.next_restart = time.time() + delay
                log.info(
                    "restarting %s %s in %.1fs (restart %d)",
                    status.kind,
                    ident,
                    delay,
                    status.restarts,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(view.stopped(), delay)
                # Stopped over the admin API, or the run stops (SIGTERM) during the backoff: no
                # start only to stop again. It was one more connect to what had just failed,
                # whose timeout (a database that does not answer) held up the worker's exit.
                if view.stopping:
                    status.set("STOPPED", status.reason)
                    return

    # -- sources -------------------------------------------------------------------------------

    def _context(
        self,
        pipeline: LoadedPipeline,
        name: str,
        slot: int | None = None,
        *,
        source: bool = False,
    ) -> ConnectorContext:
        logger = logging.getLogger(f"meshconnect.connector.{pipeline.name}.{name}")
        return ConnectorContext(
            pipeline=pipeline.name,
            name=name,
            logger=logger,
            base_dir=pipeline.base_dir,
            metrics=self.metrics.handle(pipeline=pipeline.name, connector=name),
            progress=ProgressReporter(logger, interval=self.progress_every),
            http=HttpRoutes(self.http, f"pipeline {pipeline.name!r} ({name})"),
            deliveries=self.deliveries,
            partition=slot,
            data_untouched=source and data_untouched(pipeline),
        )

    def _make_source(self, pipeline: LoadedPipeline) -> Source[Any]:
        loaded = pipeline.source
        assert loaded is not None
        ident = source_id(pipeline.name, loaded.name)
        self.statuses.setdefault(
            f"source {ident}", ConnectorStatus(ident, "source", loaded.connector)
        )
        cls = loaded.spec.load()
        source = cls(loaded.config, self._context(pipeline, loaded.name, source=True))
        if not isinstance(source, Source):
            raise PluginLoadError(
                f"source connector {loaded.connector!r}: its factory made {source!r}, not a "
                "meshconnect.Source"
            )
        self._classifiers[f"source {ident}"] = source.classify_error
        return source

    async def _run_source(
        self,
        pipeline: LoadedPipeline,
        first: Source[Any] | None,
        unit: PipelineRunState | None = None,
    ) -> None:
        loaded = pipeline.source
        assert loaded is not None
        ident = source_id(pipeline.name, loaded.name)
        status = self.statuses[f"source {ident}"]
        # The first attempt uses the instance made in run(); restarts make a fresh one.
        meters = self.metrics.connector("source", pipeline.name, loaded.name, status)
        source = (
            first if status.restarts == 0 and first is not None else self._make_source(pipeline)
        )
        queue: asyncio.Queue[Any] = asyncio.Queue(self.queue_batches)
        view = unit or self.pipeline_states[pipeline.name]
        guard = getattr(unit, "guard", None)  # cluster mode: is this worker still the owner?
        appender = asyncio.create_task(self._append_loop(pipeline, queue, status, meters, guard))
        try:
            await check_partitions(self.store, pipeline)
            positions = await self.store.positions(ident)
            begun = await source.start(positions)
            if begun is not None:
                _check_positions(ident, "start", begun)
            if begun:  # "from now" made durable before the source counts as started
                await self.store.append([], {(ident, p): dict(v) for p, v in begun.items()})
            status.set("RUNNING")
            log.info("source %s started (%d committed partition positions)", ident, len(positions))
            while not view.stopping:
                if view.paused:  # paused over the admin API: poll again once resumed
                    await view.wait_resumed()
                    continue
                polled = time.time_ns() if self.tracing is not None else 0
                batch, attempts = await retrying(
                    source.poll,
                    loaded.errors.retry,
                    log,
                    f"source {ident} poll",
                    source.classify_error,
                )
                meters.retries += attempts - 1
                if batch is None:
                    meters.source_lag = 0.0
                    break
                _check_batch(ident, batch)
                if batch.records:
                    meters.lag_from(batch.records[-1].time)
                else:  # caught up: nothing new at the source
                    meters.source_lag = 0.0
                if not batch.records and not batch.positions and not batch.failures:
                    await settle_ack(batch.ack, None)  # nothing to store: durable as it is
                    continue
                trace = None
                if self.tracing is not None and (batch.records or batch.failures):
                    trace = self._trace_poll(pipeline, batch, polled)
                try:
                    routed = await self._route_source_batch(pipeline, batch, status)
                except BaseException as exc:
                    if trace is not None:
                        _trace_failed(trace, "transforms", exc)
                    await settle_ack(batch.ack, exc)
                    raise
                if trace is not None:
                    trace.stage("transforms", trace.mark, time.time_ns())
                if not await _put(queue, (*routed, batch.ack, trace), appender):
                    error = _appender_error(appender)
                    if trace is not None:
                        trace.end(time.time_ns(), error)
                    await settle_ack(batch.ack, error)
                    break
        finally:
            try:
                await _put(queue, _DONE, appender)
                # Everything polled is appended, and its ack settled, before the source is
                # stopped: an ack may still need the source's connection (a Redis XACK).
                await appender
            finally:
                await _fail_queued(queue, appender)
                with contextlib.suppress(Exception):
                    await source.stop()
                source.context.http.remove_all()
        self._finished(status, "in", "stored", pipeline.name)

    def _trace_poll(self, pipeline: LoadedPipeline, batch: SourceBatch, polled: int) -> BatchTrace:
        """Start a source batch's span with its ``source poll`` stage (``mark``: when the
        next stage began)."""
        assert self.tracing is not None and pipeline.source is not None
        trace = self.tracing.batch(
            "source batch",
            polled,
            batch.records,
            pipeline=pipeline.name,
            connector=pipeline.source.name,
            kind="source",
            records=len(batch.records) + len(batch.failures),
        )
        trace.stamp(batch.records)
        now = time.time_ns()
        trace.stage("source poll", polled, now)
        trace.mark = now
        return trace

    async def _route_source_batch(
        self, pipeline: LoadedPipeline, batch: SourceBatch, status: ConnectorStatus
    ) -> tuple[list[Record], dict[tuple[str, str], Any]]:
        loaded = pipeline.source
        assert loaded is not None
        status.records_in += len(batch.records) + len(batch.failures)
        chain = pipeline.chain
        if chain.is_async:
            records, failures = await chain.aprocess(batch.records)
        else:
            records, failures = chain.process(batch.records)
        if failures:
            records, failures = await retry_transforms(
                pipeline.chain,
                records,
                failures,
                loaded.errors.retry,
                log,
                f"source {source_id(pipeline.name, loaded.name)}",
            )
        records, unroutable = route(pipeline, records)
        out = records
        problems: list[tuple[Record, BaseException, str]] = [
            (r, e, "source") for r, e in batch.failures
        ]
        problems.extend((f.record, f.error, f.stage) for f in failures)
        problems.extend(unroutable)
        if problems:
            out = list(records)
            out.extend(dead_letters(pipeline.name, loaded.name, loaded.errors, problems, status))
        status.records_out += len(records)
        ident = source_id(pipeline.name, loaded.name)
        positions = {(ident, part): pos for part, pos in batch.positions.items()}
        return out, positions

    async def _append_loop(
        self,
        pipeline: LoadedPipeline,
        queue: asyncio.Queue[Any],
        status: ConnectorStatus,
        meters: ConnectorMeters,
        guard: Callable[[], None] | None = None,
    ) -> None:
        loaded = pipeline.source
        assert loaded is not None
        ident = source_id(pipeline.name, loaded.name)
        while True:
            item = await queue.get()
            if item is _DONE:
                return
            records, positions, ack, trace = item
            made: set[int] = set()  # ids of the dead letters made for this batch
            started = time.perf_counter()
            began = time.time_ns() if trace is not None else 0
            try:
                if guard is not None:
                    guard()
                while True:
                    try:
                        _, attempts = await retrying(
                            functools.partial(self.store.append, records, positions),
                            loaded.errors.retry,
                            log,
                            f"source {ident} append to the mesh store",
                        )
                        meters.retries += attempts - 1
                        break
                    except RecordEncodingError as exc:
                        # One record the store cannot encode (a transform made a set, say): it
                        # goes by the errors policy and the rest of the batch is appended again.
                        # Each pass removes a record; a dead letter is always storable, and one
                        # that were not would be dropped rather than retried forever.
                        records = self._unstorable(pipeline, records, exc, status, made)
                        await asyncio.sleep(0)  # let a stop signal in between passes
            except BaseException as exc:
                if trace is not None:
                    _trace_failed(trace, "store append", exc, began)
                await settle_ack(ack, exc)
                raise
            if trace is not None:
                ended = time.time_ns()
                trace.stage("store append", began, ended)
                trace.end(ended, stored=len(records))
            self.state.appended()
            await settle_ack(ack, None)
            status.last_batch_seconds = time.perf_counter() - started
            meters.batch.observe(status.last_batch_seconds)

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
        dead = dead_letters(
            pipeline.name, loaded.name, loaded.errors, [(bad, exc, "store")], status
        )
        made.update(map(id, dead))
        rest.extend(dead)
        return rest

    # -- sinks ---------------------------------------------------------------------------------

    async def _run_sink(
        self,
        pipeline: LoadedPipeline,
        loaded: LoadedSink,
        unit: PipelineRunState | None = None,
        slot: int | None = None,
    ) -> None:
        group = sink_group(pipeline.name, loaded.name, slot)
        status = self.statuses[f"sink {group}"]
        # Before anything can fail: a sink that fails to open still shows its restarts.
        # Each consumer of a partitioned sink has meters of its own (connector="NAME#k").
        label = loaded.name if slot is None else f"{loaded.name}#{slot}"
        meters = self.metrics.connector("sink", pipeline.name, label, status)
        cls = loaded.spec.load()
        sink = cls(loaded.config, self._context(pipeline, loaded.name, slot))
        if not isinstance(sink, Sink):
            raise PluginLoadError(
                f"sink connector {loaded.connector!r}: its factory made {sink!r}, not a "
                "meshconnect.Sink"
            )
        self._classifiers[f"sink {group}"] = sink.classify_error
        guarded = getattr(unit, "guarded", None)  # cluster mode: writes only while the owner
        if guarded is not None:
            sink = guarded(sink)
        try:
            await check_partitions(self.store, pipeline)  # the sinks' consumer groups too
            info = await self.store.group(group)
            await sink.open(info.state)
            if info.state is None:
                # Commit the fresh sink's state before any record: the output it just created
                # is then its own, and a crash before the first flush does not leave behind
                # a file it would have to treat as someone else's (see the file sink).
                flushed = await sink.flush()
                state = flushed.state if isinstance(flushed, Flushed) else flushed
                check_flushed(group, state)
                if state is not None:
                    await self.store.commit(group, {}, state)
            status.set("RUNNING")
            log.info("sink %s started at %s", group, info.offsets or "the beginning")
            await SinkLoop(
                cast(RunState, unit or self.pipeline_states[pipeline.name]),
                self.store,
                pipeline,
                loaded,
                sink,
                status,
                info.offsets,
                deliveries=self.deliveries,
                meters=meters,
                tracing=self.tracing,
                slot=slot,
            ).run()
        finally:
            with contextlib.suppress(Exception):
                await sink.close()
        self._finished(status, "read", "written", pipeline.name)

    def _finished(self, status: ConnectorStatus, came: str, went: str, pipeline: str) -> None:
        view = self.pipeline_states.get(pipeline)
        status.set("STOPPED" if self.stopping or (view and view.stopping) else "DONE")
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


def data_untouched(pipeline: LoadedPipeline) -> bool:
    """Whether nothing reads a source record's ``data`` between the source and the mesh store:
    no transforms, and a topic that is literal or a template that names no ``data``
    (``ConnectorContext.data_untouched``)."""
    topic = pipeline.topic
    return not len(pipeline.chain) and (topic.literal is not None or "data" not in topic.text)


async def settle_ack(ack: Ack | None, error: BaseException | None) -> None:
    """Tell a source what became of a batch (:attr:`SourceBatch.ack`); the worker calls this
    exactly once per batch. An ack that raises is logged: the batch's fate does not change."""
    if ack is None:
        return
    try:
        result = ack(error)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        log.warning("a source's ack callback raised %s: %s", type(exc).__name__, exc)


def _trace_failed(trace: BatchTrace, stage: str, error: BaseException, began: int = 0) -> None:
    """End a batch's spans with the stage that failed."""
    now = time.time_ns()
    trace.stage(stage, began or trace.mark or now, now, error)
    trace.end(now, error)


def _appender_error(appender: asyncio.Task[None]) -> BaseException:
    """Why batches still queued for ``appender`` will never be appended."""
    if appender.done() and not appender.cancelled() and appender.exception() is not None:
        return appender.exception()  # type: ignore[return-value]
    return RuntimeError("the worker stopped before the batch was appended to the mesh store")


async def _fail_queued(queue: asyncio.Queue[Any], appender: asyncio.Task[None]) -> None:
    """Fail the acks of batches left in ``queue`` after its appender ended (it failed)."""
    while not queue.empty():
        item = queue.get_nowait()
        if item is not _DONE:
            await settle_ack(item[2], _appender_error(appender))


def _short(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:80]}{'…' if len(text) > 80 else ''}"


def _check_positions(ident: str, what: str, positions: Any) -> None:
    """PluginError naming the source unless ``positions`` maps partitions to mappings."""
    if not isinstance(positions, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Mapping) for k, v in positions.items()
    ):
        raise PluginError(
            f"source {ident}: {what} returned positions {_short(positions)}: they must map "
            "each partition name to a mapping (the position)"
        )


def _check_batch(ident: str, batch: Any) -> None:
    """PluginError naming the source for a poll result that is not a SourceBatch of Records
    (a plugin's mistake, which would otherwise fail deep in the worker with an
    AttributeError). The records are checked at both ends only: this runs for every batch."""
    if not isinstance(batch, SourceBatch):
        raise PluginError(
            f"source {ident}: poll returned {_short(batch)}, not a meshconnect.SourceBatch or None"
        )
    records = batch.records
    if not isinstance(records, Sequence) or (
        records and not (isinstance(records[0], Record) and isinstance(records[-1], Record))
    ):
        raise PluginError(
            f"source {ident}: poll returned a SourceBatch whose records are {_short(records)}, "
            "not a list of meshconnect.Record"
        )
    _check_positions(ident, "poll", batch.positions)


async def _put(queue: asyncio.Queue[Any], item: Any, consumer: asyncio.Task[None]) -> bool:
    """Put ``item`` unless the consumer has ended (then a full queue would block forever)."""
    if consumer.done():
        return False
    if not queue.full():  # the usual case: no task, no wait
        queue.put_nowait(item)
        return True
    put = asyncio.ensure_future(queue.put(item))
    await asyncio.wait([put, consumer], return_when=asyncio.FIRST_COMPLETED)
    if not put.done():
        put.cancel()
        return False
    return True
