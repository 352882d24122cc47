"""Reading and writing points in time: epoch numbers, ISO 8601 / RFC 3339, strftime formats.

A small API shared by the ``timestamp_convert`` and ``cast`` transforms and by the expression
time functions. Times are exact to the nanosecond: an *instant* is an integer number of
nanoseconds since 1970-01-01T00:00:00Z, from 0001-01-01T00:00:00Z to
9999-12-31T23:59:59.999999999Z (:data:`MIN_NS`, :data:`MAX_NS`), both ends included::

    zone("Europe/Berlin")                   -> tzinfo        (ValueError if unknown)
    check_format("%Y-%m-%d")                -> the format    (ValueError if not one)
    read_instant(value, "auto", tz=UTC)     -> int ns        (ValueError if unreadable)
    write_instant(ns, "iso", tz=UTC)        -> str | int
    parse_time(value, "auto", tz=UTC)       -> aware datetime (microseconds; ValueError)
    format_time(dt, "iso", tz=UTC)          -> str | int

A *format* is one of:

``auto``      (reading only) a number, or a string in the number grammar of
              :mod:`meshconnect.numparse`, is epoch **milliseconds**; other text is ISO 8601.
``epoch_s``, ``epoch_ms``, ``epoch_us``, ``epoch_ns``
              seconds, milliseconds, microseconds or nanoseconds since the epoch. Read from an
              integer, a float, a ``Decimal`` or a numeric string, exactly (a float by its
              shortest repr: ``0.1`` is 0.1); a fraction finer than a nanosecond is rounded
              down. Written as an integer, rounded down (towards the past).
``iso``       ISO 8601 / RFC 3339 text (grammar below). Written with the zone's offset (``Z``
              for UTC) and a fraction of a second only when there is one: 6 digits when the
              time is whole microseconds, else 9.
``iso_s``, ``iso_ms``, ``iso_us``, ``iso_ns``
              ISO 8601 with exactly 0, 3, 6 or 9 fraction digits when written (rounded down);
              when read, any ISO 8601 text, rounded down to that precision.
anything with a ``%``
              a :func:`~datetime.datetime.strftime` / ``strptime`` pattern (microseconds at
              most), e.g. ``%d/%m/%Y %H:%M``; years are written with four digits (``0001``).

ISO 8601 text that is read (RFC 3339 §5.6 and the ISO 8601 forms around it)::

    date-time = date [ sep time [ offset ] ]     a date alone is midnight
    date      = YYYY-MM-DD | YYYYMMDD             year 0001 to 9999
    sep       = "T" | "t" | " "                   one space, as RFC 3339 allows
    time      = hh[:mm[:ss[frac]]] | hh[mm[ss[frac]]]
    frac      = ("." | ",") 1*digit               any number of digits; beyond 9, rounded down
    offset    = "Z" | "z" | ("+" | "-") hh[[:]mm[[:]ss]]   +00:00 and -00:00 are UTC

Seconds may be ``60`` (a leap second): it is read as ``59`` with the same fraction, as Java's
``Instant`` parser does (epoch numbers have no leap seconds). ``24:00:00`` is midnight at the
end of that day. Not read: week dates (``2023-W46-2``), ordinal dates (``2023-318``), fractions
of hours or minutes, years beyond four digits, and any surrounding whitespace.

``tz`` is the zone a time is written in, and the zone assumed for an input that carries no
offset (ISO text without one, or a pattern without ``%z``). Zones are IANA names read through
:mod:`zoneinfo` (the ``tzdata`` package provides them where the system has none), or ``UTC``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import ROUND_FLOOR, Decimal, localcontext
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .numparse import parse_number
from .records import kind_of

__all__ = [
    "FORMATS",
    "MAX_NS",
    "MIN_NS",
    "READ_DIRECTIVES",
    "WRITE_DIRECTIVES",
    "check_format",
    "format_time",
    "parse_time",
    "pattern_problem",
    "read_instant",
    "shown",
    "write_instant",
    "zone",
    "zone_hint",
]

#: The named formats (besides strftime patterns, which contain a ``%``).
FORMATS = (
    "auto",
    "epoch_s",
    "epoch_ms",
    "epoch_us",
    "epoch_ns",
    "iso",
    "iso_s",
    "iso_ms",
    "iso_us",
    "iso_ns",
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_NS = 1_000_000_000
#: The first and the last nanosecond a time may be (years 1 to 9999, UTC).
MIN_NS = -62135596800 * _NS
MAX_NS = 253402300800 * _NS - 1
_RANGE = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z"

#: Nanoseconds per unit of each epoch format, and the unit's name.
_EPOCH_UNITS = {
    "epoch_s": (_NS, "seconds"),
    "epoch_ms": (1_000_000, "milliseconds"),
    "epoch_us": (1_000, "microseconds"),
    "epoch_ns": (1, "nanoseconds"),
}
#: Fraction digits of each fixed-precision ISO format.
_ISO_DIGITS = {"iso_s": 0, "iso_ms": 3, "iso_us": 6, "iso_ns": 9}

_ISO = re.compile(
    r"""
    (?P<year>[0-9]{4})(?P<dash>-?)(?P<month>[0-9]{2})(?P=dash)(?P<day>[0-9]{2})
    (?:
        [Tt\x20]
        (?P<hour>[0-9]{2})
        (?:
            (?P<colon>:?)(?P<minute>[0-9]{2})
            (?:(?P=colon)(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]+))?)?
        )?
        (?P<offset>[Zz]|[+-][0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2})?)?)?
    )?
    """,
    re.VERBOSE,
)
_OFFSET = re.compile(r"([+-])([0-9]{2}):?([0-9]{2})?:?([0-9]{2})?")


@lru_cache(maxsize=256)
def zone(name: str) -> tzinfo:
    """The time zone named ``name`` (``UTC`` or an IANA name such as ``Europe/Berlin``)."""
    if name.upper() in ("UTC", "Z"):
        return UTC
    if len(name) > _LONGEST_ZONE:  # a name from a record: no file system look-up
        raise ValueError(f"unknown time zone {shown(name)} (no zone name is that long)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: 'Europe' is a directory
        raise ValueError(f"unknown time zone {shown(name)} ({zone_hint(name)})") from None


#: Longer than any IANA zone name ('America/Argentina/ComodRivadavia' has 32 characters).
_LONGEST_ZONE = 64


def shown(value: Any, most: int = 60) -> str:
    """``repr(value)``, cut to about ``most`` characters: a value from a record may be
    megabytes long, and a message (a log line, a dead letter's ``errormessage``) shows it."""
    text = repr(value[: most + 1]) if isinstance(value, str) else repr(value)
    if len(text) <= most + 2:
        return text
    return f"{text[:most]}... ({len(value) if isinstance(value, str) else len(text):,} characters)"


def zone_hint(name: str) -> str:
    """A did-you-mean among the IANA zone names (case-insensitive), or the general advice."""
    import difflib
    from zoneinfo import available_timezones

    zones = {z.lower(): z for z in available_timezones()}
    close = difflib.get_close_matches(name.lower(), list(zones), n=1, cutoff=0.7)
    if close:
        return f"did you mean {zones[close[0]]!r}?"
    return "use an IANA name such as 'Europe/Berlin', or 'UTC'"


#: The directives ``strptime`` reads (Python's own parser: no flags, no widths).
READ_DIRECTIVES = frozenset("aAwdbBmyYHIpMSfzZjUWcxXGuV%")
#: The directives a pattern may write: Python's, and the C library's that write the same
#: fields (``%e``, ``%T``, …), with the flags ``-``, ``_``, ``0``, ``^`` and ``#``. Refused:
#: ``%s`` (the C library takes the time as the worker's local time: silently wrong in any
#: other zone; use ``epoch_s``), the ``%E``/``%O`` modifiers (``%Ez`` writes ``+0000`` in
#: every zone), field widths (``%1000d``: a few characters writing a thousand) and letters
#: that are no directive (``%Q``, written as they are).
WRITE_DIRECTIVES = READ_DIRECTIVES | frozenset("CDeFghklnPrRtT")
_DIRECTIVE = re.compile(r"%([-_0^#]*)(\d*)(.?)", re.DOTALL)


def pattern_problem(fmt: str, *, parsing: bool) -> str | None:
    """Why ``fmt`` is not a pattern ``strptime`` (``parsing``) or ``strftime`` can use."""
    allowed = READ_DIRECTIVES if parsing else WRITE_DIRECTIVES
    for match in _DIRECTIVE.finditer(fmt):
        flags, width, code = match.groups()
        directive = match.group()
        if not code:
            return "the pattern ends in a lone percent sign (write two for a literal one)"
        if code == "s" and not parsing:
            return "'%s' writes the time in the worker's local zone: use the format epoch_s"
        if code not in allowed:
            what = "read" if parsing else "written"
            return f"{directive!r} is not a directive that can be {what}"
        if width or (flags and (parsing or code == "%")):
            return f"{directive!r}: flags and widths are not supported here"
    return None


def check_format(fmt: str, *, parsing: bool = True) -> str:
    """``fmt`` if it is a named format (``auto`` only when ``parsing``) or a strftime pattern
    (with a ``%``) whose directives ``strptime`` reads (``parsing``) or ``strftime`` writes
    correctly in every zone; ValueError saying which directive is not."""
    named = FORMATS if parsing else FORMATS[1:]
    if fmt in named:
        return fmt
    if "%" in fmt:
        problem = pattern_problem(fmt, parsing=parsing)
        if problem is None:
            return fmt
        raise ValueError(f"time format {shown(fmt)}: {problem}")
    raise ValueError(
        f"unknown time format {shown(fmt)}: use {', '.join(named)} or a strftime pattern"
    )


# -- reading --------------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    if isinstance(value, str) and len(value) <= 40:
        return f"the string {value!r}"
    return kind_of(value)


def _number_text(value: Any) -> str:
    text = repr(value) if isinstance(value, float) else str(value)
    return text if len(text) <= 40 else f"a {len(text)}-digit number"


def _checked(ns: int, shown: str) -> int:
    if not MIN_NS <= ns <= MAX_NS:
        raise ValueError(f"{shown} is out of range ({_RANGE})")
    return ns


def _from_epoch(value: Any, fmt: str) -> int:
    """Nanoseconds since the epoch from a number of ``fmt``'s units, exact, rounded down."""
    per, unit = _EPOCH_UNITS[fmt]
    if value.__class__ is int:  # the common case: exact, no Decimal
        if not MIN_NS <= value * per <= MAX_NS:
            raise ValueError(
                f"{_number_text(value)} {unit} since the epoch is out of range ({_RANGE})"
            )
        return value * per
    if isinstance(value, bool):
        raise ValueError(f"expected a number of {unit} since the epoch, not a boolean")
    if isinstance(value, str):
        try:
            number: Any = parse_number(value)
        except ValueError as exc:
            raise ValueError(f"expected a number of {unit} since the epoch: {exc}") from None
    elif isinstance(value, int | Decimal):
        number = value
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value} is not a time")
        number = Decimal(repr(value))  # the shortest repr: 0.1 is 0.1, not 0.1000000000000000055
    else:
        raise ValueError(f"expected a number of {unit} since the epoch, not {_describe(value)}")
    shown = f"{_number_text(value)} {unit} since the epoch"
    if isinstance(number, int):
        return _checked(number * per, shown)
    if not number.is_finite():
        raise ValueError(f"{shown} is not a time")
    # Any time in range is at most 22 digits of nanoseconds: refuse a huge exponent before
    # making an integer of it, then scale with room to spare (rounding down keeps the floor).
    if number.adjusted() > 30:
        raise ValueError(f"{shown} is out of range ({_RANGE})")
    with localcontext() as ctx:
        ctx.prec = 60
        ctx.rounding = ROUND_FLOOR
        ns = int((number * per).to_integral_value())
    return _checked(ns, shown)


def _offset(text: str) -> tzinfo:
    if text in ("Z", "z"):
        return UTC
    match = _OFFSET.fullmatch(text)
    assert match is not None  # the ISO pattern only lets offsets through
    sign, hh, mm, ss = match.groups()
    hours, minutes, seconds = int(hh), int(mm or 0), int(ss or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError(f"the offset {shown(text)} is not one (hours 00-23, minutes 00-59)")
    delta = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if not delta:
        return UTC
    return timezone(-delta if sign == "-" else delta)


def _from_iso(text: str, tz: tzinfo) -> int:
    """Nanoseconds since the epoch of ISO 8601 text (the grammar in the module docstring)."""
    match = _ISO.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{_describe(text)} is not an ISO 8601 time (e.g. 2023-11-14T22:13:20Z, "
            "2023-11-14 22:13:20.5+01:00, 2023-11-14)"
        )
    g = match.groupdict()
    hour = int(g["hour"] or 0)
    minute = int(g["minute"] or 0)
    second = int(g["second"] or 0)
    fraction = g["fraction"] or ""
    next_day = False
    if hour == 24 and minute == 0 and second == 0 and not fraction.strip("0"):
        hour, next_day = 0, True
    if second == 60:  # a leap second: read as :59, as java.time.Instant.parse does
        second = 59
    try:
        moment = datetime(
            int(g["year"]), int(g["month"]), int(g["day"]), hour, minute, second,
            tzinfo=_offset(g["offset"]) if g["offset"] else tz,
        )  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"{_describe(text)} is not a valid time: {exc}") from None
    delta = moment - _EPOCH
    ns = (delta.days * 86_400 + delta.seconds) * _NS + int((fraction + "000000000")[:9])
    if next_day:
        ns += 86_400 * _NS
    return _checked(ns, f"{_describe(text)}")


def _to_ns(moment: datetime, tz: tzinfo) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    delta = moment - _EPOCH
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1000


def read_instant(value: Any, fmt: str = "auto", *, tz: tzinfo = UTC) -> int:
    """``value`` read as a point in time in format ``fmt``: nanoseconds since the epoch.

    ValueError saying why when it is not one (or is outside years 1 to 9999, UTC).
    """
    if fmt in _EPOCH_UNITS:
        if isinstance(value, datetime):
            return _checked(_to_ns(value, tz), f"the time {value.isoformat()}")
        return _from_epoch(value, fmt)
    if isinstance(value, datetime):
        ns = _checked(_to_ns(value, tz), f"the time {value.isoformat()}")
    elif fmt == "auto":
        if value.__class__ is not bool and (
            isinstance(value, int | float | Decimal) or _looks_numeric(value)
        ):
            return _from_epoch(value, "epoch_ms")
        if not isinstance(value, str):
            raise ValueError(
                f"expected an ISO 8601 string or epoch milliseconds, not {_describe(value)}"
            )
        return _from_iso(value, tz)
    elif not isinstance(value, str):
        raise ValueError(f"expected a string, not {_describe(value)}")
    elif fmt == "iso" or fmt in _ISO_DIGITS:
        ns = _from_iso(value, tz)
    else:
        try:
            parsed = datetime.strptime(value, fmt)
        except ValueError:
            raise ValueError(f"{_describe(value)} does not match the format {shown(fmt)}") from None
        ns = _checked(_to_ns(parsed, tz), _describe(value))
    digits = _ISO_DIGITS.get(fmt)
    if digits is not None:
        step = 10 ** (9 - digits)
        ns -= ns % step
    return ns


def _looks_numeric(value: Any) -> bool:
    """Whether a string is a number in the grammar (``auto`` reads it as epoch ms)."""
    if not isinstance(value, str):
        return False
    try:
        parse_number(value)
    except ValueError:
        return False
    return True


# -- writing --------------------------------------------------------------------------------------


def _utc(ns: int) -> datetime:
    seconds = ns // _NS
    return _EPOCH + timedelta(seconds=seconds, microseconds=(ns - seconds * _NS) // 1000)


def _offset_text(moment: datetime) -> str:
    if moment.tzinfo is UTC:
        return "Z"
    offset = moment.utcoffset()
    if offset is None:
        return "Z"
    sign = "-" if offset < timedelta(0) else "+"
    seconds = abs(int(offset.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{sign}{hours:02d}:{minutes:02d}"
    return f"{text}:{seconds:02d}" if seconds else text


def _fraction(nanos: int, digits: int | None) -> str:
    """The fraction of a second written with ``digits`` digits (rounded down); ``None``: none
    for whole seconds, 6 digits for whole microseconds, else 9."""
    if digits is None:
        if not nanos:
            return ""
        if not nanos % 1000:
            return f".{nanos // 1000:06d}"
        return f".{nanos:09d}"
    return f".{nanos:09d}"[: digits + 1] if digits else ""


def write_instant(ns: int, fmt: str = "iso", *, tz: tzinfo = UTC) -> str | int:
    """The instant ``ns`` (nanoseconds since the epoch) written in format ``fmt`` in zone
    ``tz``. ValueError when the time cannot be written there (a year beyond 9999 in the zone)."""
    unit = _EPOCH_UNITS.get(fmt)
    if unit is not None:
        return ns // unit[0]
    if fmt == "auto":
        raise ValueError("auto is a format for reading times, not for writing them")
    if not MIN_NS <= ns <= MAX_NS:
        raise ValueError(f"{ns} nanoseconds since the epoch is out of range ({_RANGE})")
    seconds, nanos = divmod(ns, _NS)
    iso = fmt == "iso" or fmt in _ISO_DIGITS
    if iso and tz is UTC:  # the common case: no zone arithmetic
        text = (_EPOCH_NAIVE + timedelta(seconds=seconds)).isoformat()
        return text + _fraction(nanos, _ISO_DIGITS.get(fmt)) + "Z"
    moment = _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
    if tz is not UTC:
        try:
            moment = moment.astimezone(tz)
        except OverflowError:
            shown = write_instant(ns, "iso")
            raise ValueError(
                f"{shown} cannot be written in {tz}: its year there is not 1 to 9999"
            ) from None
    if iso:
        text = moment.replace(tzinfo=None, microsecond=0).isoformat()
        return text + _fraction(nanos, _ISO_DIGITS.get(fmt)) + _offset_text(moment)
    return _strftime(moment, fmt)


@lru_cache(maxsize=256)
def _pattern_parts(fmt: str) -> tuple[str, ...]:
    """``fmt`` split around the directives that write a year (``%Y``, ``%G``, ``%F``), which the
    C library writes without zero padding before year 1000 (so they would not read back)."""
    parts: list[str] = []
    text = ""
    i = 0
    while i < len(fmt):
        if fmt[i] == "%" and i + 1 < len(fmt):
            code = fmt[i + 1]
            if code in "YGF":
                parts.append(text)
                parts.append("%" + code)
                text = ""
            else:
                text += fmt[i : i + 2]
            i += 2
        else:
            text += fmt[i]
            i += 1
    parts.append(text)
    return tuple(parts)


def _strftime(moment: datetime, fmt: str) -> str:
    parts = _pattern_parts(fmt)
    if len(parts) == 1:
        return moment.strftime(fmt)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(moment.strftime(part) if part else "")
        elif part == "%Y":
            out.append(f"{moment.year:04d}")
        elif part == "%G":
            out.append(f"{moment.isocalendar()[0]:04d}")
        else:  # %F
            out.append(f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}")
    return "".join(out)


# -- datetime ----------------------------------------------------------------------------------


def parse_time(value: Any, fmt: str = "auto", *, tz: tzinfo = UTC) -> datetime:
    """``value`` read as a point in time in format ``fmt``, as an aware UTC datetime (cut to
    microseconds); a datetime is returned as it is (made aware in ``tz``). ValueError saying
    why when it is not a time."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=tz)
    return _utc(read_instant(value, fmt, tz=tz))


def format_time(moment: datetime, fmt: str = "iso", *, tz: tzinfo = UTC) -> str | int:
    """``moment`` (aware; naive counts as UTC) written in format ``fmt`` in zone ``tz``."""
    return write_instant(_to_ns(moment, UTC), fmt, tz=tz)
