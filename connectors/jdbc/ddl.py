"""The part of MySQL's DDL the sink applies (``ddl: apply``): ``ALTER TABLE … ADD [COLUMN]``
and ``RENAME COLUMN``, and ``TRUNCATE TABLE``. :func:`alter_actions` splits a statement into
its clauses; each is ``("add", column, type_text)``, ``("rename", old, new)``,
``("truncate", "", "")`` or ``("other", clause_text)``. Anything else gives
``[("other", statement)]``."""

from __future__ import annotations

import re

__all__ = ["alter_actions"]

_IDENT = r"(?:`(?:[^`]|``)+`|[A-Za-z0-9_$]+)"
_ALTER = re.compile(
    rf"^\s*ALTER\s+(?:ONLINE\s+|IGNORE\s+)*TABLE\s+(?:IF\s+EXISTS\s+)?{_IDENT}(?:\s*\.\s*{_IDENT})?\s*",
    re.IGNORECASE | re.DOTALL,
)
_TRUNCATE = re.compile(
    rf"^\s*TRUNCATE\s+(?:TABLE\s+)?{_IDENT}(?:\s*\.\s*{_IDENT})?\s*$", re.IGNORECASE | re.DOTALL
)
_ADD = re.compile(
    rf"^ADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?({_IDENT})\s+(.+)$", re.IGNORECASE | re.DOTALL
)
#: ``ADD [COLUMN] [IF NOT EXISTS] (a INT, b TEXT)``: several columns in one clause.
_ADD_LIST = re.compile(
    r"^ADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?\((.*)\)$", re.IGNORECASE | re.DOTALL
)
_COLUMN_DEF = re.compile(rf"^({_IDENT})\s+(.+)$", re.DOTALL)
_RENAME = re.compile(
    rf"^RENAME\s+COLUMN\s+(?:IF\s+EXISTS\s+)?({_IDENT})\s+TO\s+({_IDENT})\s*$",
    re.IGNORECASE | re.DOTALL,
)
_NOT_COLUMN = re.compile(
    r"^(?:INDEX|KEY|UNIQUE|PRIMARY|FOREIGN|CONSTRAINT|FULLTEXT|SPATIAL|CHECK|PERIOD|SYSTEM)\b",
    re.IGNORECASE,
)
#: The column type: its name and parenthesised arguments, and UNSIGNED; the attributes after
#: it (NOT NULL, DEFAULT, COMMENT, AFTER …) are not carried over.
_COLTYPE = re.compile(
    r"^([A-Za-z]+(?:\s+PRECISION)?(?:\s*\((?:[^()']|'(?:[^']|'')*')*\))?(?:\s+UNSIGNED)?)",
    re.IGNORECASE,
)


def _unquote(name: str) -> str:
    return name[1:-1].replace("``", "`") if name.startswith("`") else name


def _clauses(text: str) -> list[str]:
    """Split at commas outside parentheses, quotes and backquotes."""
    out, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    out.append(text[start:].strip())
    return [c for c in out if c]


def _strip_comments(sql: str) -> str:
    sql = re.sub(r"/\*.*?\*/", " ", sql, flags=re.DOTALL)
    return re.sub(r"(?m)(?:--\s|#).*$", " ", sql)


def _column(name: str, rest: str) -> tuple[str, str, str]:
    t = _COLTYPE.match(rest)
    return ("add", name, t.group(1) if t else rest.split()[0])


def _add(definition: str, clause: str) -> tuple[str, str, str]:
    """One column definition of an ``ADD (…)`` list, or ``other`` (an index, a constraint)."""
    d = _COLUMN_DEF.match(definition)
    if not d or _NOT_COLUMN.match(definition):
        return ("other", clause, "")
    return _column(_unquote(d.group(1)), d.group(2).strip())


def alter_actions(sql: str) -> list[tuple[str, str, str]]:
    """The clauses of an ``ALTER TABLE`` statement (see the module docstring)."""
    text = _strip_comments(sql).strip().rstrip(";")
    if _TRUNCATE.match(text):
        return [("truncate", "", "")]
    m = _ALTER.match(text)
    if not m:
        return [("other", sql.strip(), "")]
    out: list[tuple[str, str, str]] = []
    for clause in _clauses(text[m.end() :]):
        many = _ADD_LIST.match(clause)
        if many:
            # ADD COLUMN (a INT, b INT): each definition as an ADD of its own (it was skipped
            # whole, and every later row using the columns was a dead letter)
            out.extend(_add(d, f"ADD COLUMN {d}") for d in _clauses(many.group(1)))
            continue
        add = _ADD.match(clause)
        if add and not _NOT_COLUMN.match(clause[3:].strip()):
            name, rest = _unquote(add.group(1)), add.group(2).strip()
            if rest.startswith("("):
                out.append(("other", clause, ""))  # not a column definition
                continue
            out.append(_column(name, rest))
            continue
        ren = _RENAME.match(clause)
        if ren:
            out.append(("rename", _unquote(ren.group(1)), _unquote(ren.group(2))))
            continue
        out.append(("other", clause, ""))
    return out
