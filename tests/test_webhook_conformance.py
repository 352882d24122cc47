"""The webhook source under the shipped SourceConformance suite.

HTTP cannot be replayed by the receiver: the sender keeps what got no 2xx and sends it again.
The harness plays that sender: it posts a fixed list of events, one per request, each after
the previous one was received, and stops at the first answer that is not 2xx. The source's
position counts the requests stored, which is where such a sender resumes; the suite then
checks the contract as for any source: what was acknowledged is stored once, a failed append
answers the sender so that it sends the rest again, acks may lag behind polls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from meshconnect import ConnectorContext, Position, SourceBatch
from meshconnect.connectors.webhook.config import WebhookConfig
from meshconnect.connectors.webhook.source import WebhookSource
from meshconnect.testing import SourceConformance

EVENTS = 12


class SentWebhook(WebhookSource):
    """The webhook plus its sender; done once the sender has its answers and all is polled."""

    bounded = True
    idle_wait = 0.02

    async def start(self, positions: Mapping[str, Position]) -> None:
        await super().start(positions)
        self.sender = asyncio.ensure_future(self._send(self.stored))

    async def _send(self, first: int) -> None:
        url = f"http://127.0.0.1:{self.route.port}/events"
        answers: list[asyncio.Task[int]] = []
        async with aiohttp.ClientSession() as session:

            async def post(i: int) -> int:
                event = {
                    "specversion": "1.0",
                    "id": f"ev-{i}",
                    "source": "/conformance",
                    "type": "com.example.n",
                    "data": {"n": i},
                }
                async with session.post(
                    url, json=event, headers={"Content-Type": "application/cloudevents+json"}
                ) as response:
                    return response.status

            for i in range(first, EVENTS):
                accepted = self.accepted
                answers.append(asyncio.ensure_future(post(i)))
                while self.accepted == accepted and not answers[-1].done():
                    await asyncio.sleep(0.001)
                if answers[-1].done() and answers[-1].result() != 202:
                    break
            await asyncio.gather(*answers)

    async def poll(self) -> SourceBatch | None:  # type: ignore[override]
        if self.sender.done() and not self.queue:
            return None
        return await super().poll()

    async def stop(self) -> None:
        await super().stop()
        sender = getattr(self, "sender", None)
        if sender is not None:
            sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, Exception):
                pass
        await self.context.http.listeners.close()


class TestWebhookSource(SourceConformance):
    def make_source(self, tmp_path: Path) -> Any:
        config = WebhookConfig(listen="127.0.0.1:0")
        context = ConnectorContext("test", "webhook", logging.getLogger("test"))
        return SentWebhook(config, context)

    def input_ids(self, tmp_path: Path) -> list[str]:
        return [f"ev-{i}" for i in range(EVENTS)]  # the ids the sender's events carry
