"""Transforms that convert values: ``cast`` and ``timestamp_convert``.

Both read every value first and write only when all converted, so a record with one value that
cannot be converted raises :class:`~meshconnect.errors.DataError` and is left unchanged. A
missing field is a DataError (the record does not have the shape the pipeline expects; guard
optional fields with ``when``). ``null`` is never missing: a ``null`` value stays ``null``, and
so does everything below a ``null`` object, including a ``null`` payload (a tombstone), which
passes through unchanged, as Kafka Connect's ``Cast`` and ``TimestampConverter`` pass
tombstones.

Numbers in text are read with the one grammar of :mod:`meshconnect.numparse` (Java's
``BigDecimal``, which Kafka's ``Cast`` uses, in ASCII digits): ``"1_000"``, ``" 42"``,
``"٤٢"``, ``"nan"`` and ``"0x10"`` are not numbers.

Decimals
    ``cast`` to ``decimal`` gives a *string* in plain decimal notation (``"12.50"``,
    ``"-0.001"``, ``"1000"``: no exponent, the digits and scale of the input kept; a JSON
    number ``1.10`` read by the file source is the Decimal ``1.10`` and becomes ``"1.10"``).
    meshconnect itself keeps JSON numbers exact (:mod:`meshconnect.jsonvalue`), but most
    consumers read a JSON number as a binary float (``0.1 + 0.2`` problems); a string survives
    every sink and language exactly. A sink that has a decimal type (SQL ``NUMERIC``) converts
    it back. A plain notation longer than :data:`MAX_DECIMAL_DIGITS` digits (``1e5000``) is a
    data error rather than a string of that size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import tzinfo
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from ..api import TransformSpec
from ..booleans import parse_bool
from ..errors import ConfigError, DataError
from ..expr import render_value
from ..numparse import describe, parse_number, to_float, to_int
from ..timefmt import (
    FORMATS,
    check_format,
    pattern_problem,
    read_instant,
    write_instant,
    zone,
    zone_hint,
)
from . import Transform
from ._common import Options, PathOption, nested, own
from .paths import MISSING, FieldPath, parse_path

if TYPE_CHECKING:
    from ..expr import Compiler
    from ..records import Record

__all__ = [
    "MAX_DECIMAL_DIGITS",
    "SPECS",
    "Cast",
    "CastOptions",
    "TimestampConvert",
    "TimestampConvertOptions",
    "to_decimal",
]

CastType = Literal["int", "float", "string", "bool", "decimal", "timestamp"]
Converter = Callable[[Any], Any]

_MISSING: Any = MISSING

_short = describe


def _to_string(value: Any) -> str:
    return render_value(value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        return value != 0
    if isinstance(value, str):
        parsed = parse_bool(value)  # the one reading of text as a boolean (bool() too)
        if parsed is None:
            raise ValueError(
                f"{_short(value)} is not a boolean (true/yes/on/1/y/t, false/no/off/0/n/f)"
            )
        return parsed
    raise ValueError(f"{_short(value)} cannot become a boolean")


#: Most digits a decimal string from ``cast`` may have (Python's limit on integer text).
MAX_DECIMAL_DIGITS = 4300


def to_decimal(value: Any) -> str:
    """``value`` (an integer, a Decimal, a float or a numeric string) as a decimal string in
    plain notation with the digits and scale it was given: the Decimal ``1.10`` (the JSON
    number ``1.10``) is ``"1.10"``, ``1E+3`` is ``"1000"``, the float ``0.1`` is ``"0.1"``.
    ValueError for NaN, infinities, other types and plain forms longer than
    :data:`MAX_DECIMAL_DIGITS` digits."""
    cls = value.__class__
    if cls is int:
        return str(value)  # beyond 4300 digits: ValueError (Python's limit)
    if cls is float:
        text = repr(value)  # the shortest repr: 0.1 is "0.1", not 0.1000000000000000055…
        if "e" not in text and "n" not in text:  # not 1e+16, nan, inf
            return text
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{_short(value)} cannot become a decimal")
    else:
        try:
            # A float goes through its shortest repr: 0.1 is "0.1", not 0.1000000000000000055…
            number = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
        except InvalidOperation:
            raise ValueError(f"{_short(value)} is not a decimal number") from None
    if not number.is_finite():
        raise ValueError(f"{_short(value)} is not a finite number")
    _sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    plain = len(digits) + exponent if exponent > 0 else max(len(digits), 1 - exponent)
    if plain > MAX_DECIMAL_DIGITS:
        raise ValueError(
            f"{_short(value)} would have {plain} digits in plain notation "
            f"(at most {MAX_DECIMAL_DIGITS})"
        )
    return format(number, "f")


def _to_decimal(value: Any) -> str:
    """:func:`to_decimal` of a value whose text, if it is text, is in the number grammar."""
    if isinstance(value, str):
        parse_number(value)  # ValueError for "1_000", " 1", "nan", "٤٢", ...
    return to_decimal(value)


def _to_timestamp(value: Any) -> str:
    return str(write_instant(read_instant(value, "auto"), "iso"))


_CONVERTERS: dict[str, Converter] = {
    "int": to_int,  # numbers cut towards zero, booleans 1/0, text in the number grammar
    "float": to_float,
    "string": _to_string,
    "bool": _to_bool,
    "decimal": _to_decimal,
    "timestamp": _to_timestamp,
}

#: What each kind of target can hold (attributes: strings; extensions: strings, ints, bools).
_ATTRIBUTE_TYPES = frozenset(("string", "decimal", "timestamp"))
_EXTENSION_TYPES = frozenset(("int", "string", "bool", "decimal", "timestamp"))


def _convert_all(
    name: str,
    record: Record,
    steps: Sequence[tuple[FieldPath, Converter]],
    inner: list[FieldPath],
) -> list[tuple[FieldPath, Any]]:
    """Every path's converted value; DataError on the first that is missing or cannot be
    converted. A path whose value is ``null`` (or lies below a ``null``) is left out: it stays
    as it is. Nothing is written; the objects on the way down nested paths (``inner``) are
    made the record's own (:func:`~._common.own`), ready for the writes."""
    out = []
    for path, convert in steps:
        value = path.find(record)
        if value is None:
            continue
        if value is _MISSING:
            raise DataError(f"{name}: {path} is missing")
        try:
            out.append((path, convert(value)))
        except (ValueError, OverflowError) as exc:
            raise DataError(f"{name}: {path}: {exc}") from None
    if out:
        own(record, inner)
    return out


# -- cast -----------------------------------------------------------------------------------------


class CastOptions(Options):
    fields: dict[PathOption, CastType] = Field(
        min_length=1,
        description="Path → type: int, float, string, bool, decimal (a canonical decimal "
        "string) or timestamp (an ISO 8601 string in UTC, from ISO text or epoch "
        "milliseconds). Numeric strings follow one strict grammar (see the page).",
    )


class Cast(Transform):
    """Converts the values at the given paths to the given types."""

    copies_nested_objects = True

    def __init__(self, steps: list[tuple[FieldPath, Converter]]) -> None:
        self.type_name = "cast"
        # Attributes first (a write there can fail), then data paths deepest first, so a
        # written path never breaks another and a failure changes nothing.
        self.steps = sorted(steps, key=lambda s: (s[0].kind == "data", -len(s[0].segments)))
        self._single = self.steps[0] if len(self.steps) == 1 else None
        self._nested = nested(path for path, _ in self.steps)
        self._key: str | None = None
        self._convert: Converter = _to_string
        if self._single is not None:
            path, self._convert = self._single
            if path.kind == "data" and len(path.segments) == 1:
                self._key = path.segments[0] if isinstance(path.segments[0], str) else None

    def apply(self, record: Record) -> Record:
        key = self._key
        if key is not None and record.data.__class__ is dict:  # one top-level field
            data = record.data
            value = data.get(key, _MISSING)
            if value is _MISSING:
                raise DataError(f"cast: data.{key} is missing")
            if value is not None:
                try:
                    data[key] = self._convert(value)
                except (ValueError, OverflowError) as exc:
                    raise DataError(f"cast: data.{key}: {exc}") from None
            return record
        single = self._single
        if single is not None:  # one path: read, convert, write, no lists
            path, convert = single
            value = path.find(record)
            if value is None:  # null, below a null, or a tombstone: stays
                return record
            if value is _MISSING:
                raise DataError(f"cast: {path} is missing")
            try:
                value = convert(value)
            except (ValueError, OverflowError) as exc:
                raise DataError(f"cast: {path}: {exc}") from None
            own(record, self._nested)
            path.set(record, value, create=False)
            return record
        for path, value in _convert_all("cast", record, self.steps, self._nested):
            path.set(record, value, create=False)
        return record


def _make_cast(options: CastOptions, compiler: Compiler) -> Cast:
    steps = []
    for text, kind in options.fields.items():
        path = parse_path(text)
        _check_target(path, kind, {"attribute": _ATTRIBUTE_TYPES, "extension": _EXTENSION_TYPES})
        steps.append((path, _CONVERTERS[kind]))
    return Cast(steps)


def _check_target(path: FieldPath, kind: str, allowed: dict[str, frozenset[str]]) -> None:
    fits = allowed.get(path.kind)
    if fits is not None and kind not in fits:
        what = "attribute" if path.kind == "attribute" else "extension"
        raise ConfigError(
            f"fields: {path} is an {what}; it takes {', '.join(sorted(fits))}, not {kind}"
        )


# -- timestamp_convert ----------------------------------------------------------------------------


def _time_format(parsing: bool) -> Callable[[str], str]:
    # Messages that do not repeat the value: `validate` never echoes config values.
    named = ", ".join(FORMATS if parsing else FORMATS[1:])

    def check(text: str) -> str:
        problem = pattern_problem(text, parsing=parsing) if "%" in text else None
        if problem is not None:  # names the directive, not the whole pattern
            raise ValueError(f"not a time format: {problem}")
        try:
            return check_format(text, parsing=parsing)
        except ValueError:
            raise ValueError(f"not a time format: use {named} or a strftime pattern") from None

    return check


class TimestampConvertOptions(Options):
    fields: list[PathOption] = Field(
        min_length=1, description="Paths of the times to convert, e.g. data.created_at or time."
    )
    from_: str = Field(
        "auto",
        alias="from",
        description="How the values are written: auto (ISO 8601 text, or epoch milliseconds "
        "as a number or numeric text), epoch_s, epoch_ms, epoch_us, epoch_ns, iso (iso_s, "
        "iso_ms, iso_us, iso_ns: rounded down to that precision), or a strftime pattern such "
        "as '%d/%m/%Y %H:%M'.",
    )
    to: str = Field(
        "iso",
        description="How to write them: iso (ISO 8601 with the zone's offset, Z for UTC), "
        "iso_s, iso_ms, iso_us, iso_ns (exactly 0, 3, 6 or 9 fraction digits), epoch_s, "
        "epoch_ms, epoch_us, epoch_ns (integers, rounded down), or a strftime pattern such "
        "as '%Y-%m-%d'.",
    )
    timezone: str = Field(
        "UTC", description="The zone times are written in (an IANA name such as Europe/Berlin)."
    )
    input_timezone: str = Field("UTC", description="The zone of input times that carry no offset.")

    _check_from = field_validator("from_")(_time_format(True))
    _check_to = field_validator("to")(_time_format(False))

    @field_validator("timezone", "input_timezone")
    @classmethod
    def _check_zone(cls, name: str) -> str:
        try:
            zone(name)
        except ValueError:
            raise ValueError(f"not a known time zone: {zone_hint(name)}") from None
        return name


class TimestampConvert(Transform):
    """Reads times in one format and writes them in another, in a given zone."""

    copies_nested_objects = True

    def __init__(
        self, paths: list[FieldPath], source: str, target: str, tz: tzinfo, input_tz: tzinfo
    ) -> None:
        self.type_name = "timestamp_convert"

        def convert(value: Any) -> Any:
            return write_instant(read_instant(value, source, tz=input_tz), target, tz=tz)

        self.steps = sorted(
            ((p, convert) for p in paths), key=lambda s: (s[0].kind == "data", -len(s[0].segments))
        )
        self._nested = nested(paths)

    def apply(self, record: Record) -> Record:
        for path, value in _convert_all("timestamp_convert", record, self.steps, self._nested):
            path.set(record, value, create=False)
        return record


def _make_timestamp_convert(
    options: TimestampConvertOptions, compiler: Compiler
) -> TimestampConvert:
    paths = [parse_path(text) for text in options.fields]
    kind = "int" if options.to.startswith("epoch") else "string"
    for path in paths:
        _check_target(path, kind, {"attribute": frozenset(("string",))})
    tz = zone(options.timezone)
    return TimestampConvert(paths, options.from_, options.to, tz, zone(options.input_timezone))


SPECS = [
    TransformSpec(
        name="cast",
        options_model=CastOptions,
        factory=_make_cast,
        description="Convert values to int, float, string, bool, decimal or timestamp.",
        examples=[
            "- type: cast\n  fields: {data.qty: int, data.price: decimal, data.paid: bool}",
            "- type: cast\n  fields: {data.created: timestamp, data.id: string}",
        ],
    ),
    TransformSpec(
        name="timestamp_convert",
        options_model=TimestampConvertOptions,
        factory=_make_timestamp_convert,
        description="Convert times between epoch seconds/milliseconds/microseconds/"
        "nanoseconds, ISO 8601 and strftime formats, in any time zone.",
        examples=[
            "- type: timestamp_convert\n  fields: [data.created_ms]\n  from: epoch_ms\n  to: iso",
            "- type: timestamp_convert\n  fields: [data.day]\n  from: iso\n  to: '%d.%m.%Y'\n"
            "  timezone: Europe/Berlin",
        ],
    ),
]
