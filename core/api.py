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

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import logging

    from .deliveries import Deliveries
    from .errors import MeshconnectError
    from .httplisten import HttpRoutes
    from .metrics import Metrics
    from .progress import ProgressReporter
    from .records import Record

__all__ = [
    "Ack",
    "ConnectorConfig",
    "ConnectorContext",
    "ConnectorSpec",
    "Flushed",
    "Position",
    "Sink",
    "Source",
    "SourceBatch",
    "TransformSpec",
]

#: A source partition's position: any JSON-serialisable mapping (e.g. path, inode, offset).
Position = dict[str, Any]

#: A batch's acknowledgement callback: ``ack(None)`` once durably in the mesh, ``ack(error)``
#: once given up on. May return an awaitable (see :attr:`SourceBatch.ack`).
Ack = Callable[[BaseException | None], Awaitable[None] | None]

C = TypeVar("C", bound="ConnectorConfig")


class ConnectorConfig(BaseModel):
    """Base of every connector's ``config:`` model.

    Unknown keys are errors (with a did-you-mean in ``validate``). Mark secrets with
    ``pydantic.SecretStr``: their values never appear in output, logs or errors.
    """

    # ``defer_build``: a model's validator is built when it first validates (or gives its
    # JSON schema), not when its module is imported: a worker imports every installed
    # connector's config module but validates only those its pipelines use.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


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
    #: Called once the batch's fate is known (Redpanda Connect's ``AckFunc``, bytewax's
    #: explicit commit): ``ack(None)`` right after the store transaction that holds the
    #: batch's records and positions committed, ``ack(error)`` when the worker gave up on it
    #: (the append failed for good, the worker stopped before appending it, the connector
    #: failed). Called exactly once per batch, from the event loop; it may be a plain function
    #: or return an awaitable. An exception it raises is logged, never retried. A webhook
    #: answers 2xx in ``ack(None)``; a queue source acknowledges upstream (XACK) there. Acks
    #: of successive batches come in the order the batches were polled, but may come after
    #: later polls (the worker queues a few batches between polling and appending).
    ack: Ack | None = None


@dataclass(slots=True)
class ConnectorContext:
    """What the worker gives a connector: where it runs, and the worker's shared services.

    * ``metrics``: counters, gauges and histograms labelled with the pipeline and connector
      (:mod:`meshconnect.metrics`), rendered in the Prometheus text format by the worker's
      registry (``meshconnect run --metrics HOST:PORT`` serves them at ``/metrics``).
    * ``progress``: ``context.progress("snapshot", total=n, unit="rows")`` returns a
      :class:`~meshconnect.progress.Progress` (a tqdm bar on a terminal, log lines
      otherwise) for snapshots and bulk loads.
    * ``http``: ``await context.http.add_route(listen, method, path, handler)`` serves an
      aiohttp handler on the worker's shared listener for ``listen``
      (:mod:`meshconnect.httplisten`); a clash is a ConfigError naming both pipelines.
    * ``deliveries``: ``await context.deliveries.wait(records, timeout)`` waits until stored
      records were committed by every sink of this worker that reads their topics (``True``),
      or ``timeout`` seconds passed (``False``) (:mod:`meshconnect.deliveries`): for sources
      that answer a caller only once the records went all the way through.

    Built outside a worker (a unit test), the services are private to the context.
    """

    pipeline: str
    name: str
    logger: logging.Logger
    #: The directory the pipeline file lives in; relative paths in config resolve against it.
    base_dir: str = "."
    metrics: Metrics = field(default=None)  # type: ignore[assignment]
    progress: ProgressReporter = field(default=None)  # type: ignore[assignment]
    http: HttpRoutes = field(default=None)  # type: ignore[assignment]
    deliveries: Deliveries = field(default=None)  # type: ignore[assignment]
    #: A sink of a pipeline with ``partitions: N``: which of its N consumers this instance is
    #: (0 … N-1; docs/scaleout.md#partitions); ``None`` for the only one, and for sources.
    partition: int | None = None
    #: A source: True when nothing reads its records' ``data`` before the mesh store encodes
    #: it (the pipeline has no transforms, and its topic template reads no data). A source
    #: may then hand :class:`~meshconnect.EncodedRecord`\ s, whose data is already its JSON
    #: encoding, and spare making a Python value that would only be encoded. A hint for
    #: speed: such records are correct wherever their data is read.
    data_untouched: bool = False

    def __post_init__(self) -> None:
        from .httplisten import HttpRoutes
        from .metrics import Metrics
        from .progress import ProgressReporter

        if self.metrics is None:
            self.metrics = Metrics(labels=(("connector", self.name), ("pipeline", self.pipeline)))
        if self.progress is None:
            self.progress = ProgressReporter(self.logger)
        if self.http is None:
            self.http = HttpRoutes(None, f"pipeline {self.pipeline!r} ({self.name})")
        if self.deliveries is None:
            from .deliveries import Deliveries

            self.deliveries = Deliveries()


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

    def classify_error(self, exc: BaseException) -> type[MeshconnectError] | None:
        """Map an exception of this connector's client library onto the taxonomy
        (:mod:`meshconnect.errors`): ``RetriableError`` for a lost connection or a 503,
        ``ConfigError`` for bad credentials, ``RestartError`` for a failure part-way...; ``None``
        leaves it to :func:`meshconnect.errors.classify` (which knows only ours and the
        standard library's). The worker asks it for every exception ``start``/``poll`` raise."""
        return None

    async def end_positions(self) -> dict[str, Position]:
        """Positions at the current end of the input, by partition, for ``meshconnect offsets
        reset --to end``: started with them, the source reads only what arrives afterwards.
        Called on a fresh instance (``start`` has not run). Sources that cannot tell raise
        ``NotImplementedError``, the default."""
        raise NotImplementedError

    def position_problem(self, partition: str, position: Position) -> str | None:
        """Why ``position`` cannot be the position of ``partition`` (a partition this source
        never reads, a field of the wrong type), or ``None``. ``meshconnect offsets reset
        --to '{JSON}'`` asks it for each hand-written position before storing any, so a typo
        is refused there instead of being ignored or failing the next run. Called on a fresh
        instance (``start`` has not run); the default accepts any position."""
        return None


class Sink(Generic[C]):
    """A sink connector. Subclass it, set ``config_model``, implement ``write`` and ``flush``."""

    #: Records per ``write`` when the pipeline file gives the sink no ``batch_size`` (``None``:
    #: the default 2000). For sinks that send records one at a time to a slow or rate-limited
    #: service: offsets are committed between writes, so a smaller batch is committed sooner
    #: (and fewer records are sent again after a crash).
    batch_size_hint: ClassVar[int | None] = None

    #: Seconds between calls of :meth:`tick`, records or not (``None``: never). For sinks that
    #: rotate by time: an object held open must be closed after an interval even when no
    #: record comes to trigger it.
    tick_interval: float | None = None

    def __init__(self, config: C, context: ConnectorContext) -> None:
        self.config = config
        self.context = context

    @classmethod
    def partition_problem(cls, config: Any) -> str | None:
        """Why this sink, configured with ``config``, cannot run as several consumers that
        write at once, or ``None`` when it can (a pipeline with ``partitions: N`` runs each
        sink as N consumers, each with its own offsets and committed state, possibly on
        several workers: docs/scaleout.md#partitions). ``validate`` reports the answer as a
        problem of the pipeline's ``partitions:``.

        The default refuses, so a sink whose output the consumers would share (one file, one
        object, a sequence) is never written by two at once: a sink that writes record by
        record to a shared service (a table by key, an API) overrides this to return
        ``None``; one with a private output per consumer (``context.partition``) returns
        ``None`` when its config gives each consumer its own."""
        return "the connector does not declare that several consumers may write at once"

    async def open(self, state: Mapping[str, Any] | None) -> None:
        """Prepare to write. ``state`` is what ``flush`` returned at the last commit, or None."""

    async def write(self, records: Sequence[Record]) -> None:
        """Write a batch. It need not be durable until ``flush``.

        Raise :class:`~meshconnect.errors.RetriableError` for a transient failure and
        :class:`~meshconnect.errors.DataError` for records the destination rejects; either way,
        leave nothing of the batch half-written (or be idempotent): the worker retries the
        batch, and after a data error writes it again record by record to find the bad ones.

        A sink that writes records one by one (HTTP, Slack, an API: not idempotent) raises
        :class:`~meshconnect.errors.BatchError` instead, naming the index and error of each
        record that failed: the worker then retries or dead-letters exactly those and never
        sends the others again. The records are shared with other readers: do not change them.
        """
        raise NotImplementedError

    async def flush(self) -> dict[str, Any] | Flushed | None:
        """Make what was written durable; return the state to commit with the offsets.

        Return :class:`Flushed` to say that only part of it became durable (a multipart
        upload holding a part below its minimum size, a file not yet rotated): the worker
        commits the offsets up to the first record still pending, with the state, and the
        pending records stay with the sink (they are not written again in this run; after a
        crash they are delivered again from the committed offsets, and ``open(state)`` must
        drop any trace of them)."""
        return None

    async def tick(self, final: bool = False) -> None:
        """Called every :attr:`tick_interval` seconds, and once with ``final=True`` when the
        run ends (bounded sources done, or a stop): close what is held open (rotate an object,
        complete an upload) so that the next ``flush`` reports it durable. A flush and commit
        follow each tick. The default does nothing."""

    def classify_error(self, exc: BaseException) -> type[MeshconnectError] | None:
        """Map an exception of this connector's client library onto the taxonomy; ``None``
        leaves it to :func:`meshconnect.errors.classify` (see :meth:`Source.classify_error`).
        The worker asks it for every exception ``open``/``write``/``flush`` raise, and for
        each error of a :class:`~meshconnect.errors.BatchError`."""
        return None

    async def close(self) -> None:
        """Release resources. Called after failures too; must not assume ``open`` ran."""


@dataclass(slots=True)
class Flushed:
    """What a sink's ``flush`` returns when not everything it was given is durable yet.

    ``pending`` counts the records *most recently given to* ``write`` (over every ``write``
    since the last flush, in order) that are not durable yet; everything before them is. The
    worker commits each topic's offset up to its first pending record, together with
    ``state`` (which must describe only what is durable). A later flush reports them again
    (``pending`` then counts from the newest record written). ``Flushed(state)`` (pending 0)
    is the same as returning ``state``."""

    state: dict[str, Any] | None = None
    pending: int = 0


@dataclass(slots=True)
class ConnectorSpec:
    """How a plugin declares a connector (returned by the ``meshconnect_connectors`` hook).

    ``factory`` is the Source or Sink class, or ``"module:Class"`` imported only when a
    pipeline uses it, so a connector whose client library is missing still lists.
    ``config_model`` is the config class, or ``"module:Class"`` imported only when a pipeline
    (or ``meshconnect schema``, the docs) needs it, so a run does not import the config models
    of connectors it does not use; read it with :meth:`model`. A string's form is checked
    when the plugin registers (:meth:`problem`), its import when a pipeline uses it.
    ``requires`` names the modules it needs and ``extra`` the pip extra that installs them.
    """

    name: str
    kind: Literal["source", "sink"]
    config_model: type[ConnectorConfig] | str
    factory: type[Source[Any]] | type[Sink[Any]] | str
    description: str = ""
    requires: Sequence[str] = ()
    extra: str | None = None

    def load(self) -> Callable[..., Source[Any] | Sink[Any]]:
        """The connector class (imports it when ``factory`` is a string); PluginError naming
        the connector and the string when it does not import (the import's error as its
        cause)."""
        factory: Any = self.factory
        if isinstance(factory, str):
            factory = self._resolve("factory", "class", factory)
        problem = self._factory_problem(factory)
        if problem is not None:
            from .errors import PluginLoadError

            raise PluginLoadError(problem)
        return factory

    def _factory_problem(self, factory: Any) -> str | None:
        """Why a ``factory`` class cannot make this kind of connector: a sink's class given as
        a source, a class that is no connector (a function factory is checked by what it
        returns)."""
        base = Source if self.kind == "source" else Sink
        if isinstance(factory, type) and not issubclass(factory, base):
            what = next(
                (f"a {b.__name__}" for b in (Source, Sink) if issubclass(factory, b)),
                "no connector class",
            )
            return (
                f"{self.kind} connector {self.name!r}: factory {factory.__qualname__} is "
                f"{what}, not a meshconnect.{base.__name__} subclass"
            )
        if not callable(factory):
            return f"{self.kind} connector {self.name!r}: factory {factory!r} is not callable"
        return None

    def model(self) -> type[ConnectorConfig]:
        """The config class (imports it when ``config_model`` is a string).

        Raises :class:`~meshconnect.errors.PluginError` naming the connector and the string
        when it does not import (the import's error as its cause) or is not a
        :class:`ConnectorConfig` subclass."""
        from .errors import PluginLoadError

        model: Any = self.config_model
        if isinstance(model, str):
            model = self._resolve("config_model", "config model", model)
        if not (isinstance(model, type) and issubclass(model, ConnectorConfig)):
            raise PluginLoadError(
                f"connector {self.name!r}: config_model {self.config_model!r} is not a "
                "meshconnect.ConnectorConfig subclass"
            )
        return model

    def _resolve(self, field_name: str, what: str, path: str) -> Any:
        """The object a ``"module:Class"`` field names; PluginLoadError naming the field, or
        the string and the import's error (as its cause)."""
        from .errors import PluginLoadError

        problem = import_path_problem(path)
        if problem is not None:
            raise PluginLoadError(f"connector {self.name!r}: {field_name} {problem}")
        try:
            return _imported(path)
        except Exception as exc:
            raise PluginLoadError(
                f"connector {self.name!r}: its {what} {path!r} cannot be loaded "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    def problem(self) -> str | None:
        """What is wrong with the spec's form, found without importing anything (a plugin
        with such a spec is listed as failed): ``config_model`` neither a class nor a
        ``"module:Class"`` string, ``factory`` neither a class nor such a string, a
        ``config_model`` class that is no :class:`ConnectorConfig`, a ``kind`` that is neither
        ``"source"`` nor ``"sink"``."""
        if self.kind not in ("source", "sink"):
            return f'connector {self.name!r}: kind must be "source" or "sink", not {self.kind!r}'
        if isinstance(self.config_model, type) and not issubclass(
            self.config_model, ConnectorConfig
        ):
            return (
                f"connector {self.name!r}: config_model {self.config_model.__name__} is not a "
                "meshconnect.ConnectorConfig subclass"
            )
        if isinstance(self.factory, type):
            problem = self._factory_problem(self.factory)
            if problem is not None:
                return problem
        for field_name in ("config_model", "factory"):
            value = getattr(self, field_name)
            if isinstance(value, str):
                problem = import_path_problem(value)
                if problem is not None:
                    return f"connector {self.name!r}: {field_name} {problem}"
            elif not isinstance(value, type):
                return (
                    f"connector {self.name!r}: {field_name} must be a class or a "
                    f'"module:Class" string, not {value!r}'
                )
        return None


def import_path_problem(path: str) -> str | None:
    """What is wrong with a ``"module:Class"`` string's form, or ``None``: a dotted module
    name, one ``:``, then a dotted attribute path (``"pkg.config:SourceConfig"``)."""
    module_name, colon, attr = path.partition(":")
    names = [*module_name.split("."), *attr.split(".")]
    if not colon or not all(n.isidentifier() for n in names):
        return f'{path!r} is not "module:Class" (a dotted module name, ":", a class name)'
    return None


def _imported(path: str) -> Any:
    """The object ``"module:attr.attr"`` names (imports the module)."""
    import importlib

    module_name, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


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

    def problem(self) -> str | None:
        """What is wrong with the spec (a plugin with such a spec is listed as failed): an
        ``options_model`` that is no pydantic model class, a ``factory`` that is not
        callable."""
        if not (isinstance(self.options_model, type) and issubclass(self.options_model, BaseModel)):
            return (
                f"transform {self.name!r}: options_model must be a pydantic BaseModel "
                f"subclass, not {self.options_model!r}"
            )
        if not callable(self.factory):
            return f"transform {self.name!r}: factory {self.factory!r} is not callable"
        return None
