"""``meshconnect topics tail`` over a partitioned topic (docs/scaleout.md#partitions): the
topic prints every partition, a partition prints itself."""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import sys
import threading
from pathlib import Path

from cli_support import mc

from meshconnect.mesh import default_store_url, open_store
from meshconnect.plugins import load_registry
from meshconnect.records import Record


def _fill(tmp_path: Path, topics: dict[str, int]) -> None:
    """``topics``: stored topic -> how many records (data ``{"t": topic, "i": i}``)."""

    async def fill() -> None:
        store = open_store(default_store_url(tmp_path / "state"), load_registry())
        await store.open()
        try:
            for name, n in topics.items():
                records = []
                for i in range(n):
                    r = Record({"t": name, "i": i}, id=f"{name}-{i}")
                    r.topic = name
                    records.append(r)
                await store.append(records, {})
        finally:
            await store.close()

    asyncio.run(fill())


def _tail(tmp_path: Path, *args: str) -> list[tuple[str, int]]:
    done = mc(tmp_path, "topics", "tail", *args)
    assert done.returncode == 0, done.stderr
    return [(e["data"]["t"], e["data"]["i"]) for e in map(json.loads, done.stdout.splitlines())]


def test_a_partitioned_topic_tails_each_partition(tmp_path: Path) -> None:
    _fill(tmp_path, {"orders": 2, "orders#1": 3, "orders#0": 4, "orders#10": 1, "ordersx": 5})
    # The unpartitioned part first, then the partitions in order (orders#10 after orders#1);
    # another topic whose name starts the same (ordersx) is not part of it.
    assert _tail(tmp_path, "orders", "--from-beginning") == [
        ("orders", 0), ("orders", 1),
        ("orders#0", 0), ("orders#0", 1), ("orders#0", 2), ("orders#0", 3),
        ("orders#1", 0), ("orders#1", 1), ("orders#1", 2),
        ("orders#10", 0),
    ]  # fmt: skip
    # -n counts in each partition: the last 2 of each, or with --from-beginning the first 1.
    assert _tail(tmp_path, "orders", "-n", "2") == [
        ("orders", 0), ("orders", 1), ("orders#0", 2), ("orders#0", 3),
        ("orders#1", 1), ("orders#1", 2), ("orders#10", 0),
    ]  # fmt: skip
    assert _tail(tmp_path, "orders", "--from-beginning", "-n", "1") == [
        ("orders", 0), ("orders#0", 0), ("orders#1", 0), ("orders#10", 0),
    ]  # fmt: skip
    # A partition named prints that partition alone.
    assert _tail(tmp_path, "orders#1", "--from-beginning") == [
        ("orders#1", 0), ("orders#1", 1), ("orders#1", 2),
    ]  # fmt: skip


def test_a_topic_with_only_partitions_tails_them_and_a_missing_one_names_what_there_is(
    tmp_path: Path,
) -> None:
    _fill(tmp_path, {"cdc#0": 1, "cdc#1": 1})
    assert _tail(tmp_path, "cdc") == [("cdc#0", 0), ("cdc#1", 0)]
    missing = mc(tmp_path, "topics", "tail", "cdc#2")
    assert missing.returncode == 1
    assert "no topic 'cdc#2'" in missing.stderr and "cdc#0, cdc#1" in missing.stderr


def test_follow_prints_partitions_that_appear_later(tmp_path: Path) -> None:
    _fill(tmp_path, {"late#0": 1})
    argv = ["-m", "meshconnect", "--state", str(tmp_path / "state"), "topics", "tail", "late"]
    tail = subprocess.Popen(
        [sys.executable, *argv, "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        assert tail.stdout is not None

        lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(t) for t in tail.stdout], daemon=True).start()  # type: ignore[union-attr]

        def line() -> tuple[str, int]:
            data = json.loads(lines.get(timeout=60))["data"]  # queue.Empty: never printed
            return data["t"], data["i"]

        assert line() == ("late#0", 0)  # it runs, and has listed the partitions
        _fill(tmp_path, {"late#0": 1, "late#3": 2})  # a new record and a new partition
        assert sorted([line(), line(), line()]) == [("late#0", 0), ("late#3", 0), ("late#3", 1)]
    finally:
        tail.kill()
        tail.wait()
