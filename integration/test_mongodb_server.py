"""The mongodb connector against a real MongoDB server: change streams, resume tokens across a
restart, an invalidate event, the sink and the polling source.

No MongoDB server package exists on the build machines: these tests run when
MESHCONNECT_TEST_MONGODB_URI names a replica set (change streams need one), e.g.
``mongodb://127.0.0.1:27017/?replicaSet=rs0``, and are otherwise reported as "not run" in the
test session's summary (CI prints that line). tests/test_mongodb_connector.py covers the same
logic on mongomock everywhere.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import MONGODB_NOT_RUN
from meshconnect import ConnectorContext, Record
from meshconnect.connectors.mongodb.config import MongoSinkConfig, MongoSourceConfig
from meshconnect.connectors.mongodb.sink import MongoSink
from meshconnect.connectors.mongodb.source import MongoSource
from meshconnect.testing import SinkConformance

URI = os.environ.get("MESHCONNECT_TEST_MONGODB_URI")


@pytest.fixture
def uri(request: pytest.FixtureRequest) -> str:
    if not URI:
        MONGODB_NOT_RUN.append(request.node.name)
        pytest.skip("not run: MESHCONNECT_TEST_MONGODB_URI is not set (no MongoDB server here)")
    return URI


@pytest.fixture
def database(uri: str) -> Iterator[str]:
    import pymongo

    name = f"meshconnect_test_{uuid.uuid4().hex[:8]}"
    client: Any = pymongo.MongoClient(uri)
    try:
        yield name
    finally:
        client.drop_database(name)
        client.close()


def context(tmp_path: Path) -> ConnectorContext:
    return ConnectorContext("test", "mongodb", logging.getLogger("test.mongodb"), str(tmp_path))


POSITIONS: dict[str, Any] = {}


async def drain(source: MongoSource, want: int, polls: int = 60) -> list[Record]:
    """Poll until ``want`` records came (each batch's positions kept in POSITIONS, as the
    worker commits them)."""
    got: list[Record] = []
    for _ in range(polls):
        batch = await source.poll()
        assert batch is not None
        got.extend(batch.records)
        POSITIONS.update(batch.positions)
        if len(got) >= want:
            break
    return got


async def test_change_stream_copy_then_changes_and_resume_after_restart(
    uri: str, database: str, tmp_path: Path
) -> None:
    import pymongo

    POSITIONS.clear()
    collection: Any = pymongo.MongoClient(uri)[database]["orders"]
    collection.insert_many([{"_id": i, "n": i} for i in range(5)])
    config = MongoSourceConfig(uri=uri, database=database, collection="orders")
    source = MongoSource(config, context(tmp_path))
    begun = await source.start({})
    assert begun is not None
    copied = await drain(source, 5)
    assert [(r.type, r.data["n"]) for r in copied] == [("mongodb.read", i) for i in range(5)]
    collection.insert_one({"_id": 5, "n": 5})
    collection.update_one({"_id": 0}, {"$set": {"n": 100}})
    collection.delete_one({"_id": 1})
    changes = await drain(source, 3)
    assert [(r.type, r.extensions["partitionkey"]) for r in changes] == [
        ("mongodb.insert", "5"),
        ("mongodb.update", "0"),
        ("mongodb.delete", "1"),
    ]
    assert changes[1].data == {"_id": 0, "n": 100}  # updateLookup: the whole document
    await source.stop()
    # While stopped: the resume token brings exactly these.
    collection.insert_one({"_id": 6, "n": 6})
    again = MongoSource(config, context(tmp_path))
    await again.start(dict(POSITIONS))
    after = await drain(again, 1)
    await again.stop()
    assert [(r.type, r.data["n"]) for r in after] == [("mongodb.insert", 6)]


async def test_an_invalidate_starts_a_new_stream_after_it(
    uri: str, database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import pymongo

    db: Any = pymongo.MongoClient(uri)[database]
    db["gone"].insert_one({"_id": 1})
    source = MongoSource(
        MongoSourceConfig(uri=uri, database=database, collection="gone", initial_copy=False),
        context(tmp_path),
    )
    await source.start({})
    await source.poll()
    db["gone"].drop()
    for _ in range(10):
        await source.poll()
        if "invalidated" in caplog.text:
            break
    assert "invalidated" in caplog.text
    db["gone"].insert_one({"_id": 2, "n": "back"})
    records = await drain(source, 1)
    await source.stop()
    assert [r.data for r in records] == [{"_id": 2, "n": "back"}]


class TestMongoSinkOnAServer(SinkConformance):
    @pytest.fixture(autouse=True)
    def _database(self, database: str, uri: str) -> None:
        self.uri, self.database = uri, database

    def make_sink(self, tmp_path: Path) -> MongoSink:
        config = MongoSinkConfig(
            uri=self.uri, database=self.database, collection="c", mode="insert", key=["n"]
        )
        return MongoSink(config, context(tmp_path))

    def durable(self, tmp_path: Path) -> list[Any]:
        import pymongo

        collection: Any = pymongo.MongoClient(self.uri)[self.database]["c"]
        return [d["n"] for d in collection.find().sort("_id", 1)]

    def poison_record(self, i: int) -> Record | None:
        return Record({"n": 0, "other": "a different document under _id 0"}, id="poison")


async def test_one_id_changed_again_in_a_batch_ends_as_the_last_change(
    uri: str, database: str, tmp_path: Path
) -> None:
    """pymongo sends an unordered bulk write's inserts, updates and deletes apart: the sink
    cuts the batch where an ``_id`` comes again."""
    import pymongo

    sink = MongoSink(MongoSinkConfig(uri=uri, database=database, collection="c"), context(tmp_path))
    await sink.open(None)

    await sink.write(
        [
            Record({"id": "1", "v": "a"}, type="mysql.insert", extensions={"partitionkey": "1"}),
            Record({"id": "1"}, type="mysql.delete", extensions={"partitionkey": "1"}),
            Record({"id": "1", "v": "b"}, type="mysql.insert", extensions={"partitionkey": "1"}),
        ]
    )
    await sink.flush()
    await sink.close()
    collection: Any = pymongo.MongoClient(uri)[database]["c"]
    assert list(collection.find()) == [{"_id": "1", "id": "1", "v": "b"}]
