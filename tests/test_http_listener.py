"""The shared HTTP listener (context.http) with a toy webhook source that answers 2xx only
after the ack, i.e. after its records are durably in the mesh."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from meshconnect import (
    ConfigError,
    ConnectorConfig,
    ConnectorContext,
    ConnectorSpec,
    Record,
    Source,
    SourceBatch,
    hookimpl,
)
from meshconnect.config.loader import load_pipeline_files
from meshconnect.errors import StoreError
from meshconnect.httplisten import HttpListeners
from meshconnect.mesh.memory import MemoryStore
from meshconnect.mesh.store import MeshStore
from meshconnect.testing import test_registry
from meshconnect.worker import Worker


class HookConfig(ConnectorConfig):
    listen: str
    path: str = "/events"


class HookSource(Source[HookConfig]):
    """Each POSTed JSON body becomes a record; the request is answered 200 once the batch's
    ack says it is stored, 503 with the reason if the worker gave up on it."""

    async def start(self, positions: Mapping[str, Any]) -> None:
        self.pending: asyncio.Queue[tuple[Any, asyncio.Future[None]]] = asyncio.Queue()
        await self.context.http.add_route(self.config.listen, "POST", self.config.path, self.on)

    async def on(self, request: web.Request) -> web.Response:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self.pending.put((await request.json(), done))
        try:
            await done
        except Exception as exc:
            return web.Response(status=503, text=f"not stored: {exc}")
        return web.Response(status=200, text="stored")

    async def poll(self) -> SourceBatch | None:
        try:
            first = await asyncio.wait_for(self.pending.get(), 0.2)
        except TimeoutError:
            return SourceBatch([])
        items = [first]
        while not self.pending.empty():
            items.append(self.pending.get_nowait())
        futures = [done for _, done in items]

        def ack(error: BaseException | None) -> None:
            for done in futures:
                if not done.done():
                    done.set_result(None) if error is None else done.set_exception(error)

        return SourceBatch([Record(body) for body, _ in items], ack=ack)


class Plugin:
    @hookimpl
    def meshconnect_connectors(self) -> list[ConnectorSpec]:
        return [ConnectorSpec("hook", "source", HookConfig, HookSource)]


class FlakyStore(MemoryStore):
    """Fails every append while ``broken`` is set."""

    broken = False

    async def append(self, records: Sequence[Record], positions: Any = None) -> list[int]:
        if self.broken:
            raise StoreError("simulated: the store is down")
        return await super().append(records, positions)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_for(tmp_path: Path, text: str, store: MeshStore) -> Worker:
    path = tmp_path / "hooks.yaml"
    path.write_text(textwrap.dedent(text))
    registry = test_registry()
    registry.register(Plugin(), "hook")
    return Worker(load_pipeline_files([str(path)], registry), store, restart_backoff=0.01)


async def post(url: str, body: Any) -> tuple[int, str]:
    for _ in range(100):  # until the source has started listening
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(url, json=body) as response,
            ):
                return response.status, await response.text()
        except aiohttp.ClientConnectorError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens at {url}")


async def test_the_webhook_answers_200_only_once_the_records_are_in_the_store(
    tmp_path: Path,
) -> None:
    port = free_port()
    store = FlakyStore("memory://")
    await store.open()
    worker = worker_for(
        tmp_path,
        f"""
        pipelines:
          - name: orders
            source: {{connector: hook, config: {{listen: "127.0.0.1:{port}", path: /orders}}}}
          - name: refunds
            source: {{connector: hook, config: {{listen: "127.0.0.1:{port}", path: /refunds}}}}
        """,
        store,
    )
    run = asyncio.create_task(worker.run())
    try:
        status, _ = await post(f"http://127.0.0.1:{port}/orders", {"order": 1})
        assert status == 200
        # The 200 came after the append: the record is readable right now.
        assert [r.data for r in await store.read("orders", 0, 10)] == [{"order": 1}]
        # Both pipelines share the port, each on its path.
        status, _ = await post(f"http://127.0.0.1:{port}/refunds", {"refund": 7})
        assert status == 200
        assert [r.data for r in await store.read("refunds", 0, 10)] == [{"refund": 7}]

        store.broken = True
        status, text = await post(f"http://127.0.0.1:{port}/orders", {"order": 2})
        assert (status, text) == (503, "not stored: simulated: the store is down")
        assert [r.data for r in await store.read("orders", 0, 10)] == [{"order": 1}]
        store.broken = False
        # A sender retries a 503 (the source is restarted meanwhile); a 503 stored nothing.
        for _ in range(100):
            status, _ = await post(f"http://127.0.0.1:{port}/orders", {"order": 3})
            if status == 200:
                break
            await asyncio.sleep(0.05)
        assert status == 200
        assert [r.data for r in await store.read("orders", 0, 10)] == [{"order": 1}, {"order": 3}]
    finally:
        worker.stop()
        assert await run == 0
        await store.close()


async def test_two_pipelines_declaring_one_route_is_a_config_error_naming_both(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    store = MemoryStore("memory://")
    await store.open()
    worker = worker_for(
        tmp_path,
        f"""
        pipelines:
          - name: first
            source: {{connector: hook, config: {{listen: "127.0.0.1:{port}"}}}}
          - name: second
            source: {{connector: hook, config: {{listen: "127.0.0.1:{port}"}}}}
        """,
        store,
    )
    with caplog.at_level(logging.ERROR, logger="meshconnect.worker"):
        run = asyncio.create_task(worker.run())
        await asyncio.sleep(1.0)
        worker.stop()
        assert await run == 1
    await store.close()
    failed = [r.getMessage() for r in caplog.records if "FAILED" in r.getMessage()]
    assert len(failed) == 1
    assert (
        f"HTTP route POST /events on 127.0.0.1:{port}: declared by pipeline 'first' (hook) "
        "and by pipeline 'second' (hook)" in failed[0]
    ) or (
        f"HTTP route POST /events on 127.0.0.1:{port}: declared by pipeline 'second' (hook) "
        "and by pipeline 'first' (hook)" in failed[0]
    )


async def test_one_port_under_two_host_spellings_and_a_port_held_elsewhere_are_config_errors() -> (
    None
):
    listeners = HttpListeners()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    try:
        route = await listeners.add_route("127.0.0.1:0", "GET", "/a", ok, "pipeline 'a' (x)")
        port = route.port
        assert port and listeners.port("127.0.0.1:0") == port
        with pytest.raises(ConfigError, match=r"clashes with 127\.0\.0\.1:0 \(pipeline 'a'"):
            await listeners.add_route(f"127.0.0.1:{port}", "GET", "/b", ok, "pipeline 'b' (x)")
        with socket.socket() as held:  # a port another process holds
            held.bind(("127.0.0.1", 0))
            held.listen()
            taken = held.getsockname()[1]
            with pytest.raises(ConfigError) as in_use:
                await listeners.add_route(f"127.0.0.1:{taken}", "GET", "/", ok, "pipeline 'h' (x)")
            assert str(in_use.value) == (
                f"listen 127.0.0.1:{taken} (pipeline 'h' (x)): cannot bind: in use by another "
                "process"
            )
        busy = free_port()
        await listeners.add_route(f"0.0.0.0:{busy}", "GET", "/c", ok, "pipeline 'c' (x)")
        with pytest.raises(ConfigError) as clash:
            await listeners.add_route(f"127.0.0.1:{busy}", "GET", "/d", ok, "pipeline 'd' (x)")
        assert str(clash.value) == (
            f"listen 127.0.0.1:{busy} (pipeline 'd' (x)) clashes with 0.0.0.0:{busy} "
            "(pipeline 'c' (x)): one port, two spellings of the address; use the same listen "
            "address to share the port"
        )
        with pytest.raises(ConfigError, match="expected HOST:PORT"):
            await listeners.add_route("8080", "GET", "/e", ok, "pipeline 'e' (x)")
    finally:
        await listeners.close()


async def test_a_context_outside_a_worker_has_private_services() -> None:
    context = ConnectorContext("p", "c", logging.getLogger("test"))
    context.metrics.counter("rows", "Rows read").inc(3)
    assert context.metrics.registry.render() == (
        "# HELP meshconnect_rows_total Rows read\n"
        "# TYPE meshconnect_rows_total counter\n"
        'meshconnect_rows_total{connector="c",pipeline="p"} 3.0\n'
    )
    route = await context.http.add_route("127.0.0.1:0", "GET", "/x", lambda r: None)  # type: ignore[arg-type,return-value]
    assert route.port > 0
    await context.http.listeners.close()


def test_aiohttp_and_tqdm_are_imported_only_when_used() -> None:
    """The `http` extra is optional: a worker without HTTP sources never imports aiohttp."""
    import subprocess
    import sys

    code = (
        "import sys, logging, meshconnect.worker, meshconnect.cli\n"
        "from meshconnect import ConnectorContext\n"
        "ConnectorContext('p', 'c', logging.getLogger('x'))\n"
        "print(sorted(m for m in ('aiohttp', 'tqdm') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_slow_headers_are_closed_and_connections_beyond_the_cap_get_503() -> None:
    """300 sockets sending a request line and one header, never the end of the headers, were
    never closed (the process ran out of file descriptors). Now each address closes a
    connection whose headers are not complete within ``header_timeout``, and answers a
    connection beyond ``max_connections`` with 503 at once; a complete request still works."""
    listeners = HttpListeners()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    route = await listeners.add_route(
        "127.0.0.1:0", "GET", "/x", ok, "test", header_timeout=0.5, max_connections=4
    )
    loop = asyncio.get_running_loop()
    slow: list[socket.socket] = []
    try:
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", route.port))
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n")  # never the blank line
            sock.setblocking(False)
            slow.append(sock)
        await wait_until(lambda: len(_guards(listeners)) == 4)
        extra = socket.create_connection(("127.0.0.1", route.port))
        extra.setblocking(False)
        answer = await asyncio.wait_for(_read_all(loop, extra), 10)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"Retry-After: 1" in answer and b'"status":503' in answer
        for sock in slow:  # closed by the server: reading ends (b"")
            assert await asyncio.wait_for(_read_all(loop, sock), 10) == b""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{route.port}/x") as response,
        ):
            assert (response.status, await response.text()) == (200, "ok")
    finally:
        for sock in slow:
            sock.close()
        await listeners.close()


def _guards(listeners: HttpListeners) -> list[Any]:
    return [g for server in listeners._servers.values() for g in server.guards.values()]


async def _read_all(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := await loop.sock_recv(sock, 65536):
            out += chunk
    except ConnectionResetError:
        pass
    sock.close()
    return out


async def wait_until(condition: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_removed_route_answers_503_until_added_again_and_errors_are_problems() -> None:
    """A route removed while the listener runs (its pipeline stopping or restarting) answered
    a plain 404, which an http sink upstream dead-letters as permanent. Now: 503 with
    Retry-After and a problem body until it is added again; 404 and 405 are problem bodies."""
    listeners = HttpListeners()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    route = await listeners.add_route("127.0.0.1:0", "POST", "/x", ok, "pipeline 'a'")
    url = f"http://127.0.0.1:{route.port}"

    async def ask(method: str, path: str) -> tuple[int, dict[str, str], Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, url + path) as response,
        ):
            body = await response.read()
            kind = response.headers.get("Content-Type", "")
            return (
                response.status,
                dict(response.headers),
                (json.loads(body) if kind.startswith("application/problem+json") else body),
            )

    try:
        assert (await ask("POST", "/x"))[0] == 200
        status, headers, problem = await ask("POST", "/nope")
        assert (status, problem["status"], problem["title"]) == (404, 404, "Not Found")
        status, headers, problem = await ask("GET", "/x")
        assert (status, headers["Allow"], problem["status"]) == (405, "POST", 405)
        route.remove()
        for method in ("POST", "GET"):
            status, headers, problem = await ask(method, "/x")
            assert (status, headers["Retry-After"], problem["status"]) == (503, "1", 503)
            assert "restarting" in problem["detail"]
        again = await listeners.add_route("127.0.0.1:0", "POST", "/x", ok, "pipeline 'a'")
        assert again.port == route.port
        assert (await ask("POST", "/x"))[0] == 200
    finally:
        await listeners.close()


def test_a_route_on_the_admin_apis_port_is_a_clash_naming_it(tmp_path: Path) -> None:
    """The admin API is a server of its own: a webhook on its port was refused as "in use by
    another process", which sent the operator looking for a process that is this worker."""
    import subprocess
    import sys

    port = free_port()
    config = tmp_path / "p.yaml"
    config.write_text(
        "pipelines:\n  - name: hooks\n    source: {connector: webhook, config: "
        f'{{listen: "127.0.0.1:{port}", path: /events}}}}\n'
    )
    command = [sys.executable, "-m", "meshconnect", "--state", str(tmp_path / "state"), "run"]
    run = subprocess.run(
        [*command, "--admin", f"127.0.0.1:{port}", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert run.returncode == 1
    assert (
        f"source hooks/webhook FAILED: ConfigError: listen 127.0.0.1:{port} (pipeline 'hooks' "
        f"(webhook)) clashes with the admin API (--admin 127.0.0.1:{port}) on port {port}; give "
        "one of them another port"
    ) in run.stderr
