"""SIGKILL right after a 2xx: the event is in the mesh after the restart.

Fifty trials, each a worker process (the default embedded sqlite store) killed with SIGKILL
the moment the first 2xx reaches one of eight concurrent senders; every event any sender got
a 2xx for must be stored, checked through the store after each kill and with
``meshconnect topics tail`` after a last restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from pathlib import Path

import aiohttp

from conftest import meshconnect, run_cli, start_worker

TRIALS = 50
SENDERS = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def trial(url: str, pid: int, number: int) -> set[str]:
    """Post events from SENDERS senders until the first 2xx, then SIGKILL; the acknowledged
    ids (every 2xx that arrived, the one that triggered the kill included)."""
    acknowledged: set[str] = set()
    killed = asyncio.Event()

    async def sender(s: int, session: aiohttp.ClientSession) -> None:
        i = 0
        while not killed.is_set():
            event_id = f"t{number}-s{s}-{i}"
            i += 1
            body = {"specversion": "1.0", "id": event_id, "source": "/sigkill", "type": "t"}
            try:
                async with session.post(
                    url, json=body, headers={"Content-Type": "application/cloudevents+json"}
                ) as response:
                    if response.status == 202:
                        acknowledged.add(event_id)
                        if not killed.is_set():
                            os.kill(pid, signal.SIGKILL)
                            killed.set()
            except (aiohttp.ClientError, ConnectionError):
                await asyncio.sleep(0.01)  # not listening yet, or killed under us

    async with aiohttp.ClientSession() as session:
        await asyncio.wait_for(
            asyncio.gather(*(sender(s, session) for s in range(SENDERS))), timeout=120
        )
    return acknowledged


def stored_ids(state: Path) -> set[str]:
    result = run_cli(state, "topics", "tail", "hooks", "--from-beginning")
    assert result.returncode == 0, result.stderr
    return {json.loads(line)["id"] for line in result.stdout.splitlines() if line.strip()}


def test_sigkill_right_after_a_2xx_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    pipeline = tmp_path / "hooks.yaml"
    pipeline.write_text(
        f"""
pipelines:
  - name: hooks
    source:
      connector: webhook
      config: {{listen: "127.0.0.1:{port}", path: /events}}
"""
    )
    state = tmp_path / "state"
    log = tmp_path / "worker.log"
    acknowledged: set[str] = set()
    for number in range(TRIALS):
        proc = start_worker(meshconnect(state, "run", str(pipeline)), log)
        got = asyncio.run(trial(f"http://127.0.0.1:{port}/events", proc.pid, number))
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert got, f"trial {number}: no 2xx before the kill"
        acknowledged |= got
    # the last restart: everything acknowledged is in the mesh
    proc = start_worker(meshconnect(state, "run", str(pipeline)), log)
    try:
        lost = acknowledged - stored_ids(state)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert lost == set(), f"{len(lost)} acknowledged events lost: {sorted(lost)[:5]}"
    assert len(acknowledged) >= TRIALS
