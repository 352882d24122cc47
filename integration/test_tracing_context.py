"""A ``traceparent`` sent to the webhook arrives unchanged at the HTTP sink's receiving server
(issue 16, item 5): `meshconnect run` with a webhook source and http sinks in binary,
structured and data mode, the CloudEvents distributed-tracing extension sent in each way the
webhook takes it (docs/tracing.md)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from conftest import meshconnect, start_worker

#: W3C Trace Context's own example values, one trace per way in.
TRACES = {
    "binary": (
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
    ),
    "structured": (
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "rojo=00f067aa0ba902b7",
    ),
    "plain": (
        "00-a3ce929d0e0e47364bf92f3577b34da6-00f067aa0ba902b7-00",
        "vendor=opaque",
    ),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def send_events(url: str) -> None:
    """One event per way in; retried until the worker is up and answers 202."""
    binary_parent, binary_state = TRACES["binary"]
    structured_parent, structured_state = TRACES["structured"]
    plain_parent, plain_state = TRACES["plain"]
    requests: list[tuple[dict[str, str], bytes]] = [
        (
            {
                "ce-specversion": "1.0",
                "ce-id": "binary",
                "ce-source": "/test",
                "ce-type": "test.traced",
                "ce-traceparent": binary_parent,
                "ce-tracestate": binary_state,
                "Content-Type": "application/json",
            },
            b'{"way": "binary"}',
        ),
        (
            {"Content-Type": "application/cloudevents+json"},
            json.dumps(
                {
                    "specversion": "1.0",
                    "id": "structured",
                    "source": "/test",
                    "type": "test.traced",
                    "traceparent": structured_parent,
                    "tracestate": structured_state,
                    "data": {"way": "structured"},
                }
            ).encode(),
        ),
        (  # a plain JSON body: the W3C headers become the event's extension
            {
                "Content-Type": "application/json",
                "traceparent": plain_parent,
                "tracestate": plain_state,
            },
            b'{"way": "plain"}',
        ),
    ]
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        for headers, body in requests:
            while True:
                try:
                    async with session.post(url, data=body, headers=headers) as answer:
                        if answer.status == 202:
                            break
                        text = await answer.text()
                        assert answer.status == 503, f"{answer.status}: {text}"
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline, "the webhook never answered 202"
                await asyncio.sleep(0.1)


async def test_a_traceparent_arrives_unchanged_at_the_http_sinks_receiver(tmp_path: Path) -> None:
    received: dict[str, list[tuple[Any, bytes]]] = {"binary": [], "structured": [], "data": []}

    async def receive(request: web.Request) -> web.Response:
        received[request.match_info["mode"]].append((request.headers.copy(), await request.read()))
        return web.Response(status=204)

    receiver_port, hook_port = free_port(), free_port()
    app = web.Application()
    app.router.add_post("/{mode}", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver_port).start()
    pipeline = tmp_path / "p.yaml"
    sinks = "\n".join(
        f"""      - name: {mode}
        connector: http
        config: {{url: "http://127.0.0.1:{receiver_port}/{mode}", mode: {mode}}}"""
        for mode in received
    )
    pipeline.write_text(
        f"""
pipelines:
  - name: traced
    source:
      connector: webhook
      config: {{listen: "127.0.0.1:{hook_port}", path: /events, type: test.plain, source: /plain}}
    sinks:
{sinks}
"""
    )
    log = tmp_path / "worker.log"
    proc = start_worker(meshconnect(tmp_path / "state", "run", str(pipeline)), log)
    try:
        await send_events(f"http://127.0.0.1:{hook_port}/events")
        deadline = time.monotonic() + 60
        while any(len(v) < 3 for v in received.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
        await runner.cleanup()
    assert code == 0, log.read_text()[-3000:]

    def way(body: bytes) -> str:
        return str(json.loads(body)["way"])

    # binary mode: the extension as ce- headers
    binary = {way(body): headers for headers, body in received["binary"]}
    assert {w: (h["ce-traceparent"], h["ce-tracestate"]) for w, h in binary.items()} == TRACES
    # structured mode: members of the event
    events = [json.loads(body) for _, body in received["structured"]]
    assert {e["data"]["way"]: (e["traceparent"], e["tracestate"]) for e in events} == TRACES
    # data mode: no CloudEvent to carry it, so the W3C Trace Context headers
    data = {way(body): headers for headers, body in received["data"]}
    assert {w: (h["traceparent"], h["tracestate"]) for w, h in data.items()} == TRACES
