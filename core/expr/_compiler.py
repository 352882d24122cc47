"""The Compiler: translated expressions wrapped in a function skeleton and compiled once."""

from __future__ import annotations

import ast
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from ..errors import DataError, PluginError
from ._errors import ExpressionError
from ._functions import BUILTIN_FUNCTIONS
from ._runtime import _RUNTIME, _type_name
from ._templates import Template, _template_body
from ._translator import _Translator

if TYPE_CHECKING:
    from ..records import Record


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


#: The shape of every compiled function. ``_BODY`` is replaced by the translated expression.
_SKELETON = (
    "def _compiled(_r):\n"
    "    try:\n"
    "        return _BODY\n"
    "    except _Exception as _e:\n"
    "        raise _fail(_e) from _e\n"
)
#: A predicate and what follows from it in one function (a transform step: one Python call
#: per record instead of two or three). Only the condition is inside the ``try``: an error of
#: ``_apply`` (the guarded transform) stays that transform's error.
_FILTER_SKELETON = (
    "def _compiled(_r):\n"
    "    try:\n"
    "        return _r if _BODY else None\n"
    "    except _Exception as _e:\n"
    "        raise _fail(_e) from _e\n"
)
_GUARD_SKELETON = (
    "def _compiled(_r):\n"
    "    try:\n"
    "        _test = _BODY\n"
    "    except _Exception as _e:\n"
    "        raise _fail(_e) from _e\n"
    "    return _apply(_r) if _test else _r\n"
)


def _evaluation_error(
    text: str, field: str | None, kind: str, redact: Callable[[str], str] | None = None
) -> Callable[[Exception], DataError]:
    where = f"{field}: " if field else ""

    def fail(exc: Exception) -> DataError:
        reason = str(exc) or type(exc).__name__
        message = f"{where}{kind} {text!r} failed: {reason}"
        return DataError(redact(message) if redact is not None else message)

    return fail


def _build(
    body: ast.expr,
    namespace: dict[str, Any],
    fail: Callable[[Exception], DataError],
    name: str,
    skeleton: str = _SKELETON,
) -> Callable[[Record], Any]:
    """Put ``body`` in place of ``_BODY`` in ``skeleton`` and compile the function once."""
    module = ast.parse(skeleton)
    function = module.body[0]
    assert isinstance(function, ast.FunctionDef)

    class Fill(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.expr:
            return body if node.id == "_BODY" else node

    module = Fill().visit(module)
    for node in ast.walk(module):  # one line: positions are meaningless in generated code
        if "lineno" in node._attributes:
            node.lineno = node.end_lineno = 1  # type: ignore[attr-defined]
            node.col_offset = node.end_col_offset = 0  # type: ignore[attr-defined]
    with warnings.catch_warnings():  # ("x" is None): checked by the translator, not Python
        warnings.simplefilter("ignore", SyntaxWarning)
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

    ``record_patterns``: whether ``matches`` and ``replace_regex`` may take their pattern from
    the record (an expression) instead of a constant string; off unless a pipeline file says
    ``expressions: {record_patterns: true}``. ``redact``, when given, is applied to every
    message an evaluation failure carries (the loader masks interpolated secrets with it).
    """

    def __init__(
        self,
        functions: Mapping[str, Callable[..., Any]] | None = None,
        *,
        record_patterns: bool = False,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.record_patterns = record_patterns
        self.redact = redact
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
        translator = _Translator(self.functions, record_patterns=self.record_patterns)
        body = _located(lambda: translator.translate(_need_text(text)), text, field)
        fail = _evaluation_error(text, field, "expression", self.redact)
        return _attach(_build(body, translator.namespace, fail, "expression"), text, field)

    def predicate(self, text: str, *, field: str | None = None) -> Predicate:
        """Compile ``text`` as a condition: the function returns ``True`` or ``False``.

        It also has ``as_filter()``, the function ``record if condition else None``, and
        ``guard(apply)``, the function ``apply(record) if condition else record``: one call
        per record for a ``filter`` step and a step with ``when`` (the condition's errors are
        reported as the condition's, ``apply``'s as they are)."""
        translator = _Translator(self.functions, record_patterns=self.record_patterns)
        body = _located(lambda: translator.translate(_need_text(text)), text, field)
        test = ast.IfExp(body, ast.Constant(True), ast.Constant(False))
        fail = _evaluation_error(text, field, "condition", self.redact)
        namespace = translator.namespace
        function = _build(test, namespace, fail, "predicate")

        def as_filter() -> Callable[[Record], Any]:
            return _build(body, namespace, fail, "filter", _FILTER_SKELETON)

        def guard(apply: Callable[[Record], Any]) -> Callable[[Record], Any]:
            return _build(body, {**namespace, "_apply": apply}, fail, "when", _GUARD_SKELETON)

        function.__dict__.update(as_filter=as_filter, guard=guard)
        return cast(Predicate, _attach(function, text, field))

    def template(self, text: str, *, field: str | None = None) -> Template:
        """Compile a template such as ``cdc.{data.database}.{data.table}``."""
        translator = _Translator(self.functions, record_patterns=self.record_patterns)
        body = _located(lambda: _template_body(translator, _need_text(text)), text, field)
        if isinstance(body, ast.Constant):
            literal = str(body.value)
            return Template(text, lambda record: literal, literal=literal, field=field)
        fail = _evaluation_error(text, field, "template", self.redact)
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


def _attach(function: Callable[[Record], Any], text: str, field: str | None) -> Expression:
    function.__dict__.update(text=text, field=field)
    return cast(Expression, function)
