"""The chatgpt source in a worker, with the real openai AsyncOpenAI against a local OpenAI API
(tests/fixtures/slackgpt/openai_api.py): chat and parse end to end, invalid structured output
answered 422 with nothing stored, rate limits waited out, a bad key that stops the connector
without being shown."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import textwrap
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fixtures.slackgpt.openai_api import KEY, FakeOpenAI

from meshconnect.config.loader import load_pipeline_files
from meshconnect.mesh.memory import MemoryStore
from meshconnect.testing import test_registry
from meshconnect.worker import Worker

PAYMENT = {
    "type": "object",
    "properties": {
        "amount": {"type": "number"},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "payer": {"type": "string"},
    },
    "required": ["amount", "currency", "payer"],
    "additionalProperties": False,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAI]:
    server = await FakeOpenAI().start()
    yield server
    await server.stop()


class Running:
    def __init__(
        self, worker: Worker, task: asyncio.Task[int], store: MemoryStore, url: str
    ) -> None:
        self.worker = worker
        self.task = task
        self.store = store
        self.url = url

    async def post(
        self, body: Any, json_body: bool = False, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        for _ in range(200):
            try:
                async with aiohttp.ClientSession() as session:
                    kwargs: dict[str, Any] = {"json": body} if json_body else {"data": body}
                    kwargs["headers"] = headers or {}
                    async with session.post(self.url, **kwargs) as response:
                        text = await response.text()
                        try:
                            return response.status, json.loads(text)
                        except ValueError:
                            return response.status, text
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.05)
        raise AssertionError(f"nothing listens at {self.url}")

    async def stored(self) -> list[Any]:
        if "gpt" not in {t.name for t in await self.store.topics()}:
            return []
        return await self.store.read("gpt", 0, 1000)


Start = Callable[..., "asyncio.Future[Running]"]


@pytest.fixture
async def start(tmp_path: Path, openai: FakeOpenAI) -> AsyncIterator[Any]:
    started: list[tuple[Worker, asyncio.Task[int], MemoryStore]] = []

    async def go(config: str, key: str = KEY) -> Running:
        port = free_port()
        path = tmp_path / "gpt.yaml"
        path.write_text(
            textwrap.dedent(
                f"""
                pipelines:
                  - name: gpt
                    source:
                      connector: chatgpt
                      config:
                        listen: "127.0.0.1:{port}"
                        path: /ask
                        base_url: {openai.base_url}
                        api_key: {key}
                        max_retries: 3
                """
            )
            + textwrap.indent(textwrap.dedent(config).strip(), " " * 8)
            + "\n"
        )
        store = MemoryStore("memory://")
        await store.open()
        worker = Worker(load_pipeline_files([str(path)], test_registry()), store)
        task = asyncio.create_task(worker.run())
        started.append((worker, task, store))
        return Running(worker, task, store, f"http://127.0.0.1:{port}/ask")

    yield go
    for worker, task, store in started:
        worker.stop()
        await task
        await store.close()


async def test_chat_mode_stores_prompt_answer_model_and_usage(
    start: Any, openai: FakeOpenAI
) -> None:
    running = await start("mode: chat\nmodel: gpt-4o-mini\nsystem: Be brief.")
    status, event = await running.post("Is the mesh up?")
    assert status == 200
    [record] = await running.stored()
    assert event["id"] == record.id
    assert record.extensions["completionid"] == "chatcmpl-00000001"
    assert record.type == "com.openai.chat.completion"
    assert record.data == {
        "prompt": "Is the mesh up?",
        "system": "Be brief.",
        "answer": "echo: Is the mesh up?",
        "model": "gpt-4o-mini-2024-07-18",
        "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
    }
    assert openai.bodies[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Is the mesh up?"},
    ]
    metrics = running.worker.metrics.render()
    for line in [
        'meshconnect_openai_prompt_tokens_total{connector="chatgpt",pipeline="gpt"} 11.0',
        'meshconnect_openai_completion_tokens_total{connector="chatgpt",pipeline="gpt"} 5.0',
        'meshconnect_openai_requests_total{connector="chatgpt",pipeline="gpt"} 1.0',
    ]:
        assert line in metrics.splitlines(), metrics


async def test_a_json_body_is_read_strictly(start: Any, openai: FakeOpenAI) -> None:
    """A misspelt or ill-typed ``system`` was dropped without a word: the configured system
    message was used instead of the caller's."""
    running = await start("mode: chat\nsystem: Be brief.")
    for body, why in [
        ({"prompt": "hi", "sytem": "Be verbose."}, "unknown key(s) 'sytem'"),
        ({"prompt": "hi", "system": ["Be verbose."]}, '"system" is a string'),
        ({"prompt": 5}, '"prompt" string'),
    ]:
        status, text = await running.post(body, json_body=True)
        assert (status, why in text) == (400, True), (body, text)
    assert openai.requests == 0
    status, event = await running.post({"prompt": "hi", "system": None}, json_body=True)
    assert status == 200 and event["data"]["system"] is None
    assert openai.bodies[-1]["messages"] == [{"role": "user", "content": "hi"}]


async def test_parse_mode_stores_the_validated_structured_output_exactly(
    start: Any, openai: FakeOpenAI
) -> None:
    openai.answer = lambda body: '{"amount": 12.50, "currency": "EUR", "payer": "Ada"}'
    running = await start(f"mode: parse\ntype: com.example.payment\nschema: {json.dumps(PAYMENT)}")
    status, _ = await running.post({"prompt": "Ada paid 12.50 euros"}, json_body=True)
    assert status == 200
    [record] = await running.stored()
    assert record.type == "com.example.payment"
    assert record.data == {"amount": Decimal("12.50"), "currency": "EUR", "payer": "Ada"}
    assert str(record.data["amount"]) == "12.50"  # the model's digits, not a float's
    sent = openai.bodies[0]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == PAYMENT


async def test_parse_mode_without_a_schema_takes_the_whole_event(
    start: Any, openai: FakeOpenAI
) -> None:
    openai.answer = lambda body: json.dumps(
        {"type": "com.example.ticket.opened", "subject": "T-7", "data": {"title": "VPN down"}}
    )
    running = await start("mode: parse")
    status, _ = await running.post("Ticket T-7: the VPN is down")
    assert status == 200
    [record] = await running.stored()
    assert (record.type, record.subject, record.data) == (
        "com.example.ticket.opened",
        "T-7",
        {"title": "VPN down"},
    )


async def test_bearer_tokens_keep_strangers_from_calling_the_model(
    start: Any, openai: FakeOpenAI
) -> None:
    running = await start("bearer_tokens: [tok-old, tok-new]")
    for headers in [
        {},
        {"Authorization": "Bearer tok-wrong"},
        {"Authorization": "Basic tok-new"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer tok-newé"},
    ]:
        status, _ = await running.post("spend my credits", headers=headers)
        assert status == 401, headers
    assert openai.requests == 0 and await running.stored() == []
    for token in ["tok-old", "tok-new"]:
        status, _ = await running.post("hi", headers={"Authorization": f"Bearer {token}"})
        assert status == 200
    assert openai.requests == 2


async def test_events_get_their_own_ids_whatever_ids_the_server_gives(
    start: Any, openai: FakeOpenAI
) -> None:
    openai.completion_id = "chatcmpl-123"  # one id for every completion
    running = await start("mode: chat")
    assert (await running.post("first"))[0] == 200
    assert (await running.post("second"))[0] == 200
    openai.completion_id = "chatcmpl-\x00"  # no valid attribute value: left out
    assert (await running.post("third"))[0] == 200
    records = await running.stored()
    assert [r.data["prompt"] for r in records] == ["first", "second", "third"]
    assert len({r.id for r in records}) == 3
    assert [r.extensions.get("completionid") for r in records] == ["chatcmpl-123"] * 2 + [None]


@pytest.mark.parametrize(
    ("event", "error"),
    [
        ({"type": "com.example\nx", "subject": "T-1"}, "answer.type: must not contain U+000A"),
        ({"type": "com.example", "subject": "T\u0000"}, "answer.subject: must not contain U+0000"),
    ],
    ids=["type", "subject"],
)
async def test_a_model_made_event_that_is_no_valid_cloudevent_is_a_422(
    start: Any, openai: FakeOpenAI, event: dict[str, Any], error: str
) -> None:
    openai.answer = lambda body: json.dumps({**event, "data": {}})
    running = await start("mode: parse")
    status, body = await running.post("Ticket T-1")
    assert status == 422 and body["errors"][0].startswith(error), body
    assert await running.stored() == []
    openai.answer = lambda body: json.dumps({"type": "com.example", "subject": "", "data": {}})
    assert (await running.post("Ticket without a subject"))[0] == 200
    [record] = await running.stored()
    assert record.subject is None  # an empty subject is none


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (
            '{"amount": "twelve", "currency": "EUR", "payer": "Ada"}',
            "answer.amount: 'twelve' is not of type 'number'",
        ),
        (
            '{"amount": 12, "currency": "euro", "payer": "Ada"}',
            "answer.currency: 'euro' does not match '^[A-Z]{3}$'",
        ),
        ('{"amount": 12, "currency": "EUR"}', "answer: 'payer' is a required property"),
        ("Sure! Here is the JSON: {", "answer: "),
        ('{"amount": 1, "currency": "EUR", "payer": "' + "x" * 5000 + '"}', "answer: 5"),
    ],
    ids=["type", "pattern", "required", "not-json", "oversized"],
)
async def test_invalid_structured_output_is_a_422_and_nothing_is_stored(
    start: Any, openai: FakeOpenAI, answer: str, error: str
) -> None:
    openai.answer = lambda body: answer
    running = await start(f"mode: parse\nmax_answer_bytes: 4KB\nschema: {json.dumps(PAYMENT)}")
    status, body = await running.post("Ada paid twelve")
    assert status == 422
    assert any(e.startswith(error) for e in body["errors"]), body["errors"]
    assert await running.stored() == []
    # the endpoint keeps working
    openai.answer = lambda body: '{"amount": 1, "currency": "EUR", "payer": "Ada"}'
    assert (await running.post("Ada paid one"))[0] == 200


@pytest.mark.parametrize("mode", ["chat", "parse"])
async def test_an_answer_cut_at_the_token_limit_is_a_422_and_nothing_is_stored(
    start: Any, openai: FakeOpenAI, mode: str
) -> None:
    """``finish_reason: length``: the model stopped at ``max_tokens``; the text so far (even
    where it is valid JSON) is no answer to store."""
    openai.finish_reason = "length"
    openai.answer = lambda body: '{"amount": 1, "currency": "EUR", "payer": "Ada"}'
    running = await start(f"mode: {mode}\nmax_tokens: 20")
    status, body = await running.post("Ada paid one euro")
    assert status == 422
    assert body["errors"] == [
        "answer: cut off at the token limit (finish_reason length, max_tokens 20): "
        "raise max_tokens or ask for a shorter answer"
    ]
    assert await running.stored() == []


async def test_rate_limits_are_waited_out_and_a_down_model_is_a_503(
    start: Any, openai: FakeOpenAI
) -> None:
    running = await start("mode: chat")
    openai.rate_limit_next = 2
    status, event = await running.post("hello")
    assert status == 200 and event["data"]["answer"] == "echo: hello"
    assert openai.received["hello"] == 3  # two 429s, then the answer
    openai.error_chance = 1.0
    status, text = await running.post("still there?")
    assert status == 503 and "InternalServerError (HTTP 500)" in text
    assert openai.received["still there?"] == 4  # max_retries 3
    assert [r.data["prompt"] for r in await running.stored()] == ["hello"]


async def test_an_html_answer_is_a_503_with_retry_after(start: Any, openai: FakeOpenAI) -> None:
    running = await start("mode: chat")
    for kind in ("application/json", "text/html"):
        openai.html_next, openai.html_type = 10, kind
        status, text = await running.post("anyone?")
        assert status == 503 and "an unreadable answer" in text, (kind, text)
    assert await running.stored() == []


async def test_a_rejected_key_stops_the_connector_and_is_never_shown(
    start: Any, openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "sk-wrong-key-0000-must-not-appear"
    with caplog.at_level(logging.DEBUG):
        running = await start("mode: chat", key=wrong)
        status, text = await running.post("hello")
        assert status == 502 and "check api_key" in text
        status = running.worker.statuses["source gpt/chatgpt"]
        for _ in range(600):  # the next poll raises the ConfigError
            if status.state == "FAILED":
                break
            await asyncio.sleep(0.05)
        assert status.state == "FAILED" and "check api_key" in status.reason
        running.worker.stop()
        assert await running.task == 1  # failed for good: the run's exit code says so
    assert wrong not in caplog.text and wrong not in text
    assert "AuthenticationError (HTTP 401): invalid_api_key" in caplog.text
    assert await running.stored() == []


def test_an_error_text_echoing_the_key_is_redacted() -> None:
    """A server (or proxy) that echoes the key in its error text must not put it in a 502
    body, a log line or a dead letter: neither the configured key nor key-like text (OpenAI
    writes "sk-abc***wxyz") survives (found by the slack/chatgpt trial)."""
    from meshconnect.connectors.chatgpt.client import _describe

    class Rejected(Exception):
        status_code = 401
        body = {
            "error": {
                "message": "Incorrect API key provided: sk-WRONG-key-zzzz9999yyyy. Also "
                "sk-proj-***4242 and the raw zzzzSECRET.",
                "code": "invalid_api_key",
            }
        }

    text = _describe(Rejected(), "zzzzSECRET")
    assert "invalid_api_key" in text and "HTTP 401" in text
    for leak in ("sk-WRONG", "zzzz9999", "4242", "zzzzSECRET"):
        assert leak not in text, text


async def test_model_calls_at_once_are_bounded_by_concurrency(
    start: Any, openai: FakeOpenAI
) -> None:
    # A burst of requests was as many parallel model calls (up to the listener's 512
    # connections): the provider's rate limit and bill, whatever the user configured.
    openai.latency = (0.05, 0.1)
    running = await start("mode: chat\nconcurrency: 3")
    await running.post("warm-up")  # the listener is up
    answers = await asyncio.gather(*(running.post(f"prompt {i}") for i in range(24)))
    assert [status for status, _ in answers] == [200] * 24
    assert openai.max_in_flight == 3
    assert len(await running.stored()) == 25
