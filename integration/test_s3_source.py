"""The s3 source against a private moto server: 10,000 records across 20 objects of mixed
formats in key order; SIGKILL mid-object; objects added while it runs; corrupt objects by the
errors policy; delete or move after read; the endpoint down for 10 s."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from s3_support import SECRET_KEY, MotoServer, TcpProxy, connection, keys, moto

from conftest import lines, meshconnect, start_worker
from meshconnect import jsonvalue
from meshconnect.testing import MemorySink, collect, run_pipelines, test_registry

__all__ = ["moto"]

FORMATS = ["jsonl", "jsonl.gz", "csv", "csv.gz", "parquet"]


def put_objects(
    server: MotoServer, bucket: str, count: int, per_object: int, prefix: str = "in/"
) -> list[Any]:
    """``count`` objects of ``per_object`` rows, formats in turn; the data as each reads back
    (CSV values are strings)."""
    client = server.client()
    expected: list[Any] = []
    for i in range(count):
        fmt = FORMATS[i % len(FORMATS)]
        rows = [{"n": n, "name": f"row {n}"} for n in range(i * per_object, (i + 1) * per_object)]
        if fmt.startswith("jsonl"):
            data = b"".join(jsonvalue.dumps(r, newline=True) for r in rows)
            expected.extend(rows)
        elif fmt.startswith("csv"):
            data = ("n,name\n" + "".join(f"{r['n']},{r['name']}\n" for r in rows)).encode()
            expected.extend({"n": str(r["n"]), "name": r["name"]} for r in rows)
        else:
            out = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(rows), out)
            data = out.getvalue()
            expected.extend(rows)
        if fmt.endswith(".gz"):
            data = gzip.compress(data)
        client.put_object(Bucket=bucket, Key=f"{prefix}{i:04d}.{fmt}", Body=data)
    return expected


def pipeline(tmp_path: Path, source: dict[str, Any], sink: dict[str, Any], **extra: Any) -> Path:
    doc = {
        "pipelines": [
            {
                "name": "load",
                "source": {"connector": "s3", "config": source, **extra},
                "topic": "loaded",
                "sinks": [sink],
            }
        ]
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(doc))
    return path


def load_with_dead_letters(tmp_path: Path, source: dict[str, Any]) -> Path:
    """A pipeline file: the s3 source with ``source`` as its config (tolerance all) into the
    memory sink ``read``, its dead letters into the memory sink ``dead`` (both emptied)."""
    MemorySink.outputs.pop("read", None)
    MemorySink.outputs.pop("dead", None)
    doc = {
        "pipelines": [
            {
                "name": "load",
                "source": {
                    "connector": "s3",
                    "config": source,
                    "errors": {"tolerance": "all", "dead_letter_topic": "dlq.load"},
                },
                "topic": "loaded",
                "sinks": [{"connector": "memory", "config": {"name": "read"}}],
            },
            {
                "name": "dead",
                "sinks": [
                    {"connector": "memory", "topics": ["dlq.load"], "config": {"name": "dead"}}
                ],
            },
        ]
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(doc))
    return path


async def test_ten_thousand_records_in_twenty_mixed_objects_read_in_order(
    moto: MotoServer, tmp_path: Path
) -> None:
    bucket = moto.bucket()
    expected = put_objects(moto, bucket, 20, 500)
    MemorySink.outputs.pop("all", None)
    path = pipeline(
        tmp_path,
        {**connection(moto, bucket), "prefix": "in/", "batch_size": 700},
        {"connector": "memory", "config": {"name": "all"}},
    )
    assert await run_pipelines([path], registry=test_registry()) == 0
    assert collect("all") == expected
    first = MemorySink.outputs["all"][0]
    assert first.id == f"s3://{bucket}/in/0000.jsonl#0"
    assert first.subject == "in/0000.jsonl"


SINK_TO_FILE = {
    "name": "out",
    "connector": "file",
    "commit_interval": 0.05,
    "config": {"path": "out/loaded.jsonl"},
}


def test_sigkill_mid_object_resumes_with_nothing_lost_or_twice(
    moto: MotoServer, tmp_path: Path
) -> None:
    bucket = moto.bucket()
    expected = put_objects(moto, bucket, 20, 5000)
    config = pipeline(
        tmp_path,
        {**connection(moto, bucket), "prefix": "in/", "batch_size": 50},
        SINK_TO_FILE,
    )
    state = tmp_path / "state"
    out = tmp_path / "out" / "loaded.jsonl"
    log_path = tmp_path / "worker.log"
    rng = random.Random(5)
    at_kill: list[dict[str, Any]] = []  # the committed source position after each kill
    for _ in range(12):
        if len(at_kill) >= 5:
            break
        proc = start_worker(meshconnect(state, "run", str(config)), log_path)
        time.sleep(rng.uniform(0.05, 0.3))  # the source reads 100,000 records in seconds
        if proc.poll() is not None:
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        shown = subprocess.run(
            meshconnect(state, "offsets", "show", "--json", str(config)),
            capture_output=True,
            text=True,
            check=True,
        )
        at_kill.append(source_position(json.loads(shown.stdout)))
    with log_path.open("a") as log:
        final = subprocess.run(meshconnect(state, "run", str(config)), stdout=log, stderr=log)
    assert final.returncode == 0, log_path.read_text()[-3000:]
    got = [json.loads(line) for line in lines(out)]
    assert got == expected
    mid_object = [p for p in at_kill if p.get("key") and p.get("index")]
    assert len(at_kill) >= 3 and len(mid_object) >= 2, at_kill


def source_position(shown: Any) -> dict[str, Any]:
    """The s3 source's committed position in ``offsets show --json`` output."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "index" in node and "after" in node:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(shown)
    return found[0] if found else {}


FOLLOW = """
pipelines:
  - name: load
    source:
      connector: s3
      config: %s
    topic: loaded
    sinks:
      - name: out
        connector: file
        commit_interval: 0.05
        config: {path: out/loaded.jsonl}
"""


def test_objects_added_while_running_are_picked_up(moto: MotoServer, tmp_path: Path) -> None:
    bucket = moto.bucket()
    source = {**connection(moto, bucket), "prefix": "in/", "follow": True, "poll_interval": 0.2}
    config = tmp_path / "follow.yaml"
    config.write_text(FOLLOW % json.dumps(source))
    out = tmp_path / "out" / "loaded.jsonl"
    log_path = tmp_path / "worker.log"
    proc = start_worker(meshconnect(tmp_path / "state", "run", str(config)), log_path)
    client = moto.client()
    try:
        for i in range(4):
            body = "".join(json.dumps({"n": i * 10 + j}) + "\n" for j in range(10))
            client.put_object(Bucket=bucket, Key=f"in/{i:04d}.jsonl", Body=body.encode())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(lines(out)) < (i + 1) * 10:
                time.sleep(0.05)
            assert len(lines(out)) == (i + 1) * 10, log_path.read_text()[-3000:]
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert [json.loads(line)["n"] for line in lines(out)] == list(range(40))


def test_follow_reads_a_new_object_in_a_directory_that_sorts_before_the_last_read(
    moto: MotoServer, tmp_path: Path
) -> None:
    bucket = moto.bucket()
    source = {**connection(moto, bucket), "prefix": "arch/", "follow": True, "poll_interval": 0.2}
    config = tmp_path / "follow.yaml"
    config.write_text(FOLLOW % json.dumps(source))
    out = tmp_path / "out" / "loaded.jsonl"
    log_path = tmp_path / "worker.log"
    proc = start_worker(meshconnect(tmp_path / "state", "run", str(config)), log_path)
    client = moto.client()
    # as an s3 sink with key_template "arch/c={data.c}/" writes them: DE first, then AT
    objects = ["c=DE/t+0.jsonl", "c=AT/t+1.jsonl", "c=DE/t+2.jsonl", "c=AA/t+3.jsonl"]
    try:
        for i, name in enumerate(objects):
            client.put_object(Bucket=bucket, Key=f"arch/{name}", Body=b'{"n": %d}\n' % i)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(lines(out)) < i + 1:
                time.sleep(0.05)
            assert len(lines(out)) == i + 1, log_path.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert [json.loads(line)["n"] for line in lines(out)] == [0, 1, 2, 3]
    # a restart reads nothing again
    proc = start_worker(meshconnect(tmp_path / "state", "run", str(config)), log_path)
    try:
        client.put_object(Bucket=bucket, Key="arch/c=AT/t+4.jsonl", Body=b'{"n": 4}\n')
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(lines(out)) < 5:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert [json.loads(line)["n"] for line in lines(out)] == [0, 1, 2, 3, 4]


async def test_corrupt_objects_follow_the_errors_policy_and_the_rest_is_read(
    moto: MotoServer, tmp_path: Path
) -> None:
    bucket = moto.bucket()
    client = moto.client()
    good = b"".join(json.dumps({"n": n}).encode() + b"\n" for n in range(5))
    client.put_object(Bucket=bucket, Key="in/0001.jsonl", Body=good)
    broken = gzip.compress(b"".join(json.dumps({"n": n}).encode() + b"\n" for n in range(5, 9000)))
    cut = broken[: len(broken) // 2] + b"\x00garbage" * 50  # damaged in the middle
    client.put_object(Bucket=bucket, Key="in/0002.jsonl.gz", Body=cut)
    client.put_object(
        Bucket=bucket, Key="in/0003.jsonl", Body=b'{"n": 20000}\nnot json\n{"n": 20001}\n'
    )
    client.put_object(Bucket=bucket, Key="in/0004.jsonl.gz", Body=b"this is not gzip at all")
    client.put_object(Bucket=bucket, Key="in/0005.jsonl", Body=b'{"n": 20002}\n')
    path = load_with_dead_letters(tmp_path, {**connection(moto, bucket), "prefix": "in/"})
    assert await run_pipelines([path], registry=test_registry()) == 0
    read = [d["n"] for d in collect("read")]
    # the first object whole, nothing of the damaged gzip objects (a damaged deflate stream
    # may decode to plausible garbage before its checksum fails), the good lines around the
    # bad one, the last object whole
    assert read == [0, 1, 2, 3, 4, 20000, 20001, 20002]
    dead = MemorySink.outputs["dead"]
    assert sorted((r.subject, type(r.data).__name__) for r in dead) == [
        ("in/0002.jsonl.gz", "bytes"),
        ("in/0003.jsonl", "str"),
        ("in/0004.jsonl.gz", "bytes"),
    ]
    assert [r.data for r in dead if r.subject == "in/0003.jsonl"] == ["not json"]
    assert [r.data for r in dead if r.subject == "in/0004.jsonl.gz"] == [b"this is not gzip at all"]


async def test_delete_and_move_after_read(moto: MotoServer, tmp_path: Path) -> None:
    for mode in ("delete", "move"):
        bucket = moto.bucket()
        put_objects(moto, bucket, 3, 10)
        MemorySink.outputs.pop(mode, None)
        source = {**connection(moto, bucket), "prefix": "in/", "after_read": mode}
        if mode == "move":
            source["move_to"] = "done/"
        path = pipeline(tmp_path, source, {"connector": "memory", "config": {"name": mode}})
        assert await run_pipelines([path], registry=test_registry()) == 0
        assert len(collect(mode)) == 30
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and keys(moto, bucket, "in/"):
            time.sleep(0.05)
        assert keys(moto, bucket, "in/") == []
        want = ["done/0000.jsonl", "done/0001.jsonl.gz", "done/0002.csv"] if mode == "move" else []
        assert keys(moto, bucket) == want


OUTAGE = """
pipelines:
  - name: copy
    source:
      connector: s3
      config: %(source)s
      errors: {retry: {max_attempts: 30, initial_backoff: 200ms, max_backoff: 1s}}
    topic: copied
    sinks:
      - name: archive
        connector: s3
        commit_interval: 0.05
        batch_size: 300
        errors: {retry: {max_attempts: 30, initial_backoff: 200ms, max_backoff: 1s}}
        config: %(sink)s
"""


def test_the_endpoint_down_for_ten_seconds_is_retried_and_nothing_is_lost(
    moto: MotoServer, tmp_path: Path
) -> None:
    """moto keeps its data in memory, so the endpoint is taken down by a TCP proxy in front
    of it: closing the proxy refuses connections (what a stopped server does) for 10 s, and
    the same data is there when it listens again."""
    bucket = moto.bucket()
    expected = put_objects(moto, bucket, 10, 1000)
    proxy = TcpProxy(moto.port)
    try:
        source = {
            **connection(moto, bucket, proxy.url),
            "prefix": "in/",
            "batch_size": 200,
            "connect_timeout": "1s",
            "read_timeout": "2s",
        }
        sink = {
            **connection(moto, bucket, proxy.url),
            "key_template": "out/",
            "rotate_records": 250,
            "connect_timeout": "1s",
            "read_timeout": "2s",
        }
        config = tmp_path / "outage.yaml"
        config.write_text(OUTAGE % {"source": json.dumps(source), "sink": json.dumps(sink)})
        log_path = tmp_path / "worker.log"
        proc = start_worker(meshconnect(tmp_path / "state", "run", str(config)), log_path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not keys(moto, bucket, "out/"):
            time.sleep(0.02)
        proxy.down()
        down_at = len(keys(moto, bucket, "out/"))
        time.sleep(10)
        proxy.up()
        assert proc.wait(timeout=180) == 0, log_path.read_text()[-3000:]
    finally:
        proxy.down()
    log = log_path.read_text()
    assert "retrying" in log or "restarting" in log  # the outage was seen
    assert 0 < down_at < 40
    got = []
    for key in keys(moto, bucket, "out/"):
        data = moto.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        got.extend(json.loads(line) for line in data.splitlines())
    assert got == expected
    assert SECRET_KEY not in log


async def test_a_bounded_read_reports_progress_and_metrics(
    moto: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from meshconnect import ConnectorContext
    from meshconnect.connectors.s3.config import S3SourceConfig
    from meshconnect.connectors.s3.source import S3Source

    bucket = moto.bucket()
    put_objects(moto, bucket, 3, 10)
    context = ConnectorContext("load", "s3", logging.getLogger("meshconnect.connector.load.s3"))
    source = S3Source(S3SourceConfig(**connection(moto, bucket), prefix="in/"), context)
    caplog.set_level(logging.INFO)
    await source.start({})
    count = 0
    while (batch := await source.poll()) is not None:
        count += len(batch.records)
    await source.stop()
    assert count == 30
    metrics = context.metrics
    assert metrics.counter("s3_objects_read").value == 3
    assert metrics.counter("s3_records_read").value == 30
    assert metrics.counter("s3_bytes_read").value > 0
    assert any("3/3 objects" in r.getMessage() for r in caplog.records), caplog.text


async def test_a_key_pattern_and_a_format_setting(moto: MotoServer, tmp_path: Path) -> None:
    bucket = moto.bucket()
    client = moto.client()
    client.put_object(Bucket=bucket, Key="in/a.log", Body=b'{"n": 1}\n')
    client.put_object(Bucket=bucket, Key="in/b.txt", Body=b'{"n": 2}\n')
    client.put_object(Bucket=bucket, Key="in/c.log", Body=gzip.compress(b'{"n": 3}\n'))
    client.put_object(Bucket=bucket, Key="other/d.log", Body=b'{"n": 4}\n')
    for name, extra, want in [
        ("by-pattern", {"pattern": r"\.log$", "format": "json", "compression": "none"}, [1]),
        ("gzip", {"pattern": "^c", "format": "json", "compression": "gzip"}, [3]),
        ("no-format", {}, []),  # .log and .txt are no known extension: skipped, warned
    ]:
        MemorySink.outputs.pop(name, None)
        source = {**connection(moto, bucket), "prefix": "in/", **extra}
        path = pipeline(tmp_path, source, {"connector": "memory", "config": {"name": name}})
        if name == "by-pattern":  # c.log is gzip without .gz: one failure, dead-lettered
            doc = json.loads(path.read_text())
            doc["pipelines"][0]["source"]["errors"] = {"tolerance": "all"}
            path.write_text(json.dumps(doc))
        assert await run_pipelines([path], registry=test_registry()) == 0
        assert [d["n"] for d in collect(name)] == want, name


async def test_a_key_a_string_cannot_hold_makes_valid_records(
    moto: MotoServer, tmp_path: Path
) -> None:
    """S3 keys may hold a tab or a DEL: such a key is spelled with ``\\u0009`` in the
    subject and the id (backslashes doubled first), so every record is a valid CloudEvent
    (issue 18 item 7)."""
    from meshconnect.eventrules import attribute_problems

    bucket = moto.bucket()
    client = moto.client()
    for key in ("in/a\tb.jsonl", "in/a\\u0009b.jsonl", "in/c\x7fd.jsonl"):
        client.put_object(Bucket=bucket, Key=key, Body=b'{"n": 1}\n')
    MemorySink.outputs.pop("spelled", None)
    path = pipeline(
        tmp_path,
        {**connection(moto, bucket), "prefix": "in/"},
        {"connector": "memory", "config": {"name": "spelled"}},
    )
    assert await run_pipelines([path], registry=test_registry()) == 0
    records = MemorySink.outputs["spelled"]
    assert sorted((r.subject, r.id) for r in records) == [
        ("in/a\\\\u0009b.jsonl", f"s3://{bucket}/in/a\\\\u0009b.jsonl#0"),
        ("in/a\\u0009b.jsonl", f"s3://{bucket}/in/a\\u0009b.jsonl#0"),
        ("in/c\\u007fd.jsonl", f"s3://{bucket}/in/c\\u007fd.jsonl#0"),
    ]
    for r in records:
        assert attribute_problems(r) == {}, r


async def test_a_key_a_string_cannot_hold_is_read_once_across_runs(
    moto: MotoServer, tmp_path: Path
) -> None:
    """Such a key is spelled in the records only: the committed position names the key
    itself, so a second run counts those objects as read instead of reading them again."""
    bucket = moto.bucket()
    client = moto.client()
    for key in ("in/a\tb.jsonl", "in/a\\b.jsonl", "in/c\x7fd.jsonl"):
        client.put_object(Bucket=bucket, Key=key, Body=b'{"n": 1}\n{"n": 2}\n')
    MemorySink.outputs.pop("twice", None)
    path = pipeline(
        tmp_path,
        {**connection(moto, bucket), "prefix": "in/"},
        {"connector": "memory", "config": {"name": "twice"}},
    )
    store = f"sqlite:///{tmp_path / 'mesh.db'}"
    assert await run_pipelines([path], store, registry=test_registry()) == 0
    assert len(MemorySink.outputs["twice"]) == 6
    assert await run_pipelines([path], store, registry=test_registry()) == 0
    assert len(MemorySink.outputs["twice"]) == 6


async def test_an_archived_object_is_one_failure_and_the_others_are_read_and_moved(
    moto: MotoServer, tmp_path: Path
) -> None:
    """Objects in Glacier (GetObject and CopyObject answer InvalidObjectState until a restore)
    stopped the source for good: five restarts on the same object, the objects after it never
    read. Now each is one failure naming its key; the rest is read and moved."""
    bucket = moto.bucket()
    client = moto.client()
    client.put_object(Bucket=bucket, Key="in/0001.jsonl", Body=b'{"n": 1}\n')
    client.put_object(
        Bucket=bucket, Key="in/0002.jsonl", Body=b'{"n": 2}\n', StorageClass="GLACIER"
    )
    client.put_object(Bucket=bucket, Key="in/0003.csv", Body=b"n\n3\n")
    client.put_object(
        Bucket=bucket, Key="in/0004.csv.gz", Body=gzip.compress(b"n\n4\n"), StorageClass="GLACIER"
    )
    source = {**connection(moto, bucket), "prefix": "in/", "after_read": "move", "move_to": "done/"}
    path = load_with_dead_letters(tmp_path, source)
    store = f"sqlite:///{tmp_path / 'mesh.db'}"
    assert await run_pipelines([path], store, registry=test_registry(), restart_backoff=0.05) == 0
    assert [int(d["n"]) for d in collect("read")] == [1, 3]
    dead = MemorySink.outputs["dead"]
    assert sorted(r.subject for r in dead) == ["in/0002.jsonl", "in/0004.csv.gz"]
    assert all("GLACIER" in str(r.extensions) for r in dead)
    # the archived ones cannot be copied before a restore: they stay; the others moved
    assert keys(moto, bucket) == [
        "done/0001.jsonl",
        "done/0003.csv",
        "in/0002.jsonl",
        "in/0004.csv.gz",
    ]
    # a second run retries the move of the last object read (archived: left in place, no
    # failed start) and reads nothing again
    MemorySink.outputs.pop("read", None)
    assert await run_pipelines([path], store, registry=test_registry(), restart_backoff=0.05) == 0
    assert collect("read") == []


async def test_a_csv_row_over_the_field_limit_loses_none_of_the_rows_after_it(
    moto: MotoServer, tmp_path: Path
) -> None:
    """Plain and gzipped CSV: a field over csv.field_size_limit() mid-object was a failure
    with no text and the rest of the object was never read; an unclosed quote at the end
    swallowed the rows after it into one good-looking row."""
    bucket = moto.bucket()
    client = moto.client()
    big = "x" * 200_000
    body = f"n,v\n1,a\n2,{big}\n3,c\n".encode()
    client.put_object(Bucket=bucket, Key="in/0001.csv", Body=body)
    client.put_object(Bucket=bucket, Key="in/0002.csv.gz", Body=gzip.compress(body))
    client.put_object(Bucket=bucket, Key="in/0003.csv", Body=b'n,v\n4,d\n5,"open\n6,f\n')
    path = load_with_dead_letters(tmp_path, {**connection(moto, bucket), "prefix": "in/"})
    assert await run_pipelines([path], registry=test_registry()) == 0
    assert [d["n"] for d in collect("read")] == ["1", "3", "1", "3", "4"]
    dead = sorted((r.subject, r.data) for r in MemorySink.outputs["dead"])
    assert dead == [
        ("in/0001.csv", f"2,{big}"),
        ("in/0002.csv.gz", f"2,{big}"),
        ("in/0003.csv", '5,"open\n6,f'),
    ]


async def test_a_source_configured_as_the_parquet_sink_reads_the_sinks_objects(
    moto: MotoServer, tmp_path: Path
) -> None:
    """The sink's `compression: gzip` is Parquet's column codec (names stay `.parquet`); a
    source given the same `format: parquet, compression: gzip` gunzipped each object and
    failed it as bad gzip."""
    bucket = moto.bucket()
    records = [{"n": n} for n in range(4)]
    sink = {
        **connection(moto, bucket),
        "key_template": "p/",
        "format": "parquet",
        "compression": "gzip",
    }
    doc = {
        "pipelines": [
            {
                "name": "write",
                "source": {"connector": "memory", "config": {"records": records}},
                "topic": "orders",
                "sinks": [{"name": "archive", "connector": "s3", "config": sink}],
            }
        ]
    }
    path = tmp_path / "write.yaml"
    path.write_text(json.dumps(doc))
    assert await run_pipelines([path], registry=test_registry()) == 0
    MemorySink.outputs.pop("back", None)
    source = {
        **connection(moto, bucket),
        "prefix": "p/",
        "format": "parquet",
        "compression": "gzip",
    }
    read = pipeline(tmp_path, source, {"connector": "memory", "config": {"name": "back"}})
    assert await run_pipelines([read], registry=test_registry()) == 0
    assert [d["n"] for d in collect("back")] == [0, 1, 2, 3]


async def test_an_object_over_max_object_bytes_is_one_failure_and_a_gzip_bomb_is_not_inflated(
    moto: MotoServer, tmp_path: Path
) -> None:
    """The whole object is held in memory: a 200 KiB gzip object of zeros inflated to 200 MiB
    (a few MiB of gzip to gigabytes), and a huge object was downloaded whole. Past
    max_object_bytes either is one failure; the decompression stops at the limit."""
    bucket = moto.bucket()
    client = moto.client()
    client.put_object(Bucket=bucket, Key="in/0001.jsonl", Body=b'{"n": 1}\n')
    bomb = gzip.compress(b"\n" * (200 * 1024 * 1024))
    client.put_object(Bucket=bucket, Key="in/0002.jsonl.gz", Body=bomb)
    client.put_object(Bucket=bucket, Key="in/0003.csv", Body=b"n\n" + b"3\n" * 600_000)
    client.put_object(Bucket=bucket, Key="in/0004.jsonl", Body=b'{"n": 4}\n')
    source = {**connection(moto, bucket), "prefix": "in/", "max_object_bytes": "1MiB"}
    path = load_with_dead_letters(tmp_path, source)
    assert await run_pipelines([path], registry=test_registry()) == 0
    assert [d["n"] for d in collect("read")] == [1, 4]
    dead = sorted(MemorySink.outputs["dead"], key=lambda r: r.subject or "")
    assert [r.subject for r in dead] == ["in/0002.jsonl.gz", "in/0003.csv"]
    assert "more than 1048576 bytes" in str(dead[0].extensions)
    assert "over max_object_bytes" in str(dead[1].extensions)


async def test_deletes_that_failed_after_read_are_done_by_the_next_start(tmp_path: Path) -> None:
    """after_read: delete without the permission to delete (a warning per object): the next
    start, the permission granted, deleted only the last object read; the others stayed
    forever (read, so never listed as new). The position now keeps every object committed
    and not yet deleted. On a moto server that checks credentials (its first requests, the
    setup, unchecked)."""
    import boto3

    setup = 13  # probe, bucket, 3 objects, admin (user, key, policy, attach), reader (same)
    server = MotoServer(tmp_path, env={"INITIAL_NO_AUTH_ACTION_COUNT": str(setup)})
    try:
        s3 = server.client()
        s3.create_bucket(Bucket="guarded")
        for n in range(3):
            s3.put_object(Bucket="guarded", Key=f"in/{n}.jsonl", Body=b'{"n": %d}\n' % n)
        iam = boto3.client(
            "iam",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )

        def user(name: str, actions: list[str]) -> dict[str, str]:
            iam.create_user(UserName=name)
            key = iam.create_access_key(UserName=name)["AccessKey"]
            doc = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
            }
            arn = iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(doc))
            iam.attach_user_policy(UserName=name, PolicyArn=arn["Policy"]["Arn"])
            return {
                "access_key_id": key["AccessKeyId"],
                "secret_access_key": key["SecretAccessKey"],
            }

        admin = user("admin", ["*"])
        reader = user("reader", ["s3:ListBucket", "s3:GetObject"])
        as_admin = {"endpoint_url": server.url, "region_name": "us-east-1"}
        admin_s3 = boto3.client(
            "s3",
            aws_access_key_id=admin["access_key_id"],
            aws_secret_access_key=admin["secret_access_key"],
            **as_admin,
        )
        source = {
            **connection(server, "guarded"),
            **reader,
            "prefix": "in/",
            "after_read": "delete",
        }
        MemorySink.outputs.pop("del", None)
        path = pipeline(tmp_path, source, {"connector": "memory", "config": {"name": "del"}})
        store = f"sqlite:///{tmp_path / 'mesh.db'}"
        assert await run_pipelines([path], store, registry=test_registry()) == 0
        assert sorted(d["n"] for d in collect("del")) == [0, 1, 2]
        listed = admin_s3.list_objects_v2(Bucket="guarded")["Contents"]
        assert [o["Key"] for o in listed] == ["in/0.jsonl", "in/1.jsonl", "in/2.jsonl"]
        # the permission granted: the next start deletes all three, reading nothing again
        admin_iam = boto3.client(
            "iam",
            aws_access_key_id=admin["access_key_id"],
            aws_secret_access_key=admin["secret_access_key"],
            **as_admin,
        )
        doc = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:DeleteObject"], "Resource": "*"}],
        }
        arn = admin_iam.create_policy(PolicyName="delete", PolicyDocument=json.dumps(doc))
        admin_iam.attach_user_policy(UserName="reader", PolicyArn=arn["Policy"]["Arn"])
        MemorySink.outputs.pop("del", None)
        assert await run_pipelines([path], store, registry=test_registry()) == 0
        assert collect("del") == []
        assert admin_s3.list_objects_v2(Bucket="guarded").get("Contents", []) == []
    finally:
        server.stop()


async def test_a_prefix_with_nothing_under_it_is_a_warning_naming_the_field(
    moto: MotoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """prefix: /in/ (a file-system habit; keys have no leading '/') read nothing and the run
    ended with status 0 and no word of why."""
    bucket = moto.bucket()
    moto.client().put_object(Bucket=bucket, Key="in/a.jsonl", Body=b'{"n": 1}\n')
    MemorySink.outputs.pop("none", None)
    source = {**connection(moto, bucket), "prefix": "/in/"}
    path = pipeline(tmp_path, source, {"connector": "memory", "config": {"name": "none"}})
    with caplog.at_level(logging.WARNING, logger="meshconnect"):
        assert await run_pipelines([path], registry=test_registry()) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("config.prefix" in w and "did you mean 'in/'" in w for w in warned), warned
