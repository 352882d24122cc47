"""A worker subprocess with its admin API (``meshconnect run --admin``) for the admin tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import meshconnect

TOKEN = "admin-test-token-0123456789"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class AdminWorker:
    """``meshconnect run FILES --admin 127.0.0.1:0`` in ``cwd``; :meth:`call` talks to it."""

    cwd: Path
    files: Sequence[str] = ()
    token: str | None = TOKEN
    listen: str = "127.0.0.1:0"
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.cwd / "worker.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> AdminWorker:
        env = {**os.environ, **self.env}
        env.pop("MESHCONNECT_ADMIN_TOKEN", None)
        if self.token:
            env["MESHCONNECT_ADMIN_TOKEN"] = self.token
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*meshconnect(self.cwd / "state", "run", *self.files, "--admin", self.listen)],
                stdout=log,
                stderr=log,
                cwd=self.cwd,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_bytes()[offset:].decode(errors="replace")
            found = re.search(r"admin API on http://[^ ]*:(\d+)/", text)
            if found:
                self.port = int(found.group(1))
                break
            if self.proc.poll() is not None:
                raise AssertionError(f"the worker exited {self.proc.returncode}:\n{text}")
            time.sleep(0.05)
        else:
            raise AssertionError(f"no admin API after {timeout}s:\n{self.log.read_text()}")
        self.wait_for(lambda: self.call("GET", "/ready").status == 200, "ready")
        return self

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | bool | None = True,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """``token``: True: the worker's (or, without one, the token file's); a string: that
        one; False/None: no Authorization header."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token is True:
            token = self.token or self.token_file_value()
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return Reply(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, dict(exc.headers), exc.read())

    def token_file_value(self) -> str:
        return (self.cwd / "state" / "admin.token").read_text().strip()

    def ok(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        reply = self.call(method, path, body)
        assert reply.status == expect, (method, path, reply.status, reply.text)
        return reply.json if reply.body else None

    def status(self, name: str) -> dict[str, Any]:
        return self.ok("GET", f"/connectors/{name}/status")  # type: ignore[no-any-return]

    def wait_for(self, check: Any, what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the worker exited while waiting for {what}:\n{self.logs()}")
            try:
                if check():
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.logs()[-4000:]}")

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 60) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def __enter__(self) -> AdminWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def jsonl(path: Path) -> list[Any]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def write_pipeline(path: Path, pipelines: list[dict[str, Any]]) -> str:
    path.write_text(json.dumps({"pipelines": pipelines}, indent=2), encoding="utf-8")
    return str(path)


def flowing(name: str, source: str, sink: str, **sink_extra: Any) -> dict[str, Any]:
    """A pipeline following JSON lines file ``source`` into JSON lines file ``sink``."""
    return {
        "name": name,
        "source": {
            "connector": "file",
            "config": {"path": source, "format": "json", "follow": True},
        },
        "sinks": [{"connector": "file", "config": {"path": sink, "format": "json"}, **sink_extra}],
    }
