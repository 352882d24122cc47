"""The ``mongodb`` sink: documents inserted, upserted, replaced or deleted by ``_id``, one
unordered bulk write per batch.

``_id`` comes from ``key`` (one field: its value; several: a sub-document of them), or for
change records of the ``canal`` source (:mod:`meshconnect.connectors.redis.changes`, shared
with the redis sink) from the primary key: the FlatMessage's ``pkNames`` columns in ``format:
canal``, else the ``partitionkey`` text. An insert, update or snapshot read writes the row,
a delete deletes it, an update that changed the key deletes the old ``_id`` as well; a
tombstone deletes its key in every mode.

Each batch is one ``bulk_write(ordered=False)`` per collection: the server applies every
operation it can and names the ones it could not (``writeErrors`` with their index), which are
reported per record in a :class:`~meshconnect.BatchError` (a duplicate key dead-letters that
document alone). An unordered bulk write keeps no order between its operations (pymongo sends
all inserts, then all updates, then all deletes), so when a batch touches one ``_id`` again (a
row inserted, deleted and inserted again; a key changed back and forth) the bulk write is cut
there: the operations on one ``_id`` are applied in the records' order.

Re-delivery after a crash is idempotent: upsert, replace and delete by ``_id`` write the same
again, and an ``insert`` that meets its own document already there (same ``_id``, same
content) counts as done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS
from pymongo import DeleteOne, InsertOne, ReplaceOne, UpdateOne
from pymongo.errors import BulkWriteError

from meshconnect import BatchError, DataError, MeshconnectError, Record, RetriableError, Sink
from meshconnect.connectors.redis.changes import Change, change_of, is_change
from meshconnect.connectors.redis.template import Template

from .client import RETRIABLE_CODES, classify_mongo, connect, from_json
from .config import MongoSinkConfig

__all__ = ["MongoSink"]


class WriteFailed(Exception):
    """A document the server refused (``writeErrors``), with its code."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


class MongoSink(Sink[MongoSinkConfig]):
    """Writes records as documents (module docstring). No state: writes are idempotent."""

    @classmethod
    def partition_problem(cls, config: Any) -> str | None:
        """Several consumers may write at once (``partitions:``): each writes documents by
        key or by record id."""
        return None

    async def open(self, state: Mapping[str, Any] | None) -> None:
        c = self.config
        self.client = connect(c)
        self.db = self.client[c.database]
        self.collection = Template(c.collection, "collection") if c.collection else None
        self.documents: dict[int, dict[str, Any]] = {}
        self.inserted: dict[str, Any] | None = None

    # -- one record -----------------------------------------------------------------------

    def _collection_of(self, record: Record, change: Change | None) -> str:
        if self.collection is not None:
            return self.collection.render(record, change.row if change else None)
        if change is not None and record.subject:
            return record.subject.rpartition(".")[2]
        name = record.topic_name
        if name:
            return name
        raise DataError(f"record {record.id}: no collection (set `collection`)")

    def _id(self, record: Record, row: Any, change: Change | None, key: str | None) -> Any:
        fields = self.config.key or (change.pk if change is not None else None)
        if fields:
            if not isinstance(row, Mapping):
                raise DataError(f"record {record.id}: data is not an object, no key {fields}")
            values = {}
            for name in fields:
                value = row.get(name)
                if value is None:
                    raise DataError(f"record {record.id}: key field {name!r} has no value")
                values[name] = from_json(value)
            return values[fields[0]] if len(fields) == 1 else values
        if change is None and isinstance(row, Mapping) and row.get("_id") is not None:
            return from_json(row["_id"])
        if key is not None:
            return key
        if self.config.mode == "insert" and change is None:
            return record.id
        raise DataError(
            f"record {record.id}: no _id: set `key`, or give the record an _id or a partitionkey"
        )

    def _operations(self, record: Record) -> tuple[str, list[tuple[Any, Any]]]:
        """The collection and the operations of one record, each with the ``_id`` it
        touches."""
        mode = self.config.mode
        if self.config.cdc and is_change(record):
            change = change_of(record)
            if change.op == "skip":
                return "", []
            name = self._collection_of(record, change)
            _id = self._id(record, change.row, change, change.key)
            if change.op == "delete":
                return name, [(DeleteOne({"_id": _id}), _id)]
            ops: list[tuple[Any, Any]] = []
            if change.old_key is not None:
                old_row = change.old_row or change.row
                old = self._old_id(record, old_row, change)
                if old != _id:
                    ops.append((DeleteOne({"_id": old}), old))
            doc = self._document(record, change.row, _id)
            ops.append(
                (
                    UpdateOne({"_id": _id}, {"$set": doc}, upsert=True)
                    if mode == "upsert"
                    else ReplaceOne({"_id": _id}, doc, upsert=True),
                    _id,
                )
            )
            return name, ops
        name = self._collection_of(record, None)
        key = record.extensions.get("partitionkey")
        key = None if key is None else str(key)
        if record.data is None and not record.null_data:
            if key is None:
                raise DataError(f"tombstone {record.id} has no partitionkey to delete")
            return name, [(DeleteOne({"_id": key}), key)]
        _id = self._id(record, record.data, None, key)
        doc = self._document(record, record.data, _id)
        if mode == "insert":
            self.inserted = doc
            return name, [(InsertOne(doc), _id)]
        if mode == "upsert":
            return name, [(UpdateOne({"_id": _id}, {"$set": doc}, upsert=True), _id)]
        return name, [(ReplaceOne({"_id": _id}, doc, upsert=True), _id)]

    def _old_id(self, record: Record, old_row: Any, change: Change) -> Any:
        if self.config.key or change.pk:
            return self._id(record, old_row, change, change.old_key)
        return change.old_key

    @staticmethod
    def _document(record: Record, data: Any, _id: Any) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise DataError(f"record {record.id}: data is not an object, not a document")
        doc: dict[str, Any] = from_json(dict(data))
        doc["_id"] = _id
        return doc

    # -- the batch ---------------------------------------------------------------------------

    async def write(self, records: Sequence[Record]) -> None:
        failed = BatchError()
        #: Per collection, runs of operations each touching an ``_id`` once at most (module
        #: docstring): each run is one unordered bulk write.
        groups: dict[str, list[list[tuple[int, Any]]]] = {}
        touched: dict[str, set[str]] = {}
        #: The document of each record inserted (mode insert), by index: a duplicate key
        #: whose stored document is the same is our own write, before a crash.
        self.documents = {}
        self.inserted = None
        for i, record in enumerate(records):
            try:
                name, ops = self._operations(record)
            except (DataError, ValueError, TypeError) as exc:
                failed.failed(i, exc if isinstance(exc, DataError) else DataError(str(exc)))
                continue
            runs = groups.setdefault(name, [[]])
            ids = touched.setdefault(name, set())
            for op, _id in ops:
                marker = _id_marker(_id)
                if marker in ids:
                    runs.append([])
                    ids.clear()
                ids.add(marker)
                runs[-1].append((i, op))
            if self.inserted is not None:
                self.documents[i] = self.inserted
                self.inserted = None
        for name, runs in groups.items():
            for run in runs:
                if not run:
                    continue
                errors = await asyncio.to_thread(self._bulk, name, run)
                for index, error in errors.items():
                    if index not in failed.failures:
                        failed.failed(index, error)
        if failed.failures:
            raise failed

    def _bulk(self, name: str, ops: list[tuple[int, Any]]) -> dict[int, BaseException]:
        """One unordered bulk write; the records whose operation failed, with the error."""
        collection = self.db[name]
        try:
            collection.bulk_write([op for _, op in ops], ordered=False)
            return {}
        except BulkWriteError as exc:
            details = exc.details
            if details.get("writeConcernErrors"):
                raise
            out: dict[int, BaseException] = {}
            for error in details.get("writeErrors", []):
                index, op = ops[error["index"]]
                code = error.get("code")
                if code == 11000 and isinstance(op, InsertOne):
                    doc = self.documents.get(index)
                    if doc is not None and collection.find_one({"_id": doc["_id"]}) == doc:
                        continue  # our own document, written before a crash
                message = f"mongodb {self.config.database}.{name}: {error.get('errmsg')}"
                out[index] = WriteFailed(message, code)
            return out

    def classify_error(self, exc: BaseException) -> type[MeshconnectError] | None:
        if isinstance(exc, WriteFailed):
            return RetriableError if exc.code in RETRIABLE_CODES else DataError
        return classify_mongo(exc)

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            await asyncio.to_thread(client.close)


def _id_marker(_id: Any) -> str:
    """An ``_id`` as a hashable text that tells BSON values apart (``1`` and ``"1"`` are two
    documents; a sub-document's field order counts, as it does in MongoDB)."""
    return json_util.dumps(_id, json_options=CANONICAL_JSON_OPTIONS)
