"""What the store backend tests share: the unit tests that take their store from a fixture,
imported so that a backend's test module runs them on its own store (it overrides the
``store_url`` and ``store`` fixtures)."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import lines, meshconnect, start_worker

__all__ = [
    "STORE_TEST_MODULES",
    "import_store_tests",
    "restart_the_engine_empty",
    "tail_stays_in_budget",
]

TESTS = Path(__file__).resolve().parent.parent / "tests"

#: Unit test modules whose tests get their store from the ``store_url`` or ``store`` fixture.
STORE_TEST_MODULES = ("test_worker", "test_errors_policy", "test_errors_replay", "test_ownership")


def import_store_tests() -> dict[str, Any]:
    """The tests of :data:`STORE_TEST_MODULES` that take a store, and their fixtures, by
    name (the caller overrides the store fixtures afterwards). Each module's autouse
    ``clean_memory`` clears part of the test doubles' class state: one fixture here clears
    all of it."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    found: dict[str, Any] = {}
    for name in STORE_TEST_MODULES:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            fixture = type(value).__name__ == "FixtureFunctionDefinition" or hasattr(
                value, "_pytestfixturefunction"
            )
            if fixture or (attr.startswith("test_") and _takes_a_store(value)):
                found[attr] = value
    found["clean_memory"] = clean_memory
    return found


def _takes_a_store(test: Any) -> bool:
    """Whether a test gets its store from the fixtures (the others, on a memory store of
    their own, already run with the unit tests)."""
    parameters = inspect.signature(test).parameters
    return bool({"store_url", "store"} & set(parameters))


@pytest.fixture(autouse=True)
def clean_memory() -> None:
    from meshconnect.testing import MemorySink, MemorySource

    MemorySink.outputs.clear()
    MemorySink.crashed.clear()
    MemorySource.crashed.clear()


# -- scenarios every networked backend runs ------------------------------------------------------

FOLLOW = """
pipelines:
  - name: events
    source:
      connector: file
      config: {path: in/events.jsonl, format: json, follow: true, poll_interval: 0.02,
               batch_size: 500}
    transforms:
      - type: filter
        where: "data.n % 7 != 0"
    topic: events
    sinks:
      - name: out
        connector: file
        commit_interval: 0.05
        batch_size: 300
        config: {path: out/events.jsonl, format: json}
"""


async def tail_stays_in_budget(make_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a store (``make_store()``) keeps of its own appends for in-process readers
    (``store._tail``, a :class:`~meshconnect.mesh.tail.RecordTail`, here with a budget of 3,000
    bytes and two segments) stays within it whatever the records' count, reads are whole
    either way, and what every reader has delivered (``consumed``) is dropped at once. Both
    Redis and NATS kept the last 40,000 records of each topic before, whatever their size."""
    from meshconnect.mesh import tail as tail_module

    monkeypatch.setattr(tail_module, "TAIL_BYTES", 3000)
    monkeypatch.setattr(tail_module, "TAIL_SEGMENTS", 2)
    store = make_store()
    await store.open()
    try:
        await _check_tail(store)
    finally:
        await store.close()


async def _check_tail(store: Any) -> None:
    from meshconnect.records import Record

    tail = store._tail
    appended: list[Any] = []
    for start in range(0, 200, 10):
        records = [
            Record({"i": i, "pad": "x" * 200}, id=f"r{i}", topic="big")
            for i in range(start, start + 10)
        ]
        await store.append(records)
        appended += records
        first, kept = tail.topics["big"]
        assert first + len(kept) == start + 10  # the newest, contiguous
        assert tail.size <= 3000 or len(tail.segments) <= 2
        assert tail.size == sum(size for _, _, size in tail.segments) > 0
    first, kept = tail.topics["big"]
    assert 0 < len(kept) <= 20 < 200
    recent = await store.read("big", 195, 5)
    assert all(a is b for a, b in zip(recent, appended[195:], strict=True))  # from memory
    everything = await store.read("big", 0, 1000)
    assert [r.data["i"] for r in everything] == list(range(len(everything)))
    assert everything[0] is not appended[0]  # the oldest from the engine
    store.consumed("g", "big", 200)
    assert tail.topics["big"] == (200, []) and tail.size == 0


def expected(total: int) -> list[int]:
    return [n for n in range(total) if n % 7]


def writer(path: Path, total: int, done: threading.Event, seconds: float) -> None:
    """Append ``total`` JSON lines to ``path`` in bursts over about ``seconds`` seconds."""
    rng = random.Random(42)
    bursts = max(1, total // 200)
    with path.open("a", encoding="utf-8") as f:
        n = 0
        while n < total:
            burst = min(total - n, rng.randint(100, 300))
            f.write(
                "".join(
                    json.dumps({"n": i, "pad": "x" * (i % 50)}) + "\n" for i in range(n, n + burst)
                )
            )
            f.flush()
            n += burst
            time.sleep(seconds / bursts)
    done.set()


def output_numbers(path: Path) -> list[int]:
    return [json.loads(line)["n"] for line in lines(path)]


def finish(state: Path, config: Path, store_url: str, log_path: Path, out: Path, want: int) -> int:
    """Run the pipeline once more until the output holds ``want`` lines (or two minutes),
    stop it with SIGTERM and return its exit code."""
    proc = start_worker(meshconnect(state, "--store", store_url, "run", str(config)), log_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(lines(out)) < want:
        time.sleep(0.2)
    time.sleep(0.5)  # would anything extra still arrive?
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


def sigkill_the_worker(tmp_path: Path, store_url: str, total: int = 20_000) -> list[int]:
    """A followed file -> file pipeline on ``store_url``, the worker SIGKILLed at random
    moments while lines arrive and restarted each time; returns the output lines at each kill
    (the caller checks the output file, ``tmp_path / "out/events.jsonl"``)."""
    (tmp_path / "in").mkdir()
    source = tmp_path / "in" / "events.jsonl"
    source.touch()
    config = tmp_path / "pipeline.yaml"
    config.write_text(FOLLOW)
    state = tmp_path / "state"
    done = threading.Event()
    thread = threading.Thread(target=writer, args=(source, total, done, 12.0), daemon=True)
    thread.start()
    rng = random.Random(7)
    out = tmp_path / "out" / "events.jsonl"
    log_path = tmp_path / "worker.log"
    progress: list[int] = []
    command = meshconnect(state, "--store", store_url, "run", str(config))
    while not done.is_set() or len(progress) < 6:
        proc = start_worker(command, log_path)
        time.sleep(rng.uniform(0.1, 1.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        progress.append(len(lines(out)))
    thread.join()
    code = finish(state, config, store_url, log_path, out, len(expected(total)))
    assert code == 0, log_path.read_text()[-3000:]
    return progress


def restart_the_engine(
    tmp_path: Path, store_url: str, kill: Any, start: Any, total: int = 20_000
) -> tuple[int, list[int]]:
    """The same pipeline run by one worker while the engine is SIGKILLed (``kill()``) and
    started again on the same port and data (``start()``) three times; returns the worker's
    exit code and the output lines at each kill."""
    (tmp_path / "in").mkdir()
    source = tmp_path / "in" / "events.jsonl"
    source.touch()
    config = tmp_path / "pipeline.yaml"
    config.write_text(FOLLOW)
    state = tmp_path / "state"
    done = threading.Event()
    thread = threading.Thread(target=writer, args=(source, total, done, 10.0), daemon=True)
    thread.start()
    out = tmp_path / "out" / "events.jsonl"
    log_path = tmp_path / "worker.log"
    proc = start_worker(meshconnect(state, "--store", store_url, "run", str(config)), log_path)
    progress: list[int] = []
    rng = random.Random(3)
    for _ in range(3):
        time.sleep(rng.uniform(1.0, 2.5))
        kill()
        progress.append(len(lines(out)))
        time.sleep(rng.uniform(0.5, 2.0))  # the worker meets a dead engine meanwhile
        start()
    thread.join()
    want = len(expected(total))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(lines(out)) < want and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60), progress


def restart_the_engine_empty(
    tmp_path: Path, store_url: str, restart_empty: Any, cluster: list[str]
) -> str:
    """A followed file -> file pipeline on ``store_url`` (``run`` with the options in
    ``cluster``): once its 2,000 lines are delivered, the engine is started again without its
    data (``restart_empty()``) and 100 lines more arrive. Checks that the worker exits 1 with
    ``run failed`` and that the output still holds the 2,000 lines once each; returns the log."""
    (tmp_path / "in").mkdir()
    source = tmp_path / "in" / "events.jsonl"
    source.write_text("".join(f'{{"n": {n}}}\n' for n in range(2000)))
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "pipelines:\n  - name: events\n    source:\n      connector: file\n"
        "      config: {path: in/events.jsonl, format: json, follow: true, poll_interval: 0.05}\n"
        "    topic: events\n    sinks:\n      - name: out\n        connector: file\n"
        "        config: {path: out/events.jsonl, format: json}\n"
    )
    out = tmp_path / "out" / "events.jsonl"
    log_path = tmp_path / "worker.log"
    command = meshconnect(tmp_path / "state", "--store", store_url, "run", *cluster, str(config))
    proc = start_worker(command, log_path)
    try:
        deadline = time.monotonic() + 60
        while len(lines(out)) < 2000 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(lines(out)) == 2000, log_path.read_text()[-3000:]
        restart_empty()
        with source.open("a") as f:
            f.write("".join(f'{{"n": {n}}}\n' for n in range(2000, 2100)))
        code = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    log = log_path.read_text()
    assert code == 1, log[-3000:]
    assert "run failed" in log
    assert output_numbers(out) == list(range(2000))
    return log


# -- a private Redis Cluster -----------------------------------------------------------------------


@contextlib.contextmanager
def private_redis_cluster(base: Path, nodes: int = 3) -> Iterator[str]:
    """Three redis-server primaries on free ports joined into a cluster (``redis-cli --cluster
    create``); yields a store URL of one of them, ``redis://…/0?cluster=yes``."""
    ports = [_cluster_port() for _ in range(nodes)]
    processes = []
    try:
        for port in ports:
            folder = base / str(port)
            folder.mkdir(parents=True)
            log = (folder / "redis.log").open("ab")
            command = [
                "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                "--dir", str(folder), "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--appendonly", "yes",
                "--save", "", "--protected-mode", "no",
            ]  # fmt: skip
            processes.append(subprocess.Popen(command, stdout=log, stderr=log))
        for port in ports:
            _wait_for_port(port)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            info = subprocess.run(
                ["redis-cli", "-p", str(ports[0]), "cluster", "info"],
                capture_output=True, text=True, check=False,
            ).stdout  # fmt: skip
            if "cluster_state:ok" in info:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the redis cluster did not come up: {info}")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{ports[0]}/0?cluster=yes"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, and exists."""
    from mariadb import free_port

    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
