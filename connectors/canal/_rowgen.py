"""Row-image decoders generated per table map, for :mod:`.fastbinlog`.

A :class:`RowDecoder` belongs to one :class:`~.events.Table`. For each set of columns present
in a rows event (with ``binlog_row_image=FULL``: all of them, so one set per table) it generates
Python source with one straight line per column and compiles it once:

* fixed-width numbers next to each other are read by one ``struct.unpack_from``;
* strings are sliced and decoded inline with the column's codec, ENUM(1 byte) by a table,
  DATETIME(fsp) by bit arithmetic (falling back to the closure for zero/invalid dates);
* DECIMAL (its reader is itself generated per precision and scale), other temporal types,
  JSON, SET and BIT values call the per-column closures of ``_rowcodec``.

Every image starts with its NULL bitmap (one bit per present column). Images without NULLs
run the straight line; others run a copy that tests each nullable column's bit. Absent columns
(``binlog_row_image`` MINIMAL/NOBLOB) are ``None``.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable
from typing import Any

from meshconnect.connectors.canal._rowcodec import (
    DATETIME2,
    ENUM,
    INT24,
    NEWDECIMAL,
    STRING,
    YEAR,
    column_reader,
    decimal_text_reader,
    fixed_format,
    string_prefix,
    text_codec,
)
from meshconnect.connectors.canal.events import Table

__all__ = ["RowDecoder"]

Rows = list[tuple[Any, ...]]
DecodeRows = Callable[[bytes, int, int], Rows]
DecodeImage = Callable[[bytes, int], tuple[tuple[Any, ...], int]]

_STRINGS = frozenset({15, 253, 254, 252, 255})  # VARCHAR, VAR_STRING, STRING, BLOB, GEOMETRY


class RowDecoder:
    """Decodes the row images of one table (see the module docstring).

    ``text_values``: DATETIME and DECIMAL values of columns outside the primary key come as
    Canal's text, for the ``canal`` format, which writes every value as text. A DATETIME is
    ``YYYY-MM-DD HH:MM:SS[.f]`` (the column's digits; zero and invalid dates as the server
    shows them) instead of a ``datetime``: the text of a second is made once and kept (a
    column's recent seconds, at most 4,096), where a ``datetime`` and its ``isoformat`` cost
    ~10,000 instructions a value. A DECIMAL is its exact digits in fixed-point notation (what
    the format writes for the ``Decimal``), without making the ``Decimal``. Key columns keep
    their types: keys are compared with the snapshot's."""

    __slots__ = ("_by_present", "table", "text_values")

    def __init__(self, table: Table, text_values: bool = False) -> None:
        self.table = table
        self.text_values = text_values
        self._by_present: dict[int, tuple[DecodeRows, DecodeImage]] = {}

    def functions(self, present: int) -> tuple[DecodeRows, DecodeImage]:
        """``(decode_rows(data, pos, end), decode_image(data, pos))`` for the columns whose
        bits are set in ``present`` (bit i = column i)."""
        found = self._by_present.get(present)
        if found is None:
            found = self._by_present[present] = _generate(self.table, present, self.text_values)
        return found


def _length_expr(prefix: int) -> str:
    if prefix == 1:
        return "b[p]"
    if prefix == 2:
        return "(b[p] | b[p + 1] << 8)"
    if prefix == 3:
        return "(b[p] | b[p + 1] << 8 | b[p + 2] << 16)"
    return "(b[p] | b[p + 1] << 8 | b[p + 2] << 16 | b[p + 3] << 24)"


#: The most seconds a DATETIME column's text cache keeps (then it starts over).
SECONDS_CACHED = 4096


def _seconds_text(cache: dict[int, str]) -> Callable[[int], str]:
    """The text of a DATETIME2 value's packed seconds ``x`` (``YYYY-MM-DD HH:MM:SS``), kept in
    ``cache``; ``""`` for a zero or invalid date (the caller then takes the server's text)."""
    datetime = dt.datetime

    def text(x: int) -> str:
        ymd = x >> 17
        ym = ymd >> 5
        try:
            t = datetime(ym // 13, ym % 13, ymd & 31, x >> 12 & 31, x >> 6 & 63, x & 63).isoformat(
                " "
            )
        except ValueError:
            t = ""
        if len(cache) >= SECONDS_CACHED:
            cache.clear()
        cache[x] = t
        return t

    return text


def _generate(
    table: Table, present: int, text_values: bool = False
) -> tuple[DecodeRows, DecodeImage]:
    columns = table.columns
    key = set(table.primary_key)
    names: dict[str, Any] = {
        "_unpack": struct.unpack_from,
        "_from_bytes": int.from_bytes,
        "_datetime": dt.datetime,
    }
    # Per present column: (index, null-bit index, code lines reading it into v{index}).
    plan: list[tuple[int, int, str | None, list[str]]] = []
    bit = 0
    for i, column in enumerate(columns):
        if not present >> i & 1:
            continue
        v = f"v{i}"
        fmt = fixed_format(column)
        lines: list[str]
        if fmt is not None:
            lines = []  # filled below (runs or single)
        elif column.type in _STRINGS:
            prefix = string_prefix(column)
            codec = text_codec(column)
            q = f"q = p + {prefix} + {_length_expr(prefix)}"
            if codec is None:
                lines = [q, f"{v} = b[p + {prefix}:q]", "p = q"]
                if column.type == STRING:  # BINARY(n): the binlog drops trailing zero bytes
                    width = int(column.metadata)
                    lines.append(f"if len({v}) < {width}: {v} = {v}.ljust({width}, b'\\0')")
            else:
                names[f"E{i}"], names[f"R{i}"] = codec
                lines = [q, f"{v} = b[p + {prefix}:q].decode(E{i}, R{i})", "p = q"]
        elif column.type == INT24:
            lines = [
                f"{v} = int.from_bytes(b[p:p + 3], 'little', signed={not column.unsigned})",
                "p += 3",
            ]
        elif column.type == DATETIME2:
            names[f"C{i}"] = column_reader(column)  # zero/invalid dates: the text MySQL shows
            fsp = int(column.metadata)
            size = 5 + (fsp + 1) // 2
            frac = [
                "us = 0",
                "us = b[p + 5] * 10000",
                "us = (b[p + 5] << 8 | b[p + 6]) * 100",
                "us = b[p + 5] << 16 | b[p + 6] << 8 | b[p + 7]",
            ][(fsp + 1) // 2]
            if text_values and column.name not in key:
                cache: dict[int, str] = {}
                names[f"T{i}"], names[f"M{i}"] = cache.get, _seconds_text(cache)
                lines = [
                    "x = _from_bytes(b[p:p + 5], 'big') - 0x8000000000",
                    f"{v} = T{i}(x)",
                    f"if {v} is None:",
                    f"    {v} = M{i}(x)",
                    f"if not {v}:",
                    f"    {v} = C{i}(b, p)[0]",
                ]
                if fsp:
                    lines += [
                        "else:",
                        "    " + frac,
                        f"    {v} = f'{{{v}}}.{{us:06d}}'[:{20 + fsp}]",
                    ]
                lines.append(f"p += {size}")
            else:
                lines = [
                    "x = _from_bytes(b[p:p + 5], 'big') - 0x8000000000",
                    frac,
                    "ymd = x >> 17",
                    "ym = ymd >> 5",
                    "try:",
                    f"    {v} = _datetime(ym // 13, ym % 13, ymd & 31, x >> 12 & 31, x >> 6 & 63,"
                    " x & 63, us)",
                    "except ValueError:",
                    f"    {v} = C{i}(b, p)[0]",
                    f"p += {size}",
                ]
        elif column.type == NEWDECIMAL and text_values and column.name not in key:
            names[f"C{i}"] = decimal_text_reader(*column.metadata)
            lines = [f"{v}, p = C{i}(b, p)"]
        elif column.type == ENUM and column.metadata == 1:
            members = ("", *(column.enum_values or ()))
            names[f"N{i}"] = members + ("",) * (256 - len(members))
            lines = [f"{v} = N{i}[b[p]]", "p += 1"]
        else:
            names[f"C{i}"] = column_reader(column)
            lines = [f"{v}, p = C{i}(b, p)"]
        plan.append((i, bit, fmt, lines))
        bit += 1
    null_bytes = (bit + 7) // 8

    def single(i: int, fmt: str) -> list[str]:
        size = struct.calcsize("<" + fmt)
        names[f"S{i}"] = struct.Struct("<" + fmt).unpack_from
        lines = [f"v{i} = S{i}(b, p)[0]", f"p += {size}"]
        if columns[i].type == YEAR:
            lines.append(f"if v{i}: v{i} += 1900")
        return lines

    # Fast path: no NULLs, runs of fixed-width columns in one struct call.
    fast: list[str] = []
    run: list[tuple[int, str]] = []

    def flush() -> None:
        if not run:
            return
        if len(run) == 1:
            fast.extend(single(*run[0]))
        else:
            fmt = "<" + "".join(f for _, f in run)
            key = f"S{run[0][0]}_{len(run)}"
            names[key] = struct.Struct(fmt).unpack_from
            targets = ", ".join(f"v{i}" for i, _ in run)
            fast.append(f"{targets}, = {key}(b, p)")
            fast.append(f"p += {struct.calcsize(fmt)}")
            for i, _ in run:
                if columns[i].type == YEAR:
                    fast.append(f"if v{i}: v{i} += 1900")
        run.clear()

    for i, _bit, fmt, lines in plan:
        if fmt is not None:
            run.append((i, fmt))
        else:
            flush()
            fast.extend(lines)
    flush()

    # Checked path: test the NULL bit of every nullable column.
    checked: list[str] = []
    for i, nbit, fmt, lines in plan:
        body = single(i, fmt) if fmt is not None else lines
        if columns[i].nullable:
            checked.append(f"if nb & {1 << nbit}:")
            checked.append(f"    v{i} = None")
            checked.append("else:")
            checked.extend("    " + line for line in body)
        else:
            checked.extend(body)

    absent = [f"v{i} = None" for i, column in enumerate(columns) if not present >> i & 1]
    if null_bytes == 1:
        read_nb = ["nb = b[p]", "p += 1"]
    else:
        read_nb = [f"nb = int.from_bytes(b[p:p + {null_bytes}], 'little')", f"p += {null_bytes}"]
    image = ", ".join(f"v{i}" for i in range(len(columns))) + ("," if len(columns) == 1 else "")

    def block(indent: str) -> list[str]:
        out = [indent + line for line in read_nb]
        out.append(indent + "if not nb:")
        out.extend(indent + "    " + line for line in fast or ["pass"])
        out.append(indent + "else:")
        out.extend(indent + "    " + line for line in checked or ["pass"])
        return out

    source = [
        "def decode_rows(b, p, end):",
        "    rows = []",
        "    append = rows.append",
        *("    " + line for line in absent),
        "    while p < end:",
        *block("        "),
        f"        append(({image}))",
        "    return rows",
        "",
        "def decode_image(b, p):",
        *("    " + line for line in absent),
        *block("    "),
        f"    return ({image}), p",
    ]
    code = "\n".join(source) + "\n"
    scope: dict[str, Any] = dict(names)
    exec(compile(code, f"<rows {table.schema}.{table.name}>", "exec"), scope)
    return scope["decode_rows"], scope["decode_image"]
