"""The state of one run that the worker, its supervisors and the sink loops share.

The worker (:mod:`meshconnect.worker`) owns a :class:`RunState` and hands it to every sink loop
(:mod:`meshconnect.sinkloop`), so neither module reaches into the other's members:

* **stopping**: set by SIGINT/SIGTERM (``Worker.stop``): sources stop polling, sinks flush,
  commit and return.
* **bounded runs** end once every source is done and every sink that has not given up was
  caught up with its topics *after the latest append of this worker* (a sink's dead letters
  may feed another sink). Appends count as generations: a sink records the generation it was
  caught up at, and the run is over when every live sink's record equals the current one.
* **statuses**: each connector's :class:`ConnectorStatus` (what ``status`` commands and the
  admin API show; never holds config values).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ConnectorStatus", "RunState"]


@dataclass(slots=True)
class ConnectorStatus:
    """What the worker knows about one running source or sink (never holds config values)."""

    id: str
    kind: str
    connector: str
    state: str = "STARTING"  # STARTING RUNNING FAILED DONE STOPPED
    reason: str = ""
    records_in: int = 0
    records_out: int = 0
    failed: int = 0
    dead_lettered: int = 0
    restarts: int = 0
    last_batch_seconds: float = 0.0
    updated: float = field(default_factory=time.time)

    def set(self, state: str, reason: str = "") -> None:
        self.state = state
        self.reason = reason
        self.updated = time.time()


class RunState:
    """Stop signal, bounded-run bookkeeping and connector statuses of one run."""

    def __init__(self) -> None:
        #: By ``"source <id>"`` / ``"sink <group>"`` (a source and a sink may share a name).
        self.statuses: dict[str, ConnectorStatus] = {}
        #: Whether every source of the run is bounded (set once the sources are built).
        self.bounded = False
        #: Why connectors gave up, for the run's exit code and final log line.
        self.gave_up: list[str] = []
        self._stopping = asyncio.Event()
        self._sources_done = asyncio.Event()
        self._sinks_done = asyncio.Event()
        self._appends = 0  # appends so far: a generation number
        self._caught_up: dict[str, int] = {}  # sink group -> generation it was caught up at
        self._live_sinks: set[str] = set()  # sinks that have not given up

    # -- stopping ------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> bool:
        """Ask everything to stop; False if it was already asked."""
        if self._stopping.is_set():
            return False
        self._stopping.set()
        return True

    def stopped(self) -> Awaitable[Any]:
        """Completes when the run is asked to stop."""
        return self._stopping.wait()

    # -- bounded runs --------------------------------------------------------------------------

    @property
    def sources_done(self) -> bool:
        return self._sources_done.is_set()

    def set_sources_done(self) -> None:
        self._sources_done.set()
        self._check_sinks_done()

    @property
    def sinks_done(self) -> bool:
        """In a bounded run: every live sink was caught up at the latest append."""
        return self._sinks_done.is_set()

    def sinks_finished(self) -> Awaitable[Any]:
        """Completes when :attr:`sinks_done` becomes true."""
        return self._sinks_done.wait()

    @property
    def generation(self) -> int:
        """The number of appends so far (read it *before* checking whether a sink caught up)."""
        return self._appends

    def appended(self) -> None:
        """Something was appended to the mesh: sinks must look at their topics again."""
        self._appends += 1

    def sink_started(self, group: str) -> None:
        self._live_sinks.add(group)

    def sink_caught_up(self, group: str, generation: int) -> None:
        """Sink ``group`` had committed everything of its topics at ``generation``."""
        self._caught_up[group] = generation
        self._check_sinks_done()

    def sink_gave_up(self, group: str) -> None:
        """A sink that gives up must not hold a bounded run open."""
        self._live_sinks.discard(group)
        self._check_sinks_done()

    def _check_sinks_done(self) -> None:
        if self._sources_done.is_set() and all(
            self._caught_up.get(group) == self._appends for group in self._live_sinks
        ):
            self._sinks_done.set()
