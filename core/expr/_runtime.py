"""What compiled expressions call when they run: values as text, path lookups and the
null-aware operators, gathered in :data:`_RUNTIME`, the only globals they see."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

import orjson

from .. import jsonvalue
from . import _numeric

# -- values as text ------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def render_value(value: Any) -> str:
    """A value as a template renders it: ``null`` as ``''``, booleans as ``true``/``false``,
    objects and arrays as compact JSON, everything else with ``str()``."""
    if value.__class__ is str:
        return cast(str, value)
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (dict, list, tuple)):
        try:
            return orjson.dumps(value, _json_text, orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # integers beyond 64 bits
            return jsonvalue.dumps(value).decode()
    if isinstance(value, Decimal) and value.is_finite():
        return jsonvalue.dumps(value).decode()  # every digit and the scale: 1.10, 1E+400
    return str(value)


def _json_text(value: Any) -> Any:
    """orjson ``default`` for templates: numbers exact, anything else as its ``str()``."""
    return jsonvalue.default(value) if isinstance(value, Decimal) else str(value)


# -- runtime helpers the compiled code calls ------------------------------------------------------


def _key(obj: Any, key: Any) -> Any:
    """``obj[key]`` for an object (a dict subclass); ``None`` for anything else."""
    if isinstance(obj, dict):
        try:
            return obj.get(key)
        except TypeError:  # an unhashable key
            return None
    return None


def _item(obj: Any, key: Any) -> Any:
    """``obj[key]`` for an object or an array/string with an integer index; else ``None``."""
    if isinstance(obj, dict):
        try:
            return obj.get(key)
        except TypeError:
            return None
    if key.__class__ is int and isinstance(obj, (list, tuple, str)):
        try:
            return obj[key]
        except IndexError:
            return None
    return None


def _slice(obj: Any, lower: Any, upper: Any, step: Any) -> Any:
    """``obj[lower:upper:step]`` for an array or string; ``None`` otherwise."""
    if not isinstance(obj, (list, tuple, str)):
        return None
    for bound in (lower, upper, step):
        if bound is not None and bound.__class__ is not int:
            raise TypeError(f"slice bounds must be integers, not {_type_name(bound)}")
    if step == 0:
        raise ValueError("slice step cannot be zero")
    return obj[lower:upper:step]


def _in(needle: Any, haystack: Any) -> bool:
    """``needle in haystack``; false when ``haystack`` is ``null``."""
    if haystack is None:
        return False
    return needle in haystack


#: Longest string or array that ``*`` may build (a guard against ``'x' * 10**12``).
_MAX_REPEAT = 1_000_000


def _mul(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    for seq, count in ((a, b), (b, a)):
        if (
            isinstance(seq, (str, list, tuple))
            and isinstance(count, int)
            and len(seq) * count > _MAX_REPEAT
        ):
            raise ValueError(f"'*' would build a value longer than {_MAX_REPEAT}")
    return _numeric.mul(a, b)


def _mod(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if isinstance(a, (str, bytes)):
        raise TypeError("'%' is the numeric remainder; use concat() or a template for text")
    return _numeric.mod(a, b)


#: Globals every compiled expression sees. No ``__builtins__``: nothing but these exists.
_RUNTIME: dict[str, Any] = {
    "__builtins__": {},
    "_Exception": Exception,
    "_dict": dict,
    "_plain": frozenset((str, int, float)),
    "_key": _key,
    "_item": _item,
    "_slice": _slice,
    "_in": _in,
    "_mul": _mul,
    "_mod": _mod,
    "_text": render_value,
    "_Decimal": Decimal,
    # Numbers: int, float and Decimal together (see _numeric).
    "_add": _numeric.add,
    "_sub": _numeric.sub,
    "_div": _numeric.truediv,
    "_floordiv": _numeric.floordiv,
    "_neg": _numeric.neg,
    "_pos": _numeric.pos,
    "_eq": _numeric.eq,
    "_ne": _numeric.ne,
    "_lt": _numeric.lt,
    "_le": _numeric.le,
    "_gt": _numeric.gt,
    "_ge": _numeric.ge,
}
