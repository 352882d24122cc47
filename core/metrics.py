"""Connector metrics: counters, gauges and histograms in the Prometheus text format.

The worker owns one :class:`MetricsRegistry`; each connector gets a :class:`Metrics` handle
(``context.metrics``) whose metrics carry the labels ``pipeline`` and ``connector``::

    rows = context.metrics.counter("snapshot_rows", "Rows read by the snapshot")
    rows.inc(len(batch))
    lag = context.metrics.gauge("binlog_lag_seconds", "Seconds behind the server")
    lag.set(3.5)
    latency = context.metrics.histogram("request_seconds", "Upstream request time")
    latency.observe(0.012)

Names follow Prometheus' rules (``[a-zA-Z_:][a-zA-Z0-9_:]*``) and are prefixed with
``meshconnect_`` on exposure; :meth:`MetricsRegistry.render` writes the text exposition format
(version 0.0.4). Asking twice for a name returns the same metric; asking for it as another
kind is a ``ValueError``. Updates are plain attribute arithmetic (no lock): call them from the
event loop, or from one thread per metric.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_BUCKETS",
    "Counter",
    "Gauge",
    "Histogram",
    "Metrics",
    "MetricsRegistry",
]

#: Upper bounds (seconds) of the default histogram buckets (Prometheus client's defaults).
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
Labels = tuple[tuple[str, str], ...]


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


@dataclass(slots=True)
class _Family:
    kind: str
    help: str
    series: dict[Labels, Metric] = field(default_factory=dict)


class MetricsRegistry:
    """Every metric of a worker, by name and labels."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def handle(self, **labels: str) -> Metrics:
        """A :class:`Metrics` whose metrics all carry ``labels``."""
        return Metrics(self, tuple(sorted(labels.items())))

    def _get(
        self, kind: str, name: str, help: str, labels: Labels, buckets: Sequence[float] = ()
    ) -> Metric:
        if not _NAME.match(name):
            raise ValueError(f"metric name {name!r} is not a Prometheus name")
        family = self._families.get(name)
        if family is None:
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
        """The metric ``name`` with exactly ``labels``, or ``None``."""
        family = self._families.get(name)
        return None if family is None else family.series.get(tuple(sorted(labels.items())))

    def render(self) -> str:
        """The Prometheus text exposition of every metric (names prefixed ``meshconnect_``)."""
        lines: list[str] = []
        for name, family in sorted(self._families.items()):
            full = f"meshconnect_{name}"
            if family.help:
                lines.append(f"# HELP {full} {_escape_help(family.help)}")
            lines.append(f"# TYPE {full} {family.kind}")
            for labels, metric in sorted(family.series.items()):
                if isinstance(metric, Histogram):
                    cumulative = 0
                    for bound, count in zip(
                        (*metric.buckets, math.inf), metric.counts, strict=True
                    ):
                        cumulative += count
                        le = "+Inf" if bound == math.inf else _number(bound)
                        lines.append(f"{full}_bucket{_labels((*labels, ('le', le)))} {cumulative}")
                    lines.append(f"{full}_sum{_labels(labels)} {_number(metric.sum)}")
                    lines.append(f"{full}_count{_labels(labels)} {metric.count}")
                else:
                    lines.append(f"{full}{_labels(labels)} {_number(metric.value)}")
        return "\n".join(lines) + "\n" if lines else ""


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


def _labels(labels: Sequence[tuple[str, str]]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape_value(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value != value:
        return "NaN"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))
