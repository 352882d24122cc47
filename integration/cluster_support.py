"""What the cluster tests share: ``meshconnect run --cluster`` worker processes, and a probe
that watches the mesh store (leases, topic ends) from the test process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from conftest import meshconnect, start_worker

T = TypeVar("T")

__all__ = ["Members", "StoreProbe"]


class StoreProbe:
    """A mesh store opened in a thread of its own; :meth:`call` runs a store coroutine there.
    It records when ``topic``'s end offset last grew (polled every 20 ms)."""

    def __init__(self, url: str, topic: str | None = None) -> None:
        from meshconnect.mesh import open_store
        from meshconnect.plugins import PluginPolicy, load_registry

        self.url = url
        self.store = open_store(url, load_registry(PluginPolicy.read(None)))
        self.topic = topic
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.store.open)
        #: (monotonic time, end offset) at each growth of the topic's end.
        self.growth: list[tuple[float, int]] = []
        self._stop = False
        if topic is not None:
            self._watcher = asyncio.run_coroutine_threadsafe(self._watch(), self.loop)

    def call(self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout)

    async def _watch(self) -> None:
        assert self.topic is not None
        end = -1
        while not self._stop:
            try:
                now = (await self.store.end_offsets([self.topic]))[self.topic]
            except Exception:  # the store restarting
                await asyncio.sleep(0.05)
                continue
            if now != end:
                self.growth.append((time.monotonic(), now))
                end = now
            await asyncio.sleep(0.02)

    def read_all(self, topic: str) -> list[Any]:
        """Every record of ``topic``."""

        async def read() -> list[Any]:
            out: list[Any] = []
            while True:
                batch = await self.store.read(topic, len(out), 100_000)
                if not batch:
                    return out
                out.extend(batch)

        return self.call(read, timeout=300)

    def end(self) -> int:
        return self.growth[-1][1] if self.growth else 0

    def leases(self) -> dict[str, Any]:
        return {lease.name: lease for lease in self.call(self.store.leases)}

    def owner(self, unit: str) -> Any:
        """The live lease of ``unit``, or None."""
        lease = self.leases().get(unit)
        return lease if lease is not None and lease.expires > time.time() else None

    def close(self) -> None:
        self._stop = True
        if self.topic is not None:
            self._watcher.result(10)
        self.call(self.store.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Members:
    """Worker processes ``w1``, ``w2``… of one cluster, each with its own state directory,
    log and ``MESHCONNECT_WORKER_NAME`` (so a dead one's leases expire as on another host)."""

    def __init__(self, base: Path, args: list[str]) -> None:
        self.base = base
        self.args = args
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.args_of: dict[str, list[str]] = {}

    def log(self, name: str) -> Path:
        return self.base / f"{name}.log"

    def start(self, name: str, args: list[str] | None = None) -> subprocess.Popen[bytes]:
        """Start member ``name`` with ``args`` (default: those given at construction; a
        restart of ``name`` reuses the arguments it last had)."""
        self.args_of[name] = args or self.args_of.get(name) or self.args
        state = self.base / f"state-{name}"
        command = meshconnect(state, *self.args_of[name])
        old = os.environ.get("MESHCONNECT_WORKER_NAME")
        os.environ["MESHCONNECT_WORKER_NAME"] = name
        try:
            proc = start_worker(command, self.log(name), timeout=5)
        finally:
            if old is None:
                del os.environ["MESHCONNECT_WORKER_NAME"]
            else:
                os.environ["MESHCONNECT_WORKER_NAME"] = old
        self.procs[name] = proc
        return proc

    def by_pid(self, pid: int) -> str | None:
        for name, proc in self.procs.items():
            if proc.pid == pid and proc.poll() is None:
                return name
        return None

    def named(self, owner: str) -> str | None:
        """The member whose identity ``owner`` is (``name:pid:…``)."""
        name, pid = owner.split(":")[:2]
        proc = self.procs.get(name)
        return name if proc is not None and str(proc.pid) == pid else None

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def signal(self, name: str, sig: int) -> None:
        os.kill(self.procs[name].pid, sig)

    def stop_all(self, timeout: float = 90) -> dict[str, int | None]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = None
        return codes

    def tails(self) -> str:
        return "\n".join(
            f"--- {name}\n{self.log(name).read_text()[-3000:]}"
            for name in self.procs
            if self.log(name).exists()
        )
