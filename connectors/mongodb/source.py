"""The ``mongodb`` source: a collection's change stream after an initial copy, or polling.

Change streams (``mode: change_stream``; replica sets and sharded clusters)
    At the first start the source opens the change stream and keeps its resume token, then
    copies the documents already there in ``_id`` order (``initial_copy``, like a snapshot;
    records of type ``mongodb.read``), then streams from that token: a change made during
    the copy is seen in the copy or in the stream or both, and applied by ``_id`` the end
    state is right. Each change event becomes a record: type ``mongodb.insert|update|replace|
    delete``, ``data`` the document (``fullDocument``; with ``updateLookup`` as it is when the
    event is read), a delete's ``data`` ``{"_id": …}``, ``partitionkey`` the ``_id`` as
    text, ``id`` the event's resume token (``_data``). The position of partition
    ``changes`` is ``{"token": RESUME_TOKEN}`` (plus ``{"copy": {"after": _id}}`` during
    the copy): a restart resumes after the last event stored. An ``invalidate`` event (the
    collection dropped or renamed) ends that stream: the source logs it and starts a new
    one after it (``start_after``), so a collection created again under the name is
    followed.

Polling (``mode: poll``; standalone servers too)
    Documents whose ``poll_field`` is past the last one read (ties broken by ``_id``), in
    that order, ``batch_size`` at a time, every ``poll_interval`` when idle. Position
    ``{"after": [VALUE, _id]}`` in canonical Extended JSON. Values of different kinds are
    read in MongoDB's sort order (:data:`_KINDS`; documents without the field first), as are
    the ids of the initial copy. A document updated without its field growing
    is not seen again, nor one added later without the field; deletes are not seen (use
    change streams).

Documents become JSON by ``json_mode`` (:mod:`.client`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from bson import Binary, DatetimeMS, Decimal128, Int64, ObjectId, json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from meshconnect import (
    MeshconnectError,
    Position,
    Record,
    Source,
    SourceBatch,
    eventrules,
)
from meshconnect.jsonvalue import dumps
from meshconnect.positioncheck import (
    Check,
    boolean,
    check_stored_fields,
    fields_problem,
    partition_problem,
)

from .client import READ_JSON, classify_mongo, connect, to_json
from .config import MongoSourceConfig

__all__ = ["MongoSource"]

PARTITION = "changes"


def _ejson(value: Any) -> Any:
    """A BSON value as canonical Extended JSON (for positions: every type kept)."""
    return json.loads(json_util.dumps(value, json_options=CANONICAL_JSON_OPTIONS))


def _bson(value: Any) -> Any:
    """A position's canonical Extended JSON back as BSON."""
    return json_util.loads(json.dumps(value), json_options=READ_JSON)


def _is_ejson(value: Any) -> bool:
    """Whether ``value`` reads as Extended JSON (a ``{"$oid": ...}`` that is not one fails)."""
    try:
        _bson(value)
    except Exception:  # bson raises TypeError, ValueError, InvalidId, json's errors...
        return False
    return True


def _is_token(value: Any) -> bool:
    """A resume token as the source stores it: ``{"_data": "82..."}`` (hex text)."""
    data = value.get("_data") if isinstance(value, dict) else None
    return isinstance(data, str) and data != "" and all(c in "0123456789abcdefABCDEF" for c in data)


_TOKEN = Check('a resume token {"_data": "HEX"} (an event\'s _id)', _is_token)
_COPY = Check(
    '{"after": _id} (the last _id copied, Extended JSON, or null)',
    lambda v: isinstance(v, dict) and set(v) == {"after"} and _is_ejson(v["after"]),
)
_AFTER = Check(
    "[VALUE, _id]: the poll_field value and _id of the last document read (Extended JSON)",
    lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_ejson, v)),
)


class MongoSource(Source[MongoSourceConfig]):
    """Reads a collection (module docstring)."""

    def __init__(self, config: MongoSourceConfig, context: Any) -> None:
        super().__init__(config, context)
        self.bounded = config.mode == "poll" and config.until_end

    empty_position = (
        "change_stream: copies the collection, then streams from when the copy began; "
        "poll: reads every document"
    )

    def position_problem(self, partition: str, position: Position) -> str | None:
        """Partition ``changes``: ``{"token": ..., "copy": ..., "invalidated": ...}`` in mode
        change_stream, ``{"after": [VALUE, _id]}`` in mode poll (module docstring)."""
        if problem := partition_problem(partition, [PARTITION]):
            return problem
        fields, required = self._mode_fields()
        return fields_problem(position, fields, required)

    def _mode_fields(self) -> tuple[dict[str, Check], list[str]]:
        """The fields of a position in this mode, and those it always has."""
        if self.config.mode == "poll":
            return {"after": _AFTER}, ["after"]
        return {"token": _TOKEN, "copy": _COPY, "invalidated": boolean}, ["token"]

    def _check_stored(self, position: Mapping[str, Any]) -> None:
        """``ConfigError`` for a stored position whose fields of this mode are not what the
        source writes (a token that is not one failed every start with the driver's or the
        server's error). Fields of the other mode are left alone: a pipeline whose mode
        changed starts over (poll reads everything, a change stream copies first)."""
        fields, _ = self._mode_fields()
        check_stored_fields(f"mongodb source {self.context.name}", PARTITION, position, fields)

    async def start(self, positions: Mapping[str, Position]) -> Mapping[str, Position] | None:
        c = self.config
        self._check_stored(positions.get(PARTITION) or {})
        self.client = connect(c)
        self.collection = self.client[c.database][c.collection]
        # percent-encoded (a collection may be named `my orders`); names and keys spelled
        # as CloudEvents Strings (a tab as \u0009, backslashes doubled then)
        self.uri = f"mongodb://{quote(c.database, safe='')}/{quote(c.collection, safe='')}"
        self.subject = eventrules.spelled_string(f"{c.database}.{c.collection}")
        position = dict(positions.get(PARTITION) or {})
        self.position = position
        self.stream: Any = None
        self.idle_until = 0.0
        if c.mode == "poll":
            return None
        if "token" not in position:
            # Where "now" is, before the copy: the stream resumes there after it.
            token = await asyncio.to_thread(self._current_token)
            position = {"token": token}
            if c.initial_copy:
                position["copy"] = {"after": None}
            self.position = position
            return {PARTITION: position}
        return None

    def _current_token(self) -> Any:
        with self.collection.watch(full_document=self._full()) as stream:
            stream.try_next()
            return stream.resume_token

    def _full(self) -> str | None:
        return None if self.config.full_document == "default" else self.config.full_document

    async def poll(self) -> SourceBatch | None:
        if self.config.mode == "poll":
            return await self._poll_field()
        if "copy" in self.position:
            return await asyncio.to_thread(self._copy)
        return await asyncio.to_thread(self._changes)

    # -- the initial copy and polling ------------------------------------------------------

    def _copy(self) -> SourceBatch:
        after = self.position["copy"].get("after")
        query = {} if after is None else {"$or": _after("_id", _bson(after))}
        docs = list(self.collection.find(query).sort("_id", 1).limit(self.config.batch_size))
        records = [self._record(doc, "read", f"copy:{self._key(doc)}") for doc in docs]
        position = dict(self.position)
        if len(docs) < self.config.batch_size:
            position.pop("copy")
            self.context.logger.info("mongodb: initial copy of %s done", self.subject)
        else:
            position["copy"] = {"after": _ejson(docs[-1]["_id"])}
        self.position = position
        return SourceBatch(records, {PARTITION: position})

    async def _poll_field(self) -> SourceBatch | None:
        if time.monotonic() < self.idle_until:
            await asyncio.sleep(min(1.0, self.idle_until - time.monotonic()))
            return SourceBatch([])
        batch = await asyncio.to_thread(self._poll_sync)
        if not batch.records:
            if self.bounded:
                return None
            self.idle_until = time.monotonic() + self.config.poll_interval
        return batch

    def _poll_sync(self) -> SourceBatch:
        field = self.config.poll_field
        after = self.position.get("after")
        if after is None:
            query: dict[str, Any] = {}
        else:
            value, _id = _bson(after)
            if field == "_id":
                query = {"$or": _after("_id", value)}
            else:  # {field: None} matches the documents without the field too
                query = {"$or": [*_after(field, value), {field: value, "_id": {"$gt": _id}}]}
        sort = [("_id", 1)] if field == "_id" else [(field, 1), ("_id", 1)]
        docs = list(self.collection.find(query).sort(sort).limit(self.config.batch_size))
        records = []
        for doc in docs:
            records.append(
                self._record(
                    doc,
                    "read",
                    f"{self._key(doc)}@{dumps(to_json(_get(doc, field), 'canonical')).decode()}",
                )
            )
        if not docs:
            return SourceBatch([])
        last = docs[-1]
        self.position = {"after": [_ejson(_get(last, field)), _ejson(last["_id"])]}
        return SourceBatch(records, {PARTITION: self.position})

    # -- the change stream -----------------------------------------------------------------

    def _open_stream(self) -> Any:
        options: dict[str, Any] = {
            "full_document": self._full(),
            "max_await_time_ms": 500,
            "batch_size": self.config.batch_size,
        }
        token = self.position.get("token")
        if token is not None:
            key = "start_after" if self.position.get("invalidated") else "resume_after"
            options[key] = _bson(token)
        return self.collection.watch(**options)

    def _changes(self) -> SourceBatch:
        if self.stream is None:
            self.stream = self._open_stream()
        records: list[Record] = []
        position = dict(self.position)
        deadline = time.monotonic() + 1.0
        while len(records) < self.config.batch_size and time.monotonic() < deadline:
            event = self.stream.try_next()
            if event is None:
                token = self.stream.resume_token
                if token is not None:
                    position["token"] = _ejson(token)
                    position.pop("invalidated", None)
                if not records:
                    continue
                break
            op = event.get("operationType")
            position["token"] = _ejson(event["_id"])
            position.pop("invalidated", None)
            if op == "invalidate":
                self.context.logger.warning(
                    "mongodb: the change stream of %s was invalidated (the collection was "
                    "dropped or renamed); a new stream starts after it",
                    self.subject,
                )
                position["invalidated"] = True
                self.stream.close()
                self.stream = None
                break
            if op not in ("insert", "update", "replace", "delete"):
                continue  # drop, rename, dropDatabase: followed by an invalidate
            token_text = str(event["_id"].get("_data", dumps(_ejson(event["_id"])).decode()))
            key = event.get("documentKey", {})
            if op == "delete":
                doc: Any = dict(key)
            else:
                doc = event.get("fullDocument")
                if doc is None:  # updateLookup found it deleted meanwhile; or default mode
                    doc = dict(key)
                    if op == "update":
                        doc["$update"] = event.get("updateDescription", {})
            record = self._record(doc, op, token_text, key.get("_id"), _event_time(event))
            records.append(record)
        self.position = position
        return SourceBatch(records, {PARTITION: position})

    # -- records -----------------------------------------------------------------------------

    def _key(self, doc: Mapping[str, Any]) -> str:
        value = to_json(doc.get("_id"), "relaxed")
        return value if isinstance(value, str) else dumps(value).decode()

    def _record(
        self, doc: Mapping[str, Any], op: str, rid: str, _id: Any = None, when: str | None = None
    ) -> Record:
        """``when``: the change's time from the change stream; a document read by the copy or
        a poll has no event time the source knows, so it gets the ingestion time."""
        data = to_json(doc, self.config.json_mode)
        key_value = to_json(_id if _id is not None else doc.get("_id"), "relaxed")
        key = key_value if isinstance(key_value, str) else dumps(key_value).decode()
        spell = eventrules.spelled_string
        return Record(
            data,
            id=spell(rid),
            source=self.uri,
            type=self.config.type or f"mongodb.{op}",
            subject=self.subject,
            time=when or _now_iso(),
            extensions={"partitionkey": spell(key)},
        )

    def classify_error(self, exc: BaseException) -> type[MeshconnectError] | None:
        return classify_mongo(exc)

    async def stop(self) -> None:
        stream = getattr(self, "stream", None)
        if stream is not None:
            await asyncio.to_thread(stream.close)
        client = getattr(self, "client", None)
        if client is not None:
            await asyncio.to_thread(client.close)


def _get(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


#: The kinds of BSON values, in MongoDB's sort order (null, which missing fields sort as,
#: first), each with a condition every value of the kind meets. A query's ``$gt`` compares
#: values of one kind only ("type bracketing"): past the last integer, ``{$gt: 7}`` matches no
#: string or ObjectId, and ``{$gt: null}`` nothing at all; so "after" also asks for every
#: value of the kinds that sort later.
_KINDS: list[tuple[tuple[type, ...], dict[str, Any]]] = [
    ((type(None),), {"$type": "null"}),
    ((int, float, Int64, Decimal128), {"$gte": float("-inf")}),
    ((str,), {"$gte": ""}),
    ((Mapping,), {"$gte": {}}),
    ((bytes, Binary, uuid.UUID), {"$gte": Binary(b"", 0)}),
    ((ObjectId,), {"$gte": ObjectId(b"\x00" * 12)}),
    ((bool,), {"$gte": False}),
    ((dt.datetime, DatetimeMS), {"$gte": dt.datetime(1, 1, 1, tzinfo=dt.UTC)}),
]
# Not followed across: dates before year 1, and timestamps, regular expressions and MaxKey
# after dates (rare as ids or growing fields; and mongomock cannot compare the first two).


def _kind(value: Any) -> int:
    """The place of ``value``'s kind in :data:`_KINDS` (its length: a kind sorting later)."""
    if isinstance(value, bool):
        return 6
    for i, (types, _) in enumerate(_KINDS):
        if isinstance(value, types):
            return i
    return len(_KINDS)


def _after(field: str, value: Any) -> list[dict[str, Any]]:
    """``$or`` clauses matching the documents whose ``field`` sorts after ``value``."""
    later = [{field: condition} for _, condition in _KINDS[_kind(value) + 1 :]]
    return [{field: {"$gt": value}}, *later]


def _now_iso() -> str:
    """The ingestion time: now, as an RFC 3339 timestamp in UTC."""
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def _event_time(event: Mapping[str, Any]) -> str | None:
    """A change event's time: ``wallTime`` (MongoDB 6.0+, milliseconds), else the seconds of
    ``clusterTime``; None when the event has neither."""
    wall = event.get("wallTime")
    if isinstance(wall, dt.datetime):
        wall = wall if wall.tzinfo else wall.replace(tzinfo=dt.UTC)
        return wall.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    cluster = getattr(event.get("clusterTime"), "time", None)
    if isinstance(cluster, int):
        return dt.datetime.fromtimestamp(cluster, dt.UTC).isoformat().replace("+00:00", "Z")
    return None
