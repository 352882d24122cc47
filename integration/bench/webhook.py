"""Benchmark: the webhook source (structured CloudEvents, 2xx after the durable append to the
embedded SQLite mesh store) against a bare aiohttp handler that parses the body and answers
202 without storing, both in processes of their own, measured in the same run.

    python integration/bench/webhook.py                  # 4,000 requests per run, 3 rounds
    python integration/bench/webhook.py --requests 10000 --repeat 5
    python integration/bench/webhook.py --smoke          # tiny N, for CI

The load generator is an aiohttp client in this process (one session, keep-alive), with 1
and with 64 concurrent clients; each client sends its next request when the previous one is
answered. Runs are interleaved (bare, webhook, bare, webhook...) and medians shown: requests
per second, p50 and p99 latency, the server's CPU time per request, and the throughput
relative to the bare handler.
Target (issue 14): >= 0.5x the bare handler's throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

BARE = """
import sys
from aiohttp import web
import json

async def handle(request):
    json.loads(await request.read())
    return web.Response(status=202)

app = web.Application()
app.router.add_post("/events", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

#: The servers measured, in this order in each round.
KINDS = ("bare", "webhook")
PIPELINE = """
pipelines:
  - name: bench
    source:
      connector: webhook
      config: {{listen: "127.0.0.1:{port}", path: /events, idempotency_window: 5m}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def body(i: int) -> bytes:
    """A structured CloudEvent of about 400 bytes, unique id."""
    data = (
        f'{{"order":{i},"total":1234.56,"items":[{{"sku":"A-1","qty":2}},{{"sku":"B-7","qty":1}}],'
        f'"customer":{{"id":{i % 1000},"email":"user{i}@example.com"}}}}'
    )
    return (
        f'{{"specversion":"1.0","id":"bench-{i}","source":"/bench","type":"com.example.order",'
        f'"time":"2026-11-29T10:00:00Z","datacontenttype":"application/json",'
        f'"partitionkey":"c{i % 97}","data":{data}}}'
    ).encode()


async def load(url: str, requests: int, clients: int, first: int) -> tuple[float, list[float]]:
    """``requests`` POSTs from ``clients`` concurrent clients; (seconds, latencies)."""
    latencies: list[float] = []
    counter = iter(range(first, first + requests))
    headers = {"Content-Type": "application/cloudevents+json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def client() -> None:
            for i in counter:
                start = time.perf_counter()
                async with session.post(url, data=body(i), headers=headers) as response:
                    await response.read()
                    assert response.status == 202, response.status
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - began, latencies


async def wait_listening(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            try:
                async with session.get(url) as response:
                    await response.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    raise SystemExit(f"nothing listens at {url}")


def start(kind: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    if kind == "bare":
        command = [sys.executable, "-c", BARE, str(port)]
    else:
        (workdir / "bench.yaml").write_text(PIPELINE.format(port=port))
        command = [sys.executable, "-m", "meshconnect", "--state", str(workdir / "state"),
                   "run", str(workdir / "bench.yaml")]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}/events"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), 0.0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny N, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.repeat = 200, 1
    print(f"load: {os.getloadavg()[0]:.2f} (1-minute average), {os.cpu_count()} CPUs")
    results: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="bench-webhook-"))
    first = 0
    try:
        servers = {kind: start(kind, workdir) for kind in KINDS}
        for proc, url in servers.values():
            asyncio.run(wait_listening(url, proc))
        for _ in range(args.repeat):
            for clients in (1, 64):
                for kind in KINDS:
                    proc, url = servers[kind]
                    asyncio.run(load(url, min(200, args.requests), clients, first))  # warm-up
                    first += args.requests
                    cpu = cpu_seconds(proc.pid)
                    seconds, lat = asyncio.run(load(url, args.requests, clients, first))
                    cpu = cpu_seconds(proc.pid) - cpu
                    first += args.requests
                    results.setdefault((kind, clients), []).append(
                        (
                            args.requests / seconds,
                            percentile(lat, 0.5),
                            percentile(lat, 0.99),
                            cpu / args.requests,
                        )
                    )
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{args.requests} requests per run, medians of {args.repeat} interleaved runs")
    print("vs bare: throughput relative to the bare handler")
    print("cpu us/req: the server process's CPU time per request (user + system)")
    print(
        f"{'server':<9} {'clients':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'cpu us/req':>10} {'vs bare':>8}"
    )
    for clients in (1, 64):
        bare_rate = statistics.median(r[0] for r in results[("bare", clients)])
        for kind in KINDS:
            runs = results[(kind, clients)]
            rate = statistics.median(r[0] for r in runs)
            p50 = statistics.median(r[1] for r in runs) * 1000
            p99 = statistics.median(r[2] for r in runs) * 1000
            cpu_us = statistics.median(r[3] for r in runs) * 1e6
            print(
                f"{kind:<9} {clients:>7} {rate:>8.0f} {p50:>7.2f} {p99:>7.2f} {cpu_us:>10.0f} "
                f"{rate / bare_rate:>7.2f}x"
            )


if __name__ == "__main__":
    main()
