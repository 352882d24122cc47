"""The budgets that keep one expression's evaluation bounded, whatever the record holds.

Records are untrusted input (docs/security.md): an expression may not build a value, or do
arithmetic, whose cost the record controls without limit. Every check lives here, as a small
function the runtime helpers and the built-in functions call *where a value is built*, never
on the common path (a comparison or a path lookup costs nothing extra):

* :data:`MAX_SIZE`: the size of every value an expression builds — a string by ``+``, ``*``,
  ``concat``, ``join``, ``replace``, ``replace_regex``, ``str`` or a template; an array by
  ``+`` or ``*``. The size of a value is the length of its text as a template renders it,
  counted without rendering it (:func:`measure`): characters of a string, about the digits of
  a number, the members of an array or object plus their sizes. Values taken from the record
  as they are, are not built, so they are not limited here.
* :data:`MAX_INT_DIGITS`: integers that ``*``, ``//`` and ``%`` take or make, and the integer
  that ``int``, ``floor``, ``ceil`` and ``round`` make from a decimal, have at most this many
  digits (Python's own limit on turning an integer into text). ``+`` and ``-`` are linear and
  take integers of any size.
* :data:`MAX_ROUND_DIGITS`: ``round(x, n)`` takes ``-MAX_ROUND_DIGITS <= n <= MAX_ROUND_DIGITS``.
* :data:`MAX_PATTERN`: a regular expression has at most this many characters; patterns run on
  RE2 (linear time in the text, memory capped by :data:`REGEX_MAX_MEMORY`, or for a pattern
  taken from a record by :data:`RECORD_REGEX_MAX_MEMORY`, :data:`RECORD_PATTERNS_KEPT` of
  them kept compiled).

A check that fails raises :class:`BudgetError` (a ``ValueError``): the compiled expression turns
it into a DataError naming the expression, so the record goes to the dead-letter topic with the
reason under ``tolerance: all``. :data:`MAX_SIZE` work takes well under a second per value on
one core, so no evaluation runs longer than the number of operators times that.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

#: Largest value (characters, or members plus their sizes) an expression may build.
MAX_SIZE = 1_000_000
#: Most decimal digits of an integer that ``*``, ``//``, ``%`` take or make.
MAX_INT_DIGITS = 4_300
#: ``round(x, n)``: the largest ``abs(n)``.
MAX_ROUND_DIGITS = 1_000
#: Longest regular expression (characters).
MAX_PATTERN = 2_000
#: Memory RE2 may use for one compiled pattern (bytes).
REGEX_MAX_MEMORY = 8 << 20
#: Memory RE2 may use for one pattern taken from a record (``record_patterns``), in bytes: such
#: patterns are kept compiled (:data:`RECORD_PATTERNS_KEPT` of them), and each keeps the DFA
#: states its matches built, up to two thirds of this. With the 8 MiB of a constant pattern,
#: records carrying 512 distinct patterns such as ``[ab]*a[ab]{40}c1`` held 1.6 GB.
RECORD_REGEX_MAX_MEMORY = 1 << 20
#: Patterns taken from records kept compiled, the most recently used (at most ~64 MiB).
RECORD_PATTERNS_KEPT = 64

# 4,300 decimal digits in bits (log2(10) = 3.3219...), rounded up.
_MAX_INT_BITS = 14_285


class BudgetError(ValueError):
    """An evaluation that would go past one of the documented budgets."""


def too_big(what: str, size: int | None = None) -> BudgetError:
    got = f" ({size:,})" if size is not None else ""
    return BudgetError(
        f"{what} would build a value larger than the expression budget of {MAX_SIZE:,}{got}"
    )


def measure(value: Any, limit: int = MAX_SIZE) -> int:
    """The size of ``value`` (see the module docstring), counting stops just past ``limit``.

    Iterative, so a deeply nested value cannot exhaust the stack; each member is counted each
    time it occurs (a value repeated by ``*`` renders each time).
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        cls = item.__class__
        if cls is str:
            total += len(item)
        elif cls is list or cls is tuple or isinstance(item, list | tuple):
            total += len(item) + 1
            if total <= limit:
                stack.extend(item)
        elif isinstance(item, dict):
            total += len(item) + 1
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif cls is int:
            total += item.bit_length() // 3 + 1  # about the digits, without making them
        else:
            total += 8  # null, booleans, floats, decimals (bounded text), other scalars
        if total > limit:
            return total
    return total


def check_built(what: str, size: int) -> None:
    """Refuse to build a value of ``size``."""
    if size > MAX_SIZE:
        raise too_big(what, size)


def check_int(what: str, *values: Any) -> None:
    """Integers that a super-linear operation takes stay within :data:`MAX_INT_DIGITS`."""
    for value in values:
        if value.__class__ is int and value.bit_length() > _MAX_INT_BITS:
            raise BudgetError(
                f"{what} takes integers of at most {MAX_INT_DIGITS:,} digits "
                f"(this one has about {value.bit_length() * 30103 // 100000 + 1:,})"
            )


def check_product(a: Any, b: Any) -> None:
    """``a * b`` of two integers makes at most :data:`MAX_INT_DIGITS` digits."""
    if a.bit_length() + b.bit_length() > _MAX_INT_BITS + 1:
        raise BudgetError(f"'*' would make an integer of more than {MAX_INT_DIGITS:,} digits")


def check_to_int(what: str, value: Any) -> None:
    """A decimal (or float) that becomes an integer has at most :data:`MAX_INT_DIGITS` digits."""
    if isinstance(value, Decimal) and value.is_finite() and value.adjusted() >= MAX_INT_DIGITS:
        raise BudgetError(
            f"{what} would make an integer of more than {MAX_INT_DIGITS:,} digits from {value:.3e}"
        )


def check_round_digits(digits: Any) -> None:
    """``round(x, digits)``: ``digits`` is an integer within :data:`MAX_ROUND_DIGITS`."""
    if digits is None:
        return
    if digits.__class__ is not int:
        raise TypeError("round() digits must be an integer")
    if not -MAX_ROUND_DIGITS <= digits <= MAX_ROUND_DIGITS:
        raise BudgetError(
            f"round() digits must be between {-MAX_ROUND_DIGITS:,} and {MAX_ROUND_DIGITS:,}, "
            f"not {digits:,}"
            if abs(digits).bit_length() < 64
            else f"round() digits must be between {-MAX_ROUND_DIGITS:,} and {MAX_ROUND_DIGITS:,}"
        )
