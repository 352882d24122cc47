"""A connector that failed for good, restarted over the admin API once its cause is fixed,
no longer makes the run fail."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

from meshconnect.admin import Controller
from meshconnect.config.loader import load_pipeline_files
from meshconnect.mesh.memory import MemoryStore
from meshconnect.testing import test_registry
from meshconnect.worker import Worker


async def _until(condition: object, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_sink_that_failed_for_good_and_was_restarted_does_not_fail_the_run(
    tmp_path: Path,
) -> None:
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"n": i}) + "\n" for i in range(5)))
    (tmp_path / "out.jsonl").write_text("not ours\n")  # the file sink refuses to touch it
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            pipelines:
              - name: pipe
                source:
                  connector: file
                  config: {{path: "{tmp_path / "in.jsonl"}", follow: true}}
                sinks:
                  - {{connector: file, config: {{path: "{tmp_path / "out.jsonl"}"}}}}
            """
        )
    )
    registry = test_registry()
    store = MemoryStore("memory://")
    await store.open()
    worker = Worker(load_pipeline_files([str(path)], registry), store, restart_backoff=0.01)
    run = asyncio.create_task(worker.run())
    await _until(lambda: "sink pipe/file" in worker.statuses)
    status = worker.statuses["sink pipe/file"]
    await _until(lambda: status.state == "FAILED")
    assert worker.state.gave_up  # failed for good: a config error

    (tmp_path / "out.jsonl").unlink()  # the operator fixes the cause ...
    await Controller(worker, registry, tmp_path).restart("pipe")  # ... and restarts it
    await _until(lambda: (tmp_path / "out.jsonl").exists())
    await _until(lambda: len((tmp_path / "out.jsonl").read_text().splitlines()) == 5)
    worker.stop()

    assert await run == 0
    assert worker.state.gave_up == []
    await store.close()
