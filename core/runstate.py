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

__all__ = ["ConnectorStatus", "PipelineRunState", "RunState"]


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
    #: The last failure (kept after a restart): when (unix seconds) and why.
    failed_at: float | None = None
    last_error: str = ""
    #: The record a sink failed on, when known (its topic and offset in the mesh).
    failed_topic: str | None = None
    failed_offset: int | None = None
    #: When the supervisor restarts this FAILED connector (unix seconds) and the backoff.
    next_restart: float | None = None
    restart_delay: float | None = None

    def set(self, state: str, reason: str = "") -> None:
        self.state = state
        self.reason = reason
        self.updated = time.time()
        if state == "FAILED":
            self.failed_at = self.updated
            self.last_error = reason
        else:
            self.next_restart = self.restart_delay = None


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

    @property
    def paused(self) -> bool:
        """A run is never paused as a whole (:class:`PipelineRunState` pauses a pipeline)."""
        return False

    async def wait_resumed(self) -> None:
        """Returns at once (:meth:`PipelineRunState.wait_resumed` waits while paused)."""

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


class PipelineRunState:
    """The :class:`RunState` as one pipeline's loops see it (the admin API controls pipelines
    one by one): :attr:`stopping` is also true when this pipeline alone is stopped, and
    :meth:`wait_resumed` holds a paused pipeline's source before each poll and its sinks
    before each read. Everything else is the run's."""

    def __init__(self, run: RunState, name: str) -> None:
        self.run = run
        self.name = name
        self._halt = asyncio.Event()
        self._resumed = asyncio.Event()
        self._resumed.set()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.run, attr)

    @property
    def stopping(self) -> bool:
        return self.run.stopping or self._halt.is_set()

    @property
    def halted(self) -> bool:
        """This pipeline alone was asked to stop (not the run)."""
        return self._halt.is_set()

    def halt(self) -> None:
        self._halt.set()
        self._resumed.set()  # a paused loop wakes up to see it must stop

    async def stopped(self) -> None:
        """Completes when the run or this pipeline is asked to stop."""
        waits = [
            asyncio.ensure_future(self.run.stopped()),
            asyncio.ensure_future(self._halt.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    def pause(self) -> None:
        self._resumed.clear()

    def resume(self) -> None:
        self._resumed.set()

    async def wait_resumed(self) -> None:
        """Return at once unless paused; else when resumed or asked to stop."""
        if self._resumed.is_set():
            return
        waits = [asyncio.ensure_future(self._resumed.wait()), asyncio.ensure_future(self.stopped())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
