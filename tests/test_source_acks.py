"""Source acknowledgements (SourceBatch.ack): resolved right after the store transaction that
holds a batch commits, failed with the error when the worker gives up on it, never twice."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from meshconnect import (
    ConnectorConfig,
    ConnectorSpec,
    Record,
    Source,
    SourceBatch,
    hookimpl,
)
from meshconnect.config.loader import load_pipeline_files
from meshconnect.errors import StoreError
from meshconnect.mesh.memory import MemoryStore
from meshconnect.mesh.store import MeshStore
from meshconnect.testing import MemorySink, test_registry
from meshconnect.worker import Worker


class AckSourceConfig(ConnectorConfig):
    batches: int = 3
    per_batch: int = 2


#: What every ack saw: (batch key, error text or None, ids readable from the store then).
ACKS: list[tuple[str, str | None, list[str]]] = []
#: The store of the running test (the ack looks into it).
STORE: list[MeshStore] = []


class AckSource(Source[AckSourceConfig]):
    """Bounded: ``batches`` batches of ``per_batch`` records, each batch with an ack that
    records what was readable from the store when it was called."""

    bounded = True
    instances = 0

    async def start(self, positions: Mapping[str, Any]) -> None:
        self.next = int(positions.get("p", {}).get("next", 0))
        AckSource.instances += 1
        self.instance = AckSource.instances

    async def poll(self) -> SourceBatch | None:
        if self.next >= self.config.batches:
            return None
        index = self.next
        n = self.config.per_batch
        records = [Record({"i": index * n + k}, id=f"r{index * n + k}") for k in range(n)]
        self.next += 1
        key = f"{self.instance}:{index}"

        async def ack(error: BaseException | None) -> None:
            stored = await STORE[0].read("acks", 0, 1000)
            ACKS.append((key, None if error is None else str(error), [r.id for r in stored]))

        return SourceBatch(records, {"p": {"next": index + 1}}, ack=ack)


class Plugin:
    @hookimpl
    def meshconnect_connectors(self) -> list[ConnectorSpec]:
        return [ConnectorSpec("acksrc", "source", AckSourceConfig, AckSource)]


class FailingStore(MemoryStore):
    """A memory store whose appends fail (StoreError) from the ``fail_from``-th one on."""

    def __init__(self, url: str, fail_from: int) -> None:
        super().__init__(url)
        self.fail_from = fail_from
        self.appends = 0

    async def append(self, records: Sequence[Record], positions: Any = None) -> list[int]:
        self.appends += 1
        if self.appends >= self.fail_from:
            raise StoreError("simulated: the store's disk is gone")
        return await super().append(records, positions)


@pytest.fixture(autouse=True)
def clean() -> None:
    ACKS.clear()
    STORE.clear()
    MemorySink.outputs.clear()
    AckSource.instances = 0


async def run_with(tmp_path: Path, store: MeshStore, batches: int) -> int:
    path = tmp_path / "acks.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            pipelines:
              - name: acks
                source:
                  connector: acksrc
                  config: {{batches: {batches}}}
                  errors: {{retry: {{max_attempts: 2, initial_backoff: 1ms}}}}
            """
        )
    )
    registry = test_registry()
    registry.register(Plugin(), "acksrc")
    config = load_pipeline_files([str(path)], registry)
    STORE.append(store)
    await store.open()
    try:
        return await Worker(config, store, restart_backoff=0.001).run()
    finally:
        await store.close()


async def test_each_ack_comes_after_its_records_are_readable_from_the_store(
    tmp_path: Path,
) -> None:
    assert await run_with(tmp_path, MemoryStore("memory://"), batches=3) == 0
    assert [(key, error) for key, error, _ in ACKS] == [("1:0", None), ("1:1", None), ("1:2", None)]
    # Batch k's ack saw exactly the records of batches 0..k in the store.
    assert [stored for _, _, stored in ACKS] == [
        ["r0", "r1"],
        ["r0", "r1", "r2", "r3"],
        ["r0", "r1", "r2", "r3", "r4", "r5"],
    ]


async def test_a_store_failure_fails_the_ack_and_nothing_is_acked_twice(tmp_path: Path) -> None:
    store = FailingStore("memory://", fail_from=2)  # the first batch goes in, then none
    assert await run_with(tmp_path, store, batches=3) == 1  # gave up after the restarts
    first, *rest = ACKS
    assert first == ("1:0", None, ["r0", "r1"])
    # Every later batch (each restart polls batch 1 again, then may poll more) failed with
    # the store's error, and no batch was acked twice.
    assert rest and all(error == "simulated: the store's disk is gone" for _, error, _ in rest)
    assert all(stored == ["r0", "r1"] for _, _, stored in rest)
    keys = [key for key, _, _ in ACKS]
    assert len(keys) == len(set(keys))
    # Each restart polled batch 1 again: its positions were never committed.
    assert {key.split(":")[1] for key in keys[1:]} <= {"1", "2"}
    assert any(key.endswith(":1") for key in keys[1:])
