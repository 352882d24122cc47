"""Benchmark: one worker's throughput on each mesh store backend, against SQLite in the same run.

    python integration/bench/stores.py                   # 200,000 records, 3 rounds
    python integration/bench/stores.py --records 500000 --repeat 5
    python integration/bench/stores.py --smoke           # tiny N, for CI

The same bounded pipeline (``file`` source, JSON lines -> topic -> ``file`` sink) runs with
``meshconnect run`` in a fresh process on ``sqlite`` (the embedded default, the baseline),
``redis`` (a private redis-server with ``appendonly yes`` and ``appendfsync always``, the
setting docs/stores.md asks for) and ``nats`` (a private ``nats-server -js``), interleaved
round by round on a fresh mesh each time; the medians are printed with records/s and the
ratio to SQLite. The whole run is timed: start-up, the source, the store's append and the
sink's reads, commits and writes. The output file is checked every time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This file's own directory first on sys.path would shadow packages by the names here.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from nats_support import private_nats  # noqa: E402
from redis_support import private_redis  # noqa: E402

PIPELINE = """
pipelines:
  - name: orders
    source:
      connector: file
      config: {path: in.jsonl, format: json, follow: false, batch_size: 1000}
    topic: orders
    sinks:
      - name: out
        connector: file
        batch_size: 1000
        config: {path: out.jsonl, format: json}
"""


def write_input(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "customer": f"c{i % 997}", "total": i % 300,
                                "email": f"u{i}@example.com"}) + "\n")  # fmt: skip


def run(folder: Path, store_url: str, n: int) -> float:
    """One bounded run in a fresh process; its wall time in seconds."""
    state = folder / "state"
    out = folder / "out.jsonl"
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "meshconnect", "--state", str(state), "--store", store_url]
    command += ["run", str(folder / "pipeline.yaml")]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{store_url}: exit {done.returncode}\n{done.stderr[-3000:]}")
    with out.open("rb") as f:
        count = sum(1 for _ in f)
    if count != n:
        raise SystemExit(f"{store_url}: {count} output lines, expected {n}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.records, args.repeat = 2_000, 1
    times: dict[str, list[float]] = {"sqlite": [], "redis": [], "nats": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        folder = base / "run"
        folder.mkdir()
        (folder / "pipeline.yaml").write_text(PIPELINE)
        write_input(folder / "in.jsonl", args.records)
        with private_redis(base / "redis") as redis, private_nats(base / "nats") as nats:
            for _ in range(args.repeat):
                for name in times:
                    fresh = uuid.uuid4().hex[:10]
                    url = {
                        "sqlite": f"sqlite:///{base / fresh / 'mesh.db'}",
                        "redis": f"{redis.url}?prefix=b{fresh}",
                        "nats": f"{nats.url}?prefix=b{fresh}",
                    }[name]
                    times[name].append(run(folder, url, args.records))
    load = os.getloadavg()
    print(f"mesh stores, one worker: {args.records:,} records file -> topic -> file, "
          f"{args.repeat} rounds interleaved; load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}")  # fmt: skip
    baseline = statistics.median(times["sqlite"])
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"  {name:7} {args.records / t:>10,.0f} records/s  (median {t:.2f} s)  "
              f"ratio to sqlite {baseline / t:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
