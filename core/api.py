"""The connector API: what a source, a sink and a transform implement.

Everything here is small and async. A *source* yields batches of records together with the
positions they bring its partitions to; the worker appends each batch to the mesh store and
commits those positions in the same transaction, so a position never runs ahead of the records
it covers. A *sink* receives batches read from the mesh, writes them, and on ``flush()`` makes
them durable and returns a small state that the worker commits with its consumer offsets.

Contracts every connector must keep (the conformance suite in :mod:`meshconnect.testing`
checks them):

* **A position is where to resume**: the next item to read, not the last one read. A source
  started with the positions of a batch must produce exactly the records after that batch.
* **Never block the event loop.** Blocking client calls go through ``asyncio.to_thread``.
* **poll() returns promptly.** An idle source waits at most about a second and returns an empty
  batch, so the worker can stop it. A bounded source returns ``None`` once it is exhausted.
* **Sinks are idempotent or transactional.** Records after the last commit are delivered again
  after a crash; ``open(state)`` receives the state of the last commit (for example a file
  size to truncate to) so the sink can discard what it wrote after it.
* **close() may not assume that anything else ran**: it is called after failures too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import logging

    from .records import Record

__all__ = [
    "ConnectorConfig",
    "ConnectorContext",
    "ConnectorSpec",
    "Position",
    "Sink",
    "Source",
    "SourceBatch",
    "TransformSpec",
]

#: A source partition's position: any JSON-serialisable mapping (e.g. path, inode, offset).
Position = dict[str, Any]

C = TypeVar("C", bound="ConnectorConfig")


class ConnectorConfig(BaseModel):
    """Base of every connector's ``config:`` model.

    Unknown keys are errors (with a did-you-mean in ``validate``). Mark secrets with
    ``pydantic.SecretStr``: their values never appear in output, logs or errors.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(slots=True)
class SourceBatch:
    """Records read by one ``poll()`` and the positions they bring partitions to.

    ``positions`` maps a partition name to its position *after* this batch. A batch may have
    positions and no records (e.g. lines skipped, a heartbeat): the worker still commits them.
    """

    records: list[Record]
    positions: dict[str, Position] = field(default_factory=dict)
    #: Items the source could not decode (bad JSON, a short CSV row): each a record whose
    #: ``data`` holds the raw input, with the DataError. The worker routes them by the
    #: source's ``errors:`` policy (dead-letter topic or failure) in the same transaction.
    failures: list[tuple[Record, BaseException]] = field(default_factory=list)


@dataclass(slots=True)
class ConnectorContext:
    """What the worker tells a connector about where it runs."""

    pipeline: str
    name: str
    logger: logging.Logger
    #: The directory the pipeline file lives in; relative paths in config resolve against it.
    base_dir: str = "."


class Source(Generic[C]):
    """A source connector. Subclass it, set ``config_model``, implement ``poll``."""

    #: Whether this source ends by itself (a file with ``follow: false``, a bulk query).
    bounded: bool = False
    #: What an empty position (nothing committed yet) means for this source: the words after
    #: "no committed position:" in ``meshconnect offsets show``, e.g. "reads each file from
    #: its beginning". Sources whose empty position means "from now" (the end of a log) say
    #: so here, and return their starting positions from :meth:`start`.
    empty_position: ClassVar[str] = "starts from the beginning"

    def __init__(self, config: C, context: ConnectorContext) -> None:
        self.config = config
        self.context = context

    async def start(self, positions: Mapping[str, Position]) -> Mapping[str, Position] | None:
        """Prepare to read from the committed ``positions`` (empty on a first run).

        Return None, or the positions the source starts from when they are not derivable
        later: a source whose empty position means "from now" (the end of a binlog, a
        stream's latest entry) returns where "now" was; the worker commits them before it
        reports the source started, so a stop or crash before the first record resumes
        there instead of at a later "now" (and loses nothing written in between).
        """
        return None

    async def poll(self) -> SourceBatch | None:
        """The next batch; an empty batch when idle; ``None`` when a bounded source is done."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Release resources. Called after failures too; must not assume ``start`` ran."""

    async def end_positions(self) -> dict[str, Position]:
        """Positions at the current end of the input, by partition, for ``meshconnect offsets
        reset --to end``: started with them, the source reads only what arrives afterwards.
        Called on a fresh instance (``start`` has not run). Sources that cannot tell raise
        ``NotImplementedError``, the default."""
        raise NotImplementedError


class Sink(Generic[C]):
    """A sink connector. Subclass it, set ``config_model``, implement ``write`` and ``flush``."""

    def __init__(self, config: C, context: ConnectorContext) -> None:
        self.config = config
        self.context = context

    async def open(self, state: Mapping[str, Any] | None) -> None:
        """Prepare to write. ``state`` is what ``flush`` returned at the last commit, or None."""

    async def write(self, records: Sequence[Record]) -> None:
        """Write a batch. It need not be durable until ``flush``.

        Raise :class:`~meshconnect.errors.RetriableError` for a transient failure and
        :class:`~meshconnect.errors.DataError` for records the destination rejects; either way,
        leave nothing of the batch half-written (or be idempotent): the worker retries the
        batch, and after a data error writes it again record by record to find the bad ones.
        The records are shared with other readers: do not change them.
        """
        raise NotImplementedError

    async def flush(self) -> dict[str, Any] | None:
        """Make everything written durable; return the state to commit with the offsets."""
        return None

    async def close(self) -> None:
        """Release resources. Called after failures too; must not assume ``open`` ran."""


@dataclass(slots=True)
class ConnectorSpec:
    """How a plugin declares a connector (returned by the ``meshconnect_connectors`` hook).

    ``factory`` is the Source or Sink class, or ``"module:Class"`` imported only when a
    pipeline uses it, so a connector whose client library is missing still lists.
    ``requires`` names the modules it needs and ``extra`` the pip extra that installs them.
    """

    name: str
    kind: Literal["source", "sink"]
    config_model: type[ConnectorConfig]
    factory: type[Source[Any]] | type[Sink[Any]] | str
    description: str = ""
    requires: Sequence[str] = ()
    extra: str | None = None

    def load(self) -> Callable[..., Source[Any] | Sink[Any]]:
        """The connector class (imports it when ``factory`` is a string)."""
        if isinstance(self.factory, str):
            import importlib

            module_name, _, attr = self.factory.partition(":")
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            return obj
        return self.factory


@dataclass(slots=True)
class TransformSpec:
    """How a plugin declares a transform (returned by the ``meshconnect_transforms`` hook).

    ``factory(options, compiler)`` builds a :class:`meshconnect.transforms.Transform` from the
    validated options model and a :class:`meshconnect.expr.Compiler`; ``options_model`` is its
    pydantic model (without ``type``/``when``, which every transform takes).
    """

    name: str
    options_model: type[BaseModel]
    factory: Callable[..., Any]
    description: str = ""
    examples: Sequence[str] = ()
