"""The embedded default mesh store: one SQLite file in WAL mode.

URL: ``sqlite:///relative/path.db`` (relative to the current directory) or
``sqlite:////absolute/path.db``; missing parent directories are created 0700, and the file
with its ``-wal`` and ``-shm`` companions is 0600, whatever the umask. Query options:
``?synchronous=FULL`` (default ``NORMAL``) and ``?busy_timeout=MILLISECONDS`` (default 5000).

**Durability.** WAL with ``synchronous=NORMAL``: a committed append survives the process being
killed (SIGKILL, OOM), because the WAL lives in the OS page cache. A power loss or OS crash may
lose the last commits before the next checkpoint, but never corrupts the file and never splits
a transaction, so records and the source positions committed with them still come back
together (the source re-reads what was lost). ``synchronous=FULL`` makes every commit durable
at the price of an fsync per commit.

**Threads and processes.** SQLite calls of a store run on one private worker thread that owns
the connection; the ``async`` methods await it, so the event loop never waits on SQLite. The
one exception is a *small append while the thread is idle* (at most
:data:`INLINE_APPEND_RECORDS` records and :data:`INLINE_APPEND_BYTES` bytes, ``synchronous``
not ``FULL``): its commit takes from tens of microseconds to about a millisecond, less than the
hop to the thread and back costs, so it runs on the loop's thread, and it never waits for a
lock there — it starts with ``busy_timeout`` 0 and, when another process holds the write lock,
goes to the thread after all (a webhook answering one sender at a time answers about twice as
fast). The hop costs more than its two thread switches: while the store thread runs, the two
threads hand the GIL to each other, on two cores, every millisecond (10-15 % more CPU and
wall time for the file pipeline's batches of 1,000 records with the old limits of 16 records
and 64 KiB). Several
processes may open the same file (``meshconnect topics tail`` next to a running worker): WAL
lets readers run while one writer commits, and writers queue on SQLite's lock, waiting up to
``busy_timeout`` before the store raises a (retriable) :class:`~meshconnect.errors.StoreError`.
Write transactions start with ``BEGIN IMMEDIATE`` so they never deadlock on a lock upgrade.
The next offset of each topic is cached; ``PRAGMA data_version`` (which changes only when
*another* connection commits) tells each append whether to reload the cache first.

**Schema** (version 1; ``meta.schema_version`` drives the migrations in :data:`_MIGRATIONS`)::

    meta          (key TEXT PRIMARY KEY, value TEXT)           -- schema_version
    topics        (id INTEGER PRIMARY KEY, name TEXT UNIQUE, start_offset, next_offset)
    segments      (key INTEGER PRIMARY KEY,                     -- topic id << 44 | first offset
                   count INTEGER,                               -- records in the segment
                   appended_at REAL,                            -- unix seconds, for retention
                   body BLOB)                                   -- JSON array of the records
    positions     (connector, partition, position TEXT JSON)    -- PK (connector, partition)
    group_offsets (group_name, topic, next_offset)              -- PK (group_name, topic)
    group_states  (group_name PRIMARY KEY, state TEXT JSON)
    segments_by_topic                                           -- a view with topic names

**Segments.** An append stores each topic's share of the batch as one *segment* row: a JSON
array of the records (see :func:`~meshconnect.mesh.codec.encode_segment`), keyed by the offset
of its first record. One ``orjson.dumps`` and one row per batch, instead of a row per record,
make appends about ten times cheaper; a read decodes the segments that cover the wanted
offsets. Retention drops whole segments, and rewrites the one a count limit cuts through.

**Tail cache.** Records appended by this process stay in memory, so sinks in the same worker
read what was just appended without a query or a decode (contiguous offsets per topic). The
cache is bounded in bytes: the newest segments of all topics together, up to
:data:`~.tail.TAIL_BYTES` of their stored (encoded) size — a record held as Python objects takes
about seven times its encoded size, so ~7 MiB for the default — and always the newest
:data:`~.tail.TAIL_SEGMENTS` segments (large batches: up to eight of them). A segment every reader
of its topic has passed (:meth:`~.store.MeshStore.consumed`, which the worker's sinks call
after each batch they deliver) is dropped at once. Reads from other processes, and reads of
older offsets, go to SQLite.

The key ``topic id << 44 | offset`` makes a topic a contiguous key range of the table's own
B-tree. That allows 2**44 (1.7e13) offsets per topic and 2**19 - 1 topics; the store says so
rather than wrap around.
"""

from __future__ import annotations

import asyncio
import collections
import operator
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

from ..errors import ConfigError, StoreError
from ..records import Record
from .codec import (
    ChangeSignal,
    check_offsets,
    decode_json,
    decode_segment,
    encode_positions,
    encode_segment,
    encode_state,
)
from .store import GroupInfo, Lease, MeshStore, Retention, TopicInfo
from .tail import RecordTail

__all__ = ["SqliteStore"]

T = TypeVar("T")

SCHEMA_VERSION = 1
_OFFSET_BITS = 44
_SPAN = 1 << _OFFSET_BITS  # offsets per topic
#: SQLite's page cache of the store's connection, in KiB (``PRAGMA cache_size``; SQLite's
#: default is 2,000 KiB). This process reads its own recent appends from the tail cache, so
#: the page cache mostly held segment pages just written, never read again: 256 KiB keeps the
#: B-tree's hot pages and a segment's worth of its body. About 2.4 MB less peak RSS on the
#: 1,000,000-record file pipeline, the same instruction count for appends and for reads
#: from SQLite (docs/benchmarks.md, session mem23).
CACHE_KIB = 256
#: The most records, and encoded bytes, an append may hold to be committed on the event loop's
#: thread instead of the store thread (see the module docstring, *Threads and processes*): a
#: source's usual batch (the file source's 1,000 lines of ~120 bytes: 10-15 % less CPU and wall
#: time than through the thread, docs/benchmarks.md, session speed24). Bigger ones (a bulk CDC
#: batch of 10,000 rows, ~6 MB) keep the loop free: committed inline they cost more.
INLINE_APPEND_RECORDS = 4096
INLINE_APPEND_BYTES = 256 * 1024
_MAX_TOPIC_ID = (1 << (63 - _OFFSET_BITS)) - 1
_TOPIC = operator.attrgetter("topic")

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
        """CREATE TABLE topics (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            start_offset INTEGER NOT NULL DEFAULT 0,
            next_offset INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE segments (
            key INTEGER PRIMARY KEY,
            count INTEGER NOT NULL,
            appended_at REAL NOT NULL,
            body BLOB NOT NULL
        )""",
        """CREATE TABLE positions (
            connector TEXT NOT NULL,
            partition TEXT NOT NULL,
            position TEXT NOT NULL,
            PRIMARY KEY (connector, partition)
        ) WITHOUT ROWID""",
        """CREATE TABLE group_offsets (
            group_name TEXT NOT NULL,
            topic TEXT NOT NULL,
            next_offset INTEGER NOT NULL,
            PRIMARY KEY (group_name, topic)
        ) WITHOUT ROWID""",
        "CREATE TABLE group_states (group_name TEXT PRIMARY KEY, state TEXT) WITHOUT ROWID",
        f"""CREATE VIEW segments_by_topic AS
            SELECT t.name AS topic, s.key - (t.id << {_OFFSET_BITS}) AS first_offset,
                   s.count, s.appended_at, s.body
            FROM segments AS s JOIN topics AS t ON s.key >> {_OFFSET_BITS} = t.id""",
    ),
}

# Leases (one owner per source and consumer group; see MeshStore.acquire_leases). Created on
# open when missing, so files of schema version 1 gain the table without a migration.
_CREATE_LEASES = (
    "CREATE TABLE IF NOT EXISTS leases"
    " (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL) WITHOUT ROWID"
)
_UPSERT_LEASE = (
    "INSERT INTO leases (name, owner, expires) VALUES (?, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires"
)
_INSERT_SEGMENT = "INSERT INTO segments (key, count, appended_at, body) VALUES (?, ?, ?, ?)"
_UPSERT_POSITION = (
    "INSERT INTO positions (connector, partition, position) VALUES (?, ?, ?)"
    " ON CONFLICT (connector, partition) DO UPDATE SET position = excluded.position"
)
_UPSERT_GROUP_OFFSET = (
    "INSERT INTO group_offsets (group_name, topic, next_offset) VALUES (?, ?, ?)"
    " ON CONFLICT (group_name, topic) DO UPDATE SET next_offset = excluded.next_offset"
)
_UPSERT_GROUP_STATE = (
    "INSERT INTO group_states (group_name, state) VALUES (?, ?)"
    " ON CONFLICT (group_name) DO UPDATE SET state = excluded.state"
)


class SqliteStore(MeshStore):
    """The mesh store in one SQLite file; see the module docstring for URL, schema and
    guarantees. ``clock`` (unix seconds) stamps appends and judges retention by age; tests
    inject one. ``poll_interval`` bounds how long :meth:`data_changed` waits."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 0.2,
    ) -> None:
        self.url = url
        self.path, self.synchronous, self.busy_timeout_ms = _parse_url(url)
        self._clock = clock
        self._poll_interval = poll_interval
        self._changes = ChangeSignal()
        self._executor: ThreadPoolExecutor | None = None
        # Touched only on the executor thread:
        self._conn: sqlite3.Connection | None = None
        self._topics: dict[str, tuple[int, int]] = {}  # name -> (id, next offset)
        self._data_version: int | None = None
        # The tail of each topic as appended by this process, so that sinks in the same worker
        # read fresh records without a SELECT and a decode (bounded in stored bytes).
        self._tail = RecordTail()
        # The last segment decoded by a read (key, records): sinks read it in slices.
        self._decoded: tuple[int, list[Record]] | None = None
        self._appending = 0  # appends of this store in flight
        self._appending_to: collections.Counter[str] = collections.Counter()  # and their topics
        self._on_thread = 0  # calls queued or running on the store thread
        self._lock_wait = True  # whether the connection waits busy_timeout for a lock (or 0)

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the file, its directory and the tables if needed; migrate older schemas."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshconnect-sqlite")
        try:
            await self._run(self._open_sync)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection and stop the thread (after the calls already queued)."""
        executor, self._executor = self._executor, None
        self._tail.clear()
        if executor is None:
            return
        self._on_thread += 1  # no inline append while the thread closes the connection
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_sync)
        finally:
            self._on_thread -= 1
            executor.shutdown(wait=False)

    def _open_sync(self) -> None:
        try:
            _private_file(self.path)
        except OSError as exc:
            where = self.path.parent
            raise StoreError(f"mesh store {self.url}: cannot create {where}: {exc}") from exc
        # check_same_thread=False: small appends run on the loop's thread while the store thread
        # is idle (never both at once; see _append_inline).
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            mode = self._enable_wal(conn)
            for suffix in ("-wal", "-shm"):  # SQLite gives them the database file's mode
                _tighten(self.path.with_name(self.path.name + suffix))
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"mesh store {self.url}: SQLite refused WAL mode (journal_mode={mode}); "
                    "is the file on a network file system?"
                )
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            _migrate(conn, self.url)
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'leases'"
            ).fetchone():
                conn.execute(_CREATE_LEASES)
            self._conn = conn
            self._lock_wait = True  # connect(timeout=...) set busy_timeout
            self._load_topics(conn)
        except BaseException:
            self._conn = None
            conn.close()
            raise

    def _enable_wal(self, conn: sqlite3.Connection) -> str:
        """Switch a new database file to WAL (a file that is already WAL stays so).

        Changing the journal mode needs the file to itself, and SQLite answers "database is
        locked" at once, without waiting, while another process opens the same new file: so
        wait here, as long as ``busy_timeout``.
        """
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.02)

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        self._decoded = None
        if conn is not None:
            conn.close()
        self._topics = {}
        self._data_version = None

    def _unwritable(self) -> str:
        """Why SQLite cannot write the database, if the file system says: in WAL mode it must
        create ``NAME-wal`` and ``NAME-shm`` beside the file, even to read it."""
        for path in (self.path.parent, self.path):
            if path.exists() and not os.access(path, os.W_OK):
                try:
                    readonly = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
                except OSError:
                    readonly = False
                why = "on a read-only file system" if readonly else "not writable by this user"
                kind = "directory" if path.is_dir() else "file"
                return (
                    f" (the {kind} {path} is {why}: SQLite writes the database and creates "
                    f"{self.path.name}-wal and {self.path.name}-shm beside it, even to read it; "
                    "give --state or the store URL a writable place)"
                )
        return ""

    # -- plumbing ------------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store thread; SQLite errors become StoreError."""
        executor = self._executor
        if executor is None:
            raise StoreError(f"mesh store {self.url} is not open")
        self._on_thread += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                executor, self._on_store_thread, fn, args
            )
        except sqlite3.Error as exc:
            raise self._store_error(exc) from exc
        finally:
            self._on_thread -= 1

    def _on_store_thread(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        self._wait_for_locks(True)  # here waiting for another process's lock blocks nothing
        return fn(*args)

    def _wait_for_locks(self, wait: bool) -> None:
        """Set the connection's busy timeout to ``busy_timeout`` or to 0, when it changes."""
        conn = self._conn
        if conn is not None and wait != self._lock_wait:
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms if wait else 0}")
            self._lock_wait = wait

    def _store_error(self, exc: sqlite3.Error) -> StoreError:
        hint = ""
        text = str(exc)
        if "unable to open database file" in text or "readonly" in text:
            hint = self._unwritable()
        elif "malformed" in text or "not a database" in text:
            hint = (
                " (the file is damaged: restore it from a backup, or move it and its -wal file "
                "away to start an empty mesh, in which sources read their inputs again)"
            )
        elif _busy(exc):
            hint = (
                f" (another process held the write lock longer than busy_timeout="
                f"{self.busy_timeout_ms} ms; retried later)"
            )
        return StoreError(f"mesh store {self.url}: {exc}{hint}")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"mesh store {self.url} is not open")
        return self._conn

    def _transaction(self, work: Callable[[sqlite3.Connection], T], write: bool = True) -> T:
        """Run ``work`` in one transaction (``BEGIN IMMEDIATE`` when it writes)."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            self._data_version = None  # whatever happened, reload the topic cache next time
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise
        return result

    async def _query(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` (one statement) on the store thread, outside a transaction."""
        return await self._run(lambda: work(self._connection()))

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(self._transaction, work)

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(self._transaction, work, False)

    def _load_topics(self, conn: sqlite3.Connection) -> None:
        self._topics = {
            name: (topic_id, end)
            for topic_id, name, end in conn.execute("SELECT id, name, next_offset FROM topics")
        }
        self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]

    def _topic_id(self, conn: sqlite3.Connection, name: str) -> int | None:
        cached = self._topics.get(name)
        if cached is not None:
            return cached[0]
        row = conn.execute("SELECT id FROM topics WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    # -- append --------------------------------------------------------------------------------

    async def append(
        self,
        records: Sequence[Record],
        positions: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    ) -> list[int]:
        """Append ``records`` and upsert ``positions`` in one transaction; see
        :meth:`MeshStore.append`. Nothing is written when anything fails:
        :class:`~meshconnect.mesh.codec.RecordEncodingError` (a ``DataError``) names a record
        that cannot be stored, ``StoreError`` reports a position that is not JSON or a
        failure of SQLite, ``ValueError`` a record without a topic."""
        names = set(map(_TOPIC, records))
        if None in names:
            raise ValueError("cannot append a record whose topic is None (route it first)")
        position_rows = encode_positions(positions)
        if not records and not position_rows:
            return []
        # Encoding is Python work: it runs here, on the loop's thread. The store thread only
        # runs SQLite, which releases the GIL, so the two really overlap.
        groups: dict[str, list[Record]]
        if len(names) == 1:  # the usual batch: one topic
            groups = {str(records[0].topic): list(records)} if records else {}
        else:
            groups = {}
            for r in records:
                groups.setdefault(str(r.topic), []).append(r)
        bodies = [(name, len(group), encode_segment(group)) for name, group in groups.items()]
        self._appending += 1
        self._appending_to.update(groups.keys())
        try:
            starts = self._append_inline(records, bodies, position_rows)
            if starts is None:
                starts = await self._run(self._append_sync, bodies, position_rows)
            for name, group in groups.items():
                first = starts[name]
                for i, r in enumerate(group, first):
                    r.offset = i
            if len(groups) == 1:
                first = starts[str(records[0].topic)]
                offsets = list(range(first, first + len(records)))
            else:
                offsets = [r.offset for r in records]  # type: ignore[misc]
            self._remember(groups, [len(body) for _, _, body in bodies])
        finally:
            self._appending -= 1
            self._appending_to.subtract(groups.keys())
        if records:
            self._changes.notify()
        return offsets

    def _remember(self, groups: Mapping[str, Sequence[Record]], sizes: list[int]) -> None:
        """Keep appended records (by topic, offsets set; ``sizes`` the stored bytes of each
        group's segment) in the tail, on the event loop's thread, which alone touches it. A
        read that comes between the commit and this call simply goes to SQLite."""
        for (name, group), size in zip(groups.items(), sizes, strict=True):
            self._tail.remember(name, group, size)

    def consumed(self, group: str, topic: str, offset: int) -> None:
        """Drop the kept segments of ``topic`` that every group heard from has delivered
        (see :meth:`MeshStore.consumed` and :meth:`RecordTail.consumed`): a sink in step with
        the source then leaves almost nothing kept, where the byte budget alone kept ~8,000
        records it had read already (1,000,000-record file pipeline: 57.8-58.3 -> 54.7-56.5
        MB peak RSS, no segment decoded from SQLite either way)."""
        self._tail.consumed(group, topic, offset)

    def _append_inline(
        self,
        records: Sequence[Record],
        bodies: list[tuple[str, int, bytes]],
        position_rows: list[tuple[str, str, str]],
    ) -> dict[str, int] | None:
        """Commit a small append right here, on the loop's thread, when the store thread is idle
        (so the connection is free); ``None`` when the append is not small, the thread is busy,
        every commit is fsynced (``synchronous=FULL``) or another process holds the write lock
        — then the caller goes to the thread, where waiting for the lock blocks nothing."""
        if (
            self._on_thread
            or self._conn is None
            or len(records) > INLINE_APPEND_RECORDS
            or self.synchronous == "FULL"
            or sum(len(body) for _, _, body in bodies) > INLINE_APPEND_BYTES
        ):
            return None
        try:
            self._wait_for_locks(False)  # the loop must not sleep in SQLite's busy handler
            return self._append_sync(bodies, position_rows)
        except sqlite3.Error as exc:
            if _busy(exc):
                return None  # nothing was written (the transaction never began or rolled back)
            raise self._store_error(exc) from exc

    def _append_sync(
        self,
        bodies: list[tuple[str, int, bytes]],
        position_rows: list[tuple[str, str, str]],
    ) -> dict[str, int]:
        """Store the encoded segments and positions in one transaction; the first offset of
        each topic's segment."""
        appended_at = self._clock()
        ends: dict[str, tuple[int, int]] = {}  # topics this append moves: name -> (id, end)

        def work(conn: sqlite3.Connection) -> dict[str, int]:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version:  # another connection committed: reload
                self._load_topics(conn)
            segments = []
            starts: dict[str, int] = {}
            for name, count, body in bodies:
                topic_id, start = self._topic_for_append(conn, name)
                end = start + count
                if end > _SPAN:
                    raise StoreError(f"topic {name!r} is full: at most {_SPAN} offsets per topic")
                ends[name] = (topic_id, end)
                starts[name] = start
                segments.append(((topic_id << _OFFSET_BITS) + start, count, appended_at, body))
            if segments:
                conn.executemany(_INSERT_SEGMENT, segments)
                conn.executemany(
                    "UPDATE topics SET next_offset = ? WHERE id = ?",
                    [(end, topic_id) for topic_id, end in ends.values()],
                )
            if position_rows:
                conn.executemany(_UPSERT_POSITION, position_rows)
            return starts

        starts = self._transaction(work)
        self._topics.update(ends)
        return starts

    def _topic_for_append(self, conn: sqlite3.Connection, name: str) -> tuple[int, int]:
        """``(id, next offset)`` of a topic, created (inside the caller's transaction) when
        new; the cache learns of it only after the commit."""
        cached = self._topics.get(name)
        if cached is not None:
            return cached
        topic_id = conn.execute("INSERT INTO topics (name) VALUES (?)", (name,)).lastrowid
        assert topic_id is not None
        if topic_id > _MAX_TOPIC_ID:
            raise StoreError(
                f"mesh store {self.url}: too many topics (at most {_MAX_TOPIC_ID}); "
                f"cannot create {name!r}"
            )
        return topic_id, 0

    # -- reading -------------------------------------------------------------------------------

    async def read(self, topic: str, offset: int, limit: int) -> list[Record]:
        """Up to ``limit`` records of ``topic`` from ``offset`` on (from the retained start
        when ``offset`` is below it); ``[]`` for an unknown topic."""
        if limit <= 0:
            return []
        entry = self._tail.topics.get(topic)
        if entry is not None:
            first, cached = entry
            end = first + len(cached)
            if first <= offset < end:
                return cached[offset - first : offset - first + limit]
            # A reader that has caught up with our own appends: what comes next is being
            # appended right now and will be in the tail (and notified) in a moment;
            # reading it from SQLite in between would decode it for nothing.
            waits = offset == end and self._appending > 0
        else:
            # Nothing cached for the topic yet (a new topic, a store just opened): likewise
            # for a reader at the end we know of while we append to this very topic (the
            # sink's first read of a run, which would queue behind the source's first
            # append on the store thread and then decode all of it).
            waits = self._appending_to[topic] > 0 and offset == self._topics.get(topic, (0, 0))[1]
        if waits:
            return []
        return await self._run(self._read_sync, topic, max(offset, 0), limit)

    def _read_sync(self, topic: str, offset: int, limit: int) -> list[Record]:
        conn = self._connection()
        topic_id = self._topic_id(conn, topic)
        if topic_id is None:
            return []
        base = topic_id << _OFFSET_BITS
        (containing,) = conn.execute(
            "SELECT max(key) FROM segments WHERE key >= ? AND key <= ?", (base, base + offset)
        ).fetchone()
        # Bodies are fetched one at a time, and only for a segment not decoded already: a
        # large segment read in many small batches is read from the file (and decoded) once.
        rows = conn.execute(
            "SELECT key, count FROM segments WHERE key >= ? AND key < ? ORDER BY key",
            (base if containing is None else containing, base + _SPAN),
        )
        out: list[Record] = []
        for key, count in rows:
            first = key - base
            if first + count <= offset:
                continue
            cached = self._decoded
            if cached is not None and cached[0] == key:
                records = cached[1]
            else:
                (body,) = conn.execute("SELECT body FROM segments WHERE key = ?", (key,)).fetchone()
                records = decode_segment(body, topic, first)
                self._decoded = (key, records)
            begin = max(offset - first, 0)
            out.extend(records[begin : begin + limit - len(out)])
            if len(out) >= limit:
                break
        return out

    async def topics(self) -> list[TopicInfo]:
        def work(conn: sqlite3.Connection) -> list[TopicInfo]:
            rows = conn.execute("SELECT name, start_offset, next_offset FROM topics ORDER BY name")
            return [TopicInfo(name, start, end) for name, start, end in rows]

        return await self._query(work)

    async def end_offsets(self, topics: Sequence[str]) -> dict[str, int]:
        def work(conn: sqlite3.Connection) -> dict[str, int]:
            ends = dict(conn.execute("SELECT name, next_offset FROM topics").fetchall())
            return {name: int(ends.get(name, 0)) for name in topics}

        return await self._query(work)

    # -- source positions ----------------------------------------------------------------------

    async def positions(self, connector_id: str) -> dict[str, dict[str, Any]]:
        def work(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
            rows = conn.execute(
                "SELECT partition, position FROM positions WHERE connector = ?", (connector_id,)
            )
            return {partition: decode_json(position) for partition, position in rows}

        return await self._query(work)

    async def source_ids(self) -> list[str]:
        def work(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT DISTINCT connector FROM positions ORDER BY connector")
            return [connector for (connector,) in rows]

        return await self._query(work)

    async def set_positions(
        self, connector_id: str, positions: Mapping[str, Mapping[str, Any]] | None
    ) -> None:
        rows = encode_positions(
            {(connector_id, partition): p for partition, p in (positions or {}).items()}
        )

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM positions WHERE connector = ?", (connector_id,))
            conn.executemany(_UPSERT_POSITION, rows)

        await self._write(work)

    # -- consumer groups -----------------------------------------------------------------------

    async def group(self, group: str) -> GroupInfo:
        def work(conn: sqlite3.Connection) -> GroupInfo:
            offsets = conn.execute(
                "SELECT topic, next_offset FROM group_offsets WHERE group_name = ?", (group,)
            ).fetchall()
            state = conn.execute(
                "SELECT state FROM group_states WHERE group_name = ?", (group,)
            ).fetchone()
            return GroupInfo(group, dict(offsets), decode_json(state[0] if state else None))

        return await self._read(work)

    async def groups(self) -> list[GroupInfo]:
        def work(conn: sqlite3.Connection) -> list[GroupInfo]:
            found: dict[str, GroupInfo] = {}
            for name, state in conn.execute("SELECT group_name, state FROM group_states"):
                found[name] = GroupInfo(name, {}, decode_json(state))
            for name, topic, offset in conn.execute(
                "SELECT group_name, topic, next_offset FROM group_offsets"
            ):
                found.setdefault(name, GroupInfo(name)).offsets[topic] = offset
            return [found[name] for name in sorted(found)]

        return await self._read(work)

    async def commit(
        self, group: str, offsets: Mapping[str, int], state: Mapping[str, Any] | None = None
    ) -> None:
        """Upsert the group's offsets for the named topics and replace its state, atomically."""
        rows = [(group, topic, offset) for topic, offset in check_offsets(offsets).items()]
        state_text = encode_state(group, state)

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(_UPSERT_GROUP_OFFSET, rows)
            conn.execute(_UPSERT_GROUP_STATE, (group, state_text))

        await self._write(work)

    async def reset_group(self, group: str, offsets: Mapping[str, int] | None) -> None:
        rows = [(group, t, o) for t, o in check_offsets(offsets or {}).items()]

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM group_offsets WHERE group_name = ?", (group,))
            conn.executemany(_UPSERT_GROUP_OFFSET, rows)

        await self._write(work)

    # -- retention -----------------------------------------------------------------------------

    async def apply_retention(self, topic: str, retention: Retention) -> int:
        """Delete the oldest records of ``topic`` that ``retention`` allows: those beyond the
        newest ``max_records`` and those appended more than ``max_age_s`` seconds ago (up to
        the first younger one, so the retained records stay contiguous). Offsets never change;
        the topic's start moves up. Returns how many records were deleted."""
        self._tail.forget(topic)  # kept records may be below the new start
        now = self._clock()

        def work(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT id, start_offset, next_offset FROM topics WHERE name = ?", (topic,)
            ).fetchone()
            if row is None:
                return 0
            topic_id, start, end = row
            base = topic_id << _OFFSET_BITS
            cut = start
            if retention.max_records is not None:
                cut = max(cut, end - max(retention.max_records, 0))
            # Segments that end at or below ``cut`` go, and by age the old ones up to the
            # first younger segment (a segment's records share one append time). A segment
            # that straddles ``cut`` is rewritten without its first records.
            rows = conn.execute(
                "SELECT key, count, appended_at, length(body) FROM segments"
                " WHERE key >= ? AND key < ? ORDER BY key",
                (base, base + end),
            ).fetchall()
            excess = (
                -1
                if retention.max_bytes is None
                else (sum(row[3] for row in rows) - retention.max_bytes)
            )
            oldest_kept = None if retention.max_age_s is None else now - retention.max_age_s
            drop_to = start
            straddling = None
            for index, (key, count, appended_at, size) in enumerate(rows):
                first = key - base
                too_big = excess > 0 and index < len(rows) - 1
                if too_big or (oldest_kept is not None and appended_at < oldest_kept):
                    drop_to = first + count
                    excess -= size
                    continue
                if first + count <= cut:
                    drop_to = first + count
                    continue
                if first < cut:
                    straddling = (key, first)
                    drop_to = cut
                break
            if drop_to <= start:
                return 0
            conn.execute(
                "DELETE FROM segments WHERE key >= ? AND key < ?",
                (base, base + (straddling[1] if straddling else drop_to)),
            )
            if straddling is not None:
                key, first = straddling
                (body, appended_at) = conn.execute(
                    "SELECT body, appended_at FROM segments WHERE key = ?", (key,)
                ).fetchone()
                kept = decode_segment(body, topic, first)[drop_to - first :]
                conn.execute("DELETE FROM segments WHERE key = ?", (key,))
                conn.execute(
                    _INSERT_SEGMENT,
                    (base + drop_to, len(kept), appended_at, encode_segment(kept)),
                )
            conn.execute("UPDATE topics SET start_offset = ? WHERE id = ?", (drop_to, topic_id))
            deleted = drop_to - start
            self._decoded = None
            return deleted

        return await self._write(work)

    # -- leases --------------------------------------------------------------------------------

    async def acquire_leases(
        self, names: Sequence[str], owner: str, ttl: float, *, now: float
    ) -> list[Lease]:
        """See :meth:`MeshStore.acquire_leases` (one ``BEGIN IMMEDIATE`` transaction)."""

        def work(conn: sqlite3.Connection) -> list[Lease]:
            conflicts = []
            for name in names:
                row = conn.execute(
                    "SELECT owner, expires FROM leases WHERE name = ?", (name,)
                ).fetchone()
                if row is not None and row[0] != owner and row[1] > now:
                    conflicts.append(Lease(name, row[0], row[1]))
            if not conflicts:
                conn.executemany(_UPSERT_LEASE, [(name, owner, now + ttl) for name in names])
            return conflicts

        return await self._write(work)

    async def break_leases(self, leases: Sequence[Lease]) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "DELETE FROM leases WHERE name = ? AND owner = ?",
                [(lease.name, lease.owner) for lease in leases],
            )

        await self._write(work)

    async def release_leases(self, owner: str) -> None:
        await self._write(lambda conn: conn.execute("DELETE FROM leases WHERE owner = ?", (owner,)))

    async def leases(self) -> list[Lease]:
        def work(conn: sqlite3.Connection) -> list[Lease]:
            rows = conn.execute("SELECT name, owner, expires FROM leases ORDER BY name")
            return [Lease(*row) for row in rows]

        return await self._read(work)

    def data_changed(self) -> Awaitable[None]:
        """Completes when this store appended records, or after ``poll_interval`` seconds
        (other processes may append to the same file)."""
        return self._changes.wait(self._poll_interval)

    def __repr__(self) -> str:
        return f"<SqliteStore {self.url!r}>"


# -- helpers -----------------------------------------------------------------------------------


def _busy(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused because another connection holds a lock (SQLITE_BUSY/LOCKED)."""
    text = str(exc)
    return "locked" in text or "busy" in text


def _private_file(path: Path) -> None:
    """Make ``path``'s missing directories (0700) and the file itself (0600), whatever the
    umask: the store holds records and dead letters, readable by its owner only. An existing
    file of the owner's that others may read is tightened to 0600; existing directories are
    left as they are (they may be the user's own, such as ``.``)."""
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        if parent.parent == parent:
            break
        parent = parent.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made meanwhile by another process
        os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _tighten(path)
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _tighten(path: Path) -> None:
    """``chmod 0600`` a store file that group or others may access (if it is ours)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    if st.st_mode & 0o077 and st.st_uid == os.getuid():
        os.chmod(path, 0o600)


def store_path(url: str) -> Path | None:
    """The database file a ``sqlite:///`` URL names, or None for a URL that is not one."""
    try:
        return _parse_url(url)[0]
    except ConfigError:
        return None


def _parse_url(url: str) -> tuple[Path, str, int]:
    scheme, sep, rest = url.partition("://")
    if scheme != "sqlite" or not sep or not rest.startswith("/") or len(rest) < 2:
        raise ConfigError(
            f"invalid sqlite store URL {url!r}: use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    raw_path, _, query = rest[1:].partition("?")
    synchronous = "NORMAL"
    busy_timeout_ms = 5000
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "synchronous" and value.upper() in ("NORMAL", "FULL"):
            synchronous = value.upper()
        elif key == "busy_timeout" and value.isdigit():
            busy_timeout_ms = int(value)
        else:
            raise ConfigError(
                f"invalid sqlite store URL {url!r}: unknown option {key}={value!r} "
                "(known: synchronous=NORMAL|FULL, busy_timeout=MILLISECONDS)"
            )
    return Path(unquote(raw_path)), synchronous, busy_timeout_ms


def _migrate(conn: sqlite3.Connection, url: str) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION`; refuse a file from a newer version."""
    if _schema_version(conn) == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _schema_version(conn)  # another process may have migrated meanwhile
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"mesh store {url} has schema version {version}, newer than this meshconnect "
                f"understands ({SCHEMA_VERSION}); upgrade meshconnect"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target]:
                conn.execute(statement)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _schema_version(conn: sqlite3.Connection) -> int:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    return 0 if row is None else int(row[0])
