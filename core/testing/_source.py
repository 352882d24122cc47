"""SourceConformance: the Source contract (:mod:`meshconnect.api`) as a pytest class.

Subclass it in a test module and define ``make_source(self, tmp_path) -> Source`` returning a
*fresh* instance over the same, bounded, input each call (the first call may create the
input). The input must span several batches (the resume checks need a boundary), and the
source must end by itself: a read that does not (``idle_polls`` polls in a row without
records, ``max_polls`` in all) fails::

    class TestGreetings(SourceConformance):
        def make_source(self, tmp_path):
            context = ConnectorContext("test", "greetings", logging.getLogger("test"))
            names = [f"name {i}" for i in range(250)]  # several batches
            return GreetingsSource(GreetingsConfig(names=names), context)

What it checks, each against a full read of the input:

* the source ends by itself (``poll`` returns ``None``);
* when ``input_ids(tmp_path)`` is defined, a full read gives exactly those records, in order;
* started from the positions after any batch, as the mesh store gives them back (encoded and
  decoded: a tuple comes back a list, a datetime a string), it yields exactly the records
  after that batch;
* a replay yields the same ids and data;
* every position it writes (the batches', ``start``'s "from now" ones and, when it has
  them, its ``end_positions`` for ``offsets reset --to end``) survives JSON, as the store
  keeps it, and its :meth:`~meshconnect.Source.position_problem` accepts it (what
  ``offsets reset --to`` asks of a hand-written position);
* acknowledgements: the worker acks a batch only after polling later ones (its queue), each
  exactly once; a failed ack (``ack(error)``) means the batch is not in the mesh, and a crash
  there (the suite picks a *sentinel record* in the middle of the input and crashes on the
  batch that holds it, whatever process ran before) resumes from the committed positions with
  nothing lost and nothing twice.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from ..api import Source, SourceBatch
from ..mesh.codec import decode_json, encode_positions

__all__ = ["SourceConformance"]

#: Batches the worker polls ahead of its acks (its queue between polling and appending).
ACK_LAG = 2


def _as_stored(positions: Mapping[str, Any]) -> dict[str, Any]:
    """``positions`` as a source gets them back from the mesh store: encoded as the store
    encodes them (a tuple comes back a list, a datetime a string) and decoded. A StoreError
    when the store would refuse them."""
    rows = encode_positions({("source", partition): p for partition, p in positions.items()})
    return {partition: decode_json(text) for _, partition, text in rows}


async def _ack(batch: SourceBatch, error: BaseException | None) -> None:
    if batch.ack is not None:
        result = batch.ack(error)
        if inspect.isawaitable(result):
            await result


class SourceConformance:
    """The source contract; subclass and define :meth:`make_source` (module docstring)."""

    #: At most this many batch boundaries are tried as resume points (spread evenly).
    resume_checks: int = 8
    #: A read fails (instead of hanging) after this many polls in a row without records, or
    #: this many polls in all: the input must be bounded and the source must end by itself.
    idle_polls: int = 50
    max_polls: int = 10_000

    def make_source(self, tmp_path: Path) -> Source[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def input_ids(self, tmp_path: Path) -> list[str] | None:
        """The id of every record the input holds, in order (after ``make_source`` made the
        input), or ``None``: the other checks compare the source with itself, so only this
        one finds a source that skips records (a position past what the batch returned)."""
        return None

    async def _poll(self, source: Source[Any], counts: list[int]) -> SourceBatch | None:
        """``source.poll()``, failing a read that does not end: ``counts`` is [polls, polls
        in a row without records] of this read."""
        batch = await source.poll()
        counts[0] += 1
        counts[1] = 0 if batch is None or batch.records else counts[1] + 1
        assert counts[1] < self.idle_polls, (
            f"the source did not end: {counts[1]} polls in a row gave no record and no None "
            "(SourceConformance needs a bounded input: poll returns None once it is done)"
        )
        assert counts[0] < self.max_polls, (
            f"the source did not end after {counts[0]} polls (does poll move past what it "
            "returned? is the input bounded?)"
        )
        return batch

    async def _drain(self, source: Source[Any], positions: Mapping[str, Any]) -> list[SourceBatch]:
        """Every non-empty batch, each acked (None) right after it was polled."""
        await source.start(positions)
        batches = []
        counts = [0, 0]
        try:
            while (batch := await self._poll(source, counts)) is not None:
                await _ack(batch, None)
                if batch.records or batch.positions or batch.failures:
                    batches.append(batch)
        finally:
            await source.stop()
        return batches

    @staticmethod
    def _keys(batches: Sequence[SourceBatch]) -> list[Any]:
        return [(r.id, repr(r.data)) for b in batches for r in b.records]

    async def test_bounded_source_ends(self, tmp_path: Path) -> None:
        batches = await self._drain(self.make_source(tmp_path), {})
        assert batches, "the source produced nothing to test with"

    async def test_a_full_read_is_the_whole_input(self, tmp_path: Path) -> None:
        source = self.make_source(tmp_path)
        expected = self.input_ids(tmp_path)
        if expected is None:
            pytest.skip("input_ids is not defined: what the source skips is not checked")
        got = [record.id for batch in await self._drain(source, {}) for record in batch.records]
        assert got == expected

    async def test_resume_from_every_batch_boundary(self, tmp_path: Path) -> None:
        """Resuming from the positions after batch k yields exactly the records after it."""
        full = await self._drain(self.make_source(tmp_path), {})
        everything = self._keys(full)
        assert sum(1 for batch in full if batch.records) >= 2, (
            "the records came in one batch: there is no batch boundary to resume from, so "
            "resuming is not tested (make_source must give an input that spans several "
            "batches: more items, or a smaller batch size)"
        )
        step = max(1, (len(full) - 1) // self.resume_checks)
        positions: dict[str, Any] = {}
        seen = 0
        for k, batch in enumerate(full[:-1]):
            positions.update(batch.positions)
            seen += len(batch.records)
            if k % step:
                continue
            rest = await self._drain(self.make_source(tmp_path), _as_stored(positions))
            assert self._keys(rest) == everything[seen:], f"resuming after batch {k}"

    async def test_replay_gives_the_same_ids(self, tmp_path: Path) -> None:
        first = await self._drain(self.make_source(tmp_path), {})
        second = await self._drain(self.make_source(tmp_path), {})
        assert self._keys(first) == self._keys(second)

    async def test_every_position_it_writes_is_accepted_as_a_hand_written_one(
        self, tmp_path: Path
    ) -> None:
        """``offsets reset --to`` refuses what ``position_problem`` finds fault with: never a
        position the source itself wrote (here, stored as JSON and read back)."""
        source = self.make_source(tmp_path)
        written: list[tuple[str, Any]] = []
        begun = await source.start({})
        written += list((begun or {}).items())
        counts = [0, 0]
        try:
            while (batch := await self._poll(source, counts)) is not None:
                await _ack(batch, None)
                written += list(batch.positions.items())
        finally:
            await source.stop()
        assert written, "the source wrote no position to test with"
        try:
            written += list((await self.make_source(tmp_path).end_positions()).items())
        except NotImplementedError:
            pass
        fresh = self.make_source(tmp_path)
        problems = [
            f"{partition}: {position}: {problem}"
            for partition, position in written
            if (
                problem := fresh.position_problem(
                    partition, _as_stored({partition: position})[partition]
                )
            )
        ]
        assert problems == []

    async def test_acks_may_come_after_later_polls(self, tmp_path: Path) -> None:
        """The worker acks batch k after polling up to k + ACK_LAG: the source keeps going,
        and the records are the same as with immediate acks."""
        expected = self._keys(await self._drain(self.make_source(tmp_path), {}))
        source = self.make_source(tmp_path)
        await source.start({})
        unacked: list[SourceBatch] = []
        got: list[SourceBatch] = []
        counts = [0, 0]
        try:
            while (batch := await self._poll(source, counts)) is not None:
                unacked.append(batch)
                got.append(batch)
                if len(unacked) > ACK_LAG:
                    await _ack(unacked.pop(0), None)
            for batch in unacked:
                await _ack(batch, None)
        finally:
            await source.stop()
        assert self._keys(got) == expected

    async def test_a_crash_on_a_sentinel_record_resumes_with_nothing_lost_or_twice(
        self, tmp_path: Path
    ) -> None:
        """The batch holding the sentinel record (the middle one of the input) fails: its ack
        gets the error and the source is stopped, as when the worker gives up on an append.
        A fresh source from the committed positions yields exactly the rest."""
        everything = self._keys(await self._drain(self.make_source(tmp_path), {}))
        sentinel = everything[len(everything) // 2]
        source = self.make_source(tmp_path)
        committed: dict[str, Any] = {}
        stored: list[Any] = []
        begun = await source.start({})
        committed.update(begun or {})  # "from now" positions the worker commits at once
        counts = [0, 0]
        try:
            while (batch := await self._poll(source, counts)) is not None:
                keys = self._keys([batch])
                if sentinel in keys:
                    await _ack(batch, RuntimeError("simulated crash on the sentinel record"))
                    break
                committed.update(batch.positions)  # the append commits records + positions
                stored.extend(keys)
                await _ack(batch, None)
            else:
                raise AssertionError("the sentinel record never came")
        finally:
            await source.stop()
        rest = self._keys(await self._drain(self.make_source(tmp_path), _as_stored(committed)))
        assert stored + rest == everything
