"""A connector waiting out its restart backoff when the run stops (SIGTERM) stops there: it is
not started once more only to stop, which cost one more connect to what had just failed (and
its timeout, holding up the worker's exit, when the database does not answer)."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meshconnect import (
    ConnectorConfig,
    ConnectorSpec,
    RetriableError,
    Source,
    SourceBatch,
    hookimpl,
)
from meshconnect.config.loader import load_pipeline_files
from meshconnect.mesh.memory import MemoryStore
from meshconnect.testing import test_registry
from meshconnect.worker import Worker

STARTS: list[int] = []


class Cfg(ConnectorConfig):
    pass


class Unreachable(Source[Cfg]):
    async def start(self, positions: Mapping[str, Any]) -> None:
        STARTS.append(1)
        raise RetriableError("unreachable: cannot connect to db:5432")

    async def poll(self) -> SourceBatch | None:
        return None


class Plugin:
    @hookimpl
    def meshconnect_connectors(self) -> list[ConnectorSpec]:
        return [ConnectorSpec("unreachable", "source", Cfg, Unreachable)]


async def test_the_run_stopping_during_a_restart_backoff_starts_nothing_more(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            """
            pipelines:
              - {name: a, source: {connector: unreachable}}
            """
        )
    )
    registry = test_registry()
    registry.register(Plugin(), "unreachable")
    store = MemoryStore("memory://")
    # a backoff far longer than the test: the stop comes while the source waits to restart
    worker = Worker(load_pipeline_files([str(path)], registry), store, restart_backoff=600)
    await store.open()
    STARTS.clear()
    try:
        run = asyncio.ensure_future(worker.run())
        status = None
        while status is None or status.next_restart is None:
            await asyncio.sleep(0.01)
            status = worker.statuses.get("source a/unreachable")
        worker.stop()
        assert await asyncio.wait_for(run, 30) == 0
    finally:
        await store.close()
    assert len(STARTS) == 1
    assert (status.state, status.restarts) == ("STOPPED", 1)
    assert status.reason is not None and "cannot connect to db:5432" in status.reason
