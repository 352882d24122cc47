"""Records: every record in the mesh is a CloudEvent 1.0.

Inside the worker a record is a :class:`Record`, a slotted object that is cheaper to create and
read than the ``cloudevents`` SDK's event. The conversion is lossless both ways
(:meth:`Record.to_cloudevent` / :meth:`Record.from_cloudevent`), and :meth:`Record.to_dict` /
:meth:`Record.from_dict` give the CloudEvents JSON (structured mode) form.

Besides the CloudEvent (and a cache of its encoded ``data``), a record carries two pieces of
mesh metadata that are *not* part of the event: ``topic`` (set by the router or a transform;
where it is stored) and ``offset`` (its position in that topic once stored). Both are ``None``
until known.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .config.topics import base_topic
from .eventrules import parse_event

__all__ = ["CONTEXT_ATTRIBUTES", "EncodedRecord", "Record", "kind_of", "new_id", "now_iso"]

SPECVERSION = "1.0"

#: The CloudEvents context attributes a record has as fields (besides ``data``).
CONTEXT_ATTRIBUTES = (
    "id",
    "source",
    "type",
    "specversion",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
)
_OPTIONAL = ("subject", "time", "datacontenttype", "dataschema")


_new = object.__new__


def new_id() -> str:
    """A fresh, unique CloudEvent id."""
    return uuid.uuid4().hex


def now_iso() -> str:
    """The current time as an RFC 3339 timestamp in UTC."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Record:
    """One CloudEvent plus its place in the mesh (``topic``, ``offset``).

    ``data`` is any JSON value (dict, list, str, number, bool, None) or ``bytes``; ``bytes``
    travel as ``data_base64`` in the JSON form. ``data`` None is *no data*, or an explicit
    ``"data": null`` payload when ``null_data`` is true. ``extensions`` maps extension attribute
    names (lower-case alphanumerics, as CloudEvents requires) to str, int or bool values.

    The constructor and :meth:`fast` check nothing (they are the hot path of sources);
    :meth:`from_dict` and :meth:`from_cloudevent`, for events from outside, check every
    CloudEvents rule (:mod:`meshconnect.eventrules`).
    """

    __slots__ = (
        "data",
        "datacontenttype",
        "dataschema",
        "encoded_data",
        "extensions",
        "id",
        "null_data",
        "offset",
        "source",
        "subject",
        "time",
        "topic",
        "type",
    )

    specversion = SPECVERSION

    def __init__(
        self,
        data: Any = None,
        *,
        id: str | None = None,
        source: str = "meshconnect",
        type: str = "meshconnect.record",
        subject: str | None = None,
        time: str | None = None,
        datacontenttype: str | None = "application/json",
        dataschema: str | None = None,
        extensions: dict[str, Any] | None = None,
        topic: str | None = None,
        offset: int | None = None,
        null_data: bool = False,
    ) -> None:
        self.data = data
        #: True for an explicit JSON ``null`` payload (``"data": null``), which the JSON
        #: format keeps apart from an event without data; meaningful only while ``data`` is
        #: None (setting ``data`` to a value makes it moot).
        self.null_data = null_data
        self.id = id if id is not None else uuid.uuid4().hex
        self.source = source
        self.type = type
        self.subject = subject
        self.time = time
        self.datacontenttype = datacontenttype
        self.dataschema = dataschema
        self.extensions = extensions if extensions is not None else {}
        self.topic = topic
        self.offset = offset
        #: ``data`` as JSON bytes, as the mesh store encoded it, or None. A cache that sinks
        #: may write instead of encoding again; valid only while ``data`` is unchanged, which
        #: holds for records read from the mesh (readers change copies, see
        #: :meth:`copy`, which drops it).
        self.encoded_data: bytes | None = None

    @classmethod
    def fast(
        cls,
        data: Any,
        id: str,
        source: str,
        type: str,
        subject: str | None,
        datacontenttype: str | None,
        time: str | None = None,
        dataschema: str | None = None,
        extensions: dict[str, Any] | None = None,
        topic: str | None = None,
        offset: int | None = None,
        null_data: bool = False,
    ) -> Record:
        """A record from positional values, about twice as fast as the constructor: for the
        hot loops of sources and stores that make hundreds of thousands of records a second.
        Nothing is checked or copied."""
        r = _new(cls)
        r.data = data
        r.null_data = null_data
        r.id = id
        r.source = source
        r.type = type
        r.subject = subject
        r.time = time
        r.datacontenttype = datacontenttype
        r.dataschema = dataschema
        r.extensions = {} if extensions is None else extensions
        r.topic = topic
        r.offset = offset
        r.encoded_data = None
        return r

    # -- comparison and display ---------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    @property
    def topic_name(self) -> str | None:
        """``topic`` without its partition: ``orders`` for a record stored in partition 2 of
        ``orders`` (``topic`` ``orders#2``, docs/scaleout.md#partitions); what a sink names a
        table or collection after. ``topic`` itself, with ``offset``, says where the record is
        stored."""
        return base_topic(self.topic)

    def __repr__(self) -> str:
        where = f" topic={self.topic!r} offset={self.offset}" if self.topic is not None else ""
        return f"<Record id={self.id!r} type={self.type!r}{where} data={self.data!r}>"

    def copy(self) -> Record:
        """A shallow copy whose ``data`` dict and extensions can be changed independently."""
        data = self.data
        if isinstance(data, dict):
            data = dict(data)
        return Record(
            data,
            id=self.id,
            source=self.source,
            type=self.type,
            subject=self.subject,
            time=self.time,
            datacontenttype=self.datacontenttype,
            dataschema=self.dataschema,
            extensions=dict(self.extensions),
            topic=self.topic,
            offset=self.offset,
            null_data=self.null_data,
        )

    # -- CloudEvents JSON form -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The CloudEvents JSON (structured mode) form: attributes, extensions and data."""
        out: dict[str, Any] = {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        for name in _OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(self.extensions)
        if isinstance(self.data, bytes | bytearray):
            out["data_base64"] = base64.b64encode(self.data).decode("ascii")
        elif self.data is not None or self.null_data:
            out["data"] = self.data
        return out

    @classmethod
    def from_dict(cls, event: Mapping[str, Any]) -> Record:
        """Build a record from the CloudEvents JSON form; unknown keys become extensions.

        Every CloudEvents rule is checked (:mod:`meshconnect.eventrules`) and nothing is
        converted: :class:`~meshconnect.eventrules.InvalidEventError` (a ``DataError`` and a
        ``ValueError``) names the attribute and the rule it breaks."""
        return parse_event(event, cls)

    # -- the cloudevents SDK (used at the HTTP boundary) ---------------------------------------

    def to_cloudevent(self) -> Any:
        """This record as a ``cloudevents.http.CloudEvent`` (the SDK is imported lazily)."""
        from cloudevents.http import CloudEvent

        attributes = {k: v for k, v in self.to_dict().items() if k not in ("data", "data_base64")}
        return CloudEvent(attributes, self.data)

    @classmethod
    def from_cloudevent(cls, event: Any) -> Record:
        """Build a record from a ``cloudevents`` SDK event, keeping every attribute; the same
        rules as :meth:`from_dict` (a ``datetime`` ``time`` becomes its RFC 3339 text)."""
        attributes = dict(event.get_attributes())
        time = attributes.get("time")
        if isinstance(time, datetime):
            attributes["time"] = time.isoformat().replace("+00:00", "Z")
        attributes.pop("data", None)
        attributes.pop("data_base64", None)
        data = event.get_data()
        if data is not None:
            attributes["data"] = data
        return parse_event(attributes, cls)


#: The ``data`` slot of an :class:`EncodedRecord` not yet decoded.
_PENDING: Any = object()
_data_slot = Record.__dict__["data"]
_get_data = _data_slot.__get__
_set_data = _data_slot.__set__
_loads: Any = None  # meshconnect.jsonvalue.loads, imported on the first decode


class EncodedRecord(Record):
    """A record whose ``data`` is held as its JSON encoding (``encoded_data``) and decoded on
    first read: for sources whose records nothing reads before the mesh store, which then
    stores those bytes as they are instead of encoding a Python value built only to be
    encoded (the canal source's FlatMessages; issue 21, docs/benchmarks.md).

    To every reader it is a :class:`Record`: ``data`` gives the decoded value
    (:func:`meshconnect.jsonvalue.loads`: exact numbers), and setting ``data`` drops the
    encoding. Until the record is stored (``offset`` None), reading ``data`` drops the
    encoding too, since a transform may change the value it got in place; the store then
    encodes the value as for any record. A stored record keeps it (readers of the mesh change
    copies, see :meth:`Record.copy`).

    Make one with :meth:`of`; ``encoded`` should be what :func:`meshconnect.jsonvalue.dumps`
    writes for the value (compact UTF-8 JSON on one line). The store checks, for the batch at
    once, that each encoding is one JSON value in UTF-8 on one line, and stores it as given;
    one that is not cannot be stored (``RecordEncodingError`` naming it; its ``data`` becomes
    the bytes, so its dead letter keeps them).
    """

    __slots__ = ()

    @classmethod
    def of(
        cls,
        encoded: bytes,
        id: str,
        source: str,
        type: str,
        subject: str | None,
        time: str | None,
        extensions: dict[str, Any],
        *,
        check: bool = True,
    ) -> EncodedRecord:
        """A record of JSON data given as its encoding (``datacontenttype``
        ``application/json``), from positional values; nothing is copied. The store checks
        ``encoded`` (see the class); ``check=False`` is the caller's word that the bytes are
        :mod:`meshconnect.jsonvalue`'s own output for a value (``dumps``, ``dumps_each``,
        ``encode_unchecked``, or such output joined as JSON's grammar has it), never bytes
        from outside, and that ``extensions`` are valid
        (:func:`meshconnect.eventrules.extensions_problem` finds nothing): the store stores
        both unchecked (the canal source's FlatMessages)."""
        r = _new(cls if check else _OwnEncoding)
        # ``null`` is an explicit null payload (``null_data``), known without a decode.
        null = encoded == b"null"
        _set_data(r, None if null else _PENDING)
        r.encoded_data = encoded
        r.null_data = null
        r.id = id
        r.source = source
        r.type = type
        r.subject = subject
        r.time = time
        r.datacontenttype = "application/json"
        r.dataschema = None
        r.extensions = extensions
        r.topic = None
        r.offset = None
        return r

    @property
    def data(self) -> Any:
        value = _get_data(self)
        if value is _PENDING:
            global _loads
            if _loads is None:
                from .jsonvalue import loads as _loads
            value = _loads(self.encoded_data, max_depth=None)
            _set_data(self, value)
            if value is None:  # ``null``: an explicit null payload, as the store has it
                self.null_data = True
            if self.offset is None:  # not stored yet: the reader may change it in place
                self.encoded_data = None
        return value

    @data.setter
    def data(self, value: Any) -> None:
        _set_data(self, value)
        self.encoded_data = None

    @property
    def pending(self) -> bool:
        """Whether ``data`` was not decoded yet (``encoded_data`` is then its encoding)."""
        return _get_data(self) is _PENDING


class _OwnEncoding(EncodedRecord):
    """An :class:`EncodedRecord` made with ``check=False``: bytes of meshconnect's own
    encoder and extensions its maker checked, which the store does not check again."""

    __slots__ = ()


#: The classes of records whose data may be held as their encoding (``EncodedRecord``).
ENCODED_CLASSES = frozenset({EncodedRecord, _OwnEncoding})
#: Of them, the one whose encodings the store checks.
CHECKED_ENCODING = EncodedRecord
#: Of them, the one whose encodings and extensions the store does not check.
OWN_ENCODING = _OwnEncoding


def kind_of(value: Any) -> str:
    """What kind of JSON value ``value`` is, for messages: ``null``, ``a string``, ``an object``…"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"
