"""Hand-written source positions (``offsets reset --to '{JSON}'``, the admin API's PATCH):
each source refuses a position it could never have written, naming the partition and the
field, and accepts every position it writes.

Before, every source but ``file`` stored anything: a typo'd field or partition was ignored (the
source read again from its beginning: duplicates), a text or negative number failed every
later start (``int("x")``, ``OFFSET -1``, a resume token Redis or MongoDB refuses), and some
read nothing ever again without a word (a jdbc ``ts`` that is not a time)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from cli_support import mc

from meshconnect.config.loader import load_pipeline_texts
from meshconnect.connectors.canal.jsoncols import JsonColumns
from meshconnect.connectors.canal.positions import Position as BinlogPosition
from meshconnect.connectors.jdbc.source import _pos_value, _ts_text
from meshconnect.connectors.mongodb.source import _ejson
from meshconnect.errors import ConfigError
from meshconnect.mesh.memory import MemoryStore
from meshconnect.offsets import _fresh_source, reset_plan
from meshconnect.plugins import load_registry

#: A source config of each connector (nothing is connected to: the checks run before start).
CONFIGS: dict[str, dict[str, Any]] = {
    "webhook": {"listen": "127.0.0.1:8080", "path": "/in"},
    "slack": {"signing_secret": "s3cret-s3cret", "listen": "127.0.0.1:8081"},
    "chatgpt": {"api_key": "sk-test", "listen": "127.0.0.1:8082", "model": "gpt-4o-mini"},
    "jdbc": {"url": "sqlite:///in.db", "table": "items"},
    "jdbc-inc": {
        "url": "sqlite:///in.db",
        "tables": ["ord*"],
        "mode": "incrementing",
        "incrementing_column": "id",
    },
    "jdbc-ts": {
        "url": "sqlite:///in.db",
        "query": "SELECT * FROM t",
        "query_name": "q",
        "mode": "timestamp+incrementing",
        "timestamp_column": "ts",
        "incrementing_column": "id",
    },
    "s3": {"bucket": "bkt", "prefix": "in/"},
    "redis": {"streams": ["orders", "users"]},
    "redis-pubsub": {"mode": "pubsub", "channels": ["news"]},
    "mongodb": {"uri": "mongodb://127.0.0.1", "database": "d", "collection": "c"},
    "mongodb-poll": {
        "uri": "mongodb://127.0.0.1",
        "database": "d",
        "collection": "c",
        "mode": "poll",
        "poll_field": "seq",
    },
    "canal": {"host": "127.0.0.1", "user": "root", "server_id": 1001},
}

_REGISTRY = load_registry()


def _pipeline_text(kind: str, tmp: Path) -> str:
    connector = kind.split("-")[0]
    return json.dumps(
        {
            "pipelines": [
                {
                    "name": "p",
                    "source": {"connector": connector, "config": CONFIGS[kind]},
                    "topic": "t",
                    "sinks": [{"connector": "file", "config": {"path": str(tmp / "o.jsonl")}}],
                }
            ]
        }
    )


def _pipeline(kind: str, tmp: Path) -> Any:
    loaded = load_pipeline_texts([("p.yaml", _pipeline_text(kind, tmp), str(tmp))], _REGISTRY)
    return loaded.pipelines[0]


def _problem(kind: str, tmp: Path, partition: str, position: Any) -> str | None:
    source = _fresh_source(_pipeline(kind, tmp))
    return source.position_problem(partition, json.loads(json.dumps(position)))


TOKEN = {"_data": "8265A1B2C3000000012B022C0100296E5A1004"}
MAX_ID = "18446744073709551615-18446744073709551615"
MYSQL_GTIDS = "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7,\n4a0cbb2e-2f0e-11e1-8d7c-c80aa9429562:1"

#: Positions each source writes (taken from its own code); every one must be accepted.
WRITTEN: list[tuple[str, str, Any]] = [
    ("webhook", "webhook", {"stored": 0}),
    ("webhook", "webhook", {"stored": 1234}),
    ("slack", "events", {"seen": []}),
    ("slack", "events", {"seen": ["Ev01ABCDEF", "Ev01ABCDEG"]}),
    ("jdbc", "items", {"rows": 0}),
    ("jdbc", "items", {"rows": 25, "done": True}),
    ("jdbc-inc", "orders", {"id": _pos_value(7)}),
    ("jdbc-inc", "order_lines", {"id": _pos_value("A-17")}),
    ("jdbc-ts", "q", {"ts": _ts_text(dt.datetime(2024, 1, 1, 0, 0, 9)), "id": 3}),
    ("jdbc-ts", "q", {"ts": _ts_text(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)), "id": "x"}),
    ("jdbc-ts", "q", {"ts": _ts_text("2024-01-01 10:00:00"), "id": 1}),
    ("jdbc-ts", "q", {"ts": _ts_text(1700000000), "id": 1}),
    ("jdbc-ts", "q", {"ts": _ts_text(dt.date(2024, 5, 1)), "id": 1}),
    ("s3", "s3://bkt/in/", {"after": "", "key": None, "index": 0, "dirs": {}}),
    (
        "s3",
        "s3://bkt/in/",
        {
            "after": "in/c=DE/2.json",
            "key": "in/c=DE/3.json",
            "index": 17,
            "dirs": {"in/c=DE/": "in/c=DE/2.json", "in/": "in/top.json"},
            "floor": "in/c=AA/9.json",
        },
    ),
    ("redis", "orders", {"last": "1700000000000-0", "inflight": [], "ids": []}),
    ("redis", "users", {"inflight": [["1-0", "1-5"]], "ids": ["0-1", MAX_ID]}),
    ("mongodb", "changes", {"token": TOKEN, "copy": {"after": None}}),
    ("mongodb", "changes", {"token": TOKEN, "copy": {"after": _ejson(ObjectId())}}),
    ("mongodb", "changes", {"token": TOKEN, "invalidated": True}),
    ("mongodb", "changes", {"token": TOKEN}),
    ("mongodb-poll", "changes", {"after": [_ejson(dt.datetime(2024, 1, 1)), _ejson(5)]}),
    ("mongodb-poll", "changes", {"after": [None, _ejson(ObjectId())]}),
    ("canal", "binlog", BinlogPosition("mysql-bin.000007", 1234, gtids="0-1-812").to_dict()),
    (
        "canal",
        "binlog",
        BinlogPosition(
            "binlog.1000000",
            4,
            events=2,
            rows=3,
            gtids=MYSQL_GTIDS,
            server_id=1,
            snapshot={"tables": [["shop", "orders"]], "after": [17, "x"], "done": 40},
            xa={"X'7831',X'',1": ["binlog.0999999", 154]},
            json=JsonColumns({("shop", "t"): {"doc"}}, True, set(), set()).to_json(),
        ).to_dict(),
    ),
    ("canal", "binlog", BinlogPosition("host-bin.000001", 4, snapshot=None).to_dict()),
]


@pytest.mark.parametrize(("kind", "partition", "position"), WRITTEN)
def test_every_position_a_source_writes_is_accepted(
    tmp_path: Path, kind: str, partition: str, position: Any
) -> None:
    assert _problem(kind, tmp_path, partition, position) is None


#: (source, partition, position, what the refusal says).
BAD: list[tuple[str, str, Any, str]] = [
    (
        "webhook",
        "hook",
        {"stored": 3},
        "not a partition this source reads (did you mean 'webhook'?); its partitions: 'webhook'",
    ),
    ("webhook", "webhook", {"stord": 3}, "unknown field 'stord' (did you mean 'stored'?)"),
    ("webhook", "webhook", {"stored": "3"}, 'stored must be a whole number of at least 0, not "3"'),
    ("webhook", "webhook", {"stored": -1}, "stored must be a whole number of at least 0, not -1"),
    ("webhook", "webhook", {"stored": 1.5}, "not 1.5"),
    ("webhook", "webhook", {"stored": True}, "not true"),
    ("webhook", "webhook", {}, "missing field 'stored'"),
    ("slack", "event", {"seen": []}, "(did you mean 'events'?)"),
    ("slack", "events", {"seen": "Ev01"}, "seen must be a list of event ids"),
    ("slack", "events", {"seen": [1, 2]}, "seen must be a list of event ids"),
    ("slack", "events", {"seen": [""]}, "seen must be a list of event ids"),
    ("chatgpt", "prompts", {"n": 1}, "this source keeps no position"),
    ("jdbc", "itemz", {"rows": 3}, "(did you mean 'items'?)"),
    ("jdbc", "items", {"rows": -1}, "rows must be a whole number of at least 0, not -1"),
    ("jdbc", "items", {"row": 3}, "unknown field 'row' (did you mean 'rows'?)"),
    ("jdbc", "items", {"rows": 3, "done": "yes"}, 'done must be true or false, not "yes"'),
    ("jdbc", "items", {"id": 3}, "unknown field 'id'"),
    ("jdbc-inc", "users", {"id": 3}, "not a table this source reads (tables: ord*)"),
    ("jdbc-inc", "orders", {"ts": "2024-01-01"}, "unknown field 'ts'; a position has id"),
    ("jdbc-inc", "orders", {}, "missing field 'id'"),
    ("jdbc-inc", "orders", {"id": [1]}, "id must be the incrementing column's last value"),
    ("jdbc-inc", "orders", {"id": None}, "id must be the incrementing column's last value"),
    ("jdbc-ts", "t", {"ts": "2024-01-01", "id": 1}, "its partitions (config.query_name): 'q'"),
    ("jdbc-ts", "q", {"ts": "yesterday", "id": 1}, "ts must be the timestamp column's last value"),
    ("jdbc-ts", "q", {"ts": "2024-01-01"}, "missing field 'id'"),
    ("jdbc-ts", "q", {"ts": "nan", "id": 1}, "ts must be the timestamp column's last value"),
    ("s3", "s3://bkt/in", {"after": ""}, "(did you mean 's3://bkt/in/'?)"),
    ("s3", "s3://bkt/in/", {"after": "out/x"}, "after must be a key under the prefix 'in/'"),
    ("s3", "s3://bkt/in/", {"index": -2}, "index must be a whole number of at least 0"),
    ("s3", "s3://bkt/in/", {"dirs": {"in/a/": "in/b/1"}}, "dirs must be an object"),
    ("s3", "s3://bkt/in/", {"dirs": ["in/a/"]}, "dirs must be an object"),
    ("s3", "s3://bkt/in/", {"key": 5}, "key must be a key under the prefix 'in/' or null"),
    ("s3", "s3://bkt/in/", {"afterr": "in/x"}, "unknown field 'afterr' (did you mean 'after'?)"),
    ("redis", "order", {"last": "1-0"}, "(did you mean 'orders'?)"),
    ("redis", "orders", {"lats": "1-0"}, "unknown field 'lats' (did you mean 'last'?)"),
    ("redis", "orders", {"last": "$"}, 'last must be an entry id "MS-SEQ"'),
    ("redis", "orders", {"last": 17}, 'last must be an entry id "MS-SEQ"'),
    ("redis", "orders", {"last": "18446744073709551616-0"}, "last must be an entry id"),
    ("redis", "orders", {"inflight": [["1-0"]]}, "inflight must be a list of [FIRST, LAST]"),
    ("redis", "orders", {"inflight": [["2-0", "1-5"]]}, "FIRST up to LAST"),
    ("redis", "orders", {"ids": "1-0"}, "ids must be a list of entry ids"),
    ("redis-pubsub", "news", {"last": "1-0"}, "this source keeps no position (pub/sub"),
    ("mongodb", "change", {"token": TOKEN}, "(did you mean 'changes'?)"),
    ("mongodb", "changes", {"copy": {"after": None}}, "missing field 'token'"),
    ("mongodb", "changes", {"token": "8265"}, "token must be a resume token"),
    ("mongodb", "changes", {"token": {"_data": "xyz"}}, "token must be a resume token"),
    ("mongodb", "changes", {"token": TOKEN, "copy": {"after": {"$oid": "nope"}}}, "copy must be"),
    ("mongodb", "changes", {"token": TOKEN, "after": [1, 2]}, "unknown field 'after'"),
    ("mongodb-poll", "changes", {"token": TOKEN}, "unknown field 'token'"),
    ("mongodb-poll", "changes", {"after": [1]}, "after must be [VALUE, _id]"),
    ("mongodb-poll", "changes", {"after": [1, {"$date": "never"}]}, "after must be [VALUE, _id]"),
    ("canal", "binlogs", {"file": "b.000001", "pos": 4}, "(did you mean 'binlog'?)"),
    ("canal", "binlog", {"pos": 4}, "missing field 'file'"),
    (
        "canal",
        "binlog",
        {"file": "b.000001", "pos": "4"},
        "pos must be a whole number of at least 4",
    ),
    ("canal", "binlog", {"file": "b.000001", "pos": 0}, "pos must be a whole number of at least 4"),
    ("canal", "binlog", {"file": "b.000001", "pos": 2**64}, "and at most 18446744073709551615"),
    ("canal", "binlog", {"file": "mysql-bin", "pos": 4}, "file must be a binlog file name"),
    ("canal", "binlog", {"file": "/var/lib/mysql/b.000001", "pos": 4}, "file must be a binlog"),
    ("canal", "binlog", {"file": "b.000001", "pos": 4, "event": 1}, "(did you mean 'events'?)"),
    ("canal", "binlog", {"file": "b.000001", "pos": 4, "rows": -1}, "rows must be a whole number"),
    (
        "canal",
        "binlog",
        {"file": "b.000001", "pos": 4, "gtids": "0-1"},
        "gtids: '0-1' is not a MariaDB GTID",
    ),
    ("canal", "binlog", {"file": "b.000001", "pos": 4, "gtids": "abc:1-5"}, "is not a MySQL GTID"),
    (
        "canal",
        "binlog",
        {"file": "b.000001", "pos": 4, "gtids": f"{MYSQL_GTIDS[:36]}:5-1"},
        "'5-1' is not an interval",
    ),
    ("canal", "binlog", {"file": "b.000001", "pos": 4, "gtids": 5}, "gtids must be a GTID set"),
    ("canal", "binlog", {"file": "b.000001", "pos": 4, "server_id": -1}, "server_id must be"),
    ("canal", "binlog", {"file": "b.000001", "pos": 4, "xa": {"x": ["b.000001"]}}, "xa must be"),
    (
        "canal",
        "binlog",
        {"file": "b.000001", "pos": 4, "snapshot": {"tables": ["t"]}},
        "snapshot must be",
    ),
    ("canal", "binlog", {"file": "b.000001", "pos": 4, "json": {"tables": 1}}, "json must be"),
]


@pytest.mark.parametrize(("kind", "partition", "position", "message"), BAD)
async def test_offsets_reset_refuses_a_position_the_source_never_writes(
    tmp_path: Path, kind: str, partition: str, position: Any, message: str
) -> None:
    """Through ``reset_plan``, what ``offsets reset`` and the admin API's PATCH both call:
    the refusal names the partition and the field; nothing is stored."""
    store = MemoryStore(f"memory://positions-{kind}-{tmp_path.name}")
    await store.open()
    try:
        with pytest.raises(ConfigError) as info:
            await reset_plan(
                store, _pipeline(kind, tmp_path), None, json.dumps({partition: position})
            )
        assert await store.positions(f"p/{kind.split('-')[0]}") == {}
    finally:
        await store.close()
    assert f"--to: not a position of the {kind.split('-')[0]!r} source: {partition}: " in str(
        info.value
    )
    assert message in str(info.value)


#: One bad position per source, through the command line.
CLI_CASES = [
    ("webhook", '{"webhook": {"stored": "x"}}', "webhook: stored must be a whole number"),
    ("slack", '{"events": {"seen": 5}}', "events: seen must be a list of event ids"),
    ("chatgpt", '{"prompts": {}}', "prompts: this source keeps no position"),
    ("jdbc", '{"items": {"rows": -5}}', "items: rows must be a whole number of at least 0"),
    ("s3", '{"s3://bkt/in/": {"after": "in/x", "indx": 3}}', "unknown field 'indx'"),
    ("redis", '{"orders": {"last": "abc"}}', "orders: last must be an entry id"),
    ("mongodb", '{"changes": {"tokn": {}}}', "changes: unknown field 'tokn'"),
    ("canal", '{"binlog": {"file": "b.000001", "pos": -4}}', "binlog: pos must be a whole number"),
]


@pytest.mark.parametrize(("kind", "to", "message"), CLI_CASES)
def test_the_command_refuses_it_and_stores_nothing(
    tmp_path: Path, kind: str, to: str, message: str
) -> None:
    (tmp_path / "p.yaml").write_text(_pipeline_text(kind, tmp_path))

    reset = mc(tmp_path, "offsets", "reset", "p.yaml", "p", "--yes", "--to", to)
    show = mc(tmp_path, "offsets", "show", "p.yaml")

    assert reset.returncode == 1, reset.stdout + reset.stderr
    assert message in reset.stderr
    assert "no committed position" in show.stdout, show.stdout


async def test_the_memory_test_source_checks_its_positions_too(tmp_path: Path) -> None:
    from meshconnect.testing import test_registry

    text = json.dumps(
        {
            "pipelines": [
                {
                    "name": "p",
                    "source": {"connector": "memory", "config": {"records": [{"n": 1}]}},
                    "sinks": [{"connector": "memory", "config": {"name": "out"}}],
                }
            ]
        }
    )
    pipeline = load_pipeline_texts([("p.yaml", text, str(tmp_path))], test_registry()).pipelines[0]
    store = MemoryStore(f"memory://positions-memory-{tmp_path.name}")
    await store.open()
    try:
        with pytest.raises(ConfigError, match="memory: unknown field 'nxt'"):
            await reset_plan(store, pipeline, None, '{"memory": {"nxt": 1}}')
        plan = await reset_plan(store, pipeline, None, '{"memory": {"next": 1}}')
        assert plan.new == {"memory": {"next": 1}}
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("kind", "partition", "position", "message"),
    [
        ("webhook", "webhook", {"stored": "x"}, "stored must be a whole number of at least 0"),
        ("slack", "events", {"seen": 5}, "seen must be a list of event ids"),
        ("slack", "events", {"seen": "Ev01"}, "seen must be a list of event ids"),
        ("s3", "s3://bkt/in/", {"index": "x"}, "index must be a whole number of at least 0"),
        ("s3", "s3://bkt/in/", {"dirs": ["in/"]}, "dirs must be an object"),
        ("jdbc-ts", "q", {"ts": "yesterday", "id": 1}, "ts must be the timestamp column's"),
        ("mongodb", "changes", {"token": "8265"}, "token must be a resume token"),
        ("mongodb-poll", "changes", {"after": [1]}, "after must be [VALUE, _id]"),
    ],
)
async def test_a_stored_position_the_source_never_writes_fails_its_start(
    tmp_path: Path, kind: str, partition: str, position: Any, message: str
) -> None:
    """Stored through another door (another version, the store edited): a ConfigError naming
    the partition and field, never retried. It was ``int("x")`` failing every restart of a
    webhook source, a slack source dropping retries of ids "E", "v", "0", "1", an s3 source
    failing its start with ValueError or AttributeError."""
    source = _fresh_source(_pipeline(kind, tmp_path))
    try:
        with pytest.raises(ConfigError) as info:
            await source.start({partition: position})
    finally:
        await source.stop()
    assert f"the stored position of {partition!r} is not usable: {message}" in str(info.value)
    assert "meshconnect offsets reset" in str(info.value)


async def test_a_mongodb_position_of_the_other_mode_is_left_alone(tmp_path: Path) -> None:
    """A pipeline switched from change_stream to poll has a token stored: poll reads from
    the beginning, as before (no server is needed to start polling)."""
    source = _fresh_source(_pipeline("mongodb-poll", tmp_path))
    try:
        assert await source.start({"changes": {"token": TOKEN}}) is None
    finally:
        await source.stop()


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ({"file": "b.000001", "pos": 4, "gtids": "junk"}, "gtids: 'junk' is not a MariaDB GTID"),
        ({"file": "b.000001", "pos": 4, "evnets": 1}, "unknown field 'evnets'"),
        ({"file": "b.000001", "pos": 4, "xa": {"x": ["b.000001", "4"]}}, "xa must be"),
    ],
)
def test_a_stored_canal_position_of_another_shape_is_refused_by_from_dict(
    stored: dict[str, Any], message: str
) -> None:
    """The canal start turns this ValueError into a ConfigError ("the stored position is
    unusable"). A GTID set that does not parse was taken, then failed every start in GtidSet
    with a bare ValueError; a misspelt field was ignored."""
    with pytest.raises(ValueError, match="not a canal binlog position") as info:
        BinlogPosition.from_dict(stored)
    assert message in str(info.value)
