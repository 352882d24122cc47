"""Row changes and DDL as records: Canal FlatMessage, Debezium envelope, typed row.

Every record is a CloudEvent: ``type`` is ``mysql.<op>`` (``insert``, ``update``, ``delete``,
``read`` for snapshot rows, ``ddl``), ``subject`` is ``schema.table``, ``partitionkey`` the
primary key (:meth:`Shape.key_text`: one value as text; several escaped and joined by
``|``), ``time`` the binlog event time, and the extensions ``binlogfile``/``binlogpos``
(the end of the event), ``txid`` (the GTID, or ``file:pos`` of the transaction start
without GTIDs) and ``gtid`` carry the source position. ``id`` is deterministic
(``<file>:<pos>:<row>``), so a change delivered twice is recognisable.

One record per row change. Canal puts all rows of one binlog event in one FlatMessage; here
``data`` (and ``old``) always hold exactly one row. A primary-key change is one ``UPDATE``
FlatMessage in ``canal`` format (as Canal does), and a delete of the old key plus an insert of
the new one in ``debezium`` and ``row`` format (as Debezium does), so a consumer keyed by
``partitionkey`` stays right.

Values (see docs/cdc.md for the full table): ``row``/``debezium`` give JSON-safe typed values:
integers exact (unsigned too), DECIMAL as an exact string, FLOAT as the shortest decimal that
reads back as the same 32-bit float, DATE ``YYYY-MM-DD``, DATETIME ``YYYY-MM-DDTHH:MM:SS[.f]``,
TIMESTAMP the same in UTC with ``Z``, TIME ``[-]HH:MM:SS[.f]`` (fractions with the column's
digits), JSON as JSON, ENUM by name, SET a list of names, BIT an integer, binary base64.
``canal`` gives every value as a string as Canal does (SET ``a,b``, JSON as text), binary as
base64 or, with ``binary: latin1``, Canal's own ISO-8859-1 text.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from meshconnect import ConfigError, DataError, EncodedRecord, Record, eventrules, jsonvalue

from ._fixedbin import TEXT_OF
from .coltypes import binlog_type, same_definition
from .events import Column, RowsEvent
from .server import ColumnSchema, TableSchema, sql_type

__all__ = ["Formatter", "Shape", "TxMeta"]

Conv = Callable[[Any], Any]

_KIND_OF_DATA_TYPE = {
    "decimal": "decimal",
    "numeric": "decimal",
    "float": "float32",
    "double": "float",
    "real": "float",
    "timestamp": "timestamp",
    "date": "date",
    "datetime": "datetime",
    "time": "time",
    "year": "year",
    "bit": "bit",
    "json": "json",
    "enum": "enum",
    "set": "set",
}
_TYPE_NAMES = {
    1: "tinyint",
    2: "smallint",
    3: "int",
    8: "bigint",
    9: "mediumint",
    246: "decimal",
    4: "float",
    5: "double",
    7: "timestamp",
    17: "timestamp",
    10: "date",
    12: "datetime",
    18: "datetime",
    11: "time",
    19: "time",
    13: "year",
    16: "bit",
    245: "json",
    247: "enum",
    248: "set",
    15: "varchar",
    253: "varchar",
    254: "char",
    252: "blob",
    255: "geometry",
}
# Binlog type code -> value kind, for columns the schema cache does not know: by the type's
# name, plus the codes whose name says less (old DECIMAL, NEWDATE, GEOMETRY as bytes).
_KIND_OF_TYPE = {
    code: _KIND_OF_DATA_TYPE[name]
    for code, name in _TYPE_NAMES.items()
    if name in _KIND_OF_DATA_TYPE
} | {0: "decimal", 14: "date", 255: "bytes"}


#: DATETIME, TIME, TIMESTAMP in the old binlog types (MySQL 5.5, MariaDB 5.3 "hires").
_OLD_TEMPORAL = frozenset({7, 11, 12})


def _float32(v: float) -> float:
    """The shortest decimal that reads back as the same 32-bit float (what MySQL 8 prints;
    MariaDB prints six digits, which may not read back: 16777216 as 16777200)."""
    packed = struct.pack("<f", v)
    for digits in range(1, 10):
        text = f"{v:.{digits}g}"
        try:
            if struct.pack("<f", float(text)) == packed:
                return float(text)
        except OverflowError:  # rounded past the largest float: more digits
            continue
    return v


def _frac(micro: int, fsp: int) -> str:
    return "." + f"{micro:06d}"[:fsp] if fsp else ""


def _time_text(v: dt.timedelta, fsp: int) -> str:
    total = v.days * 86400 * 1_000_000 + v.seconds * 1_000_000 + v.microseconds
    sign = "-" if total < 0 else ""
    total = abs(total)
    secs, micro = divmod(total, 1_000_000)
    h, rest = divmod(secs, 3600)
    m, s = divmod(rest, 60)
    return f"{sign}{h:02d}:{m:02d}:{s:02d}{_frac(micro, fsp)}"


def _row_conv(kind: str, fsp: int, binary: str) -> Conv | None:
    """Typed JSON-safe value (``row``/``debezium``); None: the value is already JSON-safe."""
    if kind == "decimal":
        return lambda v: format(v, "f") if isinstance(v, Decimal) else v
    if kind == "float32":
        return lambda v: _float32(v) if isinstance(v, float) else v
    if kind == "datetime":

        def datetime_(v: Any) -> Any:
            if isinstance(v, dt.datetime):
                return v.isoformat(timespec="seconds") + _frac(v.microsecond, fsp)
            return v

        return datetime_
    if kind == "timestamp":

        def timestamp(v: Any) -> Any:
            if isinstance(v, dt.datetime):
                if v.tzinfo is not None:
                    v = v.astimezone(dt.UTC).replace(tzinfo=None)
                return v.isoformat(timespec="seconds") + _frac(v.microsecond, fsp) + "Z"
            return v

        return timestamp
    if kind == "date":
        return lambda v: v.isoformat() if isinstance(v, dt.date) else v
    if kind == "time":
        return lambda v: _time_text(v, fsp) if isinstance(v, dt.timedelta) else v
    if kind == "json":
        return lambda v: jsonvalue.loads(v) if isinstance(v, str) else v
    if kind == "set":
        return lambda v: list(v) if isinstance(v, tuple | list) else v
    if kind == "text":
        return lambda v: _bytes(v, binary) if isinstance(v, bytes) else v
    return lambda v: _bytes(v, binary) if isinstance(v, bytes) else v


def _bytes(v: bytes, binary: str) -> str:
    return v.decode("latin-1") if binary == "latin1" else base64.b64encode(v).decode()


def _set_text(members: Sequence[str]) -> str:
    """A SET as the server prints it: a comma goes before a member only after some text (so
    the empty member leaves no trace: ``('', 'a')`` prints ``a``)."""
    text = ""
    for m in members:
        text = text + "," + m if text else m
    return text


def _decimal_text(v: Any) -> str:
    """A DECIMAL's exact digits in fixed-point notation. ``str`` gives them for every value a
    column holds but the tiny (below 1E-6) and those with a positive exponent, which it
    writes in scientific notation, with an ``E``; ``format(v, "f")`` costs twice as much."""
    if isinstance(v, Decimal):
        text = str(v)
        return text if "E" not in text else format(v, "f")
    return str(v)


# A str is already the text (the fast reader's ``text_values``): the generated row function
# passes it without a call.
_decimal_text.inline = True  # type: ignore[attr-defined]


def _canal_conv(kind: str, fsp: int, binary: str) -> Conv:
    """Canal's text form of a value (``None`` stays ``None``)."""
    if kind == "decimal":
        return _decimal_text
    if kind == "float32":
        return lambda v: repr(_float32(v)) if isinstance(v, float) else str(v)
    if kind in ("datetime", "timestamp"):
        # One isoformat call cut to the column's digits: "YYYY-MM-DD HH:MM:SS" is 19
        # characters, then "." and six digits, of which the column keeps ``fsp``.
        spec, cut = ("microseconds", 20 + fsp) if fsp else ("seconds", 19)

        def datetime_(v: Any) -> str:
            if isinstance(v, dt.datetime):
                if v.tzinfo is not None:
                    v = v.astimezone(dt.UTC).replace(tzinfo=None)
                return v.isoformat(" ", spec)[:cut]
            return str(v)

        # A str is already the text (zero dates; the fast reader's ``text_values``): the
        # generated row function passes it without a call.
        datetime_.inline = True  # type: ignore[attr-defined]
        return datetime_
    if kind == "time":
        return lambda v: _time_text(v, fsp) if isinstance(v, dt.timedelta) else str(v)
    if kind == "json":
        return lambda v: v if isinstance(v, str) else jsonvalue.dumps(v).decode()
    if kind == "set":
        return lambda v: _set_text(v) if isinstance(v, tuple | list) else str(v)
    if kind == "bool":
        return lambda v: "1" if v else "0"
    if kind == "year":  # as the server prints it: 0000, 1901 … 2155
        return lambda v: f"{v:04d}" if isinstance(v, int) else str(v)

    def plain(v: Any) -> str:
        if isinstance(v, str):
            return v
        if isinstance(v, bytes):
            return _bytes(v, binary)
        if isinstance(v, float):
            return repr(v)
        return str(v)

    plain.inline = True  # type: ignore[attr-defined]  # see _canal_row
    return plain


def _canal_row(names: tuple[str, ...], index: Sequence[int], convs: Sequence[Conv]) -> Conv:
    """A function from a row image to its Canal text form (:meth:`Shape.canal`), generated
    for the table: one dict display, each value converted inline. A ``plain`` column (text,
    integers) costs no call for a string or an integer (``str`` of an int is what ``plain``
    gives it); other columns call their converter, and None stays None."""
    scope: dict[str, Any] = {"_str": str, "_int": int}
    items = []
    for n, (i, conv) in enumerate(zip(index, convs, strict=True)):
        scope[f"_c{n}"] = conv
        if getattr(conv, "inline", False):
            value = (
                f"v if (v := image[{i}]).__class__ is str else _str(v) if v.__class__ is _int "
                f"else None if v is None else _c{n}(v)"
            )
        else:
            value = f"None if (v := image[{i}]) is None else _c{n}(v)"
        items.append(f"{names[n]!r}: {value}")
    source = "def canal(image):\n    return {" + ", ".join(items) + "}\n"
    exec(compile(source, f"<canal row {len(names)} columns>", "exec"), scope)
    return scope["canal"]


@dataclass(slots=True)
class Shape:
    """How the row images of one table become record data (built once per table map)."""

    schema: str
    table: str
    subject: str
    #: Names of the kept columns, and their indexes in the row image (None: all, in order).
    names: tuple[str, ...]
    index: tuple[int, ...] | None
    #: Primary key names (key order) and their indexes in the full row image.
    pk: tuple[str, ...]
    pk_index: tuple[int, ...]
    row_convs: tuple[tuple[int, Conv], ...]
    canal_convs: tuple[Conv, ...]
    mysql_type: dict[str, str]
    sql_type: dict[str, int]
    #: Binlog image positions whose bytes become the server's text (UUID, INET4, INET6: the
    #: binlog has them as BINARY(n)), so binlog images equal the snapshot's; see ``fix``.
    text_of: tuple[tuple[int, Callable[[bytes], str]], ...] = ()
    #: The generated :meth:`canal` (``_canal_row``); None: made on first use.
    canal_row: Conv | None = None
    #: The JSON of a FlatMessage's parts that are the table's, by op (``_message_rest``).
    canal_json: dict[str, tuple[bytes, bytes, bytes]] | None = None

    @classmethod
    def build(
        cls,
        schema: str,
        table: str,
        image_names: Sequence[str],
        columns: Sequence[Column] | None,
        info: TableSchema | None,
        keep: Sequence[int] | None,
        binary: str,
        primary_key: Sequence[str] = (),
        maxlen: dict[int, int] | None = None,
        mariadb: bool = True,
        json_columns: set[str] | None = None,
    ) -> Shape:
        """The shape of a table map (``columns`` given: keys and types as the binlog says
        they were when the event was written, ``info`` only where it has the same column
        definition, see :mod:`.coltypes`; ``json_columns``: MariaDB's JSON columns then, from
        :mod:`.jsoncols`, None if unknown) or of the current schema (snapshot rows)."""
        kept = list(range(len(image_names))) if keep is None else list(keep)
        names = tuple(image_names[i] for i in kept)
        if columns is not None:
            pk = tuple(primary_key)
        else:
            pk = tuple(info.primary_key if info is not None else primary_key)
        position = {n: i for i, n in enumerate(image_names)}
        pk = tuple(n for n in pk if n in position)
        row_convs: list[tuple[int, Conv]] = []
        canal_convs: list[Conv] = []
        mysql_type: dict[str, str] = {}
        sql_types: dict[str, int] = {}
        for out_i, i in enumerate(kept):
            name = image_names[i]
            col_schema = info.column(name) if info is not None else None
            binlog_col = columns[i] if columns is not None and i < len(columns) else None
            if (
                col_schema is not None
                and col_schema.fsp
                and binlog_col is not None
                and binlog_col.type in _OLD_TEMPORAL
            ):
                # checked before the binlog's definition is compared: the old format's table
                # map carries no precision, so it never matches the schema's
                raise ConfigError(
                    f"canal: {schema}.{table}.{name} is a {col_schema.column_type} in "
                    "MariaDB's pre-10.1 storage format (mysql56_temporal_format=OFF), "
                    "whose binlog values carry no precision and cannot be decoded: run "
                    f"`ALTER TABLE {schema}.{table} FORCE` with "
                    "mysql56_temporal_format=ON to convert it"
                )
            derived = None
            if binlog_col is not None:
                derived = binlog_type(binlog_col, maxlen or {}, mariadb)
                if json_columns is not None and derived == "longtext" and name in json_columns:
                    col_schema = ColumnSchema(name, "json", "json", 12, 0, True)
                elif col_schema is not None and (
                    not same_definition(derived, col_schema, mariadb)
                    or (col_schema.json and json_columns is not None and mariadb)
                ):
                    col_schema = None  # changed since the event: the binlog's definition
            if col_schema is not None:
                kind = _KIND_OF_DATA_TYPE.get(col_schema.data_type.lower(), "plain")
                fsp = col_schema.fsp
                mysql_type[name] = col_schema.column_type
                sql_types[name] = col_schema.sql_type
            else:
                code = binlog_col.type if binlog_col is not None else 253
                kind = _KIND_OF_TYPE.get(code, "plain")
                meta = binlog_col.metadata if binlog_col is not None else 0
                fsp = (
                    meta
                    if isinstance(meta, int) and kind in ("datetime", "timestamp", "time")
                    else 0
                )
                fsp = fsp if fsp <= 6 else 0
                type_name = derived or _TYPE_NAMES.get(code, "varchar")
                mysql_type[name] = type_name
                sql_types[name] = sql_type(type_name.split("(")[0].split()[0], type_name)
            conv = _row_conv(kind, fsp, binary)
            if conv is not None:
                row_convs.append((out_i, conv))
            canal_convs.append(_canal_conv(kind, fsp, binary))
        return cls(
            schema=schema,
            table=table,
            subject=spec_text(f"{schema}.{table}"),
            names=names,
            index=None if keep is None else tuple(kept),
            pk=pk,
            pk_index=tuple(position[n] for n in pk),
            row_convs=tuple(row_convs),
            canal_convs=tuple(canal_convs),
            mysql_type=mysql_type,
            sql_type=sql_types,
            text_of=tuple(
                (i, TEXT_OF[c.data_type.lower()])
                for i, name in enumerate(image_names)
                if info is not None
                and (c := info.column(name)) is not None
                and c.data_type.lower() in TEXT_OF
            ),
        )

    def fix(self, event: RowsEvent) -> None:
        """Give a binlog event's images the values the snapshot reads (in place)."""
        text_of = self.text_of
        if not text_of:
            return

        def fixed(image: tuple[Any, ...]) -> tuple[Any, ...]:
            row = list(image)
            for i, text in text_of:
                v = row[i]
                if isinstance(v, bytes):
                    row[i] = text(v)
            return tuple(row)

        event.rows = [fixed(r) for r in event.rows]
        if event.before is not None:
            event.before = [fixed(r) for r in event.before]

    def kept(self, image: tuple[Any, ...]) -> Sequence[Any]:
        index = self.index
        return image if index is None else [image[i] for i in index]

    def row(self, image: tuple[Any, ...]) -> dict[str, Any]:
        """The typed values; :class:`ValueError` naming the column when one cannot be made
        (a JSON column holding text that is not JSON, say)."""
        values = list(self.kept(image))
        for i, conv in self.row_convs:
            v = values[i]
            if v is not None:
                try:
                    values[i] = conv(v)
                except ValueError as exc:
                    raise ValueError(f"column {self.names[i]!r}: {exc}") from exc
        return dict(zip(self.names, values, strict=True))

    def canal(self, image: tuple[Any, ...]) -> dict[str, Any]:
        """The row image in Canal's text form: every value a string, None kept."""
        return self.canal_function()(image)

    def canal_function(self) -> Conv:
        """The generated function behind :meth:`canal` (made on first use), for loops that
        convert many rows without a method call each."""
        row = self.canal_row
        if row is None:
            index = self.index if self.index is not None else range(len(self.names))
            row = self.canal_row = _canal_row(self.names, index, self.canal_convs)
        return row

    def key(self, image: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(image[i] for i in self.pk_index)

    def key_text(self, image: tuple[Any, ...]) -> str | None:
        """The ``partitionkey``: one key column's text as is; several columns' texts each
        with ``\\`` and ``|`` escaped by a backslash, joined by ``|`` (so ``('a|b', 'c')``
        is ``a\\|b|c`` and ``('a', 'b|c')`` is ``a|b\\|c``: distinct rows, distinct keys).
        A character a CloudEvents String may not hold (a control character such as a tab, a
        noncharacter) becomes ``\\uXXXX``; a one-column key holding one, or a backslash, has
        its backslashes doubled first, so distinct keys stay distinct."""
        index = self.pk_index
        if not index:
            return None
        if len(index) == 1:
            return spec_text(_key_part(image[index[0]]))
        joined = "|".join(
            _key_part(image[i]).replace("\\", "\\\\").replace("|", "\\|") for i in index
        )
        return eventrules.valid_string(joined) if joined else joined


def spec_text(text: str) -> str:
    """``text`` as a CloudEvents String, one to one: as it is when it holds neither a backslash
    nor a character a String may not hold; otherwise with backslashes doubled and each such
    character as ``\\uXXXX`` (a table name or key with a tab cannot be a CloudEvent's subject
    or partitionkey as it is, and must not collide with one spelled ``\\u0009``)."""
    return eventrules.spelled_string(text)


def _key_part(v: Any) -> str:
    """One key column as text: bytes base64, DECIMAL exact, dates ISO, TIME as MySQL prints."""
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return _time_text(v, 6)
    return str(v)


def _canal_data(canal: Conv, image: tuple[Any, ...]) -> list[dict[str, Any]] | None:
    """A FlatMessage's ``data`` for one row (``[row]`` in Canal's text form), or None when
    its values cannot be made (:meth:`Formatter.change` then reports it)."""
    try:
        return [canal(image)]
    except ValueError:
        return None


def _text(shape: Shape, image: tuple[Any, ...] | None) -> dict[str, Any] | None:
    """A row image in Canal's text form (every value a string, JSON as stored): what a dead
    letter keeps of a row whose typed values could not be made."""
    return None if image is None else shape.canal(image)


@dataclass(slots=True)
class TxMeta:
    """Where a change comes from (the binlog event, or the snapshot)."""

    file: str
    pos: int
    timestamp: int
    txid: str
    gtid: str | None
    server_id: int | None
    snapshot: bool = False


class Formatter:
    """Builds records in the configured ``format``."""

    def __init__(
        self, fmt: str, source: str, name: str, flavour: str = "mysql", encoded: bool = False
    ) -> None:
        self.fmt = fmt
        self.source = source
        self.name = name
        self.flavour = flavour
        #: Whether the rows of insert and delete events in ``canal`` format become
        #: :class:`~meshconnect.EncodedRecord`\ s (their FlatMessage built as JSON bytes, the
        #: dict made only if something reads it): when nothing reads a record's data before
        #: the mesh store (``ConnectorContext.data_untouched``).
        self.encoded = encoded
        #: Seconds since the epoch for Canal's ``ts`` (when the message was built).
        self.clock: Callable[[], float] = time.time
        #: Canal's FlatMessage ``id``: the batch number within this run (as Canal's batch id).
        self.batch_id = 0
        #: Canal's ``ts`` of the batch's messages (:meth:`next_batch`: read once a batch, which
        #: takes milliseconds); None: the clock is read for each message.
        self.ts_ms: int | None = None
        self._good_files: set[str] = set()
        #: Row changes whose values could not be made (``(record, DataError)``; the record's
        #: data is the row's text form), for the batch's ``failures``: the errors policy.
        self.failures: list[tuple[Record, BaseException]] = []

    def next_batch(self) -> None:
        """A new batch: the next ``id``, and the time its messages are built at (``ts``)."""
        self.batch_id += 1
        self.ts_ms = int(self.clock() * 1000)

    def _now_ms(self) -> int:
        ts = self.ts_ms
        return ts if ts is not None else int(self.clock() * 1000)

    # -- rows ----------------------------------------------------------------------------------

    def change(
        self,
        op: str,
        shape: Shape,
        before: tuple[Any, ...] | None,
        after: tuple[Any, ...] | None,
        meta: TxMeta,
        row: int,
        out: list[Record],
    ) -> None:
        """Append the record(s) of one row change (``op``: insert/update/delete/read)."""
        if op == "update" and self.fmt != "canal" and shape.pk_index:
            assert before is not None and after is not None
            if shape.key(before) != shape.key(after):
                self._one("delete", shape, before, None, meta, row, out, ":d")
                self._one("insert", shape, None, after, meta, row, out, ":c")
                return
        self._one(op, shape, before, after, meta, row, out, "")

    def changes(
        self,
        op: str,
        shape: Shape,
        images: Sequence[tuple[Any, ...]],
        meta: TxMeta,
        first: int,
        out: list[Record],
    ) -> None:
        """The records of rows ``first``… of one insert or delete event (``images``: the rows
        inserted, or deleted): :meth:`change` for each, with what the rows share (the
        event's time, extensions, ids' prefix, the FlatMessage's constant fields) made once.
        The same records, field for field; a row whose values cannot be made goes through
        :meth:`change`, which reports it.

        With :attr:`encoded`, in ``canal`` format, the rows are
        :class:`~meshconnect.EncodedRecord`\\ s: each one's FlatMessage as the bytes
        ``jsonvalue.dumps`` writes for the dict otherwise made, built as ``{"data":`` + the
        row's ``[{…}]`` (one msgspec call for the event's rows) + the rest of the message
        (:meth:`_message_rest`). Canal's values are text (no float, so no NaN to look for).
        An event with a row whose values cannot be made, or with text JSON cannot hold (a
        lone surrogate), is made of dicts, as without it: :meth:`change` reports the row, the
        store names the record."""
        if self.fmt != "canal" or meta.snapshot or op not in ("insert", "delete"):
            for i in range(first, len(images)):
                if op == "insert":
                    self.change(op, shape, None, images[i], meta, i, out)
                else:
                    self.change(op, shape, images[i], None, meta, i, out)
            return
        canal = shape.canal_function()
        # Each row's "data": a list of its one row in Canal's text form; None for a row whose
        # values cannot be made.
        rows: list[list[dict[str, Any]] | None]
        try:
            rows = [[canal(images[i])] for i in range(first, len(images))]
        except ValueError:  # rare: row by row, to find which
            rows = [_canal_data(canal, images[i]) for i in range(first, len(images))]
        lines: list[bytes] | None = None
        if self.encoded and None not in rows:
            try:
                if len(rows) == 1:  # a one-row event (single-row transactions): no split
                    lines = [jsonvalue.encode_unchecked(rows[0])]
                else:
                    lines = jsonvalue.dumps_each(rows, floats=False)
                rest = self._message_rest(op, shape, meta)
            except (ValueError, TypeError):  # text JSON cannot hold: made of dicts
                lines = None
        base: dict[str, Any] = {"binlogfile": meta.file, "binlogpos": meta.pos, "txid": meta.txid}
        if meta.gtid:
            base["gtid"] = meta.gtid
        # The store takes the encoded rows' bytes and extensions unchecked (check=False) when
        # what the rows share is valid, checked here: the binlog file's name once per name,
        # the offset against a CloudEvents Integer (a file a big transaction grew past 2 GiB).
        # The txid and gtid are made of numbers (and the checked file name), the partitionkey
        # a row adds is a valid String by construction (digits, or Shape.key_text's spelling).
        own = lines is None or (
            meta.pos <= eventrules.INT32_MAX
            and (meta.file in self._good_files or self._good_file(meta.file))
        )
        pk_index = shape.pk_index
        one_key = pk_index[0] if len(pk_index) == 1 else -1
        key_text = shape.key_text
        pk = shape.pk
        # Without ``lines``: the FlatMessage of every row but "data" and "pkNames"; each row
        # takes a copy (cheaper than a dict display of its 14 items), the last the message.
        message = self._flat_message(op, shape, meta, None, None) if lines is None else {}
        prefix = f"{meta.file}:{meta.pos}:"
        source, type_, subject = self.source, "mysql." + op, shape.subject
        when = _iso(meta.timestamp)
        append, encoded, plain = out.append, EncodedRecord.of, Record.fast
        last = len(images) - 1
        made = iter(lines or ())
        for i, row in enumerate(rows, first):
            image = images[i]
            if row is None:
                if op == "insert":
                    self.change(op, shape, None, image, meta, i, out)
                else:
                    self.change(op, shape, image, None, meta, i, out)
                continue
            ext = base.copy() if i != last else base  # the last row takes the base itself
            if one_key >= 0 and (v := image[one_key]).__class__ is int:
                ext["partitionkey"] = str(v)  # digits: nothing to escape
            else:
                key = key_text(image)
                if key is not None:
                    ext["partitionkey"] = key
            if lines is not None:
                data = b"".join((b'{"data":', next(made), rest))  # one copy
                append(
                    encoded(data, prefix + str(i), source, type_, subject, when, ext, check=not own)
                )
                continue
            flat = message if i == last else message.copy()
            flat["data"] = row
            flat["pkNames"] = list(pk) or None
            append(
                plain(
                    flat,
                    prefix + str(i),
                    source,
                    type_,
                    subject,
                    "application/json",
                    when,
                    None,
                    ext,
                )
            )

    def _good_file(self, name: str) -> bool:
        """Whether a binlog file name is a valid extension value (kept when it is)."""
        if eventrules.extension_value_problem(name) is not None:
            return False
        if len(self._good_files) > 1000:
            self._good_files.clear()
        self._good_files.add(name)
        return True

    def _message_rest(self, op: str, shape: Shape, meta: TxMeta) -> bytes:
        """The JSON of the FlatMessage :meth:`_flat_message` makes for a row of an insert or
        delete event, after its first key, ``data``: ``,"database":…}``, the keys in that
        order. The table's parts are encoded once per table and op; the event's (``es``,
        ``gtid``, ``id``, ``ts``) each time. ``TypeError`` when the table's names hold text
        JSON cannot."""
        parts = shape.canal_json
        if parts is None:
            parts = shape.canal_json = {}
        table = parts.get(op)
        if table is None:
            dumps = jsonvalue.dumps
            table = parts[op] = (
                b',"database":' + dumps(shape.schema) + b',"es":',
                b',"isDdl":false,"mysqlType":'
                + dumps(shape.mysql_type)
                + b',"old":null,"pkNames":'
                + dumps(list(shape.pk) or None)
                + b',"sql":"","sqlType":'
                + dumps(shape.sql_type)
                + b',"table":'
                + dumps(shape.table)
                + b',"ts":',
                b',"type":' + dumps("INSERT" if op in ("insert", "read") else op.upper()) + b"}",
            )
        head, middle, tail = table
        return b'%b%d,"gtid":%b,"id":%d%b%d%b' % (
            head,
            meta.timestamp * 1000,
            jsonvalue.encode_unchecked(meta.gtid or ""),
            self.batch_id,
            middle,
            self._now_ms(),
            tail,
        )

    def _one(
        self,
        op: str,
        shape: Shape,
        before: tuple[Any, ...] | None,
        after: tuple[Any, ...] | None,
        meta: TxMeta,
        row: int,
        out: list[Record],
        suffix: str,
    ) -> None:
        image = after if after is not None else before
        assert image is not None
        failure: DataError | None = None
        try:
            if self.fmt == "row":
                data: Any = shape.row(image)
            elif self.fmt == "debezium":
                data = self._debezium(op, shape, before, after, meta, row)
            else:
                data = self._canal(op, shape, before, after, meta)
        except ValueError as exc:
            where = "the snapshot" if meta.snapshot else f"binlog {meta.file}:{meta.pos}"
            failure = DataError(f"canal: {shape.subject} {exc} (row {row} at {where})")
            data = {"before": _text(shape, before), "after": _text(shape, after)}
        if meta.snapshot:
            rid = f"snapshot:{shape.subject}:{shape.key_text(image) or row}"
        else:
            rid = f"{meta.file}:{meta.pos}:{row}{suffix}"
        ext: dict[str, Any] = {
            "binlogfile": meta.file,
            "binlogpos": meta.pos,
            "txid": meta.txid,
        }
        if meta.gtid:
            ext["gtid"] = meta.gtid
        key = shape.key_text(image)
        if key is not None:
            ext["partitionkey"] = key
        record = Record.fast(
            data,
            rid,
            self.source,
            "mysql." + op,
            shape.subject,
            "application/json",
            _iso(meta.timestamp),
            None,
            ext,
        )
        if failure is None:
            out.append(record)
        else:
            self.failures.append((record, failure))

    def _canal(
        self,
        op: str,
        shape: Shape,
        before: tuple[Any, ...] | None,
        after: tuple[Any, ...] | None,
        meta: TxMeta,
    ) -> dict[str, Any]:
        image = after if after is not None else before
        assert image is not None
        data = shape.canal(image)
        old = None
        if op == "update" and before is not None:
            prev = shape.canal(before)
            old = [{k: v for k, v in prev.items() if data[k] != v}]
        return self._flat_message(op, shape, meta, [data], old)

    def _flat_message(
        self,
        op: str,
        shape: Shape,
        meta: TxMeta,
        data: list[dict[str, Any]] | None,
        old: list[dict[str, Any]] | None,
    ) -> dict[str, Any]:
        """Canal's FlatMessage of a row change: ``data`` and ``old`` as given, the rest from
        the table's shape and the transaction."""
        return {
            "data": data,
            "database": shape.schema,
            "es": meta.timestamp * 1000,
            "gtid": meta.gtid or "",
            "id": self.batch_id,
            "isDdl": False,
            "mysqlType": shape.mysql_type,
            "old": old,
            "pkNames": list(shape.pk) or None,
            "sql": "",
            "sqlType": shape.sql_type,
            "table": shape.table,
            "ts": self._now_ms(),
            "type": "INSERT" if op in ("insert", "read") else op.upper(),
        }

    def _source_block(self, meta: TxMeta, db: str, table: str, row: int) -> dict[str, Any]:
        return {
            "version": "meshconnect",
            "connector": self.flavour,
            "name": self.name,
            "ts_ms": meta.timestamp * 1000,
            "snapshot": "true" if meta.snapshot else "false",
            "db": db,
            "table": table or None,
            "server_id": meta.server_id,
            "gtid": meta.gtid,
            "file": meta.file,
            "pos": meta.pos,
            "row": row,
            "thread": None,
            "query": None,
        }

    def _debezium(
        self,
        op: str,
        shape: Shape,
        before: tuple[Any, ...] | None,
        after: tuple[Any, ...] | None,
        meta: TxMeta,
        row: int,
    ) -> dict[str, Any]:
        return {
            "before": shape.row(before) if before is not None else None,
            "after": shape.row(after) if after is not None else None,
            "source": self._source_block(meta, shape.schema, shape.table, row),
            "op": {"insert": "c", "update": "u", "delete": "d", "read": "r"}[op],
            "ts_ms": int(time.time() * 1000),
        }

    # -- DDL -----------------------------------------------------------------------------------

    def ddl(
        self,
        sql: str,
        schema: str,
        kind: str,
        table: str,
        meta: TxMeta,
        statement: str = "",
        n: int = 0,
    ) -> Record:
        """The record of a statement for one table it names (``n``: which; a statement
        naming several tables makes one record per table, ids ``…:ddl``, ``…:ddl:1``, …)."""
        if self.fmt == "canal":
            data: Any = {
                "data": None,
                "database": schema,
                "es": meta.timestamp * 1000,
                "gtid": meta.gtid or "",
                "id": self.batch_id,
                "isDdl": True,
                "mysqlType": None,
                "old": None,
                "pkNames": None,
                "sql": sql,
                "sqlType": None,
                "table": table,
                "ts": self._now_ms(),
                "type": kind,
            }
        elif self.fmt == "debezium":
            data = {
                "source": self._source_block(meta, schema, table, 0),
                "ts_ms": int(time.time() * 1000),
                "databaseName": schema,
                "ddl": sql,
                "type": kind,
                "table": table or None,
            }
        else:
            data = {"database": schema, "table": table or None, "type": kind, "sql": sql}
        ext: dict[str, Any] = {"binlogfile": meta.file, "binlogpos": meta.pos, "txid": meta.txid}
        if meta.gtid:
            ext["gtid"] = meta.gtid
        if statement:
            ext["statement"] = statement
        return Record.fast(
            data,
            f"{meta.file}:{meta.pos}:ddl" + (f":{n}" if n else ""),
            self.source,
            "mysql.ddl",
            spec_text(f"{schema}.{table}" if table else schema),
            "application/json",
            _iso(meta.timestamp),
            None,
            ext,
        )


@functools.lru_cache(maxsize=64)
def _iso(ts: int) -> str:
    """Event time (whole seconds) as ISO 8601 UTC; cached, as events come second by second."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
