"""Compile-time checking and translation: an expression's text is parsed, checked against
the whitelist and translated into a Python AST that calls the runtime helpers."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from ..records import CONTEXT_ATTRIBUTES
from . import _regex
from ._errors import ExpressionError
from ._functions import _fn_matches, _fn_replace_regex

#: Longest expression or template text accepted (a guard against pathological input).
MAX_LENGTH = 10_000
#: Deepest nesting accepted (``a + b + c`` is two levels deep; ``data.a.b`` too).
MAX_DEPTH = 100

#: Names read from the record itself: the payload, the context attributes and the mesh topic.
_CONTEXT = frozenset(CONTEXT_ATTRIBUTES) | {"data", "topic"}
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


def is_special_name(key: str) -> bool:
    """A Python special name (``__class__``, ``__globals__``): the only quoted keys that
    expressions and field paths refuse. Other keys that start with ``_`` (``_id``,
    Debezium's ``__deleted``) are only ever looked up in an object."""
    return key.startswith("__") and key.endswith("__")


def _never_null(node: ast.expr) -> bool:
    """Whether a translated node can be known not to evaluate to ``None``."""
    if isinstance(node, ast.Constant):
        return node.value is not None
    if isinstance(node, ast.Name) and node.id.startswith("_c"):
        return True  # a constant bound by name (a Decimal literal, a compiled regex)
    return isinstance(node, ast.List | ast.Tuple | ast.Set | ast.Dict | ast.JoinedStr)


_HELPERS: dict[type[ast.AST], str] = {
    ast.Add: "_add",
    ast.Sub: "_sub",
    ast.Div: "_div",
    ast.FloorDiv: "_floordiv",
    ast.Eq: "_eq",
    ast.NotEq: "_ne",
    ast.Lt: "_lt",
    ast.LtE: "_le",
    ast.Gt: "_gt",
    ast.GtE: "_ge",
}


class _Translator:
    """Checks parsed expressions against the whitelist and translates them to helper calls.

    Only node types with a ``_visit_*`` method are accepted; anything else is an error. The
    generated code uses names starting with ``_`` (``_r`` is the record, ``_t0`` … are
    temporaries, ``_f_len`` … functions), which user text can never contain. One translator
    may translate several pieces (a template's placeholders) into one namespace.
    """

    def __init__(
        self, functions: Mapping[str, Callable[..., Any]], *, record_patterns: bool = False
    ) -> None:
        self.functions = functions
        #: Whether a regular expression may come from the record (not only a constant).
        self.record_patterns = record_patterns
        #: Globals the generated code needs besides the runtime helpers.
        self.namespace: dict[str, Any] = {}
        self._counter = 0
        self._depth = 0
        #: Names of the Decimal literals in ``namespace`` (see :meth:`decimal`).
        self.decimals: dict[str, Decimal] = {}
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
        if isinstance(node.value, float):
            return self.decimal(self._literal_decimal(node))
        return ast.Constant(node.value)

    def _literal_decimal(self, node: ast.Constant) -> Decimal:
        """A number with a fraction or exponent as the Decimal of the text written (as JSON
        numbers in data are), not the nearest binary float."""
        line = self._source.encode("utf-8")
        start, end = node.col_offset, node.end_col_offset
        text = line[start:end].decode("utf-8", "replace") if end is not None else ""
        try:
            return Decimal(text.replace("_", ""))
        except InvalidOperation:  # not expected: ast read it as a float
            return Decimal(repr(node.value))

    def decimal(self, value: Decimal) -> ast.expr:
        """A Decimal literal: a name bound to ``value`` (the AST holds no Decimal constants)."""
        name = self.constant(value)
        assert isinstance(name, ast.Name)
        self.decimals[name.id] = value
        return name

    def _visit_Name(self, node: ast.Name) -> ast.expr:
        name = node.id
        self.check_name(name, node)
        if name in _ALIASES:
            return ast.Constant(_ALIASES[name])
        record = ast.Name("_r", ast.Load())
        if name == "topic":  # without its partition (docs/scaleout.md#partitions)
            attribute = ast.Attribute(record, name, ast.Load())
            return ast.Call(ast.Name("_topic", ast.Load()), [attribute], [])
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
            # A quoted key is only ever looked up in an object, so '_id' and Debezium's
            # '__deleted' are safe; special names ('__class__') stay refused all the same, as
            # a second line of defence.
            if is_special_name(index.value):
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
        minus = isinstance(node.op, ast.USub)
        if isinstance(operand, ast.Constant) and isinstance(operand.value, int | float):
            return ast.Constant(-operand.value if minus else +operand.value)
        if isinstance(operand, ast.Name) and operand.id in self.decimals:
            value = self.decimals[operand.id]
            return self.decimal(value.copy_negate() if minus else value)
        helper = "_neg" if minus else "_pos"
        return self._null_guarded(
            [operand], lambda a: ast.Call(ast.Name(helper, ast.Load()), [a[0]], [])
        )

    def _visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        op = node.op
        if type(op) in _OPERATORS:
            symbol = _OPERATORS[type(op)]
            # at the operator itself, not at the left operand where the node starts
            marker: ast.AST = ast.Pass()
            start = getattr(node.left, "end_col_offset", None)
            if start is not None:
                found = self._source.encode("utf-8").find(symbol.encode(), start)
                marker.col_offset = found if found >= 0 else node.col_offset  # type: ignore[attr-defined]
            else:
                marker = node
            instead = {"&": "and", "|": "or"}.get(symbol)
            if instead:
                raise self.fail(f"'{symbol}' is not an operator here: use '{instead}'", marker)
            raise self.fail(f"operator '{symbol}' is not supported", marker)
        left, right = self.visit(node.left), self.visit(node.right)
        if isinstance(op, ast.Mult):
            return ast.Call(ast.Name("_mul", ast.Load()), [left, right], [])
        if isinstance(op, ast.Mod):
            return ast.Call(ast.Name("_mod", ast.Load()), [left, right], [])
        if isinstance(op, ast.FloorDiv):
            return ast.Call(ast.Name("_floordiv", ast.Load()), [left, right], [])
        if isinstance(op, ast.Add):
            return self._null_guarded([left, right], _addition)
        helper = _HELPERS[type(op)]  # - /: int, float and Decimal together
        return self._null_guarded(
            [left, right], lambda a: ast.Call(ast.Name(helper, ast.Load()), [a[0], a[1]], [])
        )

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
            if self._numeric_mix(left, right):
                return ast.Call(ast.Name(_HELPERS[type(op)], ast.Load()), [use(i), use(i + 1)], [])
            return self._compare(op, i, operands, use)
        if isinstance(op, ast.Is | ast.IsNot):
            if not any(isinstance(o, ast.Constant) and o.value is None for o in (left, right)):
                raise self.fail("'is' and 'is not' only compare with null; use == or !=", node)
            return ast.Compare(use(i), [op], [use(i + 1)])
        if isinstance(op, ast.In | ast.NotIn):
            if _plain_members(right) or (
                _never_null(right)
                and isinstance(left, ast.Constant)
                and isinstance(left.value, str)
            ):  # Python's own `in` is exact here (and fast)
                test: ast.expr = ast.Compare(use(i), [ast.In()], [use(i + 1)])
            else:  # null-safe, and a float meets a Decimal element as its text (_numeric.same)
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
        if self._numeric_mix(left, right):
            helper = ast.Name(_HELPERS[type(op)], ast.Load())
            compare: ast.expr = ast.Call(helper, [use(i), use(i + 1)], [])
        else:
            compare = self._compare(op, i, operands, use)
        return ast.BoolOp(ast.And(), [*checks, compare]) if checks else compare

    def _compare(
        self, op: ast.cmpop, i: int, operands: list[ast.expr], use: Callable[[int], ast.expr]
    ) -> ast.expr:
        """``a op b`` natively; against an int constant, a Decimal meets the constant as a
        Decimal made once (comparing a Decimal with an int converts the int every time: twice
        the cost of ``data.total >= 10`` on a JSON number with a fraction)."""
        left, right = operands[i], operands[i + 1]
        for const, other in ((right, i), (left, i + 1)):
            if (
                isinstance(const, ast.Constant)
                and const.value.__class__ is int
                and not isinstance(operands[other], ast.Constant)
            ):
                as_decimal = self.constant(Decimal(const.value))
                first = use(other)  # evaluated (and assigned) once, in the test
                ref: ast.expr = first
                if isinstance(first, ast.NamedExpr):
                    assert isinstance(first.target, ast.Name)
                    ref = ast.Name(first.target.id, ast.Load())
                is_decimal = ast.Compare(
                    ast.Attribute(first, "__class__", ast.Load()),
                    [ast.Is()],
                    [ast.Name("_Decimal", ast.Load())],
                )
                pair = (ref, as_decimal) if const is right else (as_decimal, ref)
                plain = (ref, const) if const is right else (const, ref)
                return ast.IfExp(
                    is_decimal,
                    ast.Compare(pair[0], [op], [pair[1]]),
                    ast.Compare(plain[0], [op], [plain[1]]),
                )
        return ast.Compare(use(i), [op], [use(i + 1)])

    def _numeric_mix(self, left: ast.expr, right: ast.expr) -> bool:
        """Whether a comparison may meet a float and a Decimal (then it goes through a helper
        that reads the float as its shortest text). Not when one side is a constant that is
        not a Decimal: an int, a string, null compare natively (and fast)."""
        for side in (left, right):
            if isinstance(side, ast.Name) and side.id in self.decimals:
                return True
        # an array or object literal may hold a Decimal: compared element by element
        return not any(isinstance(side, ast.Constant | ast.Set) for side in (left, right))

    def _visit_IfExp(self, node: ast.IfExp) -> ast.expr:
        return ast.IfExp(self.visit(node.test), self.visit(node.body), self.visit(node.orelse))

    # -- literals --

    def _visit_List(self, node: ast.List) -> ast.expr:
        return _sized(ast.List([self.visit(e) for e in node.elts], ast.Load()))

    def _visit_Tuple(self, node: ast.Tuple) -> ast.expr:
        return _sized(ast.Tuple([self.visit(e) for e in node.elts], ast.Load()))

    def _visit_Set(self, node: ast.Set) -> ast.expr:
        return _sized(ast.Set([self.visit(e) for e in node.elts]))

    def _visit_Dict(self, node: ast.Dict) -> ast.expr:
        keys: list[ast.expr | None] = []
        for key in node.keys:
            if key is None:
                raise self.fail("unpacking with '**' is not allowed", node)
            keys.append(self.visit(key))
        return _sized(ast.Dict(keys, [self.visit(v) for v in node.values]))

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
        if function is _fn_matches or function is _fn_replace_regex:
            self._patterns(name, function, args, node)
        alias = f"_f_{name}"
        self.namespace[alias] = function
        return ast.Call(ast.Name(alias, ast.Load()), args, [])

    def _patterns(
        self, name: str, function: Callable[..., Any], args: list[ast.expr], node: ast.Call
    ) -> None:
        """Compile a constant pattern (and replacement) once, now; refuse a pattern taken from
        the record unless the file allows it (``expressions: {record_patterns: true}``)."""
        if len(args) < 2:
            return
        pattern = args[1]
        if not (isinstance(pattern, ast.Constant) and isinstance(pattern.value, str)):
            if not self.record_patterns:
                raise self.fail(
                    f"{name}(): the regular expression must be a constant string; a pattern "
                    "taken from the record needs 'expressions: {record_patterns: true}' at the "
                    "top of the pipeline file (see docs/security.md)",
                    node.args[1],
                )
            return
        try:
            compiled = _regex.compile_pattern(pattern.value)
            args[1] = self.constant(compiled)
            if function is _fn_replace_regex and len(args) == 3:
                replacement = args[2]
                if isinstance(replacement, ast.Constant) and isinstance(replacement.value, str):
                    parsed = _regex.replacement_for(compiled, replacement.value)
                    args[2] = self.constant(parsed)
        except ValueError as exc:
            bad = node.args[2] if "replacement" in str(exc) else node.args[1]
            raise self.fail(str(exc), bad) from None

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


def _plain_members(node: ast.expr) -> bool:
    """Whether ``node`` is an array or set literal of strings, integers, booleans and nulls
    only: no Decimal for a float to meet, so Python's ``in`` finds what ``==`` finds."""
    return isinstance(node, ast.List | ast.Tuple | ast.Set) and all(
        isinstance(e, ast.Constant) and e.value.__class__ in (str, int, bool, type(None))
        for e in node.elts
    )


def _sized(literal: ast.List | ast.Tuple | ast.Set | ast.Dict) -> ast.expr:
    """A literal with two or more computed members is measured when built (``_sized``): it
    could hold the same large value many times. Constant members cost nothing."""
    members = [*literal.values, *literal.keys] if isinstance(literal, ast.Dict) else literal.elts
    computed = sum(1 for m in members if m is not None and not isinstance(m, ast.Constant))
    if computed < 2:
        return literal
    return ast.Call(ast.Name("_sized", ast.Load()), [literal], [])


def _addition(operands: list[ast.expr]) -> ast.expr:
    """``a + b``: inline when ``a`` is a number (the common case costs one class check),
    else ``_add`` (strings and arrays, joined within the expression budget)."""
    left, right = operands
    plain = ast.BinOp(left, ast.Add(), right)
    slow = ast.Call(ast.Name("_add", ast.Load()), [left, right], [])
    tests: list[ast.expr] = []
    for side in (left, right):
        if isinstance(side, ast.Constant) and isinstance(side.value, int | float):
            continue  # a plain number
        if not isinstance(side, ast.Name):  # a constant string or a literal: never a number
            return slow
        # A Name may be a Decimal literal or any value: plain numbers only add inline (a
        # Decimal adds exactly in _add, never rounded to the context's 28 digits).
        tests.append(
            ast.Compare(
                ast.Attribute(side, "__class__", ast.Load()),
                [ast.In()],
                [ast.Name("_num", ast.Load())],
            )
        )
    if not tests:
        return plain
    is_number = tests[0] if len(tests) == 1 else ast.BoolOp(ast.And(), tests)
    return ast.IfExp(is_number, plain, slow)


def _syntax_error(exc: SyntaxError, text: str, offset: int) -> ExpressionError:
    """An ExpressionError for a SyntaxError in the one-line ``text`` (at ``offset``): it
    points at the offending token and says what was expected there."""
    # exc.offset is 1-based, in characters; 0 or None when the parser ran out of input.
    column = min(exc.offset - 1, len(text)) if exc.offset else len(text.rstrip())
    message = f"syntax error: {exc.msg}" if exc.msg else "syntax error"
    found = _syntax_hint(text, column)
    if found is not None:
        column, hint = found
        message = f"syntax error: {hint}"
    elif "never closed" in message:
        message += ": expected the closing bracket"
    return ExpressionError(message, text=text, column=offset + column)


_VALUE = "a value (a path such as data.x, a literal or a function call)"
_OPERATOR = (
    "an operator (and, or, ==, !=, <, <=, >, >=, in, +, -, *, /, %) or the end of the expression"
)
_INSTEAD = {"&&": "and", "||": "or", "!": "not", "=": "=="}
_WORDS = frozenset({"and", "or", "not", "in", "is", "if", "else"})


def _syntax_hint(text: str, column: int) -> tuple[int, str] | None:
    """(column, what is wrong and what was expected) for the bad token of ``text``; the
    parser's ``column`` places it when nothing more specific is found."""
    import io
    import tokenize

    tokens: list[tokenize.TokenInfo] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
                break
            tokens.append(token)
    except (tokenize.TokenError, SyntaxError):
        pass
    for i, token in enumerate(tokens):
        col = token.start[1]
        if token.type == tokenize.ERRORTOKEN and token.string in ("'", '"'):
            quote = token.string
            return col, f"the string opened here is not closed: expected a closing {quote}"
        if token.type in (tokenize.OP, tokenize.ERRORTOKEN) and not text.startswith(
            ("!=", "=="), col
        ):
            for bad, good in _INSTEAD.items():
                if text.startswith(bad, col):
                    if bad == "=" and i and tokens[i - 1].string in ("<", ">", "!", "="):
                        break
                    return col, f"{bad!r} is not an operator here: use {good!r}"

    def operand(token: tokenize.TokenInfo) -> bool:
        if token.type == tokenize.NAME:
            return token.string not in _WORDS
        return token.type in (tokenize.NUMBER, tokenize.STRING) or token.string in ")]}"

    if tokens and not operand(tokens[-1]) and tokens[-1].end[1] >= len(text.rstrip()):
        last = tokens[-1].string
        return len(text.rstrip()), f"the expression ends after {last!r}: expected {_VALUE}"
    for i, token in enumerate(tokens):
        if token.start[1] == column and i:
            expected = _OPERATOR if operand(tokens[i - 1]) else _VALUE
            return column, f"unexpected {token.string!r}: expected {expected}"
    return None
