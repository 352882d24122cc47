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
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import jsonvalue
from .api import Flushed, Sink
from .errorpolicy import backoff_delay, dead_letters, retry_transforms, retrying
from .errors import (
    BatchError,
    ConfigError,
    DataError,
    MeshconnectError,
    PluginError,
    RetriableError,
    StoreError,
    classify,
)
from .mesh.codec import encode_state
from .mesh.routing import resolve_topics, subscription
from .metrics import ConnectorMeters
from .offsets import dead_letter_id, sink_group
from .records import Record
from .transforms._common import fresh_copy

if TYPE_CHECKING:
    from .config.loader import LoadedPipeline, LoadedSink
    from .deliveries import Deliveries
    from .mesh.store import MeshStore
    from .runstate import ConnectorStatus, RunState
    from .tracing import Tracing

__all__ = ["SinkLoop", "check_flushed", "dead_letter_id", "sink_group"]

log = logging.getLogger("meshconnect.worker")


@dataclass(slots=True)
class _Written:
    """The offsets of one batch given to a sink's ``write``: ``count`` of them, from ``first``
    on one by one when ``offsets`` is None (the common case: no transform dropped or added
    records), else as listed. ``least`` is the smallest (nothing here needs them ascending)."""

    topic: str
    count: int
    first: int
    least: int
    offsets: list[int] | None = None

    @classmethod
    def of(cls, topic: str, offsets: list[int]) -> _Written:
        if not offsets:
            return cls(topic, 0, 0, 0)
        first = offsets[0]
        if offsets[-1] - first == len(offsets) - 1 and offsets == list(
            range(first, first + len(offsets))
        ):
            return cls(topic, len(offsets), first, first)
        return cls(topic, len(offsets), first, min(offsets), offsets)

    def tail(self, n: int) -> _Written:
        """The last ``n`` (``0 < n < count``)."""
        if self.offsets is None:
            start = self.first + self.count - n
            return _Written(self.topic, n, start, start)
        return _Written.of(self.topic, self.offsets[-n:])


class SinkLoop:
    """One sink's read-write-commit loop (one instance per start)."""

    def __init__(
        self,
        run: RunState,
        store: MeshStore,
        pipeline: LoadedPipeline,
        loaded: LoadedSink,
        sink: Sink[Any],
        status: ConnectorStatus,
        committed: dict[str, int],
        deliveries: Deliveries | None = None,
        meters: ConnectorMeters | None = None,
        tracing: Tracing | None = None,
        slot: int | None = None,
    ) -> None:
        self.run_state = run
        #: The sink's built-in metrics (retries, batch latency); private ones when not given.
        self.meters = meters or ConnectorMeters("sink", pipeline.name, loaded.name, status)
        #: OpenTelemetry spans per batch (:mod:`.tracing`), or ``None``.
        self.tracing = tracing
        self.deliveries = deliveries
        self.store = store
        self.pipeline = pipeline
        self.loaded = loaded
        self.sink = sink
        self.status = status
        #: What this consumer reads: the sink's topics, its partitions (``slot``: which
        #: consumer of a sink of a pipeline with ``partitions:``; ``None``: the only one).
        self.wanted = subscription(pipeline, loaded, slot)
        self.group = sink_group(pipeline.name, loaded.name, slot)
        self.offsets: dict[str, int] = dict(committed)
        self.committed: dict[str, int] = dict(committed)
        self.topics: list[str] = []
        # A group that never committed commits after its first batch: a crash soon after the
        # first start then re-delivers one batch, not commit_interval's worth (sinks that find
        # re-deliveries by their committed state, as the redis xadd sink does, need it).
        self.last_commit = time.monotonic() if committed else float("-inf")
        self.committed_state: Any = object()  # unknown: the first commit always writes
        #: Each batch written since the last full flush, oldest first: what a partial
        #: flush's ``pending`` counts back from (a sink may keep records pending for long: an
        #: S3 object of a rare key stays open, so this is per batch, not per record).
        self.unflushed: list[_Written] = []
        self.retry = loaded.errors.retry
        self.classifier = sink.classify_error
        self.last_tick = time.monotonic()
        #: Per topic, the offset below which failures were already dead-lettered.
        self.dead_marks: dict[str, int] = {}

    async def _load_dead_marks(self) -> None:
        marks = await self.store.positions(dead_letter_id(self.group))
        self.dead_marks = {t: int(p.get("next", 0)) for t, p in marks.items()}

    async def run(self) -> None:
        run = self.run_state
        batch_size = self.loaded.batch_size
        hint = self.sink.batch_size_hint
        if hint is not None and not self.loaded.batch_size_given:
            batch_size = min(batch_size, hint)
        self.topics = await resolve_topics(self.store, self.wanted)
        last_resolve = time.monotonic()
        await self._load_dead_marks()
        while not run.stopping:
            if run.paused:  # paused over the admin API: commit what was written, then wait
                await self._commit()
                await run.wait_resumed()
                continue
            progressed = False
            for topic in self.topics:
                offset = self.offsets.get(topic, 0)
                records = await self.store.read(topic, offset, batch_size)
                if not records:
                    continue
                progressed = True
                first = records[0].offset
                if first is not None and first > offset:  # offsets are dense: retention
                    log.warning(
                        "sink %s: retention deleted records %d..%d of topic %s before this "
                        "sink read them (%d records skipped); it resumes at offset %d",
                        self.group,
                        offset,
                        first - 1,
                        topic,
                        first - offset,
                        first,
                    )
                try:
                    await self._deliver(topic, records)
                except Exception as exc:  # the status shows the record it failed on
                    _blame(exc, topic, records[0].offset)
                    raise
                self.offsets[topic] = records[-1].offset + 1  # type: ignore[operator]
                self.store.consumed(self.group, topic, self.offsets[topic])
                if time.monotonic() - self.last_commit >= self.loaded.commit_interval:
                    await self._commit()
                await self._maybe_tick()
                if run.stopping:
                    break
            if progressed:
                continue
            # Idle: commit what is pending, see whether the run is over, wait for data.
            await self._maybe_tick()
            await self._commit()
            if run.sources_done and run.bounded:
                generation = run.generation
                if self.committed != self.offsets:  # the sink holds records open: close them
                    await self._tick(final=True)
                if await self._caught_up():
                    run.sink_caught_up(self.group, generation)
                if run.sinks_done:
                    return
            changed = self.store.data_changed()
            stop = asyncio.ensure_future(run.stopped())
            done = asyncio.ensure_future(run.sinks_finished())
            try:
                await asyncio.wait(
                    [asyncio.ensure_future(changed), stop, done],
                    timeout=self._idle_wait(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                stop.cancel()
                done.cancel()
            if time.monotonic() - last_resolve > 1.0 or run.sources_done:
                self.topics = await resolve_topics(self.store, self.wanted)
                last_resolve = time.monotonic()
        await self._tick(final=True)

    def _idle_wait(self) -> float:
        """How long an idle loop waits for data: a second, or less until the next tick."""
        interval = self.sink.tick_interval
        if interval is None:
            return 1.0
        return max(0.0, min(1.0, self.last_tick + interval - time.monotonic()))

    async def _maybe_tick(self) -> None:
        interval = self.sink.tick_interval
        if interval is not None and time.monotonic() - self.last_tick >= interval:
            await self._tick(final=False)

    async def _tick(self, final: bool) -> None:
        """Call the sink's ``tick`` (rotation by time; ``final`` at the end of the run), then
        flush and commit what it made durable."""
        self.last_tick = time.monotonic()
        await retrying(
            lambda: self.sink.tick(final),
            self.retry,
            log,
            f"sink {self.group} tick",
            self.classifier,
        )
        await self._commit()

    async def _caught_up(self) -> bool:
        self.topics = await resolve_topics(self.store, self.wanted)
        ends = await self.store.end_offsets(self.topics)
        return all(self.committed.get(t, 0) >= end for t, end in ends.items())

    async def _commit(self) -> None:
        """Flush the sink and commit what it made durable: every offset read so far, or, when
        ``flush`` returns :class:`~meshconnect.api.Flushed` with pending records, each topic's
        offset up to its first pending record."""
        if self.offsets == self.committed:
            self.last_commit = time.monotonic()
            return
        flushed, attempts = await retrying(
            self.sink.flush, self.retry, log, f"sink {self.group} flush", self.classifier
        )
        self.meters.retries += attempts - 1
        pending = 0
        if isinstance(flushed, Flushed):
            state, pending = flushed.state, flushed.pending
        else:
            state = flushed
        check_flushed(self.group, state, pending)
        offsets = dict(self.offsets)
        if pending:
            offsets.update(self._first_pending(pending))
        else:
            self.unflushed.clear()
        if offsets != self.committed or state != self.committed_state:
            await retrying(
                lambda: self.store.commit(self.group, offsets, state),
                self.retry,
                log,
                f"sink {self.group} commit",
            )
        self.committed = offsets
        self.committed_state = state
        self.last_commit = time.monotonic()
        if self.deliveries is not None:
            self.deliveries.committed(self.group, offsets)

    def _first_pending(self, pending: int) -> dict[str, int]:
        """Per topic, the offset of the first of the ``pending`` newest written records (what
        may be committed for it); drops what became durable from ``unflushed``."""
        firsts: dict[str, int] = {}
        kept: list[_Written] = []
        left = pending
        for written in reversed(self.unflushed):
            if left <= 0:
                break
            tail = written.tail(left) if left < written.count else written
            left -= tail.count
            kept.append(tail)
            if tail.count:
                topic, least = tail.topic, tail.least
                firsts[topic] = min(least, firsts.get(topic, least))
        if left > 0:
            raise PluginError(
                f"sink {self.group}: flush() reported {pending} pending records, but only "
                f"{pending - left} were written since the last full flush"
            )
        kept.reverse()
        self.unflushed = kept
        return firsts

    async def _deliver(self, topic: str, records: list[Record]) -> None:
        status = self.status
        status.records_in += len(records)
        begun = time.time_ns() if self.tracing is not None else 0
        end = records[-1].offset + 1  # type: ignore[operator]
        chain = self.loaded.chain
        if len(chain):  # stored records may be shared with other sinks: change copies
            records = (
                [_deep_copy(r) for r in records]
                if chain.changes_nested_objects
                else [r.copy() for r in records]
            )
        if chain.is_async:
            out, failures = await chain.aprocess(records)
        else:
            out, failures = chain.process(records)
        if failures:
            out, failures = await retry_transforms(
                chain, out, failures, self.loaded.errors.retry, log, f"sink {self.group}"
            )
        problems: list[tuple[Record, BaseException, str]] = [
            (f.record, f.error, f.stage) for f in failures
        ]
        if out:
            trace = None
            if self.tracing is not None:
                trace = self.tracing.batch(
                    "sink batch",
                    begun,
                    records,
                    pipeline=self.pipeline.name,
                    connector=self.loaded.name,
                    kind="sink",
                    topic=topic,
                    records=len(records),
                )
                trace.mark = time.time_ns()
                trace.stage("transforms", begun, trace.mark)
            started = time.perf_counter()
            self.unflushed.append(_Written.of(topic, [r.offset for r in out]))  # type: ignore[misc]
            try:
                rejected = await self._write(out)
            except BaseException as exc:
                if trace is not None:
                    ended = time.time_ns()
                    trace.stage("sink write", trace.mark, ended, exc)
                    trace.end(ended, exc)
                raise
            problems.extend(rejected)
            status.last_batch_seconds = time.perf_counter() - started
            self.meters.batch.observe(status.last_batch_seconds)
            if trace is not None:  # failed records: the first one's error marks the spans
                ended = time.time_ns()
                error = rejected[0][1] if rejected else None
                trace.stage("sink write", trace.mark, ended, error)
                trace.end(ended, error, written=len(out) - len(rejected), failed=len(rejected))
        status.records_out += len(out) - sum(1 for _, _, s in problems if s == "sink")
        if problems:
            try:
                await self._dead_letter(topic, end, problems)
            except DataError as exc:  # tolerance none: it names the first failed record
                _blame(exc, problems[0][0].topic, problems[0][0].offset)
                raise

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
        dead = dead_letters(
            self.pipeline.name, self.loaded.name, self.loaded.errors, problems, self.status
        )
        if not dead:
            return
        target = self.loaded.errors.dead_letter_topic
        if target is not None and any(fnmatch.fnmatchcase(target, p) for p in self.wanted.patterns):
            # validate refuses this; never feed failures back into the sink's own input
            raise ConfigError(
                f"sink {self.group}: dead-letter topic {target!r} is a topic this sink reads "
                f"({', '.join(self.wanted.patterns)}); refusing to dead-letter into it (a loop)"
            )
        positions = {(dead_letter_id(self.group), topic): {"next": end}}
        await retrying(
            lambda: self.store.append(dead, positions),
            self.loaded.errors.retry,
            log,
            f"sink {self.group} dead-letter append",
        )
        self.dead_marks[topic] = end
        self.run_state.appended()

    async def _write(self, records: list[Record]) -> list[tuple[Record, BaseException, str]]:
        """Write a batch; return the records that failed for good: data errors, and under
        ``tolerance: all`` those whose retriable error outlasted ``retry.max_attempts``.
        Anything else raises.

        * The sink raises a :class:`~meshconnect.errors.BatchError`: only the records it
          names are retried (retriable errors, after a backoff) or returned (data errors);
          the others were written and are never sent again.
        * A retriable error for the whole call: the same records again, after a backoff.
        * A plain data error: the records are written again one at a time to find the bad
          ones (the sink left nothing of the batch half-written, per the Sink contract)."""
        policy = self.retry
        failed: list[tuple[Record, BaseException, str]] = []
        pending = records
        attempt = 1
        while True:
            try:
                await self.sink.write(pending)
                return failed
            except BatchError as exc:
                retry: list[Record] = []
                for index, error in sorted(exc.failures.items()):
                    if not 0 <= index < len(pending):
                        raise PluginError(
                            f"sink {self.group}: BatchError names record {index} of a batch "
                            f"of {len(pending)}"
                        ) from exc
                    if self._retriable(error) and attempt < policy.max_attempts:
                        retry.append(pending[index])
                        continue
                    error.attempts = attempt  # type: ignore[attr-defined]
                    if not self._tolerated(error):
                        _blame(error, pending[index].topic, pending[index].offset)
                        raise error from exc
                    failed.append((pending[index], error, "sink"))
                if not retry:
                    return failed
                cause: BaseException = exc
                pending = retry
            except Exception as exc:
                if self._retriable(exc) and attempt < policy.max_attempts:
                    cause = exc
                else:
                    exc.attempts = attempt  # type: ignore[attr-defined]
                    if not self._tolerated(exc):
                        if len(pending) == 1:
                            _blame(exc, pending[0].topic, pending[0].offset)
                        raise
                    if self._classify(exc) is not DataError or len(pending) == 1:
                        failed.extend((r, exc, "sink") for r in pending)
                        return failed
                    for record in pending:  # find the bad ones
                        failed.extend(await self._write([record]))
                    return failed
            if self.run_state.stopping:
                self._stop_retrying(cause, pending)
            delay = backoff_delay(policy, attempt)
            log.warning(  # the format of retrying()'s lines (docs/errors.md#retries)
                "sink %s write failed (attempt %d of %d): %s: %s; retrying in %.3fs",
                self.group,
                attempt,
                policy.max_attempts,
                type(cause).__name__,
                cause,
                delay,
            )
            try:  # a stop ends the wait: the target may stay down for the whole budget
                await asyncio.wait_for(self.run_state.stopped(), delay)
            except TimeoutError:
                pass
            if self.run_state.stopping:
                self._stop_retrying(cause, pending)
            attempt += 1
            self.meters.retries += 1

    def _stop_retrying(self, cause: BaseException, pending: list[Record]) -> None:
        """The run is stopping while a write waits to be retried: give the batch up unwritten
        and uncommitted (the next run delivers it again), never to the dead-letter topic. A
        stop during an outage of the target waited for the whole retry budget (minutes with
        `max_backoff: 30s`), or, under `tolerance: all`, dead-lettered the batch at its end."""
        log.warning(
            "sink %s: stopping while a write is retried (%s: %s): %d record(s) left for the "
            "next run",
            self.group,
            type(cause).__name__,
            cause,
            len(pending),
        )
        raise cause

    def _classify(self, exc: BaseException) -> type[MeshconnectError] | None:
        return classify(exc, self.classifier)

    def _retriable(self, exc: BaseException) -> bool:
        return self._classify(exc) in (RetriableError, StoreError)

    def _tolerated(self, exc: BaseException) -> bool:
        """Whether a write error goes by the errors policy (data errors always; retriable ones
        out of attempts under ``tolerance: all``) rather than failing the sink at once."""
        kind = self._classify(exc)
        if kind is DataError:
            return True
        return kind in (RetriableError, StoreError) and self.loaded.errors.tolerance == "all"


def check_flushed(group: str, state: Any, pending: Any = 0) -> None:
    """PluginError naming the sink for a flush result the store cannot commit: a state
    that is not a JSON object (or ``None``), a ``pending`` that is not a count. Retrying
    the commit could never help (a StoreError would be retried)."""
    problem = None
    if state is not None and not isinstance(state, Mapping):
        problem = f"a state of type {type(state).__name__} ({state!r:.80}), not a dict"
    elif type(pending) is not int or pending < 0:
        problem = f"Flushed(pending={pending!r}), not a count of records"
    else:
        try:
            encode_state(group, state)
        except StoreError as exc:
            problem = f"a state the store cannot keep: {exc}"
    if problem is not None:
        raise PluginError(
            f"sink {group}: flush returned {problem}; it must return a JSON-able dict, "
            "Flushed(state, pending) or None"
        )


def _blame(exc: BaseException, topic: str | None, offset: int | None) -> None:
    """Mark ``exc`` with the record it failed on, ``(topic, offset)``, unless a more precise
    mark (one record of the batch) is already there; the worker's status shows it."""
    if getattr(exc, "failed_record", None) is None and topic is not None and offset is not None:
        try:
            exc.failed_record = (topic, offset)  # type: ignore[attr-defined]
        except AttributeError:  # an exception type with __slots__
            pass


def _deep_copy(record: Record) -> Record:
    """A copy of a stored record sharing no object with it (for transforms that may change
    nested objects in place): from the store's JSON when it is at hand."""
    copy = record.copy()
    encoded = record.encoded_data
    copy.data = (
        jsonvalue.loads(encoded, max_depth=None) if encoded is not None else fresh_copy(record.data)
    )
    return copy
