"""Regressions of the second new-user hunt of the webhook source and the http sink, against
the CloudEvents HTTP binding: each test is a fault that was found (what it did then is in
its docstring) and the behaviour now."""

from __future__ import annotations

import json
from typing import Any

from multidict import CIMultiDict
from test_webhook_source import Hook, hook_fixture
from webhook_support import request

hook = hook_fixture()

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
