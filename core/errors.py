"""The error taxonomy, drawn once.

::

    MeshconnectError
    ├── ConfigError            the pipeline file or a connector's config is wrong; never retried.
    │   └── ValidationErrors   several located problems (FILE:LINE:COL: message) at once.
    ├── PluginError            a plugin failed to load or misbehaves (names the plugin).
    ├── RetriableError         a transient condition: connection lost, timeout, 429/503, a locked
    │                          database. Retried with exponential backoff and jitter.
    ├── DataError              this record cannot be processed (bad JSON, wrong type, a failing
    │                          expression). Never retried; with ``tolerance: all`` it goes to the
    │                          dead-letter topic, otherwise it fails the connector.
    ├── RestartError           an operation failed part-way (a write that may have reached the
    │                          disk in part, a read whose position moved): neither retried in
    │                          place nor dead-lettered; the connector is restarted from its last
    │                          checkpoint (committed positions/offsets; the sink's ``open(state)``
    │                          discards what it wrote since).
    ├── BatchError             raised by ``Sink.write``: some records of the batch failed, each
    │                          with its own error (one of the classes above); the others were
    │                          written. The sink loop retries or dead-letters exactly those.
    └── StoreError             the mesh store failed; retriable unless it says otherwise.
        ├── FencedError        another worker took this source's or group's lease: never
        │                      retried nor dead-lettered (a restart; a cluster member stops).
        └── StoreLostError     the store's data vanished under a running worker (a Redis
                               restarted without persistence, or flushed): also a
                               ``ConfigError``, so the connector gives up (the run exits 1).

Connectors raise these, or let their client library's exceptions through and map them with
:meth:`Source.classify_error <meshconnect.api.Source.classify_error>` /
:meth:`Sink.classify_error <meshconnect.api.Sink.classify_error>` (botocore, pymongo, redis,
psycopg, aiohttp, slack_sdk, openai: each connector knows its library, this module does not).
:func:`classify` asks the connector's mapping first, then maps what it knows (ours and the
standard library's) onto the taxonomy:

=================================================  ===============================================
exception                                          class
=================================================  ===============================================
what the connector's ``classify_error`` maps       what it says
``FencedError`` (whatever the connector says)     ``RestartError``
ours (``ConfigError``, ``RetriableError``, ...)    itself
``ConnectionError``, ``TimeoutError``,             ``RetriableError``
``BlockingIOError``, ``InterruptedError``
``OSError`` with a transient ``errno``:            ``RetriableError`` (the disk or the network may
``EIO``, ``ENOSPC``, ``EDQUOT``, ``EAGAIN``,       come back: a full disk is freed, an NFS server
``EBUSY``, ``EINTR``, ``ENFILE``, ``EMFILE``,      returns, descriptors are released)
``ENOMEM``, ``ENOBUFS``, ``ESTALE``, ``ETIMEDOUT``,
``ENETDOWN``, ``ENETUNREACH``, ``EHOSTUNREACH``
``OSError`` naming a wrong path or permission:     ``ConfigError`` (someone must fix the path or
``EACCES``, ``EPERM``, ``EROFS``, ``ENOENT``,      the permissions; retrying will not help)
``ENOTDIR``, ``EISDIR``, ``ENAMETOOLONG``,
``ELOOP``
``sqlite3.OperationalError`` "database is locked"  ``RetriableError``
/ "busy" / "disk I/O error"
``sqlite3.IntegrityError``, ``sqlite3.DataError``  ``DataError`` (this row violates a constraint)
``ValueError`` (JSON, Unicode, pydantic),          ``DataError`` (raised while handling a record)
``TypeError``, ``KeyError``, ``IndexError``,
``ArithmeticError``, ``csv.Error``
anything else                                      ``None``: a failure of the connector
=================================================  ===============================================

What each class leads to (``core/errorpolicy.py``, ``core/worker.py``): a ``ConfigError`` stops
the connector for good (the run exits 1); a ``RetriableError`` (or ``StoreError``) is retried with
exponential backoff and jitter up to ``errors.retry.max_attempts``; a ``DataError``, or a
retriable error whose attempts ran out, is dead-lettered under ``tolerance: all`` and fails the
connector under ``tolerance: none``; a ``RestartError``, and anything unmapped, fails the
connector, which the supervisor restarts with backoff from its committed offsets.
``tests/test_errors_mapping.py`` checks this table.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = [
    "BatchError",
    "Classifier",
    "ConfigError",
    "DataError",
    "FencedError",
    "Location",
    "MeshconnectError",
    "PluginError",
    "PluginLoadError",
    "Problem",
    "RestartError",
    "RetriableError",
    "StoreError",
    "StoreLostError",
    "ValidationErrors",
    "classify",
]


class MeshconnectError(Exception):
    """Base class of every error meshconnect raises on purpose."""


class ConfigError(MeshconnectError):
    """The configuration is wrong. Never retried: fix the file and run again."""


class PluginError(MeshconnectError):
    """A plugin could not be loaded or broke its contract."""


class PluginLoadError(PluginError, ConfigError):
    """A connector's ``"module:Class"`` (its class or config model) does not import: a
    :class:`PluginError` that is fatal like a :class:`ConfigError` (restarting the connector
    cannot help; the message says what to fix)."""


class RetriableError(MeshconnectError):
    """A transient failure; the operation may succeed if tried again later."""


class DataError(MeshconnectError):
    """A record that cannot be processed. Goes to the dead-letter topic under ``tolerance: all``."""


class StoreError(MeshconnectError):
    """The mesh store failed."""


class FencedError(StoreError):
    """An append, commit or write refused because the lease this worker took for its source or
    group has another owner or epoch now (or lapsed): another worker took over, and this one
    must stop. Retrying cannot help and a dead letter would be a write by a replaced owner, so
    :func:`classify` maps it to :class:`RestartError`."""


class StoreLostError(StoreError, ConfigError):
    """The mesh store no longer holds the mesh this worker opened: its data is gone (a Redis
    restarted without persistence, a ``FLUSHALL``). Going on would store records again from
    offset 0 under offsets sinks already committed past, and renew leases nobody fences, so it
    is fatal like a :class:`ConfigError`: the connector gives up and the run exits 1."""


class RestartError(MeshconnectError):
    """An operation failed part-way: restart the connector from its last checkpoint.

    For failures after which neither a retry in place nor a dead letter is safe: a write that
    may have reached the destination in part, a read whose position already moved. The worker
    fails the connector and its supervisor restarts it with backoff from the committed
    positions (a source) or offsets (a sink, whose ``open(state)`` discards what it wrote
    after the checkpoint). In a bounded run, restarts are limited as for any failure."""


class BatchError(MeshconnectError):
    """Raised by ``Sink.write``: the records at some indexes of the batch failed, the rest were
    written (Redpanda Connect's ``BatchError.Failed(i, err)``).

    ``failures`` maps an index into the batch given to ``write`` to that record's error, which
    is classified on its own: a retriable error has just that record written again after a
    backoff, a data error sends it to the dead-letter topic (or fails the sink under
    ``tolerance: none``). Records not named were written and are never sent again. Build it
    with ``BatchError().failed(3, DataError("no such channel"))``."""

    def __init__(
        self, message: str = "", failures: Mapping[int, BaseException] | None = None
    ) -> None:
        self.failures: dict[int, BaseException] = dict(failures or {})
        super().__init__(message or "some records of the batch failed")

    def failed(self, index: int, error: BaseException) -> BatchError:
        """Record that the record at ``index`` failed with ``error``; returns ``self``."""
        self.failures[index] = error
        return self

    def __str__(self) -> str:
        shown = ", ".join(
            f"[{i}] {type(e).__name__}: {e}" for i, e in sorted(self.failures.items())[:3]
        )
        more = f" and {len(self.failures) - 3} more" if len(self.failures) > 3 else ""
        return f"{self.args[0]}: {shown}{more}" if shown else str(self.args[0])


#: A connector's mapping of its client library's exceptions onto the taxonomy: the class of
#: ``exc``, or ``None`` when it does not know it (then :func:`classify` decides).
Classifier = Callable[[BaseException], "type[MeshconnectError] | None"]


@dataclass(frozen=True, slots=True)
class Location:
    """Where in which file a config value stands (1-based line and column)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation problem, printed as ``FILE:LINE:COL: message``."""

    location: Location | None
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class ValidationErrors(ConfigError):
    """Every problem found in a set of pipeline files."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


_RETRIABLE_BUILTINS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    BlockingIOError,
    InterruptedError,
)

#: ``errno`` values of an ``OSError`` that may go away by themselves.
RETRIABLE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EIO",
        "ENOSPC",
        "EDQUOT",
        "EAGAIN",
        "EBUSY",
        "EINTR",
        "ENFILE",
        "EMFILE",
        "ENOMEM",
        "ENOBUFS",
        "ESTALE",
        "ETIMEDOUT",
        "ENETDOWN",
        "ENETUNREACH",
        "EHOSTUNREACH",
        "ECONNRESET",
        "ECONNREFUSED",
        "ECONNABORTED",
        "EPIPE",
    )
    if hasattr(errno, name)
)
#: ``errno`` values of an ``OSError`` that say a configured path or its permissions are wrong.
CONFIG_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EACCES",
        "EPERM",
        "EROFS",
        "ENOENT",
        "ENOTDIR",
        "EISDIR",
        "ENAMETOOLONG",
        "ELOOP",
    )
    if hasattr(errno, name)
)
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "busy", "disk i/o error")
_DATA_BUILTINS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    ArithmeticError,
)


def classify(
    exc: BaseException, connector: Classifier | None = None
) -> type[MeshconnectError] | None:
    """The taxonomy class of ``exc``: what ``connector`` (a connector's ``classify_error``)
    maps it to, else one of ours, a standard exception we know (see the table in the module
    docstring), or ``None`` (unknown: a failure of the connector)."""
    if isinstance(exc, FencedError):
        return RestartError
    if connector is not None:
        try:
            mapped = connector(exc)
        except Exception:  # a broken mapping must not hide the original error
            mapped = None
        if mapped is not None:
            return mapped
    for cls in (
        ConfigError,
        PluginError,
        RetriableError,
        DataError,
        RestartError,
        BatchError,
        StoreError,
    ):
        if isinstance(exc, cls):
            return cls
    if isinstance(exc, _RETRIABLE_BUILTINS):
        return RetriableError
    if isinstance(exc, OSError):
        if exc.errno in RETRIABLE_ERRNOS:
            return RetriableError
        if exc.errno in CONFIG_ERRNOS:
            return ConfigError
        return None
    # Only modules already imported can have raised their exceptions: look, never import.
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(exc, sqlite3.Error):
        if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
            return DataError
        if isinstance(exc, sqlite3.OperationalError):
            text = str(exc).lower()
            if any(marker in text for marker in _SQLITE_TRANSIENT):
                return RetriableError
        return None
    csv = sys.modules.get("csv")
    if csv is not None and isinstance(exc, csv.Error):
        return DataError
    if isinstance(exc, _DATA_BUILTINS):
        return DataError
    return None
