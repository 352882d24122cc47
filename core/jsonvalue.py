"""The one JSON representation of meshconnect: JSON text in and out of ``data``, numbers exact.

Every place where JSON enters or leaves a record (the file source and sink, the mesh store's
codec, dead letters, ``topics tail``) goes through :func:`loads` and :func:`dumps`, so a number
keeps every digit from a JSON input through transforms, the store and a JSON sink.

Values
    :func:`loads` gives ``dict`` (string keys), ``list``, ``str``, ``bool``, ``None`` and
    numbers:

    * a JSON integer (no fraction, no exponent) is an ``int`` of any size, up to Python's
      4,300-digit limit on integer text (``sys.get_int_max_str_digits``, a guard against
      quadratic parsing); ``-0`` is ``0`` (Python integers have no negative zero; ``-0.0`` keeps
      its sign);
    * a JSON number with a fraction or an exponent is a :class:`decimal.Decimal` built from the
      exact text: ``1.10`` keeps scale 2, ``169299987.35345112`` every digit, ``1e400`` is
      representable, ``-0.0`` keeps its sign. Never a ``float``.

    Python ``float`` values made by code (``cast: float``, a plugin) stay floats; code that takes
    numbers accepts ``int``, ``float`` and ``Decimal``.

Numbers on the way out
    :func:`dumps` writes a ``Decimal`` with ``str()``, the General Decimal Arithmetic
    to-scientific-string: every digit and the exponent kept, so ``loads(dumps(v)) == v`` with
    the same digits and scale. A number written in plain notation (``1.10``,
    ``169299987.35345112``, ``-0.0``, ``0.000001``: what JSON writers produce for usual
    magnitudes) comes out byte for byte as it came in. An exponent form comes out in that
    canonical form: ``1e400`` as ``1E+400``, ``1.5e-7`` as ``1.5E-7``, and so does a plain
    number below 1e-6 (``0.00000001`` as ``1E-8``): the same number, digits and scale, in
    other characters. (Keeping those characters too costs a Python call per number on the way
    in, measured at ~9 % of the file pipeline.) A ``Decimal`` with exponent 0, such as
    ``Decimal("5")``, is the JSON integer ``5``. Floats are written in their shortest
    round-trip form. NaN and infinities (float or Decimal) are refused: JSON has none.

Limits
    Objects and arrays nest at most :data:`MAX_DEPTH` (128, serde_json's default) levels deep;
    deeper input is refused by :func:`loads` with :class:`JSONValueError`, so that every value
    it returns can be stored, copied, validated and written again (orjson, which transforms
    use, writes at most 254 levels; recursive code such as JSON Schema validation needs several
    stack frames a level).
    Duplicate keys in an object: the last one wins (as ECMAScript's ``JSON.parse``, orjson and
    Python's ``json`` do). Lone UTF-16 surrogates (``"\\ud800"``) are refused: the text could
    not be written as UTF-8 again.

Implementation
    msgspec both ways, chosen by measuring (``docs/benchmarks.md``): its decoder takes a
    ``float_hook`` (``Decimal`` itself: no Python code per number; orjson has no hook and makes
    every fraction and every integer beyond 64 bits a binary float), and its encoder writes
    ``Decimal`` and integers of any size in C (orjson needs a Python ``default`` per Decimal
    and refuses integers beyond 64 bits). :func:`default` serves code that calls orjson itself.
    :func:`decode_unchecked` and :func:`check_depth` split :func:`loads` for a hot loop that
    handles errors itself (the file source).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from itertools import chain, compress
from typing import Any

import msgspec
import orjson

__all__ = [
    "MAX_DEPTH",
    "JSONValueError",
    "check_depth",
    "decode_unchecked",
    "default",
    "depth",
    "dumps",
    "dumps_each",
    "encode_unchecked",
    "error_text",
    "loads",
]

#: Deepest nesting of objects and arrays :func:`loads` accepts (``[]`` is 1, ``[[]]`` is 2).
MAX_DEPTH = 128


class JSONValueError(ValueError):
    """The text is not a JSON value meshconnect accepts (malformed, nested deeper than
    :data:`MAX_DEPTH`, an integer beyond Python's digit limit); the message says which."""


#: The decoder: every number with a fraction or exponent becomes ``Decimal(text)``, in C.
_decoder = msgspec.json.Decoder(float_hook=Decimal)
_decode = _decoder.decode


#: ``msgspec``'s decode, no depth check, its own exceptions: see :func:`loads` and
#: :func:`error_text`. For a loop that catches ``(ValueError, RecursionError, ArithmeticError)``.
decode_unchecked = _decoder.decode


def error_text(exc: BaseException, text: str | bytes | bytearray | memoryview | None = None) -> str:
    """Why :func:`decode_unchecked` (or a text decode before it) failed on ``text``, for a
    message (give ``text`` when at hand: some reasons need it)."""
    if isinstance(exc, msgspec.ValidationError):  # an integer beyond the digit limit
        return f"{exc}: integers are limited to 4300 digits"
    if isinstance(exc, RecursionError):
        return f"nested deeper than {MAX_DEPTH} levels"
    if isinstance(exc, ArithmeticError):  # InvalidOperation: an exponent beyond Decimal's
        return "a number out of range"
    if text is not None and str(exc) == "Input data was truncated" and _lone_surrogate(text):
        return _LONE_SURROGATE
    return str(exc)


_LONE_SURROGATE = (
    "a string holds a lone UTF-16 surrogate escape (\\ud800-\\udbff not followed by "
    "\\udc00-\\udfff): it stands for no Unicode character"
)


def _lone_surrogate(text: str | bytes | bytearray | memoryview) -> bool:
    """Whether ``text``, which msgspec called truncated, is whole JSON but for a lone
    surrogate escape (msgspec says "Input data was truncated" for ``"\\ud800"``): Python's
    own parser, which takes lone surrogates, reads it. Only on that error's path."""
    import json

    try:
        json.loads(bytes(text) if isinstance(text, memoryview | bytearray) else text)
    except (ValueError, RecursionError):
        return False
    return True


def check_depth(
    text: str | bytes | bytearray | memoryview, value: Any, max_depth: int = MAX_DEPTH
) -> None:
    """:class:`JSONValueError` when ``value`` (decoded from ``text``) nests deeper than
    ``max_depth``; cheap unless ``text`` holds more than ``max_depth`` opening brackets."""
    # Depth d needs d opening and d closing brackets (the text parsed, so they balance): a
    # short text cannot be too deep; count the opening ones before walking anything.
    if len(text) <= 2 * max_depth or not isinstance(value, dict | list):
        return
    if isinstance(text, str):
        brackets = text.count("[") + text.count("{")
    else:
        raw = bytes(text) if isinstance(text, memoryview) else text
        brackets = raw.count(b"[") + raw.count(b"{")
    if brackets > max_depth and depth(value, max_depth) > max_depth:
        raise JSONValueError(f"nested deeper than {max_depth} levels")


def loads(text: str | bytes | bytearray | memoryview, *, max_depth: int | None = MAX_DEPTH) -> Any:
    """The value of one JSON text (UTF-8 bytes or str); :class:`JSONValueError` when it is not
    valid JSON, is nested deeper than ``max_depth``, or holds a number Python cannot make
    (an integer longer than 4,300 digits, an exponent beyond ``Decimal``'s range).

    ``max_depth=None`` is for text meshconnect wrote itself (the mesh store's): it was checked
    on the way in, and may have grown deeper by transforms; the decoder then stops only where
    Python's recursion limit does."""
    try:
        value = _decode(text)
    except (ValueError, RecursionError, ArithmeticError) as exc:
        if isinstance(exc, RecursionError) and max_depth is None:
            raise JSONValueError("nested deeper than Python can read") from None
        raise JSONValueError(error_text(exc, text)) from None
    if max_depth is not None:
        check_depth(text, value, max_depth)
    return value


def depth(value: Any, limit: int | None = None) -> int:
    """How deep objects and arrays nest in ``value`` (0 for a scalar, 1 for ``[]``), without
    recursion; stops counting once past ``limit`` (returns ``limit + 1``) when one is given."""
    if not isinstance(value, dict | list | tuple):
        return 0
    deepest = 1
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        container, level = pop()
        if level > deepest:
            deepest = level
            if limit is not None and deepest > limit:
                return deepest
        items = container.values() if isinstance(container, dict) else container
        for item in items:
            if isinstance(item, dict | list | tuple):
                push((item, level + 1))
    return deepest


def default(value: Any) -> Any:
    """orjson's ``default`` for the values :func:`loads` makes that orjson does not know:
    a finite ``Decimal`` becomes an ``orjson.Fragment`` of its exact text. ``TypeError`` for
    anything else, and for a NaN or infinite ``Decimal``."""
    if isinstance(value, Decimal):
        if value.is_finite():
            return orjson.Fragment(str(value))
        raise TypeError(f"{value} is not a JSON number (JSON has no NaN or infinity)")
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _enc_hook(value: Any) -> Any:
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


_encoders = {
    order: msgspec.json.Encoder(decimal_format="number", enc_hook=_enc_hook, order=order)
    for order in (None, "sorted")
}
_encode_lines = _encoders[None].encode_lines
#: msgspec's encode as :func:`dumps` does it, nothing checked after: for a hot loop over
#: values that hold no ``float`` (so no NaN to look for), which handles msgspec's own
#: exceptions itself (``ValueError``: a lone surrogate, a NaN ``Decimal``, an integer beyond
#: 4,300 digits; ``TypeError``: a type JSON lacks).
encode_unchecked = _encoders[None].encode
_NON_FINITE = "NaN and infinity are not JSON numbers (JSON has no NaN or infinity)"


def dumps(
    value: Any,
    *,
    sort_keys: bool = False,
    newline: bool = False,
    strict: bool = False,
    floats: bool = True,
) -> bytes:
    """``value`` as compact UTF-8 JSON (plus ``\\n`` with ``newline``; keys sorted with
    ``sort_keys``). Numbers as the module docstring says; values JSON lacks in their JSON form:
    a tuple or set as an array, bytes as base64 text, a ``datetime`` as RFC 3339 text, a
    non-string key as text.

    ``TypeError`` when ``value`` cannot be written: NaN or infinity (float or Decimal), an
    object of another type, nesting deeper than Python's recursion limit. With ``strict``, also
    for sets, bytes and non-string keys (whose JSON form is not one text: a set's order varies
    from run to run), as a key or a hash must be. ``floats=False``: as for
    :func:`dumps_each`."""
    if strict:
        return _dumps_strict(value, sort_keys, newline)
    try:
        out = _encoders["sorted" if sort_keys else None].encode(value)
    except (ValueError, RecursionError) as exc:  # a NaN Decimal; nesting; see _why
        raise TypeError(_why(exc)) from None
    # ``find``, not ``in``: ``bytes in bytes`` first tries the needle as an int, and raises
    # and clears a TypeError each time (CPython 3.11), which costs more than the search.
    if floats and out.find(b"null") >= 0 and _non_finite(value):
        raise TypeError(_NON_FINITE)
    return out + b"\n" if newline else out


def _why(exc: BaseException) -> str:
    """What msgspec's encoder refused, in words (its errors are all ValueErrors)."""
    if isinstance(exc, RecursionError):
        return "nested too deep to write"
    if isinstance(exc, UnicodeError):
        return "a string holds an unpaired UTF-16 surrogate (not UTF-8 text)"
    if "digits" in str(exc):
        return "an integer of more than 4300 digits (Python's limit on integer text)"
    return _NON_FINITE


def dumps_each(values: Sequence[Any], *, floats: bool = True) -> list[bytes]:
    """:func:`dumps` of each value (a batch encoder for the mesh store: the per-value work is
    msgspec's, in C, Decimals included). ``TypeError`` when one of them cannot be written.
    ``floats=False`` is the caller's word that no ``float`` is anywhere in ``values`` (only
    strings, integers, booleans, None, Decimals and containers of them, as a CDC source makes
    its text values): then the check for NaN and infinity, which msgspec writes as ``null``,
    is skipped.

    One ``encode_lines`` call for the whole batch, split at its newlines: compact JSON holds
    no raw newline (one in a string is written ``\\n``), so each line is one value's text, the
    bytes :func:`dumps` gives it. A third cheaper per value than an ``encode`` call each."""
    try:
        blob = _encode_lines(values)
    except (ValueError, RecursionError):
        return [dumps(v) for v in values]  # raises the error, with its message
    out = blob.split(b"\n")
    if out.pop() or len(out) != len(values):  # not expected (see above): value by value
        return [dumps(v) for v in values]
    # ``find``, not ``in``: see dumps.
    if (
        floats
        and blob.find(b"null") >= 0
        and _may_hold_a_non_finite(values)
        and _any_non_finite(values)
    ):
        raise TypeError(_NON_FINITE)
    return out


_pack = msgspec.msgpack.Encoder().encode


def _may_hold_a_non_finite(values: Sequence[Any]) -> bool:
    """False when certainly no NaN or infinity hides in ``values``. MessagePack writes a
    float as a marker byte (0xcb for float64, 0xca for float32) and its big-endian IEEE 754
    bits, and a NaN's or an infinity's first byte is 0x7f or 0xff (all exponent bits set):
    a packing of the values holding none of these four byte pairs holds no such float.
    The pairs can also be part of an integer or a text (rarely: two given bytes in a row);
    then, and when the values cannot be packed, True, and the walk decides. One C-level
    encoding, a fraction of the walk's cost for a CDC record, which nearly always holds a
    null."""
    try:
        packed = _pack(values)
    except Exception:  # a type MessagePack lacks, an integer beyond 64 bits, deep nesting
        return True
    find, end = packed.find, len(packed) - 1
    for marker in (b"\xcb", b"\xca"):  # one byte: ``find`` is a memchr
        at = find(marker)
        while 0 <= at < end:
            if packed[at + 1] in _NON_FINITE_FIRST:
                return True
            at = find(marker, at + 1)
    return False


#: The first byte of a NaN or an infinity in IEEE 754, big-endian (exponent bits all set).
_NON_FINITE_FIRST = (0x7F, 0xFF)


def _dumps_strict(value: Any, sort_keys: bool, newline: bool) -> bytes:
    option = (orjson.OPT_SORT_KEYS if sort_keys else 0) | (
        orjson.OPT_APPEND_NEWLINE if newline else 0
    )
    try:
        out = orjson.dumps(value, default, option)
    except TypeError as exc:
        if "64-bit" not in str(exc):
            cause = exc.__cause__  # what ``default`` said, which orjson's message hides
            raise TypeError(str(cause) if cause is not None else str(exc)) from None
        try:  # integers beyond 64 bits, which orjson refuses without asking ``default``
            out = orjson.dumps(_big_ints(value), default, option)
        except RecursionError:
            raise TypeError("nested too deep to write") from None
    if out.find(b"null") >= 0 and _non_finite(value):
        raise TypeError(_NON_FINITE)
    return out


def _big_ints(value: Any) -> Any:
    """``value`` with every integer beyond 64 bits as an ``orjson.Fragment`` of its digits."""
    if value.__class__ is int:
        return orjson.Fragment(str(value)) if not -(2**63) <= value < 2**64 else value
    if isinstance(value, dict):
        return {k: _big_ints(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_big_ints(v) for v in value]
    return value


#: Classes that hold no float: skipped without a push in :func:`_non_finite`.
_NO_FLOAT = frozenset({str, int, bool, type(None), Decimal, bytes})


_CONTAINERS = frozenset({dict, list, tuple})
#: Every class :func:`_any_non_finite` handles by class.
_KNOWN = _NO_FLOAT | _CONTAINERS | {float}
_is_container = _CONTAINERS.__contains__
_is_dict = frozenset({dict}).__contains__
_is_float = frozenset({float}).__contains__
_is_sequence = frozenset({list, tuple}).__contains__
_values = dict.values


def _any_non_finite(values: Sequence[Any]) -> bool:
    """:func:`_non_finite` of any of ``values``, for a batch: level by level through all of
    them at once, each level a few C-level passes (the classes of its items, its floats, its
    containers, each container once however many values share it, as a format's constant
    parts are), instead of a Python step per item. A level holding an item of another class
    (a subclass of dict, list, tuple or float) is looked at item by item."""
    level = list(values)
    while level:
        kinds = set(map(type, level))
        if not kinds <= _KNOWN:
            return any(map(_non_finite, level))
        if float in kinds and not all(
            map(math.isfinite, compress(level, map(_is_float, map(type, level))))
        ):
            return True
        if kinds.isdisjoint(_CONTAINERS):
            return False
        containers = list(compress(level, map(_is_container, map(type, level))))
        unique = list(dict(zip(map(id, containers), containers, strict=True)).values())
        level = list(
            chain.from_iterable(map(_values, compress(unique, map(_is_dict, map(type, unique)))))
        )
        level += chain.from_iterable(compress(unique, map(_is_sequence, map(type, unique))))
    return False


def _non_finite(value: Any) -> bool:
    """Whether a float NaN or infinity hides in ``value`` (msgspec and orjson write them as
    ``null``). Called only for text holding a ``null``, which CDC records mostly do: the
    common leaves are skipped by class, without a push each."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if not isinstance(value, dict | list | tuple):
        return False
    no_float = _NO_FLOAT
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        item = pop()
        items = item.values() if isinstance(item, dict) else item
        for child in items:
            cls = child.__class__
            if cls in no_float:
                continue
            if cls is float:
                if not math.isfinite(child):
                    return True
            elif cls is dict or cls is list or isinstance(child, dict | list | tuple):
                push(child)
            elif isinstance(child, float) and not math.isfinite(child):
                return True
    return False
