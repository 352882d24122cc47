"""Templates: literal text with ``{expression}`` placeholders, compiled to one f-string."""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from ._budget import MAX_SIZE
from ._errors import ExpressionError
from ._runtime import render_value

if TYPE_CHECKING:
    from ..records import Record
    from ._translator import _Translator


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


def _template_body(translator: _Translator, text: str) -> ast.expr:
    """The expression that renders ``text``: a constant for a literal, else an f-string."""
    values: list[ast.expr] = []
    for piece in _split_template(text):
        if isinstance(piece, str):
            values.append(ast.Constant(piece))
            continue
        start, inner = piece
        if inner.startswith("time:"):
            node = _time_placeholder(translator, inner[5:], start)
        else:
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
    if sum(not isinstance(v, ast.Constant) for v in values) > 1:
        return _checked(values)
    return ast.JoinedStr(
        [v if isinstance(v, ast.Constant) else ast.FormattedValue(v, -1, None) for v in values]
    )


def _time_placeholder(translator: _Translator, fmt: str, start: int) -> ast.expr:
    """``{time:FORMAT}``: the record's ``time`` in UTC through ``strftime`` FORMAT, as in the
    connectors' templates (``{time:%Y/%m/%d}``); a record without ``time`` is a data error."""
    from .. import timefmt

    try:
        timefmt.check_format(fmt, parsing=False)
    except ValueError as exc:
        raise ExpressionError(f"{{time:...}}: {exc}", column=start) from None
    call = translator.translate(f"formatTime(time, {fmt!r})", start)
    translator.namespace["_need_time"] = _need_time
    return ast.Call(ast.Name("_need_time", ast.Load()), [call], [])


def _need_time(text: str | None) -> str:
    if text is None:
        from ..errors import DataError

        raise DataError("{time:...}: the record has no time attribute")
    return text


def _checked(values: list[ast.expr]) -> ast.expr:
    """Several placeholders: each is evaluated into its temporary first (a value that is not
    a string or number becomes its text there), the lengths of the strings are added up, and
    the f-string is built only when they are within the expression budget::

        f"{_t1}-{_t2}" if (pre1, pre2) and (len1 + len2) <= MAX else _template_too_big()

    A few operations per placeholder and no call for strings and numbers (numbers are not
    counted: an integer's text has at most 4,300 digits)."""
    pre: list[ast.expr] = []
    sizes: list[ast.expr] = []
    parts: list[ast.expr] = []
    for value in values:
        if isinstance(value, ast.Constant):
            parts.append(value)
            continue
        assert isinstance(value, ast.IfExp) and isinstance(value.body, ast.Name)
        name = value.body.id
        pre.append(
            ast.IfExp(
                value.test, value.body, ast.NamedExpr(ast.Name(name, ast.Store()), value.orelse)
            )
        )
        is_str = ast.Compare(
            ast.Attribute(ast.Name(name, ast.Load()), "__class__", ast.Load()),
            [ast.Is()],
            [ast.Name("_str", ast.Load())],
        )
        length = ast.Call(ast.Name("_len", ast.Load()), [ast.Name(name, ast.Load())], [])
        sizes.append(ast.IfExp(is_str, length, ast.Constant(0)))
        parts.append(ast.FormattedValue(ast.Name(name, ast.Load()), -1, None))
    total: ast.expr = sizes[0]
    for size in sizes[1:]:
        total = ast.BinOp(total, ast.Add(), size)
    fixed = sum(len(str(p.value)) for p in parts if isinstance(p, ast.Constant))
    within = ast.Compare(total, [ast.LtE()], [ast.Constant(MAX_SIZE - fixed)])
    test = ast.BoolOp(ast.And(), [ast.Tuple(pre, ast.Load()), within])
    over = ast.Call(ast.Name("_template_too_big", ast.Load()), [], [])
    return ast.IfExp(test, ast.JoinedStr(parts), over)


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


def template_pieces(text: str) -> list[str | tuple[int, str]]:
    """The pieces of template ``text`` in order: literal text (``{{``/``}}`` unescaped) as a
    ``str``, and each placeholder as ``(column, expression)``. ExpressionError when a brace
    is unbalanced. The scanner templates compile with, for callers that need the shape of a
    template (e.g. which topics a templated ``topic:`` can produce)."""
    return _split_template(text)


def sole_placeholder(text: str) -> str | None:
    """The expression of ``text`` when it is one ``{expression}`` and nothing else (``{a}{b}``
    and ``{{x}}`` are not), else ``None``: a caller can then keep the value's type."""
    if len(text) < 3 or text[0] != "{" or text.startswith(("{{", "{time:")):
        return None  # {time:FORMAT} is text: the template renders it
    return text[1:-1] if _placeholder_end(text, 1) == len(text) - 1 else None


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
