"""OpenTelemetry spans per batch per stage (the ``otel`` extra), off unless configured.

Each batch a source polls becomes a span ``source batch`` (pipeline, connector, records) with
a child per stage: ``source poll``, ``transforms`` (the pipeline's transforms and routing),
``store append``. Each batch a sink handles becomes ``sink batch`` with ``transforms`` (the
sink's) and ``sink write``. A batch span links to the trace of each of its records that
carries the CloudEvents distributed-tracing extension (``traceparent``, ``tracestate``), so a
tracing backend joins the sender's trace to the mesh's work on its event (OpenTelemetry's
semantic conventions for CloudEvents: links, not parents, since one batch serves many traces).
A record that comes in without the extension gets its source batch span's context as its
``traceparent`` (the conventions' creation context), so what it causes downstream, an HTTP
sink's request say, can be traced back to the batch that brought it into the mesh.

When spans are made (:func:`from_environment`, read once when a worker starts):

* ``OTEL_SDK_DISABLED=true``: never.
* ``OTEL_TRACES_EXPORTER`` set (``otlp``, ``console``, any installed exporter's entry-point
  name; a comma-separated list), or an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``,
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``): a tracer provider with a batch span processor per
  exporter, configured by the standard ``OTEL_*`` variables (service name, resource
  attributes, ``OTEL_BSP_*``, the exporter's endpoint, headers and protocol). ``none``: never.
* A program (or ``opentelemetry-instrument``) already set a global tracer provider: that one.
* Otherwise: never. OpenTelemetry is then not even imported, and a batch costs one ``is
  None`` test per stage.

The spans are recorded after the fact, with the stages' measured start and end times, so no
span is open across an ``await`` and a poll that waits for data makes no span at all.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .records import Record

__all__ = ["BatchTrace", "Tracing", "from_environment"]

log = logging.getLogger("meshconnect.tracing")

#: At most this many links per batch span (distinct record traces); the SDK's own limit is 128.
MAX_LINKS = 64
_INSTALL = "pip install 'meshconnect[otel]'"


class BatchTrace:
    """The spans of one batch: the batch span and a child per stage, in the order they ran."""

    __slots__ = ("_context", "_root", "_tracer", "attributes", "mark")

    def __init__(self, tracer: Any, root: Any, context: Any, attributes: dict[str, Any]) -> None:
        self._tracer = tracer
        self._root = root
        self._context = context
        self.attributes = attributes
        #: When the stage under way began (``time.time_ns()``), for its caller to keep.
        self.mark = 0

    def stage(
        self, name: str, start_ns: int, end_ns: int, error: BaseException | None = None
    ) -> None:
        """A child span ``name`` that ran from ``start_ns`` to ``end_ns`` (``time.time_ns()``)."""
        span = self._tracer.start_span(
            name, context=self._context, start_time=start_ns, attributes=self.attributes
        )
        if error is not None:
            _fail(span, error)
        span.end(end_time=end_ns)

    def stamp(self, records: Iterable[Record]) -> None:
        """Give each record without a ``traceparent`` this batch's (its creation context)."""
        context = self._root.get_span_context()
        if not context.is_valid:
            return
        parent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
        for record in records:
            if "traceparent" not in record.extensions:  # a new dict: sources may share theirs
                record.extensions = {**record.extensions, "traceparent": parent}

    def end(self, end_ns: int, error: BaseException | None = None, **attributes: Any) -> None:
        """End the batch span at ``end_ns`` with more ``attributes`` (prefixed as
        :meth:`Tracing.batch` does); ``error``: why the batch failed."""
        if attributes:
            self._root.set_attributes({f"meshconnect.{k}": v for k, v in attributes.items()})
        if error is not None:
            _fail(self._root, error)
        self._root.end(end_time=end_ns)


def _fail(span: Any, error: BaseException) -> None:
    """Mark ``span`` failed by ``error``, with the run's secrets masked in the exception
    event's message and stack trace and in the status (spans leave the worker for an
    exporter: a client library's message may hold a URL with its password)."""
    import traceback

    from opentelemetry.trace import Status, StatusCode

    from .config.interpolate import redact

    stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    span.record_exception(
        error,
        attributes={
            "exception.message": redact(str(error)),
            "exception.stacktrace": redact(stack),
        },
    )
    span.set_status(Status(StatusCode.ERROR, redact(f"{type(error).__name__}: {error}")))


class Tracing:
    """Makes the batch spans of a worker on ``provider`` (an OpenTelemetry TracerProvider)."""

    def __init__(self, provider: Any, owned: bool = False) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            release = version("meshconnect")
        except PackageNotFoundError:  # pragma: no cover - always installed
            release = None
        self.provider = provider
        #: Whether this object made the provider (and so shuts it down).
        self.owned = owned
        self._tracer = provider.get_tracer("meshconnect", release)

    def batch(
        self, name: str, start_ns: int, records: Iterable[Record], /, **attributes: Any
    ) -> BatchTrace:
        """Start the span of one batch (``source batch`` / ``sink batch``) at ``start_ns``,
        linked to the traces its records carry; ``attributes`` are the spans' (prefixed
        ``meshconnect.``)."""
        from opentelemetry import trace

        attrs = {f"meshconnect.{k}": v for k, v in attributes.items()}
        root = self._tracer.start_span(
            name, start_time=start_ns, attributes=attrs, links=_links(records)
        )
        return BatchTrace(self._tracer, root, trace.set_span_in_context(root), attrs)

    def shutdown(self) -> None:
        """Export what is pending and stop the provider, if this object made it."""
        if self.owned:
            self.provider.shutdown()


def _links(records: Iterable[Record]) -> list[Any]:
    from opentelemetry import trace
    from opentelemetry.trace import Link
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    seen: set[str] = set()
    links: list[Any] = []
    for record in records:
        parent = record.extensions.get("traceparent")
        if not isinstance(parent, str) or parent in seen:
            continue
        seen.add(parent)
        carrier = {"traceparent": parent}
        state = record.extensions.get("tracestate")
        if isinstance(state, str):
            carrier["tracestate"] = state
        context = trace.get_current_span(propagator.extract(carrier)).get_span_context()
        if context.is_valid:
            links.append(Link(context))
            if len(links) >= MAX_LINKS:
                break
    return links


def from_environment(environ: dict[str, str] | None = None) -> Tracing | None:
    """The worker's tracing as the ``OTEL_*`` variables configure it (module docstring), or
    ``None`` when it is off."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names and (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        names = ["otlp"]
    if "none" in names:
        return None
    if not names:
        return _global_provider()
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_* variables ask for traces, but the OpenTelemetry SDK is not installed: %s",
            _INSTALL,
        )
        return None
    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    provider = TracerProvider(
        resource=Resource.create({} if named else {SERVICE_NAME: "meshconnect"})
    )
    for name in names:
        exporter = _exporter(name, env)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
    log.info("tracing: OpenTelemetry spans per batch, exported to %s", ", ".join(names))
    return Tracing(provider, owned=True)


def _exporter(name: str, env: Any) -> Any:
    """The span exporter registered under ``name`` (group ``opentelemetry_traces_exporter``);
    ``otlp`` is OTLP over HTTP, or gRPC when ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL=grpc``."""
    from importlib.metadata import entry_points

    wanted = [name]
    if name == "otlp":
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        wanted = ["otlp_proto_grpc"] if protocol == "grpc" else ["otlp_proto_http"]
        wanted.append("otlp")
    found = {ep.name: ep for ep in entry_points(group="opentelemetry_traces_exporter")}
    for candidate in wanted:
        if candidate in found:
            return found[candidate].load()()
    log.warning(
        "tracing: no span exporter named %r is installed (installed: %s); for OTLP: %s",
        name,
        ", ".join(sorted(found)) or "none",
        _INSTALL,
    )
    return None


def _global_provider() -> Tracing | None:
    """The tracer provider a program set globally before the worker started, if any: only
    looked for when OpenTelemetry is already imported (otherwise nobody could have set one)."""
    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return Tracing(provider)
