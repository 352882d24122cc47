"""Record serialization shared by the embedded stores (``sqlite``, ``memory``).

The SQLite store keeps a batch of records as one *segment* (:func:`encode_segment`,
:func:`decode_segment`): one JSON document per appended batch and topic, so an append costs
one encoding and one row, not one per record. The memory store keeps a row of plain values
per record, in this order (:data:`ROW_FIELDS`)::

    id, source, type, subject, time, datacontenttype, dataschema, extensions, data

* The context attributes are stored as they are (text; ``None`` when absent).
* ``extensions`` is the JSON text of the extension dict, or ``None`` when it is empty.
* ``data`` is ``None`` (no data), ``str`` (the JSON text of a JSON value, written by
  :func:`meshconnect.jsonvalue.dumps`: integers of any size and ``Decimal`` numbers keep every
  digit, so a record read back has the very numbers appended; ``"null"`` for an explicit null
  payload, ``Record.null_data``) or ``bytes`` (binary data, stored as is). The Python type of
  the stored value tells which, so a record read back equals the record appended
  (``Record.__eq__``), bytes included.

Both encode the same things and refuse the same things: :func:`encode_row` is the careful
check that names a record which cannot be stored. Besides types, extensions must follow the
CloudEvents rules (names of ``a-z0-9``, String / boolean / 32-bit integer values; see
:func:`meshconnect.eventrules.extensions_problem`), so whatever made a record, the mesh never
holds an extension a CloudEvents consumer would reject. Records are rebuilt with ``Record.fast``;
``tests/test_store.py`` checks that :data:`RECORD_SLOTS` still covers every slot of
:class:`~meshconnect.records.Record`.

Data that has no JSON form (an arbitrary object, NaN or infinity, nesting deeper than Python
can write) makes the append fail with :class:`RecordEncodingError` (a ``DataError``) naming
the record. Values JSON lacks but that have a JSON form (a tuple or set as an array, bytes
inside data as base64 text, ``datetime`` and ``UUID`` as text, a non-string key as text) are
stored in that form, exactly as :func:`meshconnect.jsonvalue.dumps` writes them everywhere.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from typing import Any

import msgspec
import orjson

from .. import jsonvalue
from ..errors import DataError, StoreError
from ..eventrules import INT32_MAX, INT32_MIN, extension_value_problem, extensions_problem
from ..records import CHECKED_ENCODING, ENCODED_CLASSES, OWN_ENCODING, Record

__all__ = [
    "RECORD_SLOTS",
    "ROW_FIELDS",
    "ChangeSignal",
    "RecordEncodingError",
    "check_offsets",
    "decode_json",
    "decode_rows",
    "encode_json",
    "encode_positions",
    "encode_row",
    "encode_state",
]

#: The stored fields of a record, in row order.
ROW_FIELDS = (
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "extensions",
    "data",
)
#: Every ``Record`` slot :func:`decode_rows` sets (the stored fields plus mesh metadata).
RECORD_SLOTS = (*ROW_FIELDS, "topic", "offset", "encoded_data", "null_data")

_dumps = orjson.dumps


def _loads(text: str | bytes) -> Any:
    # The store's own text: checked on the way in, its depth not limited again.
    return jsonvalue.loads(text, max_depth=None)


class RecordEncodingError(DataError):
    """A record cannot be stored (its data is not JSON-serialisable, an attribute is not a
    string). Nothing of the batch it came in was written. ``index`` is its position in the
    batch passed to ``append`` and ``record`` the record itself, so the caller can route it
    to the dead-letter topic and append the rest again."""

    def __init__(self, index: int, record: Record, reason: str) -> None:
        self.index = index
        self.record = record
        super().__init__(
            f"record {index} of the batch (id {record.id!r}, topic {record.topic!r}) cannot "
            f"be stored: {reason}"
        )


def encode_json(value: Any) -> str:
    """``value`` as compact JSON text (:func:`meshconnect.jsonvalue.dumps`); ``TypeError`` when
    it is not serialisable."""
    return jsonvalue.dumps(value).decode()


def encode_row(index: int, r: Record, key: Any, appended_at: float) -> tuple[Any, ...]:
    """The row ``(key, appended_at, *ROW_FIELDS)`` of one record, checking every field;
    :class:`RecordEncodingError` names what is wrong. The memory store's encoding, and what
    names the culprit when a segment cannot be encoded."""
    values: list[Any] = [key, appended_at]
    for name in ("id", "source", "type"):
        value = getattr(r, name)
        if not isinstance(value, str):
            raise RecordEncodingError(index, r, f"attribute {name!r} must be a string")
        values.append(value)
    for name in ("subject", "time", "datacontenttype", "dataschema"):
        value = getattr(r, name)
        if value is not None and not isinstance(value, str):
            raise RecordEncodingError(index, r, f"attribute {name!r} must be a string or None")
        values.append(value)
    if r.__class__ is CHECKED_ENCODING and r.pending:
        raw = r.encoded_data
        problem = encoding_problem(raw)
        if problem is not None:  # its dead letter keeps what was given, as binary data
            r.data = bytes(raw) if isinstance(raw, bytes | bytearray | memoryview) else raw
            raise RecordEncodingError(index, r, f"its encoded data {problem}")
    ext = r.extensions
    if not isinstance(ext, dict):
        raise RecordEncodingError(index, r, "extensions must be a dict")
    problem = extensions_problem(ext) if ext else None
    if problem is not None:  # a CloudEvents rule: names a-z0-9, str/bool/int32 values
        raise RecordEncodingError(index, r, problem)
    try:
        values.append(jsonvalue.dumps(ext).decode() if ext else None)
    except TypeError as exc:
        reason = f"extensions are not JSON-serialisable: {exc}"
        raise RecordEncodingError(index, r, reason) from None
    data = r.data
    if data is None:
        values.append("null" if r.null_data else None)
    elif isinstance(data, bytes | bytearray | memoryview):
        values.append(bytes(data))
    else:
        try:
            values.append(jsonvalue.dumps(data).decode())
        except TypeError as exc:
            raise RecordEncodingError(index, r, f"data is not JSON-serialisable: {exc}") from None
    return tuple(values)


def decode_rows(rows: Iterable[Sequence[Any]], topic: str) -> list[Record]:
    """Records from rows ``(offset, *ROW_FIELDS)`` (``None`` for absent values)."""
    loads = _loads
    make = Record.fast
    return [
        make(
            loads(data) if type(data) is str else data,
            id_,
            source,
            type_,
            subject,
            dct,
            time,
            schema,
            loads(ext) if ext is not None else None,
            topic,
            offset,
            data == "null",
        )
        for offset, id_, source, type_, subject, time, dct, schema, ext, data in rows
    ]


_BINARY = frozenset((bytes, bytearray, memoryview))


_ATTRIBUTES = ("id", "source", "type", "subject", "time", "datacontenttype", "dataschema")


def encode_segment(records: Sequence[Record]) -> bytes:
    """The records of one topic and batch as one JSON document, in one of two layouts.

    *Columns* (the usual one, starts with ``{``): ``{"n": count, "id": [...], "source":
    "file:///x", ..., "ext": [...] | null, "data": [...]}``; an attribute column that holds one
    value for the whole batch is stored once, as that value. Each record's ``data`` is encoded
    on its own (and kept in ``record.encoded_data`` for sinks), then the column is a byte join:
    no per-record Python objects besides that one encoding.

    *Rows* (starts with ``[``): one array per record, ``[id, source, type, subject, time,
    datacontenttype, dataschema, extensions|null, data]`` plus ``1`` when ``data`` is bytes
    (then base64 text) or ``2`` when it is an explicit null. Used for batches with bytes data.

    Explicit null payloads (``Record.null_data``) are listed by batch index in ``"dn"`` (columns
    layout), which is absent when there is none.

    Raises :class:`RecordEncodingError` naming a record that cannot be stored."""
    n = len(records)
    if not n:
        return b"[]"
    dumps = _dumps
    classes = set(map(type, records))
    encoded = _encode_data(records, classes)
    if encoded is None:
        return _encode_rows_segment(records)
    parts = [b'{"n":', str(n).encode()]
    # One list per attribute (a comprehension reads a slot faster than a map of attrgetter);
    # an attribute the whole batch shares, as a source makes them, is checked and stored once.
    columns: tuple[tuple[bytes, list[Any], bool], ...] = (
        (b"id", [r.id for r in records], True),
        (b"source", [r.source for r in records], True),
        (b"type", [r.type for r in records], True),
        (b"subject", [r.subject for r in records], False),
        (b"time", [r.time for r in records], False),
        (b"datacontenttype", [r.datacontenttype for r in records], False),
        (b"dataschema", [r.dataschema for r in records], False),
    )
    for key, values, required in columns:
        first = values[0]
        if values.count(first) == n:
            if not (first.__class__ is str or (first is None and not required)):
                return _encode_rows_segment(records)  # names the culprit
            parts += (b',"', key, b'":', dumps(first))
        elif _all_text(values, required):
            parts += (b',"', key, b'":', dumps(values))
        else:
            return _encode_rows_segment(records)  # names the culprit
    if any([r.extensions for r in records]):
        extensions = [r.extensions or None for r in records]
        # Extensions whose maker checked them (EncodedRecord.of(check=False)) are not again.
        checked: list[dict[str, Any] | None] = (
            extensions
            if OWN_ENCODING not in classes
            else [r.extensions for r in records if r.__class__ is not OWN_ENCODING]
        )
        if not _extensions_valid(checked) and any(e and extensions_problem(e) for e in checked):
            return _encode_rows_segment(records)  # names the culprit
        try:
            # Valid extensions hold strings, integers and booleans only: no float to check.
            parts += (b',"ext":', jsonvalue.dumps(extensions, floats=False))
        except TypeError:
            return _encode_rows_segment(records)
    if b"null" in encoded:  # rare: find explicit nulls (not just absent data)
        nulls = [i for i, r in enumerate(records) if r.null_data and r.data is None]
        if nulls:
            parts += (b',"dn":', dumps(nulls))
    for r, e in zip(records, encoded, strict=True):
        r.encoded_data = e
    # One copy of the data: the head and the end go onto the first and last encodings. A
    # join of the data joined again copied it twice, and a bulk CDC batch of megabytes then
    # paid for a fresh allocation of that size each time (page faults: ~1 ms a MB).
    parts.append(b',"data":[')
    items = list(encoded)
    items[0] = b"".join((*parts, items[0]))
    items[-1] += b"]}"
    return b",".join(items)


def _encode_data(records: Sequence[Record], classes: set[type]) -> list[bytes] | None:
    """Each record's data as JSON (``jsonvalue.dumps``); None when a record's data is bytes or
    cannot be stored (then the rows layout keeps it or names the culprit). An
    :class:`~meshconnect.records.EncodedRecord` still holding its encoding gives it as it is."""
    if ENCODED_CLASSES.isdisjoint(classes):
        datas = [r.data for r in records]
        if not _BINARY.isdisjoint(map(type, datas)):
            return None  # bytes data keeps its type in the rows layout
        try:
            return jsonvalue.dumps_each(datas)
        except TypeError:  # data that cannot be stored
            return None
    encoded: list[Any] = (
        [r.encoded_data for r in records]  # the usual batch of one source: no class test
        if classes <= ENCODED_CLASSES
        else [r.encoded_data if r.__class__ in ENCODED_CLASSES else None for r in records]
    )
    if CHECKED_ENCODING in classes and not _encodings_valid(
        [r.encoded_data for r in records if r.__class__ is CHECKED_ENCODING and r.pending]
    ):
        return None  # the rows layout names the record (encode_row)
    if None in encoded:  # data read (and the encoding dropped) before the store, or plain
        todo = [i for i, e in enumerate(encoded) if e is None]
        datas = [records[i].data for i in todo]
        if not _BINARY.isdisjoint(map(type, datas)):
            return None
        try:
            more = jsonvalue.dumps_each(datas)
        except TypeError:
            return None
        for i, e in zip(todo, more, strict=True):
            encoded[i] = e
    return encoded


#: Checks JSON syntax without building values (msgspec's ``Raw``): a fraction of a decode.
_raw_lines = msgspec.json.Decoder(msgspec.Raw).decode_lines
_raw = msgspec.json.Decoder(msgspec.Raw).decode


def _encodings_valid(encodings: list[Any]) -> bool:
    """Whether each of an append's given encodings (``EncodedRecord``) is bytes holding one
    JSON value in UTF-8 on one line, checked for the batch at once: it is spliced into the
    stored segment as it is, and sinks write it as a line."""
    if not encodings:
        return True
    try:
        joined = b"\n".join(encodings)
    except TypeError:  # not bytes
        return False
    if joined.count(b"\n") != len(encodings) - 1 or b"\r" in joined:
        return False
    if not joined.isascii():
        try:
            joined.decode()
        except UnicodeDecodeError:
            return False
    try:
        return len(_raw_lines(joined)) == len(encodings)
    except (msgspec.DecodeError, ValueError):
        return False


def encoding_problem(encoded: Any) -> str | None:
    """What is wrong with an ``EncodedRecord``'s encoding, or None: the record's reason in
    :class:`RecordEncodingError`."""
    if not isinstance(encoded, bytes):
        return f"must be bytes, not {type(encoded).__name__}"
    if b"\n" in encoded or b"\r" in encoded:
        return "must be on one line (compact JSON holds no raw line break)"
    try:
        encoded.decode()
        _raw(encoded)
    except UnicodeDecodeError:
        return "is not UTF-8"
    except (msgspec.DecodeError, ValueError) as exc:
        return f"is not one JSON value ({exc})"
    return None


_EXTENSION_KINDS = frozenset((str, int, bool))


def _extensions_valid(extensions: list[dict[str, Any] | None]) -> bool:
    """Whether a batch's extensions are certainly valid, checked for the batch at once (the
    names each once, the strings as one text, the integers by their least and greatest);
    False when unsure: then :func:`extensions_problem` checks each record's."""
    present = [e for e in extensions if e]
    names: set[str] = set().union(*present)
    if extensions_problem(dict.fromkeys(names, "")) is not None:
        return False
    values = [v for e in present for v in e.values()]
    if not _EXTENSION_KINDS.issuperset(map(type, values)):
        return False
    # A character a String may not hold is one code point: joining finds every one.
    texts = [v for v in values if v.__class__ is str]
    if texts and extension_value_problem("".join(texts)) is not None:
        return False
    numbers = [v for v in values if v.__class__ is int]
    return not numbers or (min(numbers) >= INT32_MIN and max(numbers) <= INT32_MAX)


def _all_text(values: list[Any], required: bool) -> bool:
    """Whether every value is a string (or None, unless ``required``): a ``str.join``, in C."""
    try:
        "".join(values if required else [v for v in values if v is not None])
    except TypeError:
        return False
    return True


def _encode_rows_segment(records: Sequence[Record]) -> bytes:
    rows: list[list[Any]] = []
    for index, r in enumerate(records):
        encode_row(index, r, 0, 0.0)  # raises RecordEncodingError naming what is wrong
        row: list[Any] = [
            r.id,
            r.source,
            r.type,
            r.subject,
            r.time,
            r.datacontenttype,
            r.dataschema,
            r.extensions or None,
            r.data,
        ]
        if isinstance(r.data, bytes | bytearray | memoryview):
            row[8] = base64.b64encode(bytes(r.data)).decode("ascii")
            row.append(1)
        elif r.data is None and r.null_data:
            row.append(2)
        rows.append(row)
    return jsonvalue.dumps(rows)


def decode_segment(body: bytes | str, topic: str, first: int) -> list[Record]:
    """The records of a segment written by :func:`encode_segment`, with offsets from
    ``first``."""
    make = Record.fast
    doc = _loads(body)
    if isinstance(doc, dict):
        n = doc["n"]
        columns = [
            col if isinstance(col := doc.get(name), list) else repeat(col, n)
            for name in _ATTRIBUTES
        ]
        ids, sources, types, subjects, times, dcts, schemas = columns
        extensions = doc.get("ext") or repeat(None, n)
        records = [
            make(data, id_, source, type_, subject, dct, time, schema, ext or None, topic, offset)
            for offset, (data, id_, source, type_, subject, dct, time, schema, ext) in enumerate(
                zip(
                    doc["data"],
                    ids,
                    sources,
                    types,
                    subjects,
                    dcts,
                    times,
                    schemas,
                    extensions,
                    strict=True,
                ),
                first,
            )
        ]
        for index in doc.get("dn") or ():
            records[index].null_data = True
        return records
    return [
        make(
            row[8] if len(row) == 9 or row[9] == 2 else base64.b64decode(row[8]),
            row[0],
            row[1],
            row[2],
            row[3],
            row[5],
            row[4],
            row[6],
            row[7] or None,
            topic,
            offset,
            len(row) == 10 and row[9] == 2,
        )
        for offset, row in enumerate(doc, first)
    ]


def decode_json(text: str | bytes | None) -> Any:
    """The value of JSON ``text``; ``None`` for ``None``."""
    return None if text is None else _loads(text)


def encode_positions(
    positions: Mapping[tuple[str, str], Mapping[str, Any]] | None,
) -> list[tuple[str, str, str]]:
    """``(connector, partition, JSON text)`` per source position; ``StoreError`` (raised
    before anything is written) when a position is not JSON-serialisable."""
    rows = []
    for (connector, partition), position in (positions or {}).items():
        try:
            text = _dumps(position if type(position) is dict else dict(position)).decode()
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"source position of connector {connector!r}, partition {partition!r} is not "
                f"JSON-serialisable ({exc}); nothing was written. Positions must be JSON."
            ) from None
        rows.append((connector, partition, text))
    return rows


def encode_state(group: str, state: Mapping[str, Any] | None) -> str | None:
    """A sink state as JSON text (``None`` stays ``None``); ``StoreError`` when it is not
    JSON-serialisable."""
    if state is None:
        return None
    try:
        return _dumps(state if type(state) is dict else dict(state)).decode()
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"sink state of group {group!r} is not JSON-serialisable ({exc}); nothing was committed"
        ) from None


def check_offsets(offsets: Mapping[str, int]) -> dict[str, int]:
    """A copy of consumer offsets; ``ValueError`` unless each is an int >= 0."""
    for topic, offset in offsets.items():
        if type(offset) is not int or offset < 0:
            raise ValueError(f"offset of topic {topic!r} must be an int >= 0, not {offset!r}")
    return dict(offsets)


class ChangeSignal:
    """Wakes every waiting reader when records were appended; each waiter also wakes after
    its timeout, since another process may append without telling us.

    Not bound to an event loop (unlike ``asyncio.Event``), so one store can serve several
    loops in turn (a CLI that runs ``asyncio.run`` twice) or threads.
    """

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    async def wait(self, timeout: float) -> None:
        """Return at the next :meth:`notify`, or after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(timeout, _wake, future)
        self._waiters.add(future)
        try:
            await future
        finally:
            timer.cancel()
            self._waiters.discard(future)

    def notify(self) -> None:
        """Wake every current waiter (from any thread)."""
        waiters, self._waiters = self._waiters, set()
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for future in waiters:
            loop = future.get_loop()
            if loop is running:
                _wake(future)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(_wake, future)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
