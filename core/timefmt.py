"""Reading and writing points in time: epoch seconds or milliseconds, ISO 8601, strftime formats.

A small API shared by the ``timestamp_convert`` and ``cast`` transforms (and by expression
time functions)::

    zone("Europe/Berlin")                       -> tzinfo        (ValueError if unknown)
    check_format("%Y-%m-%d")                    -> the format     (ValueError if not one)
    parse_time(value, "auto", tz=UTC)           -> aware datetime (ValueError if unreadable)
    format_time(dt, "iso", tz=UTC)              -> str | int

A *format* is one of:

``auto``      (parsing only) a number is epoch **milliseconds**; a string is ISO 8601, or
              a string of digits is epoch milliseconds; a ``datetime`` is taken as it is.
``epoch_s``   seconds since 1970-01-01T00:00:00Z (a number, or a numeric string when parsing;
              written as an integer, rounded down).
``epoch_ms``  milliseconds since the epoch (likewise; written as an integer, rounded down).
``iso``       ISO 8601 / RFC 3339: ``2026-11-24T10:30:00Z``, ``2026-11-24T11:30:00.5+01:00``,
              ``2026-11-24`` (midnight). Written with the zone's offset (``Z`` for UTC) and
              fractional seconds only when there are some.
anything with a ``%``
              a :func:`~datetime.datetime.strftime` / ``strptime`` pattern, e.g.
              ``%d/%m/%Y %H:%M``.

``tz`` is the zone a time is written in, and the zone assumed for an input that carries no
offset (a naive ISO string or a format without ``%z``). Zones are IANA names read through
:mod:`zoneinfo` (the ``tzdata`` package provides them where the system has none), or ``UTC``.
Every datetime returned is aware.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .records import kind_of

__all__ = ["FORMATS", "check_format", "format_time", "parse_time", "zone"]

#: The named formats (besides strftime patterns, which contain a ``%``).
FORMATS = ("auto", "epoch_s", "epoch_ms", "iso")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMERIC = re.compile(r"\s*-?\d+(\.\d+)?\s*")
# Beyond these, datetime cannot represent the time (years 1..9999).
_MIN_S, _MAX_S = -62135596800, 253402300799
_UNITS = {1: "seconds", 1000: "milliseconds"}


@lru_cache(maxsize=256)
def zone(name: str) -> tzinfo:
    """The time zone named ``name`` (``UTC`` or an IANA name such as ``Europe/Berlin``)."""
    if name.upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name such as 'Europe/Berlin', or 'UTC')"
        ) from None


def check_format(fmt: str, *, parsing: bool = True) -> str:
    """``fmt`` if it is a named format (``auto`` only when ``parsing``) or contains a ``%``."""
    named = FORMATS if parsing else FORMATS[1:]
    if fmt in named or "%" in fmt:
        return fmt
    raise ValueError(f"unknown time format {fmt!r}: use {', '.join(named)} or a strftime pattern")


def _from_epoch(number: float, per_second: int) -> datetime:
    """The time ``number`` units (``per_second`` of them a second) after the epoch; exact for
    integers."""
    if not _MIN_S * per_second <= number <= _MAX_S * per_second:
        raise ValueError(f"{number:g} {_UNITS[per_second]} since the epoch is out of range")
    if number.__class__ is int:
        return (
            _EPOCH + timedelta(milliseconds=number)
            if per_second == 1000
            else (_EPOCH + timedelta(seconds=number))
        )
    return _EPOCH + timedelta(seconds=number / per_second)


def _number(value: Any, unit: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number of {unit} since the epoch, not a boolean")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value} is not a time")
        return value
    if isinstance(value, Decimal):  # a JSON number with a fraction (meshconnect.jsonvalue)
        if not value.is_finite():
            raise ValueError(f"{value} is not a time")
        if value.adjusted() > 20:
            raise ValueError(f"{value} {unit} since the epoch is out of range")
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, str) and _NUMERIC.fullmatch(value):
        return float(value) if "." in value else int(value)
    raise ValueError(f"expected a number of {unit} since the epoch, not {_describe(value)}")


def _describe(value: Any) -> str:
    if isinstance(value, str) and len(value) <= 40:
        return f"the string {value!r}"
    return kind_of(value)


def _parse_iso(text: str, tz: tzinfo) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{_describe(text)} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=tz)


def parse_time(value: Any, fmt: str = "auto", *, tz: tzinfo = UTC) -> datetime:
    """``value`` read as a point in time in format ``fmt``; ValueError saying why if it is not."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=tz)
    if fmt == "epoch_ms":
        return _from_epoch(_number(value, "milliseconds"), 1000)
    if fmt == "epoch_s":
        return _from_epoch(_number(value, "seconds"), 1)
    if fmt == "auto":
        if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            return _from_epoch(_number(value, "milliseconds"), 1000)
        if isinstance(value, str):
            if _NUMERIC.fullmatch(value):
                return _from_epoch(_number(value, "milliseconds"), 1000)
            return _parse_iso(value, tz)
        raise ValueError(
            f"expected an ISO 8601 string or epoch milliseconds, not {_describe(value)}"
        )
    if not isinstance(value, str):
        raise ValueError(f"expected a string, not {_describe(value)}")
    if fmt == "iso":
        return _parse_iso(value, tz)
    try:
        parsed = datetime.strptime(value, fmt)
    except ValueError:
        raise ValueError(f"{_describe(value)} does not match the format {fmt!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=tz)


def format_time(moment: datetime, fmt: str = "iso", *, tz: tzinfo = UTC) -> str | int:
    """``moment`` (aware; naive counts as UTC) written in format ``fmt`` in zone ``tz``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if fmt == "epoch_ms":
        delta = moment - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    if fmt == "epoch_s":
        delta = moment - _EPOCH
        return delta.days * 86_400 + delta.seconds
    local = moment if moment.tzinfo is tz else moment.astimezone(tz)
    if fmt == "iso":
        text = local.isoformat()
        return text[:-6] + "Z" if tz is UTC and text.endswith("+00:00") else text
    if fmt == "auto":
        raise ValueError("auto is a format for reading times, not for writing them")
    return local.strftime(fmt)
