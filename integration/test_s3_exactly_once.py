"""The s3 sink's exactly-once argument, case by case, driven the way the sink loop drives it
(meshconnect.testing's helpers) against moto: objects uploaded after the last commit are
replaced even when the re-run closes objects elsewhere, and with several partitions the
records already in uploaded objects are not written twice."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

from s3_support import MotoServer, body, connection, keys, moto

from meshconnect import ConnectorContext, Flushed, Record, jsonvalue
from meshconnect.connectors.s3.config import S3SinkConfig
from meshconnect.connectors.s3.sink import S3Sink
from meshconnect.testing import run_pipelines, test_registry

__all__ = ["moto"]


def sink(server: MotoServer, bucket: str, **config: Any) -> S3Sink:
    context = ConnectorContext("test", "s3", logging.getLogger("test.s3"))
    return S3Sink(S3SinkConfig(**connection(server, bucket), **config), context)


def record(n: int, k: int = 0) -> Record:
    return Record({"n": n, "k": k}, id=f"r{n}", topic="t", offset=n)


def numbers(server: MotoServer, bucket: str) -> list[int]:
    return [
        jsonvalue.loads(line)["n"]
        for key in keys(server, bucket)
        for line in body(server, bucket, key).splitlines()
    ]


async def test_objects_of_a_crashed_run_that_the_rerun_splits_differently_are_replaced(
    moto: MotoServer,
) -> None:
    bucket = moto.bucket()
    first = sink(moto, bucket, key_template="p/", rotate_records=3)
    await first.open(None)
    await first.write([record(n) for n in range(3)])
    committed = await first.flush()  # the commit: offsets up to 3, and this state
    assert isinstance(committed, Flushed) and committed.pending == 0
    await first.write([record(n) for n in range(3, 10)])
    await first.flush()  # objects 3 and 6 uploaded ...
    del first  # ... and the process dies before the commit
    gc.collect()
    assert keys(moto, bucket) == [
        "p/t+00000000000000000000.jsonl",
        "p/t+00000000000000000003.jsonl",
        "p/t+00000000000000000006.jsonl",
    ]
    # the re-run closes objects by size instead: 3..9 in one object; object 6 must go
    again = sink(moto, bucket, key_template="p/", rotate_records=100)
    await again.open(committed.state)
    await again.write([record(n) for n in range(3, 10)])
    await again.tick(final=True)
    assert (await again.flush()).pending == 0
    await again.close()
    assert keys(moto, bucket) == [
        "p/t+00000000000000000000.jsonl",
        "p/t+00000000000000000003.jsonl",
    ]
    assert numbers(moto, bucket) == list(range(10))
    metrics = again.context.metrics
    assert metrics.counter("s3_orphans_deleted").value == 2  # 3 and 6 (3 is then written anew)
    assert metrics.counter("s3_objects_written").value == 1
    assert metrics.counter("s3_records_written").value == 7


async def test_with_several_partitions_uploaded_records_are_not_written_twice(
    moto: MotoServer,
) -> None:
    """Partition k=0 closes objects while k=1 stays open: the commit stops at k=1's first
    record, so k=0's uploaded records come again after a crash, and are skipped."""
    bucket = moto.bucket()
    records = [record(n, k=0 if n % 8 else 1) for n in range(40)]
    first = sink(moto, bucket, key_template="k={data.k}/", rotate_records=5)
    await first.open(None)
    await first.write(records[:20])
    flushed = await first.flush()
    assert isinstance(flushed, Flushed)
    committed = 20 - flushed.pending  # the loop commits up to the first pending record
    assert committed == 0  # record 0 (k=1) sits in an open object
    assert flushed.state == {"done": {"t": {"k=0/": 18}}}  # 1..17 are uploaded
    await first.write(records[20:30])
    del first  # SIGKILL
    gc.collect()

    # closing objects elsewhere this time (as rotation by time may): k=0 objects of 7
    again = sink(moto, bucket, key_template="k={data.k}/", rotate_records=7)
    await again.open(flushed.state)
    await again.write(records[committed:])
    await again.tick(final=True)
    assert (await again.flush()).pending == 0
    await again.close()
    got = numbers(moto, bucket)
    assert sorted(got) == list(range(40))
    assert len(got) == 40
    assert [k for k in keys(moto, bucket) if k.startswith("k=1/")] == [
        "k=1/t+00000000000000000000.jsonl"  # 0, 8, 16, 24, 32
    ]
    assert "k=0/t+00000000000000000018.jsonl" in keys(moto, bucket)  # after the skipped


async def test_a_sink_of_another_format_under_the_same_prefix_keeps_the_others_objects(
    moto: MotoServer, tmp_path: Path
) -> None:
    """A JSON-lines sink added beside a Parquet sink of the same key_template: before its
    first upload it deleted every object of its topic at or past its first offset, whatever
    the extension: the Parquet archive was gone. Only its own names (this extension) are its
    leftovers."""
    bucket = moto.bucket()
    records = [{"n": n} for n in range(6)]
    base = {**connection(moto, bucket), "key_template": "arch/", "rotate_records": 3}
    parquet = {"name": "pq", "connector": "s3", "config": {**base, "format": "parquet"}}
    lines = {"name": "js", "connector": "s3", "config": {**base, "compression": "gzip"}}
    store = f"sqlite:///{tmp_path / 'mesh.db'}"

    def write(sinks: list[Any]) -> Path:
        doc = {
            "pipelines": [
                {
                    "name": "orders",
                    "source": {"connector": "memory", "config": {"records": records}},
                    "topic": "orders",
                    "sinks": sinks,
                }
            ]
        }
        path = tmp_path / "pipeline.yaml"
        path.write_bytes(jsonvalue.dumps(doc))
        return path

    assert await run_pipelines([write([parquet])], store, registry=test_registry()) == 0
    assert await run_pipelines([write([parquet, lines])], store, registry=test_registry()) == 0
    assert keys(moto, bucket) == [
        "arch/orders+00000000000000000000.jsonl.gz",
        "arch/orders+00000000000000000000.parquet",
        "arch/orders+00000000000000000003.jsonl.gz",
        "arch/orders+00000000000000000003.parquet",
    ]
