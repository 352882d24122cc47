"""A transform chain keeps its batch's order whatever happens to single records at an async
transform: answers that arrive out of order, records retried after a retriable error (once,
several times, at different transforms of the chain), records dropped or fanned out beside
them, records dead-lettered after their attempts (the dead-letter topic is in input order too).

Records of one partition key must stay in order (docs/scaleout.md#partitions): a CDC update
retried after a 503 must not be stored, or written, after a later update of its row.

Every test runs in six modes: the chain on the source side (before the store) or on a sink
(after it), with the transform working on one record at a time, on four at once, or being a
plain transform (a plugin's ``def apply`` may raise a retriable error too).
"""

from __future__ import annotations

import asyncio
import textwrap
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from meshconnect import DataError, Record, RetriableError, Transform, TransformSpec, hookimpl
from meshconnect.mesh import open_store
from meshconnect.testing import MemorySink, collect, run_pipelines, test_registry


class ServiceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: ``n`` → how many calls for that record fail with a retriable error (a 503) first.
    flaky: dict[int, int] = {}
    #: Records the service cannot handle: a data error, every time.
    broken: list[int] = []
    #: Records the service answers with nothing: dropped.
    drop: list[int] = []
    #: ``n`` → the ``n`` of the records the service answers with instead (a fan-out).
    fan_out: dict[int, list[int]] = {}


class Service(Transform):
    """A pretend remote service awaited for each record (an enrich call, an LLM). Earlier
    records of a batch take longer to answer, so answers arrive in reverse order."""

    type_name = "service"
    copies_nested_objects = True

    def __init__(self, options: ServiceOptions, concurrency: int) -> None:
        self.options = options
        self.concurrency = concurrency
        self.calls: Counter[int] = Counter()

    async def apply(self, record: Record) -> Record | list[Record] | None:
        for _ in range(100 - record.data["n"]):  # the answer to record 0 comes last
            await asyncio.sleep(0)
        return self.answer(record)

    def answer(self, record: Record) -> Record | list[Record] | None:
        n = record.data["n"]
        self.calls[n] += 1
        if self.calls[n] <= self.options.flaky.get(n, 0):
            raise RetriableError(f"the service answered 503 for {n}")
        if n in self.options.broken:
            raise DataError(f"the service knows nothing of {n}")
        if n in self.options.drop:
            return None
        if n in self.options.fan_out:
            copies = []
            for m in self.options.fan_out[n]:
                copy = record.copy()
                copy.data = {"n": m}
                copies.append(copy)
            return copies
        return record


class PlainService(Service):
    """The same service called without awaiting (a plain ``def apply``)."""

    def apply(self, record: Record) -> Record | list[Record] | None:  # type: ignore[override]
        return self.answer(record)


Run = Callable[[str], Awaitable[tuple[list[int], list[int]]]]


@pytest.fixture(params=["source", "sink"])
def side(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=[1, 4, 0], ids=["async, concurrency 1", "async, concurrency 4", "plain"])
def concurrency(request: pytest.FixtureRequest) -> int:
    """How many records the service works on at once; 0: it is a plain transform."""
    return int(request.param)


@pytest.fixture
def run(tmp_path: Path, side: str, concurrency: int) -> Run:
    """``await run(TRANSFORMS)``: records ``{n: 0}`` … ``{n: 9}`` in one batch through the
    chain ``TRANSFORMS`` (YAML) on ``side``, with four attempts per record and dead letters;
    the ``n`` of the records the sink got, and of the dead letters, in their order."""

    class Plugin:
        @hookimpl
        def meshconnect_transforms(self) -> list[TransformSpec]:
            return [
                TransformSpec(
                    "service",
                    ServiceOptions,
                    lambda options, _: (
                        Service(options, concurrency)
                        if concurrency
                        else PlainService(options, concurrency)
                    ),
                )
            ]

    registry = test_registry()
    registry.register(Plugin(), "service")
    errors = (
        "{retry: {max_attempts: 4, initial_backoff: 1ms, max_backoff: 1ms}, "
        "tolerance: all, dead_letter_topic: dlq}"
    )
    records = "[" + ", ".join(f"{{n: {n}}}" for n in range(10)) + "]"
    if side == "source":
        pipeline = f"""
            pipelines:
              - name: p
                source: {{connector: memory, config: {{records: {records}}}, errors: {errors}}}
                transforms: TRANSFORMS
                topic: t
                sinks: [{{connector: memory, config: {{name: out}}}}]
            """
    else:
        pipeline = f"""
            pipelines:
              - name: p
                source: {{connector: memory, config: {{records: {records}}}}}
                topic: t
                sinks:
                  - connector: memory
                    config: {{name: out}}
                    transforms: TRANSFORMS
                    errors: {errors}
            """

    async def run(transforms: str) -> tuple[list[int], list[int]]:
        MemorySink.outputs.clear()
        path = tmp_path / "p.yaml"
        path.write_text(textwrap.dedent(pipeline).replace("TRANSFORMS", transforms))
        store_url = f"sqlite:///{tmp_path / 'mesh.db'}"
        assert await run_pipelines([path], store_url, registry=registry) == 0
        store = open_store(store_url, registry)
        await store.open()
        try:
            dead = await store.read("dlq", 0, 100)
        finally:
            await store.close()
        return [d["n"] for d in collect("out")], [r.data["n"] for r in dead]

    return run


async def test_a_record_that_gets_through_on_a_retry_keeps_its_place_in_the_batch(
    run: Run,
) -> None:
    out, dead = await run("[{type: service, flaky: {4: 1}}]")
    assert (out, dead) == ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [])


async def test_records_retried_a_different_number_of_times_keep_their_places(run: Run) -> None:
    """Record 4 gets through on the second attempt, 1 on the third, 8 on the fourth."""
    out, dead = await run("[{type: service, flaky: {1: 2, 4: 1, 8: 3}}]")
    assert (out, dead) == ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [])


async def test_records_dead_lettered_after_their_attempts_are_in_input_order(run: Run) -> None:
    """2 and 7 fail every attempt; 4 is a data error, never retried."""
    out, dead = await run("[{type: service, flaky: {2: 9, 7: 9}, broken: [4]}]")
    assert (out, dead) == ([0, 1, 3, 5, 6, 8, 9], [2, 4, 7])


async def test_a_dropped_and_a_fanned_out_record_stay_in_place_beside_retried_ones(
    run: Run,
) -> None:
    out, dead = await run(
        "[{type: service, drop: [3], fan_out: {6: [60, 61]}, flaky: {5: 1, 6: 1}}]"
    )
    assert (out, dead) == ([0, 1, 2, 4, 5, 60, 61, 7, 8, 9], [])


async def test_records_retried_at_different_transforms_of_a_chain_keep_their_places(
    run: Run,
) -> None:
    """The first service fans 3 out and fails 2 once; the second fails 6 twice and one of
    3's copies once: each goes back to its place, the copy between its siblings."""
    out, dead = await run(
        "[{type: service, fan_out: {3: [30, 31, 32]}, flaky: {2: 1}},"
        " {type: insert_field, field: data.seen, value: true},"
        " {type: service, flaky: {31: 1, 6: 2}}]"
    )
    assert (out, dead) == ([0, 1, 2, 30, 31, 32, 4, 5, 6, 7, 8, 9], [])


async def test_dead_letters_of_different_transforms_of_a_chain_are_in_input_order(
    run: Run,
) -> None:
    """No retry here: 6 fails at the first service, 2 at the second."""
    out, dead = await run("[{type: service, broken: [6]}, {type: service, broken: [2]}]")
    assert (out, dead) == ([0, 1, 3, 4, 5, 7, 8, 9], [2, 6])
