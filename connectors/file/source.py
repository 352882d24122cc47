"""The ``file`` source: local files matched by globs, read line by line, optionally tailed.

Partitions and positions
    Every file matching the globs is one partition, keyed by its absolute path. Its position is
    ``{"path", "inode", "offset": <byte offset of the next line>, "fingerprint":
    "<n>:<hash of the first n bytes>", "generation"}`` (n = min(offset, 1024)). A line is
    consumed only with its ``"\\n"``, except when it is certainly whole: at the end of a
    rotated-away file (it will not grow), and at the end of a bounded read (``follow: false``)
    for JSON and CloudEvents lines that parse and do not end in a digit. Text and CSV lines,
    and CSV rows with an open quote, wait there for their newline; the source warns and the
    position stays before them, so a later run reads them whole (the rule per format, in
    ``docs/connectors/file.md``). A UTF-8 byte order mark at offset 0 is skipped. A line
    longer than ``max_line_bytes`` is not buffered: once the unterminated bytes held pass the
    limit, only its first ``LONG_HEAD`` bytes are kept and the rest is counted and dropped up to
    its newline; it is then handed out as a failure (checked per chunk, never per line).

Records
    ``id`` is ``"<inode>-<byte offset of the line>"``, so reading a line again (after a crash,
    from a rotated copy) gives it the same id; once the file was found rewritten it is
    ``"<inode>.<generation>-<offset>"``, so ``source`` + ``id`` stays unique per event.
    ``source`` is the path as a percent-encoded ``file://`` URI (``Path.as_uri``), ``subject``
    the file name (one holding a backslash, a control character, a noncharacter or bytes that
    are not UTF-8 with backslashes doubled and those characters as ``\\uXXXX``:
    ``eventrules.spelled_string``), ``time`` the ingestion time of the batch (a line has no
    event time the source knows). Lines that cannot be decoded go to ``SourceBatch.failures`` with a
    :class:`~meshconnect.errors.DataError` naming ``<file>:<line>`` (or ``<file>:byte <n>``
    when the line number is unknown after a resume); the position moves past them.

Rotation, truncation and rewrites
    An inode is read by one partition at a time. When the file at a partition's path is
    renamed away and re-created, the partition finishes the old inode through its open
    descriptor, then switches to the new file at offset 0; the rotated file, if it still
    matches a glob (``app.log.1``), becomes its own partition positioned at the end of what
    was read, in the same batch, so it is never read twice. After a restart, a partition
    whose stored inode is no longer at its path looks for that inode among the matching files
    and finishes it first. A file that shrank below the position, or no longer starts with the
    bytes read before (checked after every chunk read, and against the stored fingerprint at
    start: copytruncate, a rewrite in place), is read again from 0 under the next generation,
    with a warning; at start, a new matching file that starts with the content such a
    partition's fingerprint remembers (the copy copytruncate made) goes on from its offset.
    Lines a slow writer appends to a file after it was rotated away are read only if the
    rotated name matches a glob. Order holds within a file, not across files.

A bounded source fails at start (ConfigError) when a pattern matches no file, after waiting
``wait_for_files``.

Blocking I/O and speed
    Files are read with ``os.pread`` in chunks of 128 KiB through ``asyncio.to_thread``, so a
    slow disk or network file system never stalls the event loop; globbing, ``stat`` and
    opening go through the same thread hop (about 50 µs, once per chunk). Parsing runs on the
    loop, at most ``batch_size`` lines per ``poll()`` (a few milliseconds), with the cyclic
    garbage collector paused while a batch is built (see ``_consume``).
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import gc
import io
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from itertools import accumulate

from meshconnect import (
    ConfigError,
    ConnectorContext,
    DataError,
    Position,
    Record,
    Source,
    SourceBatch,
    jsonvalue,
)
from meshconnect.eventrules import loads_event

from ._partitions import (
    BOM,
    CHUNK,
    FINGERPRINT,
    LONG_HEAD,
    Failures,
    Partitions,
    Tail,
    after_last_newline,
    fingerprint,
    pread,
)
from .config import FileSourceConfig
from .errors import io_error

__all__ = ["FileSource"]

_CONTENT_TYPES = {"json": "application/json", "csv": "application/json", "text": "text/plain"}
#: Bytes of input one batch takes at most (and the line it is in): ``batch_size`` counts lines,
#: and lines may be megabytes (up to ``max_line_bytes``): 1,000 lines of 4 MB were one batch
#: of 4 GB, several times that as records.
BATCH_BYTES = 16 * 1024 * 1024


class FileSource(Partitions, Source[FileSourceConfig]):
    """Reads the files matching ``path``; see the module docstring for the contract."""

    config_model = FileSourceConfig
    empty_position = (
        "reads each file from its beginning (`start_at: end`: from its end at the first start, "
        "a position committed before it reports started)"
    )

    def __init__(self, config: FileSourceConfig, context: ConnectorContext) -> None:
        super().__init__(config, context)
        self.bounded = not config.follow
        self._log = context.logger
        self._base = base = os.path.abspath(context.base_dir)
        self._patterns = [
            os.path.normpath(os.path.join(base, os.path.expanduser(p))) for p in config.patterns
        ]
        self._tails: dict[str, Tail] = {}
        #: inode -> key of the partition reading it (one reader per inode).
        self._owner: dict[int, str] = {}
        #: inode -> (offset, generation) where a partition left it after a rotation.
        self._known: dict[int, tuple[int, int]] = {}
        #: Stored positions whose file was rewritten or is gone (for a copy to claim).
        self._orphans: list[Position] = []
        self._rescan = False
        self._last_scan = 0.0
        self._turn = 0
        #: The ingestion time of the poll under way (``_ingested``); None between polls.
        self._now: str | None = None
        #: Bytes of input the poll under way may still take (:data:`BATCH_BYTES`).
        self._room = BATCH_BYTES
        self._type = config.type
        self._encoding = config.encoding
        #: None when lines are UTF-8, which the JSON decoder validates itself.
        self._decode: str | None = (
            None if codecs.lookup(config.encoding).name == "utf-8" else config.encoding
        )
        self._utf8 = codecs.lookup(config.encoding).name in ("utf-8", "utf-8-sig")
        self._ct = _CONTENT_TYPES.get(config.format)
        parsers: dict[str, Callable[[Tail, list[bytes], list[Record], Failures, bool], int]]
        parsers = {
            "json": self._parse_json,
            "text": self._parse_text,
            "csv": self._parse_csv,
            "cloudevents": self._parse_cloudevents,
        }
        self._parse = parsers[config.format]

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, positions: Mapping[str, Position]) -> dict[str, Position] | None:
        """Open the matching files at their positions. Returns the positions of files started
        at their end (``start_at: end``), which the worker commits at once: "the end" is fixed
        at the first start. A bounded source fails with a
        :class:`~meshconnect.errors.ConfigError` when a pattern of ``path`` matches no file
        (after waiting up to ``wait_for_files`` for one)."""
        try:
            folders = await asyncio.to_thread(self._folders)
            if folders:
                raise ConfigError(
                    f"file source: path {', '.join(folders)} "
                    + ("is a directory" if len(folders) == 1 else "are directories")
                    + ", not a file or glob: match the files in it with a glob such as "
                    + f"{os.path.join(folders[0], '*')} (or {os.path.join(folders[0], '**', '*')}"
                    " for every depth)"
                )
            if self.bounded:
                deadline = time.monotonic() + self.config.wait_for_files
                while (missing := await asyncio.to_thread(self._unmatched)) and (
                    time.monotonic() < deadline
                ):
                    await asyncio.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
                if missing:
                    waited = self.config.wait_for_files
                    raise ConfigError(
                        f"file source: no file matches {', '.join(missing)}"
                        + (f" (waited {waited:g}s)" if waited else "")
                        + "; check the path, or set 'wait_for_files' to wait for files in a "
                        "bounded run, or 'follow: true' to tail files as they come"
                    )
            fresh = await asyncio.to_thread(self._resolve, positions)
        except OSError as exc:
            raise io_error(exc, f"file source {', '.join(self._patterns)}: start") from exc
        self._last_scan = time.monotonic()
        if not self._tails and not self.bounded:
            pattern = ", ".join(self._patterns)
            self._log.info("file source: no file matches %s yet; waiting", pattern)
        return {t.key: t.position() for t in fresh} or None

    async def poll(self) -> SourceBatch | None:
        try:
            return await self._poll()
        except OSError as exc:
            raise io_error(exc, f"file source {', '.join(self._patterns)}: read") from exc

    async def _poll(self) -> SourceBatch | None:
        config = self.config
        self._now = None  # one ingestion time per batch (see _ingested)
        self._room = BATCH_BYTES  # bytes this batch may still take
        if self._rescan or (
            config.follow and time.monotonic() - self._last_scan >= config.poll_interval
        ):
            await asyncio.to_thread(self._scan)
        records: list[Record] = []
        failures: Failures = []
        active = [t for t in self._tails.values() if not t.done and t.fd >= 0]
        if active:
            budget = config.batch_size
            # Following, a busy file must not starve the others: start with the next one each
            # poll. Bounded reads go file by file, so the order is the same after a resume.
            first = self._turn % len(active) if config.follow else 0
            self._turn += 1
            for tail in active[first:] + active[:first]:
                budget -= await self._read(tail, budget, records, failures)
                if budget <= 0 or self._room <= 0:
                    break
        if self._rescan:  # hand rotated files over to their new partitions in this batch
            await asyncio.to_thread(self._scan)
        positions = {}
        for tail in self._tails.values():
            if tail.dirty:
                tail.dirty = False
                positions[tail.key] = tail.position()
        if records or failures or positions:
            return SourceBatch(records, positions, failures)
        if self.bounded and not any(not t.done and t.fd >= 0 for t in self._tails.values()):
            return None
        await asyncio.sleep(config.poll_interval)
        self._rescan = True  # after an idle wait, always look for new files first
        return SourceBatch([])

    async def end_positions(self) -> dict[str, Position]:
        """Each matching file at the end of its last complete line."""

        def work() -> dict[str, Position]:
            out: dict[str, Position] = {}
            for path in self._glob():
                with open(path, "rb") as f:
                    stat = os.fstat(f.fileno())
                    offset = after_last_newline(f)
                    size = min(offset, FINGERPRINT)
                    out[path] = {
                        "path": path,
                        "inode": stat.st_ino,
                        "offset": offset,
                        "fingerprint": fingerprint(pread(f.fileno(), size, 0), size),
                        "generation": 0,
                    }
            return out

        return await asyncio.to_thread(work)

    async def stop(self) -> None:
        for tail in getattr(self, "_tails", {}).values():
            if tail.fd >= 0:
                os.close(tail.fd)
                tail.fd = -1

    # -- reading -------------------------------------------------------------------------------

    async def _read(self, t: Tail, budget: int, records: list[Record], failures: Failures) -> int:
        """Hand out up to ``budget`` lines of ``t``; the number of lines consumed."""
        used = 0
        while used < budget and self._room > 0 and t.fd >= 0 and not t.done:
            if t.long_done:  # a line over max_line_bytes ended: it comes before ``lines``
                used += self._skip_long(t, failures)
                continue
            if t.li < len(t.lines) and (not t.stalled or t.final):
                before = t.offset
                n = self._consume(t, budget - used, records, failures)
                self._room -= max(0, t.offset - before)
                t.stalled = n == 0
                used += n
                if n == 0 and t.final:  # an incomplete last record: left for a later run
                    self._leave_incomplete(t, t.lines[t.li :])
                    t.lines, t.li = [], 0
                continue
            if t.final:
                await asyncio.to_thread(self._finish, t)
                continue
            chunk, status = await asyncio.to_thread(self._read_chunk, t)
            if chunk:
                self._feed(t, chunk)
            elif status == "eof":
                if t.long_head is not None:  # a line over max_line_bytes with no newline
                    if t.rotated:  # it will not grow: whole
                        t.long_done = True
                    else:
                        self._log.warning(
                            "file source: %s: the last %d byte(s) (from byte %d) end without "
                            "a newline and are longer than max_line_bytes; they are skipped "
                            "as one line on a later run once their newline is there",
                            t.key,
                            t.long_size,
                            t.offset,
                        )
                        t.long_head = None
                if t.partial:
                    last = b"".join(t.partial)
                    t.partial = []
                    if t.rotated or self._complete_last_line(last):
                        t.lines = [*t.lines[t.li :], last]
                        t.li = 0
                    else:
                        self._leave_incomplete(t, [*t.lines[t.li :], last])
                        t.lines = t.lines[t.li :]
                        t.li = 0
                t.final = True
                t.tentative = not t.rotated
                t.stalled = False
            elif status in ("truncated", "rewritten"):
                self._log.warning(
                    "file source: %s was %s while it was read (at byte %d); reading it again "
                    "from the beginning",
                    t.key,
                    "truncated" if status == "truncated" else "rewritten",
                    t.read_pos,
                )
                self._reset(t, 0)
                t.generation += 1
            elif status == "rotated":
                t.rotated = True
            else:  # idle: at the end of a followed file
                break
        return used

    def _read_chunk(self, t: Tail) -> tuple[bytes, str]:
        """Runs in a thread: the next chunk, or at its end why there is none."""
        chunk = pread(t.fd, CHUNK, t.read_pos)
        if chunk:
            # Read after the chunk: a file truncated and written again past the read position
            # no longer starts with the bytes read before (its new head is written first).
            if t.head and pread(t.fd, len(t.head), 0) != t.head:
                return b"", "rewritten"
            return chunk, ""
        if not self.config.follow or t.rotated:
            return b"", "eof"
        if os.fstat(t.fd).st_size < t.read_pos:
            return b"", "truncated"
        try:
            now = os.stat(t.key).st_ino
        except OSError:
            return b"", "rotated"
        return b"", "idle" if now == t.ino else "rotated"

    def _feed(self, t: Tail, chunk: bytes) -> None:
        if t.read_pos < FINGERPRINT:
            t.head += chunk[: FINGERPRINT - t.read_pos]
        t.read_pos += len(chunk)
        t.stalled = False
        if t.long_head is not None:  # skipping a line over max_line_bytes up to its newline
            end = chunk.find(b"\n")
            if end < 0:
                t.long_size += len(chunk)
                return
            t.long_size += end
            t.long_done = True
            chunk = chunk[end + 1 :]
            if not chunk:
                return
        if b"\n" not in chunk:
            t.partial.append(chunk)
            # Lines are checked against the limit only as they span chunks: one within a chunk
            # is shorter than the least limit (CHUNK), so the hot path costs nothing more.
            if len(t.partial) > 1 and sum(map(len, t.partial)) > self.config.max_line_bytes:
                self._start_long(t, b"")
            return
        if t.partial:
            end = chunk.find(b"\n")
            if sum(map(len, t.partial)) + end > self.config.max_line_bytes:
                self._start_long(t, chunk[:end])
                t.long_done = True
                chunk = chunk[end + 1 :]
                if not chunk:
                    return
            else:
                t.partial.append(chunk)
                chunk = b"".join(t.partial)
                t.partial = []
        lines = chunk.split(b"\n")
        last = lines.pop()
        if last:
            t.partial.append(last)
        if t.li < len(t.lines):
            lines = t.lines[t.li :] + lines
        t.lines = lines
        t.li = 0

    def _start_long(self, t: Tail, more: bytes) -> None:
        """The line at ``t.offset`` (``partial`` then ``more``; with the lines of a CSV record
        still open before it) is over ``max_line_bytes``: keep its first bytes and its size,
        and drop the rest, so memory stays bounded while it is skipped to its newline."""
        pending = t.lines[t.li :]
        pieces = [*pending, b"".join(t.partial) + more]
        t.long_head = b"\n".join(pieces)[:LONG_HEAD]
        t.long_size = sum(map(len, pieces)) + len(pending)
        t.long_lines = len(pieces)
        t.lines, t.li, t.partial = [], 0, []

    def _skip_long(self, t: Tail, failures: Failures) -> int:
        """Hand out the line over ``max_line_bytes`` that ended as a failure; 1 (one line)."""
        head = t.long_head or b""
        for end in range(len(head), max(len(head) - 4, 0), -1):  # not half a character
            try:
                head[:end].decode(self._encoding)
            except UnicodeDecodeError:
                continue
            head = head[:end]
            break
        problem = (
            f"a line of {t.long_size:,} bytes is longer than max_line_bytes "
            f"({self.config.max_line_bytes:,}); it was skipped, and this record holds its "
            f"first {len(head):,} bytes"
        )
        failures.append(self._failure(t, head, t.offset, 0, problem))
        t.offset = min(t.offset + t.long_size + 1, t.read_pos)
        if t.lineno is not None:
            t.lineno += t.long_lines
        t.long_head, t.long_size, t.long_lines, t.long_done = None, 0, 1, False
        t.dirty = True
        t.stalled = False
        return 1

    def _consume(self, t: Tail, limit: int, records: list[Record], failures: Failures) -> int:
        end = min(len(t.lines), t.li + limit)
        # Pause the cyclic GC while the batch is built: otherwise its records, all alive,
        # are promoted to the oldest generation and trigger full collections (~40% of the
        # time). Nothing else runs on the loop meanwhile; the collector catches up after.
        if t.offset == 0 and t.lines[t.li].startswith(BOM) and self._utf8:
            t.lines[t.li] = t.lines[t.li][3:]  # a byte order mark is not data
            t.offset = 3
        final = t.final and not t.tentative
        paused = gc.isenabled()
        gc.disable()
        try:
            n = self._parse(
                t, t.lines[t.li : end], records, failures, final and end == len(t.lines)
            )
            if n == 0 and end < len(t.lines):  # a CSV record longer than the limit
                n = self._parse(t, t.lines[t.li :], records, failures, final)
        finally:
            if paused:
                gc.enable()
        t.li += n
        if t.li == len(t.lines):
            t.lines = []
            t.li = 0
        if n:
            t.dirty = True
            if t.offset > t.read_pos:  # the unterminated last line has no "\n"
                t.offset = t.read_pos
            if t.lineno is not None:
                t.lineno += n
        return n

    def _finish(self, t: Tail) -> None:
        """Runs in a thread: ``t`` has handed out everything its descriptor will give."""
        linked = os.fstat(t.fd).st_nlink > 0
        os.close(t.fd)
        t.fd = -1
        if not t.rotated:
            t.done = True
            return
        assert t.ino is not None
        if linked:  # renamed, not deleted: whoever finds it next goes on from here
            self._known[t.ino] = (t.offset, t.generation)
        self._owner.pop(t.ino, None)
        self._rescan = True
        self._attach(t, t.key, 0)

    def _leave_incomplete(self, t: Tail, lines: list[bytes]) -> None:
        size = sum(len(line) + 1 for line in lines) - 1
        self._log.warning(
            "file source: %s: the last %d byte(s) (from byte %d) end without a newline and "
            "are not a complete %s record yet; they are read on a later run once complete",
            t.key,
            size,
            t.offset,
            self.config.format,
        )

    def _reset(self, t: Tail, offset: int) -> None:
        t.offset = t.read_pos = offset
        t.lines = []
        t.li = 0
        t.partial = []
        t.lineno = 1 if offset == 0 else None
        t.rotated = t.final = t.stalled = t.tentative = t.long_done = False
        t.long_head, t.long_size, t.long_lines = None, 0, 1
        t.head = b"" if offset == 0 else pread(t.fd, min(offset, FINGERPRINT), 0)
        t.dirty = True
        if self.config.format == "csv":
            t.header = self.config.fieldnames
            t.need_header = self.config.header and offset == 0
            if self.config.header and offset > 0 and t.header is None:
                t.header = self._csv_header(t)

    def _complete_last_line(self, line: bytes) -> bool:
        """Whether a last line without newline, met at the end of a bounded read, is a whole
        record already (the rule per format; see ``docs/connectors/file.md``): JSON and
        CloudEvents when it parses as JSON and does not end in a digit (a number may go
        on); text and CSV never, as nothing tells a finished line or row from one being
        written (``2,b`` may become ``2,bc``)."""
        if self.config.format in ("text", "csv"):
            return False
        try:
            jsonvalue.decode_unchecked(line if self._decode is None else line.decode(self._decode))
        except (ValueError, RecursionError, ArithmeticError):
            return False
        return not line.rstrip()[-1:].isdigit()  # a number may go on: 3 -> 34

    def _csv_header(self, t: Tail) -> list[str] | None:
        head = pread(t.fd, 1 << 20, 0)  # a header row up to 1 MiB
        if self._utf8 and head.startswith(BOM):
            head = head[3:]
        if not head.strip():
            return None
        text = head.decode(self._encoding, errors="replace")
        try:
            row = next(csv.reader(io.StringIO(text, newline=""), delimiter=self.config.delimiter))
        except csv.Error as exc:
            t.header_problem = f"the header row is not CSV: {exc}"
            return None
        t.header_problem = _header_problem(row)
        return None if t.header_problem else row

    # -- parsing: each consumes lines from ``t.offset`` on and returns how many ----------------

    def _ingested(self) -> str:
        """The ingestion time of the records of this poll: one value per batch, taken when
        the first record is made (a JSON or text line has no event time the source knows).
        One value per batch, not per read, lets the mesh store keep it once per segment
        (docs/benchmarks.md, session speed29)."""
        if self._now is None:
            self._now = _now_iso()
        return self._now

    def _failure(
        self, t: Tail, raw: bytes, offset: int, index: int, problem: str
    ) -> tuple[Record, BaseException]:
        where = f"{t.key}:{t.lineno + index}" if t.lineno is not None else f"{t.key}:byte {offset}"
        try:  # the raw line, whatever the format promised
            data: str | bytes = raw.decode(self._encoding)
            content_type = "text/plain"
        except UnicodeDecodeError:  # its bytes as they are (data_base64), not U+FFFD for them
            data, content_type = raw, "application/octet-stream"
        record = Record(
            data,
            id=t.id_prefix + str(offset),
            source=t.source,
            type=self._type,
            subject=t.subject,
            time=self._ingested(),
            datacontenttype=content_type,
        )
        return record, DataError(f"{where}: {problem}")

    def _parse_json(
        self, t: Tail, lines: list[bytes], records: list[Record], failures: Failures, final: bool
    ) -> int:
        if self._decode is None and lines:
            # The usual batch, UTF-8 lines that all parse: every line decoded in one C-level
            # map and every id made in one (offsets summed by ``accumulate``); a Python call
            # per line only for the record. Any line that fails sends the whole batch to the
            # line-by-line loop below, which reports it (blank lines are skipped there).
            try:
                datas = list(map(jsonvalue.decode_unchecked, lines))
            except (ValueError, RecursionError, ArithmeticError):
                pass
            else:
                short = 2 * jsonvalue.MAX_DEPTH  # a line this long cannot nest too deep
                if max(map(len, lines)) > short:
                    try:
                        for line, data in zip(lines, datas, strict=True):
                            jsonvalue.check_depth(line, data)
                    except ValueError:
                        return self._parse_json_lines(t, lines, records, failures)
                offsets = list(accumulate([len(line) + 1 for line in lines], initial=t.offset))
                t.offset = offsets.pop()
                ids = map(t.id_prefix.__add__, map(str, offsets))
                make = Record.fast
                source, subject, type_, ct = t.source, t.subject, self._type, self._ct
                now = (
                    self._ingested()
                )  # ingestion time: a JSON line has no event time the source knows
                records += [
                    make(data, id_, source, type_, subject, ct, now)
                    for data, id_ in zip(datas, ids, strict=True)
                ]
                return len(lines)
        return self._parse_json_lines(t, lines, records, failures)

    def _parse_json_lines(
        self, t: Tail, lines: list[bytes], records: list[Record], failures: Failures
    ) -> int:
        # jsonvalue.loads in two halves, so a line costs no Python call besides the decode.
        loads, check, decode, append = (
            jsonvalue.decode_unchecked,
            jsonvalue.check_depth,
            self._decode,
            records.append,
        )
        short = 2 * jsonvalue.MAX_DEPTH  # a line this long cannot nest too deep
        make = Record.fast
        source, subject, type_, ct, prefix = t.source, t.subject, self._type, self._ct, t.id_prefix
        now = self._ingested()  # ingestion time: a JSON line has no event time the source knows
        offset = t.offset
        for i, line in enumerate(lines):
            try:
                data = loads(line) if decode is None else loads(line.decode(decode))
                if len(line) > short:
                    check(line, data)
            except (ValueError, RecursionError, ArithmeticError) as exc:  # and UnicodeDecodeError
                if line.strip():
                    problem = f"invalid JSON: {jsonvalue.error_text(exc, line)}"
                    failures.append(self._failure(t, line, offset, i, problem))
            else:
                append(make(data, prefix + str(offset), source, type_, subject, ct, now))
            offset += len(line) + 1
        t.offset = offset
        return len(lines)

    def _parse_text(
        self, t: Tail, lines: list[bytes], records: list[Record], failures: Failures, final: bool
    ) -> int:
        encoding, append = self._encoding, records.append
        make = Record.fast
        source, subject, type_, ct, prefix = t.source, t.subject, self._type, self._ct, t.id_prefix
        now = self._ingested()
        offset = t.offset
        for i, line in enumerate(lines):
            try:
                text = line.decode(encoding)
            except UnicodeDecodeError as exc:
                failures.append(self._failure(t, line, offset, i, str(exc)))
            else:
                if text[-1:] == "\r":
                    text = text[:-1]
                append(make(text, prefix + str(offset), source, type_, subject, ct, now))
            offset += len(line) + 1
        t.offset = offset
        return len(lines)

    def _parse_cloudevents(
        self, t: Tail, lines: list[bytes], records: list[Record], failures: Failures, final: bool
    ) -> int:
        # Not orjson: a key twice in one object must be an error, not last-wins.
        loads, decode, from_dict = loads_event, self._decode, Record.from_dict
        offset = t.offset
        for i, line in enumerate(lines):
            problem = ""
            try:
                event = loads(line) if decode is None else loads(line.decode(decode))
            except ValueError as exc:
                problem = "" if not line.strip() else f"invalid JSON: {exc}"
            else:
                try:
                    records.append(from_dict(event))
                except ValueError as exc:  # InvalidEventError names the attribute and rule
                    problem = f"invalid CloudEvent: {exc}"
            if problem:
                failures.append(self._failure(t, line, offset, i, problem))
            offset += len(line) + 1
        t.offset = offset
        return len(lines)

    def _parse_csv(
        self, t: Tail, lines: list[bytes], records: list[Record], failures: Failures, final: bool
    ) -> int:
        """Rows per RFC 4180: a quoted field may hold newlines, CRLF ones included (kept as
        they are); a row's own line end (LF or CRLF) is not data. A row still open at the end
        of a bounded read (``tentative``) is left for a later run, like a last line without
        newline (see ``_complete_last_line``)."""
        encoding, delimiter, append = self._encoding, self.config.delimiter, records.append
        source, subject, type_, ct, prefix = t.source, t.subject, self._type, self._ct, t.id_prefix
        now = self._ingested()
        offset = t.offset
        i, count = 0, len(lines)
        while i < count:
            start = offset
            line = lines[i]
            j = i + 1
            offset += len(line) + 1
            row: list[str] | None = None
            problem = ""
            try:
                raw = line.decode(encoding)
                text = raw[:-1] if raw[-1:] == "\r" else raw
                if '"' not in text:
                    row = text.split(delimiter) if text else None
                else:  # a quoted field may hold newlines: add lines until the record ends
                    while row is None and not problem:
                        try:
                            row = next(csv.reader((text,), delimiter=delimiter, strict=True))
                        except csv.Error as exc:
                            if "unexpected end of data" not in str(exc):
                                row = next(csv.reader((text,), delimiter=delimiter))
                            elif j < count:
                                raw += "\n" + lines[j].decode(encoding)
                                text = raw[:-1] if raw[-1:] == "\r" else raw
                                offset += len(lines[j]) + 1
                                j += 1
                            elif final:
                                problem = "unterminated quoted field"
                            else:  # the record continues in lines not read yet
                                t.offset = start
                                return i
            except UnicodeDecodeError as exc:
                problem = str(exc)
            except csv.Error as exc:  # a field over csv.field_size_limit(): a bad row, never a
                problem = f"not a CSV row: {exc}"  # failed source (issue 9 item 2's kind)
            if row is not None and not problem:
                if t.need_header:
                    t.need_header = False
                    if t.header is None:
                        problem = t.header_problem = _header_problem(row)
                        t.header = None if problem else row
                elif t.header is None:
                    problem = t.header_problem or "no header row to name the fields"
                elif len(row) != len(t.header):
                    problem = f"expected {len(t.header)} fields, got {len(row)}"
                else:
                    append(
                        Record.fast(
                            dict(zip(t.header, row, strict=True)),
                            prefix + str(start),
                            source,
                            type_,
                            subject,
                            ct,
                            now,
                        )
                    )
            if problem and t.need_header:  # the header row itself failed: the rows after
                t.need_header = False  # it fail too, none is taken for the header instead
                t.header_problem = f"the header row is not usable: {problem}"
            if problem:
                raw_lines = b"\n".join(lines[i:j])
                failures.append(self._failure(t, raw_lines, start, i, problem))
            i = j
        t.offset = offset
        return count


def _now_iso() -> str:
    """The ingestion time: now, as an RFC 3339 timestamp in UTC."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _header_problem(names: list[str]) -> str:
    """Why a CSV header row cannot name the fields (a name given twice), or ''."""
    seen: dict[str, int] = {}
    for column, name in enumerate(names, 1):
        if name in seen:
            return (
                f"the header names the field {name!r} twice (columns {seen[name]} and "
                f"{column}); rename one, or name the fields with 'fieldnames'"
            )
        seen[name] = column
    return ""
