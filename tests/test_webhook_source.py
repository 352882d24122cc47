"""The webhook source through a real worker and real HTTP: every content mode, every refusal
with its status and problem body, 2xx only after the durable append, idempotency."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from webhook_support import FlakyStore, free_port, request, worker_for

from meshconnect import jsonvalue
from meshconnect.eventrules import attribute_problems

TOKENS = """
        bearer_tokens:
          - old-token
          - new-token
          - {token: orders-only, types: ["com.example.order.*"]}
"""


class Hook:
    """A worker running one webhook pipeline over a FlakyStore; ``url`` to post to."""

    def __init__(self, store: FlakyStore, port: int) -> None:
        self.store = store
        self.url = f"http://127.0.0.1:{port}/events"

    async def stored(self, topic: str = "hooks") -> list[dict[str, Any]]:
        return [r.to_dict() for r in await self.store.read(topic, 0, 10_000)]

    async def post(self, body: bytes | str, headers: dict[str, str] | None = None) -> Any:
        status, out_headers, raw = await request(
            "POST",
            self.url,
            data=body,
            headers={"Authorization": "Bearer new-token", **(headers or {})},
        )
        return status, out_headers, jsonvalue.loads(raw) if raw else None


def hook_fixture(extra: str = TOKENS) -> Callable[..., Any]:
    @pytest.fixture
    async def fixture(tmp_path: Path) -> AsyncIterator[Hook]:
        port = free_port()
        store = FlakyStore("memory://")
        await store.open()
        worker = worker_for(
            tmp_path,
            f"""
            pipelines:
              - name: hooks
                source:
                  connector: webhook
                  config:
                    listen: "127.0.0.1:{port}"
                    path: /events
                    max_body_bytes: 2KB
                    max_batch: 3
                    type: "com.example.{{query.kind}}"
                    source: "/hooks{{path}}"
                    subject: "{{header.X-Subject}}"
                    {extra.strip()}
            """.replace("\n                    " + extra.strip(), "\n" + _indent(extra, 20)),
            store,
        )
        run = asyncio.create_task(worker.run())
        hook = Hook(store, port)
        try:
            yield hook
        finally:
            worker.stop()
            assert await run == 0
            await store.close()

    return fixture


def _indent(text: str, spaces: int) -> str:
    lines = [line.strip("\n") for line in text.strip("\n").splitlines()]
    margin = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(" " * spaces + line[margin:] for line in lines)


hook = hook_fixture()


def ce(**overrides: Any) -> dict[str, Any]:
    event = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/orders",
        "type": "com.example.order.created",
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


# -- content modes --------------------------------------------------------------------------------


async def test_structured_mode_is_stored_as_sent_with_exact_numbers(hook: Hook) -> None:
    body = (
        '{"specversion":"1.0","id":"s-1","source":"/orders","type":"com.example.order.created",'
        '"time":"2026-01-02T03:04:05.123456789Z","tenant":"acme",'
        '"data":{"total":169299987.35345112}}'
    )
    status, _, answer = await hook.post(body, {"Content-Type": "application/cloudevents+json"})
    assert (status, answer) == (202, {"stored": 1, "duplicates": 0})
    [stored] = await hook.stored()
    assert jsonvalue.dumps(stored) == body.encode()


async def test_binary_mode_reads_percent_encoded_headers_and_typed_data(hook: Hook) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "b-1",
        "ce-source": "/orders",
        "ce-type": "com.example.order.created",
        "ce-subject": "caf%C3%A9 %22x%22",
        "ce-partitionkey": "order-7",
        "Content-Type": "application/json",
    }
    status, _, _ = await hook.post('{"total": 1.10}', headers)
    assert status == 202
    [stored] = await hook.stored()
    assert stored == {
        **ce(id="b-1"),
        "subject": 'café "x"',
        "datacontenttype": "application/json",
        "partitionkey": "order-7",
        "data": {"total": jsonvalue.loads("1.10")},
    }
    status, _, _ = await hook.post(
        b"\x00\x01binary", {**headers, "ce-id": "b-2", "Content-Type": "application/octet-stream"}
    )
    assert status == 202
    assert (await hook.store.read("hooks", 1, 1))[0].data == b"\x00\x01binary"


async def test_batch_mode_stores_every_event_of_the_batch(hook: Hook) -> None:
    batch = [ce(id=f"b-{i}", data={"i": i}) for i in range(3)]
    status, _, answer = await hook.post(
        json.dumps(batch), {"Content-Type": "application/cloudevents-batch+json"}
    )
    assert (status, answer) == (202, {"stored": 3, "duplicates": 0})
    assert [e["data"] for e in await hook.stored()] == [{"i": 0}, {"i": 1}, {"i": 2}]


async def test_plain_json_form_and_text_bodies_are_wrapped_by_the_templates(hook: Hook) -> None:
    url = hook.url
    hook.url = url + "?kind=signup"
    assert (
        await hook.post('{"user": "ada"}', {"Content-Type": "application/json", "X-Subject": "u/1"})
    )[0] == 202
    assert (
        await hook.post(
            "a=1&b=2&a=3", {"Content-Type": "application/x-www-form-urlencoded", "X-Subject": "u/2"}
        )
    )[0] == 202
    assert (
        await hook.post("hello", {"Content-Type": "text/plain; charset=utf-8", "X-Subject": "u/3"})
    )[0] == 202
    stored = await hook.stored()
    assert [(e["type"], e["source"], e["subject"], e["data"]) for e in stored] == [
        ("com.example.signup", "/hooks/events", "u/1", {"user": "ada"}),
        ("com.example.signup", "/hooks/events", "u/2", {"a": ["1", "3"], "b": "2"}),
        ("com.example.signup", "/hooks/events", "u/3", "hello"),
    ]
    assert all(attribute_problems(r) == {} for r in await hook.store.read("hooks", 0, 10))
    # a template whose value is missing (no X-Subject) is a 400 naming it; nothing stored
    status, _, problem = await hook.post('{"user": "bob"}', {"Content-Type": "application/json"})
    assert status == 400 and "{header.X-Subject}" in problem["detail"]
    assert len(await hook.stored()) == 3


# -- refusals -------------------------------------------------------------------------------------


async def test_a_missing_or_wrong_token_is_401_and_both_rotated_tokens_work(hook: Hook) -> None:
    body, headers = json.dumps(ce()), {"Content-Type": "application/cloudevents+json"}
    for auth in (None, "Bearer nope", "Basic b2xkLXRva2Vu"):
        status, out, problem = await request(
            "POST",
            hook.url,
            data=body,
            headers={**headers, **({"Authorization": auth} if auth else {})},
        )
        assert status == 401 and out["WWW-Authenticate"].startswith("Bearer")
        assert out["Content-Type"] == "application/problem+json"
        assert b"nope" not in problem  # the presented token is not echoed
    for token, event_id in (("old-token", "r-1"), ("new-token", "r-2")):
        status, _, _ = await request(
            "POST",
            hook.url,
            data=json.dumps(ce(id=event_id)),
            headers={**headers, "Authorization": f"Bearer {token}"},
        )
        assert status == 202
    assert [e["id"] for e in await hook.stored()] == ["r-1", "r-2"]


async def test_a_type_outside_the_tokens_acl_is_403_and_nothing_of_the_request_is_stored(
    hook: Hook,
) -> None:
    batch = [ce(id="a-1"), ce(id="a-2", type="com.example.refund.created")]
    headers = {
        "Content-Type": "application/cloudevents-batch+json",
        "Authorization": "Bearer orders-only",
    }
    status, _, raw = await request("POST", hook.url, data=json.dumps(batch), headers=headers)
    assert status == 403
    assert jsonvalue.loads(raw)["types"] == ["com.example.refund.created"]
    status, _, _ = await request("POST", hook.url, data=json.dumps(batch[:1]), headers=headers)
    assert status == 202
    assert [e["id"] for e in await hook.stored()] == ["a-1"]


async def test_an_oversized_body_or_batch_is_413(hook: Hook) -> None:
    big = json.dumps(ce(data="x" * 3000))
    status, _, problem = await hook.post(big, {"Content-Type": "application/cloudevents+json"})
    assert status == 413 and problem["title"] == "Content Too Large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(10):
            yield b" " * 500

    status, _, _ = await hook.post(chunks(), {"Content-Type": "application/cloudevents+json"})  # type: ignore[arg-type]
    assert status == 413
    batch = [ce(id=f"x-{i}") for i in range(4)]
    status, _, problem = await hook.post(
        json.dumps(batch), {"Content-Type": "application/cloudevents-batch+json"}
    )
    assert status == 413 and "at most 3" in problem["detail"]
    assert await hook.stored() == []


async def test_a_malformed_cloudevent_is_400_listing_the_missing_attributes(hook: Hook) -> None:
    structured = {"Content-Type": "application/cloudevents+json"}
    status, _, problem = await hook.post(
        json.dumps({"specversion": "1.0", "source": "/x"}), structured
    )
    assert status == 400 and problem["missing"] == ["id", "type"]
    status, _, problem = await hook.post("", {"ce-specversion": "1.0", "ce-source": "/x"})
    assert status == 400 and problem["missing"] == ["id", "type"]
    status, _, problem = await hook.post(json.dumps(ce(time="yesterday")), structured)
    assert status == 400 and problem["invalid"][0]["attribute"] == "time"
    status, _, problem = await hook.post('{"specversion":"1.0","id":"1","id":"2"}', structured)
    assert status == 400 and "duplicate key" in problem["detail"]
    status, _, problem = await hook.post(json.dumps(ce(Bad_Name="x")), structured)
    assert status == 400
    assert await hook.stored() == []


async def test_an_unsupported_media_type_is_415(hook: Hook) -> None:
    for content_type in ("image/png", "application/cloudevents+xml"):
        status, _, problem = await hook.post(b"\x89PNG", {"Content-Type": content_type})
        assert status == 415 and problem["status"] == 415
    assert await hook.stored() == []


async def test_a_repeated_id_and_source_is_accepted_and_stored_once(hook: Hook) -> None:
    structured = {"Content-Type": "application/cloudevents+json"}
    answers = await asyncio.gather(
        *(hook.post(json.dumps(ce(id="dup")), structured) for _ in range(5))
    )
    assert [a[0] for a in answers] == [202] * 5
    assert sum(a[2]["stored"] for a in answers) == 1
    assert (await hook.post(json.dumps(ce(id="dup")), structured))[2] == {
        "stored": 0,
        "duplicates": 1,
    }
    assert (await hook.post(json.dumps(ce(id="dup", source="/other")), structured))[0] == 202
    assert [(e["id"], e["source"]) for e in await hook.stored()] == [
        ("dup", "/orders"),
        ("dup", "/other"),
    ]


hook_impatient = hook_fixture(TOKENS + "\n        ack_timeout: 0.3\n")


async def test_a_sender_that_gave_up_leaves_its_duplicate_waiting_and_stored_once(
    hook_impatient: Hook,
) -> None:
    """The first sender's wait ends (503 after ack_timeout) while its event is still being
    appended; a second sender of the same event waits for that append, not a new one."""
    structured = {"Content-Type": "application/cloudevents+json"}
    hook = hook_impatient
    hook.store.hold = asyncio.Event()
    first = await hook.post(json.dumps(ce(id="slow")), structured)
    assert first[0] == 503
    assert first[2]["detail"].startswith("not stored: no durable append within 0.3s")
    second = asyncio.ensure_future(hook.post(json.dumps(ce(id="slow")), structured))
    await asyncio.sleep(0.05)
    hook.store.hold.set()
    assert (await second)[:3:2] == (202, {"stored": 0, "duplicates": 1})
    assert [e["id"] for e in await hook.stored()] == ["slow"]


async def test_the_store_unavailable_is_503_with_retry_after_and_stores_nothing(hook: Hook) -> None:
    structured = {"Content-Type": "application/cloudevents+json"}
    hook.store.broken = True
    status, headers, problem = await hook.post(json.dumps(ce(id="down")), structured)
    assert status == 503 and headers["Retry-After"] == "1"
    # the client learns that it was not stored, not the store's internals (only logged)
    assert problem["detail"] == "not stored: the mesh store did not take the events; retry later"
    hook.store.broken = False
    for _ in range(200):  # the source is restarted; the sender retries the 503
        status, _, _ = await hook.post(json.dumps(ce(id="down")), structured)
        if status == 202:
            break
        await asyncio.sleep(0.05)
    assert status == 202
    assert [e["id"] for e in await hook.stored()] == ["down"]


hook_limited = hook_fixture(
    """
        rate_limit: {requests_per_second: 0.01, burst: 3}
        allow_ips: ["127.0.0.0/8"]
        hmac: {secret: [new-secret, old-secret], header: X-Hub-Signature-256, prefix: "sha256="}
    """
)


def github(body: bytes, secret: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


async def test_github_signatures_and_the_rate_limit(hook_limited: Hook) -> None:
    hook = hook_limited
    body = json.dumps(ce(id="g-1")).encode()
    headers = {"Content-Type": "application/cloudevents+json", "Authorization": "Bearer new-token"}
    status, _, problem = await request("POST", hook.url, data=body, headers=headers)
    assert status == 401 and "X-Hub-Signature-256" in problem.decode()
    status, _, _ = await request(
        "POST",
        hook.url,
        data=body,
        headers={**headers, "X-Hub-Signature-256": github(body + b" ", b"new-secret")},
    )
    assert status == 401
    status, _, _ = await request(
        "POST",
        hook.url,
        data=body,
        headers={**headers, "X-Hub-Signature-256": github(body, b"old-secret")},
    )
    assert status == 202
    # the burst of 3 is spent: the next one is 429 with Retry-After
    status, out, problem = await request("POST", hook.url, data=body, headers=headers)
    assert status == 429 and int(out["Retry-After"]) >= 1
    assert [e["id"] for e in await hook.stored()] == ["g-1"]


hook_stripe = hook_fixture(
    """
        hmac: {secret: whsec, header: Stripe-Signature, scheme: timestamped, tolerance: 5m}
        allow_ips: ["10.0.0.0/8"]
        trust_forwarded: true
    """
)


def stripe(body: bytes, stamp: int) -> str:
    digest = hmac.new(b"whsec", f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


async def test_stripe_signatures_refuse_stale_timestamps_and_the_allow_list(
    hook_stripe: Hook,
) -> None:
    hook = hook_stripe
    body = json.dumps(ce(id="s-1")).encode()
    headers = {
        "Content-Type": "application/cloudevents+json",
        "Authorization": "Bearer new-token",
        "X-Forwarded-For": "10.1.2.3",
    }
    stale = int(time.time()) - 600
    status, _, problem = await request(
        "POST", hook.url, data=body, headers={**headers, "Stripe-Signature": stripe(body, stale)}
    )
    assert status == 401 and b"tolerance" in problem
    status, _, _ = await request(
        "POST",
        hook.url,
        data=body,
        headers={
            **headers,
            "X-Forwarded-For": "192.168.1.1",
            "Stripe-Signature": stripe(body, int(time.time())),
        },
    )
    assert status == 403
    status, _, _ = await request(
        "POST",
        hook.url,
        data=body,
        headers={**headers, "Stripe-Signature": stripe(body, int(time.time()))},
    )
    assert status == 202
    assert [e["id"] for e in await hook.stored()] == ["s-1"]


def test_the_generic_hmac_setting_signs_and_verifies_base64_sha512() -> None:
    from meshconnect.connectors.webhook._signing import sign, verify
    from meshconnect.connectors.webhook.config import HmacConfig

    config = HmacConfig(
        secret="k", header="X-Sig", algorithm="sha512", encoding="base64", prefix="v="
    )  # type: ignore[arg-type]
    value = sign(b"body", config)
    assert (
        value == "v=" + base64.b64encode(hmac.new(b"k", b"body", hashlib.sha512).digest()).decode()
    )
    assert verify(value, b"body", config) == ""
    assert verify(value, b"other", config) == "X-Sig: signature does not match"


async def test_a_slow_client_gets_408(tmp_path: Path) -> None:
    port = free_port()
    store = FlakyStore("memory://")
    await store.open()
    worker = worker_for(
        tmp_path,
        f"""
        pipelines:
          - name: hooks
            source:
              connector: webhook
              config: {{listen: "127.0.0.1:{port}", read_timeout: 200ms}}
        """,
        store,
    )
    run = asyncio.create_task(worker.run())
    try:
        await request("POST", f"http://127.0.0.1:{port}/nothing")  # waits for the listener

        async def slow() -> AsyncIterator[bytes]:
            yield b'{"a":'
            await asyncio.sleep(1.0)
            yield b"1}"

        status, _, _ = await request(
            "POST",
            f"http://127.0.0.1:{port}/events",
            data=slow(),
            headers={"Content-Type": "application/json"},
        )
        assert status == 408
        assert await store.read("hooks", 0, 10) == []
    finally:
        worker.stop()
        assert await run == 0
        await store.close()


async def test_tls_with_a_certificate_and_key(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        capture_output=True,
    )
    assert made.returncode == 0, made.stderr
    port = free_port()
    store = FlakyStore("memory://")
    await store.open()
    worker = worker_for(
        tmp_path,
        f"""
        pipelines:
          - name: hooks
            source:
              connector: webhook
              config: {{listen: "127.0.0.1:{port}", tls_cert: cert.pem, tls_key: key.pem}}
        """,
        store,
    )
    run = asyncio.create_task(worker.run())
    try:
        context = ssl.create_default_context(cafile=str(cert))
        status, _, _ = await request(
            "POST", f"https://127.0.0.1:{port}/events", json={"a": 1}, ssl=context
        )
        assert status == 202
        assert [r.data for r in await store.read("hooks", 0, 10)] == [{"a": 1}]
    finally:
        worker.stop()
        assert await run == 0
        await store.close()


async def test_one_address_with_and_without_tls_is_a_config_error_naming_the_owner(
    tmp_path: Path,
) -> None:
    """The shared listener (core/httplisten.py) binds TLS once per address; a route asking for
    plain HTTP (or other files) on a TLS address is refused, naming who serves it."""
    from aiohttp import web

    from meshconnect import ConfigError
    from meshconnect.httplisten import HttpListeners

    async def ok(request: web.Request) -> web.Response:
        return web.Response()

    listeners = HttpListeners()
    try:
        with pytest.raises(ConfigError, match="cannot load tls_cert/tls_key"):
            await listeners.add_route(
                "127.0.0.1:0", "POST", "/a", ok, "pipeline 'a' (webhook)", tls=("no", "no")
            )
        route = await listeners.add_route("127.0.0.1:0", "POST", "/a", ok, "pipeline 'a' (x)")
        with pytest.raises(ConfigError) as clash:
            await listeners.add_route(
                "127.0.0.1:0", "POST", "/b", ok, "pipeline 'b' (x)", tls=("c.pem", "k.pem")
            )
        assert str(clash.value) == (
            "listen 127.0.0.1:0 (pipeline 'b' (x)): served with plain HTTP by pipeline 'a' "
            "(x); every route on one address needs the same tls_cert and tls_key"
        )
        assert route.port
    finally:
        await listeners.close()


def test_validate_names_the_fields_and_never_prints_a_secret(tmp_path: Path) -> None:
    import sys

    path = tmp_path / "bad.yaml"
    path.write_text(
        """
pipelines:
  - name: hooks
    source:
      connector: webhook
      config:
        listen: 127.0.0.1:8080
        bearer_tokens: [topsecret-token, {token: other-secret, types: 5}]
        hmac: {secret: hmac-secret-value, algorithm: md5}
    sinks:
      - connector: http
        config:
          url: "http://x/{bad"
          oauth2: {token_url: "http://t", client_id: c, client_secret: oauth-secret, bogus: 1}
"""
    )
    out = subprocess.run(
        [sys.executable, "-m", "meshconnect", "validate", str(path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert f"{path}:9:" in text and "hmac.algorithm" in text
    assert "config.url" in text and "oauth2.bogus" in text
    for secret in ("topsecret-token", "other-secret", "hmac-secret-value", "oauth-secret"):
        assert secret not in text


async def test_a_paused_pipeline_answers_503_once_max_pending_events_wait() -> None:
    """Nothing polls the source (the pipeline is paused or behind): the first request waits
    for its append, the next one is refused at once with 503 and Retry-After; stopping the
    source answers the waiting one 503 too."""
    import logging

    from meshconnect import ConnectorContext
    from meshconnect.connectors.webhook.config import WebhookConfig
    from meshconnect.connectors.webhook.source import WebhookSource

    config = WebhookConfig(listen="127.0.0.1:0", max_pending=1, retry_after=7)
    source = WebhookSource(config, ConnectorContext("p", "webhook", logging.getLogger("t")))
    await source.start({})
    url = f"http://127.0.0.1:{source.route.port}/events"
    try:
        first = asyncio.create_task(request("POST", url, json={"n": 1}))
        while source.waiting == 0:
            await asyncio.sleep(0.01)
        status, headers, body = await request("POST", url, json={"n": 2})
        assert (status, headers["Retry-After"]) == (503, "7")
        assert b"more than 1 events wait" in body
        await source.stop()
        status, _, _ = await first
        assert status == 503
    finally:
        await source.context.http.listeners.close()


async def test_bodies_waiting_for_the_store_are_bounded_in_bytes() -> None:
    """Nothing polls the source: a first request larger than ``max_pending_bytes`` is taken
    (nothing waits), the next is refused with 503 by its Content-Length before its body is
    read; once the first is stored, requests are taken again."""
    import logging

    from meshconnect import ConnectorContext
    from meshconnect.connectors.webhook.config import WebhookConfig
    from meshconnect.connectors.webhook.source import WebhookSource

    config = WebhookConfig(listen="127.0.0.1:0", max_pending_bytes=1000, retry_after=3)
    source = WebhookSource(config, ConnectorContext("p", "webhook", logging.getLogger("t")))
    await source.start({})
    url = f"http://127.0.0.1:{source.route.port}/events"
    try:
        first = asyncio.create_task(request("POST", url, json={"pad": "x" * 2000}))
        while source.waiting == 0:
            await asyncio.sleep(0.01)
        status, headers, body = await request("POST", url, json={"n": 2})
        assert (status, headers["Retry-After"]) == (503, "3")
        assert b"more than 1000 bytes of events wait" in body
        batch = await source.poll()
        assert batch is not None and batch.ack is not None
        assert [r.data for r in batch.records] == [{"pad": "x" * 2000}]
        batch.ack(None)  # stored: the first sender is answered, its bytes no longer wait
        assert (await first)[0] == 202
        third = asyncio.create_task(request("POST", url, json={"n": 3}))
        while source.waiting == 0:
            await asyncio.sleep(0.01)
        assert source.waiting_bytes == len(b'{"n": 3}')
        await source.stop()
        assert (await third)[0] == 503
    finally:
        await source.context.http.listeners.close()


def test_the_plugin_module_imports_neither_aiohttp_nor_the_sdk() -> None:
    """`meshconnect --help` and `plugins list` load the plugin: aiohttp and cloudevents are
    imported only when a pipeline uses the connectors."""
    import sys

    code = (
        "import sys, meshconnect.connectors.webhook.plugin as p\n"
        "p.meshconnect_connectors()\n"
        "print(sorted(m for m in ('aiohttp', 'cloudevents') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_rate_limit_takes_a_model_or_a_shorthand() -> None:
    from pydantic import ValidationError

    from meshconnect.connectors.webhook.config import WebhookConfig

    def rate(value: Any) -> Any:
        limit = WebhookConfig(listen="127.0.0.1:0", rate_limit=value).rate_limit
        assert limit is not None
        return limit.requests_per_second, limit.burst

    assert rate(5) == (5.0, 0)
    assert rate("600/min") == (10.0, 0)
    assert rate({"requests_per_second": 3, "burst": 9}) == (3.0, 9)
    with pytest.raises(ValidationError, match="N/s, N/min or N/h"):
        rate("ten/s")


def test_the_idempotency_window_keeps_a_fixed_size_key_per_event() -> None:
    """The window holds up to a million events: it keeps a 16-byte digest of each source and
    id, not the strings, which CloudEvents does not bound (ids of a megabyte held a megabyte
    each for idempotency_window). Distinct pairs stay distinct, however they are split."""
    from meshconnect.connectors.webhook.source import _event_key
    from meshconnect.records import Record

    def key(source: str, id: str) -> bytes:
        return _event_key(Record(None, id=id, source=source))

    big = key("/orders", "x" * 1_000_000)
    assert len(big) == 16 and big == key("/orders", "x" * 1_000_000)
    assert big != key("/orders", "x" * 999_999)
    assert key("ab", "c") != key("a", "bc")
    assert key("/a", "\udc80") != key("/a", "\udc81")  # lone surrogates are ids too


hook_proxied = hook_fixture(
    """
        allow_ips: ["10.0.0.0/8"]
        trust_forwarded: true
    """
)
hook_two_proxies = hook_fixture(
    """
        allow_ips: ["10.0.0.0/8"]
        trust_forwarded: 2
    """
)


async def _post_from(hook: Hook, event_id: str, forwarded: list[str]) -> int:
    body = json.dumps(ce(id=event_id)).encode()
    headers = [("Content-Type", "application/cloudevents+json")]
    headers += [("X-Forwarded-For", line) for line in forwarded]
    status, _, _ = await request("POST", hook.url, data=body, headers=headers)
    return status


async def test_a_client_cannot_claim_an_allowed_address_through_an_appending_proxy(
    hook_proxied: Hook,
) -> None:
    # nginx ($proxy_add_x_forwarded_for), HAProxy and cloud load balancers append the address
    # they got the request from to what the client sent: the first entry is the client's word.
    hook = hook_proxied
    assert await _post_from(hook, "spoofed", ["10.1.2.3, 203.0.113.9"]) == 403
    assert await _post_from(hook, "two-lines", ["10.1.2.3", "203.0.113.9"]) == 403
    assert await _post_from(hook, "proxied", ["203.0.113.9, 10.1.2.3"]) == 202
    assert await _post_from(hook, "overwritten", ["10.9.9.9"]) == 202
    # no header: the connection's address (127.0.0.1, not in 10/8)
    assert await _post_from(hook, "direct", []) == 403
    assert [e["id"] for e in await hook.stored()] == ["proxied", "overwritten"]


async def test_two_trusted_proxies_take_the_second_entry_from_the_right(
    hook_two_proxies: Hook,
) -> None:
    hook = hook_two_proxies
    # client -> load balancer (appends the client) -> nginx (appends the load balancer)
    assert await _post_from(hook, "ok", ["192.0.2.1, 10.1.2.3, 172.16.0.2"]) == 202
    assert await _post_from(hook, "spoofed", ["10.1.2.3, 203.0.113.9, 172.16.0.2"]) == 403
    assert await _post_from(hook, "short", ["10.1.2.3"]) == 403  # fewer than 2: the socket's
    assert [e["id"] for e in await hook.stored()] == ["ok"]


async def test_a_503_after_ack_timeout_while_paused_is_not_stored_later(tmp_path: Path) -> None:
    """A paused pipeline (or a store that does not keep up) leaves requests queued; the one
    answered 503 "not stored" after ``ack_timeout`` is withdrawn, not stored at the resume: its
    sender retries it, and a plain body's retry has a new id, so it was stored twice."""
    port = free_port()
    store = FlakyStore("memory://")
    await store.open()
    worker = worker_for(
        tmp_path,
        f"""
        pipelines:
          - name: hooks
            source:
              connector: webhook
              config: {{listen: "127.0.0.1:{port}", path: /events, ack_timeout: 0.3}}
        """,
        store,
    )
    run = asyncio.create_task(worker.run())
    url = f"http://127.0.0.1:{port}/events"
    plain = {"Content-Type": "application/json"}
    try:
        assert (await request("POST", url, data=b'{"n": 0}', headers=plain))[0] == 202
        worker.pipeline_states["hooks"].pause()
        # the poll in hand when the pause came may still take a request: post until one waits
        accepted = [{"n": 0}]
        for n in range(1, 20):
            status, headers, body = await request(
                "POST", url, data=json.dumps({"n": n}).encode(), headers=plain
            )
            if status != 202:
                break
            accepted.append({"n": n})
        assert status == 503 and headers["Retry-After"] == "1"
        assert b"not stored: no durable append within 0.3s" in body
        worker.pipeline_states["hooks"].resume()
        # the sender's retry, stored now; the request it retries is not stored besides
        retry = json.dumps({"n": n}).encode()
        assert (await request("POST", url, data=retry, headers=plain))[0] == 202
        stored = [r.data for r in await store.read("hooks", 0, 100)]
        assert stored == [*accepted, {"n": n}]
    finally:
        worker.stop()
        assert await run == 0
        await store.close()
