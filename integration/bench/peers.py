"""Benchmark: the file pipeline workload through meshconnect and its peers, side by side.

The workload is ``file_pipeline.py``'s (N JSON records: file input, parse, filter ``total >=
10``, mask ``email``, insert ``region`` when ``country == 'DE'``, file output), run by:

* **meshconnect** — ``meshconnect run`` (file source → transforms → SQLite mesh store → file
  sink): exactly once file → file, a ``kill -9`` at any moment loses and duplicates nothing;
* **bare orjson loop** — the same work in a plain loop: no crash guarantee at all;
* **bare loop with a store** — the work meshconnect's guarantee needs and nothing else, in a
  plain loop (the floor of its design, not a product: no restart code): each 128 KiB of
  input is decoded with exact numbers (``msgspec``, fractions as ``Decimal``, as meshconnect
  reads JSON), filtered, masked and inserted by plain functions, encoded record by record,
  stored as one SQLite row with the input position in one transaction (WAL,
  ``synchronous=NORMAL``, as the mesh store), written out, and the output's length and the
  consumed offset committed in a second transaction;
* **bytewax 0.21, recovery on** — the same dataflow (``FileSource`` → ``map`` parse →
  ``filter`` → ``map`` mask → ``map`` insert → ``map`` dump → ``FileSink``) with a recovery
  directory and ``-s 1`` (a snapshot every second): exactly once file → file.

::

    python integration/bench/peers.py                  # 1,000,000 records, 3 rounds
    python integration/bench/peers.py --records 200000 --repeat 5
    python integration/bench/peers.py --smoke          # tiny N, for CI (never installs bytewax)
    python integration/bench/peers.py --startup --repeat 7   # start-up: --help, a 1-record run

bytewax is a benchmark-only dependency: the script installs ``bytewax==0.21.1`` (and orjson)
from the configured pip index into its own virtualenv, ``~/.cache/meshconnect-bench/
bytewax-0.21`` (``--bytewax-venv`` moves it), the first time it runs. When that fails it says
why and measures the others. ``--smoke`` never installs it (CI must not need it); it uses the
virtualenv if it is already there.

Every contender runs in a fresh subprocess, interleaved round by round (a noisy neighbour hits
all of them), and each run's wall seconds, CPU seconds (user + system of that child, from
``wait4``) and peak RSS (its ``ru_maxrss``) are its own. Medians are printed with the ratio to
bytewax (records/s: higher is better; CPU-s and RSS: lower is better), and the load average
before and after. Every contender's output must be byte-identical to the bare loop's.
meshconnect's modules are byte-compiled first (see ``precompile``), as a wheel install has them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from file_pipeline import BARE_ORJSON, PIPELINE, make_input

BYTEWAX_VERSION = "0.21.1"
DEFAULT_VENV = Path.home() / ".cache" / "meshconnect-bench" / "bytewax-0.21"

BYTEWAX_FLOW = """
import orjson
import bytewax.operators as op
from bytewax.connectors.files import FileSink, FileSource
from bytewax.dataflow import Dataflow


def mask(data):
    if "email" in data:
        data["email"] = "****"
    return data


def insert(data):
    if data["country"] == "DE":
        data["region"] = "eu"
    return data


flow = Dataflow("orders")
lines = op.input("in", flow, FileSource("in.jsonl"))
parsed = op.map("parse", lines, orjson.loads)
kept = op.filter("filter", parsed, lambda data: data["total"] >= 10)
masked = op.map("mask", kept, mask)
inserted = op.map("insert", masked, insert)
keyed = op.map("dump", inserted, lambda data: ("out", orjson.dumps(data).decode()))
op.output("out", keyed, FileSink("out-bytewax.jsonl"))
"""


BARE_STORE = """
import os, sqlite3, sys
from decimal import Decimal
import msgspec

src, dst, db_path = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(os.path.dirname(db_path), exist_ok=True)
decode = msgspec.json.Decoder(float_hook=Decimal).decode
encode_lines = msgspec.json.Encoder(decimal_format="number").encode_lines
db = sqlite3.connect(db_path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("CREATE TABLE segments (first INTEGER PRIMARY KEY, count INTEGER, body BLOB)")
db.execute("CREATE TABLE positions (name TEXT PRIMARY KEY, value INTEGER)")


def keep(data):
    return data["total"] >= 10


def mask(data):
    if data.get("email") is not None:
        data["email"] = "****"
    return data


def insert(data):
    if data["country"] == "DE":
        data["region"] = "eu"
    return data


fd = os.open(src, os.O_RDONLY)
out = open(dst, "wb")
read = stored = 0
partial = b""
while True:
    chunk = os.pread(fd, 131072, read)
    if not chunk:
        break
    read += len(chunk)
    lines = (partial + chunk).split(b"\\n")
    partial = lines.pop()
    kept = [insert(mask(d)) for d in map(decode, lines) if keep(d)]
    encoded = encode_lines(kept).split(b"\\n")
    encoded.pop()
    body = b'{"n":%d,"data":[' % len(encoded) + b",".join(encoded) + b"]}"
    db.execute("BEGIN")
    db.execute("INSERT INTO segments VALUES (?, ?, ?)", (stored, len(encoded), body))
    db.execute("INSERT OR REPLACE INTO positions VALUES ('source', ?)", (read - len(partial),))
    db.execute("COMMIT")
    stored += len(encoded)
    encoded.append(b"")
    out.write(b"\\n".join(encoded))
    out.flush()
    db.execute("BEGIN")
    db.execute("INSERT OR REPLACE INTO positions VALUES ('sink', ?)", (stored,))
    db.execute("INSERT OR REPLACE INTO positions VALUES ('sink file', ?)", (out.tell(),))
    db.execute("COMMIT")
out.close()
"""


def bytewax_python(venv: Path, install: bool) -> tuple[Path | None, str]:
    """The interpreter of a virtualenv holding bytewax, made if ``install``; or None and why."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import bytewax, orjson"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python, ""
    if not install:
        return None, f"no bytewax virtualenv at {venv} (--smoke never installs one)"
    print(f"installing bytewax {BYTEWAX_VERSION} into {venv} (once) …", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", f"bytewax=={BYTEWAX_VERSION}", "orjson"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return None, f"installing bytewax failed ({' '.join(step[2:4])}): " + " | ".join(tail)
    if subprocess.run(check, capture_output=True).returncode != 0:
        return None, f"bytewax does not import in {venv}"
    return python, ""


def precompile(python: str) -> None:
    """Write the bytecode of meshconnect's modules for ``python``, as ``pip install`` does:
    with ``PYTHONDONTWRITEBYTECODE`` set (as on CI machines) and an editable install, every
    run would otherwise compile ~90 modules again (~0.1 CPU-s), which bytewax, installed
    from a wheel with its bytecode, never pays."""
    code = (
        "import compileall, os, meshconnect, meshconnect.connectors as c\n"
        "for m in (meshconnect, c):\n"
        "    compileall.compile_dir(os.path.dirname(m.__file__), quiet=2)\n"
    )
    subprocess.run([python, "-c", code], check=True)


def timed_child(argv: list[str], cwd: Path) -> tuple[float, float, float]:
    """Run a child; its wall seconds, CPU seconds (user + system) and peak RSS in MB."""
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.chdir(cwd)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark child failed: {' '.join(argv)}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def startup(pythons: list[str], repeat: int) -> None:
    """``meshconnect --help`` and a one-record ``meshconnect run`` with each interpreter,
    interleaved: wall and CPU seconds (start-up targets of issue 21)."""
    runs: dict[str, list[tuple[float, float]]] = {}
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="mc-startup-") as tmp:
        work = Path(tmp)
        make_input(work / "in.jsonl", 1)
        for _ in range(repeat):
            for i, python in enumerate(pythons, 1):
                shutil.rmtree(work / "state", ignore_errors=True)
                (work / f"out{i}.jsonl").unlink(missing_ok=True)
                (work / "one.yaml").write_text(PIPELINE.replace("out.jsonl", f"out{i}.jsonl"))
                mc = [python, "-m", "meshconnect"]
                for what, argv in (
                    ("--help", [*mc, "--help"]),
                    (
                        "run, 1 record",
                        [*mc, "--log-level", "warning", "--state", "state", "run", "one.yaml"],
                    ),
                ):
                    wall, cpu, _ = timed_child(argv, work)
                    runs.setdefault(f"#{i} {what}", []).append((wall, cpu))
    print(
        f"start-up, {repeat} interleaved rounds; load average {load_before} before, {load()} after"
    )
    for i, python in enumerate(pythons, 1):
        print(f"#{i}: {python}")
    print(f"{'command':22} {'wall min':>9} {'wall median':>12} {'CPU-s median':>13}")
    for name, r in runs.items():
        walls = [w for w, _ in r]
        cpu = statistics.median(c for _, c in r)
        print(f"{name:22} {min(walls):9.3f} {statistics.median(walls):12.3f} {cpu:13.3f}")


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians shown")
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument("--bytewax-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument(
        "--meshconnect",
        metavar="PYTHON",
        action="append",
        default=[],
        help="also run meshconnect with this interpreter (another checkout's venv); repeatable",
    )
    parser.add_argument(
        "--startup",
        action="store_true",
        help="measure start-up instead: --help and a one-record run (with --repeat rounds)",
    )
    args = parser.parse_args()
    if args.startup:
        pythons = [sys.executable, *args.meshconnect]
        for python in pythons:
            precompile(python)
        startup(pythons, 2 if args.smoke else max(args.repeat, 5))
        return
    n = 5_000 if args.smoke else args.records
    repeat = 1 if args.smoke else args.repeat
    bw_python, why = bytewax_python(args.bytewax_venv, install=not args.smoke)
    if bw_python is None:
        print(f"bytewax: not measured: {why}")
    with tempfile.TemporaryDirectory(prefix="mc-peers-") as tmp:
        work = Path(tmp)
        make_input(work / "in.jsonl", n)
        (work / "pipeline.yaml").write_text(PIPELINE)
        (work / "bare_orjson.py").write_text(BARE_ORJSON)
        (work / "bare_store.py").write_text(BARE_STORE)
        (work / "flow.py").write_text(BYTEWAX_FLOW)
        mc = ["-m", "meshconnect", "--log-level", "warning", "--state"]
        # name -> (argv, output file, folders to clear before each run)
        contenders: dict[str, tuple[list[str], str, list[str]]] = {
            "meshconnect": (
                [sys.executable, *mc, "state", "run", "pipeline.yaml"],
                "out.jsonl",
                ["state"],
            ),
        }
        for i, python in enumerate(args.meshconnect, 1):
            yaml = f"other{i}.yaml"
            (work / yaml).write_text(PIPELINE.replace("out.jsonl", f"out-other{i}.jsonl"))
            contenders[f"meshconnect #{i + 1}"] = (
                [python, *mc, f"state-other{i}", "run", yaml],
                f"out-other{i}.jsonl",
                [f"state-other{i}"],
            )
        contenders["bare orjson loop"] = (
            [sys.executable, "bare_orjson.py", "in.jsonl", "bare.jsonl"],
            "bare.jsonl",
            [],
        )
        contenders["bare loop with a store"] = (
            [sys.executable, "bare_store.py", "in.jsonl", "bare-store.jsonl", "floor/store.db"],
            "bare-store.jsonl",
            ["floor"],
        )
        if bw_python is not None:
            bw = [str(bw_python), "-m", "bytewax.run", "flow:flow"]
            contenders["bytewax 0.21, -s 1"] = (
                [*bw, "-s", "1", "-b", "0", "-r", "recovery"],
                "out-bytewax.jsonl",
                ["recovery"],
            )
        for python in (sys.executable, *args.meshconnect):
            precompile(python)
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in contenders}
        load_before = load()
        for _ in range(repeat):  # interleaved: a noisy neighbour hits every contender
            for name, (argv, out, clear) in contenders.items():
                for folder in clear:
                    shutil.rmtree(work / folder, ignore_errors=True)
                (work / out).unlink(missing_ok=True)
                if "recovery" in clear:
                    (work / "recovery").mkdir()
                    subprocess.run(
                        [str(bw_python), "-m", "bytewax.recovery", "recovery", "1"],
                        cwd=work,
                        check=True,
                        capture_output=True,
                    )
                runs[name].append(timed_child(argv, work))
        load_after = load()
        expected = (work / "bare.jsonl").read_bytes()
        for name, (_, out, _) in contenders.items():
            if (work / out).read_bytes() != expected:
                raise SystemExit(f"{name}: output differs from the bare loop's output")
        medians = {
            name: (
                statistics.median(w for w, _, _ in r),
                statistics.median(c for _, c, _ in r),
                max(m for _, _, m in r),
            )
            for name, r in runs.items()
        }
        ref = medians.get("bytewax 0.21, -s 1")
        for i, python in enumerate(args.meshconnect, 1):
            print(f"meshconnect #{i + 1}: {python}")
        print(
            f"records: {n:,}; median of {repeat} interleaved rounds; python "
            f"{sys.version.split()[0]}, {os.cpu_count()} cpus; load average (1/5/15 min) "
            f"{load_before} before, {load_after} after"
        )
        head = f"{'contender':24} {'records/s':>10} {'wall s':>7} {'CPU-s':>6} {'peak RSS MB':>11}"
        if ref:
            head += f"  {'vs bytewax: rec/s':>17} {'CPU-s':>6} {'RSS':>5}"
        print(head)
        for name, (wall, cpu, rss) in medians.items():
            line = f"{name[:24]:24} {n / wall:10,.0f} {wall:7.2f} {cpu:6.2f} {rss:11.1f}"
            if ref:
                line += f"  {ref[0] / wall:17.2f} {cpu / ref[1]:6.2f} {rss / ref[2]:5.2f}"
            print(line)
        if ref:
            print(
                "vs bytewax: records/s ratio (above 1: faster than bytewax), CPU-s and peak "
                "RSS ratios (below 1: less than bytewax)"
            )
        for name, r in runs.items():
            each = ", ".join(f"{w:.2f}s/{c:.2f}cpu" for w, c, _ in r)
            print(f"  {name}: {each}")
        print(f"  (load average after: {load()})")


if __name__ == "__main__":
    main()
