"""A private S3 endpoint for the s3 connector's tests: moto's standalone server (real HTTP,
the real boto3 client) on a free port, once per test session; plus a TCP proxy in front of
it that a test closes and reopens to take the endpoint down without losing moto's data
(moto keeps everything in memory: a restarted server would start empty)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import require_server

ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key-never-printed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _moto_server_command() -> list[str] | None:
    here = Path(sys.executable).parent / "moto_server"
    if here.exists():
        return [str(here)]
    found = shutil.which("moto_server")
    return [found] if found else None


class MotoServer:
    """A running ``moto_server``; :meth:`client` gives a boto3 client pointed at it."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None) -> None:
        command = _moto_server_command()
        if command is None:
            require_server("moto_server", "pip install 'moto[server]' (in the dev extra)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "moto.log"
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            **(env or {}),
        }
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*command, "-H", "127.0.0.1", "-p", str(self.port)],  # type: ignore[misc]
                stdout=log,
                stderr=log,
                env=env,
                cwd=tmp,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client().list_buckets()
                break
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"moto_server did not start: {self.log.read_text()[-2000:]}")
                time.sleep(0.1)

    def client(self, url: str | None = None) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=url or self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def bucket(self) -> str:
        """A new, empty bucket with a unique name."""
        name = f"t-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_server: MotoServer | None = None


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """The session's moto server (one for every test module that imports this fixture)."""
    global _server
    if _server is None or _server.proc.poll() is not None:
        _server = MotoServer(tmp_path_factory.mktemp("moto"))
        atexit.register(_server.stop)
    yield _server


def connection(server: MotoServer, bucket: str, url: str | None = None) -> dict[str, Any]:
    """The connection keys of a connector config for ``server``."""
    return {
        "bucket": bucket,
        "endpoint_url": url or server.url,
        "region": "us-east-1",
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "path_style": True,
    }


def keys(server: MotoServer, bucket: str, prefix: str = "") -> list[str]:
    client = server.client()
    out: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.extend(item["Key"] for item in page.get("Contents", []) or [])
    return out


def body(server: MotoServer, bucket: str, key: str) -> bytes:
    return bytes(server.client().get_object(Bucket=bucket, Key=key)["Body"].read())


class TcpProxy:
    """Forwards a local port to ``target``; :meth:`down` closes the listener and every
    connection (clients get 'connection refused'), :meth:`up` listens again on the same port.
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self.lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns.extend([client, upstream])
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                b.shutdown(socket.SHUT_WR)
