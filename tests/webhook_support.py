"""Helpers of the webhook/http tests: a worker over a store that can be broken, free ports,
HTTP requests that wait for the listener."""

from __future__ import annotations

import asyncio
import socket
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from meshconnect import Record
from meshconnect.config.loader import load_pipeline_files
from meshconnect.errors import StoreError
from meshconnect.mesh.memory import MemoryStore
from meshconnect.mesh.store import MeshStore
from meshconnect.testing import test_registry
from meshconnect.worker import Worker


class FlakyStore(MemoryStore):
    """A memory store whose appends fail while ``broken`` is set (the store is down)."""

    broken = False
    #: When set, appends wait until it is released (``hold.set()``): a slow store.
    hold: asyncio.Event | None = None

    async def append(self, records: Sequence[Record], positions: Any = None) -> list[int]:
        if self.broken:
            raise StoreError("simulated: the store is down")
        if self.hold is not None and records:
            await self.hold.wait()
        return await super().append(records, positions)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_for(tmp_path: Path, text: str, store: MeshStore) -> Worker:
    path = tmp_path / "pipelines.yaml"
    path.write_text(textwrap.dedent(text))
    return Worker(load_pipeline_files([str(path)], test_registry()), store, restart_backoff=0.01)


async def request(
    method: str, url: str, *, retry_connect: bool = True, **kwargs: Any
) -> tuple[int, dict[str, str], bytes]:
    """One request; waits (up to 10 s) for the listener to be there."""
    for _ in range(200):
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.request(method, url, **kwargs) as response,
            ):
                return response.status, dict(response.headers), await response.read()
        except aiohttp.ClientConnectorError:
            if not retry_connect:
                raise
            await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens at {url}")


async def wait_for(condition: Any, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
