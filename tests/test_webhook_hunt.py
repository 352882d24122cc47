"""Regressions of the second new-user hunt of the webhook source and the http sink, against
the CloudEvents HTTP binding: each test is a fault that was found (what it did then is in
its docstring) and the behaviour now."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict
from test_webhook_http_sink import serve
from test_webhook_source import Hook, hook_fixture, stripe
from webhook_support import free_port, request

from meshconnect import BatchError, ConnectorContext, DataError, Record
from meshconnect.connectors.webhook.config import HttpSinkConfig
from meshconnect.connectors.webhook.sink import HttpSink

hook = hook_fixture()
hook_stripe = hook_fixture(
    """
        hmac: {secret: whsec, header: Stripe-Signature, scheme: timestamped, tolerance: 5m}
        idempotency_window: 0
    """
)

BINARY = {
    "ce-specversion": "1.0",
    "ce-id": "b-1",
    "ce-source": "/orders",
    "ce-type": "com.example.order.created",
}


async def test_binary_mode_header_values_in_double_quotes_are_unescaped(hook: Hook) -> None:
    """The binding (section 3.1.3.2) says a receiver MUST unescape double-quoted strings
    (RFC 7230 section 3.2.6) before percent-decoding, for senders of older versions of the
    spec. ``ce-subject: "a b"`` was stored with its quotes, ``"a \\"b\\""`` with its
    backslashes. Now: ``a b`` and ``a "b"``; a quote never closed is kept as it is."""
    cases = [
        ('"order 7"', "order 7"),
        ('"say \\"hi\\""', 'say "hi"'),
        ('"caf%C3%A9"', "café"),  # quotes first, then one round of percent-decoding
        ('50"off', '50"off'),
    ]
    for n, (sent, _) in enumerate(cases):
        status, _, _ = await hook.post(b"", {**BINARY, "ce-id": f"q{n}", "ce-subject": sent})
        assert status == 202, sent
    subjects = [e["subject"] for e in await hook.stored()]
    assert subjects == [expected for _, expected in cases]


async def test_binary_mode_refuses_data_headers_and_ambiguous_headers(hook: Hook) -> None:
    """In binary mode the data is the body (binding section 3.1.2). ``ce-data_base64: aGk=``
    with an empty body was stored as the event's data; ``ce-data: x`` was dropped silently;
    two ``ce-id`` headers stored the last one; ``ce-datacontenttype`` next to a
    ``Content-Type`` (the binding says it MUST NOT be there) was ignored for the other.
    Now each is a 400 naming the header, and nothing is stored."""
    cases: list[Any] = [
        [*BINARY.items(), ("ce-data_base64", "aGk=")],
        [*BINARY.items(), ("ce-data", "x")],
        [*BINARY.items(), ("ce-id", "b-2")],
        [*BINARY.items(), ("ce-partitionkey", "a"), ("ce-partitionkey", "b")],
        [*BINARY.items(), ("ce-datacontenttype", "text/plain"), ("Content-Type", "text/csv")],
    ]
    for headers in cases:
        auth = ("Authorization", "Bearer new-token")
        status, _, raw = await request(
            "POST", hook.url, data=b"x", headers=CIMultiDict([auth, *headers])
        )
        problem = json.loads(raw)
        assert status == 400, headers
        assert problem["title"] == "Invalid CloudEvent"
        assert problem["detail"].startswith("header ce-"), problem
    assert await hook.stored() == []


async def test_the_http_sink_writes_text_in_the_charset_its_content_type_names() -> None:
    """A record with ``datacontenttype: text/plain; charset=utf-16`` (the webhook stores one
    as text when a sender posts UTF-16) went out as UTF-8 bytes under that label: a
    receiver decoding the body as the binding says read garbage. Now the body is in the
    named charset, in binary and data mode, JSON included; data that charset cannot write
    is a data error (dead letter) naming the character, not a mislabelled body."""
    bodies: list[tuple[str, bytes]] = []

    async def receive(request: web.Request) -> web.Response:
        bodies.append((request.headers["Content-Type"], await request.read()))
        return web.Response(status=204)

    port = free_port()
    runner = await serve(receive, port)
    sinks = [
        HttpSink(
            HttpSinkConfig(url=f"http://127.0.0.1:{port}/in", mode=mode),
            ConnectorContext("t", "http", logging.getLogger("t")),
        )
        for mode in ("binary", "data")
    ]
    try:
        for sink in sinks:
            await sink.open(None)
            await sink.write(
                [
                    Record("hé €", datacontenttype="text/plain; charset=utf-16"),
                    Record("hé", datacontenttype="text/csv; charset=ISO-8859-1"),
                    Record({"a": "é"}, datacontenttype="application/json; charset=utf-16"),
                    Record("hé", datacontenttype="text/plain"),
                ]
            )
            with pytest.raises(BatchError) as failed:
                await sink.write([Record("€", datacontenttype="text/plain; charset=latin-1")])
            assert isinstance(failed.value.failures[0], DataError)
            assert "'€', which latin-1 cannot write" in str(failed.value.failures[0])
    finally:
        for sink in sinks:
            await sink.close()
        await runner.cleanup()
    decoded = [
        body.decode(ctype.split("charset=")[-1] if "charset" in ctype else "utf-8")
        for ctype, body in bodies
    ]
    assert decoded == ["hé €", "hé", '{"a":"é"}', "hé"] * 2


def test_validate_names_each_template_placeholder_and_header_nothing_could_fill(
    tmp_path: Path,
) -> None:
    """``id: "{nope}"`` on the webhook (every request then got 400 "Missing value"), a sink
    url with ``{dat.x}`` or a header with ``{Type}`` (every record dead-lettered), a header
    name with a space and a header value with a line break (every request refused by aiohttp
    as a "header injection") all passed ``validate``. Now each is a problem naming its
    file, line and field; ``{dataschema}``, which the sink could never fill, now renders."""
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            pipelines:
              - name: a
                source:
                  connector: webhook
                  config:
                    listen: 127.0.0.1:8080
                    id: "{nope}"
                    type: "com.example.{Header.X}"
                    subject: "{header.X-Subject}/{query.kind}/{data.order.id}/{remote}"
                sinks:
                  - connector: http
                    config:
                      url: "http://h/x/{dat.x}"
                      headers:
                        X-Type: "{Type}"
                        Bad Header: "v"
                        X-Line: "a\\nb"
                        X-Fine: "{dataschema} {partitionkey} {time:%Y} {data.a} {offset}"
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "meshconnect", "validate", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    problems = sorted(line for line in output.splitlines() if line.startswith(str(path)))
    assert [p.split(": ")[0].split(":", 1)[1] for p in problems] == [
        "13:16",  # url
        "15:21",  # X-Type
        "16:25",  # Bad Header
        "17:21",  # X-Line
        "7:13",  # id
        "8:15",  # type
    ], output
    assert "config.headers['Bad Header']" in output
    assert "config.headers.X-Line: a header value may not hold a line break" in output


async def test_the_http_sink_sends_one_header_per_name_and_no_line_break() -> None:
    """A ``headers: {Content-Type: ...}`` (or an ``hmac.header`` spelled in another case
    than a configured header) sent both headers, the binding's and the user's: a receiver
    took either. A value rendered with a line break was refused by aiohttp with a bare
    ``ValueError`` ("header injection"). Now the configured header replaces the binding's,
    and a value with a control character is a data error naming the header."""
    seen: list[list[tuple[str, str]]] = []

    async def receive(request: web.Request) -> web.Response:
        seen.append([(k.lower(), v) for k, v in request.headers.items()])
        return web.Response(status=204)

    port = free_port()
    runner = await serve(receive, port)
    config = HttpSinkConfig(
        url=f"http://127.0.0.1:{port}/in",
        headers={
            "Content-Type": "application/vnd.example+json",
            "X-Note": "{data.note}",
            "X-Schema": "{dataschema}",
        },
        hmac={"secret": "s", "header": "x-note"},
    )
    sink = HttpSink(config, ConnectorContext("t", "http", logging.getLogger("t")))
    await sink.open(None)
    try:
        await sink.write([Record({"note": "fine"}, dataschema="https://example.com/s")])
        with pytest.raises(BatchError) as failed:
            await sink.write([Record({"note": "a\r\nX-Injected: 1"})])
    finally:
        await sink.close()
        await runner.cleanup()
    names = [name for name, _ in seen[0]]
    assert names.count("content-type") == 1 and names.count("x-note") == 1
    assert dict(seen[0])["content-type"] == "application/vnd.example+json"
    assert dict(seen[0])["x-note"] != "fine"  # the signature, set last
    assert dict(seen[0])["x-schema"] == "https://example.com/s"
    assert len(seen) == 1
    error = failed.value.failures[0]
    assert isinstance(error, DataError) and "headers.X-Note" in str(error)


async def test_a_replayed_timestamped_signature_is_not_stored_again(hook_stripe: Hook) -> None:
    """``scheme: timestamped`` promises replay protection, but a captured request sent
    again within ``tolerance`` of its timestamp was stored again: with plain bodies (fresh
    ids) or the idempotency window off or shorter than twice the tolerance, the event was
    stored twice. Now the same signature header again, once stored, is answered 202 as a
    duplicate and not stored; a new signature (a sender's retry signs anew) is stored,
    and a request that was not stored (here a 400) may be sent again."""
    body = b'{"specversion":"1.0","id":"r-1","source":"/s","type":"com.example.x"}'
    headers = {"Content-Type": "application/cloudevents+json"}
    now = int(time.time())
    signed = {**headers, "Stripe-Signature": stripe(body, now)}
    answers = [await hook_stripe.post(body, signed) for _ in range(3)]
    assert [(status, answer) for status, _, answer in answers] == [
        (202, {"stored": 1, "duplicates": 0}),
        (202, {"stored": 0, "duplicates": 1}),
        (202, {"stored": 0, "duplicates": 1}),
    ]
    again = {**headers, "Stripe-Signature": stripe(body, now - 1)}
    assert (await hook_stripe.post(body, again))[0] == 202
    bad = b'{"specversion":"1.0","id":"r-2","source":"/s"}'
    bad_signed = {**headers, "Stripe-Signature": stripe(bad, int(time.time()))}
    assert [(await hook_stripe.post(bad, bad_signed))[0] for _ in range(2)] == [400, 400]
    assert [e["id"] for e in await hook_stripe.stored()] == ["r-1", "r-1"]


async def test_a_request_without_its_bearer_token_is_refused_before_its_body_is_read(
    hook: Hook,
) -> None:
    """The body was read (and decompressed) before the token was checked: a client with no
    token got 413 for a large ``Content-Length`` and held a connection for ``read_timeout``
    with a body that never came, and was answered 408, not 401. Now it is 401 at once."""
    status, _, _ = await request(
        "POST",
        hook.url,
        data=b"x" * 5000,
        headers={"Content-Type": "application/json", "Authorization": "Bearer wrong"},
    )
    assert status == 401  # max_body_bytes is 2KB here: it was a 413
    reader, writer = await asyncio.open_connection("127.0.0.1", int(hook.url.split(":")[2][:5]))
    writer.write(
        b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    await writer.drain()
    async with asyncio.timeout(5):  # read_timeout is 10 s: it was a 408 after that
        status_line = await reader.readline()
    writer.close()
    assert status_line.split()[1] == b"401"


async def test_template_errors_name_neither_the_query_nor_the_user_info_nor_a_header_value() -> (
    None
):
    """The docs promise error messages name the URL without its user info and query string
    (either may carry a secret), but a record without a value for a placeholder put the
    whole url template in the dead letter's ``errormessage`` and the log: API key, password
    and all; a header template was quoted whole too (``Authorization: Bearer TOKEN ...``).
    Now the url is shown as the other errors show it, and a header by its name only."""
    config = HttpSinkConfig(
        url="http://user:pw-secret@127.0.0.1:1/x/{data.a}?api_key=key-secret&t={data.t}",
        # (not Authorization: next to user info, validation refuses it)
        headers={"X-Api-Token": "Bearer token-secret {data.t}"},
    )
    sink = HttpSink(config, ConnectorContext("t", "http", logging.getLogger("t")))
    await sink.open(None)
    messages = []
    try:
        for record in (
            Record({"a": 1}),
            Record({"a": "\ud800", "t": 1}),
            Record({"a": 1, "t": "x\ny"}),
        ):
            with pytest.raises(BatchError) as failed:
                await sink.write([record])
            messages.append(str(failed.value.failures[0]))
    finally:
        await sink.close()
    assert (
        "url 'http://127.0.0.1:1/x/{data.a}': the record has no value for {data.t}" in (messages[0])
    )
    assert "headers.X-Api-Token: a value holds a line break" in messages[2]
    for secret in ("pw-secret", "key-secret", "token-secret"):
        assert all(secret not in message for message in messages), messages


def test_hmac_header_names_and_success_codes_are_checked_by_validate() -> None:
    """``hmac: {header: "X Sig"}`` (no request can carry it: every request was 401) or
    ``header: ""`` on the sink (every send refused by aiohttp), and ``success_codes: [999]``
    passed validation. Now they are config errors at their field."""
    from pydantic import ValidationError

    from meshconnect.connectors.webhook.config import HmacConfig

    for header in ("X Sig", "", "X-Sig:"):
        with pytest.raises(ValidationError, match="not a header name"):
            HmacConfig(secret="s", header=header)
    with pytest.raises(ValidationError, match=r"success_codes\.1"):
        HttpSinkConfig(url="http://h/x", success_codes=[409, 999])


@pytest.mark.parametrize("connector", ["webhook", "slack", "chatgpt"])
def test_validate_refuses_a_path_or_address_no_request_can_reach(
    tmp_path: Path, connector: str
) -> None:
    """``path: /events?x=1``, ``/e/{t}`` or ``/e/%41`` never matched a request (every request
    404), ``/a b`` or ``/é`` made the webhook's default source, ``{path}``, no URI-reference
    (every request 400), and the slack and chatgpt sources took a path without its leading
    ``/`` or a ``listen`` of ``localhost:99999`` until the worker failed to serve it. Now
    ``validate`` names each at its line."""
    secrets = {
        "webhook": "",
        "slack": "signing_secret: s",
        "chatgpt": "api_key: k\n                    base_url: http://127.0.0.1:1/v1",
    }[connector]
    bad = ["/events?x=1", "/e/{t}", "/e/%41", "/a b", "/é", "/e#f", "events"]
    pipelines = "".join(
        f"""
              - name: p{n}
                source:
                  connector: {connector}
                  config:
                    listen: "{"localhost:99999" if n == 0 else "127.0.0.1:8080"}"
                    path: "{path}"
                    {secrets}
            """
        for n, path in enumerate(bad)
    )
    file = tmp_path / "p.yaml"
    file.write_text(textwrap.dedent("pipelines:" + pipelines))
    result = subprocess.run(
        [sys.executable, "-m", "meshconnect", "validate", str(file)],
        capture_output=True,
        text=True,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    fields = [line.split(": ")[1] for line in output.splitlines() if line.startswith(str(file))]
    assert fields == ["pipelines[0].source.config.listen"] + [
        f"pipelines[{n}].source.config.path" for n in range(len(bad))
    ], output


async def test_binary_mode_does_not_send_data_a_receiver_would_read_as_the_event() -> None:
    """A record whose data is itself an event (``datacontenttype:
    application/cloudevents+json``) went out in binary mode with that ``Content-Type``: the
    binding has the receiver read it as structured mode, so the webhook stored the inner
    event and dropped the record's own ``ce-`` attributes. Now it is a data error (dead
    letter) naming the mode to use."""
    sent: list[bytes] = []

    async def receive(request: web.Request) -> web.Response:
        sent.append(await request.read())
        return web.Response(status=204)

    port = free_port()
    runner = await serve(receive, port)
    sink = HttpSink(
        HttpSinkConfig(url=f"http://127.0.0.1:{port}/in"),
        ConnectorContext("t", "http", logging.getLogger("t")),
    )
    await sink.open(None)
    inner = {"specversion": "1.0", "id": "in", "source": "/i", "type": "t"}
    try:
        with pytest.raises(BatchError) as failed:
            await sink.write([Record(inner, datacontenttype="application/cloudevents+json")])
    finally:
        await sink.close()
        await runner.cleanup()
    assert sent == []
    error = failed.value.failures[0]
    assert isinstance(error, DataError) and "mode: structured" in str(error)
