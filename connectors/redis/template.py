"""Key, stream, channel and collection templates: ``order:{data.id}``, ``{subject}:{partitionkey}``.

A template is text with ``{...}`` placeholders (``{{`` and ``}}`` for literal braces):

* ``{id}``, ``{source}``, ``{type}``, ``{subject}``, ``{topic}``: the record's attributes;
* ``{time:STRFTIME}``: the record's ``time`` (UTC), e.g. ``{time:%Y-%m-%d}``;
* ``{data.a.b}``: a field of ``data`` (for change records of the ``canal`` source: a column of
  the row, whatever the format);
* ``{partitionkey}`` and any other extension by name.

A value is written as text: strings as they are, numbers as JSON writes them (exact), other
values as JSON. A placeholder with no value (a missing field, a null) is a
:class:`~meshconnect.DataError` naming it: the record goes by the sink's ``errors:`` policy.
The ``redis`` and ``mongodb`` connectors share this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from meshconnect import ConfigError, DataError, Record
from meshconnect.jsonvalue import dumps

__all__ = ["Template", "text_of"]

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_ATTRIBUTES = ("id", "source", "type", "subject", "topic")


def text_of(value: Any) -> str:
    """A value as key text: a string as is, anything else as its (exact) JSON."""
    kind = type(value)
    if kind is str:
        return value
    if kind is int:
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return dumps(value).decode()


Getter = Callable[[Record, Mapping[str, Any] | None], Any]


#: Templates that name a place after the topic (a collection): ``{topic}`` is the topic's name
#: there, not the partition a record was stored in (``orders``, not ``orders#2``).
NAMING_FIELDS = frozenset({"collection"})


def _getter(name: str, field: str) -> Getter:
    if name == "topic" and field in NAMING_FIELDS:
        return lambda r, row: r.topic_name
    if name in _ATTRIBUTES:
        return lambda r, row: getattr(r, name)
    if name.startswith("time:"):
        fmt = name[5:]

        def time_(r: Record, row: Mapping[str, Any] | None) -> Any:
            if not r.time:
                return None
            # RFC 3339 allows a lower-case z; fromisoformat takes any character for the t
            when = datetime.fromisoformat(r.time.replace("z", "Z").replace("Z", "+00:00"))
            return when.astimezone(UTC).strftime(fmt)

        return time_
    if name == "data" or name.startswith("data."):
        path = name.split(".")[1:]
        if "" in path:
            raise ConfigError(
                f"{field}: placeholder {name!r} has an empty field name: write data.FIELD or "
                "data.A.B"
            )

        def data_(r: Record, row: Mapping[str, Any] | None) -> Any:
            value: Any = row if row is not None else r.data
            for part in path:
                if not isinstance(value, Mapping):
                    return None
                value = value.get(part)
            return value

        return data_
    if re.fullmatch(r"[a-z0-9]+", name):
        return lambda r, row: r.extensions.get(name)
    raise ConfigError(
        f"{field}: unknown placeholder {name!r}: use id, source, type, subject, topic, "
        "time:FORMAT, data.FIELD or an extension name such as partitionkey"
    )


class Template:
    """A compiled template; ``render(record, row=None)`` gives its text (``row``: the row of a
    change record, which ``{data.…}`` then reads)."""

    __slots__ = ("_one", "_parts", "_prefix", "literal", "text")

    def __init__(self, text: str, field: str = "key") -> None:
        self.text = text
        parts: list[str | tuple[str, Getter]] = []
        pos = 0
        for match in _PLACEHOLDER.finditer(text):
            parts.append(text[pos : match.start()])
            token = match.group(0)
            if token in ("{{", "}}"):
                parts.append(token[0])
            elif match.group(1) is None:
                raise ConfigError(
                    f"{field}: unbalanced {token!r} at character {match.start() + 1} of the "
                    "template (a literal brace is written {{ or }})"
                )
            else:
                name = match.group(1).strip()
                parts.append((name, _getter(name, field)))
            pos = match.end()
        parts.append(text[pos:])
        self._parts = [p for p in parts if p != ""]
        self._prefix: str | None = None
        self._one: tuple[str, Getter] = ("", lambda r, row: None)
        tail = self._parts[-1] if self._parts else ""
        head = self._parts[:-1]
        if not isinstance(tail, str) and all(isinstance(p, str) for p in head):
            self._prefix = "".join(head)  # type: ignore[arg-type]
            self._one = tail
        #: The text when the template has no placeholder, else None.
        self.literal = (
            "".join(p for p in self._parts if isinstance(p, str))
            if all(isinstance(p, str) for p in self._parts)
            else None
        )

    def render(self, record: Record, row: Mapping[str, Any] | None = None) -> str:
        if self.literal is not None:
            return self.literal
        if self._prefix is not None:  # "text{one placeholder}": the common key shape
            name, get = self._one
            value = get(record, row)
            if value is None:
                raise DataError(
                    f"template {self.text!r}: {{{name}}} has no value in record {record.id}"
                )
            return self._prefix + (value if type(value) is str else text_of(value))
        out = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            name, get = part
            value = get(record, row)
            if value is None:
                raise DataError(
                    f"template {self.text!r}: {{{name}}} has no value in record {record.id}"
                )
            out.append(text_of(value))
        return "".join(out)
