"""Progress of long operations (snapshots, bulk loads): ``context.progress``.

::

    with context.progress("snapshot shop.orders", total=row_estimate, unit="rows") as bar:
        for batch in batches:
            ...
            bar.advance(len(batch))

On a terminal (standard error is a TTY) it is a progress bar drawn by ``tqdm``; otherwise
(a service, a CI log, ``--log-format json``) it is a log line at most every ``interval``
seconds and one when it closes, on the connector's logger:
``snapshot shop.orders: 40,000/100,000 rows (40.0%), 8,000/s``. ``total`` may be unknown
(``None``) or corrected later with :meth:`Progress.update`.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import IO, Any

__all__ = ["Progress", "ProgressReporter"]


class Progress:
    """One operation's progress: ``done`` out of ``total`` (``None``: unknown)."""

    def __init__(
        self,
        description: str,
        total: int | None,
        unit: str,
        logger: logging.Logger,
        interval: float,
        bar: Any = None,
    ) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0
        self.closed = False
        self._logger = logger
        self._interval = interval
        self._bar = bar
        self._started = time.monotonic()
        self._last_log = self._started

    def advance(self, amount: int = 1) -> None:
        """``amount`` more units are done."""
        self.done += amount
        if self._bar is not None:
            self._bar.update(amount)
        elif time.monotonic() - self._last_log >= self._interval:
            self._log()

    def update(self, done: int | None = None, total: int | None = None) -> None:
        """Set the count done and/or the total (an estimate corrected)."""
        if total is not None:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()
        if done is not None:
            if self._bar is not None:
                self._bar.update(done - self.done)
            self.done = done
        if self._bar is None and time.monotonic() - self._last_log >= self._interval:
            self._log()

    def close(self) -> None:
        """The operation ended (a final log line, or the bar left on screen)."""
        if self.closed:
            return
        self.closed = True
        if self._bar is not None:
            self._bar.close()
        else:
            self._log(final=True)

    def line(self) -> str:
        """The text of a log line for the current state."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        if self.total:
            count = (
                f"{self.done:,}/{self.total:,} {self.unit} ({100 * self.done / self.total:.1f}%)"
            )
        else:
            count = f"{self.done:,} {self.unit}"
        return f"{self.description}: {count}, {self.done / elapsed:,.0f}/s"

    def _log(self, final: bool = False) -> None:
        self._last_log = time.monotonic()
        self._logger.info("%s%s", self.line(), " (done)" if final else "")

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ProgressReporter:
    """Makes :class:`Progress` objects for one connector (``context.progress(...)``).

    ``interactive`` (default: whether standard error is a terminal) chooses the tqdm bar over
    log lines; ``interval`` is the seconds between two log lines."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interactive: bool | None = None,
        interval: float = 10.0,
        file: IO[str] | None = None,
    ) -> None:
        self.logger = logger
        self.file = file
        stream = file if file is not None else sys.stderr
        self.interactive = stream.isatty() if interactive is None else interactive
        self.interval = interval

    def __call__(
        self, description: str, total: int | None = None, unit: str = "records"
    ) -> Progress:
        bar = None
        if self.interactive:
            from tqdm import tqdm

            stream = self.file if self.file is not None else sys.stderr
            bar = tqdm(total=total, desc=description, unit=f" {unit}", file=stream)
        return Progress(description, total, unit, self.logger, self.interval, bar)
