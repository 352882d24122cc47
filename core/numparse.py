"""The one grammar for numbers written as text, and the conversions to int and float built on it.

Every place that reads a number out of a string uses :func:`parse_number`: the ``cast``
transform (``int``, ``float``), the expression functions ``int()`` and ``float()``, the epoch
formats of ``timestamp_convert`` and the time functions, and ``mask``'s typed replacement. The
grammar is Java's ``BigDecimal(String)``, which Kafka Connect's ``Cast`` uses, restricted to
ASCII digits::

    number   = [sign] significand [exponent]
    sign     = "+" | "-"
    significand = digits ["." [digits]] | "." digits
    exponent = ("e" | "E") [sign] digits
    digits   = one or more of 0 1 2 3 4 5 6 7 8 9

So ``"42"``, ``"+42"``, ``"-0"``, ``"007"``, ``"1.50"``, ``".5"``, ``"5."``, ``"1e3"`` and
``"-2.5E-3"`` are numbers; ``" 42"`` (whitespace anywhere), ``"1_000"``, ``"1,000"``, ``"٤٢"``
(non-ASCII digits), ``"0x1A"``, ``"nan"``, ``"inf"``, ``"Infinity"``, ``""`` and ``"1e"`` are
not. A text of more than :data:`MAX_DIGITS` digits is refused (Python's own limit for turning
text into integers).

Conversions (numbers may be ``int`` of any size, ``float`` or ``decimal.Decimal``):

* :func:`to_int` cuts the fraction off towards zero, as Kafka's ``Cast`` and Python's ``int()``
  do (``3.9`` → 3, ``"-3.9"`` → -3, ``"1e3"`` → 1000); booleans are 1 and 0. An integer of
  more than :data:`MAX_DIGITS` digits is refused.
* :func:`to_float` gives the nearest binary float; a result that is not finite (``"1e400"``)
  is refused (JSON has no NaN or infinity).

Errors are :class:`ValueError` whose message says what is wrong, never a Python ``repr`` of a
number.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

from .records import kind_of

__all__ = ["MAX_DIGITS", "describe", "parse_number", "to_float", "to_int"]

#: The most digits a number may have (Python's default ``int`` / ``str`` conversion limit).
MAX_DIGITS = 4300

_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_GRAMMAR = "digits 0-9 with an optional sign, decimal point and exponent, e.g. -12.5e3"


def describe(value: Any) -> str:
    """A short description of ``value`` for messages: a short string quoted, else its kind."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    return kind_of(value)


def parse_number(text: str) -> int | Decimal:
    """The number ``text`` writes (see the module docstring): an ``int`` when it has neither a
    point nor an exponent, else the exact ``Decimal``. ValueError when it is not a number."""
    if (text.isdigit() and text.isascii()) or _INTEGER.fullmatch(text):  # 0-9 only: fast
        if len(text) > MAX_DIGITS + 1:
            raise ValueError(f"a number of {len(text)} digits is too long (at most {MAX_DIGITS})")
        return int(text)
    if _NUMBER.fullmatch(text):
        if len(text) > MAX_DIGITS + 8:
            raise ValueError(f"a number of {len(text)} characters is too long")
        return Decimal(text)
    raise ValueError(f"{describe(text)} is not a number ({_GRAMMAR})")


def _whole(number: Decimal | float, shown: Any) -> int:
    """``number`` cut towards zero; ValueError when it is not finite or too large."""
    if isinstance(number, float):
        if not math.isfinite(number):
            raise ValueError(f"{_text(shown)} has no integer value")
        return int(number)
    if not number.is_finite():
        raise ValueError(f"{_text(shown)} has no integer value")
    if number.adjusted() >= MAX_DIGITS:
        raise ValueError(
            f"{_text(shown)} is too large for an integer (at most {MAX_DIGITS} digits)"
        )
    return int(number)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return describe(value)
    if isinstance(value, Decimal):
        text = str(value)
        return text if len(text) <= 40 else f"a {len(text)}-character number"
    if isinstance(value, float):
        return repr(value)
    return kind_of(value)


def to_int(value: Any) -> int:
    """``value`` (a number, a boolean or a numeric string) as an integer, cut towards zero."""
    cls = value.__class__
    if cls is int:
        return value
    if cls is bool:
        return int(value)
    if cls is float or cls is Decimal:
        return _whole(value, value)
    if cls is str:
        number = parse_number(value)
        return number if number.__class__ is int else _whole(number, value)
    if isinstance(value, int):  # a subclass of int
        return int(value)
    if isinstance(value, float | Decimal):
        return _whole(value, value)
    raise ValueError(f"{describe(value)} cannot become an integer")


def to_float(value: Any) -> float:
    """``value`` (a number, a boolean or a numeric string) as a finite float."""
    if isinstance(value, str):
        number: Any = parse_number(value)
    elif isinstance(value, int | float | Decimal):
        number = value
    else:
        raise ValueError(f"{describe(value)} cannot become a number")
    try:
        result = float(number)
    except OverflowError:  # an int beyond the float range
        result = math.inf
    if not math.isfinite(result):
        raise ValueError(
            f"{_text(value)} is not a finite float (JSON has no NaN or infinity; "
            "cast to decimal to keep it exactly)"
        )
    return result
