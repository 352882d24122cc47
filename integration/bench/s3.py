"""Benchmark: the s3 sink and source against bare boto3 loops, all measured in this run, on a
private moto server (real HTTP).

    python integration/bench/s3.py                 # 1,000,000 records of ~300 bytes
    python integration/bench/s3.py --records 200000 --rounds 5
    python integration/bench/s3.py --smoke         # tiny N, for CI
    python integration/bench/s3.py --only source   # the source side (the bare sink loop
                                                   # still writes the objects it reads)

* **sink**: ``S3Sink`` (JSON lines + gzip, ``rotate_records`` objects) driven the way the sink
  loop drives it (``write`` batches of 2,000, a ``flush`` every 25 batches, the final
  ``tick``), against a bare loop that encodes the same records with the same encoder
  (``meshconnect.jsonvalue``), gzips each object's lines at the same level and
  ``put_object``\\ s it.
* **source**: ``S3Source`` reading those objects back (``poll`` until done), against a bare
  loop of ``list_objects_v2`` + ``get_object`` + gunzip + ``jsonvalue.loads`` per line.

All run in one process with the settings ``meshconnect run`` gives a worker process
(``meshconnect.cli.tune_runtime``: fewer cyclic GC passes). The contenders run interleaved,
``--rounds`` times; the medians and their ratios are printed
(records/s; higher is better), and each contender's CPU seconds (``time.process_time``:
user+sys of this process, every thread; the moto server is another process), which a
loaded machine disturbs much less than the clock. Performance is measured, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from s3_support import MotoServer, connection

from meshconnect import ConnectorContext, Record, jsonvalue
from meshconnect.connectors.s3.config import S3SinkConfig, S3SourceConfig
from meshconnect.connectors.s3.sink import S3Sink
from meshconnect.connectors.s3.source import S3Source

BATCH = 2000
FLUSH_EVERY = 25
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


def make_records(n: int) -> list[Record]:
    """``n`` records of ~300 bytes of JSON each, as the sink reads them from the mesh (their
    data repeats every 100,000 records, to keep the benchmark's memory small)."""
    rng = random.Random(1)
    distinct: list[dict[str, Any]] = []
    for i in range(min(n, 100_000)):
        distinct.append(
            {
                "id": i,
                "customer": f"c{rng.randrange(100000):06d}",
                "email": f"user{rng.randrange(10**6)}@example.com",
                "country": rng.choice(["DE", "FR", "NL", "IT", "ES", "PL"]),
                "total": Decimal(f"{rng.randrange(100000) / 100:.2f}"),
                "items": [
                    {"sku": f"S{rng.randrange(9999):04d}", "qty": rng.randrange(1, 5)}
                    for _ in range(3)
                ],
                "note": " ".join(rng.choice(WORDS) for _ in range(12)),
                "created": f"2024-05-01T{i % 24:02d}:{i % 60:02d}:00Z",
            }
        )
    return [
        Record(distinct[i % len(distinct)], id=f"r{i}", topic="orders", offset=i) for i in range(n)
    ]


def context(name: str) -> ConnectorContext:
    return ConnectorContext("bench", name, logging.getLogger(f"bench.{name}"))


def empty(server: MotoServer, bucket: str) -> None:
    client = server.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        items = [{"Key": o["Key"]} for o in page.get("Contents", []) or []]
        if items:
            client.delete_objects(Bucket=bucket, Delete={"Objects": items, "Quiet": True})


async def sink_meshconnect(
    server: MotoServer, bucket: str, records: list[Record], per_object: int
) -> None:
    config = S3SinkConfig(
        **connection(server, bucket),
        key_template="mesh/",
        compression="gzip",
        rotate_records=per_object,
        rotate_bytes="4GiB",
        multipart_threshold="5GiB",
    )
    sink = S3Sink(config, context("sink"))
    await sink.open(None)
    for i, start in enumerate(range(0, len(records), BATCH), start=1):
        await sink.write(records[start : start + BATCH])
        if i % FLUSH_EVERY == 0:
            await sink.flush()
    await sink.tick(final=True)
    await sink.flush()
    await sink.close()


def sink_bare(server: MotoServer, bucket: str, records: list[Record], per_object: int) -> None:
    client = server.client()
    dumps = jsonvalue.dumps
    for start in range(0, len(records), per_object):
        chunk = records[start : start + per_object]
        raw = b"".join(dumps(r.data, newline=True) for r in chunk)
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        body = compressor.compress(raw) + compressor.flush()
        client.put_object(Bucket=bucket, Key=f"bare/orders+{start:020d}.jsonl.gz", Body=body)


async def source_meshconnect(server: MotoServer, bucket: str) -> int:
    config = S3SourceConfig(**connection(server, bucket), prefix="mesh/", batch_size=5000)
    source = S3Source(config, context("source"))
    await source.start({})
    count = 0
    while True:
        batch = await source.poll()
        if batch is None:
            break
        count += len(batch.records)
        if batch.ack is not None:
            await batch.ack(None)
    await source.stop()
    return count


def source_bare(server: MotoServer, bucket: str) -> int:
    client = server.client()
    loads = jsonvalue.loads
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="bare/"):
        for item in page.get("Contents", []) or []:
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            for line in zlib.decompress(body, 31).splitlines():
                loads(line)
                count += 1
    return count


def check(count: int, n: int) -> None:
    if count != n:
        raise SystemExit(f"read {count:,} records, expected {n:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--per-object", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument(
        "--only",
        choices=("sink", "source"),
        help="time one side only (the other's bare loop still writes the objects to read)",
    )
    args = parser.parse_args()
    n = 5_000 if args.smoke else args.records
    per_object = 1_000 if args.smoke else args.per_object
    rounds = 1 if args.smoke else args.rounds
    logging.basicConfig(level=logging.WARNING)
    # the process settings of `meshconnect run` (GC thresholds, switch interval), for every
    # contender alike: the connectors run under them in a worker
    from meshconnect.cli import tune_runtime

    tune_runtime()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    records = make_records(n)
    size = sum(len(jsonvalue.dumps(r.data)) for r in records[:1000]) / min(n, 1000)
    print(f"{n:,} records of ~{size:.0f} bytes, {per_object:,} per object, {rounds} round(s)")
    with tempfile.TemporaryDirectory() as tmp:
        server = MotoServer(Path(tmp))
        try:
            bucket = server.bucket()
            results: dict[str, list[float]] = {
                k: [] for k in ("sink bare", "sink s3", "source bare", "source s3")
            }
            cpu: dict[str, list[float]] = {k: [] for k in results}

            def timed(name: str, run: Any) -> None:
                started, cpu_started = time.perf_counter(), time.process_time()
                run()
                cpu[name].append(time.process_time() - cpu_started)
                results[name].append(n / (time.perf_counter() - started))

            for _ in range(rounds):
                empty(server, bucket)
                timed("sink bare", lambda: sink_bare(server, bucket, records, per_object))
                if args.only != "source":
                    timed(
                        "sink s3",
                        lambda: asyncio.run(sink_meshconnect(server, bucket, records, per_object)),
                    )
                else:
                    client = server.client()
                    for page in client.get_paginator("list_objects_v2").paginate(
                        Bucket=bucket, Prefix="bare/"
                    ):
                        for item in page.get("Contents", []) or []:
                            target = "mesh/" + item["Key"][len("bare/") :]
                            client.copy_object(
                                Bucket=bucket,
                                Key=target,
                                CopySource={"Bucket": bucket, "Key": item["Key"]},
                            )
                if args.only != "sink":
                    timed("source bare", lambda: check(source_bare(server, bucket), n))
                    timed(
                        "source s3",
                        lambda: check(asyncio.run(source_meshconnect(server, bucket)), n),
                    )
        finally:
            server.stop()
    results = {k: v for k, v in results.items() if v}
    medians = {k: statistics.median(v) for k, v in results.items()}
    cpu_medians = {k: statistics.median(cpu[k]) for k in results}
    for name, values in results.items():
        print(
            f"{name:12s} {medians[name]:>12,.0f} records/s  (runs: "
            + ", ".join(f"{v:,.0f}" for v in values)
            + f")  CPU {cpu_medians[name]:.2f} s (runs: "
            + ", ".join(f"{v:.2f}" for v in cpu[name])
            + ")"
        )
    for side in ("sink", "source"):
        if f"{side} s3" in results and f"{side} bare" in results:
            wall = medians[f"{side} s3"] / medians[f"{side} bare"]
            by_cpu = cpu_medians[f"{side} bare"] / cpu_medians[f"{side} s3"]
            print(
                f"{side + ' ratio':12s} {wall:.2f}x the bare boto3 loop "
                f"(by CPU time, user+sys of this process: {by_cpu:.2f}x)"
            )
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
