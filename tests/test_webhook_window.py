"""The webhook's idempotency window survives a restart: its digests are kept, bounded, in the
source position committed with each batch, and a restarted source seeds its window from them
(integration/test_webhook_sigkill.py kills a worker between the commit and the 2xx)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from webhook_support import request

from meshconnect import ConfigError, ConnectorContext, jsonvalue
from meshconnect.connectors.webhook import _window
from meshconnect.connectors.webhook.config import WebhookConfig
from meshconnect.connectors.webhook.source import WebhookSource


def digest(n: int) -> bytes:
    return hashlib.blake2b(str(n).encode(), digest_size=16).digest()


# -- the packed form ------------------------------------------------------------------------------


def test_pack_and_unpack_keep_each_digest_and_its_time_to_the_millisecond() -> None:
    """The packed form holds each digest once, with the time of its newest batch."""
    now = 1_764_539_582.5
    kept = [(digest(1), now - 299.9), (digest(2), now - 1.25), (digest(3), now)]
    packed = _window.pack(kept)
    assert packed is not None
    assert packed["count"] == 3
    assert (
        packed["from"] == "2025-11-30T21:48:02.600Z" and packed["to"] == "2025-11-30T21:53:02.500Z"
    )
    assert len(base64.b64decode(packed["digests"])) == 3 * 20  # 16 bytes + a 4-byte age each
    assert base64.b64decode(packed["digests"])[:16] == digest(1)
    back = _window.unpack(json.loads(json.dumps(packed)))
    assert [d for d, _ in back] == [digest(1), digest(2), digest(3)]
    assert all(abs(t - at) <= 0.001 for (_, t), (_, at) in zip(back, kept, strict=True))
    assert _window.pack([]) is None and _window.unpack(None) == []
    twice = _window.pack([(digest(1), now - 5), (digest(2), now - 5), (digest(1), now)])
    assert twice is not None and twice["count"] == 2
    assert _window.unpack(twice) == [(digest(2), now - 5), (digest(1), now)]


def test_trim_keeps_the_window_the_last_two_batches_and_older_ones_up_to_the_floor() -> None:
    kept = _window.Kept()
    for n in range(10):  # batches of 1, 2, ... 10 digests, a second apart
        kept.add(1000.0 + n, (digest(100 * n + i) for i in range(n + 1)))
    kept.add(1010.0, [])  # an empty batch is none
    assert len(kept.batches) == 10
    kept.trim(1009.0, 5.0, floor=1000)  # older than 5 s before 1009: the batches 0..3
    assert [at for at, _ in kept.batches] == [1004.0, 1005.0, 1006.0, 1007.0, 1008.0, 1009.0]
    kept.trim(1009.0, 5.0, floor=30)  # 9 + 10 + 8 are within 30, 7 more are not
    assert [len(b) for _, b in kept.batches] == [8, 9, 10]
    kept.trim(1009.0, 5.0, floor=1)  # the last two batches, whatever the floor
    assert [len(b) for _, b in kept.batches] == [9, 10]
    assert len(kept) == 19 and kept.entries()[0] == (digest(800), 1008.0)
    kept.trim(1020.0, 5.0)  # out of the window: even the last two go
    assert not kept.batches and len(kept) == 0
    # the packed form regroups the batches by their time
    again = _window.Kept([(digest(1), 5.0), (digest(2), 5.0), (digest(3), 6.0)])
    assert [(at, len(b)) for at, b in again.batches] == [(5.0, 2), (6.0, 1)]
    assert _window.limit(3) == 2000 and _window.limit(5000) == 10_000


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ([], "not an object"),
        ({"count": 1, "from": "x", "to": "x"}, "missing: digests"),
        ({"count": 0, "from": "x", "to": "x", "digests": "", "n": 1}, "unknown: n"),
        ({"count": -1, "from": "x", "to": "x", "digests": ""}, "'count'"),
        ({"count": True, "from": "x", "to": "x", "digests": ""}, "'count'"),
        ({"count": 0, "from": "2025-01-01T00:00:00Z", "to": "soon", "digests": ""}, "'to'"),
        ({"count": 0, "from": 5, "to": "2025-01-01T00:00:00Z", "digests": ""}, "'from'"),
        (
            {"count": 0, "from": "2025-01-01T00:00:00", "to": "2025-01-01T00:00:00", "digests": ""},
            "UTC",
        ),
        (
            {
                "count": 1,
                "from": "2025-01-01T00:00:00Z",
                "to": "2025-01-01T00:00:00Z",
                "digests": "%%",
            },
            "base64",
        ),
        (
            {
                "count": 2,
                "from": "2025-01-01T00:00:00Z",
                "to": "2025-01-01T00:00:00Z",
                "digests": "AAAA",
            },
            "3 bytes, not 2 digests",
        ),
    ],
)
def test_unpack_says_what_is_wrong_with_a_hand_written_window(value: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        _window.unpack(value)


def test_unpack_refuses_more_digests_than_a_position_keeps() -> None:
    packed = _window.pack([(digest(n), 100.0) for n in range(5)])
    with pytest.raises(ValueError, match="5 digests, more than the 4"):
        _window.unpack(packed, 4)
    assert len(_window.unpack(packed, 5)) == 5


# -- the source -----------------------------------------------------------------------------------


def source_for(**config: Any) -> WebhookSource:
    return WebhookSource(
        WebhookConfig(listen="127.0.0.1:0", **config),
        ConnectorContext("p", "webhook", logging.getLogger("t")),
    )


class Running:
    """A started webhook source whose batches are "committed" by hand (their ack), as the
    worker does after the store transaction."""

    def __init__(self, source: WebhookSource) -> None:
        self.source = source
        self.url = f"http://127.0.0.1:{source.route.port}/events"
        self.positions: dict[str, Any] = {}

    async def post(self, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """Post ``body`` and commit the batch it makes (if any); the status and answer."""
        sent = asyncio.create_task(
            request(
                "POST",
                self.url,
                data=body if isinstance(body, bytes) else json.dumps(body).encode(),
                headers={"Content-Type": "application/cloudevents+json", **(headers or {})},
            )
        )
        while not sent.done() and not self.source.queue:
            await asyncio.sleep(0.01)
        if self.source.queue:
            await self.commit()
        status, _, raw = await asyncio.wait_for(sent, 20)
        return status, jsonvalue.loads(raw)

    async def commit(self) -> Any:
        batch = await self.source.poll()
        assert batch.ack is not None
        self.positions.update(batch.positions)
        batch.ack(None)
        return batch


@pytest.fixture
async def running() -> AsyncIterator[Any]:
    made: list[WebhookSource] = []

    async def start(positions: dict[str, Any] | None = None, **config: Any) -> Running:
        source = source_for(**config)
        await source.start(positions or {})
        made.append(source)
        return Running(source)

    yield start
    for source in made:
        await source.stop()
        await source.context.http.listeners.close()


def ce(event_id: str) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "source": "/orders", "type": "t"}


async def test_a_retry_after_a_restart_is_a_duplicate(running: Any) -> None:
    """The events committed before a restart are in the new source's window: a sender's retry
    of a request whose 2xx it never got is answered as a duplicate, not stored again."""
    first = await running()
    assert await first.post(ce("a")) == (202, {"stored": 1, "duplicates": 0})
    assert await first.post(
        [ce("b"), ce("c")], {"Content-Type": "application/cloudevents-batch+json"}
    ) == (
        202,
        {"stored": 2, "duplicates": 0},
    )
    position = first.positions["webhook"]
    assert position["stored"] == 2 and position["window"]["count"] == 3
    await first.source.stop()
    await first.source.context.http.listeners.close()

    again = await running(first.positions)
    assert await again.post(ce("a")) == (202, {"stored": 0, "duplicates": 1})
    assert not again.source.queue
    assert await again.post(
        [ce("b"), ce("c"), ce("d")], {"Content-Type": "application/cloudevents-batch+json"}
    ) == (202, {"stored": 1, "duplicates": 2})
    # the seeded digests stay in the next position with the new one
    assert again.positions["webhook"]["window"]["count"] == 4


async def test_the_window_is_not_seeded_past_its_time_nor_when_it_is_off(running: Any) -> None:
    old = time.time() - 301
    packed = _window.pack([(_key("/orders", "a"), old), (_key("/orders", "b"), time.time())])
    positions = {"webhook": {"stored": 2, "window": packed}}
    source = (await running(positions)).source
    assert list(source.seen) == [_key("/orders", "b")]  # 301 s old: out of the 300 s window
    assert source.kept.entries() == [(_key("/orders", "b"), pytest.approx(time.time(), abs=5))]
    off = (await running(positions, idempotency_window=0)).source
    assert not off.seen
    status, answer = await Running(off).post(ce("b"))
    assert (status, answer["stored"]) == (202, 1)
    assert "window" not in Running(off).positions.get("webhook", {})


def _key(source: str, event_id: str) -> bytes:
    from meshconnect.connectors.webhook.source import _event_key
    from meshconnect.records import Record

    return _event_key(Record(None, id=event_id, source=source))


async def test_the_position_keeps_the_last_two_batches_of_digests(running: Any) -> None:
    """However many events come within the window, the position keeps the digests of the
    last two batches, and a batch takes at most 1000 events (or one request of more): at most
    2 x max(1000, max_batch) digests (40 KB packed)."""
    hook = await running(max_batch=600)
    batch = {"Content-Type": "application/cloudevents-batch+json"}
    tasks = [
        asyncio.create_task(
            request(
                "POST",
                hook.url,
                data=json.dumps([ce(f"{r}-{i}") for i in range(600)]),
                headers=batch,
            )
        )
        for r in range(5)
    ]
    while len(hook.source.queue) < 5:
        await asyncio.sleep(0.01)
    sizes = [len((await hook.commit()).records) for _ in range(5)]
    assert sizes == [600, 600, 600, 600, 600]  # 1,200 would be over 1000
    for task in tasks:
        status, _, _ = await asyncio.wait_for(task, 20)
        assert status == 202
    window = hook.positions["webhook"]["window"]
    assert window["count"] == 1200
    assert len(json.dumps(hook.positions)) < 60_000
    kept = {d for d, _ in _window.unpack(window)}
    assert kept == {_key("/orders", f"{r}-{i}") for r in (3, 4) for i in range(600)}


async def test_small_batches_keep_a_few_more_and_the_position_stays_small(running: Any) -> None:
    """A batch of one request (light load) commits the digests of the last 32 events (the
    floor) or the last two batches, whichever is more: a few kilobytes, not a full window."""
    hook = await running()
    for n in range(100):
        assert await hook.post(ce(f"e{n}")) == (202, {"stored": 1, "duplicates": 0})
    window = hook.positions["webhook"]["window"]
    assert window["count"] == _window.FLOOR == 32
    assert len(json.dumps(hook.positions)) < 1_100
    assert {d for d, _ in _window.unpack(window)} == {
        _key("/orders", f"e{n}") for n in range(68, 100)
    }


def stripe(body: bytes, stamp: int) -> str:
    digest = hmac.new(b"whsec", f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


async def test_a_replayed_timestamped_signature_is_a_duplicate_after_a_restart(
    running: Any,
) -> None:
    """A plain body gets a fresh event id each time: only its signature tells a replay. The
    signatures of the last batches are kept in the position too."""
    config = {"hmac": {"secret": "whsec", "header": "Stripe-Signature", "scheme": "timestamped"}}
    body = b'{"amount": 5}'
    signed = {
        "Content-Type": "application/json",
        "Stripe-Signature": stripe(body, int(time.time())),
    }
    first = await running(**config)
    assert await first.post(body, signed) == (202, {"stored": 1, "duplicates": 0})
    assert first.positions["webhook"]["replays"]["count"] == 1
    again = await running(first.positions, **config)
    assert await again.post(body, signed) == (202, {"stored": 0, "duplicates": 1})
    assert not again.source.queue


async def test_a_hand_written_position_is_checked_and_a_bad_stored_one_is_a_config_error(
    running: Any,
) -> None:
    source = source_for()
    assert source.position_problem("webhook", {"stored": 3}) is None
    assert "not a partition this source reads" in (source.position_problem("events", {}) or "")
    assert "unknown field 'seen'" in (source.position_problem("webhook", {"seen": []}) or "")
    assert "stored must be a whole number" in (
        source.position_problem("webhook", {"stored": "3"}) or ""
    )
    assert "'window': not an object" in (
        source.position_problem("webhook", {"stored": 0, "window": 3}) or ""
    )
    many = _window.pack([(digest(n), 100.0) for n in range(2001)])
    assert "more than the 2000" in (
        source.position_problem("webhook", {"stored": 0, "window": many}) or ""
    )
    # written with a larger max_batch (one batch: one time): still taken when it starts
    now = time.time()
    many_now = _window.pack([(digest(n), now) for n in range(2001)])
    started = await running({"webhook": {"stored": 0, "window": many_now}})
    assert len(started.source.seen) == 2001
    with pytest.raises(ConfigError, match=r"'window': .*offsets reset FILE\.yaml p --to beginning"):
        await source.start({"webhook": {"stored": 1, "window": {"count": 1}}})


async def test_offsets_show_the_window_and_reset_to_the_beginning_empties_it(
    tmp_path: Path,
) -> None:
    """What ``meshconnect offsets show`` / ``offsets reset`` call, on a worker's store: the
    position is readable, a reset to the beginning forgets the window (the retry is stored
    again), and a hand-written window that is not one is refused before anything is stored."""
    from webhook_support import free_port, worker_for

    from meshconnect.config.loader import load_pipeline_files
    from meshconnect.mesh.memory import MemoryStore
    from meshconnect.offsets import apply_reset, offsets_report, reset_plan
    from meshconnect.testing import test_registry

    port = free_port()
    text = f"""
        pipelines:
          - name: hooks
            source:
              connector: webhook
              config: {{listen: "127.0.0.1:{port}", path: /events}}
        """
    url = f"http://127.0.0.1:{port}/events"
    store = MemoryStore("memory://webhook-window-offsets")
    await store.open()
    headers = {"Content-Type": "application/cloudevents+json"}

    async def post_once() -> Any:
        worker = worker_for(tmp_path, text, store)
        run = asyncio.create_task(worker.run())
        try:
            status, _, raw = await request("POST", url, data=json.dumps(ce("a")), headers=headers)
            assert status == 202
            return jsonvalue.loads(raw)
        finally:
            worker.stop()
            assert await asyncio.wait_for(run, 30) == 0

    try:
        assert await post_once() == {"stored": 1, "duplicates": 0}
        assert await post_once() == {"stored": 0, "duplicates": 1}  # the window was kept
        config = load_pipeline_files([str(tmp_path / "pipelines.yaml")], test_registry())
        [source] = (await offsets_report(store, config))["sources"]
        window = source["positions"]["webhook"]["window"]
        assert window["count"] == 1 and window["from"] == window["to"]
        assert window["to"].endswith("Z") and len(base64.b64decode(window["digests"])) == 20
        pipeline = config.pipelines[0]
        with pytest.raises(ConfigError, match="not a position of the 'webhook' source: webhook: "):
            await reset_plan(store, pipeline, None, '{"webhook": {"window": {"count": 1}}}')
        await apply_reset(store, await reset_plan(store, pipeline, None, "beginning"))
        assert await store.positions("hooks/webhook") == {}
        # what `offsets show` prints after "no committed position:"
        [source] = (await offsets_report(store, config))["sources"]
        assert source["empty"] == "counts stored requests from 0, with an empty idempotency window"
        assert await post_once() == {"stored": 1, "duplicates": 0}  # an empty window
    finally:
        await store.close()


async def test_a_window_time_after_now_counts_as_now(running: Any) -> None:
    """A position written by a clock that was ahead (or by hand) keeps its digests for the
    window from now, not until its own time plus the window."""
    ahead = _window.pack([(_key("/orders", "a"), time.time() + 86_400 * 365)])
    started = await running({"webhook": {"stored": 1, "window": ahead}})
    [(_, at)] = started.source.kept.entries()
    assert at <= time.time()
    assert await started.post(ce("a")) == (202, {"stored": 0, "duplicates": 1})
    assert await started.post(ce("b")) == (202, {"stored": 1, "duplicates": 0})
    window = started.positions["webhook"]["window"]
    assert window["count"] == 2 and window["to"] < _window._stamp(round(time.time() * 1000) + 1)


async def test_a_request_repeating_an_older_event_is_a_duplicate_whole_after_a_restart(
    running: Any,
) -> None:
    """A request of a new event and one stored long before (out of the last batches) stores
    the new one; its batch keeps the digests of both, so its retry after a crash is all
    duplicates, not the old event stored again."""
    batch = {"Content-Type": "application/cloudevents-batch+json"}
    first = await running()
    assert await first.post(ce("old")) == (202, {"stored": 1, "duplicates": 0})
    for n in range(40):  # more than the floor and two batches: "old" leaves the position
        await first.post(ce(f"e{n}"))
    assert _key("/orders", "old") not in {
        d for d, _ in _window.unpack(first.positions["webhook"]["window"])
    }
    request = [ce("old"), ce("new"), ce("old")]
    assert await first.post(request, batch) == (202, {"stored": 1, "duplicates": 2})
    again = await running(first.positions)
    assert await again.post(request, batch) == (202, {"stored": 0, "duplicates": 3})


async def test_events_a_request_repeats_count_in_its_batch(running: Any) -> None:
    """The digests of repeated events are kept too, so they count against a batch's 1000
    events: the position stays within 2 x max(1000, max_batch) digests."""
    hook = await running(max_batch=600)
    batch = {"Content-Type": "application/cloudevents-batch+json"}
    old = [ce(f"old{i}") for i in range(599)]
    assert await hook.post(old, batch) == (202, {"stored": 599, "duplicates": 0})
    tasks = [
        asyncio.create_task(
            request("POST", hook.url, data=json.dumps([*old, ce(f"new{r}")]), headers=batch)
        )
        for r in range(3)
    ]
    while len(hook.source.queue) < 3:
        await asyncio.sleep(0.01)
    assert [len((await hook.commit()).records) for _ in range(3)] == [1, 1, 1]
    for task in tasks:
        status, _, raw = await asyncio.wait_for(task, 20)
        assert (status, jsonvalue.loads(raw)) == (202, {"stored": 1, "duplicates": 599})
    assert len(hook.source.kept) == 1200  # the last two batches
    assert hook.positions["webhook"]["window"]["count"] == 601  # each digest once
