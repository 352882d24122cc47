"""A private ``redis-server`` for the redis connector's tests and benchmark.

Started from the machine's ``redis-server`` on a free port, with its files in a temporary
directory and append-only persistence that syncs every write (``appendfsync always``), so a
SIGKILL of the server loses nothing acknowledged: tests can kill and restart it mid-run.
Never the machine's shared Redis on 6379.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mariadb import free_port

__all__ = ["RedisServer", "private_redis"]


@dataclass
class RedisServer:
    base: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    host = "127.0.0.1"

    @staticmethod
    def missing() -> str | None:
        return None if shutil.which("redis-server") else "redis-server is not on PATH"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        log = (self.base / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", self.host,
                "--dir", str(self.base),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--protected-mode", "no",
                "--daemonize", "no",
            ],
            stdout=log,
            stderr=log,
        )  # fmt: skip
        import redis

        client = redis.Redis(host=self.host, port=self.port)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not start: {(self.base / 'redis.log').read_text()[-2000:]}"
                )
            time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        """SIGKILL the server (a crash) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, **options: object):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis(host=self.host, port=self.port, **options)  # type: ignore[arg-type]


@contextlib.contextmanager
def private_redis(base: Path) -> Iterator[RedisServer]:
    server = RedisServer(base, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
