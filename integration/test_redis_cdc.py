"""CDC into a Redis cache: MariaDB's binlog (the canal source, each of its three formats)
applied by the redis sink as hashes, one per row, keyed by primary key. After inserts,
updates (one setting a column to NULL), deletes and primary-key changes (single and
composite keys), Redis holds exactly the source tables."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from canal_support import DECODER, mariadb
from mariadb import MariaDB

from conftest import meshconnect, start_worker

__all__ = ["mariadb"]

FORMATS = ("canal", "debezium", "row")
BEFORE = [  # in the snapshot
    "INSERT INTO shop.orders VALUES (1, 'ada', 5.10, NULL), (2, 'grace', 7.00, 'gift'),"
    " (3, 'alan', 0.99, NULL)",
    "INSERT INTO shop.lines VALUES (1, 'a|b', 2), (1, 'c', 1), (2, 'a', 9)",
]
AFTER = [  # from the binlog
    "INSERT INTO shop.orders VALUES (4, 'edsger', 12.50, 'rush')",
    "UPDATE shop.orders SET total = 5.18, note = 'late' WHERE id = 1",
    "UPDATE shop.orders SET note = NULL WHERE id = 2",
    "DELETE FROM shop.orders WHERE id = 3",
    "UPDATE shop.orders SET id = 40 WHERE id = 4",
    "UPDATE shop.lines SET sku = 'a\\\\|z' WHERE order_id = 1 AND sku = 'a|b'",
    "UPDATE shop.lines SET order_id = 3 WHERE order_id = 2",
    "DELETE FROM shop.lines WHERE order_id = 1 AND sku = 'c'",
    "INSERT INTO shop.orders VALUES (5, 'barbara', 3.00, NULL)",
]


def _key(*parts: Any) -> str:
    texts = [str(p) for p in parts]
    if len(texts) == 1:
        return texts[0]
    return "|".join(t.replace("\\", "\\\\").replace("|", "\\|") for t in texts)


def expected(server: MariaDB, fmt: str) -> dict[str, dict[bytes, bytes]]:
    out: dict[str, dict[bytes, bytes]] = {}
    for table, names, key in [
        ("orders", ["id", "customer", "total", "note"], ["id"]),
        ("lines", ["order_id", "sku", "qty"], ["order_id", "sku"]),
    ]:
        for row in server.execute(f"SELECT {', '.join(names)} FROM shop.{table}"):
            values = dict(zip(names, row, strict=True))
            k = _key(*(values[n] for n in key))
            out[f"{fmt}:shop.{table}:{k}"] = {
                n.encode(): str(v).encode() for n, v in values.items() if v is not None
            }
    return out


def held(client: Any, fmt: str) -> dict[str, dict[bytes, bytes]]:
    return {k.decode(): client.hgetall(k) for k in client.keys(f"{fmt}:shop.*")}


def test_cdc_to_redis_hashes_is_exactly_the_source_table(
    mariadb: MariaDB, redis_server: Any, tmp_path: Path
) -> None:
    mariadb.execute(
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id INT PRIMARY KEY, customer VARCHAR(40),"
        " total DECIMAL(10,2), note VARCHAR(20))",
        "CREATE TABLE shop.lines (order_id INT, sku VARCHAR(10), qty INT,"
        " PRIMARY KEY (order_id, sku))",
        *BEFORE,
    )
    pipelines = []
    for n, fmt in enumerate(FORMATS):
        pipelines.append(
            {
                "name": f"cdc-{fmt}",
                "source": {
                    "connector": "canal",
                    "config": {
                        "host": mariadb.host,
                        "port": mariadb.port,
                        "user": mariadb.user,
                        "server_id": 2001 + n,
                        "format": fmt,
                        "include": ["shop\\..*"],
                        "decoder": DECODER,
                        "heartbeat_interval": 1,
                    },
                },
                "topic": f"cdc-{fmt}",
                "sinks": [
                    {
                        "name": "cache",
                        "connector": "redis",
                        "commit_interval": 0.05,
                        "config": {
                            "url": redis_server.url,
                            "mode": "hset",
                            "key": fmt + ":{subject}:{partitionkey}",
                        },
                    }
                ],
            }
        )
    config = tmp_path / "cdc.yaml"
    config.write_text(json.dumps({"pipelines": pipelines}))
    log = tmp_path / "worker.log"
    proc = start_worker(meshconnect(tmp_path / "state", "run", str(config)), log)
    client = redis_server.client()

    def settled() -> bool:
        return all(held(client, f) == expected(mariadb, f) for f in FORMATS)

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not settled():
        time.sleep(0.2)
    assert settled(), log.read_text()[-3000:]  # the snapshot
    mariadb.execute(*AFTER)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not settled():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    for fmt in FORMATS:
        assert held(client, fmt) == expected(mariadb, fmt), (fmt, log.read_text()[-3000:])
    assert "row:shop.lines:1|a\\\\\\|z" in {k for k in held(client, "row")}
    assert len(held(client, "canal")) == 4 + 2  # old keys of the key changes are gone


def test_the_docs_example_runs_as_written(
    mariadb: MariaDB, redis_server: Any, tmp_path: Path
) -> None:
    """docs/connectors/redis.md's "CDC to a Redis cache" example, taken from the page with only
    the addresses and the user changed, gives the hashes the page shows."""
    import re

    import redis
    import yaml

    page = (Path(__file__).parents[1] / "docs" / "connectors" / "redis.md").read_text()
    section = page.split("### Example: CDC to a Redis cache")[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    example = yaml.safe_load(block[1])
    source = example["pipelines"][0]["source"]["config"]
    source.update(host=mariadb.host, port=mariadb.port, user=mariadb.user, decoder=DECODER)
    assert source.pop("password") == "${env:MYSQL_PASSWORD}"
    sink = example["pipelines"][0]["sinks"][0]["config"]
    assert sink["url"] == "redis://127.0.0.1:6379/0"
    sink["url"] = redis_server.url.rsplit("/", 1)[0] + "/3"
    example["pipelines"][0]["sinks"][0]["commit_interval"] = 0.05
    mariadb.execute(
        "DROP DATABASE IF EXISTS shop",  # the module's server: the other test made one
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id INT PRIMARY KEY, customer VARCHAR(40),"
        " total DECIMAL(10,2), note VARCHAR(20))",
        "INSERT INTO shop.orders VALUES (1001, 'ada', 5.10, NULL)",
    )
    config = tmp_path / "orders-cache.yaml"
    config.write_text(json.dumps(example))
    log = tmp_path / "worker.log"
    proc = start_worker(meshconnect(tmp_path / "state", "run", str(config)), log)
    db3 = redis.Redis.from_url(sink["url"])

    def wait(check: Any) -> bool:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not check():
            time.sleep(0.2)
        return bool(check())

    try:
        page_shows = {b"id": b"1001", b"customer": b"ada", b"total": b"5.10"}
        assert wait(lambda: db3.hgetall("order:1001") == page_shows), log.read_text()[-3000:]
        mariadb.execute("UPDATE shop.orders SET id = 1002 WHERE id = 1001")
        assert wait(lambda: db3.keys("order:*") == [b"order:1002"]), log.read_text()[-3000:]
        mariadb.execute("DELETE FROM shop.orders WHERE id = 1002")
        assert wait(lambda: db3.keys("order:*") == []), log.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
