"""The http sink killed with SIGKILL mid-stream: at-least-once, and the duplicates stay
within the documented window (the records sent since the last commit: with
``commit_interval: 0``, at most the sink's ``batch_size`` per kill)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections import Counter
from pathlib import Path

from aiohttp import web

from conftest import meshconnect, start_worker

TOTAL = 3000
BATCH = 50
KILLS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_sigkill_mid_stream_is_at_least_once_within_the_window(tmp_path: Path) -> None:
    received: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        received.append(request.headers["ce-id"])
        await asyncio.sleep(0.001)  # a receiver that takes a moment: kills land mid-batch
        return web.Response(status=204)

    port = free_port()
    app = web.Application()
    app.router.add_post("/in", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(TOTAL)))
    pipeline = tmp_path / "out.yaml"
    pipeline.write_text(
        f"""
pipelines:
  - name: orders
    source: {{connector: file, config: {{path: in.jsonl, follow: false}}}}
    sinks:
      - connector: http
        batch_size: {BATCH}
        commit_interval: 0    # commit after every batch: the window is one batch
        config: {{url: "http://127.0.0.1:{port}/in", max_concurrency: 4}}
"""
    )
    state, log = tmp_path / "state", tmp_path / "worker.log"
    try:
        for _ in range(KILLS):
            proc = start_worker(meshconnect(state, "run", str(pipeline)), log)
            target = len(received) + TOTAL // (KILLS + 2)
            while len(received) < target and proc.poll() is None:
                await asyncio.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 30)
            assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]
        proc = start_worker(meshconnect(state, "run", str(pipeline)), log)
        assert await asyncio.to_thread(proc.wait, 120) == 0, log.read_text()[-2000:]
    finally:
        await runner.cleanup()
    counts = Counter(received)
    assert len(counts) == TOTAL  # at least once: nothing lost
    duplicates = sum(c - 1 for c in counts.values())
    assert duplicates <= KILLS * BATCH, f"{duplicates} duplicates after {KILLS} kills"
