"""Metrics: what every connector does, and what connectors count themselves, for Prometheus.

The worker owns one :class:`MetricsRegistry`. It holds two kinds of metrics:

* **Built-in, per connector**, fed by the worker and the sink loop for every connector,
  built-in or third-party, counted per batch (never per record): records in and out, errors,
  dead letters, retries, restarts, a batch latency histogram, the source lag in seconds, the
  consumer lag in records per topic and group, and the store's size on disk. They are listed
  with their meanings and labels in docs/metrics.md (:data:`BUILTIN` holds their help texts).
* **A connector's own**, made through its handle (``context.metrics``), labelled with the
  pipeline and connector::

    rows = context.metrics.counter("snapshot_rows", "Rows read by the snapshot")
    rows.inc(len(batch))
    lag = context.metrics.gauge("binlog_lag_seconds", "Seconds behind the server")
    lag.set(3.5)
    latency = context.metrics.histogram("request_seconds", "Upstream request time")
    latency.observe(0.012)

Names follow Prometheus' rules (``[a-zA-Z_:][a-zA-Z0-9_:]*``) and are prefixed with
``meshconnect_`` on exposure; counters are exposed with the ``_total`` suffix (added unless the
name has it). Asking twice for a name returns the same metric; asking for it as another kind,
or for a built-in's name, is a ``ValueError``. Updates are plain attribute arithmetic (no
lock): call them from the event loop, or from one thread per metric.

Exposition is prometheus-client's: the registry is a collector of a private
``CollectorRegistry`` (:attr:`MetricsRegistry.prometheus`) that reads the handles' values and
the worker's per-connector counts when scraped, so a record costs nothing more than the
``+=`` the worker does per batch anyway. :meth:`MetricsRegistry.render` returns the text
format (version 0.0.4); :func:`serve_metrics` serves it at ``GET /metrics`` on the shared HTTP
listener (``meshconnect run --metrics HOST:PORT``). prometheus-client is imported only when
something is rendered.
"""

from __future__ import annotations

import bisect
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aiohttp import web
    from prometheus_client.metrics_core import Metric as PromMetric
    from prometheus_client.registry import CollectorRegistry

    from .httplisten import HttpListeners, Route

__all__ = [
    "BATCH_BUCKETS",
    "BUILTIN",
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "ConnectorMeters",
    "Counter",
    "Gauge",
    "Histogram",
    "Metrics",
    "MetricsRegistry",
    "serve_metrics",
    "store_file_bytes",
]

#: Upper bounds (seconds) of the default histogram buckets (Prometheus client's defaults).
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: Buckets of ``meshconnect_batch_seconds``: a batch takes from well under a millisecond (the
#: embedded store) to seconds (a remote sink).
BATCH_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
#: The media type of :meth:`MetricsRegistry.render`'s text (for a ``/metrics`` answer).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
Labels = tuple[tuple[str, str], ...]

#: The built-in metrics (names without the ``meshconnect_`` prefix) and their help texts.
BUILTIN: dict[str, str] = {
    "records_in": "Records a connector received: polled by a source, read from the mesh by a sink",
    "records_out": "Records a connector passed on: stored in the mesh by a source, written by "
    "a sink",
    "errors": "Records that failed in a connector or its transforms (whatever became of them)",
    "dead_letters": "Records sent to the dead-letter topic",
    "retries": "Retried calls: source polls, store appends, sink writes and flushes",
    "restarts": "Times the connector failed and its supervisor restarted it (or gave up)",
    "batch_seconds": "Seconds a batch took: a source's store append, a sink's write",
    "source_lag_seconds": "Now minus the time of the newest record of a source's last batch "
    "(0 once a poll finds nothing new)",
    "consumer_lag_records": "Records of a topic a sink's consumer group has not committed yet",
    "store_bytes": "Size on disk of the embedded mesh store (database and write-ahead log)",
}


@dataclass(slots=True)
class Counter:
    """A value that only goes up (records read, requests sent)."""

    value: float = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up; use a gauge")
        self.value += amount


@dataclass(slots=True)
class Gauge:
    """A value that goes up and down (lag, queue depth, open connections)."""

    value: float = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


@dataclass(slots=True)
class Histogram:
    """Observations counted into cumulative buckets (latencies, sizes)."""

    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError("histogram buckets must be strictly increasing")
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


Metric = Counter | Gauge | Histogram


class _Counts(Protocol):
    """What the worker counts per connector anyway (:class:`~meshconnect.runstate.
    ConnectorStatus`): read when scraped."""

    records_in: int
    records_out: int
    failed: int
    dead_lettered: int
    restarts: int


@dataclass(slots=True)
class ConnectorMeters:
    """The built-in metrics of one source or sink that its counts do not already hold; the
    worker and the sink loop update them once per batch."""

    kind: str  # "source" or "sink"
    pipeline: str
    connector: str
    counts: _Counts
    retries: int = 0
    batch: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    #: Seconds; ``None`` for a sink.
    source_lag: float | None = None

    def lag_from(self, time_text: str | None) -> None:
        """Set the source lag from the time of a batch's newest record (RFC 3339); a batch
        whose records carry no time leaves it as it was."""
        if not time_text:
            return
        try:
            moment = datetime.fromisoformat(time_text.replace("z", "Z"))  # RFC 3339 allows z
        except ValueError:
            return
        if moment.tzinfo is None:  # a time without offset is UTC, as records' times are
            moment = moment.replace(tzinfo=UTC)
        self.source_lag = max(0.0, time.time() - moment.timestamp())


@dataclass(slots=True)
class _Family:
    kind: str
    help: str
    series: dict[Labels, Metric] = field(default_factory=dict)


class MetricsRegistry:
    """Every metric of a worker: the connectors' own, by name and labels, and the built-in
    per-connector ones (:meth:`connector`)."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._connectors: dict[tuple[str, str, str], ConnectorMeters] = {}
        #: ``(topic, group)`` -> records not committed yet; set by the worker's refresh.
        self.consumer_lag: dict[tuple[str, str], int] = {}
        #: The embedded store's size on disk, when it has one; set by the worker's refresh.
        self.store_bytes: int | None = None
        #: Brings the values that need the store (lag, size) up to date; set by the worker.
        self.refresher: Callable[[], Awaitable[None]] | None = None
        self._prometheus: CollectorRegistry | None = None

    def handle(self, **labels: str) -> Metrics:
        """A :class:`Metrics` whose metrics all carry ``labels``."""
        return Metrics(self, tuple(sorted(labels.items())))

    def connector(self, kind: str, pipeline: str, name: str, counts: _Counts) -> ConnectorMeters:
        """The built-in meters of a source or sink (the same ones across its restarts)."""
        key = (kind, pipeline, name)
        meters = self._connectors.get(key)
        if meters is None:
            meters = self._connectors[key] = ConnectorMeters(kind, pipeline, name, counts)
            if kind == "source":
                meters.source_lag = 0.0
        meters.counts = counts
        return meters

    def forget(self, pipeline: str, keep: Collection[str] = ()) -> None:
        """Drop every series of ``pipeline`` (deleted over the admin API) but those of the
        connectors named in ``keep`` (it was replaced: a sink renamed or removed is gone): a
        connector that is gone leaves ``/metrics``, as Prometheus expects of a labelled child
        that is gone. A partitioned sink's consumers (``NAME#k``) go and stay with ``NAME``."""

        def gone(connector: str | None) -> bool:
            return connector is None or connector.partition("#")[0] not in keep

        for key in [k for k in self._connectors if k[1] == pipeline and gone(k[2])]:
            del self._connectors[key]
        for family in self._families.values():
            for labels in [lb for lb in family.series if ("pipeline", pipeline) in lb]:
                if gone(dict(labels).get("connector")):
                    del family.series[labels]
        self.consumer_lag = {
            (topic, group): n
            for (topic, group), n in self.consumer_lag.items()
            if not (group.startswith(pipeline + "/") and gone(group[len(pipeline) + 1 :]))
        }

    def _get(
        self, kind: str, name: str, help: str, labels: Labels, buckets: Sequence[float] = ()
    ) -> Metric:
        if not _NAME.match(name):
            raise ValueError(f"metric name {name!r} is not a Prometheus name")
        family = self._families.get(name)
        if family is None:
            base = name.removesuffix("_total")
            if base in BUILTIN:
                raise ValueError(
                    f"metric {name!r} is a built-in metric (meshconnect_{base}) the worker "
                    "keeps for every connector; choose another name"
                )
            family = self._families[name] = _Family(kind, help)
        elif family.kind != kind:
            raise ValueError(f"metric {name!r} is a {family.kind}, not a {kind}")
        metric = family.series.get(labels)
        if metric is None:
            if kind == "counter":
                metric = Counter()
            elif kind == "gauge":
                metric = Gauge()
            else:
                metric = Histogram(tuple(buckets) or DEFAULT_BUCKETS)
            family.series[labels] = metric
        return metric

    def value(self, name: str, **labels: str) -> Metric | None:
        """The connector-made metric ``name`` with exactly ``labels``, or ``None``."""
        family = self._families.get(name)
        return None if family is None else family.series.get(tuple(sorted(labels.items())))

    # -- exposition ----------------------------------------------------------------------------

    @property
    def prometheus(self) -> CollectorRegistry:
        """A private prometheus-client ``CollectorRegistry`` with this registry as its one
        collector (for ``prometheus_client.generate_latest`` and friends)."""
        if self._prometheus is None:
            from prometheus_client import CollectorRegistry

            self._prometheus = CollectorRegistry(auto_describe=False)
            self._prometheus.register(self)
        return self._prometheus

    def render(self) -> str:
        """The Prometheus text exposition (version 0.0.4) of every metric, as of the worker's
        last refresh of the values that need the store (see :meth:`scrape`)."""
        from prometheus_client import generate_latest

        return generate_latest(self.prometheus).decode("utf-8")

    async def scrape(self) -> str:
        """:meth:`render` after bringing consumer lag and store size up to date."""
        if self.refresher is not None:
            await self.refresher()
        return self.render()

    def collect(self) -> Iterator[PromMetric]:
        """The prometheus-client collector protocol: every metric, built-ins first."""
        # The built-in families without a series (no connector yet) are left out.
        yield from (family for family in self._collect_builtin() if family.samples)
        for name, family in sorted(self._families.items()):
            yield _family_metric(f"meshconnect_{name}", family)

    def _collect_builtin(self) -> Iterator[PromMetric]:
        from prometheus_client.metrics_core import Metric as PromMetric

        meters = [self._connectors[k] for k in sorted(self._connectors)]

        def labels(m: ConnectorMeters) -> dict[str, str]:
            return {"pipeline": m.pipeline, "connector": m.connector, "kind": m.kind}

        counters: list[tuple[str, Callable[[ConnectorMeters], float]]] = [
            ("records_in", lambda m: m.counts.records_in),
            ("records_out", lambda m: m.counts.records_out),
            ("errors", lambda m: m.counts.failed),
            ("dead_letters", lambda m: m.counts.dead_lettered),
            ("retries", lambda m: m.retries),
            ("restarts", lambda m: m.counts.restarts),
        ]
        for name, read in counters:
            full = f"meshconnect_{name}"
            family = PromMetric(full, BUILTIN[name], "counter")
            for m in meters:
                family.add_sample(f"{full}_total", labels(m), max(0.0, float(read(m))))
            yield family
        full = "meshconnect_batch_seconds"
        histogram = PromMetric(full, BUILTIN["batch_seconds"], "histogram")
        for m in meters:
            _add_histogram(histogram, full, labels(m), m.batch)
        yield histogram
        full = "meshconnect_source_lag_seconds"
        lag = PromMetric(full, BUILTIN["source_lag_seconds"], "gauge")
        for m in meters:
            if m.source_lag is not None:
                lag.add_sample(
                    full, {"pipeline": m.pipeline, "connector": m.connector}, m.source_lag
                )
        yield lag
        full = "meshconnect_consumer_lag_records"
        consumer = PromMetric(full, BUILTIN["consumer_lag_records"], "gauge")
        for (topic, group), records in sorted(self.consumer_lag.items()):
            consumer.add_sample(full, {"topic": topic, "group": group}, records)
        yield consumer
        if self.store_bytes is not None:
            full = "meshconnect_store_bytes"
            size = PromMetric(full, BUILTIN["store_bytes"], "gauge")
            size.add_sample(full, {}, self.store_bytes)
            yield size


def _family_metric(full: str, family: _Family) -> PromMetric:
    from prometheus_client.metrics_core import Metric as PromMetric

    name = full.removesuffix("_total") if family.kind == "counter" else full
    out = PromMetric(name, family.help, family.kind)
    for labels, metric in sorted(family.series.items()):
        if isinstance(metric, Histogram):
            _add_histogram(out, name, dict(labels), metric)
        else:
            sample = f"{name}_total" if family.kind == "counter" else name
            out.add_sample(sample, dict(labels), metric.value)
    return out


def _add_histogram(out: PromMetric, name: str, labels: dict[str, str], h: Histogram) -> None:
    from prometheus_client.utils import floatToGoString

    cumulative = 0
    for bound, count in zip((*h.buckets, math.inf), h.counts, strict=True):
        cumulative += count
        out.add_sample(f"{name}_bucket", {**labels, "le": floatToGoString(bound)}, cumulative)
    out.add_sample(f"{name}_count", labels, h.count)
    out.add_sample(f"{name}_sum", labels, h.sum)


class Metrics:
    """A connector's handle on the worker's metrics (``context.metrics``)."""

    def __init__(self, registry: MetricsRegistry | None = None, labels: Labels = ()) -> None:
        self.registry = registry if registry is not None else MetricsRegistry()
        self.labels = labels

    def counter(self, name: str, help: str = "") -> Counter:
        metric = self.registry._get("counter", name, help, self.labels)
        assert isinstance(metric, Counter)
        return metric

    def gauge(self, name: str, help: str = "") -> Gauge:
        metric = self.registry._get("gauge", name, help, self.labels)
        assert isinstance(metric, Gauge)
        return metric

    def histogram(
        self, name: str, help: str = "", buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> Histogram:
        metric = self.registry._get("histogram", name, help, self.labels, buckets)
        assert isinstance(metric, Histogram)
        return metric


def store_file_bytes(store: Any) -> int | None:
    """The size on disk of a store kept in one local file (the embedded SQLite store: the
    database, its write-ahead log and shared memory), or ``None`` for other backends."""
    path = getattr(store, "path", None)
    if not isinstance(path, os.PathLike | str) or not os.fspath(path):
        return None
    base = os.fspath(path)
    total = 0
    found = False
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.stat(base + suffix).st_size
            found = True
        except OSError:
            continue
    return total if found else None


async def serve_metrics(listeners: HttpListeners, listen: str, registry: MetricsRegistry) -> Route:
    """Serve ``GET /metrics`` on ``listen`` (``HOST:PORT``) through the shared listener: the
    text exposition with fresh consumer lag and store size (``meshconnect run --metrics``)."""

    async def handler(request: web.Request) -> web.Response:
        from aiohttp import web

        from .config.interpolate import redact

        # As the admin API's /metrics: a label (a pipeline's or topic's name, a connector's
        # own label) may hold a secret of the run.
        body = redact(await registry.scrape())
        return web.Response(body=body.encode("utf-8"), headers={"Content-Type": CONTENT_TYPE})

    return await listeners.add_route(listen, "GET", "/metrics", handler, "the /metrics endpoint")
