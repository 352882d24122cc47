"""Field paths: where a transform reads or writes a value of a record.

A field path names one value::

    data                        the whole payload
    data.email                  a key of the payload object
    data.customer.address.zip   nested objects
    data.items[0].sku           an array element (negative indexes count from the end)
    data['weird key']           any key, quoted with ' or " (backslash escapes the quote)
    subject, type, time, ...    a CloudEvent context attribute
    topic                       the topic the record is routed to (read only; see below)
    partitionkey                any other bare name: an extension attribute

Keys written after a dot are letters, digits, ``_`` and ``-``; names and dotted keys starting
with ``_`` are refused, as in expressions: write ``data['_id']`` or ``data['__deleted']`` (a
quoted key is refused only when it is a Python special name, ``__x__``). Extension names are
lower-case letters and digits, as CloudEvents requires. Only ``data`` paths go deeper than one
name. ``topic`` is not part of the CloudEvent but the mesh topic of the record: in a sink's
transforms the topic it was stored in, in a pipeline's transforms the one a ``route`` gave it
(none before); it can be read (``insert_field`` with ``from: topic``, as Kafka Connect's
``InsertField`` ``topic.field``), not changed.

:func:`parse_path` parses a path once into a :class:`FieldPath` whose ``get``, ``set`` and
``delete`` work on records without parsing again. Their contract:

* ``get(record) -> (found, value)``. A missing key, an index out of range, or a ``null`` on the
  way is *not found*. A value on the way that is not an object (for a key) or an array (for an
  index) is a :class:`~meshconnect.errors.DataError`: the record does not have the expected
  shape.
* ``find(record) -> value | MISSING``: the same walk, but ``null`` is never missing: a ``null``
  payload (a tombstone) or a ``null`` on the way gives ``None``, the value of every path
  below it; only a key absent from an object (or an index out of range, or an absent
  attribute or extension) is :data:`MISSING`.
* ``set(record, value, create=True)`` checks the whole way before it changes anything, so a
  record it refuses is left untouched. With ``create`` it makes missing (or ``null``) objects on
  the way; it never makes arrays or array elements.
* ``delete(record) -> bool`` removes the value; false when there was nothing to remove.
* ``update(record, change) -> bool`` replaces a present, non-null value by ``change(value)``
  in one walk (what ``mask`` does); false when there was nothing to change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ..config.topics import base_topic
from ..errors import ConfigError, DataError
from ..eventrules import attribute_problem, extension_value_problem
from ..expr import is_special_name
from ..records import CONTEXT_ATTRIBUTES
from ..records import kind_of as _kind_of

if TYPE_CHECKING:
    from ..records import Record

__all__ = ["MISSING", "FieldPath", "parse_path"]

Segment = str | int
Kind = Literal["data", "attribute", "extension"]

#: Context attributes every record has; they cannot be removed.
REQUIRED_ATTRIBUTES = frozenset(("id", "source", "type", "specversion"))

_READ_ONLY = frozenset(("specversion", "topic"))

_MISSING: Any = object()
#: What :meth:`FieldPath.find` returns for a path that leads to no value (``null`` is a value).
MISSING: Any = _MISSING
_ABSENT: tuple[bool, Any] = (False, None)

_ROOT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOT_KEY = re.compile(r"\.([\w-]+)")
_INDEX = re.compile(r"\[\s*(-?\d+)\s*\]")
_QUOTED = re.compile(r"""\[\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\s*\]""")
_ESCAPE = re.compile(r"\\(.)")
_EXTENSION = re.compile(r"[a-z0-9]+")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9][\w-]*")


class FieldPath:
    """A parsed field path; see the module docstring for the syntax and the contract.

    ``kind`` says what the path names (``data``, a context ``attribute`` or an ``extension``),
    ``name`` the attribute or extension name (``"data"`` for data paths) and ``segments`` the
    keys and indexes below ``data``. Instances are immutable and shared freely.
    """

    __slots__ = ("kind", "name", "segments", "text")

    kind: Kind
    name: str
    segments: tuple[Segment, ...]
    text: str

    def __init__(self, kind: Kind, name: str, segments: tuple[Segment, ...] = ()) -> None:
        self.kind = kind
        self.name = name
        self.segments = segments
        self.text = name + "".join(_render_segment(s) for s in segments)

    def __repr__(self) -> str:
        return f"FieldPath({self.text!r})"

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldPath):
            return NotImplemented
        return (self.kind, self.name, self.segments) == (other.kind, other.name, other.segments)

    def __hash__(self) -> int:
        return hash((self.kind, self.name, self.segments))

    @property
    def writable(self) -> bool:
        """Whether ``set`` may change it (``specversion`` is always 1.0; ``topic`` is read
        only)."""
        return self.name not in _READ_ONLY

    @property
    def removable(self) -> bool:
        """Whether ``delete`` may remove it (``id``, ``source``, ``type`` are required)."""
        return not (self.kind == "attribute" and self.name in REQUIRED_ATTRIBUTES)

    def contains(self, other: FieldPath) -> bool:
        """Whether ``other`` is this path or a path inside it."""
        n = len(self.segments)
        return (
            self.kind == other.kind
            and self.name == other.name
            and other.segments[:n] == self.segments
        )

    def get(self, record: Record) -> tuple[bool, Any]:
        """``(True, value)`` when the path leads to a value, else ``(False, None)``."""
        raise NotImplementedError

    def find(self, record: Record) -> Any:
        """The value, ``None`` for a ``null`` (on the way too), :data:`MISSING` when absent."""
        found, value = self.get(record)
        return value if found else _MISSING

    def set(self, record: Record, value: Any, *, create: bool = True) -> None:
        """Set the value, making missing objects on the way when ``create`` is true."""
        raise NotImplementedError

    def delete(self, record: Record) -> bool:
        """Remove the value; ``False`` when there was nothing to remove."""
        raise NotImplementedError

    def update(self, record: Record, change: Callable[[Any], Any]) -> bool:
        """Replace a present, non-null value by ``change(value)`` in one walk.

        ``False`` (and nothing changed) when the value is missing or null. If ``change`` or
        the walk raises, the record is unchanged.
        """
        found, value = self.get(record)
        if not found or value is None:
            return False
        self.set(record, change(value), create=False)
        return True


class _DataPath(FieldPath):
    """``data`` followed by keys and indexes."""

    __slots__ = ("_last", "_prefixes")

    def __init__(self, segments: tuple[Segment, ...]) -> None:
        super().__init__("data", "data", segments)
        self._last = len(segments) - 1
        #: The path text down to each depth, for messages.
        self._prefixes = [
            "data" + "".join(_render_segment(s) for s in segments[:i])
            for i in range(len(segments) + 1)
        ]

    def _mismatch(self, depth: int, node: Any, action: str) -> DataError:
        seg = self.segments[depth]
        wanted = "an object" if isinstance(seg, str) else "an array"
        return DataError(
            f"cannot {action} {self.text}: {self._prefixes[depth]} is {_kind_of(node)}, "
            f"not {wanted}"
        )

    def _container(self, record: Record, action: str) -> Any:
        """The object or array holding the last segment; ``_MISSING`` if there is none."""
        node = record.data
        segments = self.segments
        for depth in range(self._last):
            if node is None:
                return _MISSING
            seg = segments[depth]
            if isinstance(seg, str):
                if not isinstance(node, dict):
                    raise self._mismatch(depth, node, action)
                node = node.get(seg)
            else:
                if not isinstance(node, list):
                    raise self._mismatch(depth, node, action)
                if not -len(node) <= seg < len(node):
                    return _MISSING
                node = node[seg]
        if node is None:
            return _MISSING
        last = segments[self._last]
        if not isinstance(node, dict if isinstance(last, str) else list):
            raise self._mismatch(self._last, node, action)
        return node

    def get(self, record: Record) -> tuple[bool, Any]:
        container = self._container(record, "read")
        if container is _MISSING:
            return _ABSENT
        last = self.segments[self._last]
        if isinstance(last, str):
            value = container.get(last, _MISSING)
            return _ABSENT if value is _MISSING else (True, value)
        if -len(container) <= last < len(container):
            return True, container[last]
        return _ABSENT

    def find(self, record: Record) -> Any:
        node = record.data
        for depth, seg in enumerate(self.segments):
            if node is None:
                return None
            if isinstance(seg, str):
                if not isinstance(node, dict):
                    raise self._mismatch(depth, node, "read")
                node = node.get(seg, _MISSING)
                if node is _MISSING:
                    return _MISSING
            else:
                if not isinstance(node, list):
                    raise self._mismatch(depth, node, "read")
                if not -len(node) <= seg < len(node):
                    return _MISSING
                node = node[seg]
        return node

    def set(self, record: Record, value: Any, *, create: bool = True) -> None:
        segments = self.segments
        node = record.data
        parent: Any = None  # the container holding ``node`` (None: the record itself)
        parent_key: Segment = ""
        for depth, seg in enumerate(segments):
            if node is None:
                self._create(record, parent, parent_key, depth, value, create)
                return
            if isinstance(seg, str):
                if not isinstance(node, dict):
                    raise self._mismatch(depth, node, "set")
                if depth == self._last:
                    node[seg] = value
                    return
                parent, parent_key, node = node, seg, node.get(seg)
            else:
                if not isinstance(node, list):
                    raise self._mismatch(depth, node, "set")
                if not -len(node) <= seg < len(node):
                    raise DataError(
                        f"cannot set {self.text}: {self._prefixes[depth + 1]} is out of range "
                        f"(the array has {len(node)} elements)"
                    )
                if depth == self._last:
                    node[seg] = value
                    return
                parent, parent_key, node = node, seg, node[seg]

    def _create(
        self,
        record: Record,
        parent: Any,
        parent_key: Segment,
        depth: int,
        value: Any,
        create: bool,
    ) -> None:
        """Make the objects from ``depth`` down, holding ``value``, in one assignment."""
        rest = self.segments[depth:]
        missing = self._prefixes[depth]
        if not create:
            raise DataError(f"cannot set {self.text}: {missing} is missing")
        if any(isinstance(seg, int) for seg in rest):
            raise DataError(f"cannot set {self.text}: {missing} is missing (arrays are not made)")
        for key in reversed(rest):
            value = {key: value}
        if parent is None:
            record.data = value
        else:
            parent[parent_key] = value

    def delete(self, record: Record) -> bool:
        container = self._container(record, "delete")
        if container is _MISSING:
            return False
        last = self.segments[self._last]
        if isinstance(last, str):
            if last in container:
                del container[last]
                return True
            return False
        if -len(container) <= last < len(container):
            del container[last]
            return True
        return False

    def update(self, record: Record, change: Callable[[Any], Any]) -> bool:
        container = self._container(record, "change")
        if container is _MISSING:
            return False
        last = self.segments[self._last]
        if isinstance(last, str):
            value = container.get(last)
        elif -len(container) <= last < len(container):
            value = container[last]
        else:
            return False
        if value is None:
            return False
        container[last] = change(value)
        return True


class _DataKeyPath(_DataPath):
    """``data.key``: the most common path, with a fast path for a dict payload."""

    __slots__ = ("_key",)

    def __init__(self, key: str) -> None:
        super().__init__((key,))
        self._key = key

    def get(self, record: Record) -> tuple[bool, Any]:
        data = record.data
        if data.__class__ is dict:
            value = data.get(self._key, _MISSING)
            return _ABSENT if value is _MISSING else (True, value)
        return super().get(record)

    def find(self, record: Record) -> Any:
        data = record.data
        if data.__class__ is dict:
            return data.get(self._key, _MISSING)
        return super().find(record)

    def set(self, record: Record, value: Any, *, create: bool = True) -> None:
        data = record.data
        if data.__class__ is dict:
            data[self._key] = value
        else:
            super().set(record, value, create=create)

    def update(self, record: Record, change: Callable[[Any], Any]) -> bool:
        data = record.data
        if data.__class__ is not dict:
            return super().update(record, change)
        value = data.get(self._key)
        if value is None:
            return False
        data[self._key] = change(value)
        return True


class _DataKeysPath(_DataPath):
    """``data.a.b.c``: keys only, with a fast path while every value on the way is a dict."""

    __slots__ = ("_head", "_tail")

    def __init__(self, keys: tuple[str, ...]) -> None:
        super().__init__(keys)
        self._head = keys[:-1]
        self._tail = keys[-1]

    def get(self, record: Record) -> tuple[bool, Any]:
        node = record.data
        for key in self._head:
            if node.__class__ is not dict:
                return super().get(record)  # None on the way, a subclass, or a DataError
            node = node.get(key)
        if node.__class__ is not dict:
            return super().get(record)
        value = node.get(self._tail, _MISSING)
        return _ABSENT if value is _MISSING else (True, value)

    def set(self, record: Record, value: Any, *, create: bool = True) -> None:
        node = record.data
        for key in self._head:
            if node.__class__ is not dict:
                return super().set(record, value, create=create)
            node = node.get(key)
        if node.__class__ is not dict:
            return super().set(record, value, create=create)
        node[self._tail] = value
        return None

    def update(self, record: Record, change: Callable[[Any], Any]) -> bool:
        node = record.data
        for key in self._head:
            if node.__class__ is not dict:
                return super().update(record, change)
            node = node.get(key)
        if node.__class__ is not dict:
            return super().update(record, change)
        value = node.get(self._tail)
        if value is None:
            return False
        node[self._tail] = change(value)
        return True


class _DataRootPath(FieldPath):
    """``data`` itself."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("data", "data")

    def get(self, record: Record) -> tuple[bool, Any]:
        return (False, None) if record.data is None else (True, record.data)

    def find(self, record: Record) -> Any:
        return record.data

    def set(self, record: Record, value: Any, *, create: bool = True) -> None:
        record.data = value
        record.null_data = value is None  # setting data to null is a null payload

    def delete(self, record: Record) -> bool:
        had = record.data is not None or record.null_data
        record.data = None
        record.null_data = False  # no data at all
        return had


class _AttributePath(FieldPath):
    """A context attribute: ``subject``, ``type``, ``time``, …"""

    __slots__ = ()

    def __init__(self, name: str) -> None:
        super().__init__("attribute", name)

    def get(self, record: Record) -> tuple[bool, Any]:
        value = getattr(record, self.name)
        return _ABSENT if value is None else (True, value)

    def set(self, record: Record, value: Any, *, create: bool = True) -> None:
        if not self.writable:
            raise DataError(f"cannot set {self.name}: it is always {record.specversion}")
        if value is None and not self.removable:
            raise DataError(f"cannot set {self.name} to null: every record has one")
        if value is not None and not isinstance(value, str):
            raise DataError(f"cannot set {self.name}: it must be a string, not {_kind_of(value)}")
        problem = None if value is None else attribute_problem(self.name, value)
        if problem is not None:  # a CloudEvents rule (non-empty, RFC 3339 time, URIs)
            raise DataError(f"cannot set {self.name}: it {problem}")
        setattr(record, self.name, value)

    def delete(self, record: Record) -> bool:
        if not self.removable:
            raise DataError(f"cannot delete {self.name}: every record has one")
        had = getattr(record, self.name) is not None
        setattr(record, self.name, None)
        return had


class _TopicPath(_AttributePath):
    """``topic``: the mesh topic of the record (read only)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("topic")

    def get(self, record: Record) -> tuple[bool, Any]:
        value = base_topic(record.topic)  # without its partition (docs/scaleout.md#partitions)
        return _ABSENT if value is None else (True, value)

    def set(self, record: Record, value: Any, *, create: bool = True) -> None:
        raise DataError("cannot set topic: it is read only (use route to choose a topic)")

    def delete(self, record: Record) -> bool:
        raise DataError("cannot delete topic: it is read only")


class _ExtensionPath(FieldPath):
    """An extension attribute (``partitionkey``). Setting it to ``null`` removes it."""

    __slots__ = ()

    def __init__(self, name: str) -> None:
        super().__init__("extension", name)

    def get(self, record: Record) -> tuple[bool, Any]:
        value = record.extensions.get(self.name, _MISSING)
        return _ABSENT if value is _MISSING else (True, value)

    def set(self, record: Record, value: Any, *, create: bool = True) -> None:
        if value is None:
            record.extensions.pop(self.name, None)
            return
        if not isinstance(value, str | int):  # bool is an int
            raise DataError(
                f"cannot set extension {self.name}: it must be a string, integer or boolean, "
                f"not {_kind_of(value)}"
            )
        problem = extension_value_problem(value)
        if problem is not None:  # a 32-bit integer, a non-empty String
            raise DataError(f"cannot set extension {self.name}: it {problem}")
        record.extensions[self.name] = value

    def delete(self, record: Record) -> bool:
        return record.extensions.pop(self.name, _MISSING) is not _MISSING


def _render_segment(segment: Segment) -> str:
    if isinstance(segment, int):
        return f"[{segment}]"
    if _PLAIN_KEY.fullmatch(segment):
        return f".{segment}"
    escaped = segment.replace("\\", "\\\\").replace("'", "\\'")
    return f"['{escaped}']"


def _bad(text: str, message: str, column: int | None = None) -> ConfigError:
    at = f" at column {column}" if column is not None else ""
    return ConfigError(f"invalid field path {text!r}{at}: {message}")


def parse_path(text: str) -> FieldPath:
    """Parse a field path; ConfigError saying what is wrong (and where) when it is invalid.

    Surrounding whitespace is ignored; columns in messages are 0-based offsets in ``text``.
    """
    if not isinstance(text, str) or not text.strip():
        raise _bad(str(text), "a field path is a non-empty string such as data.email")
    source = text.rstrip()
    pos = len(source) - len(source.lstrip())
    root = _ROOT.match(source, pos)
    if root is None:
        raise _bad(text, "it must start with data, an attribute or an extension name", pos)
    name = root.group()
    if name.startswith("_"):
        raise _bad(text, f"names starting with '_' are not allowed: {name!r}", pos)
    segments: list[Segment] = []
    pos = root.end()
    while pos < len(source):
        if match := _DOT_KEY.match(source, pos):
            segments.append(match.group(1))
        elif match := _INDEX.match(source, pos):
            segments.append(int(match.group(1)))
        elif match := _QUOTED.match(source, pos):
            quoted = match.group(1) if match.group(1) is not None else match.group(2)
            segments.append(_ESCAPE.sub(r"\1", quoted))
        else:
            expected = "'.key', '[index]' or \"['key']\""
            raise _bad(text, f"expected {expected}, found {source[pos:]!r}", pos)
        segment = segments[-1]
        # A quoted key may start with '_' (data['_id'], Debezium's data['__deleted']), as in
        # expressions; only special names (data['__class__']) are refused there.
        if isinstance(segment, str) and (
            is_special_name(segment) if match.re is _QUOTED else segment.startswith("_")
        ):
            raise _bad(text, f"names starting with '_' are not allowed: {segment!r}", pos)
        if isinstance(segment, str) and not segment:
            raise _bad(text, "empty key", pos)
        pos = match.end()
    if name == "data":
        if not segments:
            return _DataRootPath()
        keys = tuple(s for s in segments if isinstance(s, str))
        if len(keys) < len(segments):
            return _DataPath(tuple(segments))
        return _DataKeyPath(keys[0]) if len(keys) == 1 else _DataKeysPath(keys)
    if segments:
        raise _bad(text, f"{name} has no fields: only data paths go deeper", root.end())
    if name in CONTEXT_ATTRIBUTES:
        return _AttributePath(name)
    if name == "topic":
        return _TopicPath()
    if not _EXTENSION.fullmatch(name):
        raise _bad(
            text,
            f"{name!r} would be an extension attribute, whose names are lower-case letters "
            "and digits (CloudEvents)",
            root.start(),
        )
    return _ExtensionPath(name)
