"""A source that returns the wrong thing from poll or start, or a sink from flush, fails with
a PluginError that says what it returned, not an AttributeError from deep in the worker or
a StoreError retried over and over."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from meshconnect import (
    ConnectorConfig,
    ConnectorSpec,
    Flushed,
    Position,
    Record,
    Sink,
    Source,
    SourceBatch,
    hookimpl,
)
from meshconnect.testing import run_pipelines, test_registry


class GarbageConfig(ConnectorConfig):
    mode: str


class GarbageSource(Source[GarbageConfig]):
    bounded = True

    async def start(self, positions: Mapping[str, Position]) -> Any:
        self.done = False
        return ["garbage"] if self.config.mode == "start" else None

    async def poll(self) -> Any:
        if self.done:
            return None
        self.done = True
        records = [Record({"a": 1}, id="x")]
        return {
            "list": records,
            "positions": SourceBatch(records, ["p"]),  # type: ignore[arg-type]
            "dicts": SourceBatch([{"a": 1}], {"p": {"n": 1}}),  # type: ignore[list-item]
        }[self.config.mode]


class GarbageSink(Sink[GarbageConfig]):
    async def write(self, records: Sequence[Record]) -> None:
        pass

    async def flush(self) -> Any:
        return {
            "list": [1, 2],
            "set": {"seen": {1, 2}},
            "pending": Flushed({}, pending=-1),
        }[self.config.mode]


class Plugin:
    @hookimpl
    def meshconnect_connectors(self) -> list[ConnectorSpec]:
        return [
            ConnectorSpec("garbage", "source", GarbageConfig, GarbageSource),
            ConnectorSpec("garbage", "sink", GarbageConfig, GarbageSink),
        ]


def registry() -> Any:
    registry = test_registry()
    registry.register(Plugin(), "garbage")
    return registry


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("list", "poll returned list [<Record id='x'"),
        ("positions", "poll returned positions list ['p']: they must map each partition"),
        ("dicts", "poll returned a SourceBatch whose records are list [{'a': 1}], not a list"),
        ("start", "start returned positions list ['garbage']: they must map each partition"),
    ],
)
async def test_a_source_returning_garbage_fails_naming_what_it_returned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str, message: str
) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        f"pipelines:\n  - name: p\n    source: {{connector: garbage, config: {{mode: {mode}}}}}\n"
        "    sinks:\n      - {connector: memory, config: {name: garbage}}\n"
    )
    caplog.set_level(logging.ERROR, logger="meshconnect")
    assert await run_pipelines([pipeline], registry=registry(), restart_backoff=0.01) == 1
    failures = [r.getMessage() for r in caplog.records if "FAILED" in r.getMessage()]
    assert failures
    assert all(f"PluginError: source p/garbage: {message}" in f for f in failures), failures


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("list", "flush returned a state of type list ([1, 2]), not a dict"),
        ("set", "flush returned a state the store cannot keep: sink state of group 'p/garbage'"),
        ("pending", "flush returned Flushed(pending=-1), not a count of records"),
    ],
)
async def test_a_sink_flush_returning_garbage_fails_naming_what_it_returned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str, message: str
) -> None:
    (tmp_path / "in.jsonl").write_text('{"a": 1}\n')
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "pipelines:\n  - name: p\n    source: {connector: file, config: {path: in.jsonl}}\n"
        f"    sinks:\n      - {{connector: garbage, config: {{mode: {mode}}}}}\n"
    )
    caplog.set_level(logging.ERROR, logger="meshconnect")
    assert await run_pipelines([pipeline], registry=registry(), restart_backoff=0.01) == 1
    failures = [r.getMessage() for r in caplog.records if "FAILED" in r.getMessage()]
    assert failures
    assert all(f"PluginError: sink p/garbage: {message}" in f for f in failures), failures
