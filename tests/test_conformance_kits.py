"""The conformance suites fail connectors that break the contract: a kit that passes a broken
connector (or hangs on it) is a fault of the kit. Each broken connector here is one a plugin
author writes by mistake."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from meshconnect import ConnectorConfig, ConnectorContext, Position, Record, Source, SourceBatch
from meshconnect.testing import SourceConformance

#: A broken source gives up after this many polls, so a kit that would poll it forever fails
#: the test instead of hanging it.
RUNAWAY = 20_000


class CountConfig(ConnectorConfig):
    count: int = 250
    batch: int = 40
    mistake: str = ""  # "ignores positions", "never ends", "repeats"


class CountSource(Source[CountConfig]):
    bounded = True

    async def start(self, positions: Mapping[str, Position]) -> None:
        self.next = int(positions.get("n", {}).get("next", 0))
        if self.config.mistake == "ignores positions":
            self.next = 0
        self.polls = 0

    async def poll(self) -> SourceBatch | None:
        self.polls += 1
        if self.polls > RUNAWAY:
            raise RuntimeError(f"polled {RUNAWAY} times: the kit did not stop")
        if self.next >= self.config.count:
            if self.config.mistake == "never ends":
                return SourceBatch([], {})  # a follow-mode source under a bounded kit
            return None
        end = min(self.config.count, self.next + self.config.batch)
        records = [Record({"n": i}, id=f"n-{i}") for i in range(self.next, end)]
        if self.config.mistake != "repeats":  # forgets to move its cursor
            self.next = end
        return SourceBatch(records, {"n": {"next": end}})


class Kit(SourceConformance):
    """The suite over CountSource with a config (not collected: no Test prefix)."""

    def __init__(self, **config: Any) -> None:
        self.config = CountConfig(**config)

    def make_source(self, tmp_path: Path) -> CountSource:
        context = ConnectorContext("test", "count", logging.getLogger("test"), str(tmp_path))
        return CountSource(self.config, context)


async def test_a_correct_source_passes_every_check(tmp_path: Path) -> None:
    kit = Kit()
    for name in dir(kit):
        if name.startswith("test_"):
            await getattr(kit, name)(tmp_path)


async def test_a_source_that_ignores_stored_positions_fails_even_with_a_small_input(
    tmp_path: Path,
) -> None:
    """With an input of one batch (the docs' example had three names, batches of 100) there
    was no boundary to resume from: every check passed a source that ignores its positions."""
    with pytest.raises(AssertionError, match="resuming after batch 0"):
        await Kit(mistake="ignores positions").test_resume_from_every_batch_boundary(tmp_path)
    with pytest.raises(AssertionError, match="the records came in one batch"):
        await Kit(mistake="ignores positions", count=3).test_resume_from_every_batch_boundary(
            tmp_path
        )


async def test_a_source_that_never_ends_fails_instead_of_hanging(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="50 polls in a row gave no record"):
        await Kit(mistake="never ends").test_bounded_source_ends(tmp_path)
    with pytest.raises(AssertionError, match="did not end after 10000 polls"):
        await Kit(mistake="repeats").test_acks_may_come_after_later_polls(tmp_path)
