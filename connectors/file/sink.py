"""The ``file`` sink: records appended as lines, exactly once by truncate-to-checkpoint.

State and exactly-once
    ``flush()`` writes every buffered line to the OS (and fsyncs with ``fsync: true``) and
    returns ``{"file": <path>, "size": <bytes>}`` — plus ``"seq"`` with ``rotate_bytes`` —
    which the worker commits with the sink's offsets. ``open(state)`` truncates the file to
    that size and, with rotation, deletes files with a higher sequence number: whatever is
    there was written after the last commit, and the worker delivers those records again.

    With ``state=None`` (nothing was ever committed for this sink, or its ``path`` or
    ``rotate_bytes`` changed) a non-empty file at the path is not the sink's: by ``if_exists``
    it refuses to start (``fail``, the default: a :class:`~meshconnect.errors.ConfigError`
    naming the file), appends after it (``append``) or discards it (``replace``). The worker
    commits the state of a freshly opened sink at once (before any record), so a file the
    sink created is covered by a commit from the start: a first run that crashes before its
    first flush is truncated back to empty on the next start, not refused. A file written
    under an earlier path or rotation setting is left as it is.

    ``meshconnect offsets reset`` moves the sink's offsets and keeps this state, so the sink
    goes on appending after what it committed: rewinding writes the records again after the
    existing lines, moving forward skips records.

    A file found shorter than its committed size (a power loss without ``fsync``, or an edit
    outside meshconnect) is appended to at its end, with a warning: the lost lines are not
    delivered again.

Blocking I/O
    ``write()`` encodes a whole batch into one bytes blob (one ``dumps`` per record, numbers
    exact as :mod:`meshconnect.jsonvalue` writes them)
    and buffers it; the buffer goes to the file through ``asyncio.to_thread`` once it holds
    1 MiB, at rotation and at ``flush()``. Opening, truncating and fsync go through the same
    thread hop, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from meshconnect import ConfigError, ConnectorContext, DataError, Record, Sink, jsonvalue

from .config import FileSinkConfig, sink_path
from .errors import io_error

__all__ = ["FileSink"]

_WRITE_BEHIND = 1 << 20


#: Bytes at the end of the committed content that the state's ``tail`` fingerprints.
_TAIL = 64


def _fingerprint(tail: bytes) -> str:
    """A short digest of the last bytes of the committed content."""
    return hashlib.blake2b(tail, digest_size=8).hexdigest()


#: In a file sink's ``path``: the partition (consumer) number of a pipeline with
#: ``partitions:`` (docs/scaleout.md#partitions), ``0`` without.
PARTITION_PLACEHOLDER = "{partition}"


def _read_tail(path: str, size: int) -> bytes:
    """The (up to) :data:`_TAIL` bytes of ``path`` before offset ``size``."""
    with open(path, "rb") as file:
        file.seek(max(0, size - _TAIL))
        return file.read(min(size, _TAIL))


def _size(path: str) -> int:
    """The size of ``path`` in bytes, 0 when it does not exist."""
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def _last_byte(path: str) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def _stored_json(records: Sequence[Record]) -> bytes | None:
    """The JSON lines of ``records`` as one join of the data JSON the mesh store encoded
    (``Record.encoded_data``), or None when a record has none (then each is encoded)."""
    lines = [r.encoded_data for r in records]
    if None in lines:
        return None
    lines.append(b"")  # the last line's newline
    return b"\n".join(lines)  # type: ignore[arg-type]


class FileSink(Sink[FileSinkConfig]):
    """Appends records to ``path`` (rotated by size); see the module docstring."""

    config_model = FileSinkConfig

    @classmethod
    def partition_problem(cls, config: Any) -> str | None:
        """Consumers of a pipeline with ``partitions:`` each need a file of their own:
        ``{partition}`` in ``path``."""
        if sink_path(config.path, 0) != sink_path(config.path, 1):
            return None
        return (
            f"the file sink's consumers would all write {config.path!r}: put "
            f"{PARTITION_PLACEHOLDER} in its path (e.g. out/orders-{PARTITION_PLACEHOLDER}.jsonl), "
            "a file per partition"
        )

    def __init__(self, config: FileSinkConfig, context: ConnectorContext) -> None:
        super().__init__(config, context)
        self._log = context.logger
        path = sink_path(config.path, context.partition or 0)
        self._path = os.path.normpath(
            os.path.join(os.path.abspath(context.base_dir), os.path.expanduser(path))
        )
        self._stem, self._suffix = os.path.splitext(self._path)
        self._rotating = config.rotate_bytes is not None
        self._file: IO[bytes] | None = None
        self._current = self._path
        self._seq = 1
        #: Bytes in the current file, counting those still buffered.
        self._size = 0
        #: The last bytes of the current file (up to ``_TAIL``), for the committed state's
        #: ``tail`` fingerprint.
        self._tail = b""
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        utf8 = codecs.lookup(config.encoding).name == "utf-8"
        self._transcode: str | None = None if utf8 else config.encoding
        encoders: dict[str, Callable[[Sequence[Record]], list[bytes]]] = {
            "json": self._encode_json,
            "text": self._encode_text,
            "cloudevents": self._encode_cloudevents,
        }
        self._encode = encoders[config.format]
        #: JSON lines written as one join of the store's encodings (see ``_stored_json``).
        self._joined = config.format == "json" and not self._rotating and utf8

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self, state: Mapping[str, Any] | None) -> None:
        try:
            await asyncio.to_thread(self._open, state)
        except OSError as exc:
            raise io_error(exc, f"file sink {self._path}: open") from exc

    async def write(self, records: Sequence[Record]) -> None:
        if self._file is None:
            raise RuntimeError("file sink: write() before open()")
        if not records:
            return
        joined = _stored_json(records) if self._joined else None
        lines = self._encode(records) if joined is None else [joined]
        limit = self.config.rotate_bytes
        try:
            if limit is None:
                self._buffer(b"".join(lines))
            else:
                size, first = self._size, 0
                for i, line in enumerate(lines):
                    if size and size + len(line) > limit:
                        self._buffer(b"".join(lines[first:i]))
                        await asyncio.to_thread(self._rotate, self._take())
                        size, first = 0, i
                    size += len(line)
                self._buffer(b"".join(lines[first:]))
            if self._pending_bytes >= _WRITE_BEHIND:
                await asyncio.to_thread(self._write, self._take(), False)
        except OSError as exc:
            raise io_error(exc, f"file sink {self._current}: write") from exc

    async def flush(self) -> dict[str, Any] | None:
        if self._file is None:
            return None
        try:
            await asyncio.to_thread(self._write, self._take(), self.config.fsync)
        except OSError as exc:
            raise io_error(exc, f"file sink {self._current}: flush") from exc
        return self._state()

    async def close(self) -> None:
        file = getattr(self, "_file", None)
        if file is None:
            return
        self._file = None
        try:
            await asyncio.to_thread(self._write_to, file, self._take(), False)
        finally:
            await asyncio.to_thread(file.close)

    # -- state, files and buffers --------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        tail = _fingerprint(self._tail)
        if self._rotating:
            return {"file": self._current, "seq": self._seq, "size": self._size, "tail": tail}
        return {"file": self._current, "size": self._size, "tail": tail}

    def _same_target(self, committed: str) -> bool:
        """Whether a committed file name belongs to this sink's configured path."""
        if not self._rotating:
            return os.path.abspath(committed) == os.path.abspath(self._path)
        folder, name = os.path.split(os.path.abspath(committed))
        stem = os.path.basename(self._stem)
        pattern = re.escape(stem) + r"-\d{5,}" + re.escape(self._suffix)
        return folder == os.path.dirname(os.path.abspath(self._stem)) and bool(
            re.fullmatch(pattern, name)
        )

    def _seq_path(self, seq: int) -> str:
        return f"{self._stem}-{seq:05d}{self._suffix}"

    def _seq_files(self) -> dict[int, str]:
        """The rotated files that exist now, by sequence number."""
        folder, stem = os.path.split(self._stem)
        pattern = re.compile(re.escape(stem) + r"-(\d{5,})" + re.escape(self._suffix))
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return {}
        found = {}
        for name in names:
            match = pattern.fullmatch(name)
            if match:
                found[int(match.group(1))] = os.path.join(folder, name)
        return found

    def _open(self, state: Mapping[str, Any] | None) -> None:
        """Runs in a thread: truncate to the checkpoint in ``state`` and open for appending."""
        if not self._rotating and os.path.isdir(self._path):  # not "N bytes exist, if_exists"
            raise ConfigError(
                f"file sink: path {self._path} is a directory, not the file to write: give a "
                f"file name, e.g. {os.path.join(self._path, 'out.jsonl')}"
            )
        if state is not None and "file" in state and not self._same_target(str(state["file"])):
            self._log.warning(
                "file sink %s: the last commit was for %s, which is kept as it is; the new "
                "path has no committed state",
                self._path,
                state["file"],
            )
            state = None
        if state is not None and ("seq" in state) != self._rotating:
            self._log.warning(
                "file sink %s: rotate_bytes was %s since the last commit; the files written "
                "before are kept, the new ones have no committed state",
                self._path,
                "turned on" if self._rotating else "turned off",
            )
            state = None
        if state is None:
            self._claim()
            return
        size = int(state["size"])
        self._seq = int(state["seq"]) if self._rotating else 1
        self._current = self._seq_path(self._seq) if self._rotating else self._path
        if self._rotating:
            for seq, path in sorted(self._seq_files().items()):
                if seq > self._seq:  # this sink wrote it after its last commit
                    self._log.info("file sink: deleting %s, not covered by a commit", path)
                    os.remove(path)
        os.makedirs(os.path.dirname(self._current), exist_ok=True)
        try:
            found: int | None = os.path.getsize(self._current)
        except FileNotFoundError:
            found = None
        if found is None or found < size:
            self._log.warning(
                "file sink: %s holds %s bytes, fewer than the %d committed: lines delivered "
                "before were lost (power loss without fsync, or a change outside meshconnect); "
                "appending at its end",
                self._current,
                found or 0,
                size,
            )
            size = found or 0
        elif "tail" in state and _fingerprint(_read_tail(self._current, size)) != state["tail"]:
            # Another file at the path (the sink's own was moved away and something else put
            # there): truncating it to the committed size would destroy what it holds.
            self._log.warning(
                "file sink: %s is not the file this sink committed (its bytes before the "
                "committed size %d differ); it is handled as a file with no committed state",
                self._current,
                size,
            )
            self._claim()
            return
        elif found > size:
            self._log.info(
                "file sink: truncating %s from %d to the committed %d bytes; the records "
                "after the checkpoint are delivered again",
                self._current,
                found,
                size,
            )
        self._start(size, created=found is None)

    def _claim(self) -> None:
        """No committed state: start the output, by ``if_exists`` when files are there that
        this sink has no record of writing (it never destroys data it did not write unless
        told to with ``if_exists: replace``)."""
        files = self._seq_files() if self._rotating else {1: self._path}
        found = {seq: size for seq, path in files.items() if (size := _size(path))}
        self._seq = 1
        size = 0
        if found:
            names = ", ".join(f"{files[seq]} ({found[seq]} bytes)" for seq in sorted(found))
            policy = self.config.if_exists
            if policy == "fail":
                raise ConfigError(
                    f"file sink: {names} exists and this sink has no committed state, so it "
                    "did not write it; refusing to touch it. Move it away, point 'path' at "
                    "another file, or set 'if_exists: append' (keep it and append after it) "
                    "or 'if_exists: replace' (discard its content)"
                )
            if policy == "append":
                self._seq = max(found)
                size = found[self._seq]
                self._log.warning("file sink: appending after the existing content of %s", names)
            else:
                self._log.warning("file sink: if_exists: replace: discarding %s", names)
                if self._rotating:
                    for path in files.values():
                        os.remove(path)
        self._current = self._seq_path(self._seq) if self._rotating else self._path
        os.makedirs(os.path.dirname(self._current), exist_ok=True)
        self._start(size, created=not os.path.exists(self._current))
        if size and _last_byte(self._current) != b"\n":
            self._buffer(b"\n")  # appended lines must not continue someone else's last line

    def _start(self, size: int, *, created: bool) -> None:
        self._file = open(self._current, "ab")  # noqa: SIM115 - closed by close()
        self._file.truncate(size)
        self._size = size
        self._tail = b"" if created else _read_tail(self._current, size)
        if created and self.config.fsync:
            self._sync_folder()

    def _buffer(self, blob: bytes) -> None:
        if blob:
            self._pending.append(blob)
            self._pending_bytes += len(blob)
            self._size += len(blob)
            self._tail = blob[-_TAIL:] if len(blob) >= _TAIL else (self._tail + blob)[-_TAIL:]

    def _take(self) -> list[bytes]:
        pending = self._pending
        self._pending = []
        self._pending_bytes = 0
        return pending

    def _write(self, blobs: list[bytes], sync: bool) -> None:
        assert self._file is not None
        self._write_to(self._file, blobs, sync)

    @staticmethod
    def _write_to(file: IO[bytes], blobs: list[bytes], sync: bool) -> None:
        file.writelines(blobs)  # not joined first: a copy of megabytes for bulk CDC batches
        file.flush()
        if sync:
            os.fsync(file.fileno())

    def _rotate(self, blobs: list[bytes]) -> None:
        """Runs in a thread: finish the current file and start the next one."""
        assert self._file is not None
        self._write_to(self._file, blobs, self.config.fsync)
        self._file.close()
        self._seq += 1
        self._current = self._seq_path(self._seq)
        self._file = open(self._current, "wb")  # noqa: SIM115 - closed by close()
        self._size = 0
        self._tail = b""
        if self.config.fsync:
            self._sync_folder()

    def _sync_folder(self) -> None:
        """fsync the directory, so that a new file's entry survives a power loss too."""
        folder = os.open(os.path.dirname(self._current), os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    # -- encoding: one line (with its newline) per record --------------------------------------

    def _encode_json(self, records: Sequence[Record]) -> list[bytes]:
        dumps = jsonvalue.dumps
        try:
            # A record read from the mesh carries its data's JSON as the store encoded it.
            lines = [
                dumps(r.data, newline=True) if (e := r.encoded_data) is None else e + b"\n"
                for r in records
            ]
        except TypeError:
            lines = [self._dumps(r, r.data) for r in records]
        return self._recode(lines)

    def _encode_cloudevents(self, records: Sequence[Record]) -> list[bytes]:
        return self._recode([self._dumps(r, r.to_dict()) for r in records])

    def _encode_text(self, records: Sequence[Record]) -> list[bytes]:
        encoding = self.config.encoding
        lines = []
        for r in records:
            data = r.data
            try:
                if isinstance(data, str):
                    lines.append((data + "\n").encode(encoding))
                elif isinstance(data, bytes | bytearray):
                    lines.append(bytes(data) + b"\n")
                else:
                    lines.append(self._recode([self._dumps(r, data)])[0])
            except UnicodeEncodeError as exc:
                raise DataError(f"file sink: record {r.id}: {exc}") from exc
        return lines

    def _dumps(self, record: Record, value: Any) -> bytes:
        try:
            return jsonvalue.dumps(value, newline=True)
        except TypeError as exc:
            raise DataError(f"file sink: record {record.id}: cannot write as JSON: {exc}") from exc

    def _recode(self, lines: list[bytes]) -> list[bytes]:
        """JSON is written as UTF-8; re-encode for another ``encoding``."""
        if self._transcode is None:
            return lines
        try:
            return [line.decode("utf-8").encode(self._transcode) for line in lines]
        except UnicodeEncodeError as exc:
            raise DataError(f"file sink: cannot encode a line as {self._transcode}: {exc}") from exc
