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
    └── StoreError             the mesh store failed; retriable unless it says otherwise.

Connectors raise these (wrapping their client library's exceptions); :func:`classify` maps what
they raise, and the builtins it knows, onto the taxonomy. Anything unmapped is a failure of the
connector, which the supervisor restarts with backoff.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "DataError",
    "Location",
    "MeshconnectError",
    "PluginError",
    "Problem",
    "RetriableError",
    "StoreError",
    "ValidationErrors",
    "classify",
]


class MeshconnectError(Exception):
    """Base class of every error meshconnect raises on purpose."""


class ConfigError(MeshconnectError):
    """The configuration is wrong. Never retried: fix the file and run again."""


class PluginError(MeshconnectError):
    """A plugin could not be loaded or broke its contract."""


class RetriableError(MeshconnectError):
    """A transient failure; the operation may succeed if tried again later."""


class DataError(MeshconnectError):
    """A record that cannot be processed. Goes to the dead-letter topic under ``tolerance: all``."""


class StoreError(MeshconnectError):
    """The mesh store failed."""


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


def classify(exc: BaseException) -> type[MeshconnectError] | None:
    """The taxonomy class of ``exc``: one of ours, a builtin we know, or ``None`` (unknown).

    Builtin connection and timeout errors are retriable; ``ValueError``, ``TypeError``,
    ``KeyError`` and ``UnicodeError`` raised while handling a record are data errors.
    """
    for cls in (ConfigError, PluginError, RetriableError, DataError, StoreError):
        if isinstance(exc, cls):
            return cls
    if isinstance(exc, _RETRIABLE_BUILTINS):
        return RetriableError
    if isinstance(exc, ValueError | TypeError | KeyError | UnicodeError | ArithmeticError):
        return DataError
    return None
