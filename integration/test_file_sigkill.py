"""Kill the worker with SIGKILL at random moments while lines are appended to a followed file,
restart it each time, and check that the sink file ends up exactly as expected: no line lost,
none duplicated (exactly-once into the mesh, truncate-to-checkpoint out of it)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

from conftest import lines, meshconnect, start_worker

PIPELINE = """
pipelines:
  - name: events
    source:
      connector: file
      config:
        path: in/events.jsonl
        format: json
        follow: true
        poll_interval: 0.02
        batch_size: 500
    transforms:
      - type: filter
        where: "data.n % 7 != 0"
      - type: insert_field
        field: data.tag
        template: "n{data.n}"
        when: "data.n % 2 == 0"
    topic: events
    sinks:
      - name: out
        connector: file
        commit_interval: 0.05
        batch_size: 300
        config: {path: out/events.jsonl, format: json}
"""

TOTAL = 40_000


def expected() -> list[str]:
    out = []
    for n in range(TOTAL):
        if n % 7 == 0:
            continue
        data: dict[str, object] = {"n": n, "pad": "x" * (n % 50)}
        if n % 2 == 0:
            data["tag"] = f"n{n}"
        out.append(json.dumps(data, separators=(",", ":")))
    return out


def writer(path: Path, done: threading.Event) -> None:
    """Append TOTAL lines in small bursts, sometimes splitting a line across two writes."""
    rng = random.Random(42)
    with path.open("a", encoding="utf-8") as f:
        n = 0
        while n < TOTAL:
            burst = min(TOTAL - n, rng.randint(50, 400))
            text = "".join(
                json.dumps({"n": i, "pad": "x" * (i % 50)}) + "\n" for i in range(n, n + burst)
            )
            cut = rng.randint(1, len(text) - 1)
            f.write(text[:cut])
            f.flush()
            time.sleep(0.002)
            f.write(text[cut:])
            f.flush()
            n += burst
            # ~18 s in all: long enough for several kills mid-stream, however long the
            # worker takes to start on a loaded machine
            time.sleep(rng.uniform(0.05, 0.15))
    done.set()


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    source = tmp_path / "in" / "events.jsonl"
    source.touch()
    config = tmp_path / "pipeline.yaml"
    config.write_text(PIPELINE)
    state = tmp_path / "state"
    done = threading.Event()
    thread = threading.Thread(target=writer, args=(source, done), daemon=True)
    thread.start()
    rng = random.Random(7)
    out = tmp_path / "out" / "events.jsonl"
    want = expected()
    progress = []  # output lines at each kill: proves the kills landed mid-stream
    log_path = tmp_path / "worker.log"
    while not done.is_set() or len(progress) < 8:
        proc = start_worker(meshconnect(state, "run", str(config)), log_path)
        time.sleep(rng.uniform(0.05, 1.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        progress.append(len(lines(out)))
    thread.join()
    # A last run, stopped gracefully once the output is complete (or after a generous wait).
    proc = start_worker(meshconnect(state, "run", str(config)), log_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(lines(out)) < len(want):
        time.sleep(0.2)
    time.sleep(0.5)  # would anything extra still arrive?
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    got = [json.dumps(json.loads(line), separators=(",", ":")) for line in lines(out)]
    mid_stream = [n for n in progress if 0 < n < len(want)]
    assert len(mid_stream) >= 5, progress
    assert got == want


BOUNDED = """
pipelines:
  - name: bulk
    source:
      connector: file
      config: {path: "in/*.jsonl", format: json, follow: false, batch_size: 2000}
    transforms:
      - type: mask
        fields: [data.pad]
    sinks:
      - name: out
        connector: file
        commit_interval: 0.05
        config: {path: out/bulk.jsonl, format: json, rotate_bytes: 2000000}
"""


def test_sigkill_during_a_bounded_run_then_rerun_gives_the_exact_output(tmp_path: Path) -> None:
    """A bounded run over three files, killed at random moments, each time resumed: the
    rotated output files hold every record exactly once."""
    (tmp_path / "in").mkdir()
    want = []
    for part in range(3):
        with (tmp_path / "in" / f"part{part}.jsonl").open("w") as f:
            for i in range(part * 200_000, (part + 1) * 200_000):
                f.write(json.dumps({"n": i, "pad": "y" * (i % 40)}) + "\n")
                want.append(i)
    config = tmp_path / "bulk.yaml"
    config.write_text(BOUNDED)
    state = tmp_path / "state"
    rng = random.Random(11)
    log = (tmp_path / "worker.log").open("w")
    kills = 0
    for _ in range(12):
        if kills >= 5:
            break
        proc = subprocess.Popen(meshconnect(state, "run", str(config)), stdout=log, stderr=log)
        # Start-up takes ~0.3 s and a whole run ~2 s here: most kills land mid-stream.
        time.sleep(rng.uniform(0.3, 0.7))
        if proc.poll() is not None:
            break  # it finished before the kill
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    final = subprocess.run(meshconnect(state, "run", str(config)), stdout=log, stderr=log)
    got = [
        json.loads(line)["n"]
        for path in sorted((tmp_path / "out").glob("bulk-*.jsonl"))
        for line in lines(path)
    ]
    assert final.returncode == 0
    assert kills >= 3
    assert sorted(got) == want and len(got) == len(set(got))


ROTATING = """
pipelines:
  - name: logs
    source:
      connector: file
      config: {path: "logs/app.log*", format: json, follow: true, poll_interval: 0.02}
    sinks:
      - name: out
        connector: file
        commit_interval: 0.05
        config: {path: out/logs.jsonl, format: json}
"""


def rotating_writer(folder: Path, total: int, done: threading.Event) -> None:
    """Append ``total`` lines to app.log, renaming it to app.log.<k> and starting a new one
    every 3,000 lines (logrotate's create mode)."""
    rng = random.Random(5)
    n, generation = 0, 0
    while n < total:
        with (folder / "app.log").open("a", encoding="utf-8") as f:
            written = 0
            while written < 3_000 and n < total:
                burst = min(total - n, 3_000 - written, rng.randint(50, 300))
                f.write("".join(json.dumps({"n": i}) + "\n" for i in range(n, n + burst)))
                f.flush()
                n += burst
                written += burst
                time.sleep(rng.uniform(0.01, 0.04))
        generation += 1
        os.rename(folder / "app.log", folder / f"app.log.{generation}")
    done.set()


def test_sigkill_while_the_followed_file_rotates_loses_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    total = 24_000
    (tmp_path / "logs").mkdir()
    config = tmp_path / "logs.yaml"
    config.write_text(ROTATING)
    state = tmp_path / "state"
    done = threading.Event()
    writer_thread = threading.Thread(
        target=rotating_writer, args=(tmp_path / "logs", total, done), daemon=True
    )
    writer_thread.start()
    rng = random.Random(3)
    out = tmp_path / "out" / "logs.jsonl"
    log = (tmp_path / "worker.log").open("w")
    kills = 0
    while not done.is_set() or kills < 6:
        proc = subprocess.Popen(meshconnect(state, "run", str(config)), stdout=log, stderr=log)
        time.sleep(rng.uniform(0.5, 1.3))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    writer_thread.join()
    proc = subprocess.Popen(meshconnect(state, "run", str(config)), stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(lines(out)) < total:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    got = [json.loads(line)["n"] for line in lines(out)]
    assert sorted(got) == list(range(total)) and len(got) == total
