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
      representable. Never a ``float``.

    Python ``float`` values made by code (``cast: float``, a plugin) stay floats; code that takes
    numbers accepts ``int``, ``float`` and ``Decimal``.

Numbers on the way out
    :func:`dumps` writes a ``Decimal`` read by :func:`loads` with the very text it was read
    from (``1e400`` stays ``1e400``, ``1E-7`` stays ``1E-7``, ``0.00000001`` stays
    ``0.00000001``), and any other ``Decimal`` with ``str()`` (the General Decimal Arithmetic
    to-scientific-string: every digit, the scale kept, e.g. ``1.10``, ``1E+3``), so
    ``loads(dumps(v)) == v`` and ``dumps(loads(t)) == t`` for every JSON number ``t``
    (a ``Decimal`` with exponent 0, such as ``Decimal("5")``, is the JSON integer ``5``).
    Floats are written in their shortest round-trip form (orjson). NaN and infinities (float or
    Decimal) are refused: JSON has none.

Limits
    Objects and arrays nest at most :data:`MAX_DEPTH` (128, serde_json's default) levels deep;
    deeper input is refused by :func:`loads` with :class:`JSONValueError`, so that every value
    it returns can be stored, copied, validated and written again (orjson writes at most 254
    levels; recursive code such as JSON Schema validation needs several stack frames a level).
    Duplicate keys in an object: the last one wins (as ECMAScript's ``JSON.parse``, orjson and
    Python's ``json`` do). Lone UTF-16 surrogates (``"\\ud800"``) are refused: the text could
    not be written as UTF-8 again.

Implementation
    Decoding is msgspec's decoder with a ``float_hook`` (one pass in C; a ``Decimal`` per
    number with a fraction or exponent). Encoding is orjson with a ``default`` that writes a
    ``Decimal`` as an ``orjson.Fragment`` of its text; integers beyond 64 bits (which orjson
    refuses) take a slower second pass. Both are measured in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
import orjson

__all__ = ["MAX_DEPTH", "JSONValueError", "default", "depth", "dumps", "dumps_each", "loads"]

#: Deepest nesting of objects and arrays :func:`loads` accepts (``[]`` is 1, ``[[]]`` is 2).
MAX_DEPTH = 128


class JSONValueError(ValueError):
    """The text is not a JSON value meshconnect accepts (malformed, nested deeper than
    :data:`MAX_DEPTH`, an integer beyond Python's digit limit); the message says which."""


class _TextDecimal(Decimal):
    """A ``Decimal`` read from JSON text whose ``str()`` is not that text (an exponent form such
    as ``1e400``, or a positional form as small as ``0.0000001``): it keeps the text, so that
    :func:`dumps` writes it back byte for byte. Arithmetic on it gives plain ``Decimal``."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> _TextDecimal:
        self = Decimal.__new__(cls, text)
        self.text = text
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_TextDecimal, (self.text,))

    def __copy__(self) -> _TextDecimal:
        return self

    def __deepcopy__(self, memo: Any) -> _TextDecimal:
        return self


_TINY = ("0.000000", "-0.000000")


def _number(text: str) -> Decimal:
    """The ``Decimal`` of a JSON number with a fraction or an exponent.

    ``str(Decimal(t)) == t`` for positional text unless the number is below 1e-6 (then
    ``str`` switches to exponent notation): only those and exponent forms keep their text."""
    if "e" in text or "E" in text or text.startswith(_TINY):
        return _TextDecimal(text)
    return Decimal(text)


_decoder = msgspec.json.Decoder(float_hook=_number)
_decode = _decoder.decode


def loads(text: str | bytes | bytearray | memoryview, *, max_depth: int | None = MAX_DEPTH) -> Any:
    """The value of one JSON text (UTF-8 bytes or str); :class:`JSONValueError` when it is not
    valid JSON, is nested deeper than ``max_depth``, or holds a number Python cannot make
    (an integer longer than 4,300 digits, an exponent beyond ``Decimal``'s range).

    ``max_depth=None`` is for text meshconnect wrote itself (the mesh store's): it was checked
    on the way in, and may have grown deeper by transforms; the decoder then stops only where
    Python's recursion limit does."""
    try:
        value = _decode(text)
    except msgspec.ValidationError as exc:  # an integer beyond the digit limit
        raise JSONValueError(f"{exc}: integers are limited to 4300 digits") from None
    except msgspec.DecodeError as exc:
        raise JSONValueError(str(exc)) from None
    except RecursionError:
        raise JSONValueError(f"nested deeper than {max_depth or 'Python can'} levels") from None
    except (InvalidOperation, ValueError, OverflowError) as exc:
        raise JSONValueError(f"a number out of range: {type(exc).__name__}") from None
    if max_depth is not None and len(text) > max_depth and isinstance(value, dict | list):
        # Depth d needs d opening brackets: count them before walking anything.
        if isinstance(text, str):
            brackets = text.count("[") + text.count("{")
        else:
            raw = bytes(text) if isinstance(text, memoryview) else text
            brackets = raw.count(b"[") + raw.count(b"{")
        if brackets > max_depth and depth(value, max_depth) > max_depth:
            raise JSONValueError(f"nested deeper than {max_depth} levels")
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
    if value.__class__ is _TextDecimal:
        return orjson.Fragment(value.text)
    if isinstance(value, Decimal):
        if value.is_finite():
            return orjson.Fragment(str(value))
        raise TypeError(f"{value} is not a JSON number (JSON has no NaN or infinity)")
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


_OPTIONS = {
    (False, False): 0,
    (True, False): orjson.OPT_SORT_KEYS,
    (False, True): orjson.OPT_APPEND_NEWLINE,
    (True, True): orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE,
}


@functools.lru_cache(maxsize=16)
def _default_with(fallback: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def extended(value: Any) -> Any:
        if isinstance(value, Decimal):
            return default(value)
        return fallback(value)

    return extended


def dumps(
    value: Any,
    *,
    sort_keys: bool = False,
    newline: bool = False,
    fallback: Callable[[Any], Any] | None = None,
) -> bytes:
    """``value`` as compact UTF-8 JSON (plus ``\\n`` with ``newline``; keys sorted with
    ``sort_keys``). Numbers as the module docstring says.

    ``TypeError`` (orjson's ``JSONEncodeError``) when ``value`` is not a JSON value: a set,
    bytes, an object, a non-string key, NaN or infinity, nesting deeper than 254 levels.
    ``fallback`` (an orjson ``default``: a value to write instead, or ``TypeError``) lets a
    writer accept more types, e.g. bytes as base64; ``Decimal`` never reaches it."""
    option = _OPTIONS[sort_keys, newline]
    hook = default if fallback is None else _default_with(fallback)
    try:
        out = orjson.dumps(value, hook, option)
    except TypeError as exc:
        if "64-bit" not in str(exc):
            cause = exc.__cause__  # what ``default`` said, which orjson's message hides
            raise TypeError(str(cause) if cause is not None else str(exc)) from None
        # Integers beyond 64 bits: orjson refuses them without asking ``default``.
        try:
            out = orjson.dumps(_big_ints(value), hook, option)
        except RecursionError:
            raise TypeError("Recursion limit reached") from None
    if b"null" in out and _non_finite(value):
        raise TypeError("NaN and infinity are not JSON numbers (JSON has no NaN or infinity)")
    return out


def dumps_each(values: list[Any]) -> list[bytes]:
    """:func:`dumps` of each value, each an exact-size ``bytes`` (a batch encoder for the mesh
    store: the fast path runs no Python code per value unless it holds a ``Decimal``).
    ``TypeError`` when one of them cannot be written."""
    encode, hook = orjson.dumps, default
    try:
        # orjson's output buffer keeps ~4 KiB whatever the size: slicing off the appended
        # newline makes an exact copy (stored records stay in the store's cache a while).
        out = [encode(v, hook, orjson.OPT_APPEND_NEWLINE)[:-1] for v in values]
    except TypeError:
        return [dumps(v) for v in values]  # integers beyond 64 bits, or the error to raise
    for blob, value in zip(out, values, strict=True):
        if b"null" in blob and _non_finite(value):
            raise TypeError("NaN and infinity are not JSON numbers (JSON has no NaN or infinity)")
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


def _non_finite(value: Any) -> bool:
    """Whether a float NaN or infinity hides in ``value`` (orjson writes them as ``null``)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if item.__class__ is float:
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False
