"""Partitioned topics (``partitions: N``): routing by ``partitionkey``, the consumers each sink
runs as, their consumer groups, and what refuses to run that way (docs/scaleout.md#partitions)."""

from __future__ import annotations

import asyncio
import json
import textwrap
import zlib
from pathlib import Path
from typing import Any

import pytest
from cli_support import mc

from meshconnect.config.loader import load_pipeline_files
from meshconnect.deliveries import Deliveries
from meshconnect.errors import ValidationErrors
from meshconnect.mesh.routing import Subscription, partition_for, partition_of, partition_topic
from meshconnect.plugins import load_registry
from meshconnect.records import Record


def test_a_key_always_lands_in_the_same_partition() -> None:
    # crc32 of the key's UTF-8 text: the same in every process and version.
    assert partition_for("order-17", 4) == zlib.crc32(b"order-17") % 4
    assert [partition_for(str(k), 3) for k in range(6)] == [
        zlib.crc32(str(k).encode()) % 3 for k in range(6)
    ]
    # An integer key is its text, a boolean its CloudEvents text, bytes as they are.
    assert partition_for(42, 7) == partition_for("42", 7)
    assert partition_for(True, 7) == partition_for("true", 7)
    assert partition_for(b"\xff\x00", 5) == zlib.crc32(b"\xff\x00") % 5
    assert partition_for("Ünïcode", 9) == zlib.crc32("Ünïcode".encode()) % 9
    # A lone surrogate (a non-UTF-8 name spelled one to one) does not crash the router.
    assert 0 <= partition_for("bad\udcff", 9) < 9
    # No key: partition 0, as Canal sends DDL to partition 0.
    assert partition_for(None, 8) == 0


def test_partition_topic_names_round_trip() -> None:
    assert partition_topic("cdc.shop.orders", 3) == "cdc.shop.orders#3"
    assert partition_of("cdc.shop.orders#3") == ("cdc.shop.orders", 3)
    assert partition_of("orders") == ("orders", 0)
    # '#' is in no topic name: only the router's suffix is read as a partition.
    assert partition_of("orders#x") == ("orders#x", 0)
    assert partition_of("orders#٣") == ("orders#٣", 0)  # an Arabic-Indic digit is no number


def test_a_subscription_reads_its_share_of_the_partitions() -> None:
    one = Subscription(("orders",))
    # One consumer reads the topic, partitioned or not, every partition.
    assert all(one.matches(t) for t in ["orders", "orders#0", "orders#5"])
    assert not one.matches("orders2") and not one.matches("other#0")
    slots = [Subscription(("orders", "cdc.*"), k, 3) for k in range(3)]
    topics = ["orders", *[f"orders#{p}" for p in range(6)], "cdc.a#4", "cdc.b"]
    reads = {k: [t for t in topics if s.matches(t)] for k, s in enumerate(slots)}
    assert reads == {
        0: ["orders", "orders#0", "orders#3", "cdc.b"],
        1: ["orders#1", "orders#4", "cdc.a#4"],
        2: ["orders#2", "orders#5"],
    }
    # Every topic is read by exactly one consumer.
    assert sorted(t for ts in reads.values() for t in ts) == sorted(topics)
    # The partition a consumer reads whether or not the store holds it yet.
    assert slots[1].literal_topics() == ["orders#1"]
    assert one.literal_topics() == ["orders"]


def test_deliveries_count_the_consumer_of_each_partition() -> None:
    deliveries = Deliveries()
    deliveries.add_group("p/s#0", Subscription(("t",), 0, 2))
    deliveries.add_group("p/s#1", Subscription(("t",), 1, 2))
    assert deliveries._readers("t#1") == ["p/s#1"]
    assert deliveries._readers("t#0") == ["p/s#0"]
    record = Record(id="1", source="s", type="t", data={}, topic="t#1", offset=4)
    assert not deliveries._done([(record.topic, record.offset)])  # type: ignore[list-item]
    deliveries.committed("p/s#0", {"t#1": 9})  # another consumer's commit does not count
    assert not deliveries._done([("t#1", 4)])
    deliveries.committed("p/s#1", {"t#1": 5})
    assert deliveries._done([("t#1", 4)])


PARTITIONED = """
pipelines:
  - name: orders
    source:
      connector: file
      config: {path: in.jsonl, follow: false}
    transforms:
      - type: set_key
        fields: [data.k]
    partitions: 3
    sinks:
      - connector: file
        config: {path: "out/orders-{partition}.jsonl"}
"""


def _write_input(tmp_path: Path, n: int) -> None:
    with (tmp_path / "in.jsonl").open("w") as f:
        for i in range(n):
            f.write(json.dumps({"k": f"c{i % 41}", "seq": i}) + "\n")


def _run(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = mc(tmp_path, *args)
    return result.returncode, result.stdout + result.stderr


def test_a_partitioned_pipeline_delivers_each_record_once_in_key_order(tmp_path: Path) -> None:
    _write_input(tmp_path, 5000)
    (tmp_path / "p.yaml").write_text(PARTITIONED)
    code, output = _run(tmp_path, "run", str(tmp_path / "p.yaml"))
    assert code == 0, output
    files = {p: tmp_path / "out" / f"orders-{p}.jsonl" for p in range(3)}
    seen: dict[str, int] = {}
    total = 0
    for p, path in files.items():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        total += len(rows)
        assert rows, f"partition {p} is empty"
        by_key: dict[str, list[int]] = {}
        for row in rows:
            assert partition_for(row["k"], 3) == p  # the record is in its key's partition
            by_key.setdefault(row["k"], []).append(row["seq"])
            assert seen.setdefault(row["k"], p) == p  # a key lives in one partition only
        assert all(seqs == sorted(seqs) for seqs in by_key.values())  # in order per key
    assert total == 5000
    code, output = _run(tmp_path, "topics", "list", "--json")
    assert code == 0
    topics = {t["topic"]: t for t in json.loads(output)}
    assert sorted(topics) == ["orders#0", "orders#1", "orders#2"]
    code, output = _run(tmp_path, "offsets", "show", "--json")
    groups = {s["group"]: s for s in json.loads(output)["sinks"]}
    assert sorted(groups) == ["orders/file#0", "orders/file#1", "orders/file#2"]
    assert groups["orders/file#1"]["topics"] == [
        {
            "topic": "orders#1",
            "offset": topics["orders#1"]["end"],
            "end": topics["orders#1"]["end"],
            "lag": 0,
        }
    ]
    # A rerun delivers nothing more.
    code, output = _run(tmp_path, "run", str(tmp_path / "p.yaml"))
    assert code == 0, output
    assert sum(len(f.read_text().splitlines()) for f in files.values()) == 5000


def test_a_reset_moves_every_consumer_of_the_sink(tmp_path: Path) -> None:
    _write_input(tmp_path, 300)
    (tmp_path / "p.yaml").write_text(PARTITIONED)
    assert _run(tmp_path, "run", str(tmp_path / "p.yaml"))[0] == 0
    code, output = _run(
        tmp_path,
        "offsets",
        "reset",
        str(tmp_path / "p.yaml"),
        "orders",
        "--sink",
        "file",
        "--to",
        "beginning",
        "--yes",
    )
    assert code == 0, output
    for p in range(3):
        assert f"sink orders/file#{p}: offsets" in output
    code, output = _run(tmp_path, "offsets", "show", "--json")
    for sink in json.loads(output)["sinks"]:
        assert [t["offset"] for t in sink["topics"]] == [0], sink
    # Delivered again, after the existing lines (the output is kept).
    assert _run(tmp_path, "run", str(tmp_path / "p.yaml"))[0] == 0
    total = sum(
        len((tmp_path / "out" / f"orders-{p}.jsonl").read_text().splitlines()) for p in range(3)
    )
    assert total == 600


def test_changing_the_partition_count_of_a_sink_that_committed_is_refused(
    tmp_path: Path,
) -> None:
    _write_input(tmp_path, 200)
    (tmp_path / "p.yaml").write_text(PARTITIONED)
    assert _run(tmp_path, "run", str(tmp_path / "p.yaml"))[0] == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    (tmp_path / "p.yaml").write_text(PARTITIONED.replace("partitions: 3", "partitions: 2"))
    code, output = _run(tmp_path, "run", str(tmp_path / "p.yaml"))
    assert code == 1
    assert "pipeline 'orders' ran with partitions: 3 and now has partitions: 2" in output
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    # Back to one consumer: refused too (its group would start from the beginning).
    (tmp_path / "p.yaml").write_text(
        PARTITIONED.replace("    partitions: 3\n", "").replace("-{partition}", "-all")
    )
    code, output = _run(tmp_path, "run", str(tmp_path / "p.yaml"))
    assert code == 1 and "now has partitions: 1" in output
    # A store from before the count was recorded: the sink's consumer groups tell.
    asyncio.run(_forget_the_count(tmp_path, "orders"))
    code, output = _run(tmp_path, "run", str(tmp_path / "p.yaml"))
    assert code == 1
    assert (
        "sink orders/file: the store holds offsets of its consumer group(s) orders/file#0" in output
    )
    assert "committed with partitions: at least 3; this pipeline has partitions: 1" in output
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


async def _forget_the_count(tmp_path: Path, pipeline: str) -> None:
    from meshconnect.mesh import open_store
    from meshconnect.offsets import partitions_id

    store = open_store(f"sqlite:///{tmp_path / 'state' / 'mesh.db'}", load_registry())
    await store.open()
    try:
        assert (await store.positions(partitions_id(pipeline))) == {"count": {"n": 3}}
        await store.set_positions(partitions_id(pipeline), None)
    finally:
        await store.close()


def test_validate_refuses_sinks_that_would_share_one_output(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PARTITIONED.replace("-{partition}", ""))
    with pytest.raises(ValidationErrors) as caught:
        load_pipeline_files([str(path)], load_registry())
    text = str(caught.value)
    assert "p.yaml:10:17: pipelines[0].partitions" in text
    assert "sinks[0] (file) cannot run as 3 consumers" in text
    assert "put {partition} in its path" in text
    # A sink that does not declare it may run as several consumers is refused (the in-memory
    # test sink truncates one shared list on open).
    path.write_text(
        textwrap.dedent(
            """
            pipelines:
              - name: p
                source: {connector: memory, config: {records: [{n: 1}]}}
                partitions: 2
                sinks: [{connector: memory}]
            """
        )
    )
    from meshconnect.testing import test_registry

    with pytest.raises(ValidationErrors) as caught:
        load_pipeline_files([str(path)], test_registry())
    assert "does not declare that several consumers may write at once" in str(caught.value)
    # Out of range.
    path.write_text(PARTITIONED.replace("partitions: 3", "partitions: 0"))
    with pytest.raises(ValidationErrors, match="partitions"):
        load_pipeline_files([str(path)], load_registry())


def test_one_consumer_reads_every_partition_of_a_topic_another_pipeline_wrote(
    tmp_path: Path,
) -> None:
    _write_input(tmp_path, 1000)
    reader = """
  - name: reader
    topic: orders
    sinks:
      - connector: file
        config: {path: out/all.jsonl}
"""
    (tmp_path / "p.yaml").write_text(PARTITIONED + reader)
    code, output = _run(tmp_path, "run", str(tmp_path / "p.yaml"))
    assert code == 0, output
    rows = [json.loads(line) for line in (tmp_path / "out" / "all.jsonl").read_text().splitlines()]
    assert sorted(r["seq"] for r in rows) == list(range(1000))
    for key in {r["k"] for r in rows}:
        seqs = [r["seq"] for r in rows if r["k"] == key]
        assert seqs == sorted(seqs)


async def test_each_consumer_has_metrics_of_its_own(tmp_path: Path) -> None:
    from test_metrics import samples, value

    from meshconnect.mesh import open_store
    from meshconnect.worker import Worker

    _write_input(tmp_path, 900)
    (tmp_path / "p.yaml").write_text(PARTITIONED.replace("in.jsonl", str(tmp_path / "in.jsonl")))
    registry = load_registry()
    config = load_pipeline_files([str(tmp_path / "p.yaml")], registry)
    store = open_store(f"sqlite:///{tmp_path / 'mesh.db'}", registry)
    await store.open()
    try:
        worker = Worker(config, store)
        assert await worker.run() == 0
        await worker.refresh_metrics()
        scraped = samples(await worker.metrics.scrape())
    finally:
        await store.close()
    written = {
        k: value(
            scraped,
            "meshconnect_records_out_total",
            pipeline="orders",
            connector=f"file#{k}",
            kind="sink",
        )
        for k in range(3)
    }
    lengths = {
        k: len((tmp_path / "out" / f"orders-{k}.jsonl").read_text().splitlines()) for k in range(3)
    }
    assert written == lengths and sum(written.values()) == 900
    for k in range(3):
        lag = value(
            scraped,
            "meshconnect_consumer_lag_records",
            topic=f"orders#{k}",
            group=f"orders/file#{k}",
        )
        assert lag == 0


def test_sinks_and_expressions_see_the_topic_without_its_partition(tmp_path: Path) -> None:
    """A jdbc sink names its table after the topic, and a sink-side `when` compares `topic`:
    both see `orders`, not the partition `orders#1` the record was stored in."""
    import sqlite3

    _write_input(tmp_path, 400)
    db = tmp_path / "out.db"
    (tmp_path / "p.yaml").write_text(
        PARTITIONED.replace(
            """      - connector: file
        config: {path: "out/orders-{partition}.jsonl"}""",
            f"""      - connector: jdbc
        config: {{url: "sqlite:///{db}", mode: upsert, key: [seq], auto_create: true}}
        transforms:
          - type: insert_field
            field: data.topic
            template: "{{topic}}"
          - type: insert_field
            field: data.hit
            value: 1
            when: "topic == 'orders'\"""",
        )
    )
    code, output = _run(tmp_path, "run", str(tmp_path / "p.yaml"))
    assert code == 0, output
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type='table'")]
        assert "orders" in tables and not [t for t in tables if "#" in t]
        rows = conn.execute(
            "select count(*), min(topic), max(topic), sum(hit) from orders"
        ).fetchone()
    assert rows == (400, "orders", "orders", 400)


def test_jdbc_consumers_evolving_one_table_do_not_dead_letter_each_others_columns(
    tmp_path: Path,
) -> None:
    """Four consumers upsert into one table with auto_create and auto_evolve while new
    columns keep appearing: a column another consumer added meanwhile is not an error (every
    ALTER after the first failed as 'duplicate column' and its records were dead-lettered)."""
    import sqlite3

    with (tmp_path / "in.jsonl").open("w") as f:
        for i in range(1200):
            row = {"id": i % 300, "k": f"c{i % 41}", f"col{i // 100}": i}
            f.write(json.dumps(row) + "\n")
    db = tmp_path / "out.db"
    (tmp_path / "p.yaml").write_text(
        PARTITIONED.replace("partitions: 3", "partitions: 4").replace(
            """      - connector: file
        config: {path: "out/orders-{partition}.jsonl"}""",
            f"""      - connector: jdbc
        batch_size: 20
        config:
          url: "sqlite:///{db}"
          table: t
          mode: upsert
          key: [id]
          auto_create: true
          auto_evolve: true
        errors: {{tolerance: all, dead_letter_topic: dlq.t}}""",
        )
    )
    code, output = _run(tmp_path, "run", str(tmp_path / "p.yaml"))
    assert code == 0, output
    code, listing = _run(tmp_path, "topics", "list", "--json")
    assert "dlq.t" not in {t["topic"] for t in json.loads(listing)}, output
    with sqlite3.connect(db) as conn:
        columns = [r[1] for r in conn.execute("pragma table_info(t)")]
        assert sorted(c for c in columns if c.startswith("col")) == sorted(
            f"col{n}" for n in range(12)
        )
        assert conn.execute("select count(*) from t").fetchone() == (300,)


def test_meshconnect_test_shows_the_topic_and_the_partition(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").touch()
    (tmp_path / "p.yaml").write_text(PARTITIONED)
    key = "c7"
    part = partition_for(key, 3)
    (tmp_path / "p_test.yaml").write_text(
        textwrap.dedent(
            f"""
            file: p.yaml
            tests:
              - name: routed by key
                input:
                  - data: {{k: {key}, seq: 1}}
                  - data: {{k: {key}, seq: 2}}
                expect:
                  - {{topic: orders, partition: {part}, partitionkey: {key}}}
                  - {{topic: orders, partition: {part}, data: {{k: {key}, seq: 2}}}}
            """
        )
    )
    code, output = _run(tmp_path, "test", str(tmp_path / "p_test.yaml"))
    assert code == 0, output
    (tmp_path / "p_test.yaml").write_text(
        (tmp_path / "p_test.yaml")
        .read_text()
        .replace(
            f"partition: {partition_for(key, 3)}, data",
            f"partition: {(partition_for(key, 3) + 1) % 3}, data",
        )
    )
    code, output = _run(tmp_path, "test", str(tmp_path / "p_test.yaml"))
    assert code == 1 and "partition" in output, output


def test_an_extension_named_partition_does_not_stand_in_for_the_partition(
    tmp_path: Path,
) -> None:
    """CloudEvents allows an extension named ``partition``; in a pipeline with
    ``partitions:`` a case's ``partition`` is still the one the record's key puts it in."""
    (tmp_path / "in.jsonl").touch()
    (tmp_path / "p.yaml").write_text(PARTITIONED)
    key = "c7"
    part = partition_for(key, 3)
    case = textwrap.dedent(
        f"""
        file: p.yaml
        tests:
          - name: an extension named partition
            input:
              - {{data: {{k: {key}}}, partition: "{part + 1}"}}
            expect:
              - {{topic: orders, partition: PART}}
        """
    )
    (tmp_path / "p_test.yaml").write_text(case.replace("PART", str(part)))
    code, output = _run(tmp_path, "test", str(tmp_path / "p_test.yaml"))
    assert code == 0, output
    (tmp_path / "p_test.yaml").write_text(case.replace("PART", f'"{part + 1}"'))
    code, output = _run(tmp_path, "test", str(tmp_path / "p_test.yaml"))
    assert code == 1 and "partition" in output, output


def test_raising_the_count_is_refused_and_the_source_stores_nothing_with_it(
    tmp_path: Path,
) -> None:
    """3 -> 4: no old consumer group is outside the new set, and the source would put a
    key's new records in another partition than its old ones; both are refused, before the
    source stores anything."""
    _write_input(tmp_path, 300)
    (tmp_path / "p.yaml").write_text(PARTITIONED)
    assert _run(tmp_path, "run", str(tmp_path / "p.yaml"))[0] == 0
    with (tmp_path / "in.jsonl").open("a") as f:  # new input the source would read
        f.write(json.dumps({"k": "c1", "seq": 300}) + "\n")
    (tmp_path / "p.yaml").write_text(PARTITIONED.replace("partitions: 3", "partitions: 4"))
    code, output = _run(tmp_path, "run", str(tmp_path / "p.yaml"))
    assert code == 1
    assert "pipeline 'orders' ran with partitions: 3 and now has partitions: 4" in output
    code, listing = _run(tmp_path, "topics", "list", "--json")
    topics = {t["topic"]: t["end"] for t in json.loads(listing)}
    assert sorted(topics) == ["orders#0", "orders#1", "orders#2"]
    assert sum(topics.values()) == 300
    # offsets show lists the pipeline's source, not the record of its count.
    code, shown = _run(tmp_path, "offsets", "show", "--json")
    assert [s["id"] for s in json.loads(shown)["sources"]] == ["orders/file"]


def test_partitions_must_be_written_as_a_number(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("NP", "3")
    path = tmp_path / "p.yaml"
    for value, shown in [
        ('"3"', '"3"'),
        ("3.0", "3.0"),
        ("${env:NP}", '"${env:NP}"'),
        ("true", "true"),
        ("1.5", "1.5"),
        ("1e400", '"1e400"'),  # YAML 1.1: a string (no dot)
        ("1.0e+400", "1.0E+400"),  # an exact decimal, as YAML numbers are read
        (".inf", "inf"),
        ('"abc"', '"abc"'),
    ]:
        path.write_text(PARTITIONED.replace("partitions: 3", f"partitions: {value}"))
        with pytest.raises(ValidationErrors) as caught:
            load_pipeline_files([str(path)], load_registry())
        # The value as YAML has it, not a Python repr (Decimal('3.0'), True).
        want = f"pipelines[0].partitions: write partitions as a whole number, not {shown}:"
        assert want in str(caught.value), value
        # One mistake, one problem: not pydantic's "should be a valid integer" beside it.
        assert len(caught.value.problems) == 1, (value, str(caught.value))


def test_sink_names_may_not_hold_the_partition_mark(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        PARTITIONED.replace(
            "      - connector: file\n", '      - name: "s#1"\n        connector: file\n'
        )
    )
    with pytest.raises(ValidationErrors, match="a sink name may not contain '#'"):
        load_pipeline_files([str(path)], load_registry())


def test_two_pipelines_writing_one_topic_must_split_it_alike(tmp_path: Path) -> None:
    other = """
  - name: more
    source: {connector: file, config: {path: in.jsonl, follow: false}}
    topic: orders
    partitions: 2
"""
    path = tmp_path / "p.yaml"
    path.write_text(PARTITIONED + other)
    with pytest.raises(ValidationErrors) as caught:
        load_pipeline_files([str(path)], load_registry())
    assert "topic 'orders' is written with partitions: 3 by pipeline 'orders'" in str(caught.value)
    path.write_text(PARTITIONED + other.replace("partitions: 2", "partitions: 3"))
    load_pipeline_files([str(path)], load_registry())


def test_records_without_a_key_are_said_to_go_to_partition_0(tmp_path: Path) -> None:
    _write_input(tmp_path, 50)
    (tmp_path / "p.yaml").write_text(
        PARTITIONED.replace(
            "    transforms:\n      - type: set_key\n        fields: [data.k]\n", ""
        )
    )
    code, output = _run(tmp_path, "run", str(tmp_path / "p.yaml"))
    assert code == 0, output
    assert "pipeline orders: 50 of 50 records have no partitionkey and go to partition 0" in output
    assert len((tmp_path / "out" / "orders-0.jsonl").read_text().splitlines()) == 50


def test_a_jdbc_table_template_names_one_table_per_topic(tmp_path: Path) -> None:
    """`table: "{topic}"` (Kafka Connect's `table.name.format=${topic}`) and `"pre_{topic}"`:
    one table for the topic, not one per partition."""
    import sqlite3

    _write_input(tmp_path, 200)
    db = tmp_path / "out.db"
    sinks = "".join(
        f"""      - name: {name}
        connector: jdbc
        config:
          {{url: "sqlite:///{db}", table: "{table}", mode: upsert, key: [seq], auto_create: true}}
"""
        for name, table in (("a", "{topic}"), ("b", "pre_{topic}"))
    )
    text = PARTITIONED.replace(
        """      - connector: file
        config: {path: "out/orders-{partition}.jsonl"}
""",
        sinks,
    )
    (tmp_path / "p.yaml").write_text(text)
    code, output = _run(tmp_path, "run", str(tmp_path / "p.yaml"))
    assert code == 0, output
    with sqlite3.connect(db) as conn:
        tables = sorted(
            r[0] for r in conn.execute("select name from sqlite_master where type='table'")
        )
        assert tables == ["orders", "pre_orders"]
        assert conn.execute("select count(*) from orders").fetchone() == (200,)


def test_topic_in_a_collection_template_is_the_name_and_in_a_key_the_partition() -> None:
    from meshconnect.connectors.redis.template import Template

    record = Record(id="1", source="s", type="t", data={}, topic="orders#2", offset=7)
    assert Template("{topic}", "collection").render(record) == "orders"
    assert Template("c_{topic}", "collection").render(record) == "c_orders"
    assert Template("{topic}:{id}", "key").render(record) == "orders#2:1"


def test_a_topic_written_with_one_count_is_refused_to_a_pipeline_with_another(
    tmp_path: Path,
) -> None:
    """Two pipelines of different names, run one after the other, writing `orders` with 3
    and then 2 partitions: the second is refused before it stores anything."""
    _write_input(tmp_path, 100)
    (tmp_path / "a.yaml").write_text(PARTITIONED)
    assert _run(tmp_path, "run", str(tmp_path / "a.yaml"))[0] == 0
    (tmp_path / "b.yaml").write_text(
        PARTITIONED.replace("name: orders", "name: other")
        .replace("partitions: 3", "partitions: 2")
        .replace("    partitions: 2\n", "    topic: orders\n    partitions: 2\n")
        .replace("orders-{partition}", "other-{partition}")
    )
    code, output = _run(tmp_path, "run", str(tmp_path / "b.yaml"))
    assert code == 1, output
    assert "pipeline 'other' writes topic 'orders' with partitions: 2, but it was written" in output
    code, listing = _run(tmp_path, "topics", "list", "--json")
    assert sum(t["end"] for t in json.loads(listing)) == 100


async def test_a_store_client_that_swallows_a_cancellation_does_not_keep_a_run_alive(
    tmp_path: Path,
) -> None:
    """A store call interrupted by the run's end that raises its own error instead of the
    cancellation (a network client's "connection lost"): the run still ends (a refused run on
    Redis and NATS hung at exit, its metrics loop sleeping on)."""
    import asyncio

    from meshconnect.mesh.memory import MemoryStore
    from meshconnect.testing import test_registry
    from meshconnect.worker import Worker

    class Swallowing(MemoryStore):
        async def topics(self) -> Any:
            task = asyncio.current_task()
            if task is None or task.get_name() != "metrics":
                return await super().topics()
            try:  # the metrics loop's call: slow, and cut short by the run's end
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                raise OSError("connection lost") from None
            return []

    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            """
            pipelines:
              - name: p
                source: {connector: memory, config: {records: [{n: 1}]}}
                topic: t
                sinks: [{connector: memory}]
            """
        )
    )
    config = load_pipeline_files([str(path)], test_registry())
    store = Swallowing("memory://swallowing")
    await store.open()
    try:
        worker = Worker(config, store)
        assert await asyncio.wait_for(worker.run(), 30) == 0
    finally:
        await store.close()
