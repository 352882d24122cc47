"""Benchmark: a worker whose s3 sink keeps one object open for the whole run, against the same
run without it, both measured here on a private moto server (real HTTP).

    python integration/bench/s3_open_object.py             # 1,000,000 records, 3 rounds
    python integration/bench/s3_open_object.py --smoke     # tiny N, for CI

``meshconnect run`` of **file source → s3 sink** (``key_template: "{data.k}/"``,
``rotate_records: 20000``) in a fresh process, twice per round, interleaved:

* **one key**: every record has ``k: common``: objects rotate every 20,000 records;
* **rare key**: the same file with the first record's ``k: rare``, a key that never comes
  again: its object stays open until the run ends while the others rotate and upload, so the
  sink and the sink loop must remember which records are still pending since that first one.

Printed: seconds and peak RSS of each (medians), and the rare run's ratio to the other's. The
rare key should cost nothing: what is remembered is per batch, not per record. Measured, never
asserted.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from s3_support import MotoServer, connection


def write_input(path: Path, n: int, first: str) -> None:
    with path.open("w") as f:
        f.write(json.dumps({"n": 0, "k": first}) + "\n")
        for i in range(1, n):
            f.write(json.dumps({"n": i, "k": "common"}) + "\n")


def pipeline(path: Path, source: Path, sink: dict[str, object]) -> None:
    path.write_text(
        json.dumps(
            {
                "pipelines": [
                    {
                        "name": "bench",
                        "source": {
                            "connector": "file",
                            "config": {"path": str(source), "format": "json", "follow": False},
                        },
                        "topic": "bench",
                        "sinks": [{"name": "s3", "connector": "s3", "config": sink}],
                    }
                ]
            }
        )
    )


def run_once(config: Path, state: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one ``meshconnect run`` to its end."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshconnect", "--state", str(state), "run", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"meshconnect run failed ({proc.returncode}): {err[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = parser.parse_args()
    n = 5_000 if args.smoke else args.records
    rounds = 1 if args.smoke else args.rounds
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(f"{n:,} records, {rounds} round(s)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "moto").mkdir()
        server = MotoServer(work / "moto")
        try:
            configs = {}
            for name, first in (("one key", "common"), ("rare key", "rare")):
                source = work / f"{first}.jsonl"
                write_input(source, n, first)
                sink = {
                    **connection(server, server.bucket()),
                    "key_template": "{data.k}/",
                    "rotate_records": 20_000,
                }
                configs[name] = work / f"{first}.json"
                pipeline(configs[name], source, sink)
            seconds: dict[str, list[float]] = {name: [] for name in configs}
            rss: dict[str, list[float]] = {name: [] for name in configs}
            for round_ in range(rounds):
                for name, config in configs.items():
                    took, peak = run_once(config, work / f"state-{round_}-{name}")
                    seconds[name].append(took)
                    rss[name].append(peak)
        finally:
            server.stop()
    for name in configs:
        print(
            f"{name:9s} {statistics.median(seconds[name]):6.2f} s "
            f"({n / statistics.median(seconds[name]):,.0f} records/s, runs: "
            + ", ".join(f"{s:.2f}" for s in seconds[name])
            + f")  peak RSS {statistics.median(rss[name]):.1f} MB (runs: "
            + ", ".join(f"{m:.1f}" for m in rss[name])
            + ")"
        )
    ratio = statistics.median(seconds["rare key"]) / statistics.median(seconds["one key"])
    memory = statistics.median(rss["rare key"]) / statistics.median(rss["one key"])
    print(f"rare key / one key: {ratio:.2f}x the time, {memory:.2f}x the peak RSS")
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
