"""Key templates of the ``s3`` sink and its deterministic object names.

A template is text with placeholders in braces (``{{`` and ``}}`` are literal braces):

* ``{topic}``: the record's mesh topic;
* ``{id}``, ``{source}``, ``{type}``, ``{subject}``: CloudEvent attributes;
* ``{partitionkey}`` or any other extension attribute by name;
* ``{data.country}``, ``{data.address.city}``: a field of the record's data;
* ``{time:%Y/%m/%d/%H}``: the record's ``time`` (UTC) through ``strftime``;
* ``{now:%Y-%m-%d}``: the wall clock (UTC) when the record is written (not deterministic:
  a re-run may place a record elsewhere; prefer ``time`` where exactly-once matters).

Values are written as text (numbers as JSON writes them, booleans ``true``/``false``) with
characters outside ``A-Za-z0-9-_.=~@,`` percent-encoded, so a value never adds a ``/`` level;
a value ``.`` or ``..`` is written ``%2E`` or ``%2E%2E`` (never a dot segment), an empty
value ``_empty_`` (and a value ``_empty_`` itself ``%5Fempty_``).
A placeholder the record cannot fill (no such field, null, no ``time``) is a
:class:`~meshconnect.DataError` for that record (it follows the sink's ``errors:`` policy).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from meshconnect import DataError, Record
from meshconnect.expr import compile_re2

__all__ = ["EMPTY", "MAX_KEY_BYTES", "KeyTemplate", "object_name", "parse_object_name"]

_NAME = re.compile(r"^(data(\.[^.{}:]+)+|[A-Za-z][A-Za-z0-9_]*)$")
_SAFE = "-_.=~@,"
_ATTRIBUTES = ("id", "source", "type", "subject")
#: ``<topic>+<20-digit first offset><extension>``: the part the sink appends to the prefix.
_OBJECT = re.compile(r"^(?P<topic>.+)\+(?P<offset>\d{20})(?P<ext>\.[a-z.]+)$")


def object_name(topic: str, first_offset: int, extension: str) -> str:
    """The deterministic object name: ``orders+00000000000000001000.jsonl.gz``. The offset is
    zero-padded to 20 digits so that keys sort in offset order (S3 lists in key order)."""
    return f"{quote(topic, safe=_SAFE)}+{first_offset:020d}{extension}"


def parse_object_name(name: str) -> tuple[str, int, str] | None:
    """``(quoted topic, first offset, extension)`` of a name :func:`object_name` made, else None."""
    match = _OBJECT.match(name)
    if match is None:
        return None
    return match["topic"], int(match["offset"]), match["ext"]


#: What an empty value renders as (a real value ``_empty_`` renders as ``%5Fempty_``).
EMPTY = "_empty_"
#: The longest key S3 takes, in bytes of UTF-8.
MAX_KEY_BYTES = 1024


def _segment(text: str) -> str:
    """A value as part of a key: percent-encoded but for ``A-Za-z0-9-_.=~@,``, so it never
    adds a ``/`` level; ``.`` and ``..`` (which clients and consoles resolve as the current
    and parent directory) as ``%2E`` and ``%2E%2E``, and an empty value as :data:`EMPTY`
    (which would make an empty ``//`` level)."""
    if text in (".", ".."):
        return "%2E" * len(text)
    if text == "":
        return EMPTY
    if text == EMPTY:
        return "%5F" + EMPTY[1:]
    return quote(text, safe=_SAFE)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | Decimal | float):
        return str(value)
    raise TypeError(f"a {type(value).__name__} cannot be part of a key")


_time_cache: dict[str, datetime] = {}
_FRACTION = re.compile(r"(\.\d{6})\d+")


def _parse_time(text: str) -> datetime:
    parsed = _time_cache.get(text)
    if parsed is None:
        # RFC 3339 allows a lower-case z (and t, which fromisoformat takes as any separator)
        parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", text.replace("z", "Z")))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        parsed = parsed.astimezone(UTC)
        if len(_time_cache) > 4096:
            _time_cache.clear()
        _time_cache[text] = parsed
    return parsed


#: Longest topic name (249 characters), every character percent-quoted.
_MAX_QUOTED_TOPIC = 249 * 3


@functools.lru_cache(maxsize=512)
def _re2(pattern: str) -> Any:
    return compile_re2(pattern)


def _shape(body: str) -> str:
    """The regular expression of what placeholder ``body`` renders (see
    :meth:`KeyTemplate.owns_key`); ``{topic}`` is a back-reference to the first one."""
    name, _, fmt = body.partition(":")
    name = name.strip()
    if name == "topic":
        return "(?P=topic)"
    if name in ("time", "now"):
        out: list[str] = []
        i = 0
        while i < len(fmt):
            if fmt[i] == "%" and i + 1 < len(fmt):
                out.append("%" if fmt[i + 1] == "%" else "[^/]*")
                i += 2
            else:
                out.append(re.escape(fmt[i]))
                i += 1
        return "".join(out)
    return "[^/]*"


class KeyTemplate:
    """A parsed key template; :meth:`render` gives a record's prefix.

    ``ValueError`` at parse time for an unbalanced brace, an empty or malformed placeholder,
    or ``time``/``now`` without a format."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts: list[str | Callable[[Record], str]] = []
        self.uses_wall_clock = False
        literal: list[str] = []
        shape: list[str] = []  # a regular expression of the prefixes this template renders
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "{" and text.startswith("{{", i):
                literal.append("{")
                shape.append(re.escape("{"))
                i += 2
            elif ch == "}" and text.startswith("}}", i):
                literal.append("}")
                shape.append(re.escape("}"))
                i += 2
            elif ch == "}":
                raise ValueError(f"unmatched '}}' at character {i + 1} (write '}}}}' for a brace)")
            elif ch == "{":
                end = text.find("}", i)
                if end < 0:
                    raise ValueError(f"unclosed '{{' at character {i + 1}")
                if literal:
                    self.parts.append("".join(literal))
                    literal = []
                self.parts.append(self._placeholder(text[i + 1 : end].strip(), i))
                shape.append(_shape(text[i + 1 : end].strip()))
                i = end + 1
            else:
                literal.append(ch)
                shape.append(re.escape(ch))
                i += 1
        if literal:
            self.parts.append("".join(literal))
        lead: list[str] = []
        for part in self.parts:
            if not isinstance(part, str):
                break
            lead.append(part)
        #: The text before the first placeholder: every key starts with it.
        self.literal_prefix = "".join(lead)
        self.is_literal = all(isinstance(p, str) for p in self.parts)
        self._shape = "".join(shape).replace("(?P=topic)", "(?P<topic>[^/]*)", 1)

    def owns_key(self, key: str, extension: str) -> bool:
        """Whether ``key`` is one this template's sink could have made: a rendered prefix of
        this template (each placeholder any text without ``/``, a ``time``/``now`` placeholder
        its format's shape, ``{topic}`` the same topic as in the object name) followed by a
        deterministic object name ``<topic>+<20 digits><extension>``
        (:func:`object_name`)."""
        # On RE2 (linear time): keys are listed from the bucket, and whoever may write to it
        # chooses them; Python's re backtracked polynomially on adjacent placeholders (four of
        # them and a key of 400 characters took 6 s, a 1,024-character key minutes). RE2 has
        # no back-reference, so the topic of the object name is tried as a literal instead.
        tail = f"\\+\\d{{20}}{re.escape(extension)}"
        loose = self._shape.replace("(?P<topic>[^/]*)", "[^/]*", 1)
        if _re2(f"{loose}[^/]+{tail}").fullmatch(key) is None:
            return False
        if "(?P<topic>" not in self._shape:
            return True
        named = _OBJECT.match(key.rsplit("/", 1)[-1])
        if named is None:
            return False
        run = named["topic"]  # the object name's topic is a suffix of it
        for start in range(max(0, len(run) - _MAX_QUOTED_TOPIC), len(run)):
            topic = re.escape(run[start:])
            shape = self._shape.replace("(?P<topic>[^/]*)", topic, 1)
            if _re2(f"{shape}{topic}{tail}").fullmatch(key) is not None:
                return True
        return False

    def _placeholder(self, body: str, at: int) -> Callable[[Record], str]:
        name, colon, fmt = body.partition(":")
        name = name.strip()
        if name in ("time", "now"):
            if not colon or not fmt:
                raise ValueError(
                    f"{{{name}}} at character {at + 1} needs a strftime format, e.g. "
                    f"{{{name}:%Y/%m/%d/%H}}"
                )
            return self._time(fmt) if name == "time" else self._now(fmt)
        if colon:
            raise ValueError(f"{{{body}}} at character {at + 1}: only time and now take a format")
        if not name or not _NAME.match(name):
            raise ValueError(
                f"{{{body}}} at character {at + 1} is not a placeholder (topic, id, source, "
                "type, subject, an extension name, data.FIELD, time:FORMAT, now:FORMAT)"
            )
        if name == "topic":
            return self._topic
        if name in _ATTRIBUTES:
            return self._attribute(name)
        if name.startswith("data."):
            return self._data(name.split(".")[1:])
        return self._extension(name)

    @staticmethod
    def _topic(record: Record) -> str:
        if record.topic is None:
            raise DataError("key_template: {topic}: the record has no topic")
        return _segment(record.topic)

    @staticmethod
    def _attribute(name: str) -> Callable[[Record], str]:
        def render(record: Record) -> str:
            value = getattr(record, name)
            if value is None:
                raise DataError(f"key_template: {{{name}}}: the record has no {name}")
            return _segment(str(value))

        return render

    @staticmethod
    def _extension(name: str) -> Callable[[Record], str]:
        def render(record: Record) -> str:
            value = record.extensions.get(name)
            if value is None:
                raise DataError(f"key_template: {{{name}}}: the record has no {name} extension")
            return _segment(_text(value))

        return render

    @staticmethod
    def _data(path: list[str]) -> Callable[[Record], str]:
        where = "data." + ".".join(path)

        def render(record: Record) -> str:
            value = record.data
            for step in path:
                if not isinstance(value, dict) or value.get(step) is None:
                    raise DataError(f"key_template: {{{where}}}: the record has no {where}")
                value = value[step]
            try:
                return _segment(_text(value))
            except TypeError as exc:
                raise DataError(f"key_template: {{{where}}}: {exc}") from None

        return render

    @staticmethod
    def _time(fmt: str) -> Callable[[Record], str]:
        def render(record: Record) -> str:
            if record.time is None:
                raise DataError(
                    "key_template: {time:...}: the record has no time (use {now:...} for the "
                    "wall clock)"
                )
            try:
                return _parse_time(record.time).strftime(fmt)
            except (ValueError, OverflowError) as exc:  # UTC past 9999 or before year 1
                raise DataError(f"key_template: time {record.time!r}: {exc}") from None

        return render

    def _now(self, fmt: str) -> Callable[[Record], str]:
        self.uses_wall_clock = True

        def render(record: Record) -> str:
            return datetime.now(UTC).strftime(fmt)

        return render

    def render(self, record: Record) -> str:
        """The key prefix for ``record``; ``DataError`` when a placeholder has no value."""
        if self.is_literal:
            return self.literal_prefix
        return "".join(p if isinstance(p, str) else p(record) for p in self.parts)
