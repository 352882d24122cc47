"""The built-in functions every expression may call (documented in the package docstring)."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from ._runtime import _type_name, render_value


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
            return needle in haystack
        except TypeError:  # an unhashable needle is no key of an object
            return False
    raise TypeError(f"contains() needs a string, array or object, not {_type_name(haystack)}")


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None


def _fn_matches(s: Any, pattern: Any) -> bool:
    if s is None:
        return False
    if not isinstance(pattern, re.Pattern):
        pattern = _regex(_need_str("matches", pattern))
    return pattern.search(_need_str("matches", s)) is not None


def _fn_replace(s: Any, old: Any, new: Any) -> str | None:
    if s is None:
        return None
    text = _need_str("replace", s)
    return text.replace(_need_str("replace", old), _need_str("replace", new))


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
    if isinstance(x, (int, float, str)):
        return int(x)
    raise TypeError(f"int() needs a number or a string, not {_type_name(x)}")


def _fn_float(x: Any) -> float | None:
    if x is None:
        return None
    if isinstance(x, (int, float, str)):
        return float(x)
    raise TypeError(f"float() needs a number or a string, not {_type_name(x)}")


def _fn_str(x: Any) -> str | None:
    return None if x is None else render_value(x)


_TRUE_WORDS = frozenset(("true", "yes", "on", "1", "y", "t"))
_FALSE_WORDS = frozenset(("false", "no", "off", "0", "n", "f", ""))


def _fn_bool(x: Any) -> bool:
    if isinstance(x, str):
        word = x.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise ValueError(f"bool() cannot read {x!r} as a boolean")
    return bool(x)


def _fn_abs(x: Any) -> Any:
    return None if x is None else abs(x)


def _fn_round(x: Any, digits: Any = None) -> Any:
    if x is None:
        return None
    return round(x, digits)


def _candidates(args: tuple[Any, ...]) -> list[Any]:
    if len(args) == 1 and isinstance(args[0], list | tuple):
        args = tuple(args[0])
    return [a for a in args if a is not None]


def _fn_min(*args: Any) -> Any:
    values = _candidates(args)
    return min(values) if values else None


def _fn_max(*args: Any) -> Any:
    values = _candidates(args)
    return max(values) if values else None


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
    return "".join([render_value(a) for a in args])


#: The functions every expression may call, by name (see the module docstring).
BUILTIN_FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "abs": _fn_abs,
    "bool": _fn_bool,
    "coalesce": _fn_coalesce,
    "concat": _fn_concat,
    "contains": _fn_contains,
    "endsWith": _fn_endswith,
    "float": _fn_float,
    "int": _fn_int,
    "isNull": _fn_isnull,
    "len": _fn_len,
    "lower": _fn_lower,
    "matches": _fn_matches,
    "max": _fn_max,
    "min": _fn_min,
    "now": _fn_now,
    "replace": _fn_replace,
    "round": _fn_round,
    "startsWith": _fn_startswith,
    "str": _fn_str,
    "substr": _fn_substr,
    "trim": _fn_trim,
    "upper": _fn_upper,
}
