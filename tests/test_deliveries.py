"""ConnectorContext.deliveries: a source can wait until its records are committed by every
sink of the worker that reads their topic (the webhook's synchronous mode stands on it)."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meshconnect import ConnectorConfig, ConnectorSpec, Record, Source, SourceBatch, hookimpl
from meshconnect.config.loader import load_pipeline_files
from meshconnect.deliveries import Deliveries
from meshconnect.mesh.memory import MemoryStore
from meshconnect.testing import test_registry
from meshconnect.worker import Worker


class WaitConfig(ConnectorConfig):
    batches: int = 3


#: Per batch: (waited-for ids, delivered?, lines in the sink's file when the wait ended).
SEEN: list[tuple[list[str], bool, int]] = []
OUT: list[Path] = []


class WaitSource(Source[WaitConfig]):
    bounded = True

    async def start(self, positions: Mapping[str, Any]) -> None:
        self.next = int(positions.get("p", {}).get("next", 0))
        self.waits: list[asyncio.Task[None]] = []

    async def poll(self) -> SourceBatch | None:
        if self.next >= self.config.batches:
            if self.waits:  # a bounded source ends only when its callers were answered
                await asyncio.gather(*self.waits)
                self.waits = []
            return None
        i = self.next
        records = [Record({"i": i, "k": k}, id=f"b{i}r{k}") for k in range(2)]
        self.next += 1

        async def wait() -> None:
            ok = await self.context.deliveries.wait(records, timeout=30)
            lines = OUT[0].read_text().count("\n") if OUT[0].exists() else 0
            SEEN.append(([r.id for r in records], ok, lines))

        def ack(error: BaseException | None) -> None:
            if error is None:
                self.waits.append(asyncio.ensure_future(wait()))

        return SourceBatch(records, {"p": {"next": i + 1}}, ack=ack)


class Plugin:
    @hookimpl
    def meshconnect_connectors(self) -> list[ConnectorSpec]:
        return [ConnectorSpec("waitsrc", "source", WaitConfig, WaitSource)]


async def test_a_wait_ends_once_every_reading_sink_committed_the_records(tmp_path: Path) -> None:
    SEEN.clear()
    OUT[:] = [tmp_path / "out.jsonl"]
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            pipelines:
              - name: w
                source: {{connector: waitsrc, config: {{batches: 3}}}}
                sinks:
                  - name: out
                    connector: file
                    commit_interval: 0.05
                    config: {{path: {OUT[0]}}}
            """
        )
    )
    registry = test_registry()
    registry.register(Plugin(), "waitsrc")
    config = load_pipeline_files([str(path)], registry)
    store = MemoryStore("memory://")
    await store.open()
    try:
        assert await Worker(config, store).run() == 0
    finally:
        await store.close()
    assert sorted(ids for ids, _, _ in SEEN) == [
        ["b0r0", "b0r1"],
        ["b1r0", "b1r1"],
        ["b2r0", "b2r1"],
    ]
    # Each wait ended with its batch committed to the sink's file: its lines were there.
    for ids, ok, lines in SEEN:
        batch = int(ids[0][1])
        assert ok and lines >= 2 * (batch + 1), (ids, ok, lines)


async def test_no_reader_means_delivered_and_a_lagging_one_times_out() -> None:
    deliveries = Deliveries()
    r = Record({"x": 1}, topic="t", offset=5)
    assert await deliveries.wait([r], timeout=0.01)  # no sink reads "t"
    deliveries.add_group("g", ["t*"])
    assert not await deliveries.wait([r], timeout=0.05)  # g has committed nothing yet
    waiting = asyncio.ensure_future(deliveries.wait([r], timeout=5))
    await asyncio.sleep(0)
    deliveries.committed("g", {"t": 5})  # offset 5 not yet committed (next to read is 5)
    await asyncio.sleep(0.01)
    assert not waiting.done()
    deliveries.committed("g", {"t": 6})
    assert await waiting
    deliveries.add_group("h", ["other"])
    assert await deliveries.wait([r], timeout=0.01)  # h does not read "t"


async def test_records_never_stored_are_not_waited_for() -> None:
    deliveries = Deliveries()
    deliveries.add_group("g", ["t"])
    assert await deliveries.wait([Record({"x": 1})], timeout=0.01)
