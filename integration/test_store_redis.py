"""The Redis Streams mesh store against a private redis-server: the store contract
(StoreConformance, unchanged), fencing, and what a restarted server does to a running worker."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from meshconnect.mesh.redis_store import RedisStore
from meshconnect.mesh.store import MeshStore
from meshconnect.testing import FakeClock, StoreConformance


@pytest.fixture
def redis_url(redis_server) -> str:  # type: ignore[no-untyped-def]
    """A store URL on the private server with a prefix of its own: an empty mesh."""
    return f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}"


class TestRedisStore(StoreConformance):
    @pytest.fixture(autouse=True)
    def _url(self, redis_url: str) -> None:
        self.url = redis_url

    def store_factory(self, tmp_path: Path, clock: FakeClock) -> Callable[[], MeshStore]:
        url = self.url
        return lambda: RedisStore(url, clock=clock, poll_interval=0.05)


# -- the pipeline tests that take a store URL, run on Redis ---------------------------------------
# tests/test_worker.py, test_errors_policy.py, test_errors_replay.py and test_ownership.py take
# their store from one fixture (``store_url`` / ``store``); here it is a Redis mesh.

from store_support import import_store_tests  # noqa: E402

globals().update(import_store_tests())


@pytest.fixture
def store_url(redis_url: str) -> str:  # noqa: F811
    return redis_url


@pytest.fixture
async def store(redis_url: str):  # type: ignore[no-untyped-def]  # noqa: F811
    made = RedisStore(redis_url)
    await made.open()
    yield made
    await made.close()
