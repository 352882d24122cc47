"""Benchmark: the redis sink's HSET by key against a bare redis-py pipeline loop doing the same
HSETs in the same batch size, in one run, on a private redis-server.

    python integration/bench/redis.py                 # 1,000,000 records, 3 rounds
    python integration/bench/redis.py --records 200000 --repeat 5
    python integration/bench/redis.py --smoke         # tiny N, for CI

Records are ``{"id": i, "customer": "c…", "qty": …, "price": Decimal("12.34"), "status":
"paid"}``; each becomes the hash ``KEY:{id}`` of five string fields. Contenders, interleaved
round by round (the machine is shared; the medians are printed):

* ``bare loop``: ``pipe = r.pipeline(transaction=False)``, ``pipe.hset(key, mapping={k:
  str(v)})`` for each record of a batch, ``pipe.execute()`` per batch (sync redis-py);
* ``sink (plain)``: :class:`RedisSink` ``mode: hset``, ``key: "…:{data.id}"``,
  ``replace: false``, ``atomic: false``, the same commands: ``write`` per batch, ``flush``;
* ``sink (defaults)``: the same with ``replace: true`` and ``atomic: true`` (DEL + HSET per
  record, each batch in MULTI/EXEC), for information.

The sink runs in-process on records already built (the mesh is not part of it). Prints
records/s and the ratio to the bare loop (target ≥ 0.7 for ``sink (plain)``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This file's own directory first on sys.path would make `import redis` import this file.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from redis_support import private_redis  # noqa: E402

from meshconnect import ConnectorContext, Record  # noqa: E402
from meshconnect.connectors.redis.config import RedisSinkConfig  # noqa: E402
from meshconnect.connectors.redis.sink import RedisSink  # noqa: E402


def rows(n: int) -> list[dict[str, object]]:
    return [
        {"id": i, "customer": f"c{i % 1000}", "qty": i % 7, "price": Decimal("12.34"),
         "status": "paid"}
        for i in range(n)
    ]  # fmt: skip


def bare(url_port: int, data: list[dict[str, object]], batch: int, prefix: str) -> float:
    import redis

    r = redis.Redis(host="127.0.0.1", port=url_port)
    start = time.perf_counter()
    for at in range(0, len(data), batch):
        pipe = r.pipeline(transaction=False)
        for row in data[at : at + batch]:
            pipe.hset(f"{prefix}:{row['id']}", mapping={k: str(v) for k, v in row.items()})
        pipe.execute()
    elapsed = time.perf_counter() - start
    r.close()
    return elapsed


async def sink(
    url: str, data: list[dict[str, object]], batch: int, prefix: str, **config: object
) -> float:
    records = [Record(row, id=str(row["id"])) for row in data]
    context = ConnectorContext("bench", "redis", logging.getLogger("bench"))
    s = RedisSink(
        RedisSinkConfig(url=url, mode="hset", key=prefix + ":{data.id}", **config), context
    )  # type: ignore[arg-type]
    await s.open(None)
    start = time.perf_counter()
    for at in range(0, len(records), batch):
        await s.write(records[at : at + batch])
    await s.flush()
    elapsed = time.perf_counter() - start
    await s.close()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.records, args.repeat = 5_000, 1
    data = rows(args.records)
    times: dict[str, list[float]] = {"bare loop": [], "sink (plain)": [], "sink (defaults)": []}
    with tempfile.TemporaryDirectory() as tmp, private_redis(Path(tmp)) as server:
        server.client().config_set("appendonly", "no")  # measure the client side, not fsync
        for round_ in range(args.repeat):
            for name in times:
                server.client().flushall()
                prefix = f"b{round_}"
                if name == "bare loop":
                    t = bare(server.port, data, args.batch, prefix)
                elif name == "sink (plain)":
                    t = asyncio.run(
                        sink(server.url, data, args.batch, prefix, replace=False, atomic=False)
                    )
                else:
                    t = asyncio.run(sink(server.url, data, args.batch, prefix))
                assert server.client().dbsize() == args.records, name
                times[name].append(t)
    load = os.getloadavg()
    print(f"redis sink: {args.records:,} records, batches of {args.batch}, {args.repeat} rounds "
          f"interleaved; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    base = statistics.median(times["bare loop"])
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"  {name:16} {args.records / t:>10,.0f} records/s  (median {t:.2f} s)  "
              f"ratio {base / t:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
