"""Regressions of the new-user trial of the webhook source and the http sink: each test is a
fault that was found (what it did then is in its docstring) and the behaviour now."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from test_webhook_http_sink import serve
from test_webhook_source import Hook, ce, hook_fixture
from webhook_support import free_port, request

hook = hook_fixture()


async def test_events_the_store_could_not_write_are_400_and_the_source_goes_on(
    hook: Hook,
) -> None:
    """A lone surrogate (anywhere: data, a key, an extension, in every mode) passed the checks
    and the append failed: 503 forever, the source failed and restarted (404 meanwhile). Now:
    400 with a problem body naming where, nothing stored, and the next request is stored."""
    structured = {"Content-Type": "application/cloudevents+json"}
    binary = {
        "ce-specversion": "1.0",
        "ce-id": "b",
        "ce-source": "/s",
        "ce-type": "com.example.order.x",
        "Content-Type": "application/json",
    }
    poison: list[tuple[str | bytes, dict[str, str], str]] = [
        (json.dumps(ce(data="\ud800")), structured, "data"),
        (json.dumps(ce(data={"\udc00": 1})), structured, "a key of data"),
        (json.dumps(ce(tenant="x\udfff")), structured, "tenant"),
        (
            json.dumps([ce(id="ok"), ce(id="bad", data=["\ud800"])]),
            {"Content-Type": "application/cloudevents-batch+json"},
            "data[0]",
        ),
        ('{"a": "\\ud800"}', binary, "a"),
        ('{"n": ["\\udc00"]}', {"Content-Type": "application/json", "X-Subject": "s"}, "n[0]"),
        (b"+2AA-", {"Content-Type": "text/plain; charset=utf-7", "X-Subject": "s"}, ""),
        (
            "a=%ff&b=2",
            {"Content-Type": "application/x-www-form-urlencoded", "X-Subject": "s"},
            "UTF-8",
        ),
    ]
    for body, headers, where in poison:
        status, out, problem = await hook.post(body, headers)
        assert status == 400, (body, status, problem)
        assert out["Content-Type"] == "application/problem+json"
        assert where in problem["detail"], problem
    assert await hook.stored() == []
    status, _, answer = await hook.post(json.dumps(ce(id="after")), structured)
    assert (status, answer) == (202, {"stored": 1, "duplicates": 0})
    assert [e["id"] for e in await hook.stored()] == ["after"]


async def test_the_http_sink_follows_no_redirect_and_dead_letters_it() -> None:
    """A 302/301 was followed as a GET without body and counted as delivered; a 307 re-POSTed
    to wherever Location pointed, ce-* headers included. Now each 3xx is a data error naming
    the status and the Location, and nothing is requested from the Location."""
    from aiohttp import web

    from meshconnect import BatchError, ConnectorContext, DataError, Record
    from meshconnect.connectors.webhook.config import HttpSinkConfig
    from meshconnect.connectors.webhook.sink import HttpSink

    seen: list[tuple[str, str]] = []

    async def receive(request: web.Request) -> web.StreamResponse:
        seen.append((request.method, request.path))
        if request.path.startswith("/moved"):
            status = int(request.path.rsplit("/", 1)[1])
            return web.Response(status=status, headers={"Location": "/elsewhere?token=s3cret"})
        return web.Response(status=200)

    port = free_port()
    runner = await serve(receive, port)
    config = HttpSinkConfig(url=f"http://127.0.0.1:{port}/moved/{{data.status}}")
    sink = HttpSink(config, ConnectorContext("t", "http", logging.getLogger("t")))
    await sink.open(None)
    try:
        records = [Record({"status": s}, id=f"r{s}") for s in (301, 302, 303, 307, 308)]
        with pytest.raises(BatchError) as failed:
            await sink.write(records)
    finally:
        await sink.close()
        await runner.cleanup()
    assert sorted(failed.value.failures) == [0, 1, 2, 3, 4]
    for index, error in failed.value.failures.items():
        assert isinstance(error, DataError)
        status = (301, 302, 303, 307, 308)[index]
        assert f"HTTP {status} redirect to http://127.0.0.1:{port}/elsewhere" in str(error)
        assert "s3cret" not in str(error)
    assert all(path.startswith("/moved/") for _, path in seen)  # /elsewhere never asked


async def test_values_in_the_url_are_escaped_as_one_segment_or_query_value() -> None:
    """``{data.tenant}`` = ``../../admin`` reached ``/admin/orders``; ``a/b?x=1#frag`` injected
    a query. Now each value is percent-encoded (dot-segments too) and sent as it is."""
    from aiohttp import web

    from meshconnect import ConnectorContext, Record
    from meshconnect.connectors.webhook.config import HttpSinkConfig
    from meshconnect.connectors.webhook.sink import HttpSink

    seen: list[tuple[str, str, dict[str, str]]] = []

    async def receive(request: web.Request) -> web.StreamResponse:
        seen.append((request.raw_path, request.path, dict(request.query)))
        return web.Response(status=200)

    port = free_port()
    runner = await serve(receive, port)
    config = HttpSinkConfig(
        url=f"http://127.0.0.1:{port}/tenants/{{data.tenant}}/orders?id={{id}}&n=a b", mode="data"
    )
    sink = HttpSink(config, ConnectorContext("t", "http", logging.getLogger("t")))
    await sink.open(None)
    try:
        for tenant in ("../../admin", "a/b?x=1#frag", "..", "café & co"):
            await sink.write([Record({"tenant": tenant}, id="i&d=#")])
    finally:
        await sink.close()
        await runner.cleanup()
    assert [raw.split("?")[0] for raw, _, _ in seen] == [
        "/tenants/..%2F..%2Fadmin/orders",
        "/tenants/a%2Fb%3Fx%3D1%23frag/orders",
        "/tenants/%2E%2E/orders",
        "/tenants/caf%C3%A9%20%26%20co/orders",
    ]
    assert all(query == {"id": "i&d=#", "n": "a b"} for _, _, query in seen)


async def test_bodies_that_cannot_be_decoded_are_400_or_415_problems(hook: Hook) -> None:
    """``Content-Encoding: gzip`` with a body that is not gzip was a 500 with a traceback.
    Now: a coding that does not decode is 400, a coding the webhook does not know
    (``compress``, a list of codings) is 415 (RFC 9110 section 15.5.16); each with a problem
    body, nothing stored. ``br`` without the Brotli library is refused by aiohttp's parser
    before the webhook sees it (a plain-text 400, as the docs say). Real gzip and deflate
    bodies are decoded."""
    import gzip
    import zlib

    body = json.dumps(ce(id="z"))
    cases: list[tuple[str, bytes, int]] = [
        ("gzip", b"not gzip at all", 400),
        ("deflate", b"not deflate", 400),
        ("gzip", gzip.compress(body.encode())[:20], 400),  # cut short
        ("compress", b"x", 415),
        ("gzip, zstd", b"x", 415),
        ("br", b"\x0b\x02\x80{}\x03", 400),
    ]
    for coding, data, expected in cases:
        status, out, raw = await request(
            "POST",
            hook.url,
            data=data,
            headers={
                "Authorization": "Bearer new-token",
                "Content-Type": "application/cloudevents+json",
                "Content-Encoding": coding,
            },
        )
        assert status == expected, (coding, status, raw)
        if coding != "br":
            assert out["Content-Type"] == "application/problem+json", (coding, raw)
            assert json.loads(raw)["status"] == expected
    assert await hook.stored() == []
    for coding, data in (
        ("gzip", gzip.compress(body.encode())),
        ("deflate", zlib.compress(body.replace('"z"', '"y"').encode())),
    ):
        status, _, _ = await hook.post(
            data,
            {"Content-Type": "application/cloudevents+json", "Content-Encoding": coding},
        )
        assert status == 202
    assert [e["id"] for e in await hook.stored()] == ["z", "y"]


def test_validate_refuses_a_listen_address_that_cannot_be_served(tmp_path: Path) -> None:
    """``localhost:abc``, ``nohostport`` and ``127.0.0.1:99999`` passed ``validate`` and
    failed only at run time. Now each is a config error naming the file, line and field."""
    from meshconnect.config.loader import load_pipeline_files
    from meshconnect.errors import ValidationErrors
    from meshconnect.testing import test_registry

    for listen in ("localhost:abc", "nohostport", "127.0.0.1:99999", "::1:80", ":80"):
        path = tmp_path / "p.yaml"
        path.write_text(
            "pipelines:\n  - name: hooks\n    source:\n      connector: webhook\n"
            f'      config:\n        listen: "{listen}"\n'
        )
        with pytest.raises(ValidationErrors) as refused:
            load_pipeline_files([str(path)], test_registry())
        assert f"{path}:6:" in str(refused.value) and "listen" in str(refused.value), listen
    for listen in ("127.0.0.1:0", "[::1]:8080", "0.0.0.0:65535", "localhost:80"):
        path.write_text(
            "pipelines:\n  - name: hooks\n    source:\n      connector: webhook\n"
            f'      config:\n        listen: "{listen}"\n'
        )
        load_pipeline_files([str(path)], test_registry())


hook_signed = hook_fixture(
    """
        hmac: {secret: s3cret, header: X-Hub-Signature-256, prefix: "sha256="}
    """
)


async def test_signature_only_routes_small_refusals(hook_signed: Hook) -> None:
    """A signature-only route answered 401 with ``WWW-Authenticate: Bearer`` (no token would
    do) and refused upper-case hex; ``charset=utf-16`` on a CloudEvents JSON body was a 400,
    not 415; a 415 echoed the client's content type."""
    import hashlib
    import hmac

    body = json.dumps(ce(id="u")).encode()
    digest = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    base = {"Content-Type": "application/cloudevents+json"}
    status, out, _ = await request(
        "POST", hook_signed.url, data=body, headers={**base, "X-Hub-Signature-256": "sha256=0"}
    )
    assert status == 401 and "WWW-Authenticate" not in out
    status, _, _ = await request(
        "POST",
        hook_signed.url,
        data=body,
        headers={**base, "X-Hub-Signature-256": "sha256=" + digest.upper()},
    )
    assert status == 202
    for content_type in (
        "application/cloudevents+json; charset=utf-16",
        "application/json; charset=utf-16",
        "application/cloudevents-batch+json; charset=latin-1",
    ):
        data = body.decode().encode("utf-16") if "16" in content_type else body
        signature = "sha256=" + hmac.new(b"s3cret", data, hashlib.sha256).hexdigest()
        status, _, raw = await request(
            "POST",
            hook_signed.url,
            data=data,
            headers={"Content-Type": content_type, "X-Hub-Signature-256": signature},
        )
        assert status == 415 and b"UTF-8" in raw, (content_type, raw)
    garbage = "garbage/\u00e9vil-<script>"
    signature = "sha256=" + hmac.new(b"s3cret", b"x", hashlib.sha256).hexdigest()
    status, _, raw = await request(
        "POST",
        hook_signed.url,
        data=b"x",
        headers={
            "Content-Type": garbage.encode().decode("latin-1"),
            "X-Hub-Signature-256": signature,
        },
    )
    assert status == 415 and b"garbage" not in raw and b"script" not in raw
    assert [e["id"] for e in await hook_signed.stored()] == ["u"]


async def _run_sink(tmp_path: Path, port: int, records: list[dict[str, Any]]) -> list[Any]:
    """The records through a worker to an http sink with 3 attempts; the dead letters."""
    from webhook_support import FlakyStore, worker_for

    store = FlakyStore("memory://")
    await store.open()
    worker = worker_for(
        tmp_path,
        f"""
        pipelines:
          - name: out
            source:
              connector: memory
              config: {{records: {json.dumps(records)}, batch_size: 10}}
            sinks:
              - connector: http
                config: {{url: "http://127.0.0.1:{port}/in", timeout: 5s}}
                errors:
                  retry: {{max_attempts: 3, initial_backoff: 100ms, max_backoff: 200ms}}
                  tolerance: all
                  dead_letter_topic: dlq
        """,
        store,
    )
    try:
        assert await asyncio.wait_for(worker.run(), 60) == 0
        return list(await store.read("dlq", 0, 100))
    finally:
        await store.close()


def _events(n: int) -> list[dict[str, Any]]:
    return [
        {"specversion": "1.0", "id": f"r{i}", "source": "/s", "type": "t", "partitionkey": "k"}
        for i in range(n)
    ]


async def test_records_held_back_behind_a_retry_are_not_charged_attempts(tmp_path: Path) -> None:
    """Receiver 500,500,200,500,200,... with 3 attempts and one partition key: r2..r4 were
    dead-lettered with errorattempts 3, never sent (each retry of r0/r1 charged them too).
    Now an attempt charged while held back is used once the record can go out: all five
    are delivered in order, none sent more than 3 times."""
    from aiohttp import web

    answers = [500, 500, 200, 500, 200]
    sends: list[str] = []
    delivered: list[str] = []

    async def receive(request: web.Request) -> web.StreamResponse:
        status = answers[len(sends) % len(answers)]
        sends.append(request.headers["ce-id"])
        if status == 200:
            delivered.append(request.headers["ce-id"])
        return web.Response(status=status)

    port = free_port()
    runner = await serve(receive, port)
    try:
        dead = await _run_sink(tmp_path, port, _events(5))
    finally:
        await runner.cleanup()
    assert dead == []
    assert delivered == ["r0", "r1", "r2", "r3", "r4"]
    assert max(sends.count(i) for i in delivered) <= 3


async def test_errorattempts_of_a_dead_letter_is_the_sends_made(tmp_path: Path) -> None:
    """A head that always fails is dead-lettered after 3 sends; the records held behind it
    were never sent, and their dead letters say so (errorattempts 0, "held back"): the
    worker decides per write call, so they go with it (see the report / docs)."""
    from aiohttp import web

    sends: list[str] = []

    async def receive(request: web.Request) -> web.StreamResponse:
        sends.append(request.headers["ce-id"])
        return web.Response(status=503)

    port = free_port()
    runner = await serve(receive, port)
    try:
        dead = await _run_sink(tmp_path, port, _events(3))
    finally:
        await runner.cleanup()
    attempts = {d.id: d.extensions["errorattempts"] for d in dead}
    assert attempts == {f"r{i}": sends.count(f"r{i}") for i in range(3)}
    assert attempts == {"r0": 3, "r1": 0, "r2": 0}
    assert all("held back" in str(d.extensions["errormessage"]) for d in dead if d.id != "r0")
