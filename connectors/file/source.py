"""The ``file`` source: local files matched by globs, read line by line, optionally tailed.

Partitions and positions
    Every file matching the globs is one partition, keyed by its absolute path. Its position is
    ``{"path": <key>, "inode": <inode being read>, "offset": <byte offset of the next line>}``.
    A line is consumed only with its ``"\\n"``: an unterminated last line stays unread until
    its newline arrives, except at the end of a bounded read (``follow: false``) and at the end
    of a rotated-away file, where it is the last line the file will ever get.

Records
    ``id`` is ``"<inode>-<byte offset of the line>"``, so reading a line again (after a crash,
    from a rotated copy) gives it the same id; ``source`` is ``"file://<key>"`` and ``subject``
    the file name. Lines that cannot be decoded go to ``SourceBatch.failures`` with a
    :class:`~meshconnect.errors.DataError` naming ``<file>:<line>`` (or ``<file>:byte <n>``
    when the line number is unknown after a resume); the position moves past them.

Rotation and truncation
    An inode is read by one partition at a time. When the file at a partition's path is
    renamed away and re-created, the partition finishes the old inode through its open
    descriptor, then switches to the new file at offset 0; the rotated file, if it still
    matches a glob (``app.log.1``), becomes its own partition positioned at the end of what
    was read, in the same batch, so it is never read twice. After a restart, a partition
    whose stored inode is no longer at its path looks for that inode among the matching files
    and finishes it first. A file that shrank below the position (copytruncate) is read again
    from 0, with a warning. Lines a slow writer appends to a file after it was rotated away
    are read only if the rotated name matches a glob. Order holds within a file, not across
    files. Inodes identify files within one file system; a file deleted and re-created with
    the same inode number while the source is stopped is taken for the old one.

Blocking I/O and speed
    Files are read with ``os.pread`` in chunks of 1 MiB through ``asyncio.to_thread``, so a
    slow disk or network file system never stalls the event loop; globbing, ``stat`` and
    opening go through the same thread hop (about 50 µs, once per MiB). Parsing runs on the
    loop, at most ``batch_size`` lines per ``poll()`` (a few milliseconds), with the cyclic
    garbage collector paused while a batch is built (see ``_consume``).
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import fnmatch
import gc
import glob
import io
import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from meshconnect import jsonvalue
from meshconnect.api import ConnectorContext, Position, Source, SourceBatch
from meshconnect.errors import DataError
from meshconnect.eventrules import loads_event
from meshconnect.records import Record

from .config import FileSourceConfig
from .errors import io_error

__all__ = ["FileSource"]

_CHUNK = 1 << 20
_CONTENT_TYPES = {"json": "application/json", "csv": "application/json", "text": "text/plain"}

Failures = list[tuple[Record, BaseException]]


@dataclass(slots=True, eq=False)
class _Tail:
    """One partition: the file at ``key`` (or a rotated inode it still finishes)."""

    key: str
    source: str
    subject: str
    #: Descriptor of the inode being read; -1 while waiting for a file to appear.
    fd: int = -1
    ino: int | None = None
    #: Byte offset of the next line to hand out.
    offset: int = 0
    #: Bytes read from ``fd`` so far (``offset`` plus what is buffered).
    read_pos: int = 0
    #: Complete lines read and not yet handed out, from index ``li``.
    lines: list[bytes] = field(default_factory=list)
    li: int = 0
    #: Pieces of an unterminated last line.
    partial: list[bytes] = field(default_factory=list)
    #: 1-based number of the line at ``offset``; None when resumed mid-file.
    lineno: int | None = None
    #: ``fd`` is a file renamed away from ``key``: finish it, then switch to the new file.
    rotated: bool = False
    #: Nothing more will be read from ``fd``; buffered lines are the last ones.
    final: bool = False
    #: Bounded read of this partition is complete.
    done: bool = False
    #: The buffered lines hold only an incomplete CSV record: read more before parsing.
    stalled: bool = False
    #: Whether the position changed since the last batch.
    dirty: bool = False
    #: CSV: the field names, and whether the next row is the header row.
    header: list[str] | None = None
    need_header: bool = False

    def position(self) -> Position:
        return {"path": self.key, "inode": self.ino, "offset": self.offset}


def _pread(fd: int, size: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - platforms without pread
    return os.read(fd, size)  # pragma: no cover


def _last_line_start(fd: int, size: int) -> int:
    """The offset just after the last ``"\\n"`` at or before ``size`` (0 if none)."""
    end = size
    while end > 0:
        start = max(0, end - 65536)
        at = _pread(fd, end - start, start).rfind(b"\n")
        if at >= 0:
            return start + at + 1
        end = start
    return 0


class FileSource(Source[FileSourceConfig]):
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
        base = os.path.abspath(context.base_dir)
        self._patterns = [
            os.path.normpath(os.path.join(base, os.path.expanduser(p))) for p in config.patterns
        ]
        self._tails: dict[str, _Tail] = {}
        #: inode -> key of the partition reading it (one reader per inode).
        self._owner: dict[int, str] = {}
        #: inode -> offset where a partition left it after a rotation (for the next owner).
        self._known: dict[int, int] = {}
        self._rescan = False
        self._last_scan = 0.0
        self._turn = 0
        self._type = config.type
        self._encoding = config.encoding
        #: None when lines are UTF-8, which the JSON decoder validates itself.
        self._decode: str | None = (
            None if codecs.lookup(config.encoding).name == "utf-8" else config.encoding
        )
        self._ct = _CONTENT_TYPES.get(config.format)
        parsers: dict[str, Callable[[_Tail, list[bytes], list[Record], Failures, bool], int]]
        parsers = {
            "json": self._parse_json,
            "text": self._parse_text,
            "csv": self._parse_csv,
            "cloudevents": self._parse_cloudevents,
        }
        self._parse = parsers[config.format]

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, positions: Mapping[str, Position]) -> dict[str, Position] | None:
        """Returns the positions of files started at their end (``start_at: end``), which
        the worker commits at once: "the end" is fixed at the first start."""
        try:
            fresh = await asyncio.to_thread(self._resolve, positions)
        except OSError as exc:
            raise io_error(exc, f"file source {', '.join(self._patterns)}: start") from exc
        self._last_scan = time.monotonic()
        if not self._tails:
            pattern = ", ".join(self._patterns)
            if self.bounded:
                self._log.warning("file source: no file matches %s; nothing to read", pattern)
            else:
                self._log.info("file source: no file matches %s yet; waiting", pattern)
        return {t.key: t.position() for t in fresh} or None

    async def poll(self) -> SourceBatch | None:
        try:
            return await self._poll()
        except OSError as exc:
            raise io_error(exc, f"file source {', '.join(self._patterns)}: read") from exc

    async def _poll(self) -> SourceBatch | None:
        config = self.config
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
                if budget <= 0:
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
                    out[path] = {
                        "path": path,
                        "inode": stat.st_ino,
                        "offset": _after_last_newline(f),
                    }
            return out

        return await asyncio.to_thread(work)

    async def stop(self) -> None:
        for tail in getattr(self, "_tails", {}).values():
            if tail.fd >= 0:
                os.close(tail.fd)
                tail.fd = -1

    # -- reading -------------------------------------------------------------------------------

    async def _read(self, t: _Tail, budget: int, records: list[Record], failures: Failures) -> int:
        """Hand out up to ``budget`` lines of ``t``; the number of lines consumed."""
        used = 0
        while used < budget and t.fd >= 0 and not t.done:
            if t.li < len(t.lines) and (not t.stalled or t.final):
                n = self._consume(t, budget - used, records, failures)
                t.stalled = n == 0
                used += n
                continue
            if t.final:
                await asyncio.to_thread(self._finish, t)
                continue
            chunk, status = await asyncio.to_thread(self._read_chunk, t)
            if chunk:
                self._feed(t, chunk)
            elif status == "eof":
                if t.partial:
                    t.lines = [*t.lines[t.li :], b"".join(t.partial)]
                    t.li = 0
                    t.partial = []
                t.final = True
                t.stalled = False
            elif status == "truncated":
                self._log.warning(
                    "file source: %s shrank below the read position %d (truncated?); "
                    "reading it again from the beginning",
                    t.key,
                    t.read_pos,
                )
                self._reset(t, 0)
            elif status == "rotated":
                t.rotated = True
            else:  # idle: at the end of a followed file
                break
        return used

    def _read_chunk(self, t: _Tail) -> tuple[bytes, str]:
        """Runs in a thread: the next chunk, or at its end why there is none."""
        chunk = _pread(t.fd, _CHUNK, t.read_pos)
        if chunk:
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

    def _feed(self, t: _Tail, chunk: bytes) -> None:
        t.read_pos += len(chunk)
        t.stalled = False
        if b"\n" not in chunk:
            t.partial.append(chunk)
            return
        if t.partial:
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

    def _consume(self, t: _Tail, limit: int, records: list[Record], failures: Failures) -> int:
        end = min(len(t.lines), t.li + limit)
        # Pause the cyclic GC while the batch is built: otherwise its records, all alive,
        # are promoted to the oldest generation and trigger full collections (~40% of the
        # time). Nothing else runs on the loop meanwhile; the collector catches up after.
        paused = gc.isenabled()
        gc.disable()
        try:
            n = self._parse(
                t, t.lines[t.li : end], records, failures, t.final and end == len(t.lines)
            )
            if n == 0 and end < len(t.lines):  # a CSV record longer than the limit
                n = self._parse(t, t.lines[t.li :], records, failures, t.final)
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

    def _finish(self, t: _Tail) -> None:
        """Runs in a thread: ``t`` has handed out everything its descriptor will give."""
        linked = os.fstat(t.fd).st_nlink > 0
        os.close(t.fd)
        t.fd = -1
        if not t.rotated:
            t.done = True
            return
        assert t.ino is not None
        if linked:  # renamed, not deleted: whoever finds it next goes on from here
            self._known[t.ino] = t.offset
        self._owner.pop(t.ino, None)
        self._rescan = True
        self._attach(t, t.key, 0)

    def _reset(self, t: _Tail, offset: int) -> None:
        t.offset = t.read_pos = offset
        t.lines = []
        t.li = 0
        t.partial = []
        t.lineno = 1 if offset == 0 else None
        t.rotated = t.final = t.stalled = False
        t.dirty = True
        if self.config.format == "csv":
            t.header = self.config.fieldnames
            t.need_header = self.config.header and offset == 0
            if self.config.header and offset > 0 and t.header is None:
                t.header = self._csv_header(t.fd)

    # -- finding and opening files (these run in a thread) -------------------------------------

    def _glob(self) -> list[str]:
        found: set[str] = set()
        for pattern in self._patterns:
            for path in glob.glob(pattern, recursive=True):
                if os.path.isfile(path):
                    found.add(os.path.abspath(path))
        return sorted(found)

    def _matches(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in self._patterns)

    def _new_tail(self, key: str) -> _Tail:
        return _Tail(key=key, source="file://" + key, subject=os.path.basename(key))

    def _resolve(self, positions: Mapping[str, Position]) -> list[_Tail]:
        """Open every partition at its stored position, or per ``start_at`` when new; the
        partitions started at a file's end."""
        found = self._glob()
        matched = set(found)
        inodes: dict[int, str] = {}
        for path in found:
            try:
                inodes.setdefault(os.stat(path).st_ino, path)
            except OSError:
                continue
        stored: list[tuple[_Tail, Position]] = []
        for key, position in sorted(positions.items()):
            if key in matched or self._matches(key):
                tail = self._new_tail(key)
                self._tails[key] = tail
                stored.append((tail, position))
        # First every stored inode goes back to its partition, wherever it is now ...
        unclaimed: list[tuple[_Tail, Position]] = []
        for tail, position in stored:
            ino, offset = position.get("inode"), int(position.get("offset") or 0)
            if ino is None:  # e.g. a position reset by hand: whatever file is at the path
                self._attach(tail, tail.key, offset)
            elif ino in self._owner or not (
                self._attach(tail, tail.key, offset, ino)
                or (ino in inodes and self._attach(tail, inodes[ino], offset, ino))
            ):
                unclaimed.append((tail, position))
        # ... then partitions whose file is gone take the file now at their path.
        for tail, position in unclaimed:
            if self._attach(tail, tail.key, 0) and tail.ino != position.get("inode"):
                self._log.warning(
                    "file source: %s: the file read before (inode %s, up to byte %s) is gone; "
                    "reading the file now at that path from its beginning",
                    tail.key,
                    position.get("inode"),
                    position.get("offset"),
                )
        fresh: list[_Tail] = []
        for path in found:
            if path not in self._tails:
                tail = self._new_tail(path)
                start = "end" if self.config.start_at == "end" else 0
                if self._attach(tail, path, start):
                    self._tails[path] = tail
                    if start == "end":
                        fresh.append(tail)
        return fresh

    def _scan(self) -> None:
        """Attach waiting partitions and start partitions for new matching files."""
        self._rescan = False
        self._last_scan = time.monotonic()
        for tail in self._tails.values():
            if tail.fd < 0 and not tail.done:
                self._attach(tail, tail.key, 0)
        for path in self._glob():
            if path not in self._tails:
                tail = self._new_tail(path)
                if self._attach(tail, path, 0):
                    self._tails[path] = tail
        # A rotated file no partition took is out of the globs: forget it, or a new file
        # that reuses its inode number later would start at its old offset.
        self._known.clear()

    def _attach(self, t: _Tail, path: str, offset: int | str, ino: int | None = None) -> bool:
        """Open ``path`` for ``t`` at ``offset`` (``"end"``: after its last complete line).

        Fails when the file is missing, is not ``ino`` (when given), or is read by another
        partition. An inode left by another partition after a rotation resumes where it left.
        """
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return False
        st = os.fstat(fd)
        owner = self._owner.get(st.st_ino)
        if (
            not stat.S_ISREG(st.st_mode)
            or (ino is not None and st.st_ino != ino)
            or (owner is not None and owner != t.key)
        ):
            os.close(fd)
            return False
        at = self._known.pop(st.st_ino, None)
        if at is None:
            at = _last_line_start(fd, st.st_size) if offset == "end" else int(offset)
        if at > st.st_size:
            self._log.warning(
                "file source: %s is shorter (%d bytes) than the stored position %d "
                "(truncated?); reading it from the beginning",
                path,
                st.st_size,
                at,
            )
            at = 0
        t.fd = fd
        t.ino = st.st_ino
        self._owner[st.st_ino] = t.key
        t.done = False
        self._reset(t, at)
        t.rotated = path != t.key
        return True

    def _csv_header(self, fd: int) -> list[str] | None:
        head = _pread(fd, _CHUNK, 0)
        if not head.strip():
            return None
        text = head.decode(self._encoding, errors="replace")
        return next(csv.reader(io.StringIO(text, newline=""), delimiter=self.config.delimiter))

    # -- parsing: each consumes lines from ``t.offset`` on and returns how many ----------------

    def _failure(
        self, t: _Tail, raw: bytes, offset: int, index: int, problem: str
    ) -> tuple[Record, BaseException]:
        where = f"{t.key}:{t.lineno + index}" if t.lineno is not None else f"{t.key}:byte {offset}"
        record = Record(
            raw.decode(self._encoding, errors="replace"),
            id=f"{t.ino}-{offset}",
            source=t.source,
            type=self._type,
            subject=t.subject,
            datacontenttype="text/plain",  # the raw line, whatever the format promised
        )
        return record, DataError(f"{where}: {problem}")

    def _parse_json(
        self, t: _Tail, lines: list[bytes], records: list[Record], failures: Failures, final: bool
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
        source, subject, type_, ct, prefix = t.source, t.subject, self._type, self._ct, f"{t.ino}-"
        offset = t.offset
        for i, line in enumerate(lines):
            try:
                data = loads(line) if decode is None else loads(line.decode(decode))
                if len(line) > short:
                    check(line, data)
            except (ValueError, RecursionError, ArithmeticError) as exc:  # and UnicodeDecodeError
                if line.strip():
                    problem = f"invalid JSON: {jsonvalue.error_text(exc)}"
                    failures.append(self._failure(t, line, offset, i, problem))
            else:
                append(make(data, prefix + str(offset), source, type_, subject, ct))
            offset += len(line) + 1
        t.offset = offset
        return len(lines)

    def _parse_text(
        self, t: _Tail, lines: list[bytes], records: list[Record], failures: Failures, final: bool
    ) -> int:
        encoding, append = self._encoding, records.append
        make = Record.fast
        source, subject, type_, ct, prefix = t.source, t.subject, self._type, self._ct, f"{t.ino}-"
        offset = t.offset
        for i, line in enumerate(lines):
            try:
                text = line.decode(encoding)
            except UnicodeDecodeError as exc:
                failures.append(self._failure(t, line, offset, i, str(exc)))
            else:
                if text[-1:] == "\r":
                    text = text[:-1]
                append(make(text, prefix + str(offset), source, type_, subject, ct))
            offset += len(line) + 1
        t.offset = offset
        return len(lines)

    def _parse_cloudevents(
        self, t: _Tail, lines: list[bytes], records: list[Record], failures: Failures, final: bool
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
        self, t: _Tail, lines: list[bytes], records: list[Record], failures: Failures, final: bool
    ) -> int:
        encoding, delimiter, append = self._encoding, self.config.delimiter, records.append
        source, subject, type_, ct, prefix = t.source, t.subject, self._type, self._ct, f"{t.ino}-"
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
                text = line.decode(encoding)
                if text[-1:] == "\r":
                    text = text[:-1]
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
                                more = lines[j].decode(encoding)
                                text += "\n" + (more[:-1] if more[-1:] == "\r" else more)
                                offset += len(lines[j]) + 1
                                j += 1
                            elif final:
                                problem = "unterminated quoted field"
                            else:  # the record continues in lines not read yet
                                t.offset = start
                                return i
            except UnicodeDecodeError as exc:
                problem = str(exc)
            if row is not None and not problem:
                if t.need_header:
                    t.need_header = False
                    if t.header is None:
                        t.header = row
                elif t.header is None:
                    problem = "no header row to name the fields"
                elif len(row) != len(t.header):
                    problem = f"expected {len(t.header)} fields, got {len(row)}"
                else:
                    append(
                        Record(
                            dict(zip(t.header, row, strict=True)),
                            id=prefix + str(start),
                            source=source,
                            type=type_,
                            subject=subject,
                            datacontenttype=ct,
                        )
                    )
            if problem:
                raw = b"\n".join(lines[i:j])
                failures.append(self._failure(t, raw, start, i, problem))
            i = j
        t.offset = offset
        return count


def _after_last_newline(f: BinaryIO) -> int:
    """The offset just after the last ``\n`` of an open binary file (0 if it has none)."""
    end = f.seek(0, os.SEEK_END)
    step = 1 << 16
    while end > 0:
        start = max(0, end - step)
        f.seek(start)
        chunk = f.read(end - start)
        index = chunk.rfind(b"\n")
        if index >= 0:
            return start + index + 1
        end = start
    return 0
