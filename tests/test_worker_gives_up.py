"""A run whose every connector failed for good (a config error: no restart can help) stops and
exits 1 instead of idling forever; one with a connector still working keeps running."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meshconnect import ConfigError, ConnectorConfig, ConnectorSpec, Source, SourceBatch, hookimpl
from meshconnect.config.loader import load_pipeline_files
from meshconnect.mesh.memory import MemoryStore
from meshconnect.testing import test_registry
from meshconnect.worker import Worker


class Cfg(ConnectorConfig):
    broken: bool = True


class Endless(Source[Cfg]):
    """Unbounded; ``broken`` ones fail at start with a ConfigError."""

    async def start(self, positions: Mapping[str, Any]) -> None:
        if self.config.broken:
            raise ConfigError("endless: listen address 'localhost:abc' has no port")

    async def poll(self) -> SourceBatch | None:
        await asyncio.sleep(0.01)
        return SourceBatch([])


class Plugin:
    @hookimpl
    def meshconnect_connectors(self) -> list[ConnectorSpec]:
        return [ConnectorSpec("endless", "source", Cfg, Endless)]


def _worker(tmp_path: Path, pipelines: str) -> tuple[Worker, MemoryStore]:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(pipelines))
    registry = test_registry()
    registry.register(Plugin(), "endless")
    config = load_pipeline_files([str(path)], registry)
    store = MemoryStore("memory://")
    return Worker(config, store), store


async def test_a_run_whose_every_connector_failed_for_good_exits_1(tmp_path: Path) -> None:
    worker, store = _worker(
        tmp_path,
        """
        pipelines:
          - {name: a, source: {connector: endless, config: {broken: true}}}
          - {name: b, source: {connector: endless, config: {broken: true}}}
        """,
    )
    await store.open()
    try:
        assert await asyncio.wait_for(worker.run(), 10) == 1
    finally:
        await store.close()


async def test_a_run_with_a_working_connector_keeps_running(tmp_path: Path) -> None:
    worker, store = _worker(
        tmp_path,
        """
        pipelines:
          - {name: a, source: {connector: endless, config: {broken: true}}}
          - {name: b, source: {connector: endless, config: {broken: false}}}
        """,
    )
    await store.open()
    try:
        run = asyncio.ensure_future(worker.run())
        await asyncio.sleep(0.5)
        assert not run.done()  # b still works
        worker.stop()
        assert await asyncio.wait_for(run, 10) == 1  # a's failure still sets the exit code
    finally:
        await store.close()


async def test_a_run_whose_sources_all_failed_for_good_ends_after_its_sinks_drain(
    tmp_path: Path,
) -> None:
    """An unbounded source that fails with a config error (a wrong password) leaves only sinks
    that will never get a record from this run: the run ends like a bounded one, exit 1."""
    out = tmp_path / "out.jsonl"
    worker, store = _worker(
        tmp_path,
        f"""
        pipelines:
          - name: a
            source: {{connector: endless, config: {{broken: true}}}}
            sinks:
              - {{name: out, connector: file, config: {{path: {out}}}}}
        """,
    )
    await store.open()
    try:
        assert await asyncio.wait_for(worker.run(), 20) == 1
    finally:
        await store.close()
