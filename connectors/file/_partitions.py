"""The file source's partitions: what one file being read is (``Tail``), its content
fingerprint, and finding and opening the files (``Partitions``, mixed into
:class:`~.source.FileSource`). See the source module's docstring for the contract."""

from __future__ import annotations

import difflib
import fnmatch
import glob
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from meshconnect import ConfigError, Position, Record, eventrules

from .config import FileSourceConfig

__all__ = [
    "BOM",
    "CHUNK",
    "FINGERPRINT",
    "LONG_HEAD",
    "Failures",
    "Partitions",
    "Tail",
    "after_last_newline",
    "fingerprint",
    "last_line_start",
    "matches_fingerprint",
    "position_fields_problem",
    "pread",
]

#: Bytes read at a time. 128 KiB, about one batch of typical lines: the chunk and the lines
#: split from it stay in memory until handed out, and 1 MiB (~8,500 lines of 120 bytes)
#: held ~3.5 MB more at peak for no measurable CPU (docs/benchmarks.md).
CHUNK = 1 << 17
#: How many bytes of a line longer than ``max_line_bytes`` its dead letter keeps.
LONG_HEAD = 1024
#: How many bytes from the start of a file make its content fingerprint.
FINGERPRINT = 1024
BOM = b"\xef\xbb\xbf"

Failures = list[tuple[Record, BaseException]]


@dataclass(slots=True, eq=False)
class Tail:
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
    #: Why the header row cannot name the fields (a name given twice), or "".
    header_problem: str = ""
    #: The file's first bytes as read (``min(read_pos, FINGERPRINT)`` of them).
    head: bytes = b""
    #: How often this partition's file was found rewritten (truncated, replaced in place):
    #: part of the record ids, so that new lines at old offsets get new ids.
    generation: int = 0
    #: The last element of ``lines`` has no newline and may still grow (bounded read).
    tentative: bool = False
    #: A line longer than ``max_line_bytes`` being skipped: its first bytes (``None`` when
    #: there is none), its size so far, how many lines it spans (a CSV record's), and whether
    #: its newline was found (it is then handed out as a failure before ``lines``).
    long_head: bytes | None = None
    long_size: int = 0
    long_lines: int = 1
    long_done: bool = False

    def position(self) -> Position:
        return {
            "path": self.key,
            "inode": self.ino,
            "offset": self.offset,
            "fingerprint": fingerprint(self.head, min(self.offset, FINGERPRINT)),
            "generation": self.generation,
        }

    @property
    def id_prefix(self) -> str:
        """``<inode>-`` (or ``<inode>.<generation>-`` once rewritten); the offset follows."""
        return f"{self.ino}-" if not self.generation else f"{self.ino}.{self.generation}-"


def fingerprint(head: bytes, size: int) -> str:
    """``"<size>:<hash of the first size bytes>"``: what a position remembers of a file's
    content, to tell the same file from one rewritten in place or replaced (as Vector's and
    Fluent Bit's checksum fingerprints do; the inode alone cannot tell)."""
    return f"{size}:{hashlib.blake2b(head[:size], digest_size=8).hexdigest()}"


_POSITION_FIELDS = ("path", "inode", "offset", "fingerprint", "generation")


def position_fields_problem(position: Position) -> str | None:
    """Why ``position`` is not a file source position: an unknown field (a typo such as
    ``ofset``, which would be ignored and read the file from its beginning), or ``offset``,
    ``inode`` or ``generation`` that is not a whole number of at least 0; or ``None``."""
    for name in position:
        if name not in _POSITION_FIELDS:
            close = difflib.get_close_matches(name, _POSITION_FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"unknown field {name!r}{hint}; a position has {', '.join(_POSITION_FIELDS)}"
    for name in ("offset", "inode", "generation"):
        value = position.get(name)
        if value is not None and (type(value) is not int or value < 0):
            return f"{name} must be a whole number of at least 0, not {json.dumps(value)}"
    for name in ("path", "fingerprint"):
        if position.get(name) is not None and not isinstance(position[name], str):
            return f"{name} must be a string, not {json.dumps(position[name])}"
    return None


def matches_fingerprint(fd: int, stored: object) -> bool | None:
    """Whether the file open as ``fd`` starts with the content ``stored`` remembers; None
    when ``stored`` is not a fingerprint (a position set by hand)."""
    if not isinstance(stored, str) or ":" not in stored:
        return None
    size_text, _, _ = stored.partition(":")
    try:
        size = int(size_text)
    except ValueError:
        return None
    head = pread(fd, size, 0)
    return len(head) == size and fingerprint(head, size) == stored


def pread(fd: int, size: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - platforms without pread
    return os.read(fd, size)  # pragma: no cover


def last_line_start(fd: int, size: int) -> int:
    """The offset just after the last ``"\\n"`` at or before ``size`` (0 if none)."""
    end = size
    while end > 0:
        start = max(0, end - 65536)
        at = pread(fd, end - start, start).rfind(b"\n")
        if at >= 0:
            return start + at + 1
        end = start
    return 0


def after_last_newline(f: BinaryIO) -> int:
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


class Partitions:
    """Finding and opening the files of the file source (mixed into it; these run in a
    thread): one partition per matching file, resumed at its stored position."""

    config: FileSourceConfig
    #: The directory relative paths resolve against (the pipeline file's).
    _base: str
    _patterns: list[str]
    _tails: dict[str, Tail]
    _owner: dict[int, str]
    _known: dict[int, tuple[int, int]]
    _orphans: list[Position]
    _rescan: bool
    _last_scan: float
    _log: logging.Logger

    def _reset(self, t: Tail, offset: int) -> None:
        raise NotImplementedError

    # -- finding and opening files (these run in a thread) -------------------------------------

    def _glob(self) -> list[str]:
        found: set[str] = set()
        for pattern in self._patterns:
            for path in glob.glob(pattern, recursive=True):
                if os.path.isfile(path):
                    found.add(os.path.abspath(path))
        return sorted(found)

    def _unmatched(self) -> list[str]:
        """The patterns that match no regular file now."""
        return [
            pattern
            for pattern in self._patterns
            if not any(os.path.isfile(p) for p in glob.iglob(pattern, recursive=True))
        ]

    def _folders(self) -> list[str]:
        """The patterns that name a directory (no glob characters): a mistake for files in
        it, which a bounded source reported as "no file matches" and a following one waited
        for forever."""
        return [p for p in self._patterns if not glob.has_magic(p) and os.path.isdir(p)]

    def _matches(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in self._patterns)

    def position_problem(self, partition: str, position: Position) -> str | None:
        """A hand-written position (``offsets reset --to``): its partition is the absolute
        path of a file the globs match, and its fields have their types (see
        :func:`position_fields_problem`)."""
        if not (os.path.isabs(partition) and self._matches(partition)):
            absolute = os.path.normpath(os.path.join(self._base, partition))
            hint = (
                f"; did you mean {absolute!r}? (partitions are absolute paths)"
                if self._matches(absolute)
                else ""
            )
            return (
                f"not a file this source reads (path: {', '.join(self._patterns)}){hint}; "
                "`meshconnect offsets show FILE` lists the partitions"
            )
        return position_fields_problem(position)

    def _new_tail(self, key: str) -> Tail:
        return Tail(
            key=key,
            source=Path(key).as_uri(),
            subject=eventrules.spelled_string(os.path.basename(key)),
        )

    def _resolve(self, positions: Mapping[str, Position]) -> list[Tail]:
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
        stored: list[tuple[Tail, Position]] = []
        for key, position in sorted(positions.items()):
            if key in matched or self._matches(key):
                if problem := position_fields_problem(position):
                    raise ConfigError(
                        f"file source: the stored position of {key} is not usable: {problem}; "
                        "set it again with `meshconnect offsets reset FILE PIPELINE`"
                    )
                tail = self._new_tail(key)
                self._tails[key] = tail
                stored.append((tail, position))
        # First every stored inode goes back to its partition, wherever it is now ...
        unclaimed: list[tuple[Tail, Position]] = []
        for tail, position in stored:
            ino, offset = position.get("inode"), int(position.get("offset") or 0)
            if ino is None:  # e.g. a position reset by hand: whatever file is at the path
                self._attach(tail, tail.key, offset, stored=position)
            elif ino in self._owner or not (
                self._attach(tail, tail.key, offset, ino, position)
                or (ino in inodes and self._attach(tail, inodes[ino], offset, ino, position))
            ):
                unclaimed.append((tail, position))
        # ... then partitions whose file is gone take the file now at their path.
        for tail, position in unclaimed:
            self._orphans.append(position)
            if self._attach(tail, tail.key, 0):
                if tail.ino == position.get("inode"):  # the inode number was reused
                    tail.generation = int(position.get("generation") or 0) + 1
                else:
                    self._log.warning(
                        "file source: %s: the file read before (inode %s, up to byte %s) is "
                        "gone; reading the file now at that path from its beginning",
                        tail.key,
                        position.get("inode"),
                        position.get("offset"),
                    )
        fresh: list[Tail] = []
        for path in found:
            if path not in self._tails:
                tail = self._new_tail(path)
                claimed = self._claim_orphan(path)
                if claimed is not None:
                    self._log.info(
                        "file source: %s holds the content read before as %s (same "
                        "fingerprint): going on from byte %s",
                        path,
                        claimed["path"],
                        claimed["offset"],
                    )
                    start: int | str = int(claimed["offset"])
                else:
                    start = "end" if self.config.start_at == "end" else 0
                if self._attach(tail, path, start):
                    self._tails[path] = tail
                    if start == "end":
                        fresh.append(tail)
        return fresh

    def _claim_orphan(self, path: str) -> Position | None:
        """The stored position whose file was rewritten or is gone and whose remembered
        content ``path`` starts with (a copy made by copytruncate), taken out of
        ``_orphans``; None when there is none."""
        if not self._orphans:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        try:
            for i, position in enumerate(self._orphans):
                offset = int(position.get("offset") or 0)
                if (
                    offset
                    and os.fstat(fd).st_size >= offset
                    and matches_fingerprint(fd, position.get("fingerprint"))
                ):
                    return self._orphans.pop(i)
        finally:
            os.close(fd)
        return None

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

    def _attach(
        self,
        t: Tail,
        path: str,
        offset: int | str,
        ino: int | None = None,
        stored: Position | None = None,
    ) -> bool:
        """Open ``path`` for ``t`` at ``offset`` (``"end"``: after its last complete line).

        Fails when the file is missing, is not ``ino`` (when given), or is read by another
        partition. An inode left by another partition after a rotation resumes where it left.
        With the ``stored`` position ``offset`` came from, a file that is shorter or no longer
        starts with the content its fingerprint remembers (copytruncate, a rewrite in place)
        is read from its beginning under the next generation, and the old content's position
        is kept in ``_orphans`` for a copy of it to claim (see ``_resolve``).
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
        known = self._known.pop(st.st_ino, None)
        if known is not None:  # left by a rotation: go on with its offset and generation
            at, generation = known
        else:
            at = last_line_start(fd, st.st_size) if offset == "end" else int(offset)
            generation = int(stored.get("generation") or 0) if stored is not None else 0
        same = matches_fingerprint(fd, stored.get("fingerprint")) if stored and at else None
        if at > st.st_size or same is False:
            self._log.warning(
                "file source: %s %s the stored position (byte %d); it was truncated or "
                "rewritten: reading it from the beginning",
                path,
                f"is shorter ({st.st_size} bytes) than" if at > st.st_size else "changed before",
                at,
            )
            if stored is not None:
                self._orphans.append(stored)
            at = 0
            generation += 1
        t.fd = fd
        t.ino = st.st_ino
        self._owner[st.st_ino] = t.key
        t.done = False
        self._reset(t, at)
        t.generation = generation
        t.rotated = path != t.key
        return True
