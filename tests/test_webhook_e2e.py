"""End to end: CloudEvents POSTed to the webhook -> the mesh (sqlite) -> http sinks to
another local server, in structured and binary mode: attributes and extensions come out as
they went in (structured: byte for byte; binary: read back through the SDK's binding)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from cloudevents.http import from_http
from webhook_support import free_port, request, wait_for, worker_for

from meshconnect import jsonvalue
from meshconnect.connectors.webhook._binding import event_from_binary
from meshconnect.mesh.sqlite import SqliteStore

EVENTS = [
    # compact JSON in the order the mesh writes it: the body must come out byte for byte
    b'{"specversion":"1.0","id":"order-1","source":"https://shop.example/orders",'
    b'"type":"com.example.order.created","subject":"caf\xc3\xa9 \\"7\\" 100%",'
    b'"time":"2026-11-29T10:00:00.123456789+01:00","datacontenttype":"application/json",'
    b'"dataschema":"https://schemas.example/order.json","partitionkey":"customer-42",'
    b'"retries":3,"vip":true,"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-01",'
    b'"data":{"total":169299987.35345112,"big":123456789012345678901234567890,"e":1E+400}}',
    b'{"specversion":"1.0","id":"order-2","source":"/orders","type":"com.example.order.paid",'
    b'"datacontenttype":"text/plain","data":"paid in full"}',
    b'{"specversion":"1.0","id":"order-3","source":"/orders","type":"com.example.order.blob",'
    b'"datacontenttype":"application/octet-stream","data_base64":"AAEC/w=="}',
]


async def test_webhook_to_mesh_to_http_sink_round_trip(tmp_path: Path) -> None:
    received: dict[str, list[tuple[Any, bytes]]] = {"structured": [], "binary": []}

    async def receive(req: web.Request) -> web.Response:
        received[req.path.strip("/")].append((req.headers.copy(), await req.read()))
        return web.Response(status=202)

    sink_port, hook_port = free_port(), free_port()
    app = web.Application()
    app.router.add_post("/{mode}", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", sink_port).start()
    store = SqliteStore(f"sqlite:///{tmp_path / 'mesh.db'}")
    await store.open()
    worker = worker_for(
        tmp_path,
        f"""
        pipelines:
          - name: orders
            source:
              connector: webhook
              config: {{listen: "127.0.0.1:{hook_port}", path: /events}}
            sinks:
              - name: structured
                connector: http
                config: {{url: "http://127.0.0.1:{sink_port}/structured", mode: structured}}
              - name: binary
                connector: http
                config: {{url: "http://127.0.0.1:{sink_port}/binary", mode: binary}}
        """,
        store,
    )
    run = asyncio.create_task(worker.run())
    try:
        for body in EVENTS:
            status, _, _ = await request(
                "POST",
                f"http://127.0.0.1:{hook_port}/events",
                data=body,
                headers={"Content-Type": "application/cloudevents+json"},
            )
            assert status == 202
        await wait_for(lambda: all(len(v) == len(EVENTS) for v in received.values()))
    finally:
        worker.stop()
        assert await run == 0
        await store.close()
        await runner.cleanup()

    for sent, (headers, body) in zip(EVENTS, received["structured"], strict=True):
        assert headers["Content-Type"] == "application/cloudevents+json"
        assert body == sent
        sdk_event = from_http(dict(headers), body)  # the SDK reads what the sink wrote
        expected = jsonvalue.loads(sent)
        for name, value in expected.items():
            if name not in ("data", "data_base64"):
                assert sdk_event[name] == value, name

    for sent, (headers, body) in zip(EVENTS, received["binary"], strict=True):
        expected = jsonvalue.loads(sent)
        back = event_from_binary(headers, body).to_dict()
        # binary mode carries every attribute as text: integers and booleans as their text
        assert back == {k: _as_header_text(k, v) for k, v in expected.items()}
    # percent-encoded as the binding says (the SDK alone would send the raw text)
    assert received["binary"][0][0]["ce-subject"] == "caf%C3%A9%20%227%22%20100%25"


def _as_header_text(name: str, value: Any) -> Any:
    if name in ("retries", "vip"):
        return {True: "true"}.get(value, str(value))
    if name == "data_base64":
        return value
    return value


async def test_synchronous_mode_answers_once_every_sink_delivered(tmp_path: Path) -> None:
    """`synchronous: true` holds the answer until the sinks reading the topic have written and
    committed the event: when the 200 comes, the receiving server already has it; a sink that
    cannot deliver within `sync_timeout` gives 202 with `delivered: false` (stored anyway)."""
    received: list[bytes] = []
    slow = {"on": False}

    async def receive(req: web.Request) -> web.Response:
        if slow["on"]:
            return web.Response(status=503, headers={"Retry-After": "5"})
        received.append(await req.read())
        return web.Response(status=202)

    sink_port, hook_port = free_port(), free_port()
    app = web.Application()
    app.router.add_post("/in", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", sink_port).start()
    store = SqliteStore(f"sqlite:///{tmp_path / 'mesh.db'}")
    await store.open()
    worker = worker_for(
        tmp_path,
        f"""
        pipelines:
          - name: orders
            source:
              connector: webhook
              config:
                listen: "127.0.0.1:{hook_port}"
                path: /events
                synchronous: true
                sync_timeout: 2s
            sinks:
              - name: out
                connector: http
                commit_interval: 0.05
                config: {{url: "http://127.0.0.1:{sink_port}/in", mode: structured}}
        """,
        store,
    )
    run = asyncio.create_task(worker.run())
    try:
        for n, body in enumerate(EVENTS[:3], start=1):
            status, _, answer = await request(
                "POST",
                f"http://127.0.0.1:{hook_port}/events",
                data=body,
                headers={"Content-Type": "application/cloudevents+json"},
            )
            assert (status, json.loads(answer)["delivered"]) == (200, True)
            assert len(received) == n  # delivered before the answer came
        slow["on"] = True
        status, _, answer = await request(
            "POST",
            f"http://127.0.0.1:{hook_port}/events",
            data=b'{"specversion":"1.0","id":"order-4","source":"/orders","type":"t","data":4}',
            headers={"Content-Type": "application/cloudevents+json"},
        )
        assert (status, json.loads(answer)) == (
            202,
            {"stored": 1, "duplicates": 0, "delivered": False},
        )
        slow["on"] = False
        await wait_for(lambda: len(received) == 4)
    finally:
        worker.stop()
        assert await run == 0
        await store.close()
        await runner.cleanup()
