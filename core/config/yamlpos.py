"""YAML with positions: plain Python values plus where each one stands in the file.

:func:`parse_yaml` composes the YAML node graph (libyaml's ``CSafeLoader`` when PyYAML was built
with it, else the pure-Python ``SafeLoader``), then builds plain values itself so it can record,
for every node, its *path* (a tuple of mapping keys and list indexes from the root, e.g.
``("pipelines", 0, "sinks", 1, "config")``) and its 1-based line and column. Mapping entries also
record where their key stands, so "unknown key" can point at the key and "wrong type" at the
value.

Contract:

* Scalars are typed as PyYAML's safe loader types them (``5432`` is an int, ``yes`` a string:
  PyYAML follows YAML 1.1 for booleans, so ``yes``/``no``/``on``/``off`` are booleans).
* A syntax error, an unknown tag or a recursive alias is a :class:`~meshconnect.errors.Problem`
  at the offending position with the YAML library's message; then ``data`` is ``None``.
* A key repeated in one mapping is a Problem at the second occurrence; the later value wins, so
  the rest of the file can still be checked. Keys brought in by a ``<<`` merge are not
  duplicates: explicit keys override merged ones, as YAML specifies.
* An alias shares its anchor's positions.
* Aliases cannot multiply a small file into a huge one (a "billion laughs" alias bomb): before
  any value is built, the number of values the file expands to is counted over the node graph
  (each node once, so counting is as cheap as the file is small). More than
  :data:`MAX_VALUES` values, or nesting deeper than :data:`MAX_DEPTH`, is a Problem at the
  collection that holds the aliases, and nothing is built.
* For each scalar, :class:`ScalarInfo` says whether its source text on its single line is
  exactly its value (plain or quoted, no escapes, no folding), so that an error at an offset
  inside the value (an expression's column) can be placed inside the scalar in the file.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Hashable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import Location, Problem

__all__ = [
    "Document",
    "Pos",
    "ScalarInfo",
    "YamlPath",
    "exact_float",
    "parse_yaml",
    "render_path",
]

#: Mapping keys and list indexes from the document root to a node.
YamlPath = tuple[Any, ...]

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_FLOAT_TAG = "tag:yaml.org,2002:float"

#: Most values (scalars, lists and mappings, each alias counted as the values it repeats) one
#: file may expand to. Real pipeline files hold hundreds; 100,000 builds in well under a second.
MAX_VALUES = 100_000
#: Bits of the smallest integers of more than 4,300 decimal digits (Python's limit on turning
#: an integer into text): only those are compared with 10**4300.
_MAX_INT_BITS = 14_285
#: Deepest nesting of lists and mappings a file may have.
MAX_DEPTH = 200


@dataclass(frozen=True, slots=True)
class Pos:
    """A 1-based line and column."""

    line: int
    column: int


@dataclass(frozen=True, slots=True)
class ScalarInfo:
    """How a scalar is written: its ``style`` (None for plain, ``'`` or ``"`` for quoted, ``|``
    or ``>`` for block) and whether its text on one line is exactly its value (``exact``)."""

    style: str | None
    exact: bool


@dataclass(slots=True)
class Document:
    """One parsed YAML file: the values, the positions of nodes and keys, and any problems."""

    file: str
    data: Any = None
    values: dict[YamlPath, Pos] = field(default_factory=dict)
    keys: dict[YamlPath, Pos] = field(default_factory=dict)
    scalars: dict[YamlPath, ScalarInfo] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def pos(self, path: YamlPath, *, key: bool = False) -> Pos:
        """Where the value at ``path`` (or its key, with ``key=True``) stands.

        A path that is not in the file (a missing field) falls back to its nearest ancestor
        that is; a ``key`` position falls back to the value's position (list items have none).
        """
        path = tuple(path)
        if key and path in self.keys:
            return self.keys[path]
        while path and path not in self.values:
            path = path[:-1]
        return self.values.get(path, Pos(1, 1))

    def location(self, path: YamlPath, *, key: bool = False) -> Location:
        """:meth:`pos` as a :class:`~meshconnect.errors.Location` in this file."""
        pos = self.pos(path, key=key)
        return Location(self.file, pos.line, pos.column)

    def inner_location(self, path: YamlPath, offset: int | None) -> Location:
        """The location of character ``offset`` (0-based) of the string scalar at ``path``.

        Exact only for single-line plain or quoted scalars written without escapes; otherwise
        (or when ``offset`` is None) the scalar's own position.
        """
        start = self.pos(path)
        info = self.scalars.get(tuple(path))
        if offset is None or info is None or not info.exact or offset < 0:
            return Location(self.file, start.line, start.column)
        quote = 0 if info.style is None else 1
        return Location(self.file, start.line, start.column + quote + offset)


def render_path(path: YamlPath) -> str:
    """``("pipelines", 0, "sinks", 1, "table")`` -> ``pipelines[0].sinks[1].table``.

    Keys that are not identifier-like are written as ``['a.b']``.
    """
    out: list[str] = []
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out.append(f"[{part}]")
        elif isinstance(part, str) and _IDENT.match(part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{part!r}]")
    return "".join(out)


def parse_yaml(text: str, file: str) -> Document:
    """Parse ``text`` (the contents of ``file``) into a :class:`Document`."""
    doc = Document(file)
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            doc.problems.append(_yaml_problem(file, exc, text))
            return doc
        except yaml.YAMLError as exc:  # pragma: no cover - unmarked errors are rare
            doc.problems.append(Problem(Location(file, 1, 1), f"invalid YAML: {exc}"))
            return doc
        if root is None:
            return doc
        oversized = _oversized(root)
        if oversized is not None:
            node, message = oversized
            mark = node.start_mark
            doc.problems.append(
                Problem(Location(file, mark.line + 1, mark.column + 1), f"invalid YAML: {message}")
            )
            return doc
        builder = _Builder(doc, loader, text.splitlines())
        try:
            doc.data = builder.build(root, ())
        except yaml.MarkedYAMLError as exc:
            doc.problems.append(_yaml_problem(file, exc, text))
            doc.data = None
        except _Abort:
            doc.data = None
    finally:
        loader.dispose()
    return doc


def _oversized(root: Node) -> tuple[Node, str] | None:
    """``(node, message)`` when the document expands to more than :data:`MAX_VALUES` values or
    nests deeper than :data:`MAX_DEPTH`; ``None`` when it is within both.

    Sizes are counted once per node (aliases share their anchor's node), iteratively, so an
    alias bomb is measured in as many steps as the file has nodes. The node reported is the
    smallest collection that alone exceeds the budget: the one whose aliases multiply.
    """
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            children = _children(node)
            sizes[key] = 1 + sum(sizes.get(id(c), 0) for c in children)
            depths[key] = 1 + max((depths.get(id(c), 0) for c in children), default=0)
            if depths[key] > MAX_DEPTH:
                return node, f"nested more than {MAX_DEPTH} levels deep"
            continue
        if key in sizes or key in active:  # built already, or a recursive alias (reported later)
            continue
        active.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
    if sizes.get(id(root), 0) <= MAX_VALUES:
        return None
    if len(sizes) > MAX_VALUES:  # as many values written out: no alias multiplied them
        return root, (
            f"the file holds {len(sizes):,} values, more than the {MAX_VALUES:,} allowed in "
            "one pipeline file"
        )
    node = root
    while True:
        bigger = [c for c in _children(node) if sizes.get(id(c), 0) > MAX_VALUES]
        if not bigger:
            break
        node = bigger[0]
    return node, (
        f"the file expands to {sizes[id(root)]:,} values through aliases, more than the "
        f"{MAX_VALUES:,} allowed (an alias bomb?); this collection repeats its aliases"
    )


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


class _Abort(Exception):
    """Building stopped at a problem that is already recorded."""


def _yaml_problem(file: str, exc: yaml.MarkedYAMLError, text: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = exc.problem or "invalid syntax"
    context = exc.context or ""
    context_mark = exc.context_mark
    if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
        context = f"{context} at line {context_mark.line + 1}"
    if context:
        joiner = ", " if problem.startswith("but ") else ": "
        problem = f"{context}{joiner}{problem}"
    tab = _tab_column(text, mark)
    if tab is not None:  # PyYAML's messages do not say "tab" for most of these
        column = tab
        problem = "a tab character indents this line; YAML indents with spaces only"
    return Problem(Location(file, line, column), f"invalid YAML: {problem}")


def _tab_column(text: str, mark: yaml.Mark | None) -> int | None:
    """The 1-based column of a tab in the indentation of ``mark``'s line (or at the mark)."""
    lines = text.splitlines()
    if mark is None or mark.line >= len(lines):
        return None
    line = lines[mark.line]
    indent = line[: len(line) - len(line.lstrip(" \t"))]
    if "\t" in indent:
        return indent.index("\t") + 1
    if line[mark.column : mark.column + 1] == "\t":
        return mark.column + 1
    return None


def exact_float(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """A YAML float as the exact ``Decimal`` of its text (``1.10`` keeps its scale, every digit
    of ``169299987.35345112`` is kept), the representation ``meshconnect.jsonvalue`` gives JSON
    numbers; ``.inf``, ``.nan`` and YAML 1.1's sexagesimal ``1:30.5`` stay floats."""
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    try:
        number = Decimal(text.replace("_", ""))
    except ArithmeticError:
        return loader.construct_yaml_float(node)  # type: ignore[arg-type]
    return number if number.is_finite() else loader.construct_yaml_float(node)  # type: ignore[arg-type]


class _Builder:
    def __init__(self, doc: Document, loader: yaml.SafeLoader, lines: list[str]) -> None:
        self.doc = doc
        self.loader = loader
        self.lines = lines
        self.active: set[int] = set()  # ids of the nodes being built (to catch recursion)
        self.checked: set[int] = set()  # mappings already checked for duplicate keys

    def problem(self, node: Node, message: str) -> None:
        mark = node.start_mark
        self.doc.problems.append(
            Problem(Location(self.doc.file, mark.line + 1, mark.column + 1), message)
        )

    def build(self, node: Node, path: YamlPath) -> Any:
        self.doc.values[path] = _pos(node)
        if isinstance(node, ScalarNode):
            if node.tag == _FLOAT_TAG:
                value = exact_float(self.loader, node)
            else:
                value = self.construct(node)
            self.doc.scalars[path] = self.scalar_info(node, value)
            return value
        if id(node) in self.active:
            self.problem(node, "invalid YAML: recursive alias (an anchor used inside itself)")
            raise _Abort
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != "tag:yaml.org,2002:seq":
                    return self.construct(node)
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                return self.mapping(node, path)
            raise _Abort  # pragma: no cover - the composer makes only these three kinds
        finally:
            self.active.discard(id(node))

    def construct(self, node: Node) -> Any:
        """PyYAML's value for ``node``; a value it cannot make (an integer of 200,000 digits,
        a date such as 2001-02-30, a bad ``!!timestamp``) is a problem at the node, not a
        traceback."""
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError:
            raise
        except (ValueError, TypeError, AttributeError, OverflowError, KeyError) as exc:
            tag = node.tag.rsplit(":", 1)[-1]
            what = {"int": "an integer", "omap": "an omap"}.get(tag, f"a {tag}")
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, AttributeError):  # PyYAML's regex found no match
                reason = "it is not written as one"
            elif "integer string conversion" in reason:
                reason = f"it has more than {sys.get_int_max_str_digits():,} digits"
            self.problem(node, f"invalid YAML: this value cannot be read as {what}: {reason}")
            raise _Abort from None
        if (
            value.__class__ is int
            and value.bit_length() >= _MAX_INT_BITS
            and abs(value) >= 10 ** sys.get_int_max_str_digits()
        ):
            # YAML 1.1's base 60 (``59:59:…``) makes one without writing its digits
            self.problem(
                node,
                "invalid YAML: this value cannot be read as an integer: it has more than "
                f"{sys.get_int_max_str_digits():,} digits",
            )
            raise _Abort
        return value

    def mapping(self, node: MappingNode, path: YamlPath) -> Any:
        if node.tag != "tag:yaml.org,2002:map":  # !!set, !!omap: let PyYAML construct them
            return self.construct(node)
        if id(node) not in self.checked:
            self.checked.add(id(node))
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.key(key_node)
                if key in seen:
                    self.problem(key_node, f"duplicate key {key!r} (the later value wins)")
                seen.add(key)
        self.loader.flatten_mapping(node)  # resolve `<<` merges; explicit keys come last
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.key(key_node)
            child = (*path, key)
            self.doc.keys[child] = _pos(key_node)
            out[key] = self.build(value_node, child)
        return out

    def key(self, node: Node) -> Any:
        if not isinstance(node, ScalarNode):
            self.problem(node, "invalid YAML: a mapping key must be a scalar")
            raise _Abort
        key = self.construct(node)
        if not isinstance(key, Hashable):  # pragma: no cover - scalars are hashable
            self.problem(node, "invalid YAML: unhashable mapping key")
            raise _Abort
        return key

    def scalar_info(self, node: ScalarNode, value: Any) -> ScalarInfo:
        start, end = node.start_mark, node.end_mark
        style = node.style or None  # libyaml says "" for plain, PyYAML None
        exact = False
        if (
            style in (None, "'", '"')
            and isinstance(value, str)
            and start.line == end.line
            and start.line < len(self.lines)
        ):
            raw = self.lines[start.line][start.column : end.column]
            if style is not None:
                raw = raw[1:-1]
            exact = raw == value
        return ScalarInfo(style, exact)


def _pos(node: Node) -> Pos:
    return Pos(node.start_mark.line + 1, node.start_mark.column + 1)
