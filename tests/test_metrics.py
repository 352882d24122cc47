"""Metrics: the connectors' handles and the built-in per-connector metrics, exposed through
prometheus-client (docs/metrics.md)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshconnect.config.loader import load_pipeline_files
from meshconnect.mesh import open_store
from meshconnect.metrics import MetricsRegistry
from meshconnect.testing import MemorySink, MemorySource, test_registry
from meshconnect.worker import Worker


@pytest.fixture(autouse=True)
def clean_memory() -> None:
    MemorySink.outputs.clear()
    MemorySource.crashed.clear()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape by (name, labels), parsed by prometheus-client's parser."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return scraped[(name, frozenset(labels.items()))]


def test_handles_render_as_prometheus_text_with_the_connector_labels() -> None:
    registry = MetricsRegistry()
    metrics = registry.handle(pipeline="orders", connector="canal")
    metrics.counter("rows_total", "Rows read").inc(5)
    metrics.counter("rows_total").inc()  # the same counter again
    lag = metrics.gauge("lag_seconds", 'Seconds "behind"\nthe server')
    lag.set(7)
    lag.dec(2.5)
    latency = metrics.histogram("request_seconds", "Upstream time", buckets=(0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        latency.observe(v)
    text = registry.render()
    assert text.endswith(
        '# HELP meshconnect_lag_seconds Seconds "behind"\\nthe server\n'
        "# TYPE meshconnect_lag_seconds gauge\n"
        'meshconnect_lag_seconds{connector="canal",pipeline="orders"} 4.5\n'
        "# HELP meshconnect_request_seconds Upstream time\n"
        "# TYPE meshconnect_request_seconds histogram\n"
        'meshconnect_request_seconds_bucket{connector="canal",le="0.1",pipeline="orders"} 2.0\n'
        'meshconnect_request_seconds_bucket{connector="canal",le="1.0",pipeline="orders"} 3.0\n'
        'meshconnect_request_seconds_bucket{connector="canal",le="+Inf",pipeline="orders"} 4.0\n'
        'meshconnect_request_seconds_count{connector="canal",pipeline="orders"} 4.0\n'
        'meshconnect_request_seconds_sum{connector="canal",pipeline="orders"} 3.65\n'
        "# HELP meshconnect_rows_total Rows read\n"
        "# TYPE meshconnect_rows_total counter\n"
        'meshconnect_rows_total{connector="canal",pipeline="orders"} 6.0\n'
    )


def test_a_counter_is_exposed_with_the_total_suffix() -> None:
    registry = MetricsRegistry()
    registry.handle(pipeline="p", connector="c").counter("rows", "Rows read").inc(3)
    assert (
        value(samples(registry.render()), "meshconnect_rows_total", pipeline="p", connector="c")
        == 3
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
    with pytest.raises(ValueError, match="built-in metric"):
        metrics.counter("records_in_total")


def test_the_source_lag_is_now_minus_the_newest_records_time() -> None:
    registry = MetricsRegistry()

    class Counts:
        records_in = records_out = failed = dead_lettered = restarts = 0

    meters = registry.connector("source", "p", "s", Counts())
    meters.lag_from("2000-01-01T00:00:00Z")
    assert meters.source_lag is not None and meters.source_lag > 365 * 24 * 3600
    meters.lag_from("2999-01-01T00:00:00+02:00")  # a clock ahead of ours is no negative lag
    assert meters.source_lag == 0.0
    meters.source_lag = 5.0
    meters.lag_from(None)  # records without a time say nothing about the lag
    meters.lag_from("not a time")
    assert meters.source_lag == 5.0


PIPELINE = """
pipelines:
  - name: p
    source:
      connector: memory
      config:
        records: [{n: 0}, {n: 1, bad: true}, {n: 2}, {n: 3}, {n: 4, bad: true},
                  {n: 5}, {n: 6}, {n: 7}, {n: 8}, {n: 9}]
        batch_size: 5
        fail_at: 7
    topic: things
    sinks:
      - name: out
        connector: memory
        config: {name: out, reject_when: bad}
        errors: {tolerance: all, dead_letter_topic: dlq.out}
      - name: down
        connector: memory
        config: {name: down, fail_for: 3600}
        errors:
          retry: {max_attempts: 3, initial_backoff: 1ms, max_backoff: 1ms}
          tolerance: all
          dead_letter_topic: dlq.down
"""


async def test_every_connector_gets_the_built_in_metrics(tmp_path: Path) -> None:
    """A crash, rejected records and a sink that is always down, in one bounded run: each
    shows in the counts of the connector it happened to."""
    (tmp_path / "p.yaml").write_text(textwrap.dedent(PIPELINE))
    registry = test_registry()
    config = load_pipeline_files([str(tmp_path / "p.yaml")], registry)
    store = open_store(f"sqlite:///{tmp_path / 'mesh.db'}", registry)
    await store.open()
    try:
        worker = Worker(config, store, restart_backoff=0.01)
        assert await worker.run() == 0
        scraped = samples(await worker.metrics.scrape())
    finally:
        await store.close()

    def get(name: str, connector: str, kind: str) -> float:
        return value(scraped, f"meshconnect_{name}", pipeline="p", connector=connector, kind=kind)

    assert get("records_in_total", "memory", "source") == 10
    assert get("records_out_total", "memory", "source") == 10
    assert get("restarts_total", "memory", "source") == 1
    assert get("errors_total", "memory", "source") == 0
    assert get("batch_seconds_count", "memory", "source") >= 2

    assert get("records_in_total", "out", "sink") == 10
    assert get("records_out_total", "out", "sink") == 8
    assert get("errors_total", "out", "sink") == 2
    assert get("dead_letters_total", "out", "sink") == 2
    assert get("retries_total", "out", "sink") == 0

    assert get("records_out_total", "down", "sink") == 0
    assert get("dead_letters_total", "down", "sink") == 10
    retries = get("retries_total", "down", "sink")
    assert retries >= 2 and retries == 2 * get("batch_seconds_count", "down", "sink")

    # A bounded run ends with everything committed and the source done.
    assert value(scraped, "meshconnect_source_lag_seconds", pipeline="p", connector="memory") == 0
    for group in ("p/out", "p/down"):
        assert value(scraped, "meshconnect_consumer_lag_records", topic="things", group=group) == 0
    assert value(scraped, "meshconnect_store_bytes") > 0


async def test_consumer_lag_counts_what_a_group_has_not_committed(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(textwrap.dedent(PIPELINE))
    registry = test_registry()
    config = load_pipeline_files([str(tmp_path / "p.yaml")], registry)
    store = open_store("memory://", registry)
    await store.open()
    try:
        from meshconnect.records import Record

        await store.append([Record({"n": i}, topic="things") for i in range(7)])
        await store.commit("p/out", {"things": 3}, None)
        worker = Worker(config, store)
        await worker.refresh_metrics()
        scraped = samples(worker.metrics.render())
    finally:
        await store.close()
    assert value(scraped, "meshconnect_consumer_lag_records", topic="things", group="p/out") == 4
    assert value(scraped, "meshconnect_consumer_lag_records", topic="things", group="p/down") == 7
    assert ("meshconnect_store_bytes", frozenset()) not in scraped  # no file behind memory://


async def test_a_sink_that_fails_to_open_shows_its_restarts(tmp_path: Path) -> None:
    (tmp_path / "out.jsonl").write_text("someone else's\n")
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent(
            """
            pipelines:
              - name: p
                source: {connector: memory, config: {records: [1, 2]}}
                sinks:
                  - {connector: file, config: {path: out.jsonl}}
            """
        )
    )
    registry = test_registry()
    config = load_pipeline_files([str(tmp_path / "p.yaml")], registry)
    store = open_store("memory://", registry)
    await store.open()
    try:
        worker = Worker(config, store)
        assert await worker.run() == 1  # the file sink refuses a file it did not write
        scraped = samples(worker.metrics.render())
    finally:
        await store.close()
    labels = {"pipeline": "p", "connector": "file", "kind": "sink"}
    assert value(scraped, "meshconnect_restarts_total", **labels) == 1
    assert value(scraped, "meshconnect_records_out_total", **labels) == 0
