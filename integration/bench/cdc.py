"""Benchmark: reading a MySQL/MariaDB binlog: a bare pymysqlreplication loop, meshconnect's
FastReader alone, and the full meshconnect pipeline (canal source -> sqlite mesh store -> file
sink), all in one run over the same binlog.

    python integration/bench/cdc.py                    # 200,000 rows per workload
    python integration/bench/cdc.py --rows 50000 --repeat 3
    python integration/bench/cdc.py --smoke            # tiny N, for CI
    python integration/bench/cdc.py --profile prof/    # + py-spy profiles of the pipeline

A private MariaDB (integration/mariadb.py) gets one binlog with two workloads on a 6-column
table (INT key, VARCHAR, INT, DECIMAL(10,2), DATETIME(3), ENUM):
(a) N single-row INSERT transactions; (b) N rows in 1,000-row INSERT statements.
Each contender reads each workload's binlog range in a fresh subprocess:

* ``bare loop``: ``BinLogStreamReader(..., resume_stream=True, blocking=False,
  only_events=[Write/Update/DeleteRowsEvent, XidEvent])``, ``for event in stream: for row in
  event.rows: row["values"]`` until the range's end (seen on the last XID): the loop a user
  writes to get every row's values with the library;
* ``FastReader``: ``read(5000, 1.0)`` in a loop over the range, every row decoded;
* ``pipeline``: ``python -m meshconnect run`` of a canal source (decoder auto = fast, format
  canal) into a file sink through the default sqlite store, its stored position first set to
  the range's start with ``meshconnect offsets reset``; the time is from starting the process
  until the sink file holds all N records (then the worker is stopped). It runs twice: with
  the source's defaults, and with a small ``batch_events`` (``--small-batches``), since a
  batch of 5,000 bulk rows events holds hundreds of thousands of rows.

Reader times are measured inside the child from the first connect to the last row; the
pipeline's include the process start, with meshconnect's bytecode written first (as a wheel
install has it; this machine sets ``PYTHONDONTWRITEBYTECODE``, see ``peers.precompile``).
Prints rows/s and the ratio to the bare loop, and each contender's CPU seconds (user + system
of its process, start-up included: on a shared machine the figure the load moves least).
``--meshconnect PYTHON`` adds another checkout's pipeline (its virtualenv's interpreter) as
one more contender, interleaved with the others.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mariadb import MariaDB, private_mariadb  # noqa: E402
from peers import precompile  # noqa: E402

TABLE = (
    "CREATE TABLE {name} (id INT PRIMARY KEY, customer VARCHAR(40) NOT NULL, qty INT NOT NULL,"
    " price DECIMAL(10,2) NOT NULL, created DATETIME(3) NOT NULL,"
    " status ENUM('new','paid','shipped') NOT NULL)"
)

BARE = """
import json, sys, time
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent
args = json.loads(sys.argv[1])
started = time.perf_counter()
stream = BinLogStreamReader(
    connection_settings=args["connect"], server_id=201, log_file=args["file"],
    log_pos=args["pos"], resume_stream=True, blocking=False,
    only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent],
)
rows = 0
end = (args["end_file"], args["end_pos"])
for event in stream:
    if not isinstance(event, XidEvent):
        for row in event.rows:
            row["values"]
            rows += 1
    if (stream.log_file, event.packet.log_pos) >= end:
        break
stream.close()
print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))
"""

FAST = """
import json, sys, time
from meshconnect.connectors.canal.events import RowsEvent
from meshconnect.connectors.canal.fastbinlog import FastReader
args = json.loads(sys.argv[1])
started = time.perf_counter()
reader = FastReader(args["connect"], server_id=202, log_file=args["file"], log_pos=args["pos"])
rows = 0
end = (args["end_file"], args["end_pos"])
done = False
while not done:
    for event in reader.read(5000, 1.0):
        if isinstance(event, RowsEvent):
            rows += len(event.rows)
        if (event.log_file, event.log_pos) >= end:
            done = True
            break
reader.close()
print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))
"""


def build_binlog(server: MariaDB, n: int) -> dict[str, tuple[tuple[str, int], tuple[str, int]]]:
    """Write both workloads; their (start, end) binlog coordinates."""
    import pymysql
    from pymysql.constants import CLIENT

    server.execute("CREATE DATABASE bench CHARACTER SET utf8mb4")
    conn = pymysql.connect(**server.connect_args("bench"), client_flag=CLIENT.MULTI_STATEMENTS)
    ranges = {}
    try:
        with conn.cursor() as cur:
            for name in ("single", "bulk"):
                cur.execute(TABLE.format(name=name))
            statuses = ("new", "paid", "shipped")

            def values(i: int) -> str:
                return (
                    f"({i}, 'customer{i % 1000}', {i % 97}, {i % 100000}.{i % 100:02d},"
                    f" '2024-05-06 07:08:09.{i % 1000:03d}', '{statuses[i % 3]}')"
                )

            def where() -> tuple[str, int]:
                cur.execute("SHOW MASTER STATUS")
                row = cur.fetchone()
                return str(row[0]), int(row[1])

            start = where()
            step = 500
            for base in range(0, n, step):
                cur.execute(
                    ";".join(
                        f"INSERT INTO single VALUES {values(i)}"
                        for i in range(base, min(n, base + step))
                    )
                )
                while cur.nextset():
                    pass
            ranges["single-row transactions"] = (start, where())
            start = where()
            for base in range(0, n, 1000):
                rows = ",".join(values(i) for i in range(base, min(n, base + 1000)))
                cur.execute(f"INSERT INTO bulk VALUES {rows}")
            ranges["1,000-row statements"] = (start, where())
    finally:
        conn.close()
    return ranges


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_reader(script: str, args: dict[str, Any], n: int) -> tuple[float, float]:
    """The reader's seconds (measured inside it) and its process's CPU seconds."""
    cpu = _children_cpu()
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(args)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"reader failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rows"] != n:
        raise SystemExit(f"reader saw {result['rows']} rows, expected {n}: {script[-300:]} {args}")
    return float(result["seconds"]), _children_cpu() - cpu


def pipeline_yaml(server: MariaDB, table: str, out: Path, **extra: Any) -> str:
    source: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "server_id": 203,
        "include": [f"bench\\.{table}"],
        "snapshot": "initial",
        "format": "canal",
        **extra,
    }
    return json.dumps(
        {
            "pipelines": [
                {
                    "name": "cdc",
                    "source": {"connector": "canal", "config": source},
                    "topic": "cdc",
                    "sinks": [
                        {
                            "name": "out",
                            "connector": "file",
                            "config": {"path": str(out), "format": "json"},
                        }
                    ],
                }
            ]
        }
    )


def count_lines(path: Path, state: list[int]) -> int:
    """Newlines in ``path``, reading only what was appended since the last call."""
    if not path.exists():
        return 0
    with path.open("rb") as f:
        f.seek(state[0])
        chunk = f.read()
    state[0] += len(chunk)
    state[1] += chunk.count(b"\n")
    return state[1]


def run_pipeline(
    server: MariaDB,
    work: Path,
    table: str,
    span: tuple[tuple[str, int], tuple[str, int]],
    n: int,
    profile: Path | None = None,
    python: str = sys.executable,
    **extra: Any,
) -> tuple[float, float]:
    """The pipeline's seconds until the sink holds all rows, and its CPU seconds."""
    state_dir, out = work / f"state-{table}", work / f"out-{table}.jsonl"
    for path in (out,):
        path.unlink(missing_ok=True)
    subprocess.run(["rm", "-rf", str(state_dir)], check=True)
    config = work / f"pipeline-{table}.yaml"
    config.write_text(pipeline_yaml(server, table, out, **extra))
    mesh = [
        python,
        "-m",
        "meshconnect",
        "--log-level",
        "warning",
        "--state",
        str(state_dir),
    ]
    (file, pos), _ = span
    position = {"binlog": {"file": file, "pos": pos, "events": 0, "rows": 0, "gtids": ""}}
    reset = subprocess.run(
        [*mesh, "offsets", "reset", str(config), "cdc", "--to", json.dumps(position), "--yes"],
        capture_output=True,
        text=True,
        check=False,
    )
    if reset.returncode != 0:
        raise SystemExit(f"offsets reset failed:\n{reset.stdout}{reset.stderr}")
    cpu = _children_cpu()
    started = time.perf_counter()
    argv = [*mesh, "run", str(config)]
    if profile is not None:  # py-spy runs the worker and writes collapsed stacks on exit
        spy = ["py-spy", "record", "--rate", "200", "--threads", "--format", "raw"]
        argv = [*spy, "--output", str(profile), "--", *argv]
    log = work / f"worker-{table}.log"
    with log.open("w") as stderr:  # a file, not a pipe nobody drains while it runs
        worker = subprocess.Popen(argv, stderr=stderr, text=True)
    seen = [0, 0]
    try:
        while count_lines(out, seen) < n:
            if worker.poll() is not None:
                raise SystemExit(f"worker exited early:\n{log.read_text()[-3000:]}")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        stop_worker(worker, profiled=profile is not None)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    if count_lines(out, seen) != n:
        raise SystemExit(f"pipeline wrote {seen[1]} records, expected {n}")
    return elapsed, _children_cpu() - cpu


def stop_worker(worker: subprocess.Popen[str], *, profiled: bool) -> None:
    """SIGTERM to the worker: the process itself, or py-spy's child when profiling."""
    if profiled:
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children")
        for pid in children.read_text().split() if children.exists() else []:
            os.kill(int(pid), signal.SIGTERM)
        return
    worker.send_signal(signal.SIGTERM)


def summarize(profile: Path, top: int = 12) -> None:
    """Busy samples of a py-spy raw profile by source file (idle waits left out)."""
    import re
    from collections import Counter

    by_file: Counter[str] = Counter()
    idle = ("thread.py:81)", "selectors.py", "threading.py", "queue.py")
    for line in profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1]
        if not stack or any(i in leaf for i in idle):
            continue
        match = re.search(r"\(([^:]+):\d+\)$", leaf)
        by_file[match.group(1) if match else leaf] += int(count)
    total = sum(by_file.values()) or 1
    print(f"  busy samples by file ({profile.name}):")
    for name, count in by_file.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows per workload")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; medians shown")
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument("--no-pipeline", action="store_true", help="readers only")
    parser.add_argument(
        "--profile",
        type=Path,
        help="directory for py-spy profiles of the (default) pipeline runs (needs py-spy)",
    )
    parser.add_argument(
        "--small-batches",
        type=int,
        default=50,
        help="batch_events of the second pipeline run (the first uses the source's default)",
    )
    parser.add_argument(
        "--meshconnect",
        metavar="PYTHON",
        help="another checkout's interpreter: its pipeline (defaults) as one more contender",
    )
    args = parser.parse_args()
    n = 3_000 if args.smoke else args.rows
    repeat = 1 if args.smoke else args.repeat
    missing = MariaDB.missing()
    if missing:
        raise SystemExit(f"no MariaDB for the benchmark: {missing}")
    # meshconnect with its bytecode written, as a wheel install has it (and pymysqlreplication,
    # which the bare loop imports, has it): see peers.precompile.
    for python in filter(None, (sys.executable, args.meshconnect)):
        precompile(python)
    with tempfile.TemporaryDirectory(prefix="mc-bench-cdc-") as tmp:
        work = Path(tmp)
        with private_mariadb(work / "db") as server:
            built = time.perf_counter()
            ranges = build_binlog(server, n)
            print(f"binlog written in {time.perf_counter() - built:.1f}s", flush=True)
            connect = {k: v for k, v in server.connect_args().items() if k != "autocommit"}
            results: dict[str, dict[str, tuple[float, float]]] = {}
            for (workload, span), table in zip(ranges.items(), ("single", "bulk"), strict=True):
                (file, pos), (end_file, end_pos) = span
                reader_args = {
                    "connect": connect,
                    "file": file,
                    "pos": pos,
                    "end_file": end_file,
                    "end_pos": end_pos,
                }
                small = f"pipeline, batch_events={args.small_batches}"
                runs: dict[str, list[tuple[float, float]]] = {
                    "bare loop": [],
                    "FastReader": [],
                    "pipeline": [],
                    small: [],
                }
                other = "pipeline, --meshconnect" if args.meshconnect else ""
                if other:
                    runs[other] = []
                for _ in range(repeat):
                    runs["bare loop"].append(run_reader(BARE, reader_args, n))
                    runs["FastReader"].append(run_reader(FAST, reader_args, n))
                    if not args.no_pipeline:
                        prof = None
                        if args.profile is not None:
                            args.profile.mkdir(parents=True, exist_ok=True)
                            prof = args.profile / f"pipeline-{table}.txt"
                        runs["pipeline"].append(
                            run_pipeline(server, work, table, span, n, profile=prof)
                        )
                        runs[small].append(
                            run_pipeline(
                                server, work, table, span, n, batch_events=args.small_batches
                            )
                        )
                        if other:
                            runs[other].append(
                                run_pipeline(server, work, table, span, n, python=args.meshconnect)
                            )
                results[workload] = {
                    k: (statistics.median(s for s, _ in v), statistics.median(c for _, c in v))
                    for k, v in runs.items()
                    if v
                }
                report(workload, n, repeat, results[workload])
                if args.profile is not None and not args.no_pipeline:
                    summarize(args.profile / f"pipeline-{table}.txt")


def report(workload: str, n: int, repeat: int, seconds: dict[str, tuple[float, float]]) -> None:
    """Medians of each contender: seconds, rows/s, ratio to the bare loop; CPU seconds and
    the bare loop's CPU seconds over the contender's."""
    bare, bare_cpu = seconds["bare loop"]
    print(
        f"\n{workload}: {n:,} rows, median of {repeat} "
        f"(python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {load()})"
    )
    print(
        f"{'contender':30} {'seconds':>8} {'rows/s':>10} {'x bare loop':>12} {'CPU-s':>7} "
        f"{'x bare CPU':>11}"
    )
    for name, (s, cpu) in seconds.items():
        print(
            f"{name:30} {s:8.2f} {n / s:10,.0f} {bare / s:12.2f} {cpu:7.2f} "
            f"{bare_cpu / cpu if cpu else 0:11.2f}"
        )


def load() -> str:
    """The load averages (1, 5 min): how busy the machine was."""
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


if __name__ == "__main__":
    main()
