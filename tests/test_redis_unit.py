"""The redis connector's pieces that need no server: templates, change records of every
canal format, the error mapping, config checks."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
from redis import exceptions as rx

from meshconnect import ConfigError, DataError, Record, RestartError, RetriableError
from meshconnect.connectors.redis.changes import change_of, key_parts
from meshconnect.connectors.redis.client import classify_redis
from meshconnect.connectors.redis.config import RedisSinkConfig, RedisSourceConfig
from meshconnect.connectors.redis.sink import flatten, row_fields
from meshconnect.connectors.redis.template import Template


def cdc(kind: str, data: object, key: str | None = "1") -> Record:
    ext = {"partitionkey": key} if key is not None else {}
    return Record(data, type=f"mysql.{kind}", subject="shop.orders", extensions=ext)


def test_template_renders_attributes_data_extensions_and_time() -> None:
    r = Record(
        {"id": 7, "a": {"b": "x"}},
        subject="orders",
        time="2026-11-29T10:00:00Z",
        extensions={"partitionkey": "7"},
    )
    t = Template("{subject}:{data.a.b}:{partitionkey}:{time:%Y-%m}:{{x}}")
    assert t.render(r) == "orders:x:7:2026-11:{x}"
    assert Template("literal").literal == "literal"


@pytest.mark.parametrize("time", ["2026-11-29t10:00:00z", "2026-11-29T11:00:00.123456789+01:00"])
def test_template_reads_time_in_every_rfc_3339_spelling(time: str) -> None:
    """Issue 20 fault 3's kind: a lower-case t and z are RFC 3339 (a valid CloudEvent time);
    the template failed on them."""
    assert Template("{time:%Y-%m-%dT%H}").render(Record({}, time=time)) == "2026-11-29T10"


def test_template_errors() -> None:
    with pytest.raises(ConfigError, match="unknown placeholder"):
        Template("{Bad Name}")
    with pytest.raises(ConfigError, match="unbalanced"):
        Template("a}b")
    with pytest.raises(DataError, match=r"\{data.missing\} has no value"):
        Template("k:{data.missing}").render(Record({"id": 1}))


def test_key_parts_undo_the_partitionkey_escaping() -> None:
    assert key_parts("a\\|b|c") == ["a|b", "c"]
    assert key_parts("a\\\\|\\|c") == ["a\\", "|c"]
    assert key_parts("1001") == ["1001"]


def flat(
    row: dict[str, object], kind: str = "UPDATE", old: object = None, **more: object
) -> dict[str, object]:
    return {
        "data": [row],
        "old": old,
        "isDdl": False,
        "pkNames": more.get("pk", ["id"]),
        "type": kind,
        "mysqlType": more.get("types", {}),
        "table": "orders",
        "database": "shop",
    }


def test_canal_flatmessage_upsert_delete_and_key_change() -> None:
    up = change_of(cdc("insert", flat({"id": "1", "n": "x"}, "INSERT")))
    assert (up.op, up.row, up.key, up.old_key) == ("upsert", {"id": "1", "n": "x"}, "1", None)
    gone = change_of(cdc("delete", flat({"id": "1", "n": "x"}, "DELETE")))
    assert (gone.op, gone.row) == ("delete", {"id": "1", "n": "x"})
    moved = change_of(cdc("update", flat({"id": "2", "n": "x"}, old=[{"id": "1"}]), key="2"))
    assert (moved.key, moved.old_key) == ("2", "1")


def test_canal_composite_and_datetime_key_change() -> None:
    row = {"a": "x|y", "at": "2024-02-29 23:59:59.500", "v": "1"}
    record = cdc(
        "update",
        flat(
            row,
            old=[{"at": "2024-02-28 01:00:00"}],
            pk=["a", "at"],
            types={"a": "varchar(10)", "at": "datetime(3)"},
        ),
        key="x\\|y|2024-02-29T23:59:59.500000",
    )
    assert change_of(record).old_key == "x\\|y|2024-02-28T01:00:00"


def test_debezium_and_row_formats() -> None:
    envelope = {"before": {"id": 1}, "after": {"id": 1, "n": 2}, "source": {}, "op": "u"}
    c = change_of(cdc("update", envelope))
    assert (c.op, c.row, c.old_row) == ("upsert", {"id": 1, "n": 2}, {"id": 1})
    d = change_of(cdc("delete", {"before": {"id": 1}, "after": None, "source": {}, "op": "d"}))
    assert (d.op, d.row) == ("delete", {"id": 1})
    assert change_of(cdc("delete", {"id": 1})).op == "delete"
    assert change_of(cdc("read", {"id": 1})).op == "upsert"
    assert change_of(cdc("ddl", {"sql": "ALTER TABLE …"})).op == "skip"
    with pytest.raises(DataError, match="not an object"):
        change_of(cdc("insert", [1]))


def test_hash_fields() -> None:
    assert flatten({"a": {"b": 1, "c": None}, "l": [1], "t": True}) == {
        "a.b": "1",
        "l": "[1]",
        "t": "true",
    }
    assert row_fields({"id": 1, "j": {"k": 1}, "n": None}) == {"id": "1", "j": '{"k":1}'}


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (rx.ConnectionError("lost"), RetriableError),
        (rx.TimeoutError("slow"), RetriableError),
        (rx.BusyLoadingError("LOADING"), RetriableError),
        (rx.ReadOnlyError("READONLY"), RetriableError),
        (rx.OutOfMemoryError("OOM"), RetriableError),
        (rx.AuthenticationError("bad"), ConfigError),
        (rx.NoPermissionError("NOPERM"), ConfigError),
        (rx.ResponseError("NOGROUP No such key"), RestartError),
        (rx.ResponseError("UNBLOCKED the stream key no longer exists"), RestartError),
        (rx.ResponseError("DB index is out of range"), ConfigError),
        (rx.ResponseError("WRONGTYPE Operation against a key"), DataError),
        (rx.ResponseError("BUSY Redis is busy running a script"), RetriableError),
        (ValueError("x"), None),
    ],
)
def test_redis_exceptions_map_onto_the_taxonomy(exc: BaseException, kind: type | None) -> None:
    assert classify_redis(exc) is kind


def test_config_checks() -> None:
    with pytest.raises(pydantic.ValidationError, match="put them in `username` and `password`"):
        RedisSinkConfig(url="redis://:hunter2@localhost:6379/0")
    with pytest.raises(pydantic.ValidationError, match="needs `stream`"):
        RedisSinkConfig(mode="xadd")
    with pytest.raises(pydantic.ValidationError, match="needs `channels`"):
        RedisSourceConfig(mode="pubsub")
    with pytest.raises(pydantic.ValidationError, match="needs `stream` or `streams`"):
        RedisSourceConfig()
    with pytest.raises(pydantic.ValidationError, match="HOST:PORT"):
        RedisSourceConfig(stream="s", sentinels=["nohost"])
    for start in ["abc", "-1", "1-", "now"]:
        with pytest.raises(pydantic.ValidationError, match="group_start is 0, \\$ or an entry id"):
            RedisSourceConfig(stream="s", group_start=start)
    for start in ["0", "$", "1700000000000-0", "1700000000000"]:
        assert RedisSourceConfig(stream="s", group_start=start).group_start == start
    secret = RedisSinkConfig(password="hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret.model_dump())


def test_validate_names_the_field_and_never_prints_a_credential(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from meshconnect.cli import cli

    path = tmp_path / "p.yaml"
    path.write_text(
        "pipelines:\n"
        "  - name: p\n"
        "    source:\n"
        "      connector: redis\n"
        '      config: {url: "redis://:hunter2@localhost:6379/0", stream: s}\n'
        "    sinks:\n"
        "      - connector: redis\n"
        "        config: {mode: xadd, password: hunter3}\n"
    )
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    assert f"{path}:5:21: pipelines[0].source.config.url: credentials in the URL" in result.output
    assert (
        "pipelines[0].sinks[0].config: Value error, mode xadd needs `stream`" in result.output
        or ("mode xadd needs `stream`" in result.output)
    )
    assert "hunter2" not in result.output and "hunter3" not in result.output


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0?password=Corr3ctHorse",
        "redis://127.0.0.1:6379/0?PASSWORD=x",
        "redis://127.0.0.1:6379/0?username=u&password=p",
        "redis://:pw@127.0.0.1:6379/0",
    ],
)
def test_credentials_in_the_url_are_refused(url: str) -> None:
    """A password in the URL's query string was taken by redis-py and kept in every record's
    ``source`` (found by a new-user trial): refused like one in the user info."""
    from meshconnect.connectors.redis.config import RedisSinkConfig

    with pytest.raises(ValueError, match="credentials in the URL"):
        RedisSinkConfig(url=url)


def test_the_described_server_holds_no_query_or_user_info() -> None:
    from meshconnect.connectors.redis.client import describe
    from meshconnect.connectors.redis.config import RedisSinkConfig

    config = RedisSinkConfig(url="redis://127.0.0.1:6379/2?socket_keepalive=true")
    assert describe(config) == "redis://127.0.0.1:6379/2"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key": "bad:{data.id"}, "unbalanced"),
        ({"key": "b:}x"}, "unbalanced"),
        ({"ttl": 0}, "ttl must be at least 1ms"),
        ({"ttl": 0.0001}, "ttl must be at least 1ms"),
        ({"ttl": 1e19}, "ttl is beyond what Redis can expire at"),
        ({"key": "k:{data.}"}, "empty field name"),
        ({"key": "k:{data..id}"}, "empty field name"),
        ({"value_field": ""}, "dotted path"),
        ({"value_field": "a..b"}, "dotted path"),
        ({"timeout": 0}, "greater than 0"),
        ({"stream": "s"}, "stream applies to mode xadd only, and mode is set"),
        ({"maxlen": 10}, "maxlen applies to mode xadd only"),
        ({"channel": "c"}, "channel applies to mode publish only"),
        ({"replace": False}, "replace applies to mode hset only"),
    ],
)
def test_broken_templates_and_ttls_are_refused_by_the_config(
    options: dict[str, object], message: str
) -> None:
    """`validate` said ok for these and `run` then failed (a template), or keys never expired
    (ttl below Redis's 1 ms) — found by the redis trial."""
    from meshconnect.connectors.redis.config import RedisSinkConfig

    with pytest.raises(ValueError, match=message):
        RedisSinkConfig(url="redis://127.0.0.1:6379/0", mode="set", **options)


def test_a_key_set_for_another_mode_is_refused() -> None:
    """A `ttl` on `xadd`, `channels` on a stream source: ignored silently, the user expected
    an expiry or a subscription."""
    with pytest.raises(ValueError, match="ttl applies to mode set and hset only, and mode is xadd"):
        RedisSinkConfig(mode="xadd", stream="s", ttl="1h")
    with pytest.raises(ValueError, match="key applies to mode set and hset only"):
        RedisSinkConfig(mode="publish", channel="c", key="k")
    with pytest.raises(ValueError, match="channels applies to mode pubsub only"):
        RedisSourceConfig(stream="s", channels=["c"])
    with pytest.raises(ValueError, match="group applies to mode stream only"):
        RedisSourceConfig(mode="pubsub", channels=["c"], group="g")
    with pytest.raises(ValueError, match="format applies to mode pubsub only"):
        RedisSourceConfig(stream="s", format="text")
    assert RedisSinkConfig(mode="hset", key="k", ttl="1h", replace=False).replace is False


def test_validate_puts_each_config_mistake_at_its_own_line(tmp_path: Path) -> None:
    """A ttl of 0 and a broken key template were reported at the `config:` mapping's first
    line, as `config: key: …`; a key set for another mode and `timeout: 0` (never connects)
    passed validation."""
    from click.testing import CliRunner

    from meshconnect.cli import cli

    path = tmp_path / "p.yaml"
    path.write_text(
        "pipelines:\n"
        "  - name: p\n"
        "    sinks:\n"
        "      - connector: redis\n"
        "        topics: [t]\n"
        "        config:\n"
        "          mode: set\n"
        "          ttl: 0\n"
        '          key: "order:{data.id"\n'
        "          stream: s\n"
        "          timeout: 0\n"
        "      - connector: redis\n"
        "        name: other\n"
        "        topics: [t]\n"
        "        config:\n"
        '          key: "{dta.id}"\n'
    )
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert f"{path}:8:16: pipelines[0].sinks[0].config.ttl: ttl must be at least 1ms" in lines[0]
    assert lines[1].startswith(
        f"{path}:9:16: pipelines[0].sinks[0].config.key: unbalanced '{{' at character 7"
    )
    assert lines[2].startswith(
        f"{path}:10:19: pipelines[0].sinks[0].config.stream: stream applies to mode xadd only"
    )
    assert lines[3].startswith(f"{path}:11:20: pipelines[0].sinks[0].config.timeout:")
    assert lines[4].startswith(
        f"{path}:16:16: pipelines[0].sinks[1].config.key: unknown placeholder 'dta.id'"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:6379/abc", "path is the database number"),  # was database 0
        ("redis:/127.0.0.1", "path is the database number"),  # was localhost:6379
        ("redis:///2", "names no host"),
        ("redis://127.0.0.1:99999/0", "port is not a number"),
        ("redis://127.0.0.1:6379/0?foo=bar", "query parameter 'foo'"),  # a TypeError at start
        ("redis://127.0.0.1:6379/0?protocol=3", "query parameter 'protocol'"),
        ("redis://127.0.0.1:6379/0?db=3", "database twice"),
        ("unix://", "socket's absolute path"),
    ],
)
def test_urls_redis_py_would_read_otherwise_are_refused(url: str, message: str) -> None:
    """Each passed `validate`: some then ran against another database or server than the
    URL seems to name, the others failed at the first connection."""
    with pytest.raises(ValueError, match=message):
        RedisSourceConfig(url=url, stream="s")


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1",
        "redis://[::1]:6379/1",
        "rediss://cache.internal:6380/0?socket_keepalive=true",
        "unix:///run/redis.sock?db=2",
    ],
)
def test_plain_urls_are_accepted(url: str) -> None:
    assert RedisSourceConfig(url=url, stream="s").url == url


def test_with_sentinels_the_url_needs_no_host() -> None:
    config = RedisSinkConfig(url="redis:///2", sentinels=["10.0.0.5:26379"], key="k")
    assert config.url == "redis:///2"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stream": "s", "type": ""}, "type is each record's CloudEvent type: it must be a non"),
        ({"stream": "s", "type": "a\tb"}, "must not contain U\\+0009"),
        ({"stream": "s", "group": ""}, "group is empty"),
        ({"stream": "s", "consumer": ""}, "consumer is empty"),
        ({"streams": ["a", "b", "a"]}, "streams names 'a' twice"),
        ({"streams": ["a", ""]}, "streams holds an empty name"),
        ({"mode": "pubsub", "channels": ["c", "c"]}, "channels names 'c' twice"),
    ],
)
def test_source_names_a_record_or_redis_cannot_take_are_refused(
    options: dict[str, object], message: str
) -> None:
    """`type: ""` made every record an invalid CloudEvent (an empty type); an empty group or
    consumer name and a stream listed twice were taken as they were."""
    with pytest.raises(ValueError, match=message):
        RedisSourceConfig(**options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key": ""}, "key is empty"),
        ({"mode": "xadd", "stream": ""}, "stream is empty"),
        ({"mode": "publish", "channel": ""}, "channel is empty"),
        ({"mode": "xadd", "stream": "s", "id_field": ""}, "id_field is empty"),
    ],
)
def test_empty_sink_names_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisSinkConfig(**options)


@pytest.mark.parametrize(
    ("eid", "time"),
    [
        ("1-1", "1970-01-01T00:00:00.001Z"),
        ("1700000000123-4", "2023-11-14T22:13:20.123Z"),
        ("253402300799999-0", "9999-12-31T23:59:59.999Z"),
        ("253402300800000-0", None),
        ("18446744073709551615-0", None),
    ],
)
def test_an_entry_id_past_year_9999_gives_no_time(eid: str, time: str | None) -> None:
    """An explicit entry id past 9999 (XADD s 18446744073709551615-0 …) made the record's
    time `584556019-04-03T14:25:51.615Z`, no RFC 3339 time: the event was invalid."""
    from meshconnect import eventrules
    from meshconnect.connectors.redis.source import _entry_time

    assert _entry_time(eid) == time
    assert time is None or eventrules.attribute_problem("time", time) is None


@pytest.mark.parametrize("block", [0, "0ms", 0.0005])
def test_a_block_under_1ms_is_refused(block: object) -> None:
    """`block: 0` (Redis's BLOCK 0 means forever) made the pub/sub source return at once
    without reading: it spun a core, read no message and did not stop on SIGTERM."""
    with pytest.raises(ValueError, match="block must be at least 1ms"):
        RedisSourceConfig(mode="pubsub", channels=["c"], block=block)
