"""What a statement logged as a QUERY event is: Canal's DDL type, its leading keywords and
every table it names (backquoted names with escaped backquotes, ANSI_QUOTES double-quoted
names, ``schema.table``, comments,
``RENAME TABLE a TO b, c TO d``, ``DROP TABLE a, b``, ``ANALYZE/OPTIMIZE/REPAIR TABLE a, b``,
the table a trigger or index is on).
See docs/cdc.md, "DDL and other statements"."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Ddl", "ddl_info", "parse_ddl", "tokens"]

_TOKEN = re.compile(
    r"""\s+|/\*.*?\*/|(?:--\s|\#)[^\n]*|`((?:[^`]|``)*)`|'(?:[^'\\]|\\.|'')*'"""
    r"""|"(?:[^"\\]|\\.|"")*"|([\w$]+)|(.)""",
    re.S,
)
_OBJECTS = {
    "TABLE", "VIEW", "TRIGGER", "PROCEDURE", "FUNCTION", "EVENT", "DATABASE", "SCHEMA",
    "INDEX", "USER", "ROLE", "SEQUENCE", "SERVER", "TABLESPACE", "PACKAGE", "LOGFILE",
}  # fmt: skip
_KINDS = {("CREATE", "TABLE"): "CREATE", ("ALTER", "TABLE"): "ALTER", ("DROP", "TABLE"): "ERASE",
          ("RENAME", "TABLE"): "RENAME", ("TRUNCATE", "TABLE"): "TRUNCATE",
          ("CREATE", "INDEX"): "CINDEX", ("DROP", "INDEX"): "DINDEX"}  # fmt: skip

#: Statements that name a comma-separated list of tables (``DROP TABLE a, b``,
#: ``ANALYZE TABLE a, b``): each of them is named.
_LISTS = {"DROP", "RENAME", "ANALYZE", "OPTIMIZE", "REPAIR"}


#: Objects that live in a schema (``CREATE VIEW d.v``): a statement on one belongs to ``d``.
_IN_SCHEMA = {"VIEW", "PROCEDURE", "FUNCTION", "EVENT", "SEQUENCE", "TRIGGER", "PACKAGE"}

#: Row changes a session logged as statements (``binlog_format`` STATEMENT or MIXED).
_DML = {"INSERT", "REPLACE", "UPDATE", "DELETE", "LOAD"}


def _dml_tables(verb: str, words: list[str], name: Any, skip: Any, n: int) -> tuple[Any, ...]:
    """The table a statement-logged change writes (``INSERT [INTO] t``, ``REPLACE t``,
    ``UPDATE t SET``, ``DELETE FROM t``, ``LOAD DATA … INTO TABLE t``), or ``()`` when the
    statement is not that simple (several tables, joins): it may write any table."""
    if verb in ("INSERT", "REPLACE"):
        i = skip(1, "LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "INTO")
    elif verb == "UPDATE":
        i = skip(1, "LOW_PRIORITY", "IGNORE")
    elif verb == "DELETE":
        i = skip(1, "LOW_PRIORITY", "QUICK", "IGNORE")
        if i >= n or words[i] != "FROM":
            return ()  # DELETE t1, t2 FROM …: several tables
        i += 1
    else:  # LOAD DATA|XML … INTO TABLE t
        i = next((j + 2 for j in range(n - 1) if words[j : j + 2] == ["INTO", "TABLE"]), n)
    table, j = name(i)
    if table is None:
        return ()
    follows = words[j] if j < n else ""
    if verb == "UPDATE" and follows != "SET":
        return ()  # UPDATE a JOIN b / UPDATE a, b
    if verb == "DELETE" and follows == "USING":
        return ()
    return (table,)


@dataclass(frozen=True, slots=True)
class Ddl:
    """What a statement logged as a QUERY event is about (:func:`parse_ddl`)."""

    #: Canal's type: CREATE, ALTER, ERASE, RENAME, TRUNCATE, CINDEX, DINDEX or QUERY; ``DML``
    #: for a row change logged as a statement (not DDL: never a record, see the source).
    kind: str
    #: The statement's leading keywords: ``CREATE TABLE``, ``CREATE TRIGGER``, ``GRANT``, …
    statement: str
    #: Every table it names, ``(schema, table)``, in order, each once (for RENAME the old
    #: and the new names, for ``DROP TABLE a, b`` both, for a trigger the table it is on).
    tables: tuple[tuple[str, str], ...]
    #: The schema of a statement naming no table: the one its object is in (``CREATE VIEW
    #: d.v``, ``DROP PROCEDURE d.p``, ``CREATE DATABASE d``), else the session's.
    schema: str = ""


def tokens(sql: str, ansi_quotes: bool = False) -> list[tuple[str, str]]:
    """``(kind, text)``: ``id`` a backquoted name (unquoted; with ``ansi_quotes`` a
    double-quoted one too), ``w`` a word, ``p`` a punctuation character, ``s`` a string
    literal; blanks and comments are dropped."""
    out: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(sql):
        quoted, word, punct = m.group(1), m.group(2), m.group(3)
        if quoted is not None:
            out.append(("id", quoted.replace("``", "`")))
        elif ansi_quotes and m.group(0)[:1] == '"':
            out.append(("id", m.group(0)[1:-1].replace('""', '"')))
        elif word is not None:
            out.append(("w", word))
        elif punct is not None:
            out.append(("p", punct))
        elif m.group(0)[:1] in "'\"":
            out.append(("s", m.group(0)))
    return out


def parse_ddl(sql: str, default_schema: str, ansi_quotes: bool = False) -> Ddl:
    """What a statement is and which tables it names (backquoted names with escaped
    backquotes, ``schema.table``, comments, several tables; ``ansi_quotes``: the session's
    ``sql_mode`` made ``"name"`` a name)."""
    toks = tokens(sql, ansi_quotes)
    n = len(toks)
    words = [t.upper() if k == "w" else "" for k, t in toks]

    def ident(i: int) -> str | None:
        """The name at ``i``: backquoted, a bare word, or double-quoted (a session with
        ``sql_mode=ANSI_QUOTES``; a string is never a name, so only that reads so)."""
        if i >= n:
            return None
        kind, text = toks[i]
        if kind in ("id", "w"):
            return text
        if kind == "s" and text[:1] == '"':
            return text[1:-1].replace('""', '"')
        return None

    def name(i: int) -> tuple[tuple[str, str] | None, int]:
        first = ident(i)
        if first is None:
            return None, i
        if i + 2 < n and toks[i + 1] == ("p", ".") and (second := ident(i + 2)) is not None:
            return (first, second), i + 3
        return (default_schema, first), i + 1

    def skip(i: int, *optional: str) -> int:
        while i < n and words[i] in optional:
            i += 1
        return i

    verb = words[0] if n else ""
    if verb in _DML:
        return Ddl("DML", verb, _dml_tables(verb, words, name, skip, n))
    obj = ""
    i = 1
    for j in range(1, min(n, 16)):  # CREATE OR REPLACE DEFINER=… SQL SECURITY … VIEW
        if words[j] in _OBJECTS:
            obj, i = words[j], j + 1
            break
        if verb == "TRUNCATE" and j == 1:
            obj, i = "TABLE", 1
            break
    if verb in ("CREATE", "ALTER", "DROP", "RENAME") and obj:
        statement = f"{verb} {obj}"
    else:
        statement = verb or "QUERY"
        if verb == "XA" and n > 1:
            statement = f"XA {words[1]}"
    kind = _KINDS.get((verb, obj), "QUERY")
    tables: list[tuple[str, str]] = []
    if obj == "TABLE":
        i = skip(i, "TABLE", "IF", "NOT", "EXISTS")
        while i < n:
            t, i = name(i)
            if t is None:
                break
            tables.append(t)
            if verb == "RENAME" and i < n and words[i] == "TO":
                t, i = name(i + 1)
                if t is not None:
                    tables.append(t)
            elif verb == "ALTER":  # ALTER TABLE a …, RENAME [TO|AS] b
                depth = 0
                for j in range(i, n):
                    depth += {"(": 1, ")": -1}.get(toks[j][1], 0) if toks[j][0] == "p" else 0
                    if depth == 0 and words[j] == "RENAME" and words[j + 1 : j + 2] != ["COLUMN"]:
                        k = skip(j + 1, "TO", "AS")
                        if k < n and words[k] not in ("INDEX", "KEY", "COLUMN"):
                            t, _ = name(k)
                            if t is not None:
                                tables.append(t)
                        break
                break
            if verb not in _LISTS or i >= n or toks[i] != ("p", ","):
                break
            i += 1
    elif obj in ("INDEX", "TRIGGER"):  # … ON table
        for j in range(i, n):
            if words[j] == "ON":
                t, _ = name(j + 1)
                if t is not None:
                    tables.append(t)
                break
    schema = default_schema
    if obj in ("DATABASE", "SCHEMA"):
        named = ident(skip(i, "IF", "NOT", "EXISTS"))
        schema = default_schema if named is None else named
    elif obj in _IN_SCHEMA:
        named_in, _ = name(skip(i, "IF", "NOT", "EXISTS"))
        if named_in is not None:
            schema = named_in[0]
    elif verb in ("GRANT", "REVOKE") and "ON" in words:  # … ON [TABLE|PROCEDURE …] db.* …
        j = skip(words.index("ON") + 1, "TABLE", "FUNCTION", "PROCEDURE", "PACKAGE", "BODY")
        named = ident(j)
        if named is not None and j + 1 < n and toks[j + 1] == ("p", "."):
            schema = named
    return Ddl(kind, statement, tuple(dict.fromkeys(tables)), schema)


def ddl_info(sql: str, default_schema: str) -> tuple[str, str, str]:
    """``(Canal type, schema, table)`` of a DDL statement's first table (``""``: none)."""
    ddl = parse_ddl(sql, default_schema)
    if not ddl.tables:
        return ddl.kind, default_schema, ""
    schema, table = ddl.tables[0]
    return ddl.kind, schema, table
