"""The redis connector in real workers: a stream source SIGKILLed again and again, a dead
consumer's pending entries claimed, the Redis server itself killed and restarted mid-run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from redis_support import private_redis

from conftest import lines, meshconnect, start_worker


def pipeline_file(tmp_path: Path, *pipelines: dict[str, Any]) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps({"pipelines": list(pipelines)}))
    return path


def stream_to_file(url: str, stream: str, out: str, **config: Any) -> dict[str, Any]:
    return {
        "name": "fromredis",
        "source": {
            "connector": "redis",
            "config": {"url": url, "stream": stream, "batch_size": 200, "block": "200ms", **config},
            "errors": {
                "retry": {"max_attempts": 1000, "initial_backoff": "50ms", "max_backoff": "500ms"}
            },
        },
        "topic": "fromredis",
        "sinks": [
            {
                "name": "out",
                "connector": "file",
                "commit_interval": 0.05,
                "config": {"path": out, "format": "json"},
            }
        ],
    }


def ns(path: Path) -> list[int]:
    return [int(json.loads(line)["n"]) for line in lines(path)]


def wait_for(condition: Any, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


TOTAL = 20_000


def test_stream_source_across_sigkills_loses_and_duplicates_nothing(
    redis_server: Any, tmp_path: Path
) -> None:
    stream = f"sigkill:{tmp_path.name}"
    client = redis_server.client()
    done = threading.Event()

    def writer() -> None:
        rng = random.Random(3)
        n = 0
        while n < TOTAL:
            burst = min(TOTAL - n, rng.randint(100, 400))
            pipe = client.pipeline()
            for i in range(n, n + burst):
                pipe.xadd(stream, {"n": str(i), "pad": "x" * (i % 30)})
            pipe.execute()
            n += burst
            time.sleep(rng.uniform(0.1, 0.25))  # ~15 s in all: several kills land mid-stream
        done.set()

    config = pipeline_file(tmp_path, stream_to_file(redis_server.url, stream, "out/s.jsonl"))
    state, log = tmp_path / "state", tmp_path / "worker.log"
    out = tmp_path / "out" / "s.jsonl"
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    rng = random.Random(9)
    progress: list[int] = []
    while not done.is_set() or len(progress) < 6:
        proc = start_worker(meshconnect(state, "run", str(config)), log)
        time.sleep(rng.uniform(0.2, 0.9))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        progress.append(len(lines(out)))
    thread.join()
    proc = start_worker(meshconnect(state, "run", str(config)), log)
    wait_for(lambda: len(lines(out)) >= TOTAL)
    time.sleep(0.5)  # would anything extra still arrive?
    assert stop(proc) == 0
    got = ns(out)
    assert len([p for p in progress if 0 < p < TOTAL]) >= 5, progress
    assert sorted(got) == list(range(TOTAL)), (len(got), len(set(got)), log.read_text()[-3000:])
    assert client.xpending(stream, "meshconnect")["pending"] == 0


def test_a_dead_consumers_pending_entries_are_claimed(redis_server: Any, tmp_path: Path) -> None:
    stream = f"claim:{tmp_path.name}"
    client = redis_server.client()
    for i in range(500):
        client.xadd(stream, {"n": str(i)})
    client.xgroup_create(stream, "shared", id="0")
    taken = client.xreadgroup("shared", "dead", {stream: ">"}, count=120)
    assert len(taken[0][1]) == 120  # pending with "dead", which never acknowledges them
    time.sleep(1.2)
    config = pipeline_file(
        tmp_path,
        stream_to_file(
            redis_server.url,
            stream,
            "out/c.jsonl",
            group="shared",
            consumer="live",
            claim_idle="1s",
            claim_interval="100ms",
            until_end=True,
        ),
    )
    run = subprocess.run(
        meshconnect(tmp_path / "state", "run", str(config)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(ns(tmp_path / "out" / "c.jsonl")) == list(range(500))
    assert "claimed 120 entries" in run.stderr, run.stderr[-2000:]
    assert client.xpending(stream, "shared")["pending"] == 0


def test_redis_killed_and_restarted_mid_run_is_retried_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    """One worker reads a stream of the server and writes hashes to it; the server is
    SIGKILLed (append-only file, fsync always) and restarted on the same port mid-run."""
    from redis_support import RedisServer

    from conftest import require_server

    if RedisServer.missing():
        require_server("redis-server", RedisServer.missing() or "")
    with private_redis(tmp_path / "redis") as server:
        stream = "restart:in"
        client = server.client()
        (tmp_path / "in").mkdir()
        feed = tmp_path / "in" / "rows.jsonl"
        feed.touch()
        hashes = {
            "name": "tohash",
            "source": {
                "connector": "file",
                "config": {
                    "path": "in/rows.jsonl",
                    "format": "json",
                    "follow": True,
                    "poll_interval": 0.05,
                },
            },
            "topic": "rows",
            "sinks": [
                {
                    "name": "cache",
                    "connector": "redis",
                    "commit_interval": 0.05,
                    "config": {"url": server.url, "mode": "hset", "key": "row:{data.n}"},
                    "errors": {
                        "retry": {
                            "max_attempts": 1000,
                            "initial_backoff": "50ms",
                            "max_backoff": "500ms",
                        }
                    },
                }
            ],
        }
        config = pipeline_file(tmp_path, stream_to_file(server.url, stream, "out/r.jsonl"), hashes)
        log = tmp_path / "worker.log"
        proc = start_worker(meshconnect(tmp_path / "state", "run", str(config)), log)

        def feed_both(start: int, end: int) -> None:
            pipe = client.pipeline()
            for i in range(start, end):
                pipe.xadd(stream, {"n": str(i)})
            pipe.execute()
            with feed.open("a") as f:
                f.writelines(json.dumps({"n": i}) + "\n" for i in range(start, end))

        out = tmp_path / "out" / "r.jsonl"
        feed_both(0, 3000)
        assert wait_for(lambda: len(lines(out)) > 0)
        server.kill()
        with feed.open("a") as f:  # written while Redis is down: the sink must retry
            f.writelines(json.dumps({"n": i}) + "\n" for i in range(3000, 4000))
        time.sleep(1.5)
        server.start()
        client = server.client()
        pipe = client.pipeline()
        for i in range(3000, 4000):
            pipe.xadd(stream, {"n": str(i)})
        pipe.execute()
        feed_both(4000, 6000)
        ok = wait_for(
            lambda: (
                len(lines(out)) >= 6000
                and client.exists(*[f"row:{i}" for i in range(6000)]) == 6000
            )
        )
        assert stop(proc) == 0
        assert ok, log.read_text()[-3000:]
        assert sorted(ns(out)) == list(range(6000))
        assert client.hgetall("row:5999") == {b"n": b"5999"}
        text = log.read_text()
        assert "write failed" in text and "poll failed" in text  # both sides did retry
        assert "claimed" not in text  # a lost XREADGROUP reply is re-read at once, not claimed


@pytest.mark.parametrize("streams", [1, 3])
def test_xadd_sink_across_sigkills_appends_each_record_once(
    redis_server: Any, tmp_path: Path, streams: int
) -> None:
    """XADD is not idempotent: the entries' record ids and the sink's committed stream
    positions make a re-delivery after each SIGKILL append nothing twice. With a stream
    template (3 streams) the state names only the streams of the last commit, and a stream
    first named after it was not read back at all."""
    name = f"xadd:{tmp_path.name}"
    stream = name if streams == 1 else name + ":{data.s}"
    (tmp_path / "in").mkdir()
    total = 150_000
    with (tmp_path / "in" / "rows.jsonl").open("w") as f:
        f.writelines(json.dumps({"n": i, "s": i % streams}) + "\n" for i in range(total))
    config = pipeline_file(
        tmp_path,
        {
            "name": "toredis",
            "source": {
                "connector": "file",
                "config": {"path": "in/rows.jsonl", "format": "json", "follow": False},
            },
            "topic": "rows",
            "sinks": [
                {
                    "name": "stream",
                    "connector": "redis",
                    "commit_interval": 0.2,
                    "batch_size": 500,
                    "config": {"url": redis_server.url, "mode": "xadd", "stream": stream},
                }
            ],
        },
    )
    client = redis_server.client()
    names = [name] if streams == 1 else [f"{name}:{i}" for i in range(streams)]
    state, log = tmp_path / "state", tmp_path / "worker.log"
    rng = random.Random(4)
    kills: list[int] = []
    for _ in range(12):
        proc = start_worker(meshconnect(state, "run", str(config)), log)
        time.sleep(rng.uniform(0.1, 0.5))
        if proc.poll() is not None:
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills.append(sum(client.xlen(k) for k in names))
        if len([k for k in kills if 0 < k < total]) >= 3:
            break
    final = subprocess.run(meshconnect(state, "run", str(config)), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-3000:]
    for i, key in enumerate(names):
        got = [int(fields[b"n"]) for _, fields in client.xrange(key)]
        assert got == list(range(i, total, streams)), (key, len(got), len(set(got)), kills)
    assert len([k for k in kills if 0 < k < total]) >= 3, kills
