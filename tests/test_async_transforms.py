"""Async transforms: ``async def apply`` awaited for up to ``concurrency`` records at once, the
batch's order kept, failures and retries as for plain transforms."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from meshconnect import DataError, Record, RetriableError, Transform, TransformSpec, hookimpl
from meshconnect.mesh.sqlite import SqliteStore
from meshconnect.testing import MemorySink, collect, run_pipelines, test_registry
from meshconnect.transforms import TransformChain


class Lookup(Transform):
    """Awaits a pretend service for each record; at most ``concurrency`` at once."""

    type_name = "lookup"

    def __init__(self, concurrency: int, fail_on: int | None = None, flaky: int | None = None):
        self.concurrency = concurrency
        self.fail_on = fail_on
        self.flaky = flaky
        self.in_flight = 0
        self.most = 0
        self.calls: list[int] = []

    async def apply(self, record: Record) -> Record:
        n = record.data["n"]
        self.calls.append(n)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.01 if n % 2 else 0.002)  # finish out of order
            if n == self.fail_on:
                raise DataError(f"the service knows nothing of {n}")
            if n == self.flaky and self.calls.count(n) == 1:
                raise RetriableError("the service said 503")
            record.data["looked_up"] = n * 10
            return record
        finally:
            self.in_flight -= 1


def registry_with(transform: Transform) -> Any:
    class NoOptions(BaseModel):
        pass

    class Plugin:
        @hookimpl
        def meshconnect_transforms(self) -> list[TransformSpec]:
            return [TransformSpec("lookup", NoOptions, lambda options, compiler: transform)]

    registry = test_registry()
    registry.register(Plugin(), "lookup")
    return registry


def write(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "p.yaml"
    records = ", ".join(f"{{n: {i}}}" for i in range(n))
    path.write_text(
        textwrap.dedent(
            f"""
            pipelines:
              - name: p
                source:
                  connector: memory
                  config: {{records: [{records}], batch_size: 50}}
                  errors:
                    retry: {{max_attempts: 3, initial_backoff: 1ms}}
                    tolerance: all
                    dead_letter_topic: dlq
                transforms:
                  - {{type: filter, where: "data.n != 5"}}
                  - {{type: lookup}}
                  - {{type: insert_field, field: data.after, value: true}}
                topic: t
                sinks:
                  - {{connector: memory, config: {{name: out}}}}
            """
        )
    )
    return path


async def test_an_async_transform_runs_at_most_its_concurrency_and_keeps_the_order(
    tmp_path: Path,
) -> None:
    MemorySink.outputs.clear()
    lookup = Lookup(concurrency=3)
    assert await run_pipelines([write(tmp_path, 40)], registry=registry_with(lookup)) == 0
    assert lookup.most == 3
    assert collect("out") == [
        {"n": i, "looked_up": i * 10, "after": True} for i in range(40) if i != 5
    ]


async def test_an_async_transforms_failures_are_dead_lettered_and_retriable_ones_retried(
    tmp_path: Path,
) -> None:
    MemorySink.outputs.clear()
    lookup = Lookup(concurrency=4, fail_on=7, flaky=9)
    store_url = f"sqlite:///{tmp_path / 'mesh.db'}"
    config = write(tmp_path, 12)
    assert await run_pipelines([config], store_url, registry=registry_with(lookup)) == 0
    assert [d["n"] for d in collect("out")] == [0, 1, 2, 3, 4, 6, 8, 9, 10, 11]
    assert lookup.calls.count(9) == 2
    store = SqliteStore(store_url)
    await store.open()
    try:
        dead = await store.read("dlq", 0, 10)
    finally:
        await store.close()
    assert [(r.data, r.extensions["errorstage"]) for r in dead] == [
        ({"n": 7}, "transforms[1] (lookup)")
    ]


def test_only_a_chain_with_an_async_transform_is_async_and_process_runs_it_outside_a_loop() -> None:
    class Plain(Transform):
        def apply(self, record: Record) -> Record:
            return record

    assert not TransformChain([Plain(), Plain()]).is_async  # today's path, no awaiting
    lookup = Lookup(concurrency=2)
    chain = TransformChain([Plain(), lookup])
    assert chain.is_async
    out, failures = chain.process([Record({"n": i}) for i in range(5)])  # no loop running here
    assert [r.data["looked_up"] for r in out] == [0, 10, 20, 30, 40]
    assert failures == []
    assert lookup.most == 2


def test_a_config_error_in_a_transform_stops_the_chain_instead_of_failing_the_record() -> None:
    """A ConfigError (a rejected credential, say) is no record's fault: the chain raises it, so
    the connector stops for good, rather than dead-letter every record."""
    from meshconnect import ConfigError, Record
    from meshconnect.transforms import Transform, TransformChain

    class Rejected(Transform):
        def apply(self, record: Record) -> Record:
            raise ConfigError("check api_key")

    chain = TransformChain([Rejected()], [None])
    import pytest

    with pytest.raises(ConfigError, match="check api_key"):
        chain.process([Record({"a": 1})])
