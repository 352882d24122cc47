"""The built-in functions every expression may call (documented in the package docstring)."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from .. import numparse, timefmt
from ..booleans import parse_bool
from . import _numeric, _regex
from ._budget import (
    MAX_SIZE,
    BudgetError,
    check_built,
    check_round_digits,
    check_to_int,
    measure,
    too_big,
)
from ._runtime import _type_name, bounded_text, render_value

#: A word of ``split()`` without a separator (what ``str.split`` splits on).
_WORD = re.compile(r"\S+")


def _need_str(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(f"{name}() needs a string, not {_type_name(value)}")


def _fn_len(x: Any) -> int | None:
    if x is None:
        return None
    if isinstance(x, (str, list, tuple, dict, bytes)):
        return len(x)
    raise TypeError(f"len() needs a string, array or object, not {_type_name(x)}")


def _fn_lower(s: Any) -> str | None:
    return None if s is None else _need_str("lower", s).lower()


def _fn_upper(s: Any) -> str | None:
    return None if s is None else _need_str("upper", s).upper()


def _fn_trim(s: Any) -> str | None:
    return None if s is None else _need_str("trim", s).strip()


def _affixes(name: str, value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TypeError(f"{name}() needs a string or an array of strings, not {_type_name(value)}")


def _fn_startswith(s: Any, prefix: Any) -> bool:
    if s is None:
        return False
    return _need_str("startsWith", s).startswith(_affixes("startsWith", prefix))


def _fn_endswith(s: Any, suffix: Any) -> bool:
    if s is None:
        return False
    return _need_str("endsWith", s).endswith(_affixes("endsWith", suffix))


def _fn_contains(haystack: Any, needle: Any) -> bool:
    if haystack is None:
        return False
    if isinstance(haystack, str):
        return _need_str("contains", needle) in haystack
    if isinstance(haystack, (list, tuple, dict)):
        try:
            return _numeric.member(needle, haystack)
        except TypeError:  # an unhashable needle is no key of an object
            return False
    raise TypeError(f"contains() needs a string, array or object, not {_type_name(haystack)}")


def _fn_matches(s: Any, pattern: Any) -> bool:
    if s is None:
        return False
    if pattern.__class__ is str:  # a constant pattern arrives compiled (see _translator)
        pattern = _regex.record_pattern(pattern)
    elif not isinstance(pattern, _regex.re2._Regexp):
        raise TypeError(f"matches() needs a string pattern, not {_type_name(pattern)}")
    return _regex.search(pattern, _need_str("matches", s))


def _fn_replace_regex(s: Any, pattern: Any, replacement: Any) -> str | None:
    if s is None:
        return None
    text = _need_str("replace_regex", s)
    if pattern.__class__ is str:  # taken from the record
        pattern = _regex.record_pattern(pattern)
    elif not isinstance(pattern, _regex.re2._Regexp):
        raise TypeError(f"replace_regex() needs a string pattern, not {_type_name(pattern)}")
    if replacement.__class__ is not _regex.Replacement:
        replacement = _regex.replacement_for(pattern, _need_str("replace_regex", replacement))
    return _regex.replace(pattern, text, replacement)


def _fn_replace(s: Any, old: Any, new: Any) -> str | None:
    if s is None:
        return None
    text = _need_str("replace", s)
    old, new = _need_str("replace", old), _need_str("replace", new)
    if len(new) > len(old):
        count = text.count(old) if old else len(text) + 1
        check_built("replace()", len(text) + count * (len(new) - len(old)))
    return text.replace(old, new)


def _fn_substr(s: Any, start: Any, end: Any = None) -> Any:
    if s is None:
        return None
    if not isinstance(s, (str, list, tuple)):
        raise TypeError(f"substr() needs a string or array, not {_type_name(s)}")
    for bound in (start, end):
        if bound is not None and bound.__class__ is not int:
            raise TypeError(f"substr() positions must be integers, not {_type_name(bound)}")
    return s[start:end]


def _fn_int(x: Any) -> int | None:
    if x is None:
        return None
    check_to_int("int()", x)
    if isinstance(x, (int, float, str, Decimal)):
        return numparse.to_int(x)  # the one number grammar, shared with `cast`
    raise TypeError(f"int() needs a number or a string, not {_type_name(x)}")


def _fn_float(x: Any) -> float | None:
    if x is None:
        return None
    if isinstance(x, (int, float, str, Decimal)):
        return numparse.to_float(x)
    raise TypeError(f"float() needs a number or a string, not {_type_name(x)}")


def _fn_str(x: Any) -> str | None:
    return None if x is None else bounded_text(x)


def _fn_bool(x: Any) -> bool:
    if isinstance(x, str):
        value = parse_bool(x)  # the one reading of text as a boolean (cast: bool too)
        if value is None:
            raise ValueError(f"bool() cannot read {timefmt.shown(x)} as a boolean")
        return value
    return bool(x)


def _fn_abs(x: Any) -> Any:
    return None if x is None else _numeric.absolute(x)


def _fn_round(x: Any, digits: Any = None) -> Any:
    if x is None:
        return None
    check_round_digits(digits)
    if digits is None:
        check_to_int("round()", x)
    return _numeric.rounded(x, digits)


def _candidates(args: tuple[Any, ...]) -> list[Any]:
    if len(args) == 1 and isinstance(args[0], list | tuple):
        args = tuple(args[0])
    return [a for a in args if a is not None]


def _comparable(values: list[Any]) -> list[Any]:
    """Floats as the Decimals of their shortest text when Decimals are among ``values``."""
    if any(isinstance(v, Decimal) for v in values):
        return [_numeric.as_decimal(v) if v.__class__ is float else v for v in values]
    return values


def _fn_min(*args: Any) -> Any:
    values = _candidates(args)
    if not values:
        return None
    index = min(range(len(values)), key=_comparable(values).__getitem__)
    return values[index]


def _fn_max(*args: Any) -> Any:
    values = _candidates(args)
    if not values:
        return None
    index = max(range(len(values)), key=_comparable(values).__getitem__)
    return values[index]


def _fn_coalesce(*args: Any) -> Any:
    for arg in args:
        if arg is not None:
            return arg
    return None


def _fn_isnull(x: Any) -> bool:
    return x is None


def _fn_now() -> float:
    return time.time()


def _fn_concat(*args: Any) -> str:
    parts = [bounded_text(a) for a in args]
    check_built("concat()", sum(len(p) for p in parts))
    return "".join(parts)


def _need_number(name: str, value: Any) -> int | float | Decimal:
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return value
    raise TypeError(f"{name}() needs a number, not {_type_name(value)}")


def _fn_floor(x: Any) -> int | None:
    if x is None:
        return None
    check_to_int("floor()", x)
    if isinstance(x, Decimal):
        return _numeric.integral("floor", x, decimal.ROUND_FLOOR)
    return math.floor(_need_number("floor", x))


def _fn_ceil(x: Any) -> int | None:
    if x is None:
        return None
    check_to_int("ceil()", x)
    if isinstance(x, Decimal):
        return _numeric.integral("ceil", x, decimal.ROUND_CEILING)
    return math.ceil(_need_number("ceil", x))


def _fn_sum(*args: Any) -> Any:
    values = _candidates(args)
    for value in values:
        _need_number("sum", value)
    return _numeric.total(values)


def _fn_split(s: Any, separator: Any = None) -> list[str] | None:
    if s is None:
        return None
    text = _need_str("split", s)
    if separator is None:
        if 2 * len(text) + 1 > MAX_SIZE:  # count the words before making them
            words = chars = 0
            for word in _WORD.finditer(text):
                words += 1
                chars += word.end() - word.start()
            check_built("split()", 1 + words + chars)
        return text.split()
    separator = _need_str("split", separator)
    if not separator:
        raise ValueError("split() separator cannot be empty")
    if 2 * len(text) + 1 > MAX_SIZE:  # the most a split of ``text`` can measure
        pieces = text.count(separator) + 1
        check_built("split()", 1 + pieces + len(text) - (pieces - 1) * len(separator))
    return text.split(separator)


def _fn_join(items: Any, separator: Any = "") -> str | None:
    if items is None:
        return None
    if not isinstance(items, list | tuple):
        raise TypeError(f"join() needs an array, not {_type_name(items)}")
    separator = _need_str("join", separator)
    if measure(items) + len(separator) * len(items) > MAX_SIZE:
        raise too_big("join()")
    return separator.join([render_value(item) for item in items])


def _fn_indexof(s: Any, sub: Any) -> int | None:
    if s is None:
        return None
    if isinstance(s, list | tuple):
        return _numeric.index(s, sub)
    return _need_str("indexOf", s).find(_need_str("indexOf", sub))


def _pad(name: str, s: Any, width: Any, fill: Any, left: bool) -> str | None:
    if s is None:
        return None
    text = render_value(s)
    if width.__class__ is not int:
        raise TypeError(f"{name}() width must be an integer, not {_type_name(width)}")
    if width > _MAX_PAD:
        raise ValueError(f"{name}() width is limited to {_MAX_PAD}")
    fill = _need_str(name, fill)
    if len(fill) != 1:
        raise ValueError(f"{name}() fill must be one character, not {timefmt.shown(fill)}")
    return text.rjust(width, fill) if left else text.ljust(width, fill)


_MAX_PAD = 10_000


def _fn_padleft(s: Any, width: Any, fill: Any = " ") -> str | None:
    return _pad("padLeft", s, width, fill, left=True)


def _fn_padright(s: Any, width: Any, fill: Any = " ") -> str | None:
    return _pad("padRight", s, width, fill, left=False)


def _fn_isempty(x: Any) -> bool:
    return x is None or (isinstance(x, str | list | tuple | dict) and len(x) == 0)


# -- time ----------------------------------------------------------------------------------------


def _moment(name: str, value: Any, fmt: Any = None, zone: Any = None) -> dt.datetime:
    """An aware datetime from epoch seconds, ISO 8601 text or text in ``fmt`` (a time without
    an offset is in ``zone``, UTC by default); see :mod:`meshconnect.timefmt`."""
    tz = timefmt.zone(_need_str(name, zone)) if zone is not None else dt.UTC
    if fmt is None:
        fmt = "iso" if isinstance(value, str) else "epoch_s"
    else:
        fmt = timefmt.check_format(_need_str(name, fmt))
    return timefmt.parse_time(value, fmt, tz=tz)


def _fn_parsetime(value: Any, fmt: Any = None, zone: Any = None) -> float | None:
    if value is None:
        return None
    return _moment("parseTime", value, fmt, zone).timestamp()


#: The most characters one strftime directive of two characters writes (``%c``: 24).
_MOST_PER_DIRECTIVE = 24


def _writing_format(fmt: Any) -> str:
    return timefmt.check_format(_need_str("formatTime", fmt), parsing=False)


def _fn_formattime(value: Any, fmt: Any = None, zone: Any = None) -> Any:
    if value is None:
        return None
    tz = timefmt.zone(_need_str("formatTime", zone)) if zone is not None else dt.UTC
    fmt = "iso" if fmt is None else _writing_format(fmt)
    if len(fmt) * _MOST_PER_DIRECTIVE // 2 > MAX_SIZE:  # a format taken from the record
        raise BudgetError(
            f"formatTime() format of {len(fmt):,} characters could build a value larger than "
            f"the expression budget of {MAX_SIZE:,} (at most "
            f"{MAX_SIZE * 2 // _MOST_PER_DIRECTIVE:,} characters)"
        )
    return timefmt.format_time(_moment("formatTime", value), fmt, tz=tz)


#: The functions every expression may call, by name (see the module docstring).
BUILTIN_FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "abs": _fn_abs,
    "bool": _fn_bool,
    "ceil": _fn_ceil,
    "coalesce": _fn_coalesce,
    "concat": _fn_concat,
    "contains": _fn_contains,
    "endsWith": _fn_endswith,
    "float": _fn_float,
    "floor": _fn_floor,
    "formatTime": _fn_formattime,
    "indexOf": _fn_indexof,
    "int": _fn_int,
    "isEmpty": _fn_isempty,
    "isNull": _fn_isnull,
    "join": _fn_join,
    "len": _fn_len,
    "lower": _fn_lower,
    "matches": _fn_matches,
    "max": _fn_max,
    "min": _fn_min,
    "now": _fn_now,
    "padLeft": _fn_padleft,
    "padRight": _fn_padright,
    "parseTime": _fn_parsetime,
    "replace": _fn_replace,
    "replace_regex": _fn_replace_regex,
    "round": _fn_round,
    "split": _fn_split,
    "startsWith": _fn_startswith,
    "str": _fn_str,
    "substr": _fn_substr,
    "sum": _fn_sum,
    "trim": _fn_trim,
    "upper": _fn_upper,
}
