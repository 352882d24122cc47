"""The connector context's metrics handle and progress reporter."""

from __future__ import annotations

import io
import logging

import pytest

from meshconnect.metrics import MetricsRegistry
from meshconnect.progress import ProgressReporter


def test_metrics_render_as_prometheus_text_with_the_connector_labels() -> None:
    registry = MetricsRegistry()
    metrics = registry.handle(pipeline="orders", connector="canal")
    metrics.counter("rows_total", "Rows read").inc(5)
    metrics.counter("rows_total").inc()  # the same counter again
    lag = metrics.gauge("lag_seconds", 'Seconds "behind"\nthe server')
    lag.set(7)
    lag.dec(2.5)
    latency = metrics.histogram("request_seconds", "Upstream time", buckets=(0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        latency.observe(value)
    assert registry.render() == (
        '# HELP meshconnect_lag_seconds Seconds "behind"\\nthe server\n'
        "# TYPE meshconnect_lag_seconds gauge\n"
        'meshconnect_lag_seconds{connector="canal",pipeline="orders"} 4.5\n'
        "# HELP meshconnect_request_seconds Upstream time\n"
        "# TYPE meshconnect_request_seconds histogram\n"
        'meshconnect_request_seconds_bucket{connector="canal",pipeline="orders",le="0.1"} 2\n'
        'meshconnect_request_seconds_bucket{connector="canal",pipeline="orders",le="1"} 3\n'
        'meshconnect_request_seconds_bucket{connector="canal",pipeline="orders",le="+Inf"} 4\n'
        'meshconnect_request_seconds_sum{connector="canal",pipeline="orders"} 3.65\n'
        'meshconnect_request_seconds_count{connector="canal",pipeline="orders"} 4\n'
        "# HELP meshconnect_rows_total Rows read\n"
        "# TYPE meshconnect_rows_total counter\n"
        'meshconnect_rows_total{connector="canal",pipeline="orders"} 6\n'
    )


def test_metric_misuse_is_refused() -> None:
    metrics = MetricsRegistry().handle(pipeline="p", connector="c")
    metrics.counter("n")
    with pytest.raises(ValueError, match="is a counter, not a gauge"):
        metrics.gauge("n")
    with pytest.raises(ValueError, match="only goes up"):
        metrics.counter("n").inc(-1)
    with pytest.raises(ValueError, match="not a Prometheus name"):
        metrics.counter("rows-read")


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
