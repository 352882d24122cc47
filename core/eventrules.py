"""The CloudEvents 1.0 rules every record meets, checked in one place.

Every input path that takes events from outside (``Record.from_dict`` — the file source's
``format: cloudevents`` and the webhook source —, ``Record.from_cloudevent``) goes through
:func:`parse_event`; transforms that set an attribute ask :func:`attribute_problem` and
:func:`extension_value_problem`; the mesh store refuses bad extensions with
:func:`extensions_problem`; what a dead letter keeps is cleaned with :func:`attribute_problems`.
The rules are the spec's MUSTs (``cloudevents/spec.md`` "Type System", "Naming Conventions" and
each attribute's constraints) and the JSON format's (``cloudevents/formats/json-format.md``):

================  =============================================================================
attribute         rule (the value is kept exactly as it came: no attribute is converted)
================  =============================================================================
``specversion``   required, the string ``"1.0"``
``id``            required, a non-empty String
``source``        required, a non-empty URI-reference (RFC 3986 section 4.1)
``type``          required, a non-empty String
``subject``       optional, a non-empty String
``time``          optional, an RFC 3339 ``date-time`` (``T``/``Z`` in either case, any
                  fraction, ``Z`` or ``±HH:MM``); leap seconds (``:60``) and the year 0000
                  are refused, as Python's ``datetime`` and the schema's date-time check
                  cannot hold them
``datacontenttype`` optional, an RFC 2046 media type: ``type/subtype`` and ``; name=value``
                  parameters (tokens or quoted strings)
``dataschema``    optional, a non-empty absolute URI (RFC 3986 section 4.3: a scheme, no
                  fragment)
extensions        names of ``a-z``/``0-9`` only, at least one character (longer than 20 is
                  allowed: the spec says SHOULD NOT), never ``data``; values a String (may
                  be empty), a boolean or an integer in -2**31..2**31-1 (Binary, URI,
                  URI-reference and Timestamp values are strings in JSON, kept as strings)
``data``          any JSON value; ``"data": null`` is kept as an explicit null payload
``data_base64``   a string of RFC 4648 base64; never together with ``data``
================  =============================================================================

A String (every string attribute and extension value) may not hold control characters
(U+0000-U+001F, U+007F-U+009F), Unicode noncharacters or unpaired surrogates. A JSON ``null``
for an optional attribute or an extension means *unset* (JSON format section 2.2); for a
required attribute it is missing. Unknown keys are extensions.

:func:`loads_event` parses one JSON text the way the CloudEvents JSON format is read: exact
integers, no ``NaN``/``Infinity``, and a duplicate key in any object is an error (RFC 8259 says
names SHOULD be unique; a last-wins reading would silently drop a value).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import jsonvalue
from .errors import DataError

if TYPE_CHECKING:
    from .records import Record

__all__ = [
    "InvalidEventError",
    "attribute_problem",
    "attribute_problems",
    "check_extension_name",
    "extension_value_problem",
    "extensions_problem",
    "loads_event",
    "parse_event",
    "spelled_string",
    "valid_string",
]

SPECVERSION = "1.0"
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


class InvalidEventError(DataError, ValueError):
    """An event breaks a CloudEvents rule. ``attribute`` names the attribute (``None`` when
    the whole event is wrong); the message says the attribute and the rule."""

    def __init__(self, attribute: str | None, message: str) -> None:
        self.attribute = attribute
        super().__init__(message)


# -- strings, URIs, times, media types -----------------------------------------------------------


class _Lazy:
    """A regular expression compiled on first use: the URI patterns take milliseconds to
    compile, and most runs (and every ``meshconnect --help``) never need them."""

    __slots__ = ("_args", "_compiled")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self._args = (pattern, flags)
        self._compiled: re.Pattern[str] | None = None

    def get(self) -> re.Pattern[str]:
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = re.compile(*self._args)
        return compiled


#: Characters a CloudEvents String may not hold: controls, noncharacters, lone surrogates.
_BAD_CHARS = _Lazy(
    "[\x00-\x1f\x7f-\x9f\ufdd0-\ufdef\ud800-\udfff"
    + "".join(f"{chr(p * 0x10000 + 0xFFFE)}{chr(p * 0x10000 + 0xFFFF)}" for p in range(17))
    + "]"
)
#: The same in two steps, for speed: the BMP ones (one quick class), and the noncharacters
#: beyond the BMP, looked for only in strings that have such characters.
_BAD_BMP = _Lazy("[\x00-\x1f\x7f-\x9f\ufdd0-\ufdef\ud800-\udfff\ufffe\uffff]")
_BAD_ASTRAL = _Lazy(
    "["
    + "".join(f"{chr(p * 0x10000 + 0xFFFE)}{chr(p * 0x10000 + 0xFFFF)}" for p in range(1, 17))
    + "]"
)


def _first_bad(value: str) -> str | None:
    """The first character a CloudEvents String may not hold, or ``None``."""
    # A printable text (no Cc, Cn or Cs character) holds none: str's C check, a fraction of
    # the search's cost, first (see spelled_string).
    if value.isprintable():
        return None
    bad = _BAD_BMP.get().search(value)
    if bad is not None:
        return bad.group()
    if not value.isascii() and max(value) > "\uffff":
        bad = _BAD_ASTRAL.get().search(value)
        if bad is not None:
            return bad.group()
    return None


_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"
# Possessive quantifiers (``*+``, ``++``): each part stops at a character it cannot hold, which
# is the one the next part starts with, so nothing is given back and a long bad value costs
# one pass, not a backtracking search.
_PCHARS = rf"{_UNRESERVED}{_SUB_DELIMS}:@"
_SEGMENT = rf"(?:[{_PCHARS}]++|{_PCT})*+"
_SEGMENT_NZ = rf"(?:[{_PCHARS}]++|{_PCT})++"
_SEGMENT_NZ_NC = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}@]++|{_PCT})++"
_QUERY = rf"(?:[{_PCHARS}/?]++|{_PCT})*+"
_SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*+"
_USERINFO = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:]++|{_PCT})*+"
_IP_LITERAL = rf"\[(?:[0-9A-Fa-f:.]++|[vV][0-9A-Fa-f]++\.[{_UNRESERVED}{_SUB_DELIMS}:]++)\]"
_REG_NAME = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}]++|{_PCT})*+"
_AUTHORITY = rf"(?:{_USERINFO}@)?(?:{_IP_LITERAL}|{_REG_NAME})(?::[0-9]*+)?"
_PATH_ABEMPTY = rf"(?:/{_SEGMENT})*+"
_PATH_ABSOLUTE = rf"/(?:{_SEGMENT_NZ}(?:/{_SEGMENT})*+)?"
_HIER_PART = rf"(?://{_AUTHORITY}{_PATH_ABEMPTY}|{_PATH_ABSOLUTE}|{_SEGMENT_NZ}(?:/{_SEGMENT})*+|)"
_RELATIVE_PART = (
    rf"(?://{_AUTHORITY}{_PATH_ABEMPTY}|{_PATH_ABSOLUTE}|{_SEGMENT_NZ_NC}(?:/{_SEGMENT})*+|)"
)
#: RFC 3986 section 4.3 ``absolute-URI``.
_ABSOLUTE_URI = _Lazy(rf"{_SCHEME}:{_HIER_PART}(?:\?{_QUERY})?")
#: RFC 3986 section 4.1 ``URI-reference`` (a URI or a relative reference).
_URI_REFERENCE = _Lazy(rf"(?:{_SCHEME}:{_HIER_PART}|{_RELATIVE_PART})(?:\?{_QUERY})?(?:#{_QUERY})?")

_IPV6_HOST = _Lazy(r"^(?:[A-Za-z][A-Za-z0-9+\-.]*:)?//(?:[^@/?#]*@)?\[([^\]vV][^\]]*)\]")

_TIME = _Lazy(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.\d+)?(?:[Zz]|[+-](\d\d):(\d\d))",
    re.ASCII,
)
#: A timestamp valid on its face: fields in range, day at most 28, not year 0000.
_TIME_FAST = _Lazy(
    r"(?!0000)\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])[Tt](?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(?:\.\d+)?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)
_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]++"
_QUOTED = r'"(?:[^"\\\x00-\x1f\x7f]|\\.)*+"'
_MEDIA_TYPE = _Lazy(
    rf"{_TOKEN}/{_TOKEN}(?:[ \t]*+;[ \t]*+{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))*+[ \t]*+",
    re.ASCII,
)


def _show(value: str) -> str:
    """``repr(value)``, cut to 200 characters (a value may be megabytes long)."""
    text = repr(value)
    return text if len(text) <= 200 else f"{text[:200]}... ({len(value)} characters)"


def _string_problem(value: Any) -> str | None:
    if type(value) is not str:
        return f"must be a string, not {_kind(value)}"
    if not value:
        return "must be a non-empty string"
    bad = _first_bad(value)
    return None if bad is None else _bad_char(bad)


def _bad_char(char: str) -> str:
    return (
        f"must not contain U+{ord(char):04X} (a control character, noncharacter or unpaired "
        "surrogate)"
    )


def valid_string(text: str) -> str:
    """``text`` as a valid CloudEvents String: each character a String may not hold becomes
    its ``\\uXXXX`` escape; ``-`` for an empty text. For messages put into extensions."""
    if not text:
        return "-"
    return _BAD_CHARS.get().sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def spelled_string(text: str) -> str:
    """``text`` as a CloudEvents String, one to one (for names a connector makes attributes
    of: a file name, a table name, a key): as it is when it holds neither a backslash nor a
    character a String may not hold; otherwise with backslashes doubled, then each such
    character as ``\\uXXXX`` (a name holding a tab must not collide with one spelled
    ``\\u0009``). Undecodable bytes of a file name (``\\udcff``) are spelled the same way."""
    # A printable text (no Cc, Cn or Cs character) holds nothing a String may not: str's C
    # check first, the full search only for the rest (a U+2028 is fine, but not printable).
    if not text or ("\\" not in text and (text.isprintable() or _first_bad(text) is None)):
        return text
    return valid_string(text.replace("\\", "\\\\"))


def _uri_problem(value: Any, pattern: _Lazy, what: str) -> str | None:
    problem = _string_problem(value)
    if problem is not None:
        return problem
    if pattern.get().fullmatch(value) is None:
        return f"must be {what} (RFC 3986), not {_show(value)}"
    if "[" in value:  # the only place brackets may stand: an IP-literal host
        host = _IPV6_HOST.get().search(value)
        if host is not None:
            import ipaddress

            try:
                ipaddress.IPv6Address(host.group(1))
            except ValueError:
                return f"must be {what} (RFC 3986): [{host.group(1)}] is not an IPv6 address"
    return None


def _time_problem(value: Any) -> str | None:
    if type(value) is str and _TIME_FAST.get().fullmatch(value) is not None:
        return None  # the usual case; days 29-31 and every problem take the long way
    problem = _string_problem(value)
    if problem is not None:
        return problem
    match = _TIME.get().fullmatch(value)
    if match is None:
        return f"must be an RFC 3339 timestamp such as 2018-04-05T17:31:00Z, not {_show(value)}"
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    oh, om = match.group(7), match.group(8)
    days = 29 if month == 2 and year % 4 == 0 and (year % 100 or year % 400 == 0) else None
    if year == 0:
        return f"must be an RFC 3339 timestamp: year 0000 in {value!r} is not accepted"
    if not 1 <= month <= 12:
        return f"must be an RFC 3339 timestamp: month {month:02d} in {value!r}"
    if not 1 <= day <= (days or _DAYS[month - 1]):
        return f"must be an RFC 3339 timestamp: day {day:02d} in {value!r}"
    if hour > 23 or minute > 59 or second > 59:
        extra = " (leap seconds are not accepted)" if second == 60 else ""
        return f"must be an RFC 3339 timestamp: time of day in {value!r}{extra}"
    if oh is not None and (int(oh) > 23 or int(om) > 59):
        return f"must be an RFC 3339 timestamp: offset in {value!r}"
    return None


def _media_type_problem(value: Any) -> str | None:
    if type(value) is str and value in _GOOD_MEDIA_TYPES:
        return None
    problem = _string_problem(value)
    if problem is not None:
        return problem
    if _MEDIA_TYPE.get().fullmatch(value) is None:
        return f"must be an RFC 2046 media type such as application/json, not {_show(value)}"
    _remember(_GOOD_MEDIA_TYPES, value)
    return None


def _dataschema_problem(value: Any) -> str | None:
    if type(value) is str and value in _GOOD_SCHEMAS:
        return None
    problem = _uri_problem(value, _ABSOLUTE_URI, "an absolute URI")
    if problem is None:
        _remember(_GOOD_SCHEMAS, value)
    return problem


def _source_problem(value: Any) -> str | None:
    if type(value) is str and value in _GOOD_SOURCES:
        return None
    problem = _uri_problem(value, _URI_REFERENCE, "a URI-reference")
    if problem is None:
        _remember(_GOOD_SOURCES, value)
    return problem


# Valid values seen lately: a producer sends many events with one source, schema and media
# type, so most checks of them are one set lookup. Each set is emptied when it grows past
# _REMEMBER values.
_GOOD_SOURCES: set[str] = set()
_GOOD_SCHEMAS: set[str] = set()
_GOOD_MEDIA_TYPES: set[str] = set()
_REMEMBER = 4096


def _remember(good: set[str], value: str) -> None:
    if len(good) >= _REMEMBER:
        good.clear()
    good.add(value)


def _specversion_problem(value: Any) -> str | None:
    if type(value) is not str:
        return f'must be the string "1.0", not {_kind(value)}'
    if value != SPECVERSION:
        return f'must be "1.0" (the only version supported), not {_show(value)}'
    return None


#: Per context attribute: the function returning what is wrong with a value, or None.
_CHECKS = {
    "specversion": _specversion_problem,
    "id": _string_problem,
    "source": _source_problem,
    "type": _string_problem,
    "subject": _string_problem,
    "time": _time_problem,
    "datacontenttype": _media_type_problem,
    "dataschema": _dataschema_problem,
}
_REQUIRED = ("id", "source", "type")
_OPTIONAL = ("subject", "time", "datacontenttype", "dataschema")
_EXTENSION_NAME = re.compile(r"[a-z0-9]+", re.ASCII)
_NOT_EXTENSIONS = frozenset((*_CHECKS, "data", "data_base64"))


def check_extension_name(name: Any) -> str | None:
    """What is wrong with an extension attribute name, or ``None`` when it is valid."""
    if type(name) is not str or _EXTENSION_NAME.fullmatch(name) is None:
        return f"extension name {name!r} must be one or more of a-z and 0-9"
    if name == "data":
        return "extension name 'data' is reserved"
    return None


def _extension_problem(value: Any) -> str | None:
    kind = type(value)
    if kind is str:  # a String; unlike id, source, type and subject it may be empty
        bad = _first_bad(value)
        return None if bad is None else _bad_char(bad)
    if kind is bool:
        return None
    if kind is int:
        if INT32_MIN <= value <= INT32_MAX:
            return None
        return f"must be a 32-bit integer (-2147483648..2147483647), not {value}"
    return f"must be a string, a boolean or an integer, not {_kind(value)}"


_GOOD_NAMES: set[str] = set()


def extensions_problem(extensions: dict[Any, Any]) -> str | None:
    """What is wrong with the first bad extension of a dict (name or value), or ``None``. The
    mesh store's check of every record it appends, so it is quick for the usual few names."""
    good = _GOOD_NAMES
    for name, value in extensions.items():
        if name not in good:
            problem = check_extension_name(name)
            if problem is None and name in _NOT_EXTENSIONS:
                problem = f"extension name {name!r} is a context attribute's"
            if problem is not None:
                return problem
            if len(good) < 10_000:
                good.add(name)
        kind = type(value)
        if kind is str:
            if _first_bad(value) is None:
                continue
        elif kind is bool or (kind is int and INT32_MIN <= value <= INT32_MAX):
            continue
        return f"extension {name!r} {_extension_problem(value)}"
    return None


def _kind(value: Any) -> str:
    from .records import kind_of

    if type(value) is float or type(value).__name__ == "Decimal":
        return f"a number with a fraction or exponent ({value})"
    return kind_of(value)


# -- events ---------------------------------------------------------------------------------------


def _invalid(name: str, problem: str) -> InvalidEventError:
    return InvalidEventError(name, f"attribute {name!r} {problem}")


def parse_event(event: Mapping[str, Any], make: Any) -> Record:
    """Check a CloudEvents JSON-form event (a mapping of member name to value) and build the
    record: ``make(data, id=..., ..., extensions=...)`` is called with the values as they
    are, plus ``null_data=True`` for ``"data": null``. Raises :class:`InvalidEventError` naming
    the first attribute (in a fixed order) that breaks a rule."""
    if not isinstance(event, Mapping):
        raise InvalidEventError(None, f"a CloudEvent must be a JSON object, not {_kind(event)}")
    if "specversion" not in event or event["specversion"] is None:
        raise InvalidEventError(
            "specversion", "missing required attribute 'specversion' (the string \"1.0\")"
        )
    problem = _specversion_problem(event["specversion"])
    if problem is not None:
        raise _invalid("specversion", problem)
    values: dict[str, Any] = {}
    for name in _REQUIRED:
        value = event.get(name)
        if value is None:
            raise InvalidEventError(name, f"missing required attribute {name!r}")
        problem = _CHECKS[name](value)
        if problem is not None:
            raise _invalid(name, problem)
        values[name] = value
    for name in _OPTIONAL:
        value = event.get(name)
        if value is not None:
            problem = _CHECKS[name](value)
            if problem is not None:
                raise _invalid(name, problem)
        values[name] = value
    extensions: dict[str, Any] = {}
    for name, value in event.items():
        if name in _NOT_EXTENSIONS:
            continue
        problem = check_extension_name(name)
        if problem is not None:
            raise InvalidEventError(name, problem)
        if value is None:  # unset
            continue
        problem = _extension_problem(value)
        if problem is not None:
            raise InvalidEventError(name, f"extension {name!r} {problem}")
        extensions[name] = value
    null_data = False
    if "data_base64" in event:
        if "data" in event:
            raise InvalidEventError(
                "data_base64", "'data' and 'data_base64' must not both be present"
            )
        encoded = event["data_base64"]
        if encoded is None:
            data = None
        elif type(encoded) is not str:
            raise _invalid("data_base64", f"must be a base64 string, not {_kind(encoded)}")
        else:
            try:
                data = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise _invalid("data_base64", f"is not valid base64 (RFC 4648): {exc}") from None
    else:
        data = event.get("data")
        null_data = data is None and "data" in event
    return make(data, null_data=null_data, extensions=extensions, **values)


def attribute_problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for the context attribute ``name`` (``id``, ``source``,
    ``type``, ``subject``, ``time``, ``datacontenttype``, ``dataschema``), or ``None``."""
    return _CHECKS[name](value)


def extension_value_problem(value: Any) -> str | None:
    """What is wrong with an extension attribute value, or ``None``."""
    return _extension_problem(value)


def attribute_problems(record: Record) -> dict[str, str]:
    """What is wrong with each attribute of an existing record (``{name: problem}``; empty when
    it is a valid CloudEvent). Extension problems are keyed by the extension's name."""
    out: dict[str, str] = {}
    for name in _REQUIRED:
        problem = _CHECKS[name](getattr(record, name))
        if problem is not None:
            out[name] = problem
    for name in _OPTIONAL:
        value = getattr(record, name)
        if value is not None:
            problem = _CHECKS[name](value)
            if problem is not None:
                out[name] = problem
    extensions = record.extensions
    if type(extensions) is not dict:
        out["extensions"] = f"must be a dict, not {_kind(extensions)}"
        return out
    for name, value in extensions.items():
        problem = check_extension_name(name)
        if problem is None and name in _NOT_EXTENSIONS:
            problem = f"extension name {name!r} is a context attribute's"
        if problem is None:
            problem = _extension_problem(value)
        if problem is not None:
            out[name if type(name) is str else repr(name)] = problem
    return out


# -- JSON -----------------------------------------------------------------------------------------


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r} in a JSON object")
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# Numbers as meshconnect.jsonvalue reads them: exact Decimals, ints of any size.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_object, parse_constant=_constant, parse_float=Decimal
)


def loads_event(text: str | bytes) -> Any:
    """The JSON value of one line of ``format: cloudevents``. ``ValueError`` for invalid JSON,
    invalid UTF-8, ``NaN``/``Infinity``, a number out of range (``1e99999999999999999999``)
    and a key that appears twice in one object. Integers
    are exact ``int``; other numbers exact ``Decimal`` (as :mod:`meshconnect.jsonvalue` reads
    them everywhere else), nesting at most ``jsonvalue.MAX_DEPTH`` levels.

    A string anywhere in the document (a key, ``data``, an extension) holding an unpaired
    UTF-16 surrogate (``"\\ud800"`` without its pair) is an :class:`InvalidEventError` (a
    ``ValueError``) whose ``attribute`` is the path to it (``data.items[2].name``): such a
    string has no UTF-8 form, so the mesh store could not write it (I-JSON, RFC 7493 section
    2.1, forbids it)."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8")
    try:
        value, end = _DECODER.raw_decode(text, _skip_ws(text, 0))
    except RecursionError:
        raise ValueError("nested too deeply (arrays and objects within each other)") from None
    except ArithmeticError:  # decimal.InvalidOperation: an exponent no Decimal can hold
        raise ValueError("a number out of range") from None  # as jsonvalue.loads says
    except ValueError as exc:  # int()'s own words name sys.set_int_max_str_digits
        if "integer string conversion" in str(exc):
            raise ValueError(
                "an integer of more than 4300 digits (Python's limit on integer text)"
            ) from None
        raise
    if _skip_ws(text, end) != len(text):
        raise ValueError(f"extra data after the JSON value at character {end}")
    jsonvalue.check_depth(text, value)
    # A lone surrogate comes from a \uD800-\uDFFF escape (strict UTF-8 decoding makes none),
    # or was in a str given as it is: walk the value only then.
    if "\\u" in text or (not text.isascii() and _SURROGATE.search(text) is not None):
        _check_surrogates(value)
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_surrogates(value: Any) -> None:
    """:class:`InvalidEventError` naming the path of the first string (key or value) of
    ``value`` holding an unpaired surrogate (a pair is one character once decoded)."""
    search = _SURROGATE.search
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if type(item) is str:
            if search(item) is not None:
                raise _surrogate(path or "the document", item)
        elif type(item) is dict:
            for key, member in item.items():
                where = _member_path(path, key)
                if search(key) is not None:
                    raise _surrogate(f"a key of {path or 'the top-level object'}", key, where)
                stack.append((member, where))
        elif type(item) is list:
            stack.extend((member, f"{path}[{i}]") for i, member in enumerate(item))


def _member_path(path: str, key: str) -> str:
    name = key if _PLAIN_KEY.fullmatch(key) else valid_string(repr(key))
    return f"{path}.{name}" if path else name


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


def _surrogate(where: str, text: str, path: str | None = None) -> InvalidEventError:
    char = _SURROGATE.search(text)
    assert char is not None
    return InvalidEventError(
        path or where,
        f"{where}: the string holds U+{ord(char.group()):04X}, an unpaired UTF-16 surrogate "
        "(JSON text that has no UTF-8 form: not accepted, RFC 7493 section 2.1)",
    )


_WS = re.compile(r"[ \t\n\r]*")


def _skip_ws(text: str, start: int) -> int:
    match = _WS.match(text, start)
    assert match is not None
    return match.end()
