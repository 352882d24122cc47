"""MariaDB JSON columns as of the stream position: a small schema history kept by DDL.

MariaDB's JSON is a LONGTEXT with a ``json_valid`` check: the binlog's table map cannot tell
it from a LONGTEXT, and ``information_schema`` shows only the present, which differs from
the time of an event once the table was renamed, or the column dropped, retyped or renamed
since. So the source keeps, for the position it streams at, the JSON columns of every table
that has some, starting from ``information_schema`` when the stream starts at "now" (then
the present is the time of the position), and replays each DDL statement of the binlog on it:
``CREATE TABLE`` (column types, ``CHECK (json_valid(c))``, ``LIKE``), ``ALTER TABLE`` (``ADD``,
``MODIFY``, ``CHANGE``, ``DROP``, ``RENAME COLUMN``, ``RENAME TO``), ``RENAME TABLE`` and
``DROP TABLE``. The history is part of the committed position (``json``), so a restart goes
on with the history of its position.

A statement it cannot follow (``CREATE TABLE … SELECT``, say) makes the table unknown; an
unknown table falls back to ``information_schema`` when its column still has the same
definition (:func:`.coltypes.same_definition`).
"""

from __future__ import annotations

from typing import Any

from .ddl import parse_ddl, tokens

__all__ = ["JsonColumns"]

Key = tuple[str, str]
_CONSTRAINTS = {
    "PRIMARY", "KEY", "INDEX", "UNIQUE", "CONSTRAINT", "CHECK", "FOREIGN", "FULLTEXT",
    "SPATIAL", "PERIOD", "SYSTEM",
}  # fmt: skip


def _split(toks: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Comma-separated items at parenthesis depth 0."""
    items: list[list[tuple[str, str]]] = [[]]
    depth = 0
    for t in toks:
        if t[0] == "p" and t[1] == "(":
            depth += 1
        elif t[0] == "p" and t[1] == ")":
            depth -= 1
        elif t == ("p", ",") and depth == 0:
            items.append([])
            continue
        items[-1].append(t)
    return [i for i in items if i]


def _word(t: tuple[str, str]) -> str:
    return t[1].upper() if t[0] == "w" else ""


def _checked(item: list[tuple[str, str]]) -> str | None:
    """The column of a ``CHECK (json_valid(`c`))`` in ``item``, if any."""
    for i, t in enumerate(item):
        if _word(t) == "JSON_VALID" and i + 2 < len(item) and item[i + 2][0] in ("id", "w"):
            return item[i + 2][1]
    return None


def _column(item: list[tuple[str, str]]) -> tuple[str, bool] | None:
    """``(name, is JSON)`` of a column definition ``name type …``, None for a constraint."""
    if not item or item[0][0] not in ("id", "w") or _word(item[0]) in _CONSTRAINTS:
        return None
    name = item[0][1]
    is_json = (len(item) > 1 and _word(item[1]) == "JSON") or _checked(item) == name
    return name, is_json


def _skip(item: list[tuple[str, str]], i: int, *words: str) -> int:
    while i < len(item) and _word(item[i]) in words:
        i += 1
    return i


class JsonColumns:
    """The JSON columns of each table as of the stream position (see the module docstring).

    ``complete``: tables not listed have no JSON column (the history started from the whole
    ``information_schema``); otherwise only tables created while streaming are known.
    """

    __slots__ = ("_complete", "_followed", "_json", "_tables", "_unknown")

    def __init__(
        self,
        tables: dict[Key, set[str]],
        complete: bool = True,
        unknown: set[Key] | None = None,
        followed: set[Key] | None = None,
    ) -> None:
        self._tables = {k: set(v) for k, v in tables.items() if v}
        self._complete = complete
        self._unknown = set(unknown or ())
        self._followed = set(followed or ())
        self._json: dict[str, Any] | None = None  # to_json(), until the next DDL

    def columns(self, schema: str, table: str) -> set[str] | None:
        """The JSON columns of a table, or None when the history does not know it."""
        key = (schema, table)
        if key in self._unknown:
            return None
        if key in self._tables:
            return self._tables[key]
        return set() if self._complete or key in self._followed else None

    # -- persistence ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The persisted form (the same object until a DDL changes the history)."""
        if self._json is not None:
            return self._json
        self._json = {
            "tables": [[s, t, sorted(c)] for (s, t), c in sorted(self._tables.items())],
            "complete": self._complete,
            "unknown": sorted([s, t] for s, t in self._unknown),
            "followed": sorted([s, t] for s, t in self._followed),
        }
        return self._json

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JsonColumns:
        return cls(
            {(str(s), str(t)): {str(c) for c in cols} for s, t, cols in data.get("tables", [])},
            bool(data.get("complete", False)),
            {(str(s), str(t)) for s, t in data.get("unknown", [])},
            {(str(s), str(t)) for s, t in data.get("followed", [])},
        )

    def copy(self) -> JsonColumns:
        return JsonColumns(self._tables, self._complete, self._unknown, self._followed)

    # -- DDL -----------------------------------------------------------------------------------

    def apply(self, sql: str, default_schema: str, ansi_quotes: bool = False) -> None:
        """Replay one statement (anything that is not table DDL leaves the history as is)."""
        ddl = parse_ddl(sql, default_schema, ansi_quotes)
        if not ddl.tables:
            return
        self._json = None
        toks = tokens(sql, ansi_quotes)
        words = [_word(t) for t in toks]
        first = ddl.tables[0]
        if ddl.statement == "DROP TABLE":
            for key in ddl.tables:
                self._tables.pop(key, None)
                self._unknown.discard(key)
        elif ddl.statement == "RENAME TABLE":
            pairs = list(zip(ddl.tables[0::2], ddl.tables[1::2], strict=False))
            if len(ddl.tables) != 2 * len(pairs):  # a name used twice: follow the pairs
                pairs = self._pairs(toks, default_schema)
            for old, new in pairs:
                self._move(old, new)
        elif ddl.statement == "CREATE TABLE":
            self._create(first, toks, words, default_schema)
        elif ddl.statement == "ALTER TABLE":
            self._alter(first, toks, words, ddl.tables[1] if len(ddl.tables) > 1 else None)

    def _pairs(self, toks: list[tuple[str, str]], schema: str) -> list[tuple[Key, Key]]:
        names: list[Key] = []
        i, n = 2, len(toks)
        while i < n:
            if toks[i][0] in ("id", "w") and _word(toks[i]) != "TO":
                if i + 2 < n and toks[i + 1] == ("p", "."):
                    names.append((toks[i][1], toks[i + 2][1]))
                    i += 3
                    continue
                names.append((schema, toks[i][1]))
            i += 1
        return list(zip(names[0::2], names[1::2], strict=False))

    def _move(self, old: Key, new: Key) -> None:
        for bag in (self._unknown, self._followed):
            if old in bag:
                bag.discard(old)
                bag.add(new)
            else:
                bag.discard(new)
        cols = self._tables.pop(old, None)
        self._tables.pop(new, None)
        if cols:
            self._tables[new] = cols

    def _forget(self, key: Key) -> None:
        self._tables.pop(key, None)
        self._followed.discard(key)
        self._unknown.add(key)

    def _set(self, key: Key, cols: set[str]) -> None:
        """The table's JSON columns are now ``cols`` (and the table is followed)."""
        self._tables.pop(key, None)
        if cols:
            self._tables[key] = set(cols)
        self._unknown.discard(key)
        self._followed.add(key)

    def _create(self, key: Key, toks: list[tuple[str, str]], words: list[str], schema: str) -> None:
        if "LIKE" in words[:12]:
            i = words.index("LIKE") + 1
            if i < len(toks):
                src = (
                    (toks[i][1], toks[i + 2][1])
                    if toks[i + 1 : i + 2] == [("p", ".")]
                    else (
                        schema,
                        toks[i][1],
                    )
                )
                known = self.columns(*src)
                if known is None:
                    self._forget(key)
                else:
                    self._set(key, known)
                return
        if "SELECT" in words or "(" not in [t[1] for t in toks if t[0] == "p"]:
            self._forget(key)  # types from a query: not followed
            return
        start = next(i for i, t in enumerate(toks) if t == ("p", "("))
        depth, end = 0, len(toks)
        for j in range(start, len(toks)):
            if toks[j] == ("p", "("):
                depth += 1
            elif toks[j] == ("p", ")"):
                depth -= 1
                if depth == 0:
                    end = j
                    break
        cols: set[str] = set()
        for item in _split(toks[start + 1 : end]):
            col = _column(item)
            if col is not None and col[1]:
                cols.add(col[0])
            elif col is None and (checked := _checked(item)) is not None:
                cols.add(checked)
        self._set(key, cols)

    def _alter(
        self, key: Key, toks: list[tuple[str, str]], words: list[str], renamed: Key | None
    ) -> None:
        # The specification list starts after ALTER [ONLINE] [IGNORE] TABLE name.
        i = words.index("TABLE") + 1
        i += 3 if i + 1 < len(toks) and toks[i + 1] == ("p", ".") else 1
        known = self.columns(*key)
        if known is None:
            if renamed is not None:
                self._move(key, renamed)
            return
        cols = set(known)
        for item in _split(toks[i:]):
            head = _word(item[0])
            if head == "ADD":
                j = _skip(item, 1, "COLUMN", "IF", "NOT", "EXISTS")
                if j < len(item) and item[j] == ("p", "("):  # ADD (a INT, b JSON)
                    inner = item[j + 1 : -1] if item[-1] == ("p", ")") else item[j + 1 :]
                    for sub in _split(inner):
                        col = _column(sub)
                        if col is not None and col[1]:
                            cols.add(col[0])
                    continue
                col = _column(item[j:])
                if col is not None and col[1]:
                    cols.add(col[0])
                elif col is None and (checked := _checked(item)) is not None:
                    cols.add(checked)
            elif head in ("MODIFY", "CHANGE"):
                j = _skip(item, 1, "COLUMN", "IF", "EXISTS")
                if j >= len(item):
                    continue
                old = item[j][1]
                rest = item[j + 1 :] if head == "CHANGE" else item[j:]
                col = _column(rest)
                cols.discard(old)
                if col is not None and col[1]:
                    cols.add(col[0])
            elif head == "DROP":
                j = _skip(item, 1, "COLUMN", "IF", "EXISTS")
                if j < len(item) and _word(item[j]) not in _CONSTRAINTS:
                    cols.discard(item[j][1])
            elif (
                head == "RENAME"
                and len(item) > 4
                and _word(item[1]) == "COLUMN"
                and item[2][1] in cols
            ):
                cols.discard(item[2][1])
                cols.add(item[4][1])
        if cols or key in self._tables:
            self._tables.pop(key, None)
            if cols:
                self._tables[key] = cols
        if renamed is not None:
            self._move(key, renamed)
