"""Benchmark: sink throughput of clustered workers (docs/scaleout.md).

    python integration/bench/scaleout.py                 # 30,000 records x 4 sinks, 3 rounds
    python integration/bench/scaleout.py --records 100000 --repeat 5
    python integration/bench/scaleout.py --smoke         # tiny N, for CI

One sink-only pipeline with four sinks (four consumer groups: four units a cluster can spread)
reads the topic ``bench``, each through the same CPU-heavy sink-side transform chain (30 steps:
templates, expressions, flatten/unflatten, casts, masks), into a JSON-lines file. Per
backend (a private ``redis-server`` with ``appendfsync always``, a private ``nats-server -js``):

* ``1 worker`` and ``2 workers``: the records are appended to the topic from this process,
  then ``meshconnect run --cluster`` processes are started. Once every sink has an owner and
  each worker its share (the cluster settled), the groups' committed offsets are sampled until
  every group committed all records: throughput = records committed by all sinks since the
  cluster settled / the time since. The scaling factor is 2 workers over 1.
* ``sqlite``: the same pipeline in one plain worker on the embedded store, the baseline of
  the single-worker figures.

Rounds are interleaved; medians are printed with the load average (this machine is shared: read
the figures with it). Each output file is checked for every record.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# This file's own directory first on sys.path would shadow packages by the names here.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from nats_support import private_nats  # noqa: E402
from redis_support import private_redis  # noqa: E402

SINKS = 4
#: --smoke: the figures of a few records are not checked for a settled cluster (see watch).
SMOKE = False
STEPS: list[dict[str, Any]] = [
    {"type": "insert_field", "field": "data.label", "template": "{data.customer}/{data.id}"},
    {"type": "insert_field", "field": "data.big", "value": True, "when": "data.total >= 150"},
    {"type": "template", "template": {
        "id": "{data.id}", "customer": "{data.customer}", "total": "{data.total * 3 + 1}",
        "label": "{data.label} of {source}", "email": "{data.email}",
        "nested": {"a": "{data.customer}", "b": {"c": "{data.id}"}}}},
    {"type": "flatten", "separator": "__"},
    {"type": "unflatten", "separator": "__"},
    {"type": "cast", "fields": {"data.id": "int", "data.total": "int"}},
    {"type": "insert_field", "field": "data.tier", "template": "{data.total % 7}-{data.id % 13}"},
    {"type": "mask", "fields": ["data.email"]},
    {"type": "filter", "where": "data.total >= 0 and data.customer != 'nobody'"},
    {"type": "drop_fields", "fields": ["data.nested.b"]},
]  # fmt: skip
CHAIN = STEPS * 3


def config(store: str, out: Path, cluster: str | None) -> str:
    sinks = [
        {
            "name": f"s{i}",
            "connector": "file",
            "topics": ["bench"],
            "batch_size": 500,
            "transforms": CHAIN,
            "config": {"path": str(out / f"s{i}.jsonl"), "format": "json"},
        }
        for i in range(SINKS)
    ]
    doc: dict[str, Any] = {"store": store, "pipelines": [{"name": "bench", "sinks": sinks}]}
    if cluster is not None:
        doc["cluster"] = cluster
    return json.dumps(doc)


def records(n: int) -> list[Any]:
    from meshconnect.records import Record

    return [
        Record(
            id=str(i),
            source="bench",
            type="order",
            data={
                "id": i,
                "customer": f"c{i % 997}",
                "total": i % 300,
                "email": f"u{i}@example.com",
            },
            topic="bench",
        )
        for i in range(n)
    ]


async def fill(url: str, batch: list[Any]) -> None:
    """Append ``batch`` to the topic ``bench``."""
    from meshconnect.mesh import open_store
    from meshconnect.plugins import PluginPolicy, load_registry

    store = open_store(url, load_registry(PluginPolicy.read(None)))
    await store.open()
    try:
        for i in range(0, len(batch), 1000):
            await store.append(batch[i : i + 1000])
    finally:
        await store.close()


async def watch(
    url: str, workers: int, n: int, procs: list[Any], engine: int | None, timeout: float
) -> tuple[float, float, float, float]:
    """Sample the groups' committed offsets and the sinks' owners every 50 ms until every
    group committed ``n``. From the moment every sink had an owner and each worker its share
    (the cluster settled) to the end: the sink throughput (records/s, all sinks), the workers'
    and the engine's CPU time per record and sink (µs), and the cores the workers got."""
    from meshconnect.mesh import open_store
    from meshconnect.plugins import PluginPolicy, load_registry

    store = open_store(url, load_registry(PluginPolicy.read(None)))
    await store.open()
    try:
        settled: tuple[float, int, float, float] | None = None
        first: tuple[float, int, float, float] | None = None

        def cpu() -> tuple[float, float]:
            used = sum(cpu_seconds(p.pid) for p in procs)
            return used, cpu_seconds(engine) if engine is not None else 0.0

        deadline = time.monotonic() + timeout
        while True:
            now = time.perf_counter()
            done = 0
            for i in range(SINKS):
                info = await store.group(f"bench/s{i}")
                done += min(n, info.offsets.get("bench", 0))
            if first is None:
                first = (now, done, *cpu())
            if settled is None:
                try:
                    held = [
                        lease.owner.split(":")[0]
                        for lease in await store.leases()
                        if lease.name.startswith("group ") and lease.expires > time.time()
                    ]
                except NotImplementedError:  # sqlite: one worker, once its sinks started
                    held = ["w0"] * SINKS
                per = [held.count(f"w{w}") for w in range(workers)]
                if len(held) == SINKS and max(per) - min(per) <= 1:
                    settled = (now, done, *cpu())
            if done >= n * SINKS:
                assert settled is not None
                if now <= settled[0] or done - settled[1] < n:
                    if not SMOKE:
                        raise SystemExit(f"{url}: too little work after the cluster settled")
                    # A smoke run's few records can all be delivered before the poll sees the
                    # cluster settled (a round is a second): it checks the bench runs, so its
                    # figures are taken from the first sample instead.
                    print(f"{url}: smoke: too little work after the cluster settled; "
                          "measured from the start", file=sys.stderr)  # fmt: skip
                    settled = first
                used, engine_used = cpu()
                count, seconds = max(done - settled[1], 1), max(now - settled[0], 1e-9)
                return (
                    count / seconds,
                    (used - settled[2]) * 1e6 / count,
                    (engine_used - settled[3]) * 1e6 / count,
                    (used - settled[2]) / seconds,
                )
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"{url}: not delivered ({done} of {n * SINKS})")
            await asyncio.sleep(0.05)
    finally:
        await store.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    base: Path, url: str, workers: int, n: int, cluster: bool, engine: int | None
) -> tuple[float, float, float]:
    """One round: fill the topic, start the workers, take the throughput once settled.
    Returns what :func:`watch` measures."""
    run = base / uuid.uuid4().hex[:8]
    out = run / "out"
    out.mkdir(parents=True)
    name = f"bench{uuid.uuid4().hex[:6]}" if cluster else None
    (run / "p.yaml").write_text(config(url, out, name))
    asyncio.run(fill(url, records(n)))
    procs = []
    logs = []
    for w in range(workers):
        log = (run / f"w{w}.log").open("wb")
        logs.append(log)
        env = {**os.environ, "MESHCONNECT_WORKER_NAME": f"w{w}"}
        command = [sys.executable, "-m", "meshconnect", "--state", str(run / f"state{w}")]
        procs.append(
            subprocess.Popen(
                [*command, "run", str(run / "p.yaml")], stdout=log, stderr=log, env=env
            )
        )
    try:
        measured = asyncio.run(watch(url, workers, n, procs, engine, timeout=600))
    except SystemExit as exc:
        tail = (run / "w0.log").read_text()[-2000:]
        raise SystemExit(f"{exc}\n{tail}") from None
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
        for log in logs:
            log.close()
    for i in range(SINKS):
        with (out / f"s{i}.jsonl").open("rb") as f:
            count = sum(1 for _ in f)
        if count != n:
            raise SystemExit(f"{url}: sink s{i} wrote {count} records, expected {n}")
    return measured


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    global SMOKE
    SMOKE = args.smoke
    if args.smoke:
        args.records, args.repeat = 5_000, 1
    cases = [("sqlite", 1), ("redis", 1), ("redis", 2), ("nats", 1), ("nats", 2)]
    rates: dict[tuple[str, int], list[float]] = {case: [] for case in cases}
    costs: dict[tuple[str, int], list[tuple[float, float, float]]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        with private_redis(base / "redis") as redis, private_nats(base / "nats") as nats:
            for _ in range(args.repeat):
                for backend, workers in cases:
                    fresh = uuid.uuid4().hex[:10]
                    url = {
                        "sqlite": f"sqlite:///{base / fresh / 'mesh.db'}",
                        "redis": f"{redis.url}?prefix=b{fresh}",
                        "nats": f"{nats.url}?prefix=b{fresh}",
                    }[backend]
                    if backend == "sqlite":
                        (base / fresh).mkdir()
                    assert redis.process is not None and nats.process is not None
                    pid = {"redis": redis.process.pid, "nats": nats.process.pid}.get(backend)
                    r, w, e, c = measure(base, url, workers, args.records, backend != "sqlite", pid)
                    rates[(backend, workers)].append(r)
                    costs[(backend, workers)].append((w, e, c))
    load = os.getloadavg()
    print(f"scale-out: {args.records:,} records x {SINKS} sinks, a {len(CHAIN)}-step sink-side "
          f"chain each; {args.repeat} rounds interleaved; {os.cpu_count()} CPUs, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    rate = {case: statistics.median(rs) for case, rs in rates.items()}
    for (backend, workers), r in rate.items():
        label = f"{backend}, {workers} worker{'s' if workers > 1 else ''}"
        ratio = f"  ratio to sqlite {r / rate[('sqlite', 1)]:.2f}" if workers == 1 else ""
        spread = ", ".join(f"{x:,.0f}" for x in rates[(backend, workers)])
        w = statistics.median(c[0] for c in costs[(backend, workers)])
        e = statistics.median(c[1] for c in costs[(backend, workers)])
        print(f"  {label:18} {r:>9,.0f} records/s (rounds: {spread}){ratio}")
        cores = statistics.median(c[2] for c in costs[(backend, workers)])
        print(f"  {'':18} CPU per record and sink: workers {w:.1f} µs, engine {e:.1f} µs; "
              f"the workers got {cores:.2f} cores")  # fmt: skip
    for backend in ("redis", "nats"):
        wall = rate[(backend, 2)] / rate[(backend, 1)]
        one, two = (statistics.median(c[0] for c in costs[(backend, k)]) for k in (1, 2))
        engine = statistics.median(c[1] for c in costs[(backend, 2)])
        # Unloaded, one worker has a core; two share both with the engine.
        model = 2 * one / (two + engine)
        print(f"  {backend}: 2 workers / 1 worker = {wall:.2f}x measured; CPU per record "
              f"{two / one:.2f}x one worker's: {model:.2f}x on 2 idle cores")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
