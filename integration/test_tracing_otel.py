"""`meshconnect run` with the ``OTEL_*`` variables exports its batch spans over OTLP/HTTP to
a local collector endpoint (a server that decodes the real OTLP protobuf), linked to the trace
a record carried in (issue 16, item 5; docs/tracing.md)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from conftest import meshconnect

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_run_exports_batch_spans_to_the_otlp_endpoint(tmp_path: Path) -> None:
    exported: list[ExportTraceServiceRequest] = []

    async def collect(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        exported.append(message)
        return web.Response(body=b"", content_type="application/x-protobuf")

    port = free_port()
    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    events = [
        {
            "specversion": "1.0",
            "id": str(i),
            "source": "/test",
            "type": "test",
            "data": {"n": i},
            **({"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"} if i == 0 else {}),
        }
        for i in range(5)
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        """
pipelines:
  - name: traced
    source: {connector: file, config: {path: in.jsonl, format: cloudevents, follow: false}}
    sinks:
      - {connector: file, config: {path: out.jsonl, format: cloudevents}}
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_SERVICE_NAME="mesh-test",
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            *meshconnect(tmp_path / "state", "run", str(pipeline)),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        await runner.cleanup()
    assert proc.returncode == 0, output.decode()[-3000:]

    services = {
        attribute.value.string_value
        for message in exported
        for resource in message.resource_spans
        for attribute in resource.resource.attributes
        if attribute.key == "service.name"
    }
    assert services == {"mesh-test"}
    spans = [
        span
        for message in exported
        for resource in message.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = {span.name for span in spans}
    assert names == {
        "source batch",
        "source poll",
        "transforms",
        "store append",
        "sink batch",
        "sink write",
    }, output.decode()[-3000:]
    batches = {span.span_id: span for span in spans if span.name.endswith(" batch")}
    for span in spans:
        if not span.name.endswith(" batch"):
            assert span.parent_span_id in batches  # each stage is a child of its batch
    linked = {
        span.name
        for span in batches.values()
        for link in span.links
        if link.trace_id.hex() == TRACE_ID
    }
    assert linked == {"source batch", "sink batch"}
