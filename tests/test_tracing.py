"""OpenTelemetry spans per batch per stage (core/tracing.py, docs/tracing.md), recorded by the
SDK's in-memory exporter; and no OpenTelemetry at all unless it is configured."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from meshconnect.config.loader import load_pipeline_files
from meshconnect.mesh import open_store
from meshconnect.testing import MemorySink, MemorySource, test_registry
from meshconnect.tracing import from_environment
from meshconnect.worker import Worker

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


@pytest.fixture(autouse=True)
def clean_memory() -> None:
    MemorySink.outputs.clear()
    MemorySource.crashed.clear()


async def run_traced(tmp_path: Path, text: str) -> tuple[int, list[ReadableSpan]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    (tmp_path / "p.yaml").write_text(textwrap.dedent(text))
    registry = test_registry()
    config = load_pipeline_files([str(tmp_path / "p.yaml")], registry)
    store = open_store("memory://", registry)
    await store.open()
    try:
        code = await Worker(config, store, tracer_provider=provider, restart_backoff=0.01).run()
    finally:
        await store.close()
    return code, list(exporter.get_finished_spans())


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[str]:
    assert parent.context is not None
    return [
        s.name
        for s in sorted(spans, key=lambda s: s.start_time or 0)
        if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


async def test_each_batch_is_a_span_with_a_child_per_stage(tmp_path: Path) -> None:
    event = {"specversion": "1.0", "id": "e", "source": "/t", "type": "t", "data": {"n": -1}}
    traced = {**event, "traceparent": TRACEPARENT, "tracestate": "rojo=1"}
    records = [traced, *({"n": i} for i in range(9))]
    code, spans = await run_traced(
        tmp_path,
        f"""
        pipelines:
          - name: p
            source: {{connector: memory, config: {{records: {json.dumps(records)}, batch_size: 4}}}}
            transforms: [{{type: filter, where: "data.n != 3"}}]
            sinks:
              - {{name: out, connector: memory, batch_size: 100, config: {{name: out}}}}
        """,
    )
    assert code == 0
    sources = [s for s in spans if s.name == "source batch"]
    sinks = [s for s in spans if s.name == "sink batch"]
    assert len(sources) == 3  # 10 records, 4 at a time
    assert sum(s.attributes["meshconnect.records"] for s in sources) == 10  # type: ignore[index,misc]
    assert sum(s.attributes["meshconnect.stored"] for s in sources) == 9  # type: ignore[index,misc]
    for span in sources:
        assert children(spans, span) == ["source poll", "transforms", "store append"]
        assert span.attributes["meshconnect.pipeline"] == "p"  # type: ignore[index]
        assert span.attributes["meshconnect.connector"] == "memory"  # type: ignore[index]
    assert sum(s.attributes["meshconnect.records"] for s in sinks) == 9  # type: ignore[index,misc]
    for span in sinks:
        assert children(spans, span) == ["transforms", "sink write"]
        assert span.attributes["meshconnect.topic"] == "p"  # type: ignore[index]
        assert span.status.status_code is StatusCode.UNSET
    # The record that came in with a trace: the batch that stored it links to it.
    linked = [s for s in sources if s.links]
    assert len(linked) == 1
    assert [format(link.context.trace_id, "032x") for link in linked[0].links] == [TRACE_ID]
    assert linked[0].links[0].context.trace_state.to_header() == "rojo=1"
    # The others came in untraced: they carry their source batch's context out of the mesh...
    source_traces = {f"{s.context.trace_id:032x}" for s in sources}  # type: ignore[union-attr]
    out = MemorySink.outputs["out"]
    assert out[0].extensions["traceparent"] == TRACEPARENT
    assert {r.extensions["traceparent"].split("-")[1] for r in out[1:]} == source_traces
    # ...so the sink's batches link to the sender's trace and to every source batch's.
    assert {format(link.context.trace_id, "032x") for s in sinks for link in s.links} == {
        TRACE_ID,
        *source_traces,
    }


async def test_a_failing_write_marks_its_spans_failed(tmp_path: Path) -> None:
    code, spans = await run_traced(
        tmp_path,
        """
        pipelines:
          - name: p
            source: {connector: memory, config: {records: [{n: 0, bad: true}]}}
            sinks:
              - connector: memory
                config: {name: out, reject_when: bad}
        """,
    )
    assert code == 1  # tolerance none: the sink gives up
    writes = [s for s in spans if s.name == "sink write"]
    assert writes and all(s.status.status_code is StatusCode.ERROR for s in writes)
    assert "rejects" in (writes[0].status.description or "")
    assert all(s.status.status_code is StatusCode.ERROR for s in spans if s.name == "sink batch")


async def test_a_failed_spans_status_and_exception_event_mask_the_runs_secrets(
    tmp_path: Path,
) -> None:
    """Spans leave the worker through an exporter, not the log: an error whose text holds a
    secret (a client library's message with a URL's password) reached the span's status and
    its exception event's message and stack trace unmasked."""
    from meshconnect.config.interpolate import register_secrets

    secret = "pw-OTEL-S3CR3T"
    register_secrets({secret})  # as `meshconnect run` does with the files' secrets
    code, spans = await run_traced(
        tmp_path,
        f"""
        pipelines:
          - name: p
            source: {{connector: memory, config: {{records: [{{n: 0, {secret}: true}}]}}}}
            sinks:
              - connector: memory
                config: {{name: out, reject_when: {secret}}}
        """,
    )
    assert code == 1
    writes = [s for s in spans if s.name == "sink write"]
    assert writes and "rejects" in (writes[0].status.description or "")
    for span in spans:
        shown = [span.status.description or ""]
        shown += [str(dict(event.attributes or {})) for event in span.events]
        assert not any(secret in text for text in shown), span.name
    events = [e for s in writes for e in s.events if e.name == "exception"]
    assert events and "**********" in str((events[0].attributes or {})["exception.message"])


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"},
        {"OTEL_TRACES_EXPORTER": "none"},
    ],
    ids=["unset", "disabled", "none"],
)
def test_tracing_is_off_unless_configured(environ: dict[str, str]) -> None:
    assert from_environment(environ) is None


def test_the_otel_variables_configure_the_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge")
    tracing = from_environment()
    assert tracing is not None and tracing.owned
    assert tracing.provider.resource.attributes["service.name"] == "edge"
    tracing.shutdown()
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    tracing = from_environment()
    assert tracing is not None
    assert tracing.provider.resource.attributes["service.name"] == "meshconnect"
    tracing.shutdown()


def test_a_worker_without_tracing_never_imports_opentelemetry(tmp_path: Path) -> None:
    """Zero cost when the extra is absent or unconfigured: not even an import."""
    code = textwrap.dedent(
        """
        import asyncio, sys
        from meshconnect.testing import run_pipelines
        assert asyncio.run(run_pipelines([sys.argv[1]])) == 0
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        """
    )
    (tmp_path / "p.yaml").write_text(
        "pipelines:\n  - name: p\n    source: {connector: memory, config: {records: [1, 2]}}\n"
        "    sinks: [{connector: memory}]\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "p.yaml")],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("headers", "extension"),
    [
        (
            {"traceparent": TRACEPARENT, "tracestate": "rojo=1"},
            {"traceparent": TRACEPARENT, "tracestate": "rojo=1"},
        ),
        ({"traceparent": TRACEPARENT}, {"traceparent": TRACEPARENT}),
        ({"tracestate": "rojo=1"}, {}),  # a state without its parent means nothing
        ({"traceparent": f"{TRACEPARENT}-more"}, {}),  # version 00 has exactly four fields
        (
            {"traceparent": f"01{TRACEPARENT[2:]}-more"},
            {"traceparent": f"01{TRACEPARENT[2:]}-more"},
        ),
        ({"traceparent": f"ff{TRACEPARENT[2:]}"}, {}),
        ({"traceparent": f"00-{'0' * 32}-b7ad6b7169203331-01"}, {}),
        ({"traceparent": f"00-{TRACE_ID}-{'0' * 16}-01"}, {}),
        ({"traceparent": TRACEPARENT.upper()}, {}),
        ({"traceparent": "garbage"}, {}),
    ],
)
def test_the_webhook_takes_a_plain_requests_w3c_trace_headers_when_well_formed(
    headers: dict[str, str], extension: dict[str, str]
) -> None:
    from meshconnect.connectors.webhook._binding import trace_context

    assert trace_context(headers) == extension
