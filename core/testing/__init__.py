"""Test doubles for pipelines and connectors, for meshconnect's tests and plugin authors alike.

* :class:`MemorySource` yields given records in batches, with positions, and can be told to
  raise at a given point (a crash mid-stream).
* :class:`MemorySink` collects what it is given in :data:`MemorySink.outputs` by name, with
  truncate-to-checkpoint semantics like a real file sink, and can reject records (a
  ``DataError``), fail transiently (a ``RetriableError``) or crash before a commit. With
  ``path`` it keeps its output in a JSON-lines file too, so a test can run it in a
  ``meshconnect run`` subprocess (load this module as a local plugin: see
  :data:`PLUGIN_SOURCE`).
* :data:`plugin` registers both as the ``memory`` connector; add it to a registry with
  ``registry.register(meshconnect.testing.plugin, "testing")`` or with :func:`test_registry`.
* :func:`run_pipelines` runs pipeline YAML in-process against a store and returns the exit code.
* The conformance suites, pytest classes a connector's or a store's tests subclass (see
  docs/plugins.md): :class:`SourceConformance` (any bounded source), :class:`SinkConformance`
  (any sink), :class:`StoreConformance` (any mesh store backend).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from ..api import (
    ConnectorConfig,
    ConnectorContext,
    ConnectorSpec,
    Position,
    Sink,
    Source,
    SourceBatch,
)
from ..errors import DataError, RetriableError
from ..hookspecs import hookimpl
from ..positioncheck import fields_problem, partition_problem, whole
from ..records import Record

__all__ = [
    "PLUGIN_SOURCE",
    "FakeClock",
    "MemorySink",
    "MemorySinkConfig",
    "MemorySource",
    "MemorySourceConfig",
    "SinkConformance",
    "SourceConformance",
    "StoreConformance",
    "collect",
    "plugin",
    "run_pipelines",
    "test_registry",
]


class MemorySourceConfig(ConnectorConfig):
    records: list[Any] = Field(
        default_factory=list,
        description="Each item becomes one record's data, or a whole record when it is a "
        "CloudEvent object (has specversion).",
    )
    batch_size: int = Field(100, ge=1)
    follow: bool = Field(False, description="Keep polling (empty batches) after the last record.")
    fail_at: int | None = Field(
        None, description="Raise once, when the record with this index is about to be read."
    )


class MemorySource(Source[MemorySourceConfig]):
    """Yields the configured records; position ``{"next": index}`` on partition ``memory``."""

    #: Indexes at which a crash was already simulated, by pipeline (fail once per process).
    crashed: ClassVar[set[str]] = set()

    def __init__(self, config: MemorySourceConfig, context: ConnectorContext) -> None:
        super().__init__(config, context)
        self.bounded = not config.follow
        self.next = 0

    def position_problem(self, partition: str, position: Position) -> str | None:
        return partition_problem(partition, ["memory"]) or fields_problem(
            position, {"next": whole()}, required=["next"]
        )

    async def start(self, positions: Mapping[str, Any]) -> None:
        self.next = int(positions.get("memory", {}).get("next", 0))

    async def poll(self) -> SourceBatch | None:
        items = self.config.records
        if self.next >= len(items):
            if self.config.follow:
                await asyncio.sleep(0.05)
                return SourceBatch([])
            return None
        end = min(len(items), self.next + self.config.batch_size)
        fail_at = self.config.fail_at
        key = f"{self.context.pipeline}:{fail_at}"
        if fail_at is not None and self.next <= fail_at < end and key not in self.crashed:
            self.crashed.add(key)
            raise RuntimeError(f"simulated crash before record {fail_at}")
        records = []
        for index in range(self.next, end):
            item = items[index]
            if isinstance(item, dict) and "specversion" in item:
                records.append(Record.from_dict(item))
            else:
                records.append(
                    Record(item, id=f"{self.context.pipeline}-{index}", source="memory://")
                )
        self.next = end
        return SourceBatch(records, {"memory": {"next": end}})


class MemorySinkConfig(ConnectorConfig):
    name: str = Field("default", description="Key in MemorySink.outputs.")
    reject_when: str | None = Field(
        None, description="A data key: records whose data has it truthy raise DataError."
    )
    fail_for: float = Field(
        0.0, description="Seconds after open during which every write raises RetriableError."
    )
    crash_before_commit: bool = Field(
        False,
        description="The first flush (per name and process) raises a RuntimeError: a crash "
        "after writing and dead-lettering, before the offsets are committed.",
    )
    path: str | None = Field(
        None,
        description="Also keep the output in this JSON-lines file (CloudEvents), rewritten on "
        "every flush and read back on open: the output survives the process.",
    )


class MemorySink(Sink[MemorySinkConfig]):
    """Collects records in ``outputs[name]``; truncates to the committed count on open."""

    outputs: ClassVar[dict[str, list[Record]]] = {}
    #: Names whose simulated crash before a commit has happened (once per process).
    crashed: ClassVar[set[str]] = set()

    async def open(self, state: Mapping[str, Any] | None) -> None:
        if self.config.path is not None:
            self.outputs[self.config.name] = _read_events(self._path())
        out = self.outputs.setdefault(self.config.name, [])
        keep = int(state["count"]) if state else 0
        del out[keep:]
        self.opened = time.monotonic()

    def _path(self) -> str:
        assert self.config.path is not None
        return os.path.join(self.context.base_dir, self.config.path)

    async def write(self, records: Sequence[Record]) -> None:
        if time.monotonic() - self.opened < self.config.fail_for:
            raise RetriableError("memory sink: simulated transient failure")
        key = self.config.reject_when
        if key is not None:
            for record in records:
                if isinstance(record.data, dict) and record.data.get(key):
                    raise DataError(f"memory sink rejects records with {key!r}")
        self.outputs[self.config.name].extend(records)

    async def flush(self) -> dict[str, Any]:
        name = self.config.name
        if self.config.crash_before_commit and name not in self.crashed:
            self.crashed.add(name)
            raise RuntimeError("memory sink: simulated crash before the commit")
        out = self.outputs[name]
        if self.config.path is not None:
            _write_events(self._path(), out)
        return {"count": len(out)}


def _read_events(path: str) -> list[Record]:
    from .. import jsonvalue

    try:
        with open(path, "rb") as file:
            return [
                Record.from_dict(jsonvalue.loads(line, max_depth=None))
                for line in file
                if line.strip()
            ]
    except FileNotFoundError:
        return []


def _write_events(path: str, records: Sequence[Record]) -> None:
    from .. import jsonvalue

    tmp = f"{path}.tmp"
    with open(tmp, "wb") as file:
        file.write(b"".join(jsonvalue.dumps(r.to_dict(), newline=True) for r in records))
    os.replace(tmp, path)


@hookimpl
def meshconnect_connectors() -> list[ConnectorSpec]:
    return [
        ConnectorSpec(
            "memory",
            "source",
            MemorySourceConfig,
            MemorySource,
            description="Records given in the config (tests).",
        ),
        ConnectorSpec(
            "memory",
            "sink",
            MemorySinkConfig,
            MemorySink,
            description="Collects records in memory (tests).",
        ),
    ]


class _TestingPlugin:
    meshconnect_connectors = staticmethod(meshconnect_connectors)


#: The plugin object to register for the ``memory`` test connector.
plugin = _TestingPlugin()

#: The text of a local plugin module (list it under ``paths`` in a ``plugins.toml``) that gives
#: a ``meshconnect`` subprocess the ``memory`` test connector.
PLUGIN_SOURCE = "from meshconnect.testing import meshconnect_connectors  # noqa: F401\n"


def test_registry() -> Any:
    """The installed plugins plus the ``memory`` test connector."""
    from ..plugins import load_registry

    registry = load_registry()
    registry.register(plugin, "testing")
    return registry


test_registry.__test__ = False  # type: ignore[attr-defined]


def collect(name: str = "default") -> list[Any]:
    """The data of every record the memory sink ``name`` holds."""
    return [r.data for r in MemorySink.outputs.get(name, [])]


async def run_pipelines(
    files: Sequence[str | Path],
    store_url: str = "memory://",
    registry: Any = None,
    **worker_options: Any,
) -> int:
    """Load pipeline files and run them in this process until done; the exit code.

    ``worker_options`` go to :class:`~meshconnect.worker.Worker` (e.g. ``restart_backoff``).
    """
    from ..config.loader import load_pipeline_files
    from ..mesh import open_store
    from ..worker import Worker

    registry = registry or test_registry()
    config = load_pipeline_files([str(f) for f in files], registry)
    store = open_store(store_url, registry)
    await store.open()
    try:
        return await Worker(config, store, **worker_options).run()
    finally:
        await store.close()


def __getattr__(name: str) -> Any:
    """The suites that need pytest are imported on first use (``meshconnect.testing`` itself
    works without pytest, e.g. for the ``memory`` connector in a subprocess).

    Under pytest their ``assert`` statements are rewritten, as a test module's are: a failed
    check shows the values it compared (which records are missing or twice), not a bare
    ``AssertionError``."""
    if name in ("StoreConformance", "FakeClock", "SourceConformance", "SinkConformance"):
        _rewrite_asserts()
    if name in ("StoreConformance", "FakeClock"):
        from . import _store

        return getattr(_store, name)
    if name == "SourceConformance":
        from ._source import SourceConformance

        return SourceConformance
    if name == "SinkConformance":
        from ._sink import SinkConformance

        return SinkConformance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _rewrite_asserts() -> None:
    """Ask pytest (when it runs) to rewrite the suites' asserts: only possible before they
    are imported."""
    import sys

    pytest = sys.modules.get("pytest")
    if pytest is None:
        return
    for module in ("_source", "_sink", "_store"):
        if f"{__name__}.{module}" not in sys.modules:
            pytest.register_assert_rewrite(f"{__name__}.{module}")
