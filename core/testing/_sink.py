"""SinkConformance: the Sink contract (:mod:`meshconnect.api`) as a pytest class.

Subclass it in a test module and define two methods::

    class TestFileSink(SinkConformance):
        def make_sink(self, tmp_path):
            context = ConnectorContext("test", "out", logging.getLogger("t"), str(tmp_path))
            return FileSink(FileSinkConfig(path="out.jsonl"), context)

        def durable(self, tmp_path):
            return [json.loads(line)["n"] for line in (tmp_path / "out.jsonl").open()]

``make_sink(tmp_path)`` returns a fresh, unopened sink writing to one destination under
``tmp_path``; ``durable(tmp_path)`` reads back the ``n`` of every record the destination
holds, in order. Records are ``make_record(i)`` (``data = {"n": i}``, override it for sinks
that need other data). Define ``poison_record(i)`` to return a record the destination
rejects (a :class:`~meshconnect.errors.DataError`), or leave it ``None`` when the sink
rejects nothing: that test is then skipped with the reason.

The suite drives the sink the way the worker's sink loop does (:mod:`meshconnect.sinkloop`):
``open(state)`` with the state of the last commit, ``write`` batches, ``flush`` (a plain state,
or :class:`~meshconnect.api.Flushed` with ``pending`` records not durable yet, in which case
only the records before them count as committed), ``tick(final=True)`` at the end, and a
*crash* is dropping the instance without ``flush`` or ``close``. What it checks:

* everything written, flushed and closed is in the destination once, in order;
* after a crash before the commit (before ``flush``, or after a ``flush`` whose commit never
  happened), a new sink opened with the last committed state and fed again from the
  committed offset ends with every record exactly once (truncate-to-checkpoint or
  idempotence); the state it is opened with is the one the store gives back (JSON);
* per-record failures: a poison record in a batch fails alone (a ``BatchError`` naming it, or
  a plain ``DataError`` with nothing of the batch written, after which the loop writes the
  records one by one), and every other record is in the destination exactly once;
* partial commits: with small batches and a flush after each, killed half-way and resumed
  from what the flushes reported durable, every record ends up there exactly once;
* retries: when ``unavailable(tmp_path)`` is defined (a context manager during which the
  destination refuses writes), a write and a flush in an outage raise retriable errors, and
  called again once it is over they lose and repeat nothing;
* ``close()`` without ``open()`` does not raise.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from ..api import Flushed, Sink
from ..errors import BatchError, DataError, RetriableError, StoreError, classify
from ..mesh.codec import decode_json, encode_state
from ..records import Record

__all__ = ["SinkConformance"]


async def write_like_the_loop(sink: Sink[Any], records: Sequence[Record]) -> list[Record]:
    """Write ``records`` as the sink loop does; return the ones that failed for good."""
    try:
        await sink.write(records)
        return []
    except BatchError as exc:
        for i in exc.failures:
            assert classify(exc.failures[i], sink.classify_error) is DataError, (
                f"record {i} failed with {exc.failures[i]!r}, not a data error"
            )
        return [records[i] for i in sorted(exc.failures)]
    except Exception as exc:
        if classify(exc, sink.classify_error) is not DataError:
            raise
        if len(records) == 1:
            return list(records)
        one_by_one: list[Record] = []
        for record in records:
            one_by_one.extend(await write_like_the_loop(sink, [record]))
        return one_by_one


async def once_in_an_outage(sink: Sink[Any], operation: Any, *args: Any) -> list[Any]:
    """Call ``operation`` once while the destination is down: ``[]`` when it worked, else
    what the loop calls again (the records a write must write again, or ``[None]`` for a
    flush). Its failure must be retriable, or the worker would not call again."""
    try:
        await operation(*args)
        return []
    except BatchError as exc:
        errors = exc.failures
        again = [args[0][i] for i in sorted(errors)]
    except Exception as exc:
        errors = {0: exc}
        again = list(args[0]) if args else [None]
    for error in errors.values():
        kind = classify(error, sink.classify_error)
        assert kind in (RetriableError, StoreError), (
            f"{error!r} during an outage is classified {kind.__name__ if kind else 'unknown'}, "
            "not retriable: the worker would fail the sink instead of retrying"
        )
    return again


def _as_stored(state: Any) -> Any:
    """A sink state as ``open`` gets it back from the mesh store: encoded as the store
    encodes it (a tuple comes back a list, a datetime a string) and decoded."""
    return decode_json(encode_state("conformance", state))


async def flush_like_the_loop(sink: Sink[Any]) -> tuple[Any, int]:
    """Flush; returns (state to commit, how many of the newest written records are pending)."""
    flushed = await sink.flush()
    if isinstance(flushed, Flushed):
        return flushed.state, flushed.pending
    return flushed, 0


class SinkConformance:
    """The sink contract; subclass and define :meth:`make_sink` and :meth:`durable`."""

    #: Records per test run (the partial-commit test writes them in batches of 7).
    records: int = 60

    def make_sink(self, tmp_path: Path) -> Sink[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def durable(self, tmp_path: Path) -> list[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def make_record(self, i: int) -> Record:
        return Record({"n": i}, id=f"conformance-{i}", topic="conformance", offset=i)

    def poison_record(self, i: int) -> Record | None:
        return None

    def unavailable(self, tmp_path: Path) -> AbstractContextManager[Any] | None:
        """A context manager during which the destination refuses every write (its server
        down, a table locked by another connection), or ``None`` when the test cannot make
        it so: the outage test is then skipped with the reason."""
        return None

    async def _finish(self, sink: Sink[Any]) -> None:
        await sink.tick(final=True)
        _, pending = await flush_like_the_loop(sink)
        assert pending == 0, "the final tick must make everything durable"
        await sink.close()

    async def test_what_is_flushed_and_closed_is_there_once(self, tmp_path: Path) -> None:
        records = [self.make_record(i) for i in range(self.records)]
        sink = self.make_sink(tmp_path)
        await sink.open(None)
        for start in range(0, len(records), 25):
            assert await write_like_the_loop(sink, records[start : start + 25]) == []
        await self._finish(sink)
        assert self.durable(tmp_path) == list(range(self.records))

    @pytest.mark.parametrize("flushed_before_the_crash", [False, True])
    async def test_redelivery_after_a_crash_before_the_commit(
        self, tmp_path: Path, flushed_before_the_crash: bool
    ) -> None:
        records = [self.make_record(i) for i in range(self.records)]
        half = len(records) // 2
        sink = self.make_sink(tmp_path)
        await sink.open(None)
        assert await write_like_the_loop(sink, records[:half]) == []
        state, pending = await flush_like_the_loop(sink)
        committed = half - pending  # the loop commits the offset of the first pending record
        assert await write_like_the_loop(sink, records[half:]) == []
        if flushed_before_the_crash:
            await sink.flush()  # durable, but the process dies before the commit
        del sink  # the crash: no flush, no close
        gc.collect()

        again = self.make_sink(tmp_path)
        await again.open(_as_stored(state))
        assert await write_like_the_loop(again, records[committed:]) == []
        await self._finish(again)
        assert self.durable(tmp_path) == list(range(self.records))

    async def test_a_poison_record_fails_alone(self, tmp_path: Path) -> None:
        poison = self.poison_record(self.records)
        if poison is None:
            pytest.skip("this sink rejects no record (define poison_record to test it)")
        records = [self.make_record(i) for i in range(self.records)]
        batch = [*records[:10], poison, *records[10:]]
        sink = self.make_sink(tmp_path)
        await sink.open(None)
        failed = await write_like_the_loop(sink, batch)
        await self._finish(sink)
        assert failed == [poison]
        assert self.durable(tmp_path) == list(range(self.records))

    async def test_partial_commits_and_a_crash_half_way_lose_and_repeat_nothing(
        self, tmp_path: Path
    ) -> None:
        records = [self.make_record(i) for i in range(self.records)]
        sink = self.make_sink(tmp_path)
        await sink.open(None)
        state: Any = None
        committed = 0
        written = 0
        for start in range(0, len(records) // 2, 7):
            chunk = records[start : min(start + 7, len(records) // 2)]
            assert await write_like_the_loop(sink, chunk) == []
            written += len(chunk)
            state, pending = await flush_like_the_loop(sink)
            assert 0 <= pending <= written - committed, "pending counts unflushed records"
            committed = written - pending
        del sink  # SIGKILL
        gc.collect()

        again = self.make_sink(tmp_path)
        await again.open(_as_stored(state))
        for start in range(committed, len(records), 7):
            assert await write_like_the_loop(again, records[start : start + 7]) == []
            await flush_like_the_loop(again)
        await self._finish(again)
        assert self.durable(tmp_path) == list(range(self.records))

    async def test_a_retry_after_an_outage_loses_and_repeats_nothing(self, tmp_path: Path) -> None:
        """A write or flush during an outage raises a retriable error; the loop calls it
        again, with the same records, once the destination is back: nothing may be lost (a
        flush that dropped its buffer before it failed) or written twice."""
        outage = self.unavailable(tmp_path)
        if outage is None:
            pytest.skip("no outage to test with (define unavailable to test retries)")
        records = [self.make_record(i) for i in range(self.records)]
        half = len(records) // 2
        sink = self.make_sink(tmp_path)
        await sink.open(None)
        assert await write_like_the_loop(sink, records[:half]) == []
        await flush_like_the_loop(sink)
        with outage:
            rest = await once_in_an_outage(sink, sink.write, records[half:])
            flushed = rest == [] and await once_in_an_outage(sink, sink.flush) == []
        if rest:  # the loop writes the records that failed again
            assert await write_like_the_loop(sink, rest) == []
        if not flushed:
            await flush_like_the_loop(sink)
        await self._finish(sink)
        assert self.durable(tmp_path) == list(range(self.records))

    async def test_close_without_open(self, tmp_path: Path) -> None:
        await self.make_sink(tmp_path).close()
