"""The mongodb connector's logic against mongomock, which has pymongo's client interface
(no MongoDB server can run on these machines; integration/test_mongodb_server.py runs the
same connector against a real one when MESHCONNECT_TEST_MONGODB_URI is set): sink modes, CDC
apply, per-document errors, the polling source, the BSON ↔ JSON mapping, the conformance
suites, the error mapping."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import mongomock
import pydantic
import pytest
from bson import Binary, ObjectId, json_util
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from pymongo import DeleteOne, InsertOne
from pymongo import errors as px

from meshconnect import BatchError, ConfigError, ConnectorContext, DataError, Record, RetriableError
from meshconnect.connectors.mongodb import client as mclient
from meshconnect.connectors.mongodb.config import MongoSinkConfig, MongoSourceConfig
from meshconnect.connectors.mongodb.sink import MongoSink
from meshconnect.connectors.mongodb.source import MongoSource
from meshconnect.jsonvalue import dumps, loads
from meshconnect.testing import SinkConformance, SourceConformance

SERVER = mongomock.MongoClient()  # one in-memory "server" shared by every client


@pytest.fixture(autouse=True)
def mongomock_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mclient, "CLIENT_CLASS", lambda uri, **options: SERVER)


def context(tmp_path: Path) -> ConnectorContext:
    return ConnectorContext("test", "mongodb", logging.getLogger("test.mongodb"), str(tmp_path))


def db_name() -> str:
    return f"d{uuid.uuid4().hex[:8]}"


async def write(config: MongoSinkConfig, records: list[Record], tmp_path: Path) -> None:
    sink = MongoSink(config, context(tmp_path))
    await sink.open(None)
    try:
        await sink.write(records)
    finally:
        await sink.flush()
        await sink.close()


def docs(db: str, collection: str) -> list[dict[str, Any]]:
    return list(SERVER[db][collection].find().sort("_id", 1))


# -- sink ---------------------------------------------------------------------------------------


async def test_upsert_merges_replace_replaces_by_key(tmp_path: Path) -> None:
    db = db_name()
    SERVER[db].c.insert_one({"_id": 1, "kept": True, "a": 0})
    await write(
        MongoSinkConfig(database=db, collection="c", key=["id"]),
        [Record({"id": 1, "a": 1}), Record({"id": 2, "a": Decimal("1.10")})],
        tmp_path,
    )
    assert docs(db, "c") == [
        {"_id": 1, "kept": True, "a": 1, "id": 1},
        {"_id": 2, "a": Decimal128("1.10"), "id": 2},
    ]
    await write(
        MongoSinkConfig(database=db, collection="c", key=["id"], mode="replace"),
        [Record({"id": 1, "b": 2})],
        tmp_path,
    )
    assert docs(db, "c")[0] == {"_id": 1, "id": 1, "b": 2}


async def test_composite_key_is_a_sub_document_and_tombstones_delete(tmp_path: Path) -> None:
    db = db_name()
    config = MongoSinkConfig(database=db, collection="{subject}", key=["order", "sku"])
    await write(config, [Record({"order": 1, "sku": "a", "q": 2}, subject="lines")], tmp_path)
    assert docs(db, "lines") == [{"_id": {"order": 1, "sku": "a"}, "order": 1, "sku": "a", "q": 2}]
    SERVER[db].lines.insert_one({"_id": "k9"})
    await write(
        MongoSinkConfig(database=db, collection="lines"),
        [Record(None, extensions={"partitionkey": "k9"}, datacontenttype=None)],
        tmp_path,
    )
    assert [d["_id"] for d in docs(db, "lines")] == [{"order": 1, "sku": "a"}]


async def test_insert_duplicate_key_fails_that_document_alone(tmp_path: Path) -> None:
    db = db_name()
    SERVER[db].c.insert_one({"_id": 5, "other": True})
    config = MongoSinkConfig(database=db, collection="c", mode="insert", key=["n"])
    sink = MongoSink(config, context(tmp_path))
    await sink.open(None)
    batch = [Record({"n": 4}), Record({"n": 5}), Record({"n": 6}), Record("x")]
    with pytest.raises(BatchError) as caught:
        await sink.write(batch)
    assert sorted(caught.value.failures) == [1, 3]
    assert "E11000" in str(caught.value.failures[1])
    assert sink.classify_error(caught.value.failures[1]) is DataError
    await sink.write([Record({"n": 4}), Record({"n": 6})])  # a re-delivery: the same documents
    assert [d["_id"] for d in docs(db, "c")] == [4, 5, 6]


def canal(kind: str, row: dict[str, Any], key: str, old: dict[str, Any] | None = None) -> Record:
    data = {
        "data": [row],
        "old": [old] if old else None,
        "isDdl": False,
        "pkNames": ["id"],
        "type": kind,
        "mysqlType": {"id": "int(11)"},
        "database": "shop",
        "table": "orders",
    }
    return Record(
        data,
        type="mysql." + kind.lower(),
        subject="shop.orders",
        extensions={"partitionkey": key},
    )


def row(kind: str, data: dict[str, Any], key: str) -> Record:
    return Record(
        data, type=f"mysql.{kind}", subject="shop.orders", extensions={"partitionkey": key}
    )


async def test_cdc_apply_in_every_format(tmp_path: Path) -> None:
    db = db_name()
    config = MongoSinkConfig(database=db)
    await write(
        config,
        [
            canal("INSERT", {"id": "1", "n": "a"}, "1"),
            canal("INSERT", {"id": "2", "n": "b"}, "2"),
            canal("UPDATE", {"id": "3", "n": "b"}, "3", old={"id": "2"}),  # key change
            canal("DELETE", {"id": "1", "n": "a"}, "1"),
        ],
        tmp_path,
    )
    assert docs(db, "orders") == [{"_id": "3", "id": "3", "n": "b"}]
    db2 = db_name()
    await write(
        MongoSinkConfig(database=db2, key=["id"]),
        [
            row("insert", {"id": 1, "total": "5.10"}, "1"),
            row("insert", {"id": 2, "total": "1.00"}, "2"),
            Record(
                {"before": {"id": 2}, "after": None, "source": {}, "op": "d"},
                type="mysql.delete",
                subject="shop.orders",
                extensions={"partitionkey": "2"},
            ),
            Record({"sql": "ALTER …"}, type="mysql.ddl", subject="shop.orders"),
        ],
        tmp_path,
    )
    assert docs(db2, "orders") == [{"_id": 1, "id": 1, "total": "5.10"}]


@pytest.fixture
def driver_order(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """mongomock applies an unordered bulk write in the given order; pymongo does not: it sends
    all inserts, then all updates, then all deletes (``_Bulk.gen_unordered``). The double is
    made to do the same, so a sink that relies on the order within one unordered bulk write
    fails here as it would on a server. Returns the bulk writes made."""
    original = mongomock.collection.Collection.bulk_write
    calls: list[list[Any]] = []

    def rank(op: Any) -> int:
        return 0 if isinstance(op, InsertOne) else 2 if isinstance(op, DeleteOne) else 1

    def bulk_write(self: Any, requests: Any, ordered: bool = True, **options: Any) -> Any:
        requests = list(requests)
        calls.append(requests)
        if ordered:
            return original(self, requests, ordered=True, **options)
        order = sorted(range(len(requests)), key=lambda i: rank(requests[i]))
        try:
            return original(self, [requests[i] for i in order], ordered=False, **options)
        except px.BulkWriteError as exc:
            for error in exc.details["writeErrors"]:
                error["index"] = order[error["index"]]
            raise

    monkeypatch.setattr(mongomock.collection.Collection, "bulk_write", bulk_write)
    return calls


@pytest.mark.parametrize("mode", ["upsert", "replace"])
async def test_one_id_changed_again_in_a_batch_ends_as_the_last_change(
    mode: str, driver_order: list[list[Any]], tmp_path: Path
) -> None:
    db = db_name()
    await write(
        MongoSinkConfig(database=db, mode=mode),
        [
            canal("INSERT", {"id": "1", "n": "a"}, "1"),
            canal("DELETE", {"id": "1", "n": "a"}, "1"),
            canal("INSERT", {"id": "1", "n": "b"}, "1"),  # the row is back
            canal("INSERT", {"id": "5", "n": "c"}, "5"),
            canal("UPDATE", {"id": "6", "n": "c"}, "6", old={"id": "5"}),
            canal("UPDATE", {"id": "5", "n": "c"}, "5", old={"id": "6"}),  # and back
            row("insert", {"id": "7", "n": "d"}, "7"),
            row("delete", {"id": "7", "n": "d"}, "7"),
            row("insert", {"id": "7", "n": "e"}, "7"),
        ],
        tmp_path,
    )
    assert docs(db, "orders") == [
        {"_id": "1", "id": "1", "n": "b"},
        {"_id": "5", "id": "5", "n": "c"},
        {"_id": "7", "id": "7", "n": "e"},
    ]
    assert len(driver_order) > 1  # cut where an _id came again
    for ops in driver_order:
        ids = [
            json_util.dumps((op._filter if hasattr(op, "_filter") else op._doc)["_id"])
            for op in ops
        ]
        assert len(ids) == len(set(ids)), ids


async def test_a_duplicate_in_a_later_run_of_the_batch_fails_alone(
    driver_order: list[list[Any]], tmp_path: Path
) -> None:
    db = db_name()
    SERVER[db].c.insert_one({"_id": 9, "other": True})
    config = MongoSinkConfig(database=db, collection="c", mode="insert", key=["n"])
    sink = MongoSink(config, context(tmp_path))
    await sink.open(None)
    batch = [Record({"n": 1}), Record(None, extensions={"partitionkey": "x"})]
    batch += [Record({"n": 1, "v": "another document"}), Record({"n": 9}), Record({"n": 2})]
    with pytest.raises(BatchError) as caught:
        await sink.write(batch)
    await sink.close()
    assert sorted(caught.value.failures) == [2, 3]  # the other n=1, and n=9 (taken)
    assert "E11000" in str(caught.value.failures[2])
    assert [d["_id"] for d in docs(db, "c")] == [1, 2, 9]


class TestMongoSinkConformance(SinkConformance):
    def make_sink(self, tmp_path: Path) -> MongoSink:
        return MongoSink(
            MongoSinkConfig(database="conf", collection=tmp_path.name, mode="insert", key=["n"]),
            context(tmp_path),
        )

    def durable(self, tmp_path: Path) -> list[Any]:
        return [d["n"] for d in SERVER["conf"][tmp_path.name].find().sort("_id", 1)]

    def poison_record(self, i: int) -> Record | None:
        return Record({"n": 0, "other": "a different document under _id 0"}, id="poison")


# -- source -------------------------------------------------------------------------------------


class TestMongoPollSourceConformance(SourceConformance):
    def make_source(self, tmp_path: Path) -> MongoSource:
        collection = SERVER["src"][tmp_path.name]
        if collection.count_documents({}) == 0:
            collection.insert_many([{"_id": i, "seq": i // 3, "v": f"v{i}"} for i in range(500)])
        config = MongoSourceConfig(
            database="src",
            collection=tmp_path.name,
            mode="poll",
            poll_field="seq",
            until_end=True,
            batch_size=37,
        )
        return MongoSource(config, context(tmp_path))

    def input_ids(self, tmp_path: Path) -> list[str]:
        """``<_id>@<poll_field as canonical extended JSON>``, in (seq, _id) order."""
        return [f'{i}@{{"$numberInt":"{i // 3}"}}' for i in range(500)]


async def test_poll_source_sees_new_documents_past_the_last(tmp_path: Path) -> None:
    db = db_name()
    SERVER[db].c.insert_many([{"_id": ObjectId(), "n": i} for i in range(3)])
    config = MongoSourceConfig(database=db, collection="c", mode="poll", until_end=True)
    source = MongoSource(config, context(tmp_path))
    await source.start({})
    first = await source.poll()
    assert first is not None and [r.data["n"] for r in first.records] == [0, 1, 2]
    assert first.records[0].type == "mongodb.read"
    assert set(first.records[0].data["_id"]) == {"$oid"}
    SERVER[db].c.insert_one({"_id": ObjectId(), "n": 3})
    again = MongoSource(config, context(tmp_path))
    await again.start(first.positions)
    batch = await again.poll()
    assert batch is not None and [r.data["n"] for r in batch.records] == [3]
    assert await again.poll() is None


async def test_poll_source_passes_documents_without_the_poll_field(tmp_path: Path) -> None:
    """Documents lacking ``poll_field`` (or null there) sort first; a position on one of them
    must not hide the documents with a value (``{$gt: null}`` matches nothing)."""
    db = db_name()
    SERVER[db].c.insert_many(
        [{"_id": 1, "n": "a"}, {"_id": 2, "seq": None, "n": "b"}, {"_id": 3, "seq": 5, "n": "c"}]
    )
    config = MongoSourceConfig(
        database=db, collection="c", mode="poll", poll_field="seq", until_end=True, batch_size=1
    )
    source = MongoSource(config, context(tmp_path))
    positions = await source.start({}) or {}
    got = []
    while (batch := await source.poll()) is not None:
        got += [r.data["n"] for r in batch.records]
        positions = {**positions, **batch.positions}
    assert got == ["a", "b", "c"]
    SERVER[db].c.insert_many([{"_id": 4, "n": "d"}, {"_id": 5, "seq": 6, "n": "e"}])
    again = MongoSource(config, context(tmp_path))
    await again.start(positions)
    later = []
    while (batch := await again.poll()) is not None:
        later += [r.data["n"] for r in batch.records]
    assert later == ["e"]  # a document without the field after the last one is not seen


MIXED_IDS: list[Any] = [
    1,
    2.5,
    Int64(7),
    "a",
    "b",
    {"k": 1},
    b"\x01",
    ObjectId("65f0c0ffee0000000000abcd"),
    False,
    dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
]


@pytest.mark.parametrize("mode", ["poll", "copy"])
async def test_ids_of_every_kind_are_read_across_batches(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``{$gt: 7}`` matches no string: past the last number, the copy and the poll on ``_id``
    must go on to the ids of the kinds that sort later (MongoDB's order)."""
    db = db_name()
    SERVER[db].c.insert_many([{"_id": i, "n": n} for n, i in enumerate(MIXED_IDS)])
    if mode == "poll":
        config = MongoSourceConfig(
            database=db, collection="c", mode="poll", until_end=True, batch_size=2
        )
    else:
        watched = WatchedCollection(SERVER[db].c, [[]])

        class Client:
            def __getitem__(self, name: str) -> Any:
                return {"c": watched}

            def close(self) -> None:
                pass

        monkeypatch.setattr(mclient, "CLIENT_CLASS", lambda uri, **options: Client())
        config = MongoSourceConfig(database=db, collection="c", batch_size=2)
    source = MongoSource(config, context(tmp_path))
    await source.start({})
    got: list[int] = []
    for _ in range(20):
        batch = await source.poll()
        if batch is None or (
            mode == "copy" and "copy" not in source.position and not batch.records
        ):
            break
        got += [r.data["n"] for r in batch.records]
        if mode == "copy" and "copy" not in source.position:
            break
    assert got == list(range(len(MIXED_IDS)))


# -- BSON and JSON --------------------------------------------------------------------------------

DOC = {
    "_id": ObjectId("65f0c0ffee0000000000abcd"),
    "price": Decimal128("12345678901234567890.0123456789"),
    "at": dt.datetime(2026, 11, 29, 10, 0, 0, 123000, tzinfo=dt.UTC),
    "blob": Binary(b"\x00\xff", 0),
    "big": Int64(2**62),
    "ratio": 1.5,
    "tags": ["a", {"deep": Decimal128("-0.00")}],
}


def test_relaxed_json_keeps_every_value_and_decimal128_exact() -> None:
    data = mclient.to_json(DOC, "relaxed")
    assert data == {
        "_id": {"$oid": "65f0c0ffee0000000000abcd"},
        "price": Decimal("12345678901234567890.0123456789"),
        "at": {"$date": "2026-11-29T10:00:00.123Z"},
        "blob": {"$binary": {"base64": "AP8=", "subType": "00"}},
        "big": 2**62,
        "ratio": 1.5,
        "tags": ["a", {"deep": Decimal("-0.00")}],
    }
    back = mclient.from_json(loads(dumps(data)))  # through the mesh's JSON and back
    assert back["price"] == DOC["price"] and back["_id"] == DOC["_id"]
    assert back["at"] == DOC["at"] and back["blob"] == b"\x00\xff" and back["big"] == 2**62
    assert back["ratio"] == Decimal128("1.5")  # relaxed: a double comes back as a decimal


def test_canonical_json_round_trips_every_type() -> None:
    data = mclient.to_json(DOC, "canonical")
    assert data["big"] == {"$numberLong": str(2**62)}
    assert data["ratio"] == {"$numberDouble": "1.5"}
    back = mclient.from_json(loads(dumps(data)))
    assert back == {**DOC, "blob": b"\x00\xff"} and type(back["ratio"]) is float


def test_what_bson_cannot_hold_is_a_data_error() -> None:
    assert mclient.from_json(2**70) == Decimal128(str(2**70))
    with pytest.raises(DataError, match="34 significant digits"):
        mclient.from_json(Decimal("1." + "1" * 40))


@pytest.mark.parametrize("mode", ["relaxed", "canonical"])
def test_values_json_numbers_and_datetimes_cannot_hold_map_both_ways(mode: str) -> None:
    """A document as a server sends it (BSON bytes), decoded with the codec options of the
    connector's client: doubles NaN and ±infinity, dates before year 1 or after 9999. Each
    becomes Extended JSON the mesh can store and comes back as the same BSON."""
    import math

    import bson
    import pymongo

    raw = bson.encode(
        {
            "nan": float("nan"),
            "inf": float("inf"),
            "ninf": float("-inf"),
            "late": bson.DatetimeMS(253_402_300_800_000 + 1000),  # 10000-01-01T00:00:01Z
            "early": bson.DatetimeMS(-62_135_596_800_000 - 1),  # before 0001-01-01
            "usual": dt.datetime(2026, 11, 29, 10, 0, 0, 123000, tzinfo=dt.UTC),
        }
    )
    real_client = pymongo.MongoClient  # the class the connector uses, whose options decode
    client: Any = real_client(
        "mongodb://127.0.0.1:1",
        connect=False,
        **mclient.connect_options(MongoSinkConfig(database="d")),
    )
    try:
        doc = bson.decode(raw, codec_options=client.codec_options)
    finally:
        client.close()
    data = mclient.to_json(doc, mode)
    text = dumps(data).decode()  # what the mesh stores
    if mode == "relaxed":
        assert data["nan"] == {"$numberDouble": "NaN"}
        assert data["ninf"] == {"$numberDouble": "-Infinity"}
        assert data["late"] == {"$date": {"$numberLong": "253402300801000"}}
        assert data["usual"] == {"$date": "2026-11-29T10:00:00.123Z"}
    back = mclient.from_json(loads(text))
    assert math.isnan(back.pop("nan")) and back["inf"] == math.inf and back["ninf"] == -math.inf
    assert bson.encode(back) == bson.encode({k: v for k, v in doc.items() if k != "nan"})


# -- errors and config --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (px.AutoReconnect("lost"), RetriableError),
        (px.ServerSelectionTimeoutError("no primary"), RetriableError),
        (px.NetworkTimeout("slow"), RetriableError),
        (px.OperationFailure("auth", code=18), ConfigError),
        (px.OperationFailure("unauthorized", code=13), ConfigError),
        (px.OperationFailure("not primary", code=10107), RetriableError),
        (px.OperationFailure("validation", code=121), DataError),
        (px.DocumentTooLarge("16MB"), DataError),
        (px.ConfigurationError("bad option"), ConfigError),
    ],
)
def test_pymongo_exceptions_map_onto_the_taxonomy(exc: BaseException, kind: type) -> None:
    assert mclient.classify_mongo(exc) is kind


def test_config_checks() -> None:
    with pytest.raises(pydantic.ValidationError, match="credentials in the URI"):
        MongoSinkConfig(database="d", uri="mongodb://u:secret@h/")
    with pytest.raises(pydantic.ValidationError, match="until_end is for mode poll"):
        MongoSourceConfig(database="d", collection="c", until_end=True)
    config = MongoSinkConfig(database="d", password="hunter2")
    assert "hunter2" not in repr(config)


# -- the change stream's bookkeeping, on a scripted stream ----------------------------------


class ScriptedStream:
    """What ``collection.watch()`` returns, playing scripted events (mongomock has no
    change streams; the real thing runs in integration/test_mongodb_server.py)."""

    def __init__(self, events: list[dict[str, Any]], token: str) -> None:
        self.events = events
        self.resume_token: dict[str, Any] | None = {"_data": token}

    def try_next(self) -> dict[str, Any] | None:
        if not self.events:
            return None
        event = self.events.pop(0)
        self.resume_token = event["_id"]
        return event

    def close(self) -> None:
        pass

    def __enter__(self) -> ScriptedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class WatchedCollection:
    """A mongomock collection plus ``watch``: each call takes the next script and records
    its options."""

    def __init__(self, collection: Any, scripts: list[list[dict[str, Any]]]) -> None:
        self.collection = collection
        self.scripts = scripts
        self.calls: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.collection, name)

    def watch(self, **options: Any) -> ScriptedStream:
        self.calls.append(options)
        return ScriptedStream(self.scripts.pop(0) if self.scripts else [], f"T{len(self.calls)}")


def event(token: str, op: str, _id: Any, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"_id": {"_data": token}, "operationType": op}
    if op != "invalidate":
        out["documentKey"] = {"_id": _id}
    if doc is not None:
        out["fullDocument"] = doc
    return out


async def test_records_have_the_change_time_or_the_ingestion_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 9 item 7: a change event's time is its wallTime (else clusterTime's seconds); a
    document of the initial copy gets the time it was read."""
    import re

    from bson.timestamp import Timestamp

    db = db_name()
    SERVER[db].c.insert_many([{"_id": 1, "n": 1}])
    walled = event("E1", "insert", 3, {"_id": 3})
    walled["wallTime"] = dt.datetime(2026, 11, 29, 10, 0, 0, 123456)  # naive UTC, as pymongo
    clustered = event("E2", "delete", 3)
    clustered["clusterTime"] = Timestamp(1_700_000_000, 4)
    watched = WatchedCollection(SERVER[db].c, [[], [walled, clustered]])

    class Client:
        def __getitem__(self, name: str) -> Any:
            return {"c": watched}

        def close(self) -> None:
            pass

    monkeypatch.setattr(mclient, "CLIENT_CLASS", lambda uri, **options: Client())
    source = MongoSource(MongoSourceConfig(database=db, collection="c"), context(tmp_path))
    await source.start({})
    copy = await source.poll()
    changes = await source.poll()
    await source.stop()

    assert copy is not None and changes is not None
    (copied,) = copy.records
    assert copied.time is not None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", copied.time)
    assert [r.time for r in changes.records] == [
        "2026-11-29T10:00:00.123Z",
        "2023-11-14T22:13:20Z",
    ]


async def test_poll_records_have_an_ingestion_time(tmp_path: Path) -> None:
    db = db_name()
    SERVER[db].c.insert_many([{"_id": i} for i in range(2)])
    source = MongoSource(
        MongoSourceConfig(database=db, collection="c", mode="poll", until_end=True),
        context(tmp_path),
    )
    await source.start({})
    batch = await source.poll()
    await source.stop()

    assert batch is not None and len(batch.records) == 2
    assert all(r.time is not None and r.time.endswith("Z") for r in batch.records)


async def test_change_stream_copy_events_invalidate_and_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = db_name()
    SERVER[db].c.insert_many([{"_id": 1, "n": 1}, {"_id": 2, "n": 2}])
    watched = WatchedCollection(
        SERVER[db].c,
        [
            [],  # the stream opened at the first start, for its token (T1)
            [
                event("E1", "insert", 3, {"_id": 3, "n": 3}),
                event("E2", "update", 1, {"_id": 1, "n": 10}),
                event("E3", "delete", 2),
                event("E4", "drop", None),
                event("E5", "invalidate", None),
            ],
            [event("E6", "insert", 4, {"_id": 4, "n": 4})],
        ],
    )

    class Client:
        def __getitem__(self, name: str) -> Any:
            return {"c": watched}

        def close(self) -> None:
            pass

    monkeypatch.setattr(mclient, "CLIENT_CLASS", lambda uri, **options: Client())
    config = MongoSourceConfig(database=db, collection="c", batch_size=10)
    source = MongoSource(config, context(tmp_path))
    begun = await source.start({})
    assert begun == {"changes": {"token": {"_data": "T1"}, "copy": {"after": None}}}
    copy = await source.poll()
    assert copy is not None
    assert [(r.type, r.data) for r in copy.records] == [
        ("mongodb.read", {"_id": 1, "n": 1}),
        ("mongodb.read", {"_id": 2, "n": 2}),
    ]
    assert copy.positions == {"changes": {"token": {"_data": "T1"}}}  # copy done
    changes = await source.poll()
    assert changes is not None
    assert [(r.id, r.type, r.extensions["partitionkey"], r.data) for r in changes.records] == [
        ("E1", "mongodb.insert", "3", {"_id": 3, "n": 3}),
        ("E2", "mongodb.update", "1", {"_id": 1, "n": 10}),
        ("E3", "mongodb.delete", "2", {"_id": 2}),
    ]
    assert changes.positions == {"changes": {"token": {"_data": "E5"}, "invalidated": True}}
    assert watched.calls[1]["resume_after"] == {"_data": "T1"}
    after = await source.poll()
    assert after is not None and [r.id for r in after.records] == ["E6"]
    assert watched.calls[2]["start_after"] == {"_data": "E5"}  # a new stream after it
    assert after.positions == {"changes": {"token": {"_data": "E6"}}}
    await source.stop()
    # A restart resumes after the last stored event.
    again = MongoSource(config, context(tmp_path))
    assert await again.start(after.positions) is None
    await again.poll()
    assert watched.calls[3]["resume_after"] == {"_data": "E6"}
    await again.stop()


async def test_names_and_ids_a_string_cannot_hold_make_valid_records(tmp_path: Path) -> None:
    """A collection named with a space and a tab, an ``_id`` holding a tab: the records are
    valid CloudEvents (source percent-encoded; subject, id and partitionkey spelled with
    ``\\u0009`` as the canal source spells them) (issue 18 item 7)."""
    from meshconnect.eventrules import attribute_problems

    db = db_name()
    SERVER[db]["my\tc oll"].insert_many([{"_id": "a\tb", "n": 1}, {"_id": "a\\u0009b", "n": 2}])
    config = MongoSourceConfig(
        database=db, collection="my\tc oll", mode="poll", poll_field="n", until_end=True
    )
    source = MongoSource(config, context(tmp_path))
    await source.start({})
    batch = await source.poll()
    await source.stop()
    assert batch is not None
    got = [(r.source, r.subject, r.extensions["partitionkey"]) for r in batch.records]
    assert got == [
        (f"mongodb://{db}/my%09c%20oll", f"{db}.my\\u0009c oll", "a\\u0009b"),
        (f"mongodb://{db}/my%09c%20oll", f"{db}.my\\u0009c oll", "a\\\\u0009b"),
    ]
    assert len({r.id for r in batch.records}) == 2
    for r in batch.records:
        assert attribute_problems(r) == {}, r
