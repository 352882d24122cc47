"""The connector context's progress reporter (its metrics handle: tests/test_metrics.py)."""

from __future__ import annotations

import io
import logging

import pytest

from meshconnect.progress import ProgressReporter


def test_progress_is_log_lines_off_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.progress")
    progress = ProgressReporter(logger, interactive=False, interval=0.0)
    with (
        caplog.at_level(logging.INFO, logger="test.progress"),
        progress("snapshot shop.orders", total=200, unit="rows") as bar,
    ):
        bar.advance(50)
        bar.update(total=400)
        bar.advance(50)
    lines = [r.getMessage().split(", ")[0] for r in caplog.records]
    assert lines == [
        "snapshot shop.orders: 50/200 rows (25.0%)",
        "snapshot shop.orders: 50/400 rows (12.5%)",
        "snapshot shop.orders: 100/400 rows (25.0%)",
        "snapshot shop.orders: 100/400 rows (25.0%)",
    ]
    assert caplog.records[-1].getMessage().endswith("(done)")


def test_progress_is_a_tqdm_bar_on_a_terminal() -> None:
    screen = io.StringIO()
    progress = ProgressReporter(logging.getLogger("test"), interactive=True, file=screen)
    with progress("bulk load", total=10, unit="rows") as bar:
        bar.advance(4)
        bar.update(done=10)
    assert "bulk load: 100%" in screen.getvalue()
    assert "10/10" in screen.getvalue()
