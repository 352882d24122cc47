"""The Redis Streams mesh store against a private redis-server: the store contract
(StoreConformance, unchanged), fencing, and what a restarted server does to a running worker."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from redis_support import private_redis
from store_support import (
    expected,
    output_numbers,
    private_redis_cluster,
    restart_the_engine,
    restart_the_engine_empty,
    sigkill_the_worker,
)

from conftest import run_cli
from meshconnect.errors import ConfigError, StoreError, StoreLostError
from meshconnect.mesh.redis_store import RedisStore
from meshconnect.mesh.store import FencedError, GroupInfo, MeshStore
from meshconnect.records import Record
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
def store_url(redis_url: str) -> str:
    return redis_url


@pytest.fixture
async def store(redis_url: str):  # type: ignore[no-untyped-def]
    made = RedisStore(redis_url)
    await made.open()
    yield made
    await made.close()


# -- crashes: the worker, the server ---------------------------------------------------------------


def test_a_worker_sigkilled_mid_stream_delivers_every_line_exactly_once(
    tmp_path: Path, redis_url: str
) -> None:
    progress = sigkill_the_worker(tmp_path, redis_url)

    assert len([n for n in progress if 0 < n < len(expected(20_000))]) >= 3, progress
    assert output_numbers(tmp_path / "out" / "events.jsonl") == expected(20_000)


def test_a_redis_restarted_mid_run_is_waited_out_and_nothing_is_lost(tmp_path: Path) -> None:
    """SIGKILL the private redis-server three times while a worker streams through it, and
    start it again on the same port and data: the worker reconnects and the output is exact
    (appendfsync always: what Redis acknowledged survives its crash)."""
    with private_redis(tmp_path / "redis") as server:
        url = f"{server.url}?prefix=restart"

        code, progress = restart_the_engine(tmp_path, url, server.kill, server.start)

    assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]
    assert len([n for n in progress if n > 0]) >= 2, progress
    assert output_numbers(tmp_path / "out" / "events.jsonl") == expected(20_000)


# -- a server that lost the mesh (restarted without persistence, flushed) -------------------------


async def test_a_store_whose_mesh_vanished_refuses_every_write_and_read(redis_url: str) -> None:
    """Every key of the mesh deleted under an open store (what a FLUSHALL, or a restart of a
    Redis without persistence, does): appends, commits, reads and lease renewals fail with
    StoreLostError instead of appending from offset 0 again and renewing leases with the same
    epoch, and a store opened afterwards (a new mesh) does not make the old one valid again."""
    store = RedisStore(redis_url)
    await store.open()
    assert await store.acquire_leases(["source p/c", "group p/s"], "me", 30, now=time.time()) == []
    await store.append([Record({"n": i}, topic="t") for i in range(3)], {("p/c", "f"): {"o": 3}})
    await store.commit("p/s", {"t": 3}, {"size": 3})
    client = store._redis()
    keys = [key async for key in client.scan_iter(match=f"{store._tag}:*")]
    await client.delete(*keys)

    with pytest.raises(StoreLostError, match="gone from Redis"):
        await store.append([Record({"n": 3}, topic="t")], {("p/c", "f"): {"o": 4}})
    with pytest.raises(StoreLostError):
        await store.commit("p/s", {"t": 4}, {"size": 4})
    with pytest.raises(StoreLostError):
        await store.read("t", 3, 10)
    with pytest.raises(StoreLostError):
        await store.acquire_leases(["source p/c", "group p/s"], "me", 30, now=time.time())
    fresh = RedisStore(redis_url)
    await fresh.open()
    assert await fresh.append([Record({"n": 0}, topic="t")]) == [0]
    with pytest.raises(StoreLostError):
        await store.append([Record({"n": 3}, topic="t")])
    assert await fresh.end_offsets(["t"]) == {"t": 1}
    await fresh.close()
    await store.close()


@pytest.mark.parametrize("cluster", [[], ["--cluster", "lost"]], ids=["alone", "cluster"])
def test_a_worker_whose_redis_restarts_empty_stops_with_the_reason(
    tmp_path: Path, cluster: list[str]
) -> None:
    """A Redis restarted without its data under a running worker (alone, or a cluster member):
    the worker stops with exit 1 and says the mesh is gone, instead of storing the next lines
    from offset 0 (which its sink, at offset 2,000, would never read) with every position and
    offset forgotten."""
    with private_redis(tmp_path / "redis") as server:

        def restart_empty() -> None:
            server.stop()
            shutil.rmtree(tmp_path / "redis" / "appendonlydir")  # its data: gone
            server.start()

        url = f"{server.url}?prefix=lost&reconnect_timeout=30"
        log = restart_the_engine_empty(tmp_path, url, restart_empty, cluster)

        assert "the mesh this worker opened is gone from Redis" in log
        stored = subprocess.run(
            ["redis-cli", "-p", str(server.port), "--scan", "--pattern", "{lost}:s:*"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert stored == ""  # nothing stored from offset 0 in the empty server


# -- leases and fencing ----------------------------------------------------------------------------


async def test_a_replaced_owner_can_neither_append_nor_commit(redis_url: str) -> None:
    """A worker that stalled past its lease and was replaced: its store refuses to set the
    source's positions or commit the group, and writes nothing."""
    stale, current = RedisStore(redis_url), RedisStore(redis_url)
    await stale.open()
    await current.open()
    names = ["source p/in", "group p/out"]
    assert await stale.acquire_leases(names, "w1", 30, now=100) == []
    assert await current.acquire_leases(names, "w2", 30, now=200) == []  # w1's ran out

    with pytest.raises(FencedError, match="source p/in"):
        await stale.append([Record({"n": 1}, topic="t")], {("p/in", "f"): {"line": 1}})
    with pytest.raises(FencedError, match="group p/out"):
        await stale.commit("p/out", {"t": 1}, {"size": 1})
    await current.append([Record({"n": 2}, topic="t")], {("p/in", "f"): {"line": 2}})
    await current.commit("p/out", {"t": 1})

    assert await current.end_offsets(["t"]) == {"t": 1}
    assert await current.positions("p/in") == {"f": {"line": 2}}
    assert await current.group("p/out") == GroupInfo("p/out", {"t": 1}, None)
    assert stale.lease_epochs() == {"source p/in": 1, "group p/out": 1}
    assert current.lease_epochs() == {"source p/in": 2, "group p/out": 2}
    await stale.close()
    await current.close()


async def test_renewing_keeps_the_epoch_and_stores_without_leases_are_not_fenced(
    redis_url: str,
) -> None:
    owner, tool = RedisStore(redis_url), RedisStore(redis_url)
    await owner.open()
    await tool.open()
    await owner.acquire_leases(["group g"], "w1", 30, now=100)
    await owner.acquire_leases(["group g"], "w1", 30, now=120)

    await owner.commit("g", {"t": 3})
    await tool.reset_group("g", {"t": 0})  # offsets reset: no lease of its own, no fencing

    assert owner.lease_epochs() == {"group g": 1}
    assert await owner.group("g") == GroupInfo("g", {"t": 0}, None)
    await owner.close()
    await tool.close()


# -- URLs and the plugin ---------------------------------------------------------------------------


def test_the_backend_is_registered_for_redis_urls() -> None:
    from meshconnect.mesh import open_store
    from meshconnect.testing import test_registry

    store = open_store("redis://localhost:6379/2?prefix=shop", test_registry())

    assert isinstance(store, RedisStore)
    assert (store.prefix, store.url) == ("shop", "redis://localhost:6379/2?prefix=shop")


def test_the_password_never_shows() -> None:
    store = RedisStore("redis://app:s3cret@localhost:6379/0")

    assert "s3cret" not in store.url and "s3cret" not in repr(store)


@pytest.mark.parametrize(
    "url",
    [
        "redis://",
        "redis://localhost:6379/x",
        "redis://localhost/0?prefix={a}",
        "redis://localhost/0?reconnect_timeout=soon",
        "redis://localhost/0?color=red",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="redis store URL"):
        RedisStore(url)


async def test_an_unreachable_server_is_a_store_error_after_the_reconnect_timeout() -> None:
    from mariadb import free_port

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0?reconnect_timeout=0.3")

    with pytest.raises(StoreError, match=r"unreachable for 0\.3 s"):
        await store.open()


async def test_an_append_whose_reply_was_lost_is_not_stored_twice(redis_url: str) -> None:
    """The connection drops after the script ran: the append is sent again with the same
    token (by the store, or by the worker retrying the same list of records), and the script
    answers with the first result instead of appending again."""
    store = RedisStore(redis_url)
    await store.open()
    records = [Record({"n": i}, topic="t") for i in range(3)]
    store._unsettled.append((records, "lost-reply"))
    first = await store.append(records, {("c", "p"): {"n": 3}})

    store._unsettled.append((records, "lost-reply"))  # as if its reply had not arrived
    again = await store.append(records, {("c", "p"): {"n": 3}})

    assert first == again == [0, 1, 2]
    assert await store.end_offsets(["t"]) == {"t": 3}
    await store.close()


# -- Redis Cluster ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory, redis_server):  # type: ignore[no-untyped-def]
    """A private three-node Redis Cluster (needs redis-server and redis-cli, as CI has)."""
    with private_redis_cluster(tmp_path_factory.mktemp("cluster")) as url:
        yield url


class TestRedisClusterStore(StoreConformance):
    """The whole contract on a cluster: every key of a mesh has the prefix's hash tag, so each
    script runs on the one node that serves that slot, atomically."""

    @pytest.fixture(autouse=True)
    def _url(self, cluster_url: str) -> None:
        self.url = f"{cluster_url}&prefix=c{uuid.uuid4().hex[:12]}"

    def store_factory(self, tmp_path: Path, clock: FakeClock) -> Callable[[], MeshStore]:
        url = self.url
        return lambda: RedisStore(url, clock=clock, poll_interval=0.05)


def test_a_pipeline_runs_on_a_redis_cluster(tmp_path: Path, cluster_url: str) -> None:
    (tmp_path / "in.jsonl").write_text("".join(f'{{"n": {i}}}\n' for i in range(5000)))
    config = tmp_path / "p.yaml"
    config.write_text(
        "pipelines:\n"
        "  - name: p\n"
        "    source: {connector: file, config: {path: in.jsonl, format: json, follow: false}}\n"
        "    sinks: [{connector: file, config: {path: out.jsonl, format: json}}]\n"
    )
    url = f"{cluster_url}&prefix=run{uuid.uuid4().hex[:8]}"

    done = run_cli(tmp_path / "state", "--store", url, "run", str(config), cwd=tmp_path)

    assert done.returncode == 0, done.stderr[-2000:]
    assert output_numbers(tmp_path / "out.jsonl") == list(range(5000))


async def test_the_tail_of_own_appends_is_bounded_in_bytes_and_drops_what_readers_delivered(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from store_support import tail_stays_in_budget

    await tail_stays_in_budget(lambda: RedisStore(redis_url), monkeypatch)
