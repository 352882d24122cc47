"""The http sink against local servers that speak real HTTP: the conformance suite, a server
that fails in scripted ways (5xx bursts, 429 with Retry-After, timeouts, a 400, connection
resets) with HMAC signatures checked, and OAuth2 client credentials."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from webhook_support import FlakyStore, free_port, worker_for

from meshconnect import ConnectorContext, Record, jsonvalue
from meshconnect.connectors.webhook.config import HttpSinkConfig
from meshconnect.connectors.webhook.sink import HttpSink
from meshconnect.testing import SinkConformance

# -- the conformance suite, against a receiver that de-duplicates on the CloudEvent id --------


class Receiver(ThreadingHTTPServer):
    """Keeps each structured CloudEvent once by id (what the docs ask of receivers); 400 for
    an event whose data has ``poison``."""

    daemon_threads = True

    def __init__(self) -> None:
        self.events: dict[str, Any] = {}
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                event = json.loads(body)
                if isinstance(event.get("data"), dict) and event["data"].get("poison"):
                    self.send_response(400)
                    self.end_headers()
                    self.wfile.write(b"poison refused")
                    return
                with outer.lock:
                    outer.events.setdefault(event["id"], event)
                self.send_response(201)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """An outage: the server stops and closes its port (connections are refused), then
        listens on the same port again, with the events it had."""
        self.shutdown()
        self.server_close()
        try:
            yield
        finally:
            self.socket = socket.socket(self.address_family, self.socket_type)
            self.server_bind()
            self.server_activate()
            threading.Thread(target=self.serve_forever, daemon=True).start()


class TestHttpSinkConformance(SinkConformance):
    receivers: dict[Path, Receiver] = {}

    @pytest.fixture(autouse=True)
    def _stop_receivers(self) -> Iterator[None]:
        yield
        for receiver in self.receivers.values():
            receiver.shutdown()
        self.receivers.clear()

    def _receiver(self, tmp_path: Path) -> Receiver:
        if tmp_path not in self.receivers:
            self.receivers[tmp_path] = Receiver()
        return self.receivers[tmp_path]

    def make_sink(self, tmp_path: Path) -> HttpSink:
        port = self._receiver(tmp_path).server_address[1]
        config = HttpSinkConfig(url=f"http://127.0.0.1:{port}/in", mode="structured")
        context = ConnectorContext(
            "test", "http", logging.getLogger("test"), base_dir=str(tmp_path)
        )
        return HttpSink(config, context)

    def durable(self, tmp_path: Path) -> list[Any]:
        receiver = self._receiver(tmp_path)
        with receiver.lock:
            return [event["data"]["n"] for event in receiver.events.values()]

    def poison_record(self, i: int) -> Record | None:
        return Record({"n": i, "poison": True}, id=f"poison-{i}", topic="conformance", offset=i)

    def unavailable(self, tmp_path: Path) -> contextlib.AbstractContextManager[None]:
        return self._receiver(tmp_path).down()


# -- a server failing in scripted ways -------------------------------------------------------

SECRET = b"sink-secret"


class Scripted:
    """Answers per record id and attempt: ``script[id]`` is a list of behaviours for the
    first attempts (``503``, ``429``, ``timeout``, ``reset``, ``400``); later attempts get 200.
    ``delivered`` lists the ids answered 2xx, in order; every request's signature is checked
    (a bad one is answered 401 and would end in the dead letters)."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.attempts: dict[str, int] = {}
        self.delivered: list[tuple[str, str | None]] = []
        self.times: dict[str, list[float]] = {}
        self.bad_signatures = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Signature-256", ""), expected):
            self.bad_signatures += 1
            return web.Response(status=401, text="bad signature")
        event_id = request.headers["ce-id"]
        n = self.attempts[event_id] = self.attempts.get(event_id, 0) + 1
        self.times.setdefault(event_id, []).append(time.monotonic())
        steps = self.script.get(event_id, [])
        step = steps[n - 1] if n <= len(steps) else "200"
        if step == "503":
            return web.Response(status=503, text="overloaded")
        if step == "429":
            return web.Response(status=429, headers={"Retry-After": "1"}, text="slow down")
        if step == "400":
            return web.Response(status=400, text='{"error": "order 9 has no customer"}')
        if step == "timeout":
            await asyncio.sleep(2.0)  # beyond the sink's timeout: the client gave up
            return web.Response(status=504)
        if step == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        self.delivered.append((event_id, request.headers.get("ce-partitionkey")))
        return web.Response(status=200)


async def serve(handler: Any, port: int) -> web.AppRunner:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def events(n: int, keys: int = 3) -> list[dict[str, Any]]:
    return [
        {
            "specversion": "1.0",
            "id": f"e{i}",
            "source": "/orders",
            "type": "com.example.order",
            "partitionkey": f"k{i % keys}",
            "data": {"n": i},
        }
        for i in range(n)
    ]


async def test_scripted_failures_deliver_every_good_record_once_in_order_per_key(
    tmp_path: Path,
) -> None:
    script = {
        "e3": ["503", "503", "503"],  # a 5xx burst
        "e5": ["429"],  # with Retry-After: 1
        "e7": ["timeout"],
        "e9": ["400"],  # never delivered: to the dead letters
        "e11": ["reset", "503"],
        "e12": ["503"],
    }
    server = Scripted(script)
    port = free_port()
    runner = await serve(server.handle, port)
    store = FlakyStore("memory://")
    await store.open()
    records = events(30)
    worker = worker_for(
        tmp_path,
        f"""
        pipelines:
          - name: orders
            source:
              connector: memory
              config: {{records: {json.dumps(records)}, batch_size: 10}}
            sinks:
              - connector: http
                config:
                  url: "http://127.0.0.1:{port}/orders/{{partitionkey}}"
                  timeout: 500ms
                  max_concurrency: 4
                  hmac: {{secret: {SECRET.decode()}, prefix: "sha256="}}
                errors:
                  retry: {{max_attempts: 10, initial_backoff: 10ms, max_backoff: 100ms}}
                  tolerance: all
                  dead_letter_topic: dlq.orders
        """,
        store,
    )
    try:
        assert await asyncio.wait_for(worker.run(), 120) == 0
        dead_letters = await store.read("dlq.orders", 0, 100)
    finally:
        await store.close()
        await runner.cleanup()
    good = [e["id"] for e in records if e["id"] != "e9"]
    assert sorted(i for i, _ in server.delivered) == sorted(good)  # each exactly once
    for key in ("k0", "k1", "k2"):  # and in offset order per partition key
        mine = [i for i, k in server.delivered if k == key]
        assert mine == [e["id"] for e in records if e["partitionkey"] == key and e["id"] != "e9"]
    assert server.bad_signatures == 0
    [dead] = dead_letters
    assert dead.id == "e9"
    assert "HTTP 400" in str(dead.extensions) and "has no customer" in str(dead.extensions)
    # the 429's Retry-After held the next attempt back at least a second
    first, second = server.times["e5"][:2]
    assert second - first >= 1.0


async def test_oauth2_tokens_are_fetched_refreshed_and_replaced_after_a_401(
    tmp_path: Path,
) -> None:
    issued: list[str] = []
    revoked: set[str] = set()
    received: list[str] = []

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        assert form["grant_type"] == "client_credentials" and form["scope"] == "events:write"
        assert request.headers["Authorization"] == "Basic Y2xpZW50OnNoaA=="  # client:shh
        issued.append(f"tok-{len(issued)}")
        return web.json_response({"access_token": issued[-1], "expires_in": 3})

    async def receive(request: web.Request) -> web.Response:
        if request.path == "/token":
            return await token(request)
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if presented not in issued or presented in revoked:
            return web.Response(status=401)
        data = jsonvalue.loads(await request.read())
        received.append(data["n"])
        if data["n"] == 1:
            revoked.add(presented)  # the token is revoked early: the next request gets 401
        return web.Response(status=204)

    port = free_port()
    runner = await serve(receive, port)
    config = HttpSinkConfig(
        url=f"http://127.0.0.1:{port}/in",
        mode="data",
        oauth2={  # type: ignore[arg-type]
            "token_url": f"http://127.0.0.1:{port}/token",
            "client_id": "client",
            "client_secret": "shh",
            "scope": "events:write",
        },
    )
    sink = HttpSink(config, ConnectorContext("t", "http", logging.getLogger("t")))
    await sink.open(None)
    try:
        for n in range(3):
            await sink.write([Record({"n": n})])
        await asyncio.sleep(3.0)  # past expires_in: refreshed before the next request
        await sink.write([Record({"n": 3})])
    finally:
        await sink.close()
        await runner.cleanup()
    assert received == [0, 1, 2, 3]
    assert issued == ["tok-0", "tok-1", "tok-2"]


async def test_data_mode_templates_and_errors_name_no_secret(tmp_path: Path) -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def receive(request: web.Request) -> web.Response:
        seen.append((request.path_qs, dict(request.headers), await request.read()))
        return web.Response(status=404 if "missing" in request.path else 200, text="x" * 1000)

    port = free_port()
    runner = await serve(receive, port)
    config = HttpSinkConfig(
        url=f"http://user:pw@127.0.0.1:{port}/{{type}}/{{data.order.id}}?key=s3cret",
        method="PUT",
        mode="data",
        headers={"X-Tenant": "{tenant}", "X-Day": "{time:%Y-%m-%d}"},
    )
    sink = HttpSink(config, ConnectorContext("t", "http", logging.getLogger("t")))
    await sink.open(None)
    try:
        record = Record(
            {"order": {"id": 7}, "total": jsonvalue.loads("1.10")},
            type="orders",
            time="2026-03-04T23:00:00-02:00",
            extensions={"tenant": "acme"},
        )
        await sink.write([record])
        bad = Record(
            {"order": {"id": "missing"}},
            type="orders",
            time="2026-03-04T00:00:00Z",
            extensions={"tenant": "a"},
        )
        with pytest.raises(Exception) as failed:
            await sink.write([bad])
    finally:
        await sink.close()
        await runner.cleanup()
    path, headers, body = seen[0]
    assert path == "/orders/7?key=s3cret" and body == b'{"order":{"id":7},"total":1.10}'
    assert (headers["X-Tenant"], headers["X-Day"]) == ("acme", "2026-03-05")
    message = str(failed.value)
    assert "HTTP 404" in message and "s3cret" not in message and "pw" not in message
    assert len(message) < 600  # the body is an excerpt


def test_a_url_template_may_not_choose_the_scheme_host_or_port() -> None:
    from pydantic import ValidationError

    for url in ("{data.where}", "http://{tenant}.example.com/x", "http://h:{port}/x"):
        with pytest.raises(ValidationError, match="scheme, host or port"):
            HttpSinkConfig(url=url)


async def test_batch_mode_sends_consecutive_records_of_a_key_together() -> None:
    from meshconnect import BatchError, DataError

    batches: list[list[str]] = []

    async def receive(request: web.Request) -> web.Response:
        assert request.headers["Content-Type"] == "application/cloudevents-batch+json"
        events = jsonvalue.loads(await request.read())
        if any(e["data"].get("poison") for e in events):
            return web.Response(status=422, text="a poison event")
        batches.append([e["id"] for e in events])
        return web.Response(status=202)

    port = free_port()
    runner = await serve(receive, port)
    config = HttpSinkConfig(
        url=f"http://127.0.0.1:{port}/{{partitionkey}}", mode="batch", batch_max=3
    )
    sink = HttpSink(config, ConnectorContext("t", "http", logging.getLogger("t")))
    await sink.open(None)
    try:
        records = [
            Record({"n": i, "poison": i == 7}, id=f"r{i}", extensions={"partitionkey": f"k{i % 2}"})
            for i in range(10)
        ]
        with pytest.raises(BatchError) as failed:
            await sink.write(records)
    finally:
        await sink.close()
        await runner.cleanup()
    # k0: r0 r2 r4 | r6 r8; k1: r1 r3 r5 | r7 r9 (refused whole: the poison is in it)
    assert sorted(batches) == [["r0", "r2", "r4"], ["r1", "r3", "r5"], ["r6", "r8"]]
    assert sorted(failed.value.failures) == [7, 9]
    assert all(isinstance(e, DataError) for e in failed.value.failures.values())
