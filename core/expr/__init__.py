"""The expression language of ``where``, ``when`` and templates.

Expressions are a small, safe subset of Python expression syntax. They are parsed once, checked
against a whitelist, translated into plain Python that calls a few helpers, and compiled once to
a function: a comparison such as ``data.total >= 10`` costs well under a microsecond per record.

Names
    ``data`` is the record's payload. ``id``, ``source``, ``type``, ``specversion``,
    ``subject``, ``time``, ``datacontenttype`` and ``dataschema`` are its CloudEvent context
    attributes. Any other bare name is an extension attribute (``partitionkey``); it is ``null``
    when the record does not have it. ``true``, ``false`` and ``null`` are aliases of ``True``,
    ``False`` and ``None``.

Paths
    ``data.customer.email``, ``data.items[0]``, ``data.items[-1]``, ``data['weird key']``,
    ``data.a[data.key]`` and slices ``data.items[1:3]``. A path only ever looks up keys of
    objects and indexes of arrays (never Python attributes). A missing key, an index out of
    range, or a path through a value that is not an object or array yields ``null``; it never
    fails.

Operators
    ``==  !=  <  <=  >  >=  in  not in`` (chains such as ``0 < data.x <= 10`` work),
    ``is null`` / ``is not null``, ``and  or  not``, ``+  -  *  /  //  %``, unary ``-`` and
    ``+``, ``a if cond else b``, and list, tuple, set and object literals.

Null semantics (SQL-like)
    An ordering comparison (``< <= > >=``) with ``null`` on either side is false; ``==`` and
    ``!=`` compare normally (``data.x == null`` is true when ``data.x`` is missing).
    ``x in null`` is false. Arithmetic with ``null`` gives ``null``. ``and``/``or``/``not`` use
    truthiness (``null``, ``0``, ``''``, ``[]`` and ``{}`` are false), so ``data.nick or
    data.name`` picks the first that is set. A predicate (``where``, ``when``) whose value is
    ``null`` is false.

Functions
    ``len(x)``               length of a string, array or object; ``null`` for ``null``.
    ``lower(s)``, ``upper(s)``, ``trim(s)``
                             case conversion and whitespace stripping; ``null`` for ``null``.
    ``startsWith(s, p)``, ``endsWith(s, p)``
                             whether string ``s`` starts/ends with ``p`` (a string, or an
                             array of strings: any of them); false for ``null``.
    ``contains(h, n)``       substring of a string, element of an array, or key of an object;
                             false when ``h`` is ``null``.
    ``matches(s, re)``       whether the regular expression ``re`` matches anywhere in ``s``
                             (anchor with ``^``/``$``); false for ``null``. A constant pattern
                             is compiled once, when the expression is.
    ``replace(s, old, new)`` every ``old`` in ``s`` replaced by ``new``; ``null`` for ``null``.
    ``substr(s, start[, end])``
                             the part of a string (or array) from ``start`` up to, not
                             including, ``end``; negative positions count from the end.
    ``int(x)``, ``float(x)`` numbers from numbers, booleans and numeric strings
                             (``int(3.9)`` is 3; ``int('3.9')`` is an error); ``null`` for null.
    ``str(x)``               ``x`` as text, as a template renders it (objects and arrays as
                             compact JSON, booleans as ``true``/``false``); ``null`` for null.
    ``bool(x)``              truthiness, except that the strings ``true/yes/on/1`` and
                             ``false/no/off/0/''`` (any case) are read as booleans.
    ``abs(x)``, ``round(x[, digits])``
                             absolute value; rounding half to even; ``null`` for ``null``.
    ``min(...)``, ``max(...)``
                             the least/greatest of the arguments, or of the one array given,
                             ignoring ``null``s; ``null`` when nothing is left.
    ``coalesce(a, b, ...)``  the first argument that is not ``null``.
    ``isNull(x)``            whether ``x`` is ``null``.
    ``now()``                the current time in seconds since the epoch (a float).
    ``concat(a, b, ...)``    the arguments as text, joined (``null`` adds nothing).

    Plugins add functions through the ``meshconnect_functions`` hook. Only these bare names can
    be called: no methods (``data.get('x')``), no keyword arguments.

Templates
    Literal text with ``{expression}`` placeholders, e.g. ``cdc.{data.database}.{data.table}``;
    ``{{`` and ``}}`` stand for literal braces. ``null`` renders as nothing, booleans as
    ``true``/``false``, objects and arrays as compact JSON.

Not allowed (rejected when the pipeline is validated)
    Names, attributes and constant keys starting with ``_``; attributes of anything but a path
    (``"x".upper``); calls of anything but the functions above; ``lambda``; comprehensions;
    ``*``/``**`` unpacking; ``:=``; f-strings; ``**`` (power), bit operators, ``await`` and
    ``yield``. Evaluation has no access to Python builtins.

Errors
    A bad expression raises :class:`ExpressionError` (a :class:`~meshconnect.errors.ConfigError`)
    with the 0-based ``column`` of the problem in the text. An expression that fails on a record
    (``'abc' < 1``, ``int('abc')``, division by zero) raises
    :class:`~meshconnect.errors.DataError` naming the expression and the cause.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import orjson

from .errors import ConfigError, DataError, PluginError
from .records import CONTEXT_ATTRIBUTES

if TYPE_CHECKING:
    from .records import Record

__all__ = [
    "BUILTIN_FUNCTIONS",
    "Compiler",
    "Expression",
    "ExpressionError",
    "Predicate",
    "Template",
    "render_value",
]

#: Longest expression or template text accepted (a guard against pathological input).
MAX_LENGTH = 10_000
#: Deepest nesting accepted (``a + b + c`` is two levels deep; ``data.a.b`` too).
MAX_DEPTH = 100


class ExpressionError(ConfigError):
    """An expression or template that cannot be compiled.

    ``message`` is the bare reason, ``text`` the whole expression (or template) text,
    ``column`` the 0-based offset in ``text`` where the problem is (``None`` if unknown) and
    ``field`` the option it came from (``"where"``). ``str()`` gives all of it in one line.
    """

    def __init__(
        self, message: str, *, text: str = "", column: int | None = None, field: str | None = None
    ) -> None:
        self.message = message
        self.text = text
        self.column = column
        self.field = field
        super().__init__(message)

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        at = f" at column {self.column}" if self.column is not None else ""
        return f"{where}{self.message} (in {self.text!r}{at})"


@runtime_checkable
class Expression(Protocol):
    """A compiled expression: call it with a record to get its value.

    It is a plain Python function (the fastest thing to call) that carries its source ``text``
    and the ``field`` it was compiled for. It raises DataError when evaluation fails.
    """

    text: str
    field: str | None

    def __call__(self, record: Record, /) -> Any: ...


@runtime_checkable
class Predicate(Protocol):
    """A compiled expression that returns ``True`` or ``False`` (``null`` counts as false)."""

    text: str
    field: str | None

    def __call__(self, record: Record, /) -> bool: ...


class Template:
    """A compiled template.

    ``render(record)`` returns the text. When the template has no placeholders,
    ``is_literal`` is true and ``literal`` holds the text (braces unescaped), so callers can
    skip rendering; otherwise ``literal`` is ``None``.
    """

    __slots__ = ("field", "literal", "render", "text")

    text: str
    field: str | None
    literal: str | None
    #: The compiled renderer: ``render(record) -> str``; raises DataError when it fails.
    render: Callable[[Record], str]

    def __init__(
        self,
        text: str,
        render: Callable[[Record], str],
        *,
        literal: str | None = None,
        field: str | None = None,
    ) -> None:
        self.text = text
        self.render = render
        self.literal = literal
        self.field = field

    @property
    def is_literal(self) -> bool:
        return self.literal is not None

    def __repr__(self) -> str:
        return f"Template({self.text!r})"


# -- values as text ------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
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
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    return str(value)


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
    return a * b


def _mod(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if isinstance(a, (str, bytes)):
        raise TypeError("'%' is the numeric remainder; use concat() or a template for text")
    return a % b


# -- built-in functions ---------------------------------------------------------------------------


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
}


# -- compile-time checking and translation ---------------------------------------------------------

_CONTEXT = frozenset(CONTEXT_ATTRIBUTES) | {"data"}
_ALIASES = {"true": True, "false": False, "null": None}
_CONSTANT_TYPES = (str, int, float, bool, type(None))

_REJECTED: dict[type[ast.AST], str] = {
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.Starred: "unpacking with '*' is not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.JoinedStr: "f-strings are not allowed (use a template or concat())",
    ast.FormattedValue: "f-strings are not allowed (use a template or concat())",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
    ast.Slice: "a slice is only allowed inside [...]",
}

_OPERATORS: dict[type[ast.AST], str] = {
    ast.Pow: "**",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.Invert: "~",
}

_ORDERING = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)

#: The shape of every compiled function. ``_BODY`` is replaced by the translated expression.
_SKELETON = (
    "def _compiled(_r):\n"
    "    try:\n"
    "        return _BODY\n"
    "    except _Exception as _e:\n"
    "        raise _fail(_e) from _e\n"
)


def _never_null(node: ast.expr) -> bool:
    """Whether a translated node can be known not to evaluate to ``None``."""
    if isinstance(node, ast.Constant):
        return node.value is not None
    return isinstance(node, ast.List | ast.Tuple | ast.Set | ast.Dict | ast.JoinedStr)


class _Translator:
    """Checks parsed expressions against the whitelist and translates them to helper calls.

    Only node types with a ``_visit_*`` method are accepted; anything else is an error. The
    generated code uses names starting with ``_`` (``_r`` is the record, ``_t0`` … are
    temporaries, ``_f_len`` … functions), which user text can never contain. One translator
    may translate several pieces (a template's placeholders) into one namespace.
    """

    def __init__(self, functions: Mapping[str, Callable[..., Any]]) -> None:
        self.functions = functions
        #: Globals the generated code needs besides the runtime helpers.
        self.namespace: dict[str, Any] = {}
        self._counter = 0
        self._depth = 0
        #: The text being translated and where it starts in the text the user wrote.
        self._source = ""
        self._offset = 0

    def translate(self, source: str, offset: int = 0) -> ast.expr:
        """Parse ``source`` (which starts at ``offset`` in the user's text) and translate it.

        ExpressionError columns are offsets in the user's text; the caller sets ``text``.
        """
        if not source.strip():
            raise ExpressionError("empty expression", text=source, column=offset)
        if len(source) > MAX_LENGTH:
            message = f"expression longer than {MAX_LENGTH} characters"
            raise ExpressionError(message, text=source, column=offset)
        # Line breaks count as spaces (a long expression may span lines in YAML); the text
        # stays the same length, so columns still match the user's text.
        flat = source.replace("\r", " ").replace("\n", " ")
        stripped = flat.lstrip()
        offset += len(flat) - len(stripped)
        try:
            tree = ast.parse(stripped, mode="eval")
        except SyntaxError as exc:
            raise _syntax_error(exc, stripped, offset) from None
        except (ValueError, MemoryError, RecursionError) as exc:
            message = str(exc) or "expression too complex"
            raise ExpressionError(message, text=source, column=None) from None
        self._source, self._offset = stripped, offset
        return self.visit(tree.body)

    # -- plumbing --

    def fail(self, message: str, node: ast.AST | None, *, tail: str = "") -> ExpressionError:
        """An error at ``node`` (at its last ``len(tail)`` characters when ``tail`` is given,
        e.g. the attribute name of ``data.__class__``)."""
        column = None
        col = getattr(node, "end_col_offset" if tail else "col_offset", None)
        if col is not None:
            line = self._source.encode("utf-8")
            column = self._offset + len(line[:col].decode("utf-8", "replace")) - len(tail)
        return ExpressionError(message, text=self._source, column=column)

    def temp(self) -> str:
        self._counter += 1
        return f"_t{self._counter}"

    def constant(self, value: Any) -> ast.expr:
        self._counter += 1
        name = f"_c{self._counter}"
        self.namespace[name] = value
        return ast.Name(name, ast.Load())

    def visit(self, node: ast.AST) -> ast.expr:
        method = getattr(self, f"_visit_{type(node).__name__}", None)
        if method is None:
            message = _REJECTED.get(type(node), f"{type(node).__name__} is not allowed")
            raise self.fail(message, node)
        if self._depth >= MAX_DEPTH:
            raise self.fail(f"expression nested more than {MAX_DEPTH} levels deep", node)
        self._depth += 1
        try:
            result: ast.expr = method(node)
        finally:
            self._depth -= 1
        return result

    def check_name(self, name: str, node: ast.AST, *, tail: bool = False) -> None:
        if name.startswith("_"):
            message = f"names starting with '_' are not allowed: {name!r}"
            raise self.fail(message, node, tail=name if tail else "")

    # -- leaves --

    def _visit_Constant(self, node: ast.Constant) -> ast.expr:
        if not isinstance(node.value, _CONSTANT_TYPES):
            raise self.fail(f"constants of type {type(node.value).__name__} are not allowed", node)
        return ast.Constant(node.value)

    def _visit_Name(self, node: ast.Name) -> ast.expr:
        name = node.id
        self.check_name(name, node)
        if name in _ALIASES:
            return ast.Constant(_ALIASES[name])
        record = ast.Name("_r", ast.Load())
        if name in _CONTEXT:
            return ast.Attribute(record, name, ast.Load())
        extensions = ast.Attribute(record, "extensions", ast.Load())
        get = ast.Attribute(extensions, "get", ast.Load())
        return ast.Call(get, [ast.Constant(name)], [])

    # -- paths --

    def _lookup(self, container: ast.expr, key: str) -> ast.expr:
        """``container.get(key)`` when it is a dict (inline fast path), else ``_key(...)``."""
        t = self.temp()
        assign = ast.NamedExpr(ast.Name(t, ast.Store()), container)
        is_dict = ast.Compare(
            ast.Attribute(assign, "__class__", ast.Load()),
            [ast.Is()],
            [ast.Name("_dict", ast.Load())],
        )
        fast = ast.Call(
            ast.Attribute(ast.Name(t, ast.Load()), "get", ast.Load()), [ast.Constant(key)], []
        )
        slow = ast.Call(
            ast.Name("_key", ast.Load()), [ast.Name(t, ast.Load()), ast.Constant(key)], []
        )
        return ast.IfExp(is_dict, fast, slow)

    def _visit_Attribute(self, node: ast.Attribute) -> ast.expr:
        self.check_name(node.attr, node, tail=True)
        if not isinstance(node.value, ast.Name | ast.Attribute | ast.Subscript):
            raise self.fail(
                f"'.{node.attr}' can only follow a path such as data.a.b, not an expression",
                node,
                tail=node.attr,
            )
        return self._lookup(self.visit(node.value), node.attr)

    def _visit_Subscript(self, node: ast.Subscript) -> ast.expr:
        container = self.visit(node.value)
        index = node.slice
        if isinstance(index, ast.Slice):
            parts = [
                self.visit(part) if part is not None else ast.Constant(None)
                for part in (index.lower, index.upper, index.step)
            ]
            return ast.Call(ast.Name("_slice", ast.Load()), [container, *parts], [])
        if isinstance(index, ast.Constant) and isinstance(index.value, str):
            self.check_name(index.value, index)
            return self._lookup(container, index.value)
        return ast.Call(ast.Name("_item", ast.Load()), [container, self.visit(index)], [])

    # -- operators --

    def _visit_BoolOp(self, node: ast.BoolOp) -> ast.expr:
        return ast.BoolOp(node.op, [self.visit(v) for v in node.values])

    def _visit_UnaryOp(self, node: ast.UnaryOp) -> ast.expr:
        if isinstance(node.op, ast.Not):
            return ast.UnaryOp(ast.Not(), self.visit(node.operand))
        if isinstance(node.op, ast.Invert):
            raise self.fail("operator '~' is not supported", node)
        operand = self.visit(node.operand)
        if isinstance(operand, ast.Constant) and isinstance(operand.value, int | float):
            value = -operand.value if isinstance(node.op, ast.USub) else +operand.value
            return ast.Constant(value)
        return self._null_guarded([operand], lambda a: ast.UnaryOp(node.op, a[0]))

    def _visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        op = node.op
        if type(op) in _OPERATORS:
            raise self.fail(f"operator '{_OPERATORS[type(op)]}' is not supported", node)
        left, right = self.visit(node.left), self.visit(node.right)
        if isinstance(op, ast.Mult):
            return ast.Call(ast.Name("_mul", ast.Load()), [left, right], [])
        if isinstance(op, ast.Mod):
            return ast.Call(ast.Name("_mod", ast.Load()), [left, right], [])
        return self._null_guarded([left, right], lambda a: ast.BinOp(a[0], op, a[1]))

    def _null_guarded(
        self, operands: list[ast.expr], build: Callable[[list[ast.expr]], ast.expr]
    ) -> ast.expr:
        """``None if any operand is None else build(operands)``, each evaluated once."""
        if any(isinstance(o, ast.Constant) and o.value is None for o in operands):
            return ast.Constant(None)
        refs: list[ast.expr] = []
        tests: list[ast.expr] = []
        for operand in operands:
            if _never_null(operand):
                refs.append(operand)
                continue
            t = self.temp()
            assign = ast.NamedExpr(ast.Name(t, ast.Store()), operand)
            tests.append(ast.Compare(assign, [ast.Is()], [ast.Constant(None)]))
            refs.append(ast.Name(t, ast.Load()))
        if not tests:
            return build(refs)
        test = tests[0] if len(tests) == 1 else ast.BoolOp(ast.Or(), tests)
        return ast.IfExp(test, ast.Constant(None), build(refs))

    def _visit_Compare(self, node: ast.Compare) -> ast.expr:
        operands = [self.visit(o) for o in (node.left, *node.comparators)]
        names: list[str | None] = [None if _never_null(o) else self.temp() for o in operands]
        assigned = [False] * len(operands)

        def use(i: int) -> ast.expr:
            """The operand: assigned to its temporary the first time, read after that."""
            name = names[i]
            if name is None:
                return operands[i]
            if assigned[i]:
                return ast.Name(name, ast.Load())
            assigned[i] = True
            return ast.NamedExpr(ast.Name(name, ast.Store()), operands[i])

        parts: list[ast.expr] = []
        for i, op in enumerate(node.ops):
            parts.append(self._comparison(node, op, i, operands, use))
        return parts[0] if len(parts) == 1 else ast.BoolOp(ast.And(), parts)

    def _comparison(
        self,
        node: ast.Compare,
        op: ast.cmpop,
        i: int,
        operands: list[ast.expr],
        use: Callable[[int], ast.expr],
    ) -> ast.expr:
        left, right = operands[i], operands[i + 1]
        if isinstance(op, ast.Eq | ast.NotEq):
            return ast.Compare(use(i), [op], [use(i + 1)])
        if isinstance(op, ast.Is | ast.IsNot):
            if not any(isinstance(o, ast.Constant) and o.value is None for o in (left, right)):
                raise self.fail("'is' and 'is not' only compare with null; use == or !=", node)
            return ast.Compare(use(i), [op], [use(i + 1)])
        if isinstance(op, ast.In | ast.NotIn):
            if _never_null(right):
                test: ast.expr = ast.Compare(use(i), [ast.In()], [use(i + 1)])
            else:
                test = ast.Call(ast.Name("_in", ast.Load()), [use(i), use(i + 1)], [])
            return ast.UnaryOp(ast.Not(), test) if isinstance(op, ast.NotIn) else test
        assert isinstance(op, _ORDERING)
        if any(isinstance(o, ast.Constant) and o.value is None for o in (left, right)):
            return ast.Constant(False)
        checks: list[ast.expr] = [
            ast.Compare(use(j), [ast.IsNot()], [ast.Constant(None)])
            for j in (i, i + 1)
            if not _never_null(operands[j])
        ]
        compare = ast.Compare(use(i), [op], [use(i + 1)])
        return ast.BoolOp(ast.And(), [*checks, compare]) if checks else compare

    def _visit_IfExp(self, node: ast.IfExp) -> ast.expr:
        return ast.IfExp(self.visit(node.test), self.visit(node.body), self.visit(node.orelse))

    # -- literals --

    def _visit_List(self, node: ast.List) -> ast.expr:
        return ast.List([self.visit(e) for e in node.elts], ast.Load())

    def _visit_Tuple(self, node: ast.Tuple) -> ast.expr:
        return ast.Tuple([self.visit(e) for e in node.elts], ast.Load())

    def _visit_Set(self, node: ast.Set) -> ast.expr:
        return ast.Set([self.visit(e) for e in node.elts])

    def _visit_Dict(self, node: ast.Dict) -> ast.expr:
        keys: list[ast.expr | None] = []
        for key in node.keys:
            if key is None:
                raise self.fail("unpacking with '**' is not allowed", node)
            keys.append(self.visit(key))
        return ast.Dict(keys, [self.visit(v) for v in node.values])

    # -- calls --

    def _visit_Call(self, node: ast.Call) -> ast.expr:
        allowed = ", ".join(sorted(self.functions, key=str.lower))
        func = node.func
        if not isinstance(func, ast.Name):
            if isinstance(func, ast.Attribute):
                self.check_name(func.attr, func, tail=True)
                raise self.fail(
                    f"method calls are not allowed ('.{func.attr}(...)'); calls are limited to "
                    f"the functions: {allowed}",
                    func,
                    tail=func.attr,
                )
            self.visit(func)  # reports what is wrong with it first (lambda, ...)
            raise self.fail(f"calls are limited to the functions: {allowed}", func)
        name = func.id
        self.check_name(name, func)
        function = self.functions.get(name)
        if function is None:
            raise self.fail(
                f"calls are limited to the functions: {allowed}; {name!r} is not one", func
            )
        if node.keywords:
            raise self.fail(f"keyword arguments are not supported (in {name}())", node)
        args = [self.visit(a) for a in node.args]
        self._check_arity(name, function, len(args), node)
        if (
            function is _fn_matches
            and len(args) == 2
            and isinstance(args[1], ast.Constant)
            and isinstance(args[1].value, str)
        ):
            try:
                args[1] = self.constant(_regex(args[1].value))
            except ValueError as exc:
                raise self.fail(str(exc), node.args[1]) from None
        alias = f"_f_{name}"
        self.namespace[alias] = function
        return ast.Call(ast.Name(alias, ast.Load()), args, [])

    def _check_arity(
        self, name: str, function: Callable[..., Any], count: int, node: ast.AST
    ) -> None:
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):  # a builtin without a signature: checked when called
            return
        try:
            signature.bind(*([None] * count))
        except TypeError as exc:
            raise self.fail(f"{name}(): {exc}", node) from None


def _evaluation_error(text: str, field: str | None, kind: str) -> Callable[[Exception], DataError]:
    where = f"{field}: " if field else ""

    def fail(exc: Exception) -> DataError:
        reason = str(exc) or type(exc).__name__
        return DataError(f"{where}{kind} {text!r} failed: {reason}")

    return fail


def _build(
    body: ast.expr, namespace: dict[str, Any], fail: Callable[[Exception], DataError], name: str
) -> Callable[[Record], Any]:
    """Wrap ``body`` in the skeleton function and compile it once."""
    module = ast.parse(_SKELETON)
    function = module.body[0]
    assert isinstance(function, ast.FunctionDef)
    try_block = function.body[0]
    assert isinstance(try_block, ast.Try)
    ret = try_block.body[0]
    assert isinstance(ret, ast.Return)
    ret.value = body
    for node in ast.walk(module):  # one line: positions are meaningless in generated code
        if "lineno" in node._attributes:
            node.lineno = node.end_lineno = 1  # type: ignore[attr-defined]
            node.col_offset = node.end_col_offset = 0  # type: ignore[attr-defined]
    code = compile(module, f"<{name}>", "exec")
    scope = {**_RUNTIME, **namespace, "_fail": fail}
    exec(code, scope)
    compiled: Callable[[Record], Any] = scope["_compiled"]
    compiled.__qualname__ = compiled.__name__ = name
    return compiled


class Compiler:
    """Compiles expressions, predicates and templates.

    ``functions`` are the expression functions plugins provide (the ``meshconnect_functions``
    hook), added to :data:`BUILTIN_FUNCTIONS`. A plugin may not redefine a built-in function,
    and function names must be identifiers that do not start with ``_``. Compiling is done once,
    at start; the results are plain functions, safe to share between threads and pipelines.
    """

    def __init__(self, functions: Mapping[str, Callable[..., Any]] | None = None) -> None:
        merged = dict(BUILTIN_FUNCTIONS)
        for name, function in (functions or {}).items():
            if not name.isidentifier() or name.startswith("_"):
                raise PluginError(f"expression function {name!r}: not a valid function name")
            if name in BUILTIN_FUNCTIONS and function is not BUILTIN_FUNCTIONS[name]:
                raise PluginError(f"expression function {name!r}: redefines a built-in function")
            if not callable(function):
                raise PluginError(f"expression function {name!r}: {function!r} is not callable")
            merged[name] = function
        self.functions: Mapping[str, Callable[..., Any]] = merged

    def expression(self, text: str, *, field: str | None = None) -> Expression:
        """Compile ``text``; ExpressionError (with ``field`` set) when it is not valid."""
        translator = _Translator(self.functions)
        body = _located(lambda: translator.translate(_need_text(text)), text, field)
        fail = _evaluation_error(text, field, "expression")
        return _attach(_build(body, translator.namespace, fail, "expression"), text, field)

    def predicate(self, text: str, *, field: str | None = None) -> Predicate:
        """Compile ``text`` as a condition: the function returns ``True`` or ``False``."""
        translator = _Translator(self.functions)
        body = _located(lambda: translator.translate(_need_text(text)), text, field)
        test = ast.IfExp(body, ast.Constant(True), ast.Constant(False))
        fail = _evaluation_error(text, field, "condition")
        function = _build(test, translator.namespace, fail, "predicate")
        return cast(Predicate, _attach(function, text, field))

    def template(self, text: str, *, field: str | None = None) -> Template:
        """Compile a template such as ``cdc.{data.database}.{data.table}``."""
        translator = _Translator(self.functions)
        body = _located(lambda: _template_body(translator, _need_text(text)), text, field)
        if isinstance(body, ast.Constant):
            literal = str(body.value)
            return Template(text, lambda record: literal, literal=literal, field=field)
        fail = _evaluation_error(text, field, "template")
        render = _build(body, translator.namespace, fail, "template")
        return Template(text, render, field=field)


def _need_text(text: Any) -> str:
    if not isinstance(text, str):
        raise ExpressionError(f"expected a string, not {_type_name(text)}", text=repr(text))
    return text


def _located(compile_: Callable[[], ast.expr], text: Any, field: str | None) -> ast.expr:
    """Run ``compile_``; an ExpressionError it raises gets the user's whole text and field."""
    try:
        return compile_()
    except ExpressionError as exc:
        exc.text = text if isinstance(text, str) else repr(text)
        exc.field = field
        raise


def _template_body(translator: _Translator, text: str) -> ast.expr:
    """The expression that renders ``text``: a constant for a literal, else an f-string."""
    values: list[ast.expr] = []
    for piece in _split_template(text):
        if isinstance(piece, str):
            values.append(ast.Constant(piece))
            continue
        start, inner = piece
        node = translator.translate(inner, start)
        if isinstance(node, ast.Constant):
            values.append(ast.Constant(render_value(node.value)))
            continue
        t = translator.temp()
        # Strings and numbers format natively in the f-string; other values through _text.
        is_plain = ast.Compare(
            ast.Attribute(ast.NamedExpr(ast.Name(t, ast.Store()), node), "__class__", ast.Load()),
            [ast.In()],
            [ast.Name("_plain", ast.Load())],
        )
        slow = ast.Call(ast.Name("_text", ast.Load()), [ast.Name(t, ast.Load())], [])
        values.append(ast.IfExp(is_plain, ast.Name(t, ast.Load()), slow))
    if all(isinstance(v, ast.Constant) for v in values):
        return ast.Constant("".join(str(cast(ast.Constant, v).value) for v in values))
    return ast.JoinedStr(
        [v if isinstance(v, ast.Constant) else ast.FormattedValue(v, -1, None) for v in values]
    )


def _syntax_error(exc: SyntaxError, text: str, offset: int) -> ExpressionError:
    """An ExpressionError for a SyntaxError in the one-line ``text`` (at ``offset``)."""
    # exc.offset is 1-based, in characters; 0 or None when the parser ran out of input.
    column = min(exc.offset - 1, len(text)) if exc.offset else len(text.rstrip())
    message = f"syntax error: {exc.msg}" if exc.msg else "syntax error"
    return ExpressionError(message, text=text, column=offset + column)


def _attach(function: Callable[[Record], Any], text: str, field: str | None) -> Expression:
    function.__dict__.update(text=text, field=field)
    return cast(Expression, function)


def _split_template(text: str) -> list[str | tuple[int, str]]:
    """Literal text (braces unescaped) and ``(start, expression)`` for each placeholder."""
    pieces: list[str | tuple[int, str]] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "{" and text.startswith("{{", i):
            literal.append("{")
            i += 2
        elif char == "}" and text.startswith("}}", i):
            literal.append("}")
            i += 2
        elif char == "}":
            raise ExpressionError(
                "single '}' in a template (write '}}' for a literal brace)",
                text=text,
                column=i,
            )
        elif char == "{":
            end = _placeholder_end(text, i + 1)
            if end is None:
                raise ExpressionError(
                    "'{' is never closed (write '{{' for a literal brace)",
                    text=text,
                    column=i,
                )
            if literal:
                pieces.append("".join(literal))
                literal = []
            pieces.append((i + 1, text[i + 1 : end]))
            i = end + 1
        else:
            literal.append(char)
            i += 1
    if literal:
        pieces.append("".join(literal))
    return pieces


def _placeholder_end(text: str, start: int) -> int | None:
    """Index of the ``}`` that closes the placeholder starting at ``start``, honouring
    brackets and string quotes inside it; ``None`` if there is none."""
    depth = 0
    quote: str | None = None
    i = start
    while i < len(text):
        char = text[i]
        if quote is not None:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            if char == "}" and depth == 0:
                return i
            depth -= 1
        i += 1
    return None
