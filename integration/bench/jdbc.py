"""Benchmark of the jdbc connector against bare loops (and dlt), all measured in this run.

(a) N PostgreSQL rows → the jdbc ``bulk`` source → the file sink (JSON lines), against a bare
    SQLAlchemy streaming loop writing the same JSON lines with orjson, and against dlt's
    ``sql_database`` source into its ``filesystem`` destination (JSONL) with its default
    (SQLAlchemy) backend and its pyarrow backend, when a Python with dlt is given.
(b) N records (a JSON-lines file) → the file source → the jdbc sink, ``upsert`` into
    PostgreSQL, against a bare psycopg ``executemany`` upsert loop over the same file.

    python integration/bench/jdbc.py                      # 1,000,000 rows/records
    python integration/bench/jdbc.py --rows 200000
    python integration/bench/jdbc.py --smoke              # tiny N, for CI
    python integration/bench/jdbc.py --dlt-python /path/to/venv-with-dlt/bin/python

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust; ``--pg-host``/``--pg-port``): a
database with a random name is created and dropped. Each contender runs in a fresh
subprocess, so its peak RSS (ru_maxrss) is its own; runs are interleaved, medians shown.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

SOURCE_PIPELINE = """
pipelines:
  - name: bulk
    source:
      connector: jdbc
      config: {{url: "{url}", table: items, mode: bulk, batch_size: 5000}}
    sinks:
      - connector: file
        batch_size: 5000
        config: {{path: out-mesh.jsonl, format: json}}
"""

SINK_PIPELINE = """
pipelines:
  - name: upsert
    source:
      connector: file
      config: {{path: records.jsonl, format: json, follow: false, batch_size: 5000}}
    sinks:
      - connector: jdbc
        batch_size: 5000
        config: {{url: "{url}", table: target_mesh, mode: upsert, key: [id]}}
"""

BARE_READ = """
import sys, orjson, sqlalchemy as sa
from decimal import Decimal
import datetime as dt
def safe(v):
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, dt.datetime):
        return v.isoformat()
    return v
engine = sa.create_engine(sys.argv[1])
with engine.connect() as conn, open("out-bare.jsonl", "wb") as out:
    result = conn.execution_options(stream_results=True, yield_per=5000).execute(
        sa.text("SELECT * FROM items ORDER BY id"))
    for part in result.mappings().partitions():
        out.write(b"".join(orjson.dumps({k: safe(v) for k, v in r.items()}) + b"\\n" for r in part))
"""

BARE_UPSERT = """
import sys, orjson, psycopg
sql = ("INSERT INTO target_bare (id, name, price, qty, created, note) "
       "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, "
       "price = EXCLUDED.price, qty = EXCLUDED.qty, created = EXCLUDED.created, "
       "note = EXCLUDED.note")
with psycopg.connect(sys.argv[1]) as conn, open("records.jsonl", "rb") as f:
    batch = []
    def flush():
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(sql, batch)
        batch.clear()
    for line in f:
        d = orjson.loads(line)
        batch.append((d["id"], d["name"], d["price"], d["qty"], d["created"], d["note"]))
        if len(batch) == 5000:
            flush()
    if batch:
        flush()
"""

DLT_READ = """
import sys, dlt
from dlt.sources.sql_database import sql_table
backend = sys.argv[2]
table = sql_table(credentials=sys.argv[1], table="items", backend=backend)
pipeline = dlt.pipeline(pipeline_name="bench_" + backend, destination=dlt.destinations.filesystem(
    bucket_url="file://" + sys.argv[3]), dataset_name="out", pipelines_dir=sys.argv[4])
pipeline.run(table, loader_file_format="jsonl")
"""


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


def setup(dsn: str, n: int, work: Path) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, "
            "price NUMERIC(12,2), qty INTEGER, created TIMESTAMP(6), note TEXT)"
        )
        conn.execute(
            "INSERT INTO items SELECT i, 'item ' || i, (i % 10000) / 100.0, i % 97, "
            "TIMESTAMP '2024-01-01' + i * INTERVAL '1 second', "
            "CASE WHEN i % 5 = 0 THEN NULL ELSE 'note with \"quotes\" ' || i END "
            f"FROM generate_series(1, {n}) AS i"
        )
        conn.execute("VACUUM ANALYZE items")
        for t in ("target_mesh", "target_bare"):
            conn.execute(f"CREATE TABLE {t} (LIKE items INCLUDING ALL)")
    with (work / "records.jsonl").open("w") as f:
        for i in range(1, n + 1):
            f.write(
                json.dumps(
                    {
                        "id": i,
                        "name": f"item {i}",
                        "price": f"{(i % 10000) / 100:.2f}",
                        "qty": i % 97,
                        "created": f"2024-01-01T{i % 24:02d}:00:00",
                        "note": None if i % 5 == 0 else f'note "{i}"',
                    }
                )
                + "\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians shown")
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--dlt-python", help="a Python with dlt[sql_database,filesystem]")
    args = parser.parse_args()
    n = 2_000 if args.smoke else args.rows
    repeat = 1 if args.smoke else args.repeat
    import psycopg

    name = f"mc_bench_jdbc_{secrets.token_hex(4)}"
    admin_dsn = f"postgresql://postgres@{args.pg_host}:{args.pg_port}/postgres"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = f"postgresql://postgres@{args.pg_host}:{args.pg_port}/{name}"
    url = f"postgresql+psycopg://postgres@{args.pg_host}:{args.pg_port}/{name}"
    try:
        with tempfile.TemporaryDirectory(prefix="mc-bench-jdbc-") as tmp:
            work = Path(tmp)
            setup(dsn, n, work)
            run(work, url, dsn, n, repeat, args.dlt_python)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(work: Path, url: str, dsn: str, n: int, repeat: int, dlt_python: str | None) -> None:
    import psycopg

    (work / "source.yaml").write_text(SOURCE_PIPELINE.format(url=url))
    (work / "sink.yaml").write_text(SINK_PIPELINE.format(url=url))
    (work / "bare_read.py").write_text(BARE_READ)
    (work / "bare_upsert.py").write_text(BARE_UPSERT)
    (work / "dlt_read.py").write_text(DLT_READ)
    mesh = [sys.executable, "-m", "meshconnect", "--log-level", "warning", "--state"]
    read = {
        "(a) meshconnect jdbc bulk -> file": [*mesh, "state-a", "run", "source.yaml"],
        "(a) bare SQLAlchemy stream + orjson": [sys.executable, "bare_read.py", url],
    }
    if dlt_python:
        for backend in ("sqlalchemy", "pyarrow"):
            read[f"(a) dlt sql_database, {backend}"] = [
                dlt_python, "dlt_read.py", url, backend, str(work / f"dlt-out-{backend}"),
                str(work / f"dlt-state-{backend}"),
            ]  # fmt: skip
    write = {
        "(b) meshconnect file -> jdbc upsert": [*mesh, "state-b", "run", "sink.yaml"],
        "(b) bare psycopg executemany upsert": [sys.executable, "bare_upsert.py", dsn],
    }
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in [*read, *write]}
    for _ in range(repeat):  # interleaved, so a noisy neighbour hits every contender
        for label, argv in {**read, **write}.items():
            for d in ("state-a", "state-b", "dlt-out-sqlalchemy", "dlt-out-pyarrow"):
                shutil.rmtree(work / d, ignore_errors=True)
            for d in ("dlt-state-sqlalchemy", "dlt-state-pyarrow"):
                shutil.rmtree(work / d, ignore_errors=True)
            if label == "(a) meshconnect jdbc bulk -> file":
                (work / "out-mesh.jsonl").unlink(missing_ok=True)
            if label.startswith("(b)"):
                with psycopg.connect(dsn, autocommit=True) as conn:
                    mine = "target_mesh" if "meshconnect" in label else "target_bare"
                    conn.execute(f"TRUNCATE {mine}")
            runs[label].append(timed_child(argv, work))
    mesh_lines = (work / "out-mesh.jsonl").read_text().splitlines()
    bare_lines = (work / "out-bare.jsonl").read_text().splitlines()
    if len(mesh_lines) != n or [json.loads(x) for x in mesh_lines[:50]] != [
        json.loads(x) for x in bare_lines[:50]
    ]:
        raise SystemExit("the jdbc source's output differs from the bare loop's")
    with psycopg.connect(dsn) as conn:
        a = conn.execute("SELECT count(*), sum(id), sum(price) FROM target_mesh").fetchone()
        b = conn.execute("SELECT count(*), sum(id), sum(price) FROM target_bare").fetchone()
    if a != b or a[0] != n:
        raise SystemExit(f"the upserted tables differ: {a} vs {b}")
    results = {
        k: (statistics.median(s for s, _ in r), max(m for _, m in r)) for k, r in runs.items()
    }
    print(
        f"rows/records: {n:,}, median of {repeat} interleaved runs each "
        f"(python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f})"
    )
    print(f"{'contender':40} {'seconds':>8} {'rows/s':>10} {'peak RSS MB':>12} {'ratio':>7}")
    for group, mine in (("(a)", "(a) meshconnect jdbc bulk -> file"),
                        ("(b)", "(b) meshconnect file -> jdbc upsert")):  # fmt: skip
        for label, (seconds, rss) in results.items():
            if label.startswith(group):
                ratio = seconds / results[mine][0]
                print(f"{label:40} {seconds:8.2f} {n / seconds:10,.0f} {rss:12.1f} {ratio:7.2f}")
    if not dlt_python:
        print("(a) dlt: not measured (no --dlt-python given)")
    print("ratio = contender seconds / meshconnect seconds (meshconnect throughput relative to it)")


if __name__ == "__main__":
    main()
