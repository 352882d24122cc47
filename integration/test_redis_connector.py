"""The redis sink and source against a private redis-server: every sink mode, the stream
source's positions and acknowledgements, the conformance suites."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import subprocess
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from mariadb import free_port

from meshconnect import BatchError, ConfigError, ConnectorContext, DataError, Record
from meshconnect.connectors.redis.config import RedisSinkConfig, RedisSourceConfig
from meshconnect.connectors.redis.sink import RedisSink
from meshconnect.connectors.redis.source import RedisSource
from meshconnect.testing import SinkConformance, SourceConformance


def context(tmp_path: Path, name: str = "redis") -> ConnectorContext:
    return ConnectorContext("test", name, logging.getLogger("test.redis"), str(tmp_path))


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def sink(server: Any, tmp_path: Path, **config: Any) -> RedisSink:
    return RedisSink(RedisSinkConfig(url=server.url, **config), context(tmp_path))


async def write_all(s: RedisSink, records: list[Record]) -> None:
    await s.open(None)
    await s.write(records)
    await s.flush()
    await s.close()


# -- sink modes ---------------------------------------------------------------------------------


async def test_set_writes_data_as_json_by_key_template_with_ttl(redis_server, tmp_path) -> None:
    p = prefix()
    await write_all(
        sink(redis_server, tmp_path, mode="set", key=p + ":{data.id}", ttl="1h"),
        [Record({"id": 7, "total": Decimal("5.10")})],
    )
    r = redis_server.client()
    assert r.get(f"{p}:7") == b'{"id":7,"total":5.10}'
    assert 3590_000 < r.pttl(f"{p}:7") <= 3600_000


async def test_set_value_field_writes_that_field(redis_server, tmp_path) -> None:
    p = prefix()
    await write_all(
        sink(redis_server, tmp_path, mode="set", key=p + ":{data.id}", value_field="body.text"),
        [Record({"id": 1, "body": {"text": "hello"}}), Record({"id": 2, "body": {"text": [1]}})],
    )
    r = redis_server.client()
    assert (r.get(f"{p}:1"), r.get(f"{p}:2")) == (b"hello", b"[1]")


async def test_hset_flattens_and_replaces(redis_server, tmp_path) -> None:
    p = prefix()
    r = redis_server.client()
    r.hset(f"{p}:1", mapping={"stale": "x"})
    await write_all(
        sink(redis_server, tmp_path, mode="hset", key=p + ":{data.id}"),
        [Record({"id": 1, "a": {"b": True, "c": None}, "tags": ["x"], "n": 12345678901234567890})],
    )
    assert r.hgetall(f"{p}:1") == {
        b"id": b"1",
        b"a.b": b"true",
        b"tags": b'["x"]',
        b"n": b"12345678901234567890",
    }


async def test_hset_merge_keeps_other_fields(redis_server, tmp_path) -> None:
    p = prefix()
    r = redis_server.client()
    r.hset(f"{p}:1", mapping={"kept": "x"})
    await write_all(
        sink(redis_server, tmp_path, mode="hset", key=p + ":{data.id}", replace=False, ttl="10s"),
        [Record({"id": 1, "a": "b"})],
    )
    assert r.hgetall(f"{p}:1") == {b"kept": b"x", b"id": b"1", b"a": b"b"}
    assert 0 < r.pttl(f"{p}:1") <= 10_000


async def test_hset_merge_removes_fields_that_became_null(redis_server, tmp_path) -> None:
    """With `replace: false` a field (a CDC column) set to null disappears from the hash, as
    the page says; it kept its old value (found by the redis trial)."""
    p = prefix()
    r = redis_server.client()
    r.hset(f"{p}:1", mapping={"kept": "x", "note": "old", "a.b": "old"})
    await write_all(
        sink(redis_server, tmp_path, mode="hset", key=p + ":{data.id}", replace=False),
        [Record({"id": 1, "note": None, "a": {"b": None}, "v": 2})],
    )
    assert r.hgetall(f"{p}:1") == {b"kept": b"x", b"id": b"1", b"v": b"2"}


async def test_hset_merge_of_only_null_fields_removes_only_those(redis_server, tmp_path) -> None:
    """With `replace: false` a record whose fields are all null (or none) deleted the whole
    hash, the fields it did not name too: a merge removes the null ones alone."""
    p = prefix()
    r = redis_server.client()
    r.hset(f"{p}:1", mapping={"kept": "x", "note": "old"})
    r.hset(f"{p}:2", mapping={"kept": "y"})
    await write_all(
        sink(redis_server, tmp_path, mode="hset", replace=False, ttl="10s"),
        [
            Record({"note": None}, extensions={"partitionkey": f"{p}:1"}),
            Record({}, extensions={"partitionkey": f"{p}:2"}),
        ],
    )
    assert r.hgetall(f"{p}:1") == {b"kept": b"x"}
    assert r.hgetall(f"{p}:2") == {b"kept": b"y"}
    assert 0 < r.pttl(f"{p}:1") <= 10_000


async def test_hset_fields_that_flatten_to_one_name_fail_alone(redis_server, tmp_path) -> None:
    """`{"a": {"b": 2}, "a.b": 3}` would keep one value and drop the other silently: the record
    fails alone (a per-record result), the others are written (found by the redis trial)."""
    p = prefix()
    s = sink(redis_server, tmp_path, mode="hset", key=p + ":{data.id}")
    await s.open(None)
    with pytest.raises(BatchError) as failed:
        await s.write([Record({"id": 1, "a": {"b": 2}, "a.b": 3}), Record({"id": 2, "x": 1})])
    await s.flush()
    await s.close()
    assert list(failed.value.failures) == [0]
    assert "flatten to 'a.b'" in str(failed.value.failures[0])
    r = redis_server.client()
    assert (r.exists(f"{p}:1"), r.hgetall(f"{p}:2")) == (0, {b"id": b"2", b"x": b"1"})


async def test_tombstone_deletes_its_key(redis_server, tmp_path) -> None:
    p = prefix()
    r = redis_server.client()
    r.set(f"{p}:9", "x")
    await write_all(
        sink(redis_server, tmp_path, mode="set", key=p + ":{partitionkey}"),
        [Record(None, extensions={"partitionkey": "9"}, datacontenttype=None)],
    )
    assert r.exists(f"{p}:9") == 0


async def test_xadd_trims_and_carries_the_record_id(redis_server, tmp_path) -> None:
    p = prefix()
    records = [Record({"n": i}, id=f"r{i}") for i in range(300)]
    await write_all(
        sink(redis_server, tmp_path, mode="xadd", stream=p, maxlen=100),
        records,
    )
    r = redis_server.client()
    entries = r.xrange(p)
    assert 100 <= len(entries) < 300  # MAXLEN ~ trims whole macro nodes
    assert entries[-1][1] == {b"n": b"299", b"ce_id": b"r299"}


async def test_xadd_a_batch_all_appended_before_a_crash_still_says_where_the_stream_is(
    redis_server, tmp_path
) -> None:
    """A first run killed before its first commit appended r0..r9; the next run re-delivers
    them. Its first batch (r0..r4) is all skipped, and the state it commits must still name
    the stream's entry of r4: it named none, so the start after a second crash looked for
    re-deliveries only in the stream's last 10,000 entries and appended older ones twice (the
    xadd SIGKILL test in CI: 5,500 duplicates)."""
    p = prefix()
    records = [Record({"n": i}, id=f"r{i}") for i in range(10)]
    first = sink(redis_server, tmp_path, mode="xadd", stream=p)
    await first.open(None)
    await first.write(records)  # killed before any commit
    await first.close()
    entries = [e.decode() for e, _ in redis_server.client().xrange(p)]

    again = sink(redis_server, tmp_path, mode="xadd", stream=p)
    await again.open(None)
    await again.write(records[:5])
    assert (await again.flush() or {})["streams"] == {p: entries[4]}
    await again.close()

    third = sink(redis_server, tmp_path, mode="xadd", stream=p)
    await third.open({"streams": {p: entries[4]}})
    await third.write([*records[5:], Record({"n": 10}, id="r10")])
    assert [f[b"ce_id"] for _, f in redis_server.client().xrange(p)] == [
        f"r{i}".encode() for i in range(11)
    ]
    await third.close()


async def test_publish_sends_json_to_the_channel_template(redis_server, tmp_path) -> None:
    p = prefix()
    r = redis_server.client()
    sub = r.pubsub()
    sub.subscribe(f"{p}.orders")
    assert sub.get_message(timeout=5)["type"] == "subscribe"
    await write_all(
        sink(redis_server, tmp_path, mode="publish", channel=p + ".{subject}"),
        [Record({"id": 1}, subject="orders")],
    )
    message = sub.get_message(timeout=10)
    assert message is not None and message["data"] == b'{"id":1}'
    sub.close()


async def test_per_record_errors_name_only_the_failed_records(redis_server, tmp_path) -> None:
    p = prefix()
    r = redis_server.client()
    r.set(f"{p}:s", "a string, not a stream")
    s = sink(redis_server, tmp_path, mode="xadd", stream=p + ":{data.to}")
    await s.open(None)
    with pytest.raises(BatchError) as caught:
        await s.write([Record({"to": "ok"}), Record({"to": "s"}), Record({"x": 1})])
    await s.close()
    assert sorted(caught.value.failures) == [1, 2]
    assert "WRONGTYPE" in str(caught.value.failures[1])
    assert s.classify_error(caught.value.failures[1]) is DataError
    assert isinstance(caught.value.failures[2], DataError)
    assert r.xlen(f"{p}:ok") == 1


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("set", {"key": "{data.k}"}),
        ("hset", {"key": "{data.k}"}),
        ("xadd", {"stream": "{data.k}"}),
        ("publish", {"channel": "{data.k}"}),
    ],
)
@pytest.mark.parametrize("atomic", [True, False])
async def test_a_value_larger_than_the_server_takes_fails_alone(
    redis_server, tmp_path, mode: str, options: dict[str, str], atomic: bool
) -> None:
    """A value past `proto-max-bulk-len` is a protocol error: the server dropped the
    connection, the whole batch failed as if Redis were down ("Broken pipe"), was retried,
    and its good records were dead-lettered with it."""
    p = prefix()
    r = redis_server.client()
    r.config_set("proto-max-bulk-len", 1024 * 1024)
    try:
        s = sink(redis_server, tmp_path, mode=mode, atomic=atomic, **options)
        await s.open(None)
        big = {"k": f"{p}:big", "v": "é" * (600 * 1024)}  # 1.2 MB of UTF-8, 0.6 M characters
        with pytest.raises(BatchError) as caught:
            await s.write([Record({"k": f"{p}:a", "v": 1}), Record(big), Record({"k": f"{p}:b"})])
        await s.close()
    finally:
        r.config_set("proto-max-bulk-len", 512 * 1024 * 1024)
    assert list(caught.value.failures) == [1]
    assert isinstance(caught.value.failures[1], DataError)
    assert "proto-max-bulk-len 1048576" in str(caught.value.failures[1])
    if mode != "publish":
        assert r.exists(f"{p}:a", f"{p}:b", f"{p}:big") == 2


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("set", {"key": "{type}:{data}"}),
        ("xadd", {"stream": "{type}:{data}"}),
        ("publish", {"channel": "{type}:{data}"}),
    ],
)
async def test_a_name_made_of_binary_data_fails_alone(
    redis_server, tmp_path, mode: str, options: dict[str, Any]
) -> None:
    """A template that puts binary data (bytes that are not UTF-8) into a key, stream or
    channel name: redis-py could not encode it, and the UnicodeEncodeError failed the whole
    batch."""
    p = prefix()
    s = sink(redis_server, tmp_path, mode=mode, **options)
    await s.open(None)
    good = Record({"n": 1}, type=p)
    with pytest.raises(BatchError) as caught:
        await s.write([good, Record(b"\xff\x00", type=p), Record("text", type=p)])
    await s.close()
    assert list(caught.value.failures) == [1]
    assert "is not UTF-8 text" in str(caught.value.failures[1])
    if mode != "publish":
        assert redis_server.client().exists(p + ':{"n":1}') == 1


# -- conformance --------------------------------------------------------------------------------


@contextlib.contextmanager
def _stopped(server: Any) -> Iterator[None]:
    """An outage: the server stops (its append-only file keeps what it took) and starts again
    on the same port at the end."""
    server.stop()
    try:
        yield
    finally:
        server.start()


class TestRedisXaddSinkConformance(SinkConformance):
    """XADD is not idempotent by itself: the entries' record ids make re-delivery exact."""

    @pytest.fixture(autouse=True)
    def _server(self, redis_server) -> None:
        self.server = redis_server

    def make_sink(self, tmp_path: Path) -> RedisSink:
        return sink(self.server, tmp_path, mode="xadd", stream=f"conf:{tmp_path.name}:{{data.s}}")

    def make_record(self, i: int) -> Record:
        return Record({"n": i, "s": "x"}, id=f"conformance-{i}", topic="conformance", offset=i)

    def durable(self, tmp_path: Path) -> list[Any]:
        entries = self.server.client().xrange(f"conf:{tmp_path.name}:x")
        return [int(fields[b"n"]) for _, fields in entries]

    def poison_record(self, i: int) -> Record | None:
        return Record({"n": i}, id=f"poison-{i}")  # no `s`: the stream template has no value

    def unavailable(self, tmp_path: Path) -> contextlib.AbstractContextManager[None]:
        return _stopped(self.server)


class TestRedisHsetSinkConformance(SinkConformance):
    @pytest.fixture(autouse=True)
    def _server(self, redis_server) -> None:
        self.server = redis_server

    def make_sink(self, tmp_path: Path) -> RedisSink:
        return sink(self.server, tmp_path, mode="hset", key=f"h:{tmp_path.name}:{{data.n}}")

    def durable(self, tmp_path: Path) -> list[Any]:
        r = self.server.client()
        keys = r.keys(f"h:{tmp_path.name}:*")
        return sorted(int(r.hget(k, "n")) for k in keys)

    def poison_record(self, i: int) -> Record | None:
        return Record([1, 2], id=f"poison-{i}")  # hset needs an object

    def unavailable(self, tmp_path: Path) -> contextlib.AbstractContextManager[None]:
        return _stopped(self.server)


class TestRedisStreamSourceConformance(SourceConformance):
    @pytest.fixture(autouse=True)
    def _server(self, redis_server) -> None:
        self.server = redis_server

    def make_source(self, tmp_path: Path) -> RedisSource:
        stream = f"src:{tmp_path.name}"
        r = self.server.client()
        if not r.exists(stream):
            for i in range(0, 1000, 100):
                pipe = r.pipeline()
                for n in range(i, i + 100):
                    pipe.xadd(stream, {"n": str(n)})
                pipe.execute()
        config = RedisSourceConfig(
            url=self.server.url, stream=stream, until_end=True, batch_size=97
        )
        return RedisSource(config, context(tmp_path))

    def input_ids(self, tmp_path: Path) -> list[str]:
        """``<stream>-<entry id>`` of every entry, as the server lists them."""
        stream = f"src:{tmp_path.name}"
        entries = self.server.client().xrange(stream)
        return [f"{stream}-{eid.decode()}" for eid, _ in entries]


async def test_pubsub_source_reads_json_and_text_messages(redis_server, tmp_path) -> None:
    p = prefix()
    source = RedisSource(
        RedisSourceConfig(url=redis_server.url, mode="pubsub", channels=[f"{p}.*"], block="2s"),
        context(tmp_path),
    )
    await source.start({})
    r = redis_server.client()
    while r.pubsub_numpat() < 1:  # subscribed
        await asyncio.sleep(0.01)
    r.publish(f"{p}.a", '{"n": 1.10}')
    r.publish(f"{p}.b", "not json")
    r.publish(f"{p}.c", b"\xff\xfe")
    got: list[Record] = []
    failures: list[Any] = []
    while len(got) + len(failures) < 3:
        batch = await source.poll()
        assert batch is not None
        got.extend(batch.records)
        failures.extend(batch.failures)
    await source.stop()
    assert [(x.subject, x.data) for x in got] == [(f"{p}.a", {"n": Decimal("1.10")})]
    assert isinstance(failures[0][1], DataError)
    # the dead letter holds the message as it came (it was base64 text, unmarked)
    assert [(f.data, f.datacontenttype) for f, _ in failures] == [
        ("not json", "text/plain"),
        (b"\xff\xfe", "application/octet-stream"),
    ]
    # issue 9 item 7: a message has no time of its own; the record has the time it arrived
    for record in (got[0], failures[0][0]):
        assert record.time is not None
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record.time)


async def test_pubsub_a_channel_name_that_is_not_utf8_is_spelled_in_the_subject(
    redis_server, tmp_path
) -> None:
    """A pattern matches channel names of any bytes. A message on one that is not UTF-8
    raised UnicodeDecodeError out of poll: the source restarted, and the messages published
    meanwhile were lost (pub/sub keeps nothing for a subscriber that is away). Its bytes are
    spelled ``\\udcXX`` in the subject, as an undecodable file name's are."""
    p = prefix()
    source = RedisSource(
        RedisSourceConfig(url=redis_server.url, mode="pubsub", channels=[f"{p}.*"], block="2s"),
        context(tmp_path),
    )
    await source.start({})
    r = redis_server.client()
    while r.pubsub_numpat() < 1:  # subscribed
        await asyncio.sleep(0.01)
    r.publish(p.encode() + b".\xff", '{"n": 1}')
    r.publish(f"{p}.ok", '{"n": 2}')
    got: list[Record] = []
    while len(got) < 2:
        batch = await source.poll()
        assert batch is not None and not batch.failures
        got.extend(batch.records)
    await source.stop()
    assert [(x.subject, x.data) for x in got] == [
        (f"{p}.\\udcff", {"n": 1}),
        (f"{p}.ok", {"n": 2}),
    ]


async def test_a_stream_key_holding_another_type_is_a_config_error(redis_server, tmp_path) -> None:
    key = prefix()
    redis_server.client().set(key, "not a stream")
    source = RedisSource(RedisSourceConfig(url=redis_server.url, stream=key), context(tmp_path))
    with pytest.raises(ConfigError, match=f"key '{key}' holds a string, not a stream"):
        await source.start({})
    await source.stop()


async def test_stream_entries_read_but_not_stored_are_read_again(redis_server, tmp_path) -> None:
    """A batch polled and never acknowledged (the worker died before the append): a new
    source from the committed positions reads it again, and nothing else twice."""
    stream = f"again:{prefix()}"
    r = redis_server.client()
    for i in range(10):
        r.xadd(stream, {"n": str(i)})
    config = RedisSourceConfig(url=redis_server.url, stream=stream, batch_size=4, until_end=True)
    first = RedisSource(config, context(tmp_path))
    await first.start({})
    one = await first.poll()
    assert one is not None and one.ack is not None
    await one.ack(None)
    two = await first.poll()  # polled, never stored
    assert two is not None and [x.data["n"] for x in two.records] == ["4", "5", "6", "7"]
    second = RedisSource(config, context(tmp_path))
    await second.start(one.positions)
    rest: list[str] = []
    while (batch := await second.poll()) is not None:
        rest.extend(x.data["n"] for x in batch.records)
        if batch.ack:
            await batch.ack(None)
    await second.stop()
    await first.stop()
    assert rest == [str(i) for i in range(4, 10)]
    assert r.xpending(stream, "meshconnect")["pending"] == 0


async def test_a_stream_name_a_string_cannot_hold_makes_valid_records(
    redis_server, tmp_path
) -> None:
    """A stream named with a tab: its records' subject and id spell it ``\\u0009`` (as the
    canal source spells names), so the store takes them (issue 18 item 7)."""
    from meshconnect.eventrules import attribute_problems

    stream = f"tab\t{prefix()}"
    r = redis_server.client()
    eid = r.xadd(stream, {"n": "1"}).decode()
    config = RedisSourceConfig(url=redis_server.url, stream=stream, until_end=True)
    source = RedisSource(config, context(tmp_path))
    await source.start({})
    got: list[Record] = []
    while (batch := await source.poll()) is not None:
        got.extend(batch.records)
        if batch.ack:
            await batch.ack(None)
    await source.stop()
    spelled = stream.replace("\t", "\\u0009")
    assert [(x.subject, x.id) for x in got] == [(spelled, f"{spelled}-{eid}")]
    assert attribute_problems(got[0]) == {}


# -- connections: ACL user and password, Sentinel ------------------------------------------------


async def test_acl_username_and_password(redis_server, tmp_path) -> None:
    p = prefix()
    r = redis_server.client()
    r.execute_command("ACL", "SETUSER", p, "on", ">s3cret-pw", "~*", "+@all")
    try:
        await write_all(
            sink(redis_server, tmp_path, mode="set", key=p, username=p, password="s3cret-pw"),
            [Record({"ok": True})],
        )
        assert r.get(p) == b'{"ok":true}'
        bad = sink(redis_server, tmp_path, mode="set", key=p, username=p, password="wrong")
        await bad.open(None)
        with pytest.raises(Exception) as caught:
            await bad.write([Record({"ok": False})])
        await bad.close()
        assert bad.classify_error(caught.value) is ConfigError
        assert "wrong" not in str(caught.value)
    finally:
        r.execute_command("ACL", "DELUSER", p)


async def test_sentinel_finds_the_master(redis_server, tmp_path) -> None:
    """A private Sentinel monitoring the private server: the sink and the source ask it
    where the master is."""
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {redis_server.port} 1\n"
    )
    log = (tmp_path / "sentinel.log").open("wb")
    proc = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=log, stderr=log)
    try:
        import redis

        s = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(200):
            try:
                if s.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster"):
                    break
            except redis.ConnectionError:
                pass
            await asyncio.sleep(0.05)
        p = prefix()
        via = {"sentinels": [f"127.0.0.1:{port}"], "sentinel_service": "mymaster"}
        await write_all(
            RedisSink(RedisSinkConfig(mode="xadd", stream=p, **via), context(tmp_path)),
            [Record({"n": 1}, id="a"), Record({"n": 2}, id="b")],
        )
        assert redis_server.client().xlen(p) == 2
        source = RedisSource(RedisSourceConfig(stream=p, until_end=True, **via), context(tmp_path))
        await source.start({})
        got = []
        while (batch := await source.poll()) is not None:
            got.extend(r.data["n"] for r in batch.records)
            if batch.ack:
                await batch.ack(None)
        await source.stop()
        assert got == ["1", "2"]
    finally:
        proc.terminate()
        proc.wait(30)


def _certificates(folder: Path) -> None:
    """A CA and a server certificate for 127.0.0.1, made with `cryptography`."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test-ca"))
        .issuer_name(name("test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (folder / "ca.crt").write_bytes(ca.public_bytes(pem))
    (folder / "server.crt").write_bytes(cert.public_bytes(pem))
    (folder / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


async def test_tls_rediss_url_with_a_ca_file(redis_server, tmp_path) -> None:
    _certificates(tmp_path)
    port = free_port()
    log = (tmp_path / "tls.log").open("wb")
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(tmp_path / "server.crt"),
         "--tls-key-file", str(tmp_path / "server.key"),
         "--tls-ca-cert-file", str(tmp_path / "ca.crt"),
         "--tls-auth-clients", "no", "--save", "", "--dir", str(tmp_path)],
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        url = f"rediss://127.0.0.1:{port}/0"
        config = RedisSinkConfig(url=url, tls_ca_file=str(tmp_path / "ca.crt"), mode="set", key="k")
        for _ in range(200):  # until it listens
            try:
                await write_all(RedisSink(config, context(tmp_path)), [Record({"tls": True})])
                break
            except Exception:
                await asyncio.sleep(0.05)
        import redis

        plain = redis.Redis(
            host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(tmp_path / "ca.crt")
        )
        assert plain.get("k") == b'{"tls":true}'
    finally:
        proc.terminate()
        proc.wait(30)


async def test_xadd_to_a_stream_template_appends_re_delivered_records_once(
    redis_server, tmp_path
) -> None:
    """A stream named by a template (``ev:{data.k}``) is known only once a record names it.
    The sink looked for re-delivered records only in the streams of its committed state and
    a literal `stream`: records of a batch killed before its commit were appended twice to
    every stream the state did not name yet (any stream before the first commit, a stream
    first written in the lost batch after it)."""
    p = prefix()
    first_batch = [Record({"k": "a", "n": i}, id=f"a{i}") for i in range(3)]
    lost_batch = [Record({"k": k, "n": i}, id=f"{k}{i}") for k in "ab" for i in range(3, 6)]

    crashed = sink(redis_server, tmp_path, mode="xadd", stream=p + ":{data.k}")
    await crashed.open(None)
    await crashed.write(first_batch)  # killed before its first commit
    await crashed.close()

    again = sink(redis_server, tmp_path, mode="xadd", stream=p + ":{data.k}")
    await again.open(None)
    await again.write(first_batch)  # re-delivered
    state = await again.flush()
    await again.write(lost_batch)  # stream b is new here; killed before the commit
    await again.close()

    last = sink(redis_server, tmp_path, mode="xadd", stream=p + ":{data.k}")
    await last.open(state)
    await last.write(lost_batch)  # re-delivered
    await last.close()

    r = redis_server.client()
    assert [f[b"ce_id"].decode() for _, f in r.xrange(p + ":a")] == [f"a{i}" for i in range(6)]
    assert [f[b"ce_id"].decode() for _, f in r.xrange(p + ":b")] == [f"b{i}" for i in range(3, 6)]


async def test_offsets_reset_to_end_reads_only_entries_added_afterwards(
    redis_server, tmp_path
) -> None:
    """`meshconnect offsets reset --to end` said the redis source "cannot tell where its
    input ends"; a stream's newest entry is where it ends."""
    p = prefix()
    r = redis_server.client()
    r.xadd(p, {"n": "old"})
    config = RedisSourceConfig(url=redis_server.url, streams=[p, p + ":none"], until_end=True)
    end = await RedisSource(config, context(tmp_path)).end_positions()
    assert end[p + ":none"] == {"last": "0-0", "inflight": [], "ids": []}
    r.xadd(p, {"n": "new"})
    source = RedisSource(config, context(tmp_path))
    await source.start(end)
    got: list[Any] = []
    while (batch := await source.poll()) is not None:
        got.extend(x.data for x in batch.records)
        if batch.ack is not None:
            await batch.ack(None)
    await source.stop()
    assert got == [{"n": "new"}]


async def test_a_position_this_source_never_wrote_is_a_config_error(redis_server, tmp_path) -> None:
    """A position set by hand (`offsets reset --to '{"s": {"last": "garbage"}}'`) made every
    start fail with Redis's "Invalid stream ID", a retried error with a traceback."""
    p = prefix()
    source = RedisSource(RedisSourceConfig(url=redis_server.url, stream=p), context(tmp_path))
    with pytest.raises(ConfigError, match=f"the position of stream '{p}' is not one"):
        await source.start({p: {"last": "garbage"}})
    await source.stop()


@pytest.mark.parametrize("batch_size", [2, 4, 100])
async def test_batch_size_holds_across_several_streams(
    redis_server, tmp_path, batch_size: int
) -> None:
    """Redis applies XREADGROUP's COUNT to each stream: with three streams a batch held up to
    three times `batch_size` entries (and as much memory)."""
    p = prefix()
    r = redis_server.client()
    streams = [f"{p}:{x}" for x in "abc"]
    for stream in streams:
        for i in range(5):
            r.xadd(stream, {"n": str(i)})
    source = RedisSource(
        RedisSourceConfig(
            url=redis_server.url, streams=streams, batch_size=batch_size, until_end=True
        ),
        context(tmp_path),
    )
    await source.start({})
    sizes: list[int] = []
    ids: list[str] = []
    while (batch := await source.poll()) is not None:
        sizes.append(len(batch.records))
        ids.extend(x.id for x in batch.records)
        if batch.ack is not None:
            await batch.ack(None)
    await source.stop()
    assert max(sizes) <= batch_size
    assert sorted(ids) == sorted({f"{s}-{e.decode()}" for s in streams for e, _ in r.xrange(s)})
    assert all(r.xpending(s, "meshconnect")["pending"] == 0 for s in streams)


async def test_xadd_a_stream_with_ids_in_the_future_hides_no_re_delivery(
    redis_server, tmp_path
) -> None:
    """A stream the state does not name is read back to ten minutes before the newest entry
    of the last commit; an entry id in the future (a stream given explicit ids) must not
    push that bound past the entries just written elsewhere."""
    p = prefix()
    r = redis_server.client()
    r.xadd(p + ":future", {"x": "1"}, id="99999999999999-0")
    first = sink(redis_server, tmp_path, mode="xadd", stream=p + ":{data.k}")
    await first.open(None)
    await first.write([Record({"k": "future"}, id="f0")])
    state = await first.flush()
    lost = [Record({"k": "now", "n": i}, id=f"n{i}") for i in range(3)]
    await first.write(lost)  # killed before the commit
    await first.close()

    again = sink(redis_server, tmp_path, mode="xadd", stream=p + ":{data.k}")
    await again.open(state)
    await again.write(lost)
    await again.close()
    assert [f[b"ce_id"] for _, f in r.xrange(p + ":now")] == [b"n0", b"n1", b"n2"]


async def test_xadd_state_names_only_the_streams_written_since_the_last_commit(
    redis_server, tmp_path
) -> None:
    """With a stream template the state named every stream ever written and was written
    whole at each commit: a stream per customer made it grow without bound. It names those
    written since the last commit, and a stream it no longer names is read back from the
    commit's time after a crash."""
    p = prefix()
    s = sink(redis_server, tmp_path, mode="xadd", stream=p + ":{data.k}")
    await s.open(None)
    await s.write([Record({"k": "a"}, id="a0")])
    assert set((await s.flush() or {})["streams"]) == {p + ":a"}
    await s.write([Record({"k": "b"}, id="b0")])
    state = await s.flush()
    assert state is not None and set(state["streams"]) == {p + ":b"}
    lost = [Record({"k": "a"}, id=f"a{i}") for i in range(1, 4)]
    await s.write(lost)  # killed before the commit
    await s.close()

    again = sink(redis_server, tmp_path, mode="xadd", stream=p + ":{data.k}")
    await again.open(state)
    await again.write(lost)
    await again.close()
    assert [f[b"ce_id"] for _, f in redis_server.client().xrange(p + ":a")] == [
        b"a0",
        b"a1",
        b"a2",
        b"a3",
    ]


async def test_a_read_of_large_entries_is_bounded_in_bytes_not_only_entries(
    redis_server, tmp_path
) -> None:
    """COUNT is entries: 40 entries of 1 MiB with batch_size 500 were one 40 MiB read (1,000
    of them a gigabyte, several times that as records). A read asks for what fits in
    READ_BYTES at the size of the last read's largest entry; small entries come back to
    full batches."""
    from meshconnect.connectors.redis.source import READ_BYTES

    stream = f"large:{prefix()}"
    r = redis_server.client()
    big = "x" * (1024 * 1024)
    for i in range(40):
        r.xadd(stream, {"n": str(i), "pad": big})
    for i in range(40, 1040):
        r.xadd(stream, {"n": str(i)})
    config = RedisSourceConfig(url=redis_server.url, stream=stream, batch_size=500, until_end=True)
    source = RedisSource(config, context(tmp_path))
    await source.start({})
    seen: list[str] = []
    sizes: list[int] = []
    while (batch := await source.poll()) is not None:
        if not batch.records:
            continue
        sizes.append(len(batch.records))
        held = sum(len(str(x.data)) for x in batch.records)
        assert held <= READ_BYTES + len(big) + 1024, (len(batch.records), held)
        seen.extend(x.data["n"] for x in batch.records)
        if batch.ack:
            await batch.ack(None)
    await source.stop()
    assert seen == [str(i) for i in range(1040)]
    assert max(sizes) == 500  # small entries fill the batch again
