"""Benchmark: N JSON records through file -> filter -> mask -> insert_field -> sqlite mesh store
-> file sink, against bare Python loops doing the same parse/filter/mask/insert/write with no
store in between, all measured in this run.

    python integration/bench/file_pipeline.py            # 1,000,000 records
    python integration/bench/file_pipeline.py --records 200000
    python integration/bench/file_pipeline.py --smoke    # tiny N, for CI
    python integration/bench/file_pipeline.py --baseline /path/to/other/venv/bin/python

``--baseline`` adds another meshconnect (another checkout's virtualenv: e.g. the main branch
before a change) as one more contender, interleaved with the others, and checks that its
output is byte-identical too.

Each contender runs in a fresh subprocess, so peak RSS (ru_maxrss of that child) is its own.
Prints records/s, the ratio to each baseline and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

PIPELINE = """
pipelines:
  - name: orders
    source:
      connector: file
      config: {path: in.jsonl, format: json, follow: false}
    transforms:
      - type: filter
        where: "data.total >= 10"
      - type: mask
        fields: [data.email]
      - type: insert_field
        field: data.region
        value: eu
        when: "data.country == 'DE'"
    topic: orders
    sinks:
      - name: out
        connector: file
        config: {path: out.jsonl, format: json}
"""

BARE_STDLIB = """
import json, sys
src, dst = sys.argv[1], sys.argv[2]
with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
    for line in f:
        data = json.loads(line)
        if not data["total"] >= 10:
            continue
        if "email" in data:
            data["email"] = "****"
        if data["country"] == "DE":
            data["region"] = "eu"
        out.write(json.dumps(data, separators=(",", ":")) + "\\n")
"""

BARE_ORJSON = """
import orjson, sys
src, dst = sys.argv[1], sys.argv[2]
with open(src, "rb") as f, open(dst, "wb") as out:
    for line in f:
        data = orjson.loads(line)
        if not data["total"] >= 10:
            continue
        if "email" in data:
            data["email"] = "****"
        if data["country"] == "DE":
            data["region"] = "eu"
        out.write(orjson.dumps(data) + b"\\n")
"""


def make_input(path: Path, n: int) -> None:
    rng = random.Random(1)
    countries = ["DE", "FR", "NL", "US", "GB", "IT"]
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            record = {
                "id": i,
                "customer": f"customer{i % 1000}",
                "email": f"customer{i % 1000}@example.com",
                "country": countries[i % 6],
                "total": round(rng.uniform(1, 250), 2),
                "items": i % 7,
            }
            f.write(json.dumps(record) + "\n")


def timed_child(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Run a child; its wall seconds and peak RSS in MB."""
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.chdir(cwd)
        os.execv(argv[0], argv)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark child failed: {' '.join(argv)}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians shown")
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument(
        "--baseline",
        metavar="PYTHON",
        help="also run meshconnect with this interpreter (another checkout's venv)",
    )
    args = parser.parse_args()
    n = 5_000 if args.smoke else args.records
    repeat = 1 if args.smoke else args.repeat
    with tempfile.TemporaryDirectory(prefix="mc-bench-") as tmp:
        work = Path(tmp)
        make_input(work / "in.jsonl", n)
        (work / "pipeline.yaml").write_text(PIPELINE)
        (work / "bare_stdlib.py").write_text(BARE_STDLIB)
        (work / "bare_orjson.py").write_text(BARE_ORJSON)
        contenders = {
            "bare loop, json (stdlib)": [
                sys.executable,
                "bare_stdlib.py",
                "in.jsonl",
                "bare1.jsonl",
            ],
            "bare loop, orjson": [sys.executable, "bare_orjson.py", "in.jsonl", "bare2.jsonl"],
            "meshconnect": [
                sys.executable,
                "-m",
                "meshconnect",
                "--log-level",
                "warning",
                "--state",
                "state",
                "run",
                "pipeline.yaml",
            ],
        }
        if args.baseline:
            contenders["meshconnect (baseline)"] = [
                args.baseline,
                "-m",
                "meshconnect",
                "--log-level",
                "warning",
                "--state",
                "state-baseline",
                "run",
                "baseline.yaml",
            ]
            (work / "baseline.yaml").write_text(PIPELINE.replace("out.jsonl", "out-baseline.jsonl"))
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
        for _ in range(repeat):  # interleaved, so a noisy neighbour hits every contender
            for name, argv in contenders.items():
                if name.startswith("meshconnect"):
                    state = "state" if name == "meshconnect" else "state-baseline"
                    out = "out.jsonl" if name == "meshconnect" else "out-baseline.jsonl"
                    shutil.rmtree(work / state, ignore_errors=True)
                    (work / out).unlink(missing_ok=True)
                runs[name].append(timed_child(argv, work))
        results = {
            name: (statistics.median(s for s, _ in r), max(m for _, m in r))
            for name, r in runs.items()
        }
        expected = (work / "bare2.jsonl").read_bytes()
        got = (work / "out.jsonl").read_bytes()
        if got != expected:
            raise SystemExit("meshconnect output differs from the bare loop's output")
        if args.baseline and (work / "out-baseline.jsonl").read_bytes() != expected:
            raise SystemExit("the baseline's output differs from the bare loop's output")
        mesh_s = results["meshconnect"][0]
        print(
            f"records: {n:,}, median of {repeat} interleaved runs each "
            f"(python {sys.version.split()[0]}, {os.cpu_count()} cpus)"
        )
        print(
            f"{'contender':28} {'seconds':>8} {'records/s':>12} {'peak RSS MB':>12} "
            f"{'meshconnect ratio':>18}"
        )
        for name, (seconds, rss) in results.items():
            ratio = seconds / mesh_s
            print(f"{name:28} {seconds:8.2f} {n / seconds:12,.0f} {rss:12.1f} {ratio:18.2f}")
        print(
            "ratio = baseline seconds / meshconnect seconds "
            "(meshconnect throughput relative to that baseline)"
        )
        for name, r in runs.items():
            print(f"  {name}: " + ", ".join(f"{s:.2f}" for s, _ in r) + " s")


if __name__ == "__main__":
    main()
