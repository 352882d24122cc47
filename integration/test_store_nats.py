"""The NATS JetStream mesh store against a private nats-server -js: the store contract
(StoreConformance, unchanged), the de-duplication that stands in for a transaction, fencing,
and what a restarted server does to a running worker."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from nats_support import NatsServer, private_nats
from store_support import (
    expected,
    output_numbers,
    restart_the_engine,
    restart_the_engine_empty,
    sigkill_the_worker,
)

from meshconnect.errors import ConfigError, DataError, StoreError, StoreLostError
from meshconnect.mesh.nats_store import NatsStore
from meshconnect.mesh.store import FencedError, GroupInfo, MeshStore
from meshconnect.records import Record
from meshconnect.testing import FakeClock, StoreConformance

EDGE_TOPICS = StoreConformance.EDGE_TOPICS


@pytest.fixture
def nats_url(nats_server) -> str:  # type: ignore[no-untyped-def]
    """A store URL on the private server with a prefix of its own: an empty mesh."""
    return f"{nats_server.url}?prefix=t{uuid.uuid4().hex[:12]}"


class TestNatsStore(StoreConformance):
    @pytest.fixture(autouse=True)
    def _url(self, nats_url: str) -> None:
        self.url = nats_url

    def store_factory(self, tmp_path: Path, clock: FakeClock) -> Callable[[], MeshStore]:
        url = self.url
        return lambda: NatsStore(url, clock=clock, poll_interval=0.05)


# -- the pipeline tests that take a store URL, run on NATS ----------------------------------------
# tests/test_worker.py, test_errors_policy.py, test_errors_replay.py and test_ownership.py take
# their store from one fixture (``store_url`` / ``store``); here it is a JetStream mesh.

from store_support import import_store_tests  # noqa: E402

globals().update(import_store_tests())


@pytest.fixture
def store_url(nats_url: str) -> str:
    return nats_url


@pytest.fixture
async def store(nats_url: str):  # type: ignore[no-untyped-def]
    made = NatsStore(nats_url)
    await made.open()
    yield made
    await made.close()


# -- crashes: the worker, the server ---------------------------------------------------------------


def test_a_worker_sigkilled_mid_stream_delivers_every_line_exactly_once(
    tmp_path: Path, nats_url: str
) -> None:
    progress = sigkill_the_worker(tmp_path, nats_url)

    assert len([n for n in progress if 0 < n < len(expected(20_000))]) >= 3, progress
    assert output_numbers(tmp_path / "out" / "events.jsonl") == expected(20_000)


def test_a_nats_server_restarted_mid_run_is_waited_out_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    """SIGKILL the private nats-server three times while a worker streams through it, and
    start it again on the same port and data: the worker reconnects and the output is exact."""
    with private_nats(tmp_path / "nats") as server:
        url = f"{server.url}?prefix=restart"

        code, progress = restart_the_engine(tmp_path, url, server.kill, server.start)

    assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]
    assert len([n for n in progress if n > 0]) >= 2, progress
    assert output_numbers(tmp_path / "out" / "events.jsonl") == expected(20_000)


# -- the guarantee: publish, then commit the positions ---------------------------------------------


def lines_batch(first: int, n: int) -> list[Record]:
    """What a file source reads from line ``first`` on: ids from the position."""
    return [
        Record({"n": i}, topic="t", source="file:///in.jsonl", id=f"in-{i}")
        for i in range(first, first + n)
    ]


async def test_a_crash_between_publish_and_position_commit_is_deduplicated(
    nats_url: str,
) -> None:
    """A worker's records are published but their position is never set (here: its lease
    was taken over, so the position commit is refused, as a crash would leave it): the next
    owner reads them again from the old position, in a bigger batch, and only the records
    that were not stored yet get new offsets."""
    stale, current = NatsStore(nats_url), NatsStore(nats_url)
    await stale.open()
    await current.open()
    await stale.append(lines_batch(0, 3), {("p/in", "in.jsonl"): {"line": 3}})
    await stale.acquire_leases(["source p/in"], "w1", 30, now=100)
    await current.acquire_leases(["source p/in"], "w2", 30, now=200)
    with pytest.raises(FencedError):  # published, then the position commit is refused
        await stale.append(lines_batch(3, 4), {("p/in", "in.jsonl"): {"line": 7}})

    assert await current.positions("p/in") == {"in.jsonl": {"line": 3}}
    again = await current.append(lines_batch(3, 6), {("p/in", "in.jsonl"): {"line": 9}})

    assert again == [3, 4, 5, 6, 7, 8]
    assert [r.data["n"] for r in await current.read("t", 0, 100)] == list(range(9))
    assert await current.end_offsets(["t"]) == {"t": 9}
    await stale.close()
    await current.close()


async def test_a_smaller_batch_read_again_keeps_the_first_copys_offsets(nats_url: str) -> None:
    """Read again after the crash, the batch holds fewer records than were published: they
    keep their offsets; what the first copy held beyond them is stored again later (the
    at-least-once part of the guarantee)."""
    stale, current = NatsStore(nats_url), NatsStore(nats_url)
    await stale.open()
    await current.open()
    # The stale store appended before (another source's record): it knows the topic's end,
    # so its next publish goes in at once, and only the position commit is refused.
    other = Record({"n": -1}, topic="t", source="file:///other.jsonl", id="other-0")
    assert await stale.append([other]) == [0]
    await stale.acquire_leases(["source p/in"], "w1", 30, now=100)
    await current.acquire_leases(["source p/in"], "w2", 30, now=200)
    with pytest.raises(FencedError):
        await stale.append(lines_batch(0, 5), {("p/in", "in.jsonl"): {"line": 5}})

    again = await current.append(lines_batch(0, 2), {("p/in", "in.jsonl"): {"line": 2}})
    rest = await current.append(lines_batch(2, 3), {("p/in", "in.jsonl"): {"line": 5}})

    assert (again, rest) == ([1, 2], [6, 7, 8])
    await stale.close()
    await current.close()


async def test_after_an_offsets_reset_the_same_records_are_stored_again(nats_url: str) -> None:
    """The de-duplication never eats a deliberate re-read: a reset changes the positions'
    revision, which is part of every message id."""
    store = NatsStore(nats_url)
    await store.open()
    await store.append(lines_batch(0, 3), {("p/in", "in.jsonl"): {"line": 3}})

    await store.set_positions("p/in", None)
    await store.positions("p/in")
    again = await store.append(lines_batch(0, 3), {("p/in", "in.jsonl"): {"line": 3}})

    assert again == [3, 4, 5]
    await store.close()


# -- leases and fencing ----------------------------------------------------------------------------


async def test_a_replaced_owner_that_wakes_late_stores_nothing_after_the_new_owners_records(
    nats_url: str,
) -> None:
    """A source owner stalls (SIGSTOP) past its lease inside an append, the new owner reads
    from the committed position and stores, and the old one wakes and publishes its batch of
    the same position, which holds more. Its surplus went in after the new owner's records,
    then its position commit was refused: the topic held an old insert after the update that
    followed it, and a replay ended on the stale row (the 3-worker CDC test on NATS, 1 run in
    16). Now it learns the topic's end anew, checks its lease first and publishes nothing."""
    stale, current = NatsStore(nats_url), NatsStore(nats_url)
    await stale.open()
    await current.open()
    await stale.acquire_leases(["source p/in"], "w1", 30, now=100)
    assert await stale.append(lines_batch(0, 3), {("p/in", "in.jsonl"): {"line": 3}}) == [0, 1, 2]
    await current.acquire_leases(["source p/in"], "w2", 30, now=200)  # w1's ran out
    assert await current.positions("p/in") == {"in.jsonl": {"line": 3}}
    assert await current.append(lines_batch(3, 2), {("p/in", "in.jsonl"): {"line": 5}}) == [3, 4]
    assert await current.append(lines_batch(5, 2), {("p/in", "in.jsonl"): {"line": 7}}) == [5, 6]

    with pytest.raises(FencedError, match="source p/in"):  # its read of lines 3-5, late
        await stale.append(lines_batch(3, 3), {("p/in", "in.jsonl"): {"line": 6}})
    with pytest.raises(FencedError, match="source p/in"):  # other records, the same position
        await stale.append(lines_batch(10, 2), {("p/in", "in.jsonl"): {"line": 6}})

    assert [r.data["n"] for r in await current.read("t", 0, 100)] == list(range(7))
    assert await current.positions("p/in") == {"in.jsonl": {"line": 7}}
    await stale.close()
    await current.close()


async def test_a_replaced_owner_can_neither_set_positions_nor_commit(nats_url: str) -> None:
    stale, current = NatsStore(nats_url), NatsStore(nats_url)
    await stale.open()
    await current.open()
    names = ["source p/in", "group p/out"]
    assert await stale.acquire_leases(names, "w1", 30, now=100) == []
    assert await current.acquire_leases(names, "w2", 30, now=200) == []  # w1's ran out

    with pytest.raises(FencedError, match="source p/in"):
        await stale.append([], {("p/in", "f"): {"line": 1}})
    with pytest.raises(FencedError, match="group p/out"):
        await stale.commit("p/out", {"t": 1}, {"size": 1})
    await current.append([], {("p/in", "f"): {"line": 2}})
    await current.commit("p/out", {"t": 1})

    assert await current.positions("p/in") == {"f": {"line": 2}}
    assert await current.group("p/out") == GroupInfo("p/out", {"t": 1}, None)
    assert stale.lease_epochs() == {"source p/in": 1, "group p/out": 1}
    assert current.lease_epochs() == {"source p/in": 2, "group p/out": 2}
    await stale.close()
    await current.close()


# -- URLs and the plugin ---------------------------------------------------------------------------


def test_the_backend_is_registered_for_nats_urls() -> None:
    from meshconnect.mesh import open_store
    from meshconnect.testing import test_registry

    store = open_store("nats://localhost:4222?prefix=shop", test_registry())

    assert isinstance(store, NatsStore)
    assert (store.prefix, store.url) == ("shop", "nats://localhost:4222?prefix=shop")


def test_the_password_never_shows() -> None:
    store = NatsStore("nats://app:s3cret@localhost:4222")

    assert "s3cret" not in store.url and "s3cret" not in repr(store)


@pytest.mark.parametrize(
    "url",
    [
        "nats://",
        "nats://localhost:4222/x",
        "nats://localhost?prefix=a.b",
        "nats://localhost?duplicate_window=0",
        "nats://localhost?color=red",
        f"nats://localhost?prefix={'p' * 216}",  # no room left for a hashed stream name
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="nats store URL"):
        NatsStore(url)


# -- a server that lost the mesh (an empty storage directory, the streams deleted) ----------------


async def test_a_store_whose_mesh_vanished_says_so_instead_of_waiting(nats_url: str) -> None:
    """Every stream of the mesh deleted under an open store (what a nats-server restarted on an
    empty storage directory shows): appends, commits and lease renewals fail with
    StoreLostError at once, where they waited ``reconnect_timeout`` for a stream that would not
    come back and then failed as "NATS unreachable", again and again."""
    import nats

    store = NatsStore(f"{nats_url}&reconnect_timeout=600")
    await store.open()
    assert await store.acquire_leases(["source p/c", "group p/s"], "me", 30, now=time.time()) == []
    await store.append([Record({"n": i}, topic="t") for i in range(3)], {("p/c", "f"): {"o": 3}})
    await store.commit("p/s", {"t": 3}, {"size": 3})
    client = await nats.connect(nats_url.split("?")[0])
    js = client.jetstream()
    buckets = [f"KV_MC_{store.prefix}_{b}" for b in ("positions", "groups", "leases", "starts")]
    for stream in [store._stream("t"), *buckets]:
        await js.delete_stream(stream)
    await client.close()

    with pytest.raises(StoreLostError, match="gone from NATS"):
        await asyncio.wait_for(store.append([Record({"n": 3}, topic="t")]), 60)
    with pytest.raises(StoreLostError):
        await asyncio.wait_for(store.commit("p/s", {"t": 4}, {"size": 4}), 60)
    with pytest.raises(StoreLostError):
        await asyncio.wait_for(
            store.acquire_leases(["source p/c", "group p/s"], "me", 30, now=time.time()), 60
        )
    await store.close()


@pytest.mark.parametrize("cluster", [[], ["--cluster", "lost"]], ids=["alone", "cluster"])
def test_a_worker_whose_nats_restarts_empty_stops_with_the_reason(
    tmp_path: Path, cluster: list[str]
) -> None:
    """nats-server restarted on an empty storage directory under a running worker (alone, or
    a cluster member): the worker stops with exit 1 and says the mesh is gone, instead of
    waiting for streams that will never come back, connector restart after restart."""
    with private_nats(tmp_path / "nats") as server:

        def restart_empty() -> None:
            server.stop()
            shutil.rmtree(tmp_path / "nats" / "jetstream")  # its data: gone
            server.start()

        url = f"{server.url}?prefix=lost&reconnect_timeout=30"
        log = restart_the_engine_empty(tmp_path, url, restart_empty, cluster)

    assert "the mesh this worker opened is gone from NATS" in log


async def test_an_unreachable_server_is_a_store_error_after_the_reconnect_timeout() -> None:
    from mariadb import free_port

    store = NatsStore(f"nats://127.0.0.1:{free_port()}?reconnect_timeout=0.3")

    with pytest.raises(StoreError, match=r"unreachable for 0\.3 s"):
        await store.open()


# -- names -----------------------------------------------------------------------------------------


async def stream_description(url: str, stream: str) -> str | None:
    """The description of a stream on the server (NotFoundError when there is none)."""
    import nats

    client = await nats.connect(url)
    try:
        return (await client.jetstream().stream_info(stream)).config.description
    finally:
        await client.close()


async def test_a_short_topic_keeps_its_stream_name_and_a_long_one_gets_a_hashed_name(
    nats_url: str, nats_server: NatsServer
) -> None:
    """Names that fit stay as every earlier version wrote them (a mesh made by one is read
    as before); a longer one is cut, with a digest of the whole name, to JetStream's 255
    characters, and its stream's description holds the real name. Stores find streams by
    these names, so they may never change."""
    store = NatsStore(nats_url)
    await store.open()
    longest = EDGE_TOPICS[0]
    await store.append([Record({}, topic="orders.v1"), Record({}, topic=longest)])
    await store.close()
    start = f"MC_{store.prefix}_T_"
    digest = hashlib.blake2b(longest.encode(), digest_size=16).hexdigest()
    hashed = start + "t" * (255 - len(start) - 2 - 32) + "__" + digest

    assert await stream_description(nats_server.url, f"{start}orders_2Ev1") == "orders.v1"
    assert await stream_description(nats_server.url, hashed) == longest


async def test_the_longest_prefix_still_holds_the_longest_topic_names(
    nats_server: NatsServer,
) -> None:
    prefix = uuid.uuid4().hex.ljust(215, "p")
    store = NatsStore(f"{nats_server.url}?prefix={prefix}")
    await store.open()

    for topic in EDGE_TOPICS:
        await store.append([Record({"t": topic}, topic=topic)])

    assert sorted(t.name for t in await store.topics()) == sorted(EDGE_TOPICS)
    assert [(await store.read(t, 0, 10))[0].data for t in EDGE_TOPICS] == [
        {"t": t} for t in EDGE_TOPICS
    ]
    await store.close()


async def test_topics_lists_no_stream_of_another_prefix(nats_server: NatsServer) -> None:
    """Prefix ``a``'s streams start ``MC_a_T_``, and so do those of prefix ``a_T_b``:
    ``topics()`` takes a stream for a topic only when that topic's name gives it back."""
    short = f"x{uuid.uuid4().hex[:8]}"
    mine = NatsStore(f"{nats_server.url}?prefix={short}")
    other = NatsStore(f"{nats_server.url}?prefix={short}_T_b")
    await mine.open()
    await other.open()
    await mine.append([Record({}, topic="a")])
    await other.append([Record({}, topic="x"), Record({}, topic=EDGE_TOPICS[1])])

    assert [t.name for t in await mine.topics()] == ["a"]
    assert sorted(t.name for t in await other.topics()) == sorted(["x", EDGE_TOPICS[1]])
    await mine.close()
    await other.close()


# -- message sizes ---------------------------------------------------------------------------------


async def test_a_batch_bigger_than_a_message_is_split_with_dense_offsets(nats_url: str) -> None:
    """A batch is one message unless it exceeds the server's max_payload (1 MB here)."""
    store, reader = NatsStore(nats_url), NatsStore(nats_url)
    await store.open()
    await reader.open()
    records = [Record({"i": i, "pad": "x" * 1000}, topic="t") for i in range(3000)]

    offsets = await store.append(records)

    assert offsets == list(range(3000))
    got = await reader.read("t", 0, 10_000)
    while len(got) < 3000 and (more := await reader.read("t", len(got), 10_000)):
        got += more
    assert [r.data["i"] for r in got] == list(range(3000))
    await store.close()
    await reader.close()


async def test_a_record_bigger_than_a_message_is_a_data_error_and_nothing_is_stored(
    nats_url: str,
) -> None:
    store = NatsStore(nats_url)
    await store.open()
    records = [Record({"i": 0}, topic="t"), Record({"pad": "x" * 2_000_000}, topic="t")]

    with pytest.raises(DataError, match=r"record 1 of the batch.*max_payload"):
        await store.append(records, {("c", "p"): {"n": 2}})

    assert await store.topics() == []
    assert await store.positions("c") == {}
    await store.close()


async def test_two_stores_appending_to_one_topic_at_once_get_dense_offsets(nats_url: str) -> None:
    """Each publish expects the stream's last sequence; the loser of a race reads the new end
    and publishes again, so offsets stay dense and each batch contiguous."""
    first, second = NatsStore(nats_url), NatsStore(nats_url)
    await first.open()
    await second.open()

    def batch() -> list[Record]:
        return [Record({"n": i}, topic="t") for i in range(10)]

    results = await asyncio.gather(
        *(store.append(batch()) for _ in range(10) for store in (first, second))
    )

    assert sorted(o for offsets in results for o in offsets) == list(range(200))
    assert all(offsets == list(range(offsets[0], offsets[0] + 10)) for offsets in results)
    assert await first.end_offsets(["t"]) == {"t": 200}
    await first.close()
    await second.close()


async def test_the_tail_of_own_appends_is_bounded_in_bytes_and_drops_what_readers_delivered(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from store_support import tail_stays_in_budget

    await tail_stays_in_budget(lambda: NatsStore(nats_url), monkeypatch)
