"""A private ``nats-server -js`` for the NATS mesh store's tests and benchmark.

Started from the machine's ``nats-server`` on a free port with JetStream's files in a temporary
directory, so tests can SIGKILL it and start it again on the same port and data. Never a
shared server.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mariadb import free_port

__all__ = ["NatsServer", "private_nats"]


@dataclass
class NatsServer:
    base: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    host = "127.0.0.1"

    @staticmethod
    def binary() -> str | None:
        """The nats-server executable (Debian's package puts it in /usr/sbin)."""
        return shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")

    @staticmethod
    def missing() -> str | None:
        return None if NatsServer.binary() else "nats-server is not on PATH nor in /usr/sbin"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        log_path = self.base / "nats.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        self.process = subprocess.Popen(
            [
                self.binary() or "nats-server", "-js",
                "-a", self.host, "-p", str(self.port),
                "-sd", str(self.base / "jetstream"),
                "-l", str(log_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            text = log_path.read_bytes()[offset:] if log_path.exists() else b""
            if b"Server is ready" in text and _accepts(self.host, self.port):
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start: {text[-2000:].decode()}")
            time.sleep(0.05)

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


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def private_nats(base: Path) -> Iterator[NatsServer]:
    server = NatsServer(base, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
