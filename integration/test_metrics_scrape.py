"""``meshconnect run --metrics``: /metrics scraped from a running worker shows the counters
moving and the lag falling to 0 once the source is idle (issue 16, item 2).

The pipeline is file (following) -> mesh -> http sink, and the sink's receiving server holds
its requests until the test lets them through: while it holds them the consumer lag is every
stored record, whatever the machine's speed, and the test asserts only on scraped values."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from conftest import meshconnect, start_worker

Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode("utf-8")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape_until(port: int, done: Callable[[Scrape], bool], log: Path) -> Scrape:
    """Scrape until ``done`` holds of a scrape (or give the last one after a minute, for the
    caller's assertion to fail on)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            scraped = await asyncio.to_thread(scrape, port)
        except OSError:  # not listening yet
            scraped = {}
        if done(scraped) or time.monotonic() > deadline:
            return scraped
        await asyncio.sleep(0.1)


def get(scraped: Scrape, name: str, **labels: str) -> float | None:
    return scraped.get((f"meshconnect_{name}", frozenset(labels.items())))


def source(scraped: Scrape, name: str) -> float | None:
    return get(scraped, name, pipeline="orders", connector="file", kind="source")


def sink(scraped: Scrape, name: str) -> float | None:
    return get(scraped, name, pipeline="orders", connector="http", kind="sink")


def consumer_lag(scraped: Scrape) -> float | None:
    return get(scraped, "consumer_lag_records", topic="orders", group="orders/http")


def source_lag(scraped: Scrape) -> float | None:
    return get(scraped, "source_lag_seconds", pipeline="orders", connector="file")


async def test_scraped_counters_move_and_the_lag_falls_to_zero_when_idle(tmp_path: Path) -> None:
    gate = asyncio.Event()
    received: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        await gate.wait()
        received.append(request.headers["ce-id"])
        return web.Response(status=204)

    receiver_port, metrics_port = free_port(), free_port()
    app = web.Application()
    app.router.add_post("/in", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver_port).start()
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(20)))
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        f"""
pipelines:
  - name: orders
    source:
      connector: file
      config: {{path: in.jsonl, follow: true, poll_interval: 100ms}}
    sinks:
      - connector: http
        config: {{url: "http://127.0.0.1:{receiver_port}/in", timeout: 300s}}
"""
    )
    log = tmp_path / "worker.log"
    command = meshconnect(
        tmp_path / "state", "run", str(pipeline), "--metrics", f"127.0.0.1:{metrics_port}"
    )
    proc = start_worker(command, log)
    try:
        # Stored, and held at the receiver: the whole topic is the sink's lag.
        held = await scrape_until(
            metrics_port,
            lambda s: source(s, "records_out_total") == 20 and consumer_lag(s) == 20,
            log,
        )
        assert source(held, "records_in_total") == 20, log.read_text()[-3000:]
        assert source(held, "records_out_total") == 20
        assert consumer_lag(held) == 20
        assert sink(held, "records_out_total") == 0
        assert received == []

        gate.set()
        idle = await scrape_until(
            metrics_port, lambda s: consumer_lag(s) == 0 and sink(s, "records_out_total") == 20, log
        )
        assert sink(idle, "records_in_total") == 20, log.read_text()[-3000:]
        assert sink(idle, "records_out_total") == 20
        assert consumer_lag(idle) == 0
        assert source_lag(idle) == 0  # the following source polls and finds nothing new
        assert (sink(idle, "batch_seconds_count") or 0) >= 1
        assert (get(idle, "store_bytes") or 0) > 0

        with data.open("a") as f:  # more records: the counters move on
            f.write("".join(json.dumps({"n": i}) + "\n" for i in range(20, 30)))
        moved = await scrape_until(
            metrics_port,
            lambda s: (
                sink(s, "records_out_total") == 30 and consumer_lag(s) == 0 and source_lag(s) == 0
            ),
            log,
        )
        assert source(moved, "records_in_total") == 30, log.read_text()[-3000:]
        assert sink(moved, "records_out_total") == 30
        assert consumer_lag(moved) == 0
        assert source_lag(moved) == 0
        assert len(received) == 30
    finally:
        gate.set()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
        await runner.cleanup()
    assert code == 0, log.read_text()[-3000:]
