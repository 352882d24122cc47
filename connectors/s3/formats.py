"""Object formats of the ``s3`` connector: how records become an object's bytes (sink) and an
object's bytes become values (source). JSON through :mod:`meshconnect.jsonvalue` (exact
numbers), CSV through :mod:`csv`, Parquet through pyarrow (imported on first use)."""

from __future__ import annotations

import csv
import io
import itertools
import re
import zlib
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from meshconnect import DataError, Record, jsonvalue

__all__ = [
    "EXTENSIONS",
    "Block",
    "ObjectBody",
    "TooLarge",
    "check_parquet_row",
    "decode_blocks",
    "decode_object",
    "encode_payload",
    "format_of_key",
    "gunzip",
    "schema_signature",
    "unpack",
]

#: The sink's extension per format (``.gz`` is appended for gzip JSON lines and CSV).
EXTENSIONS = {"json": ".jsonl", "cloudevents": ".jsonl", "csv": ".csv", "parquet": ".parquet"}
_CONTENT_TYPES = {
    "json": "application/x-ndjson",
    "cloudevents": "application/cloudevents-batch+json",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}
GZIP_LEVEL = 6
#: The most bytes of a damaged object kept as its failure's data (the dead letter).
RAW_LIMIT = 1024 * 1024


def extension(fmt: str, compression: str) -> str:
    """The object name's extension for a format and compression."""
    ext = EXTENSIONS[fmt]
    return ext + ".gz" if compression == "gzip" and fmt != "parquet" else ext


def content_type(fmt: str) -> str:
    return _CONTENT_TYPES[fmt]


# -- sink: records to bytes -----------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def schema_signature(fmt: str, data: Any) -> tuple[Any, ...]:
    """What must stay the same within one CSV or Parquet object: the field names (CSV), or
    the field names with their value kinds (Parquet; ``""`` for null, which fits any kind),
    in name order: the order of a record's fields does not matter, its row is written in
    the object's order (the CSV header's, the Parquet columns': its first record's).
    ``DataError`` when ``data`` is not an object."""
    if not isinstance(data, dict):
        raise DataError(f"format {fmt}: data must be an object, not {_kind(data) or 'null'}")
    if fmt == "csv":
        return tuple(sorted(data))
    return tuple(sorted(zip(data, map(_kind, data.values()), strict=True)))


def signatures_fit(current: list[tuple[str, str]], new: tuple[Any, ...]) -> bool:
    """Whether a Parquet record of signature ``new`` fits an object of ``current`` (both in
    name order: :func:`schema_signature`); fills the null kinds of ``current`` that ``new``
    makes known (in place)."""
    if len(current) != len(new):
        return False
    for (name, kind), (new_name, new_kind) in zip(current, new, strict=True):
        if name != new_name:
            return False
        if kind and new_kind and kind != new_kind:
            return False
    for i, (name, kind) in enumerate(current):
        if not kind and new[i][1]:
            current[i] = (name, new[i][1])
    return True


def encode_payload(fmt: str, record: Record) -> tuple[bytes | dict[str, Any], int]:
    """One record's part of an object and its size in bytes (before compression): a JSON line
    for ``json``/``cloudevents``, the data object for ``csv``/``parquet`` (sized as its JSON).
    ``DataError`` when the record cannot be written."""
    try:
        if fmt == "json":
            encoded = record.encoded_data
            if encoded is not None and record.data is not None:
                line = encoded + b"\n"
            else:
                line = jsonvalue.dumps(record.data, newline=True)
            return line, len(line)
        if fmt == "cloudevents":
            line = jsonvalue.dumps(record.to_dict(), newline=True)
            return line, len(line)
        data = record.data
        if not isinstance(data, dict):
            raise DataError(f"format {fmt}: data must be an object, not {_kind(data) or 'null'}")
        # the open object keeps the row as its JSON, decoded again when the object is built:
        # a row as a dict takes ~10 times its JSON's size, so rotate_bytes (counted in JSON)
        # would bound nothing like the memory it says (64MiB of rows: over 600MiB of dicts)
        encoded = record.encoded_data
        if encoded is None:
            encoded = jsonvalue.dumps(data)
        return bytes(encoded), len(encoded)
    except TypeError as exc:
        raise DataError(f"format {fmt}: {exc}") from None


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | Decimal | float):
        return str(value)
    return jsonvalue.dumps(value).decode()


class ObjectBody:
    """The parts of one open object, turned into the object's bytes by :meth:`build` (run in
    a worker thread: the compression releases the GIL)."""

    __slots__ = ("compression", "fmt", "parts")

    def __init__(self, fmt: str, compression: str) -> None:
        self.fmt = fmt
        self.compression = compression
        self.parts: list[Any] = []

    def _rows(self) -> list[dict[str, Any]]:
        """The CSV or Parquet rows: the parts are their JSON (see :func:`encode_payload`)."""
        loads = jsonvalue.loads
        return [p if isinstance(p, dict) else loads(p, max_depth=None) for p in self.parts]

    def build(self) -> bytes:
        fmt = self.fmt
        if fmt in ("json", "cloudevents"):
            raw = b"".join(self.parts)
        elif fmt == "csv":
            rows = self._rows()
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\n")
            header = list(rows[0])
            writer.writerow(header)
            writer.writerows([_csv_text(row[k]) for k in header] for row in rows)
            raw = out.getvalue().encode("utf-8")
        else:
            return _parquet(self._rows(), self.compression)
        if self.compression == "gzip":
            compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
            return compressor.compress(raw) + compressor.flush()
        return raw


def _json_text_nested(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with nested values (objects, lists) as JSON text."""
    return [
        {
            k: jsonvalue.dumps(v).decode() if isinstance(v, dict | list) else v
            for k, v in row.items()
        }
        for row in rows
    ]


def _has_empty_struct(arrow_type: Any) -> bool:
    """Whether ``arrow_type`` holds a struct with no field (Parquet cannot write one)."""
    import pyarrow as pa

    if pa.types.is_struct(arrow_type):
        if arrow_type.num_fields == 0:
            return True
        return any(
            _has_empty_struct(arrow_type.field(i).type) for i in range(arrow_type.num_fields)
        )
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return _has_empty_struct(arrow_type.value_type)
    return False


def _table(rows: list[dict[str, Any]]) -> Any:
    """The Arrow table of ``rows`` (which have the same fields, in any order): the columns in
    the first row's order, each row's values taken by name (pyarrow's ``from_pylist``).
    Nested values whose shapes differ between rows (or a list of mixed kinds) are kept as
    JSON text; an empty object anywhere is written as JSON text too. Raises what pyarrow
    raises when even that fails (see :func:`check_parquet_row`)."""
    import pyarrow as pa

    try:
        table = pa.Table.from_pylist(rows)
        if not any(_has_empty_struct(f.type) for f in table.schema):
            return table
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        pass
    return pa.Table.from_pylist(_json_text_nested(rows))


_INT64 = range(-(2**63), 2**63)


def _plain(value: Any) -> bool:
    """Whether pyarrow surely converts ``value`` (a cheap walk that spares most records the
    ~0.1 ms of a trial conversion): null, a bool, text, a float, a 64-bit integer, a finite
    decimal of at most 38 digits and scale (so that any two of a column fit a 76-digit one),
    a non-empty object of such values, a list of scalars of one kind. False: not sure."""
    if value is None or isinstance(value, bool | str | float):
        return True
    if isinstance(value, int):
        return value in _INT64
    if isinstance(value, Decimal):
        if not value.is_finite():
            return False
        _sign, digits, exponent = value.as_tuple()
        return len(digits) + abs(int(exponent)) <= 38
    if isinstance(value, dict):
        return bool(value) and all(_plain(v) for v in value.values())
    if isinstance(value, list):
        kinds = {_kind(v) for v in value} - {""}
        return (
            len(kinds) <= 1
            and kinds <= {"bool", "int", "float", "decimal", "str"}
            and all(_plain(v) for v in value)
        )
    return False


def check_parquet_row(data: dict[str, Any]) -> None:
    """``DataError`` when the record's data cannot become a Parquet row (an integer beyond 64
    bits, a number beyond a 76-digit decimal, ...): any pyarrow conversion failure of a
    record is that record's data error, found before the record joins an open object (by a
    trial conversion, unless :func:`_plain` finds every value surely convertible)."""
    import pyarrow as pa

    if _plain(data):
        return
    try:
        _table([data])
    except (pa.ArrowException, OverflowError, ValueError, TypeError) as exc:
        raise DataError(f"format parquet: the record cannot be a Parquet row: {exc}") from None


def _parquet(rows: list[dict[str, Any]], compression: str) -> bytes:
    import pyarrow.parquet as pq

    table = _table(rows)
    out = io.BytesIO()
    pq.write_table(table, out, compression="gzip" if compression == "gzip" else "none")
    return out.getvalue()


# -- source: bytes to values ----------------------------------------------------------------


#: msgspec's JSON-lines decoder behind :data:`meshconnect.jsonvalue.decode_unchecked` (the
#: same numbers: Decimal from the exact text), one C call for many lines; None if absent.
_decode_lines = getattr(getattr(jsonvalue.decode_unchecked, "__self__", None), "decode_lines", None)
#: msgspec's JSON-lines decoder that builds no value: each value's raw text (``msgspec.Raw``, a
#: view of the input from the value's first byte to its last), for :func:`_within_lines`.
_decode_raw_lines = msgspec.json.Decoder(msgspec.Raw).decode_lines
#: About this many bytes of whole lines are decoded in one call (a few hundred lines of the
#: usual size; small enough to stay in the CPU's cache from the slice to the values).
_CHUNK_BYTES = 1 << 18
_CHUNK = 1000
_BOM = b"\xef\xbb\xbf"
#: every byte but JSON's structural ones and the newline; the brackets as ``(`` and ``)``
_NOT_STRUCTURAL = bytes(b for b in range(256) if b not in b"[]{},:\n")
_BRACKETS = bytes.maketrans(b"[{]}", b"(())")

#: What :func:`decode_blocks` yields: the items' indexes (ascending), their values (or raw
#: text), and per item its error text (None: good), or None when every item is good.
Block = tuple[Sequence[int], list[Any], list[str | None] | None]


#: a blank line (only JSON whitespace), searched for up to a chunk's last newline (excluded):
#: one ending in a newline, or the last line when nothing follows its whitespace
_BLANK = re.compile(rb"(?:^|\n)[ \t\r]*(?:\n|\Z)")


def _structure(chunk: bytes) -> tuple[bytes, list[int]]:
    """``chunk``'s structure (its brackets, commas, colons and newlines, every bracket as
    ``(`` or ``)``: the rest deleted) and how many opening brackets each of its lines holds
    (four C calls for the whole chunk; as many counts as lines)."""
    structure = chunk.translate(_BRACKETS, _NOT_STRUCTURAL)
    counts = list(map(len, structure.translate(None, b"),:").split(b"\n")))
    if chunk.endswith(b"\n"):
        counts.pop()  # after the last newline: no line
    return structure, counts


def _within_lines(text: bytes) -> bool:
    """Whether no JSON value of ``text`` (which decodes as JSON lines) goes on past a newline.
    A JSON string cannot hold a newline (the decoder refuses one), so a newline stands in a
    value only between two of its tokens: a value's raw text (``msgspec.Raw``, its first
    byte to its last; no value built) holds a newline exactly when the value goes on over
    two lines."""
    try:
        return b"\n" not in b"".join(_decode_raw_lines(text))
    except (ValueError, RecursionError):  # decoded once already; when not: not proven
        return False


def _lines_of_brackets(structure: bytes, lines: int) -> bool:
    """A cheap sufficient check for :func:`_within_lines` of a chunk that decodes (of that
    ``structure``, see :func:`_structure`, and ``lines`` lines): in the structure, every
    newline but one at the chunk's very end stands between ``)`` and ``(`` (lines of objects
    and arrays, the usual case). One C call.

    Why it suffices: a newline inside a value stands between two of its tokens (no string
    holds one), and then the token before it is ``[``, ``{``, ``,`` or ``:``, or the one
    after it is ``]``, ``}``, ``,`` or ``:`` (in a container, a value or key is followed by
    a comma, a colon or the container's end). Only whitespace stands between the newline and
    those tokens, so in the structure the run of newlines holding it starts right after
    ``(``, ``,`` or ``:``, or ends right before ``)``, ``,`` or ``:``: some newline of the
    run is not between ``)`` and ``(``. A newline at the very end has nothing after it:
    inside a value, the chunk would not decode."""
    return structure.count(b")\n(") == lines - 1


def _one_value_a_line(
    chunk: bytes, values: list[Any], structure: bytes, counts: list[int], limit: int
) -> bool:
    """Whether the ``values`` decoded from ``chunk`` (of that ``structure``, whose lines hold
    ``counts`` opening brackets) are one a line, none nested deeper than ``limit``. One a
    line is three checks, each cheap, that together prove it: no value goes on over a
    newline (:func:`_lines_of_brackets`, else :func:`_within_lines`), so every line holds a
    whole number of values, none or more; no line holds none (is blank); and there are as
    many values as lines, so no line holds two. Without the first, a line of two values
    beside a value split over two lines
    (``{"a":1} {"b":2}`` / ``{"c":`` / ``3}``) passed for three good lines. The counts show
    a blank line and a line too deep: a line of an object or an array has at least one
    opening bracket (a line of a scalar, with none, makes a search for blank lines sure),
    and a value alone on its line nests at most as deep as that line's count."""
    if len(values) != len(counts) or max(counts) > limit:
        return False
    if min(counts) == 0 and _BLANK.search(chunk, 0, len(chunk) - chunk.endswith(b"\n")):
        return False
    return _lines_of_brackets(structure, len(counts)) or _within_lines(chunk)


def _json_blocks(body: bytes) -> Iterator[Block]:
    """JSON lines with the values of :func:`meshconnect.jsonvalue.loads` (exact numbers, the
    nesting limit), in blocks of the lines of about :data:`_CHUNK_BYTES`: a block's bytes are
    decoded in one decoder call and its items need no tuple each (most of the time per line
    was the per-line Python around the decoder). A block whose lines are not each one value
    (:func:`_one_value_a_line`: a blank line, a bad line, a line of two values, a value over
    two lines) or that holds a line too deep is decoded again line by line
    (:func:`_json_lines_slow`), so only a bad line becomes a failure with its text and the
    others are read."""
    if body.startswith(_BOM):  # as Windows tools write it; not part of the first value
        body = body[len(_BOM) :]
    size = len(body)
    limit = jsonvalue.MAX_DEPTH
    pos = 0
    first = 0  # the index (line number) of the block's first line
    while pos < size:
        end = body.find(b"\n", pos + _CHUNK_BYTES)
        end = size if end < 0 else end + 1
        chunk = body[pos:end]
        values: list[Any] | None = None
        if _decode_lines is not None:
            try:
                values = _decode_lines(chunk)
            except (ValueError, RecursionError, ArithmeticError):  # JSONValueError included
                values = None
        if values is not None:  # the counts give the lines too (no count of newlines)
            structure, counts = _structure(chunk)
            lines = len(counts)
            if not _one_value_a_line(chunk, values, structure, counts, limit):
                values = None
        else:
            lines = chunk.count(b"\n") + (not chunk.endswith(b"\n"))
        if values is not None:
            yield range(first, first + lines), values, None
        else:
            yield from _json_lines_slow(chunk, first)
        first += lines
        pos = end


def _json_lines_slow(body: bytes, first: int) -> Iterator[Block]:
    """The lines of ``body`` (the first one's index ``first``) as blocks of up to ``_CHUNK``
    lines: blank lines (nothing but JSON whitespace) skipped, a chunk's lines decoded in one
    call when that gives one value a line (as many values as lines, none over a newline),
    else line by line (a bad line: a failure with its text)."""
    loads = jsonvalue.loads
    limit = jsonvalue.MAX_DEPTH
    lines = body.split(b"\n")
    if body.endswith(b"\n"):
        lines.pop()  # the text after the last newline: no line
    for start in range(0, len(lines), _CHUNK):
        chunk = [(i, line) for i, line in enumerate(lines[start : start + _CHUNK], first + start)]
        # blank: JSON's whitespace only (a form feed or a vertical tab is no JSON: a failure)
        chunk = [(i, line) for i, line in chunk if line.strip(b" \t\r")]
        if not chunk:
            continue
        indexes = [index for index, _ in chunk]
        if _decode_lines is not None:
            try:
                joined = b"\n".join(line for _, line in chunk)
                values = _decode_lines(joined)
                structure, counts = _structure(joined)  # one count a line: no newline at the end
                if len(values) == len(counts) and (
                    _lines_of_brackets(structure, len(counts)) or _within_lines(joined)
                ):
                    # some line has more opening brackets than the nesting limit: look
                    if max(counts) > limit:
                        for (_, line), value in zip(chunk, values, strict=True):
                            if len(line) > 2 * limit:
                                jsonvalue.check_depth(line, value, limit)
                    yield indexes, values, None
                    continue
            except (ValueError, RecursionError, ArithmeticError):  # JSONValueError included
                pass
        items: list[Any] = []
        problems: list[str | None] = []
        for index, line in chunk:
            try:
                items.append(loads(line))
                problems.append(None)
            except (jsonvalue.JSONValueError, UnicodeDecodeError) as exc:
                try:  # the raw line: its text, or its bytes when they are not UTF-8
                    raw: str | bytes = line.decode("utf-8")
                except UnicodeDecodeError:
                    raw = line
                items.append(raw)
                problems.append(f"line {index + 1}: {exc}")
        yield indexes, items, problems


def format_of_key(key: str, fmt: str, compression: str) -> tuple[str, bool] | None:
    """``(format, gzipped)`` of an object by its key and the source's settings (``auto``: by
    the extension); None when ``auto`` finds no known extension."""
    lower = key.lower()
    gz = lower.endswith(".gz") if compression == "auto" else compression == "gzip"
    base = lower[:-3] if lower.endswith(".gz") else lower
    if fmt != "auto":
        return fmt, gz
    if base.endswith((".jsonl", ".json", ".ndjson")):
        return "json", gz
    if base.endswith(".csv"):
        return "csv", gz
    if base.endswith(".parquet"):
        return "parquet", gz and not base.endswith(".parquet")
    return None


def unpack(body: bytes, fmt: str, gz: bool, limit: int | None = None) -> bytes | None:
    """An object's bytes to decode: :func:`gunzip` when ``gz`` (None: damaged), but a Parquet
    object (``PAR1`` at its start) as it is: the sink's ``compression: gzip`` is Parquet's
    column codec, so a source configured as the sink was (``format: parquet``,
    ``compression: gzip``) reads its objects instead of failing each as bad gzip."""
    if not gz or (fmt == "parquet" and body[:4] == b"PAR1"):
        return body
    return gunzip(body, limit)


class TooLarge(Exception):
    """A gzip object decompresses to more than the source's ``max_object_bytes``."""


def gunzip(body: bytes, limit: int | None = None) -> bytes | None:
    """The decompressed bytes of a gzip object (members may be concatenated), or None when
    it is damaged. Nothing of a damaged stream is used: deflate has no checksum before the
    end, so the text decoded ahead of the damage may already be garbage (back-references
    copy earlier lines), and only the trailer's CRC would tell. :class:`TooLarge` when the
    output would pass ``limit`` bytes (a few KiB of gzip can hold gigabytes of zeros): the
    decompression stops there, so the memory stays bounded."""
    decompressor = zlib.decompressobj(31)
    out: list[bytes] = []
    total = 0
    data = body
    try:
        while True:
            room = 0 if limit is None else limit - total + 1  # 0: no bound
            chunk = decompressor.decompress(data, room)
            total += len(chunk)
            if limit is not None and total > limit:
                raise TooLarge(f"decompresses to more than {limit} bytes")
            out.append(chunk)
            if decompressor.unconsumed_tail:
                data = decompressor.unconsumed_tail
            elif decompressor.eof and decompressor.unused_data:  # concatenated members
                data = decompressor.unused_data
                decompressor = zlib.decompressobj(31)
            else:
                break
        out.append(decompressor.flush())
    except zlib.error:
        return None
    if not decompressor.eof:
        return None
    return b"".join(out)


#: What :func:`decode_object` yields: (item index, value, None) or (index, raw, error text).
Item = tuple[int, Any, str | None]


def decode_object(body: bytes, fmt: str, delimiter: str = ",") -> Iterator[Item]:
    """The items of an object's (decompressed) bytes, each with its index: the line number
    for JSON lines (blank lines skipped), the row number after the header for CSV, the row
    number for Parquet. A bad item yields its raw text and the reason; a Parquet file that
    does not open yields one failure at index 0 with its raw bytes (up to :data:`RAW_LIMIT`).
    A UTF-8 byte order mark at the start is dropped; blank CSV lines are skipped; a CSV
    header naming a column twice makes every row a failure (an object would keep one)."""
    for indexes, values, problems in decode_blocks(body, fmt, delimiter):
        yield from zip(indexes, values, problems or [None] * len(values), strict=True)


def decode_blocks(body: bytes, fmt: str, delimiter: str = ",") -> Iterator[Block]:
    """The items of :func:`decode_object` in blocks (see :data:`Block`), as the source reads
    them: JSON lines without a Python step per line."""
    if fmt in ("json", "cloudevents"):
        return _json_blocks(body)
    return _blocks_of(_rows(body, fmt, delimiter))


def _blocks_of(items: Iterator[Item]) -> Iterator[Block]:
    """``items`` in blocks of up to ``_CHUNK``."""
    while True:
        chunk = list(itertools.islice(items, _CHUNK))
        if not chunk:
            return
        indexes, values, problems = zip(*chunk, strict=True)
        yield (
            list(indexes),
            list(values),
            None if all(p is None for p in problems) else list(problems),
        )


#: The line :func:`_csv_rows` puts after an object's last: read as a row of its own, the
#: last record ended; swallowed into a field, the object ended inside a quoted field.
_CSV_END = "\x00meshconnect: end of object\x00"


def _csv_rows(text: str, delimiter: str) -> Iterator[Item]:
    """The rows of a CSV object's text after its header (see :func:`decode_object`). A row the
    reader refuses (a field over ``csv.field_size_limit()``) is a failure with its raw text
    (up to the line end where its quotes are balanced: a quoted field may hold newlines) and
    the rows after it are read; an object that ends inside a quoted field makes its last row
    a failure (``a,"b`` / ``1,2``: not one row ``b\n1,2``)."""
    lines = io.StringIO(text, newline="").readlines()
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n"
    end = _CSV_END.replace(delimiter, "")
    lines.append(end + "\n")
    last = len(lines) - 1  # the end line's index

    def read_from(line: int) -> Any:
        return csv.reader(itertools.islice(lines, line, None), delimiter=delimiter)

    def raw(start: int, stop: int) -> str:
        text = "".join(lines[start:stop])
        return text[:-2] if text.endswith("\r\n") else text.rstrip("\r\n")

    reader = read_from(0)
    base = 0  # the line the reader started at
    taken = 0  # lines read, up to the end of the last row
    header: list[str] | None = None
    twice: list[str] = []
    index = 0  # the rows after the header, good or bad (blank lines are none)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over csv.field_size_limit()
            if header is None:  # the header itself: the object is one failure
                yield 0, text.encode("utf-8")[:RAW_LIMIT], f"row 1 (the header): {exc}"
                return
            # the row goes on to the first line end with its quotes balanced; read on after it
            stop, quotes = taken, 0
            while stop < last:
                quotes += lines[stop].count('"')
                stop += 1
                if quotes % 2 == 0:
                    break
            yield index, raw(taken, stop)[:RAW_LIMIT], f"row {index + 1}: {exc}"
            index += 1
            taken = base = stop
            reader = read_from(stop)
            continue
        at = base + reader.line_num
        if at > last:  # the row took the end line
            if row != [end]:
                where = "row 1 (the header)" if header is None else f"row {index + 1}"
                yield (
                    index,
                    raw(taken, last)[:RAW_LIMIT],
                    f"{where}: a quoted field is not closed before the end of the object",
                )
            return
        row_text = raw(taken, at)
        taken = at
        if not row:
            continue  # a blank line is no row
        if header is None:
            header = row
            twice = sorted({name for name in header if header.count(name) > 1})
            continue
        if twice:  # a dict would keep one of the columns: the others' values lost
            yield index, row_text, f"row {index + 1}: the header names {twice} more than once"
        elif len(row) != len(header):
            yield (
                index,
                row_text,
                f"row {index + 1}: {len(row)} fields, the header has {len(header)}",
            )
        else:
            yield index, dict(zip(header, row, strict=True)), None
        index += 1


def _rows(body: bytes, fmt: str, delimiter: str) -> Iterator[Item]:
    """The items of a CSV or Parquet object (see :func:`decode_object`)."""
    if fmt == "csv":
        try:
            text = body.decode("utf-8-sig")  # a byte order mark is not part of the header
        except UnicodeDecodeError as exc:
            yield 0, body[:RAW_LIMIT], f"not UTF-8 text: {exc}"  # its bytes, not U+FFFD
            return
        yield from _csv_rows(text, delimiter)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        index = 0
        try:
            parquet = pq.ParquetFile(io.BytesIO(body))
            for batch in parquet.iter_batches(batch_size=5000):
                for row in batch.to_pylist():
                    yield index, row, None
                    index += 1
        except (pa.ArrowException, OSError, ValueError) as exc:
            raw = body if index == 0 else b""  # rows were read: the rest is the failure
            yield index, raw[:RAW_LIMIT], f"not a readable Parquet file: {exc}"
