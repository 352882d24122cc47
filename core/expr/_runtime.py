"""What compiled expressions call when they run: values as text, path lookups and the
null-aware operators, gathered in :data:`_RUNTIME`, the only globals they see."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

import orjson

from .. import jsonvalue
from ..config.topics import base_topic
from . import _numeric
from ._budget import MAX_SIZE, check_built, check_int, check_product, measure, too_big

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


def bounded_text(value: Any) -> str:
    """:func:`render_value`, refusing (BudgetError) to render an array or object whose text
    would be larger than the expression budget; a string is returned as it is."""
    if value.__class__ is not str and isinstance(value, (dict, list, tuple)):
        size = measure(value)
        if size > MAX_SIZE:
            raise too_big("rendering an array or object", size)
    elif value.__class__ is int:
        check_int("rendering", value)
    return render_value(value)


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
    return _numeric.member(needle, haystack)


def _mul(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if a.__class__ is int and b.__class__ is int:
        check_product(a, b)
        return a * b
    for seq, count in ((a, b), (b, a)):
        if isinstance(seq, (str, list, tuple)) and isinstance(count, int) and count > 0:
            size = len(seq) if seq.__class__ is str else measure(seq)
            check_built("'*'", size * count)
    return _numeric.mul(a, b)


def _add(a: Any, b: Any) -> Any:
    """``a + b`` for what is not two plain numbers (those take the inline fast path): strings
    and arrays joined within the budget, a Decimal exactly (see _numeric)."""
    if isinstance(a, Decimal) or isinstance(b, Decimal):
        return _numeric.add(a, b)
    if isinstance(a, (str, list, tuple)) and a.__class__ is b.__class__:
        if a.__class__ is str:
            check_built("'+'", len(a) + len(b))
        else:
            check_built("'+'", measure(a) + measure(b))
    return a + b


def _mod(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if isinstance(a, (str, bytes)):
        raise TypeError("'%' is the numeric remainder; use concat() or a template for text")
    check_int("'%'", a, b)
    return _numeric.mod(a, b)


def _floordiv(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    check_int("'//'", a, b)
    return _numeric.floordiv(a, b)


def _sized(value: Any) -> Any:
    """A literal with computed members, within the budget."""
    size = measure(value)
    if size > MAX_SIZE:
        raise too_big("a literal", size)
    return value


def _text(value: Any) -> str:
    """A template placeholder's value as text (the non-string, non-number path)."""
    return bounded_text(value)


def _template_too_big() -> str:
    """What a template whose placeholders' texts add up past the budget evaluates to."""
    raise too_big("the template")


#: Globals every compiled expression sees. No ``__builtins__``: nothing but these exists.
_RUNTIME: dict[str, Any] = {
    "__builtins__": {},
    "_Exception": Exception,
    "_dict": dict,
    "_plain": frozenset((str, int, float)),
    "_key": _key,
    "_item": _item,
    "_slice": _slice,
    "_topic": base_topic,
    "_in": _in,
    "_mul": _mul,
    "_add": _add,
    "_mod": _mod,
    "_floordiv": _floordiv,
    # Numbers ``a + b`` may add inline; a Decimal takes _add (exact, see _numeric).
    "_num": frozenset((int, float, bool)),
    "_text": _text,
    "_template_too_big": _template_too_big,
    "_len": len,
    "_sized": _sized,
    "_str": str,
    "_Decimal": Decimal,
    # Numbers: int, float and Decimal together (see _numeric).
    "_sub": _numeric.sub,
    "_div": _numeric.truediv,
    "_neg": _numeric.neg,
    "_pos": _numeric.pos,
    "_eq": _numeric.eq,
    "_ne": _numeric.ne,
    "_lt": _numeric.lt,
    "_le": _numeric.le,
    "_gt": _numeric.gt,
    "_ge": _numeric.ge,
}
