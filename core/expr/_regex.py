"""Regular expressions in expressions: ``matches`` and ``replace_regex``, on RE2.

RE2 (Google's engine, the ``google-re2`` package) runs in time linear in the text, whatever
the pattern: no backtracking, so ``(a+)+$`` on ``'a' * 34 + '!'`` answers at once instead of
running for hours. Its syntax is Perl's and Python's without backreferences and lookaround
(https://github.com/google/re2/wiki/Syntax); ``(?P<name>…)`` names a group. Each compiled
pattern may use at most :data:`~._budget.REGEX_MAX_MEMORY` bytes, and a pattern has at most
:data:`~._budget.MAX_PATTERN` characters.

Replacements follow Java's ``Matcher.replaceAll``, as Kafka Connect's ``RegexRouter`` does:
``$0`` is the whole match, ``$1`` … ``$99`` a numbered group (``$12`` is group 12 when the
pattern has 12 groups, else group 1 followed by ``2``), ``${name}`` a named group and ``\\$``
or ``$$`` a literal ``$``; ``\\\\`` is a backslash. A group that did not take part in the match
adds nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ._budget import (
    MAX_PATTERN,
    MAX_SIZE,
    RECORD_PATTERNS_KEPT,
    RECORD_REGEX_MAX_MEMORY,
    REGEX_MAX_MEMORY,
    BudgetError,
    too_big,
)

__all__ = [
    "Pattern",
    "Replacement",
    "compile_pattern",
    "compile_re2",
    "compile_replacement",
    "record_pattern",
    "replace",
    "replacement_for",
    "search",
]

Pattern = Any  # re2._Regexp: the binding ships no type information

# ``re2`` (its extension module takes ~2.5 MB of RSS) is imported by the first pattern
# compiled, or the first look-up of this module's ``re2`` attribute: most pipelines use no
# regular expression.
_OPTIONS: Any = None
_RECORD_OPTIONS: Any = None
_UNANCHORED: Any = None
_NO_MATCH = -1


def _load_re2() -> Any:
    global _OPTIONS, _RECORD_OPTIONS, _UNANCHORED
    import re2

    if _OPTIONS is None:
        options = re2.Options()
        options.log_errors = False  # the reason goes into our message, not to stderr
        options.max_mem = REGEX_MAX_MEMORY
        record = re2.Options()
        record.log_errors = False
        record.max_mem = RECORD_REGEX_MAX_MEMORY
        _UNANCHORED = re2._re2.RE2.Anchor.UNANCHORED
        _OPTIONS, _RECORD_OPTIONS = options, record
        globals()["re2"] = re2
    return re2


def __getattr__(name: str) -> Any:
    if name == "re2":
        return _load_re2()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Pattern:
    """A compiled RE2 pattern of a pipeline file (a constant); ValueError
    naming the pattern and the reason when it is bad."""
    return _compile(pattern, False)


@functools.lru_cache(maxsize=RECORD_PATTERNS_KEPT)
def record_pattern(pattern: str) -> Pattern:
    """A compiled RE2 pattern taken from a record (``record_patterns``): as
    :func:`compile_pattern`, on the smaller memory budget of
    :data:`~._budget.RECORD_REGEX_MAX_MEMORY`, and kept compiled for the next records, the
    :data:`~._budget.RECORD_PATTERNS_KEPT` most recently used."""
    return _compile(pattern, True)


def _compile(pattern: str, from_record: bool) -> Pattern:
    if len(pattern) > MAX_PATTERN:
        raise BudgetError(
            f"regular expression longer than {MAX_PATTERN:,} characters ({len(pattern):,})"
        )
    re2 = _load_re2()
    try:
        return re2.compile(pattern, _RECORD_OPTIONS if from_record else _OPTIONS)
    except re2.error as exc:
        raise ValueError(f"bad regular expression {pattern!r}: {_reason(exc)}") from None


def compile_re2(pattern: str, *, ignore_case: bool = False, dot_nl: bool = False) -> Pattern:
    """``pattern`` compiled by RE2, for a connector that matches names from outside (table
    names from a server, object keys from a bucket) against a pattern of its config: linear
    time whatever the name, so ``(a+)+$`` cannot stall the worker. ``ignore_case`` and
    ``dot_nl`` (``.`` matches a newline) are RE2's options of those meanings. Raises
    ValueError with RE2's reason when RE2 cannot run the pattern (no lookaround or
    backreferences: https://github.com/google/re2/wiki/Syntax)."""
    re2 = _load_re2()
    options = re2.Options()
    options.log_errors = False  # the reason goes into the ValueError, not to stderr
    options.case_sensitive = not ignore_case
    options.dot_nl = dot_nl
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        raise ValueError(_reason(exc)) from None


def _reason(exc: BaseException) -> str:
    """RE2's own words for why a pattern does not compile."""
    reason = exc.args[0] if exc.args else exc
    return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)


class Replacement(tuple[str | int, ...]):
    """A parsed replacement: literal text (``str``) and group numbers (``int``), in order.

    A class of its own, so that a tuple written in an expression is never taken for one."""

    __slots__ = ()


@functools.lru_cache(maxsize=512)
def compile_replacement(
    replacement: str, groups: int, names: tuple[tuple[str, int], ...] = ()
) -> Replacement:
    """Parse a ``$1``/``${name}`` replacement for a pattern with ``groups`` groups and the
    named groups ``names`` (name, number); ValueError when it names a group the pattern does
    not have. Literal text stays ``str``, each reference becomes its group number."""
    numbers = dict(names)
    parts: list[str | int] = []
    text: list[str] = []
    i, n = 0, len(replacement)
    while i < n:
        char = replacement[i]
        if char == "\\" and i + 1 < n:
            text.append(replacement[i + 1])
            i += 2
            continue
        if char != "$":
            text.append(char)
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError("replacement ends with '$' (write '$$' for a literal '$')")
        nxt = replacement[i + 1]
        if nxt == "$":
            text.append("$")
            i += 2
            continue
        if nxt == "{":
            end = replacement.find("}", i + 2)
            name = replacement[i + 2 : end] if end >= 0 else ""
            if not name or name not in numbers:
                raise ValueError(f"replacement names no group of the pattern: {'${'}{name}}}")
            parts.extend(["".join(text), numbers[name]])
            text = []
            i = end + 1
            continue
        if not nxt.isdigit() or not nxt.isascii():
            raise ValueError(
                f"'$' in a replacement is followed by a group number or {{name}}, not {nxt!r} "
                "(write '$$' for a literal '$')"
            )
        number = int(nxt)
        if number > groups:
            raise ValueError(f"replacement refers to group {number}; the pattern has {groups}")
        i += 2
        # Java takes further digits while they still name an existing group.
        while i < n and replacement[i].isdigit() and replacement[i].isascii():
            longer = number * 10 + int(replacement[i])
            if longer > groups:
                break
            number = longer
            i += 1
        parts.extend(["".join(text), number])
        text = []
    parts.append("".join(text))
    return Replacement(p for p in parts if p != "")


def search(pattern: Pattern, text: str) -> bool:
    """Whether ``pattern`` matches anywhere in ``text``. The binding's ``search`` builds a match
    object with character offsets (about five times the cost); a yes/no needs neither."""
    data = text.encode("utf-8", "surrogatepass")
    return bool(pattern._regexp.Match(_UNANCHORED, data, 0, len(data))[0][0] != _NO_MATCH)


def replacement_for(pattern: Pattern, replacement: str) -> Replacement:
    """:func:`compile_replacement` for a compiled ``pattern``. A replacement longer than a
    pattern may be (one taken from a record can be a megabyte) is parsed each time, not kept."""
    names = tuple(sorted(pattern.groupindex.items()))
    if len(replacement) > MAX_PATTERN:
        return compile_replacement.__wrapped__(replacement, pattern.groups, names)
    return compile_replacement(replacement, pattern.groups, names)


def replace(pattern: Pattern, text: str, replacement: Replacement) -> str:
    """Every match of ``pattern`` in ``text`` replaced; BudgetError past :data:`MAX_SIZE`."""
    out: list[str] = []
    size = 0
    last = 0
    expand: Callable[[Any], list[str]] = functools.partial(_expand, replacement)
    for match in pattern.finditer(text):
        start, end = match.span()
        pieces = [text[last:start], *expand(match)]
        size += sum(len(p) for p in pieces)
        if size > MAX_SIZE:
            raise too_big("replace_regex()")
        out.extend(pieces)
        last = end
    if not out:
        return text
    out.append(text[last:])
    if size + len(text) - last > MAX_SIZE:
        raise too_big("replace_regex()")
    return "".join(out)


def _expand(replacement: Replacement, match: Any) -> list[str]:
    return [part if part.__class__ is str else (match.group(part) or "") for part in replacement]
