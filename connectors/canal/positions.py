"""The ``canal`` source's position, and GTID sets in both flavours.

The source has one partition, ``binlog``. Its position is where to resume (the next change to
read), as committed with the records it covers::

    {"file": "binlog.000007", "pos": 1234,   # start of the transaction to resume in
     "events": 2, "rows": 0,                  # rows events (of captured tables) and rows of
                                              # the next one already delivered from it
     "gtids": "0-1-812",                      # executed GTID set up to that transaction
     "server_id": 1,                          # the server that wrote it
     "snapshot": {...},                       # present while a snapshot is in progress
     "xa": {"X'7831',X'',1": [file, pos]},    # prepared XA transactions not decided yet
     "json": {"tables": [...], ...}}          # MariaDB JSON columns then (.jsoncols)

``pos`` is always a transaction (event group) start, because the table map a rows event needs
is written at the start of its transaction; ``events``/``rows`` say how much of that
transaction was already delivered (Debezium's ``event``/``row``). After a commit both are 0 and
``pos`` is the end of the committed transaction. A run that resumed inside a transaction hands
out its resume position unchanged until it is past the events it skips (never the transaction's
start with fewer events: a crash then would deliver them twice).

GTID sets: MariaDB's is ``gtid_binlog_pos`` style, the last ``domain-server-seq`` per domain;
MySQL's ``uuid:1-100:102,uuid2:1-5`` interval lists. Resume uses file and position; the set is
kept so that a position can be checked against ``gtid_purged`` and shown to operators.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from meshconnect.positioncheck import Check, fields_problem, nullable, text, whole

__all__ = ["GtidSet", "Position", "binlog_name_problem", "binlog_order", "position_problem"]

_U32 = 2**32 - 1
_U64 = 2**64 - 1
#: A binlog file's name as SHOW BINARY LOGS lists it: a base name, a dot, a sequence number
#: of at least six digits (``mysql-bin.000007``, ``mariadb-bin.1234567``); no directory.
_BINLOG_NAME = re.compile(r"[^/\\\x00-\x1f]+\.[0-9]{6,}")
_MARIA_GTID = re.compile(r"([0-9]{1,10})-([0-9]{1,10})-([0-9]{1,20})")
_UUID = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)
_INTERVAL = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")


def binlog_name_problem(name: str) -> str | None:
    if _BINLOG_NAME.fullmatch(name):
        return None
    return f"{name!r} is not a binlog file name (BASENAME.NNNNNN, as SHOW BINARY LOGS lists)"


def gtid_set_problem(value: str) -> str | None:
    """Why ``value`` is not a GTID set as the servers write one (MariaDB ``D-S-N,...``, MySQL
    ``UUID:A-B:C,...``), or None."""
    for part in (p.strip() for p in value.replace("\n", "").split(",")):
        if not part:
            continue
        if ":" in part:
            uuid, *ranges = part.split(":")
            if not _UUID.fullmatch(uuid) or not ranges:
                return f"{part!r} is not a MySQL GTID interval list (UUID:A-B[:C-D...])"
            for r in ranges:
                m = _INTERVAL.fullmatch(r)
                first = int(m.group(1)) if m else 0
                last = int(m.group(2) or first) if m else 0
                if not m or not 1 <= first <= last <= _U64:
                    return f"{part!r}: {r!r} is not an interval A or A-B of 1 <= A <= B"
        else:
            m = _MARIA_GTID.fullmatch(part)
            if not m or int(m.group(1)) > _U32 or int(m.group(2)) > _U32 or int(m.group(3)) > _U64:
                return f"{part!r} is not a MariaDB GTID (DOMAIN-SERVER-SEQUENCE)"
    return None


def _is_snapshot(v: Any) -> bool:
    """``{"tables": [[SCHEMA, TABLE], ...], "after": [KEY...] | null, "done": n}``."""
    return (
        isinstance(v, dict)
        and set(v) <= {"tables", "after", "done"}
        and isinstance(v.get("tables", []), list)
        and all(
            isinstance(t, list) and len(t) == 2 and all(isinstance(x, str) for x in t)
            for t in v.get("tables", [])
        )
        and (v.get("after") is None or isinstance(v["after"], list))
        and type(v.get("done", 0)) is int
        and v.get("done", 0) >= 0
    )


def _is_xa(v: Any) -> bool:
    return isinstance(v, dict) and all(
        isinstance(p, list)
        and len(p) == 2
        and isinstance(p[0], str)
        and binlog_name_problem(p[0]) is None
        and type(p[1]) is int
        and 4 <= p[1] <= _U64
        for p in v.values()
    )


def _is_json_history(v: Any) -> bool:
    """The MariaDB JSON-column history (:meth:`.jsoncols.JsonColumns.to_json`)."""

    def names(items: Any, n: int) -> bool:
        return isinstance(items, list) and all(
            isinstance(i, list) and len(i) == n and all(isinstance(x, str) for x in i[:2])
            for i in items
        )

    return (
        isinstance(v, dict)
        and set(v) <= {"tables", "complete", "unknown", "followed"}
        and names(v.get("tables", []), 3)
        and all(
            isinstance(t[2], list) and all(isinstance(c, str) for c in t[2])
            for t in v.get("tables", [])
        )
        and type(v.get("complete", False)) is bool
        and names(v.get("unknown", []), 2)
        and names(v.get("followed", []), 2)
    )


_FIELDS = {
    "file": text(
        "a binlog file name (BASENAME.NNNNNN, as SHOW BINARY LOGS lists it)",
        lambda v: binlog_name_problem(v) is None,
    ),
    "pos": whole(4, _U64),  # 4: the first event follows the file's magic number
    "events": whole(),
    "rows": whole(),
    "gtids": text("a GTID set (MariaDB D-S-N,... or MySQL UUID:A-B,...)"),
    "server_id": nullable(whole(0, _U32)),
    "snapshot": nullable(
        Check(
            '{"tables": [[SCHEMA, TABLE], ...], "after": [KEY, ...] or null, "done": n}',
            _is_snapshot,
        )
    ),
    "xa": Check('an object {"XA ID": [BINLOG FILE, POS]}', _is_xa),
    "json": nullable(
        Check(
            'the JSON-column history {"tables": [[SCHEMA, TABLE, [COLUMN...]]], ...}',
            _is_json_history,
        )
    ),
    "filter": nullable(
        Check(
            'the table filter it was written with {"include": [REGEX, ...], "exclude": [...]}',
            lambda v: _is_filter(v),
        )
    ),
}


def _is_filter(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"include", "exclude"}
        and all(isinstance(v, list) and all(isinstance(p, str) for p in v) for v in value.values())
    )


def position_problem(data: dict[str, Any]) -> str | None:
    """Why ``data`` is not a position this source writes (see the module docstring)."""
    if problem := fields_problem(data, _FIELDS, ["file", "pos"]):
        return problem
    if isinstance(data.get("gtids"), str) and (problem := gtid_set_problem(data["gtids"])):
        return f"gtids: {problem}"
    return None


class GtidSet:
    """A GTID set that transactions are added to one by one (MySQL or MariaDB flavour)."""

    __slots__ = ("_maria", "_mysql")

    def __init__(self, text: str = "") -> None:
        #: MariaDB: domain -> (server, seq) of the last transaction.
        self._maria: dict[int, tuple[int, int]] = {}
        #: MySQL: uuid -> sorted, disjoint [start, end] intervals.
        self._mysql: dict[str, list[list[int]]] = {}
        for part in (p.strip() for p in text.replace("\n", "").split(",")):
            if not part:
                continue
            if ":" in part:
                uuid, *ranges = part.split(":")
                intervals = self._mysql.setdefault(uuid.lower(), [])
                for r in ranges:
                    a, _, b = r.partition("-")
                    intervals.append([int(a), int(b or a)])
                intervals.sort()
            else:
                d, s, n = (int(x) for x in part.split("-"))
                self._maria[d] = (s, n)

    def add(self, gtid: str) -> None:
        """Record a committed transaction's GTID (``d-s-n`` or ``uuid:n``)."""
        if ":" in gtid:
            uuid, _, n = gtid.partition(":")
            gno = int(n)
            intervals = self._mysql.setdefault(uuid.lower(), [])
            if intervals and intervals[-1][1] + 1 == gno:
                intervals[-1][1] = gno
            elif not intervals or intervals[-1][1] < gno:
                intervals.append([gno, gno])
            elif not any(a <= gno <= b for a, b in intervals):
                intervals.append([gno, gno])
                intervals.sort()
                merged: list[list[int]] = []
                for a, b in intervals:
                    if merged and merged[-1][1] + 1 >= a:
                        merged[-1][1] = max(merged[-1][1], b)
                    else:
                        merged.append([a, b])
                self._mysql[uuid.lower()] = merged
        else:
            domain, server, seq = map(int, gtid.split("-"))
            self._maria[domain] = (server, seq)

    def __str__(self) -> str:
        if self._maria:
            return ",".join(f"{d}-{s}-{n}" for d, (s, n) in sorted(self._maria.items()))
        return ",".join(
            uuid + "".join(f":{a}" if a == b else f":{a}-{b}" for a, b in iv)
            for uuid, iv in sorted(self._mysql.items())
        )

    def __bool__(self) -> bool:
        return bool(self._maria or self._mysql)


@dataclass(slots=True)
class Position:
    """The committed position (see the module docstring)."""

    file: str
    pos: int
    events: int = 0
    rows: int = 0
    gtids: str = ""
    server_id: int | None = None
    #: Snapshot progress while one runs: ``{"tables": [...], "after": [...] | None,
    #: "done": rows so far}``; None once the snapshot finished (or none was taken).
    snapshot: dict[str, Any] | None = field(default=None)
    #: Prepared XA transactions not yet committed or rolled back: the XA id (as the binlog
    #: writes it, ``X'7831',X'',1``) -> ``[file, pos]`` of the start of its PREPARE group.
    xa: dict[str, list[Any]] = field(default_factory=dict)
    #: MariaDB: the JSON-column history as of this position (:mod:`.jsoncols`), or None.
    json: dict[str, Any] | None = None
    #: The ``include``/``exclude`` of the run that wrote it (``{"include": [...], "exclude":
    #: [...]}``): a restart whose filters capture more tables snapshots those. None: unknown.
    filter: dict[str, list[str]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": self.file,
            "pos": self.pos,
            "events": self.events,
            "rows": self.rows,
            "gtids": self.gtids,
            "server_id": self.server_id,
        }
        if self.snapshot is not None:
            out["snapshot"] = self.snapshot
        if self.xa:
            out["xa"] = {k: list(v) for k, v in self.xa.items()}
        if self.json is not None:
            out["json"] = self.json
        if self.filter is not None:
            out["filter"] = self.filter
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Position:
        if problem := position_problem(data):
            raise ValueError(f"not a canal binlog position: {problem}")
        try:
            return cls(
                file=str(data["file"]),
                pos=int(data["pos"]),
                events=int(data.get("events", 0)),
                rows=int(data.get("rows", 0)),
                gtids=str(data.get("gtids") or ""),
                server_id=data.get("server_id"),
                snapshot=data.get("snapshot"),
                xa={str(k): [str(v[0]), int(v[1])] for k, v in (data.get("xa") or {}).items()},
                json=data.get("json"),
                filter=_filter(data.get("filter")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a canal binlog position: {data!r} ({exc})") from None

    def sort_key(self) -> tuple[int, int]:
        """Binlog order: the file's sequence number, then the offset."""
        return binlog_order(self.file, self.pos)


def _filter(data: Any) -> dict[str, list[str]] | None:
    if data is None:
        return None
    return {
        "include": [str(p) for p in data["include"]],
        "exclude": [str(p) for p in data["exclude"]],
    }


def binlog_order(file: str, pos: int) -> tuple[int, int]:
    """``(file sequence number, offset)`` for comparing binlog coordinates."""
    _, _, seq = file.rpartition(".")
    try:
        return int(seq), pos
    except ValueError:
        return 0, pos
