"""The slack source (Events API receiver) in a worker: Slack's documented signature vector, and
signed requests sent by a client the way Slack sends them (valid, wrong secret, stale, replayed,
retried), the url_verification challenge, and the 200 only once the event is in the store."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meshconnect.config.loader import load_pipeline_files
from meshconnect.connectors.slack.source import signature, verify_request
from meshconnect.errors import StoreError
from meshconnect.mesh.memory import MemoryStore
from meshconnect.testing import test_registry
from meshconnect.worker import Worker

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def test_slacks_documented_signature_example() -> None:
    """The example of https://api.slack.com/authentication/verifying-requests-from-slack."""
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
        b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
        b"command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
        b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
        b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert signature(SECRET.encode(), "1531420618", body) == expected
    assert verify_request(SECRET.encode(), "1531420618", expected, body, now=1531420618) is None
    assert verify_request(SECRET.encode(), "1531420618", expected, body, now=1531420919) == (
        "stale request: timestamp 1531420618 is 301s from now"
    )
    assert verify_request(b"other", "1531420618", expected, body, now=1531420618) == (
        "signature mismatch"
    )


def sign(body: bytes, timestamp: int, secret: str = SECRET) -> dict[str, str]:
    """Headers as Slack sends them: computed here by the documented algorithm, not the
    source's own function."""
    base = f"v0:{timestamp}:".encode() + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/json",
    }


def callback(event_id: str, text: str = "hello", kind: str = "message") -> bytes:
    return json.dumps(
        {
            "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
            "team_id": "T0MESH",
            "api_app_id": "A0MESH",
            "event": {
                "type": kind,
                "channel": "C0ALERTS",
                "user": "U0ADA",
                "text": text,
                "ts": "1700000000.000100",
                "event_ts": "1700000000.000100",
                "channel_type": "channel",
            },
            "type": "event_callback",
            "event_id": event_id,
            "event_time": 1700000000,
            "authorizations": [{"team_id": "T0MESH", "user_id": "U0BOT", "is_bot": True}],
        }
    ).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Running:
    def __init__(self, store: MemoryStore, url: str) -> None:
        self.store = store
        self.url = url

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        for _ in range(200):  # until the source listens
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.post(self.url, data=body, headers=headers) as response,
                ):
                    return response.status, await response.text()
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.05)
        raise AssertionError(f"nothing listens at {self.url}")

    async def stored(self) -> list[Any]:
        if "slack" not in {t.name for t in await self.store.topics()}:
            return []
        return await self.store.read("slack", 0, 1000)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    port = free_port()
    path = tmp_path / "events.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            pipelines:
              - name: slack
                source:
                  connector: slack
                  config:
                    listen: "127.0.0.1:{port}"
                    path: /slack/events
                    signing_secret: {SECRET}
            """
        )
    )
    store = MemoryStore("memory://")
    await store.open()
    worker = Worker(load_pipeline_files([str(path)], test_registry()), store)
    task = asyncio.create_task(worker.run())
    yield Running(store, f"http://127.0.0.1:{port}/slack/events")
    worker.stop()
    assert await task == 0
    await store.close()


async def test_a_signed_event_is_stored_before_the_200(running: Running) -> None:
    body = callback("Ev01")
    status, _ = await running.post(body, sign(body, int(time.time())))
    assert status == 200
    [record] = await running.stored()  # in the store as soon as the answer came
    assert (record.id, record.type, record.source, record.subject) == (
        "Ev01",
        "com.slack.message",
        "slack://T0MESH/A0MESH",
        "C0ALERTS",
    )
    assert record.time == "2023-11-14T22:13:20Z"
    assert record.data["event"]["text"] == "hello"
    assert "token" not in record.data  # the deprecated verification token is not kept


async def test_the_url_verification_challenge_is_answered(running: Running) -> None:
    body = json.dumps(
        {
            "token": "x",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    ).encode()
    status, text = await running.post(body, sign(body, int(time.time())))
    assert status == 200
    assert json.loads(text) == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    assert await running.stored() == []


async def test_bad_signatures_are_refused_and_nothing_is_stored(running: Running) -> None:
    body = callback("Ev02")
    now = int(time.time())
    wrong = sign(body, now, secret="not-the-signing-secret")
    assert (await running.post(body, wrong))[0] == 401
    stale = sign(body, now - 301)  # genuine, but older than 5 minutes
    status, reason = await running.post(body, stale)
    assert status == 401 and reason.startswith(f"stale request: timestamp {now - 301} is ")
    tampered = sign(body, now)
    assert (await running.post(body.replace(b"hello", b"hellO"), tampered))[0] == 401
    unsigned = {"Content-Type": "application/json"}
    assert (await running.post(body, unsigned))[0] == 401
    # Malformed headers are refused like any bad signature, never a 5xx.
    odd = sign(body, now)
    odd["X-Slack-Signature"] += "é"
    assert await running.post(body, odd) == (401, "signature mismatch")
    for stamp in [f"{now}.5", "-1", "1" * 400, "nan", f"+{now}", "\uff11" * 10]:
        headers = {**sign(body, now), "X-Slack-Request-Timestamp": stamp}
        status, reason = await running.post(body, headers)
        assert status == 401 and ("not a number" in reason or "stale" in reason), (stamp, reason)
    assert await running.stored() == []


async def test_retries_and_replays_of_an_event_are_stored_once(running: Running) -> None:
    body = callback("Ev03")
    headers = sign(body, int(time.time()))
    assert (await running.post(body, headers))[0] == 200
    # Slack's retry (a fresh signature, X-Slack-Retry-Num) and a replay of the very request.
    retry = {
        **sign(body, int(time.time())),
        "X-Slack-Retry-Num": "1",
        "X-Slack-Retry-Reason": "http_timeout",
    }
    assert await running.post(body, retry) == (200, "duplicate: already stored")
    assert await running.post(body, headers) == (200, "duplicate: already stored")
    other = callback("Ev04", "second")
    assert (await running.post(other, sign(other, int(time.time()))))[0] == 200
    assert [r.id for r in await running.stored()] == ["Ev03", "Ev04"]


class FlakyStore(MemoryStore):
    """Fails every append while ``broken`` is set."""

    broken = False

    async def append(self, records: Any, positions: Any = None) -> list[int]:
        if self.broken:
            raise StoreError("simulated: the store is down")
        return await super().append(records, positions)


async def test_an_event_not_stored_in_time_is_a_503_and_slacks_retry_stores_it_once(
    tmp_path: Path,
) -> None:
    port = free_port()
    path = tmp_path / "events.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            pipelines:
              - name: slack
                source:
                  connector: slack
                  config:
                    listen: "127.0.0.1:{port}"
                    signing_secret: {SECRET}
                    ack_timeout: 500ms
                    event_types: [app_mention]
                    max_body_bytes: 2KB
            """
        )
    )
    store = FlakyStore("memory://")
    await store.open()
    worker = Worker(load_pipeline_files([str(path)], test_registry()), store, restart_backoff=0.01)
    task = asyncio.create_task(worker.run())
    running = Running(store, f"http://127.0.0.1:{port}/slack/events")
    try:
        ignored = callback("Ev10", kind="message")
        assert await running.post(ignored, sign(ignored, int(time.time()))) == (
            200,
            "ignored: event type not configured",
        )
        big = callback("Ev11", text="x" * 3000, kind="app_mention")
        assert (await running.post(big, sign(big, int(time.time()))))[0] == 413

        store.broken = True
        body = callback("Ev12", kind="app_mention")
        status, _ = await running.post(body, sign(body, int(time.time())))
        assert status == 503
        assert await running.stored() == []
        store.broken = False
        for retry in range(1, 100):  # Slack retries until it gets a 2xx
            headers = {**sign(body, int(time.time())), "X-Slack-Retry-Num": str(retry)}
            status, _ = await running.post(body, headers)
            if status == 200:
                break
            await asyncio.sleep(0.1)
        assert status == 200
        assert [r.id for r in await running.stored()] == ["Ev12"]
    finally:
        worker.stop()
        await task
        await store.close()


async def test_odd_envelopes_give_valid_cloudevents_never_a_5xx(running: Running) -> None:
    from meshconnect.eventrules import attribute_problems

    cases: list[tuple[str, dict[str, Any]]] = [
        ("Ev11", {"team_id": "T 0/../x?y#z"}),
        ("Ev12", {"event": {"type": "mess\x00age", "channel": "C0ALERTS"}}),
        ("Ev13", {"team_id": None}),
        ("Ev14", {"event_time": 1e20}),
        ("Ev15", {"event_time": 1.5e9}),
        ("Ev16", {"event_time": -1e300}),
    ]
    for event_id, change in cases:
        envelope = json.loads(callback(event_id))
        envelope.update(change)
        body = json.dumps(envelope).encode()
        status, text = await running.post(body, sign(body, int(time.time())))
        assert status == 200, (event_id, text)
    stored = {record.id: record for record in await running.stored()}
    assert sorted(stored) == [event_id for event_id, _ in cases]
    for record in stored.values():
        assert attribute_problems(record) == {}, record.id
    assert stored["Ev11"].source == "slack://T%200%2F..%2Fx%3Fy%23z/A0MESH"
    assert stored["Ev12"].type == "com.slack.mess\\u0000age"
    assert stored["Ev13"].source == "slack:///A0MESH"
    assert stored["Ev14"].time is None and stored["Ev16"].time is None
    assert stored["Ev15"].time == "2017-07-14T02:40:00Z"
    # an id no CloudEvent may carry is refused, not stored
    body = callback("Ev\x0017")
    status, text = await running.post(body, sign(body, int(time.time())))
    assert status == 400 and "id" in text


async def test_app_rate_limited_is_answered_and_warned_about(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """Slack stops sending an app's events for a while past 30,000 an hour and says so once
    with ``app_rate_limited``: those events are lost, which only this notice tells."""
    body = json.dumps(
        {
            "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
            "type": "app_rate_limited",
            "team_id": "T0MESH",
            "minute_rate_limited": 1518467820,
            "api_app_id": "A0MESH",
        }
    ).encode()
    with caplog.at_level(logging.WARNING):
        status, text = await running.post(body, sign(body, int(time.time())))
    assert (status, text) == (200, "ignored: app_rate_limited")
    assert "app_rate_limited" in caplog.text and "T0MESH" in caplog.text
    assert await running.stored() == []


async def test_a_hand_written_position_is_checked_and_a_bad_stored_one_is_a_config_error() -> None:
    """``offsets reset --to '{JSON}'`` asks the source: a ``seen`` that is not a list of event
    ids is refused there; one in the store anyway fails the start with a ConfigError naming
    the reset, not a TypeError (a number) or a window of single characters (a string)."""
    from meshconnect import ConfigError, ConnectorContext
    from meshconnect.connectors.slack.config import SlackSourceConfig
    from meshconnect.connectors.slack.source import SlackEventsSource

    source = SlackEventsSource(
        SlackSourceConfig(listen="127.0.0.1:0", signing_secret=SECRET),
        ConnectorContext("p", "slack", logging.getLogger("t")),
    )
    assert source.position_problem("events", {"seen": ["Ev01", "Ev02"]}) is None
    assert "not a partition this source reads" in (
        source.position_problem("event", {"seen": []}) or ""
    )
    assert "unknown field 'ids'" in (source.position_problem("events", {"ids": []}) or "")
    for seen in (5, "Ev01", [1], [""]):
        assert "seen must be a list" in (source.position_problem("events", {"seen": seen}) or "")
        with pytest.raises(ConfigError, match=r"meshconnect offsets reset"):
            await source.start({"events": {"seen": seen}})
