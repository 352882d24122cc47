"""Numbers in expressions: ``int``, ``float`` and ``Decimal`` compared and computed together.

Record data holds JSON numbers as :mod:`meshconnect.jsonvalue` reads them (``int`` of any size,
``Decimal`` with the exact digits), and a number with a fraction or an exponent written in an
expression is a ``Decimal`` of its text too, so ``data.v == 169299987.35345112`` compares the
digits as written. A ``float`` (made by code: ``float()``, ``now()``, a plugin) that meets a
``Decimal`` is taken as its shortest text (``0.1`` is ``Decimal("0.1")``, not
``0.1000000000000000055…``), the rule ``cast: decimal`` follows too.

Arithmetic with a ``Decimal`` is exact: ``+``, ``-``, ``*``, ``//``, ``%``, unary minus,
``abs()``, ``sum()`` and ``round()`` give every digit of the result, up to
:data:`MAX_DIGITS` significant digits (more is a data error, never a silent rounding); ``/``
rounds to 34 significant digits (IEEE 754 decimal128), half to even. ``//`` and ``%`` floor
as they do for Python integers (``-7 // 2`` is ``-4``, ``-7 % 2`` is ``1``). Integers alone
and floats alone behave as in Python (``7 / 2`` is the float ``3.5``).
"""

from __future__ import annotations

import decimal
import math
import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any

__all__ = ["MAX_DIGITS"]

#: Most significant digits an exact result may have (``1e400 + 1`` needs 401).
MAX_DIGITS = 1000
#: Largest integer (in decimal digits) ``int()``, ``floor()``, ``ceil()`` and ``round()``
#: make from a Decimal: Python's own limit on integer text (``sys.get_int_max_str_digits``).
_MAX_INT_DIGITS = 4300

_TRAPS = [decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow]
_EXACT = decimal.Context(
    prec=MAX_DIGITS,
    rounding=decimal.ROUND_HALF_EVEN,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[*_TRAPS, decimal.Inexact],
)
_ROUND = decimal.Context(
    prec=MAX_DIGITS,
    rounding=decimal.ROUND_HALF_EVEN,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=_TRAPS,
)
_DIVIDE = decimal.Context(
    prec=34,
    rounding=decimal.ROUND_HALF_EVEN,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=_TRAPS,
)


def as_decimal(value: Any) -> Any:
    """``value`` ready for Decimal arithmetic: a finite float as the Decimal of its shortest
    text, a bool as ``0``/``1``; anything else as it is."""
    cls = value.__class__
    if cls is float:
        return Decimal(repr(value)) if math.isfinite(value) else value
    if cls is bool:
        return int(value)
    return value


def _decimals(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Both operands as Decimal-ready values when either is a Decimal, else ``None``."""
    if isinstance(a, Decimal) or isinstance(b, Decimal):
        return as_decimal(a), as_decimal(b)
    return None


def _exact(compute: Callable[[Any, Any], Any], a: Any, b: Any, symbol: str) -> Any:
    if not isinstance(a, Decimal | int) or not isinstance(b, Decimal | int):
        raise TypeError(f"unsupported operand type(s) for {symbol}: '{_name(a)}' and '{_name(b)}'")
    try:
        return compute(a, b)
    except decimal.Inexact:
        raise ValueError(
            f"the result of {symbol} needs more than {MAX_DIGITS} significant digits"
        ) from None
    except decimal.DivisionByZero:
        raise ZeroDivisionError("division by zero") from None
    except decimal.InvalidOperation:
        raise ValueError(f"{symbol} is undefined for these operands") from None
    except decimal.Overflow:
        raise OverflowError(f"the result of {symbol} is out of range") from None


def _name(value: Any) -> str:
    return "Decimal" if isinstance(value, Decimal) else type(value).__name__


def _floor_divmod(a: Any, b: Any) -> tuple[Decimal, Decimal]:
    """Python's floored ``divmod`` for Decimals (Decimal's own truncates toward zero)."""
    q = _EXACT.divide_int(a, b)
    r = _EXACT.remainder(a, b)
    if r and (r < 0) != (b < 0):
        q = _EXACT.subtract(q, 1)
        r = _EXACT.add(r, b)
    return q, r


def add(a: Any, b: Any) -> Any:
    pair = _decimals(a, b)
    if pair is None:
        return a + b
    return _exact(_EXACT.add, *pair, "+")


def sub(a: Any, b: Any) -> Any:
    pair = _decimals(a, b)
    if pair is None:
        return a - b
    return _exact(_EXACT.subtract, *pair, "-")


def mul(a: Any, b: Any) -> Any:
    pair = _decimals(a, b)
    if pair is None:
        return a * b
    return _exact(_EXACT.multiply, *pair, "*")


def truediv(a: Any, b: Any) -> Any:
    pair = _decimals(a, b)
    if pair is None:
        return a / b
    return _exact(_DIVIDE.divide, *pair, "/")


def floordiv(a: Any, b: Any) -> Any:
    pair = _decimals(a, b)
    if pair is None:
        return a // b
    return _exact(lambda x, y: _floor_divmod(x, y)[0], *pair, "//")


def mod(a: Any, b: Any) -> Any:
    pair = _decimals(a, b)
    if pair is None:
        return a % b
    return _exact(lambda x, y: _floor_divmod(x, y)[1], *pair, "%")


def neg(a: Any) -> Any:
    # Decimal's own ``-x`` rounds to the context's 28 digits; copy_negate is exact.
    return a.copy_negate() if isinstance(a, Decimal) else -a


def pos(a: Any) -> Any:
    return a if isinstance(a, Decimal) else +a


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        if a.__class__ is float and isinstance(b, Decimal):
            a = as_decimal(a)
        elif b.__class__ is float and isinstance(a, Decimal):
            b = as_decimal(b)
        return op(a, b)

    return compare


def same(a: Any, b: Any) -> bool:
    """``a == b`` as expressions mean it: a float meeting a Decimal counts as its shortest text
    (``float('0.1') == 0.1``), in arrays and objects too, so ``==``, ``in``, ``contains()``
    and ``indexOf()`` agree."""
    ca, cb = a.__class__, b.__class__
    if ca is float and cb is Decimal:
        return bool(as_decimal(a) == b)
    if cb is float and ca is Decimal:
        return bool(a == as_decimal(b))
    if ca is cb and (ca is list or ca is tuple):
        return len(a) == len(b) and all(map(same, a, b))
    if ca is dict and cb is dict:
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    return bool(a == b)


def different(a: Any, b: Any) -> bool:
    return not same(a, b)


#: Needles that ``in`` finds natively (no float, Decimal or container to compare by ``same``).
_PLAIN = frozenset((str, int, bool, type(None)))


def member(needle: Any, haystack: Any) -> bool:
    """``needle in haystack``: an element of an array or set by :func:`same`, a key of an
    object, a substring of a string."""
    if needle.__class__ in _PLAIN or haystack.__class__ is str or isinstance(haystack, dict):
        return needle in haystack
    if isinstance(haystack, list | tuple | set | frozenset):
        return any(same(needle, item) for item in haystack)
    return needle in haystack


def index(haystack: list[Any] | tuple[Any, ...], needle: Any) -> int:
    """The first position of ``needle`` in an array by :func:`same`, or -1."""
    for position, item in enumerate(haystack):
        if same(needle, item):
            return position
    return -1


eq = same
ne = different
lt = _compare(operator.lt)
le = _compare(operator.le)
gt = _compare(operator.gt)
ge = _compare(operator.ge)


# -- functions -----------------------------------------------------------------------------------


def integral(name: str, value: Decimal, rounding: str) -> int:
    """``value`` rounded to an int (``rounding`` a ``decimal.ROUND_*``); ValueError when it is
    not finite or has more than 4,300 digits (Python's limit on integers from text)."""
    if not value.is_finite():
        raise ValueError(f"{name}() of {value} has no integer value")
    if value.adjusted() >= _MAX_INT_DIGITS:
        raise ValueError(f"{name}() would make an integer of more than {_MAX_INT_DIGITS} digits")
    return int(value.to_integral_value(rounding=rounding))


def absolute(x: Any) -> Any:
    return x.copy_abs() if isinstance(x, Decimal) else abs(x)


def rounded(x: Any, digits: Any) -> Any:
    """Python's ``round`` (half to even), exact for Decimals: ``round(2.675, 2)`` on the
    Decimal ``2.675`` is ``2.68``, where the float gives ``2.67``."""
    if not isinstance(x, Decimal):
        return round(x, digits)
    if digits is None:
        return integral("round", x, decimal.ROUND_HALF_EVEN)
    if digits.__class__ is not int:
        raise TypeError(f"round() digits must be an integer, not {_name(digits)}")
    if not -_MAX_INT_DIGITS <= digits <= MAX_DIGITS:
        raise ValueError(f"round() digits must be between -{_MAX_INT_DIGITS} and {MAX_DIGITS}")
    if not x.is_finite():
        return x
    # As Python's round() of a Decimal: the result has exactly ``digits`` decimal places.
    return _exact(
        lambda v, d: v.quantize(Decimal(1).scaleb(-d), context=_ROUND), x, digits, "round()"
    )


def total(values: list[Any]) -> Any:
    """The sum of numbers, exact when one of them is a Decimal."""
    if not any(isinstance(v, Decimal) for v in values):
        return sum(values)
    result: Any = 0
    for value in values:
        result = _exact(_EXACT.add, result, as_decimal(value), "sum()")
    return result
