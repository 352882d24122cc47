"""Hypothesis fuzz of the webhook's request handling: whatever the headers, content type and
body, the receiver answers (never crashes), never answers 5xx except the documented 503, and
stores nothing that is not a valid CloudEvent; what it stores came with a 2xx.

One source runs for the whole module on a loop of its own (a thread), acked by a stand-in
for the worker that keeps what it was given: thousands of requests take seconds."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshconnect import ConnectorContext, Record
from meshconnect.connectors.webhook.config import WebhookConfig
from meshconnect.connectors.webhook.source import WebhookSource
from meshconnect.eventrules import attribute_problems

TOKEN = "fuzz-token"
ALLOWED = {202, 400, 401, 403, 408, 413, 415, 429, 503}


class Harness:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stored: list[Record] = []
        self.fail_next = False
        self.run(self._start())

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    async def _start(self) -> None:
        config = WebhookConfig(
            listen="127.0.0.1:0",
            bearer_tokens=[TOKEN],  # type: ignore[list-item]
            max_body_bytes=4096,
            max_batch=5,
            ack_timeout=5.0,
            type="com.example.{query.kind}",
            subject="{header.X-Subject}",
        )
        context = ConnectorContext("fuzz", "webhook", logging.getLogger("fuzz"))
        self.source = WebhookSource(config, context)
        await self.source.start({})
        self.url = f"http://127.0.0.1:{self.source.route.port}/events"
        self.session = aiohttp.ClientSession()
        self.consumer = asyncio.ensure_future(self._consume())

    async def _consume(self) -> None:
        """The worker's part: poll, 'append' (keep) and ack; a failed append now and then."""
        while True:
            batch = await self.source.poll()
            if batch.ack is None:
                continue
            if self.fail_next and batch.records:
                self.fail_next = False
                batch.ack(RuntimeError("simulated append failure"))
                continue
            self.stored.extend(batch.records)
            batch.ack(None)

    async def post(self, headers: dict[str, str], body: bytes, query: str) -> tuple[int, bytes]:
        async with self.session.post(self.url + query, data=body, headers=headers) as response:
            return response.status, await response.read()

    def close(self) -> None:
        async def _close() -> None:
            self.consumer.cancel()
            await self.source.stop()
            await self.session.close()
            await self.source.context.http.listeners.close()

        self.run(_close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
attribute_values = st.one_of(
    header_text,
    st.sampled_from(
        [
            "1.0",
            "0.3",
            "",
            "/orders",
            "com.example.x",
            "2026-01-01T00:00:00Z",
            "caf%C3%A9",
            "%FF",
            "%",
            "application/json",
            "text/plain; charset=latin-1",
        ]
    ),
)
valid_ce_headers = st.fixed_dictionaries(
    {
        "ce-specversion": st.just("1.0"),
        "ce-id": st.uuids().map(str),
        "ce-source": st.sampled_from(["/s", "urn:x"]),
        "ce-type": st.just("com.example.order"),
    },
    optional={"ce-subject": attribute_values, "ce-partitionkey": attribute_values},
)
ce_headers = valid_ce_headers | st.dictionaries(
    st.sampled_from(
        [
            "ce-specversion",
            "ce-id",
            "ce-source",
            "ce-type",
            "ce-subject",
            "ce-time",
            "ce-dataschema",
            "ce-partitionkey",
            "ce-Bad_Ext",
            "ce-data",
        ]
    ),
    attribute_values,
    max_size=8,
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
            "application/x-www-form-urlencoded",
            "text/plain",
            "text/plain; charset=bogus",
            "application/octet-stream",
            "application/cloudevents+xml",
            "image/png",
            "",
            "application/json; charset=utf-8",
            "text/csv; charset=latin-1",
            "application/x+json",
        ]
    ),
    header_text,
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=10),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
)
members = st.dictionaries(
    st.sampled_from(
        [
            "specversion",
            "id",
            "source",
            "type",
            "subject",
            "time",
            "data",
            "data_base64",
            "datacontenttype",
            "dataschema",
            "ext",
            "Bad",
            "x" * 30,
        ]
    ),
    st.one_of(json_scalars, st.sampled_from(["1.0", "/s", "t", "2026-01-01T00:00:00Z", "aGk="])),
    max_size=10,
)
events = st.one_of(
    members,
    st.fixed_dictionaries(
        {
            "specversion": st.just("1.0"),
            "id": st.text(max_size=5),
            "source": st.sampled_from(["/s", "", "a b", "http://x/y"]),
            "type": st.sampled_from(["t", "", "com.example.order"]),
        },
        optional={"data": json_scalars, "time": st.text(max_size=25)},
    ),
)
valid_events = st.fixed_dictionaries(
    {
        "specversion": st.just("1.0"),
        "id": st.uuids().map(str),
        "source": st.just("/s"),
        "type": st.just("com.example.order"),
    },
    optional={"data": json_scalars, "subject": st.text(min_size=1, max_size=5)},
)
bodies = st.one_of(
    valid_events.map(lambda e: json.dumps(e, default=str).encode()),
    st.lists(valid_events, max_size=6).map(lambda e: json.dumps(e, default=str).encode()),
    st.binary(max_size=300),
    events.map(lambda e: json.dumps(e, default=str).encode()),
    st.lists(events, max_size=7).map(lambda e: json.dumps(e, default=str).encode()),
    st.sampled_from(
        [
            b"",
            b"{",
            b"[]",
            b"null",
            b'{"a":1,"a":2}',
            b"[" * 200,
            b"a=1&b=%ZZ",
            b"\xff\xfe",
            b'{"n": 1e99999}',
            b"x" * 5000,
        ]
    ),
)


FUZZ = {
    "ce": ce_headers,
    "content_type": content_types,
    "body": bodies,
    "auth": st.sampled_from([f"Bearer {TOKEN}", f"Bearer {TOKEN}", "Bearer wrong", "", "Basic x"]),
    "subject": st.one_of(st.none(), header_text),
    "query": st.sampled_from(["", "?kind=order", "?kind=", "?kind=%00", "?kind=a%20b"]),
    "fail": st.integers(0, 30),
}


def check_one_request(
    harness: Harness,
    ce: dict[str, str],
    content_type: str,
    body: bytes,
    auth: str,
    subject: str | None,
    query: str,
    fail: int,
) -> None:
    headers = dict(ce)
    if content_type:
        headers["Content-Type"] = content_type
    if auth:
        headers["Authorization"] = auth
    if subject is not None:
        headers["X-Subject"] = subject
    harness.fail_next = fail == 0  # about one request in 30 meets a failed append: 503
    before = len(harness.stored)
    status, answer = harness.run(harness.post(headers, body, query))
    assert status in ALLOWED, (status, answer)
    new = harness.stored[before:]
    if status != 202:
        assert new == [], (status, answer)
    for record in new:
        assert attribute_problems(record) == {}, record
        Record.from_dict(record.to_dict())  # the stored event reads back as a CloudEvent


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(**FUZZ)
def test_the_receiver_never_crashes_never_5xx_and_never_stores_an_invalid_event(
    harness: Harness, **request: Any
) -> None:
    check_one_request(harness, **request)


def test_the_fuzz_stores_valid_events_too() -> None:
    """The fuzz is not vacuous: valid events get through (a fuzz of its own, so that the test
    holds whatever ran before it on this process)."""
    own = Harness()
    try:
        fuzz = settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))(
            given(**FUZZ)(lambda **request: check_one_request(own, **request))
        )
        fuzz()
        assert len(own.stored) > 10  # ~5 % of the requests are valid events
    finally:
        own.close()
