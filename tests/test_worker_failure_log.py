"""How a failed connector is logged: a transient failure (a refused connection) is one line per
restart, with no traceback, so a database that is down for an hour does not fill the log with
the same stack; a failure nobody classified (a connector's bug) keeps its traceback."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

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


class Cfg(ConnectorConfig):
    failure: str = "retriable"


class Failing(Source[Cfg]):
    async def start(self, positions: Mapping[str, Any]) -> None:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            if self.config.failure == "retriable":
                raise RetriableError(
                    "failing: cannot connect to db:5432:\n\tIs the server running on that host?"
                ) from exc
            raise RuntimeError("failing: a bug in the connector") from exc

    async def poll(self) -> SourceBatch | None:
        return None


class Plugin:
    @hookimpl
    def meshconnect_connectors(self) -> list[ConnectorSpec]:
        return [ConnectorSpec("failing", "source", Cfg, Failing)]


async def _run(tmp_path: Path, failure: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            pipelines:
              - {{name: a, source: {{connector: failing, config: {{failure: {failure}}}}}}}
            """
        )
    )
    registry = test_registry()
    registry.register(Plugin(), "failing")
    store = MemoryStore("memory://")
    worker = Worker(load_pipeline_files([str(path)], registry), store, restart_backoff=0.01)
    await store.open()
    try:
        run = asyncio.ensure_future(worker.run())
        await asyncio.sleep(0.5)  # a few restarts
        worker.stop()
        await asyncio.wait_for(run, 10)
    finally:
        await store.close()


@pytest.mark.parametrize(("failure", "traceback"), [("retriable", False), ("bug", True)])
async def test_failure_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, failure: str, traceback: bool
) -> None:
    with caplog.at_level(logging.DEBUG, logger="meshconnect.worker"):
        await _run(tmp_path, failure)
    failed = [r for r in caplog.records if "FAILED" in r.getMessage()]
    assert len(failed) >= 2, [r.getMessage() for r in caplog.records]
    assert all(r.levelno == logging.ERROR for r in failed)
    # One line, whatever the driver's message spans (the status and progress lines show it).
    assert all("\n" not in r.getMessage() and "\t" not in r.getMessage() for r in failed)
    assert all((r.exc_info is not None) is traceback for r in failed)
    in_full = [r for r in caplog.records if "failure in full" in r.getMessage()]
    # The traceback of a transient failure is still there, at DEBUG.
    assert bool(in_full) is not traceback
    assert all(r.levelno == logging.DEBUG and r.exc_info for r in in_full)
