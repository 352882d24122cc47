"""Sink.batch_size_hint: a sink that sends records one by one to a slow service asks for small
writes, so offsets are committed between them; a batch_size in the file wins."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from meshconnect import ConnectorConfig, ConnectorSpec, Record, Sink, hookimpl
from meshconnect.config.loader import load_pipeline_files
from meshconnect.mesh.memory import MemoryStore
from meshconnect.testing import test_registry
from meshconnect.worker import Worker

WRITES: list[int] = []


class SlowSink(Sink[ConnectorConfig]):
    batch_size_hint = 3

    async def write(self, records: Sequence[Record]) -> None:
        WRITES.append(len(records))

    async def flush(self) -> dict[str, Any]:
        return {}


class Plugin:
    @hookimpl
    def meshconnect_connectors(self) -> list[ConnectorSpec]:
        return [ConnectorSpec("slow", "sink", ConnectorConfig, SlowSink)]


@pytest.mark.parametrize(("given", "largest"), [("", 3), ("batch_size: 5", 5)])
async def test_the_hint_sets_the_write_size_unless_the_file_does(
    tmp_path: Path, given: str, largest: int
) -> None:
    WRITES.clear()
    (tmp_path / "in.jsonl").write_text("".join(f'{{"n":{i}}}\n' for i in range(10)))
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            pipelines:
              - name: p
                source: {{connector: file, config: {{path: {tmp_path / "in.jsonl"}}}}}
                sinks:
                  - name: s
                    connector: slow
                    {given}
            """
        )
    )
    registry = test_registry()
    registry.register(Plugin(), "slow")
    config = load_pipeline_files([str(path)], registry)
    store = MemoryStore("memory://")
    await store.open()
    try:
        assert await Worker(config, store).run() == 0
    finally:
        await store.close()
    assert sum(WRITES) == 10
    assert max(WRITES) == largest
