"""The canal source without a server: config and filters, GTID sets, positions through
transactions and the resume skip logic, value formats and DDL parsing."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from meshconnect import EncodedRecord, Record, RetriableError, eventrules, jsonvalue
from meshconnect.api import ConnectorContext
from meshconnect.connectors.canal.config import CanalSourceConfig, ColumnFilter, TableMatcher
from meshconnect.connectors.canal.ddl import ddl_info, parse_ddl
from meshconnect.connectors.canal.events import (
    Column,
    GtidEvent,
    QueryEvent,
    RotateEvent,
    RowsEvent,
    Table,
    XidEvent,
)
from meshconnect.connectors.canal.formats import Formatter, Shape, TxMeta
from meshconnect.connectors.canal.positions import GtidSet, Position
from meshconnect.connectors.canal.server import sql_type
from meshconnect.connectors.canal.snapshot import decode_key, encode_key
from meshconnect.connectors.canal.source import CanalSource
from meshconnect.records import OWN_ENCODING

# -- config and filters ------------------------------------------------------------------------


def test_the_binding_yaml_config_validates() -> None:
    config = CanalSourceConfig.model_validate(
        {
            "host": "127.0.0.1",
            "port": 3306,
            "user": "cdc",
            "password": "secret",
            "server_id": 1001,
            "include": ["shop\\..*"],
            "snapshot": "initial",
            "format": "canal",
        }
    )
    assert config.password.get_secret_value() == "secret"
    assert "secret" not in repr(config)


@pytest.mark.parametrize(
    "bad",
    [{"snapshot": "always"}, {"format": "avro"}, {"include": ["("]}, {"server_id": 0}],
)
def test_bad_config_values_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CanalSourceConfig.model_validate({"user": "cdc", "server_id": 1, **bad})


def test_table_filters_are_anchored_and_case_insensitive() -> None:
    match = TableMatcher(["shop\\..*", "crm\\.users"], ["shop\\.tmp_.*"])
    assert match("shop", "orders") and match("SHOP", "Orders")
    assert match("crm", "users") and not match("crm", "users2")
    assert not match("shop", "tmp_x") and not match("myshop", "orders")
    assert not match("crmx", "users")


def test_column_filter_keeps_indexes() -> None:
    keep = ColumnFilter(["s\\.t\\.(id|name|email)"], ["s\\.t\\.email"])
    assert keep.keep("s", "t", ["id", "name", "email", "secret"]) == [0, 1]
    assert ColumnFilter([], []).keep("s", "t", ["a"]) is None


def test_a_catastrophic_filter_pattern_on_a_hostile_table_name_answers_at_once() -> None:
    """Issue 19 item 1 sibling: the filters ran on Python's backtracking re, so '(a+)+$' and
    a table named with 63 a's and '!' (names come from the server: whoever may create a table
    chooses them) stalled the whole worker; on RE2 it is linear."""
    import time

    match = TableMatcher(["(a+)+$", "shop\\..*"], [])
    keep = ColumnFilter(["s\\.t\\.(a+)+$"], [])
    start = time.monotonic()

    assert not match("a" * 64, "a" * 63 + "!")
    assert keep.keep("s", "t", ["a" * 63 + "!", "aaa"]) == [1]
    assert time.monotonic() - start < 1
    assert match("Shop", "x\ny")  # case-insensitive, "." takes a newline


def test_a_filter_pattern_re2_cannot_run_is_a_config_error() -> None:
    with pytest.raises(ValidationError) as caught:
        CanalSourceConfig.model_validate({"user": "cdc", "server_id": 1, "exclude": ["(?!tmp).*"]})

    assert "bad regular expression '(?!tmp).*': invalid perl operator: (?!" in str(caught.value)


# -- GTID sets and positions -------------------------------------------------------------------


def test_mariadb_gtid_set_keeps_the_last_per_domain() -> None:
    gtids = GtidSet("0-1-10,1-2-5")
    gtids.add("0-1-11")
    gtids.add("2-3-1")
    assert str(gtids) == "0-1-11,1-2-5,2-3-1"


def test_mysql_gtid_set_merges_intervals() -> None:
    uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
    gtids = GtidSet(f"{uuid}:1-5:7")
    gtids.add(f"{uuid}:6")
    gtids.add(f"{uuid}:8")
    gtids.add(f"{uuid}:10")
    assert str(gtids) == f"{uuid}:1-8:10"


def test_position_round_trips_and_rejects_garbage() -> None:
    pos = Position("binlog.000002", 1234, 2, 0, "0-1-9", 1, {"tables": [["s", "t"]]})
    assert Position.from_dict(pos.to_dict()) == pos
    with pytest.raises(ValueError):
        Position.from_dict({"pos": 4})
    assert Position("b.000010", 4).sort_key() > Position("b.000009", 99999).sort_key()


# -- the stream state machine ------------------------------------------------------------------

TABLE = Table(
    7,
    "shop",
    "orders",
    (Column("id", 3), Column("amount", 246, metadata=(10, 2))),
    ("id",),
)


def source(**config: Any) -> CanalSource:
    src = CanalSource(
        CanalSourceConfig(user="u", server_id=5, format="row", **config),
        ConnectorContext("p", "canal", logging.getLogger("test")),
    )
    src.server.table_schema = lambda schema, table: None  # type: ignore[method-assign]
    src.server.charset_maxlen = dict  # type: ignore[method-assign]
    src._reset(Position("binlog.000001", 100, filter=src.filter))
    return src


def insert(pos: int, *ids: int) -> RowsEvent:
    return RowsEvent(
        "binlog.000001", pos, 1700000000, "insert", TABLE, [(i, Decimal("1.50")) for i in ids]
    )


TRANSACTION = [
    GtidEvent("binlog.000001", 150, 1700000000, "0-1-7"),
    QueryEvent("binlog.000001", 200, 1700000000, "shop", "BEGIN"),
    insert(300, 1, 2, 3),
    insert(400, 4, 5),
    XidEvent("binlog.000001", 450, 1700000000, 99),
]


def test_positions_inside_a_transaction_point_at_its_start_with_events_to_skip() -> None:
    src = source()
    out: list[Any] = []
    seen = []
    for event in TRANSACTION:
        src.handle(event, out)
        p = src.position()
        seen.append((p.file, p.pos, p.events, p.gtids))
    assert seen == [
        ("binlog.000001", 100, 0, ""),
        ("binlog.000001", 100, 0, ""),
        ("binlog.000001", 100, 1, ""),
        ("binlog.000001", 100, 2, ""),
        ("binlog.000001", 450, 0, "0-1-7"),
    ]
    assert [r.data["id"] for r in out] == [1, 2, 3, 4, 5]
    assert out[0].type == "mysql.insert" and out[0].extensions["gtid"] == "0-1-7"


def test_resuming_mid_transaction_skips_exactly_what_was_delivered() -> None:
    src = source()
    src._reset(Position("binlog.000001", 100, events=1))
    out: list[Any] = []
    for event in TRANSACTION:
        src.handle(event, out)
    assert [r.data["id"] for r in out] == [4, 5]
    # ... and the same with rows to skip inside the next event.
    src._reset(Position("binlog.000001", 100, events=1, rows=1))
    out = []
    for event in TRANSACTION:
        src.handle(event, out)
    assert [r.data["id"] for r in out] == [5]


def _run(src: CanalSource, position: Position, cut: int) -> tuple[list[Any], Position]:
    """A run from ``position`` over the events of ``TRANSACTION`` from there on, killed
    after ``cut`` of them: its records and the position it handed out last (every poll here
    hands one out, as the snapshot's do)."""
    src._reset(position)
    starts = [100] + [e.log_pos for e in TRANSACTION]
    events = [e for e, at in zip(TRANSACTION, starts, strict=False) if at >= position.pos]
    out: list[Any] = []
    handed = position
    for event in events[:cut]:
        records: list[Any] = []
        src.handle(event, records)
        out += records
        handed = Position.from_dict(dict(src.hand_out(records, force=True).positions["binlog"]))
    return out, handed


def test_a_run_that_stops_while_reading_back_to_its_resume_point_keeps_it() -> None:
    """However runs are cut short (after the first event, mid-transaction, before reaching
    the events not yet delivered), each row is delivered exactly once: a position handed out
    while a resumed run still skips what was delivered is the resume point, not before it."""
    n = len(TRANSACTION)
    for a in range(n + 1):
        for b in range(n + 1):
            src = source()
            first, reached = _run(src, Position("binlog.000001", 100), a)
            second, reached = _run(src, reached, b)
            rest, _ = _run(src, reached, n)
            ids = [r.data["id"] for r in first + second + rest]
            assert ids == [1, 2, 3, 4, 5], (a, b)


def test_positions_while_skipping_never_go_back() -> None:
    src = source()
    resume = Position("binlog.000001", 100, events=1, rows=1, gtids="0-1-6")
    src._reset(resume)
    seen = [(p.pos, p.events, p.rows) for p in [src.position()]]
    for event in TRANSACTION:
        src.handle(event, [])
        p = src.position()
        seen.append((p.pos, p.events, p.rows))
    assert seen == [(100, 1, 1), (100, 1, 1), (100, 1, 1), (100, 1, 1), (100, 2, 0), (450, 0, 0)]


DOCS = Table(8, "shop", "docs", (Column("id", 3), Column("j", 245)), ("id",))


class ListReader:
    """A binlog reader over ``EVENTS`` (the first starts at 100), read from ``log_pos``."""

    EVENTS: list[Any] = []

    def __init__(self, connect: Any, *, log_pos: int, **options: Any) -> None:
        starts = [100] + [e.log_pos for e in self.EVENTS]
        self.events = [e for e, at in zip(self.EVENTS, starts, strict=False) if at >= log_pos]

    def read(self, max_events: int, timeout: float) -> list[Any]:
        out, self.events = self.events[:max_events], self.events[max_events:]
        return out

    def close(self) -> None:
        pass


def test_a_poll_that_fails_midway_is_read_again_whole_with_its_failures_once() -> None:
    """A poll that fails after it handled some events (here a schema lookup loses its
    connection) hands out nothing: the retried poll reads again from the position handed
    out last, so no row is lost, and a row that failed before the error is reported once."""
    ListReader.EVENTS = [
        GtidEvent("binlog.000001", 150, 1700000000, "0-1-7"),
        RowsEvent("binlog.000001", 250, 1700000000, "insert", DOCS, [(9, "not json")]),
        insert(300, 1, 2, 3),
        XidEvent("binlog.000001", 450, 1700000000, 99),
    ]
    src = source()
    src._reader_cls = ListReader
    lost = [RetriableError("canal: SELECT failed: connection lost")]

    def table_schema(schema: str, table: str) -> None:
        if table == "orders" and lost:
            raise lost.pop()

    src.server.table_schema = table_schema  # type: ignore[method-assign]
    with pytest.raises(RetriableError):
        src._poll()
    batch = src._poll()
    assert [r.data["id"] for r in batch.records] == [1, 2, 3]
    assert [r.id for r, _ in batch.failures] == ["binlog.000001:250:0"]
    assert batch.positions["binlog"]["pos"] == 450


@pytest.mark.parametrize("inside", [True, False])
def test_a_failed_poll_leaves_the_stream_at_the_position_handed_out_last(inside: bool) -> None:
    """After a poll that failed midway (its records thrown away), the stream state is the
    position handed out last at once, not only once a new reader opens: a snapshot step
    hands out a position without reading first, and one past the thrown-away events would
    lose them. The failure (a schema lookup of ``docs`` losing its connection) comes inside
    the transaction whose rows were handled, or in the next one."""
    docs = RowsEvent("binlog.000001", 0, 1700000000, "insert", DOCS, [(9, "{}")])
    if inside:
        docs.log_pos = 420
        events = [*TRANSACTION[:4], docs, TRANSACTION[4]]
    else:
        docs.log_pos = 550
        events = [
            *TRANSACTION,
            GtidEvent("binlog.000001", 500, 1700000000, "0-1-8"),
            docs,
            XidEvent("binlog.000001", 600, 1700000000, 100),
        ]
    ListReader.EVENTS = events
    src = source()
    src._reader_cls = ListReader
    handed = src.handed
    lost = [RetriableError("canal: SELECT failed: connection lost")]

    def table_schema(schema: str, table: str) -> None:
        if table == "docs" and lost:
            raise lost.pop()

    src.server.table_schema = table_schema  # type: ignore[method-assign]
    with pytest.raises(RetriableError):
        src._poll()
    assert src.position() == handed
    batch = src.hand_out([], force=True)  # as a snapshot step hands one out
    assert batch.positions["binlog"] == handed.to_dict()
    batch = src._poll()
    assert [r.data["id"] for r in batch.records] == [1, 2, 3, 4, 5, 9]
    assert batch.positions["binlog"]["pos"] == events[-1].log_pos


def test_rotate_and_ddl_move_the_position_and_ddl_is_a_record() -> None:
    src = source(include=["shop\\..*"])
    out: list[Any] = []
    src.handle(RotateEvent("binlog.000002", 4, 0, "binlog.000002", 4), out)
    src.handle(GtidEvent("binlog.000002", 60, 1, "0-1-8", standalone=True), out)
    src.handle(QueryEvent("binlog.000002", 160, 1, "shop", "ALTER TABLE orders ADD x INT"), out)
    src.handle(QueryEvent("binlog.000002", 260, 1, "other", "DROP TABLE other.t"), out)
    assert [(r.type, r.subject, r.data["type"]) for r in out] == [
        ("mysql.ddl", "shop.orders", "ALTER")
    ]
    p = src.position()
    assert (p.file, p.pos, p.events, p.gtids) == ("binlog.000002", 260, 0, "0-1-8")


def test_a_batch_without_records_carries_the_position_once_per_heartbeat() -> None:
    src = source(heartbeat_interval=3600)
    src.handle(XidEvent("binlog.000001", 500, 1, 1), [])
    first = src.hand_out([])
    assert first.positions["binlog"]["pos"] == 500
    src.handle(XidEvent("binlog.000001", 600, 1, 2), [])
    assert src.hand_out([]).positions == {}  # throttled
    assert src.hand_out([], force=True).positions["binlog"]["pos"] == 600


# -- formats -----------------------------------------------------------------------------------

COLUMNS = ("id", "d", "f", "ts", "dt", "tm", "b", "s", "j")


def shape(binary: str = "base64") -> Shape:
    columns = [
        Column("id", 8, unsigned=True),
        Column("d", 246, metadata=(20, 4)),
        Column("f", 4),
        Column("ts", 17, metadata=3),
        Column("dt", 18, metadata=6),
        Column("tm", 19, metadata=2),
        Column("b", 252),
        Column("s", 248, set_values=("a", "b")),
        Column("j", 245),
    ]
    return Shape.build("s", "t", COLUMNS, columns, None, None, binary, ("id",))


IMAGE = (
    2**64 - 1,
    Decimal("-1.2500"),
    5.179999828338623,
    dt.datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=dt.UTC),
    dt.datetime(2024, 1, 2, 3, 4, 5, 1),
    -dt.timedelta(hours=1, microseconds=500000),
    b"\x00\xff",
    ("a", "b"),
    {"k": [1, None]},
)
META = TxMeta("binlog.000003", 999, 1700000000, "0-1-3", "0-1-3", 1)


def test_row_values_are_typed_and_json_safe() -> None:
    assert shape().row(IMAGE) == {
        "id": 18446744073709551615,
        "d": "-1.2500",
        "f": 5.18,
        "ts": "2024-01-02T03:04:05.120Z",
        "dt": "2024-01-02T03:04:05.000001",
        "tm": "-01:00:00.50",
        "b": "AP8=",
        "s": ["a", "b"],
        "j": {"k": [1, None]},
    }


def test_canal_values_are_strings_and_binary_as_configured() -> None:
    assert shape().canal(IMAGE) == {
        "id": "18446744073709551615",
        "d": "-1.2500",
        "f": "5.18",
        "ts": "2024-01-02 03:04:05.120",
        "dt": "2024-01-02 03:04:05.000001",
        "tm": "-01:00:00.50",
        "b": "AP8=",
        "s": "a,b",
        "j": '{"k":[1,null]}',
    }
    assert shape("latin1").canal(IMAGE)["b"] == "\x00\xff"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("0.00000001"), "0.00000001"),  # str would write 1E-8
        (Decimal("-0.0000005"), "-0.0000005"),
        (Decimal("0.000001"), "0.000001"),
        (Decimal("1E+3"), "1000"),
        (Decimal("-0.00"), "-0.00"),
        (Decimal("12345678901234567890.1234"), "12345678901234567890.1234"),
    ],
)
def test_canal_decimals_are_fixed_point_with_every_digit(value: Decimal, text: str) -> None:
    image = (IMAGE[0], value, *IMAGE[2:])
    assert shape().canal(image)["d"] == text


def test_canal_update_has_only_changed_columns_in_old() -> None:
    fmt = Formatter("canal", "mysql://h:1", "p")
    out: list[Any] = []
    after = (IMAGE[0], Decimal("2.0000"), *IMAGE[2:])
    fmt.change("update", shape(), IMAGE, after, META, 0, out)
    msg = out[0].data
    assert msg["old"] == [{"d": "-1.2500"}] and msg["data"][0]["d"] == "2.0000"
    assert msg["type"] == "UPDATE" and msg["pkNames"] == ["id"] and msg["isDdl"] is False
    assert msg["es"] == 1700000000000 and msg["gtid"] == "0-1-3" and msg["sql"] == ""
    assert msg["mysqlType"]["id"] == "bigint(20) unsigned" and msg["sqlType"]["id"] == 3
    assert out[0].id == "binlog.000003:999:0" and out[0].extensions["partitionkey"] == str(
        2**64 - 1
    )


@pytest.mark.parametrize("fmt", ["canal", "row", "debezium"])
@pytest.mark.parametrize("op", ["insert", "delete"])
@pytest.mark.parametrize("key", [("id",), ("id", "d"), ()])
@pytest.mark.parametrize("gtid", ["0-1-3", None])
@pytest.mark.parametrize("encoded", [False, True])
def test_changes_of_an_event_are_the_records_change_makes_row_by_row(
    fmt: str, op: str, key: tuple[str, ...], gtid: str | None, encoded: bool
) -> None:
    """``changes`` builds an event's rows with what they share made once; the records are
    those of ``change`` for each row (Canal's ``ts``, the build time, aside), from ``first``
    on, and a row whose values cannot be made is reported as ``change`` reports it. So they
    are when ``encoded``: then ``canal`` rows are EncodedRecords holding the bytes
    ``jsonvalue.dumps`` writes for the dict."""
    columns = [Column("id", 8, unsigned=True), Column("d", 246, metadata=(20, 4)), Column("j", 245)]
    s = Shape.build("s", "t", ("id", "d", "j"), columns, None, None, "base64", key)
    meta = TxMeta("binlog.000003", 999, 1700000000, gtid or "binlog.000003:4", gtid, 1)
    images = [(i, Decimal(i) / 4, "[1]") for i in range(5)]
    images[1] = (1, None, None)
    images[3] = (True, Decimal("-0.0001"), '{"a": null}')
    images[4] = (4, Decimal(1), "not json")  # a JSON column: a failure in ``row`` format
    one = Formatter(fmt, "mysql://h:1", "p", encoded=encoded)
    each = Formatter(fmt, "mysql://h:1", "p")
    got: list[Record] = []
    one.changes(op, s, images, meta, 1, got)
    if encoded and fmt == "canal":
        assert got and all(isinstance(r, EncodedRecord) for r in got)
        for r in got:
            encoding = r.encoded_data
            assert encoding is not None
            assert jsonvalue.dumps(r.data) == encoding
    else:
        assert {type(r) for r in got} == {Record}
    want: list[Record] = []
    for i in range(1, len(images)):
        before, after = (None, images[i]) if op == "insert" else (images[i], None)
        each.change(op, s, before, after, meta, i, want)

    def plain(records: list[Record]) -> list[dict[str, Any]]:
        out = [r.to_dict() for r in records]
        for d in out:
            if isinstance(d.get("data"), dict):
                d["data"].pop("ts", None)
                d["data"].pop("ts_ms", None)
        return out

    assert plain(got) == plain(want)
    assert [(plain([r]), str(e)) for r, e in one.failures] == [
        (plain([r]), str(e)) for r, e in each.failures
    ]
    assert len(one.failures) == (0 if fmt == "canal" else 1)


@pytest.mark.parametrize(
    "text",
    ['"quoted" \\ back', "tab\tnew\nline\x00\x1f\x7f", "é中😀\u2028\u2029", "", "a" * 5000],
)
def test_encoded_canal_rows_are_the_bytes_of_the_dict_rows(text: str) -> None:
    """An EncodedRecord's bytes are exactly what the store writes for the dict the same event
    gives without ``encoded`` (escapes, non-ASCII, NULLs, both key layouts), and its data,
    once read, equals that dict."""
    columns = [Column("id", 3), Column("v", 15, metadata=20000), Column("d", 246, metadata=(10, 2))]
    for key in [("id",), ("v", "id"), ()]:
        s = Shape.build("s", 't"q', ("id", "v", "d"), columns, None, None, "base64", key)
        images = [(1, text, Decimal("1.50")), (2, None, None), (-3, text[::-1], Decimal("-0.01"))]
        for op in ("insert", "delete"):
            plain, fast = Formatter("canal", "m", "p"), Formatter("canal", "m", "p", encoded=True)
            plain.clock = fast.clock = lambda: 1700000000.123
            want: list[Record] = []
            got: list[Record] = []
            plain.changes(op, s, images, META, 0, want)
            fast.changes(op, s, images, META, 0, got)
            assert len(got) == 3 and all(isinstance(r, EncodedRecord) for r in got)
            assert [r.encoded_data for r in got] == [jsonvalue.dumps(r.data) for r in want]
            assert [r.to_dict() for r in got] == [r.to_dict() for r in want]
            # Given to the store unchecked: the extensions are valid (the key's spelling).
            assert all(type(r) is OWN_ENCODING for r in got)
            assert [eventrules.extensions_problem(r.extensions) for r in got] == [None] * 3


def test_encoded_canal_rows_of_an_event_with_a_bad_position_are_checked_by_the_store() -> None:
    """The source checks the extensions an event's rows share once; a position the store would
    refuse (a binlog offset past a CloudEvents Integer, in a file grown past 2 GiB by one big
    transaction) makes the rows checked records: the store names each (a dead letter) instead
    of storing an invalid CloudEvent."""
    from meshconnect.mesh.codec import RecordEncodingError, encode_segment

    columns = [Column("id", 3), Column("v", 15, metadata=200)]
    s = Shape.build("s", "t", ("id", "v"), columns, None, None, "base64", ("id",))
    formatter = Formatter("canal", "m", "p", encoded=True)
    for meta, name in [
        (TxMeta("binlog.000003", 2**31 + 5, 1700000000, "binlog.000003:4", None, 1), "binlogpos"),
        (TxMeta("bin\x01log.000003", 5, 1700000000, "0-1-3", "0-1-3", 1), "binlogfile"),
    ]:
        out: list[Record] = []
        formatter.changes("insert", s, [(1, "a"), (2, "b")], meta, 0, out)
        assert [type(r) for r in out] == [EncodedRecord, EncodedRecord]
        with pytest.raises(RecordEncodingError, match=rf"record 0 of the batch.*{name}"):
            encode_segment(out)
    out = []
    formatter.changes("insert", s, [(1, "a")], META, 0, out)
    assert [type(r) for r in out] == [OWN_ENCODING]


def test_encoded_canal_rows_with_text_json_cannot_hold_are_dict_rows() -> None:
    """A lone surrogate cannot be written as UTF-8 JSON: the event's rows are plain records,
    which the store refuses by name (a dead letter), as without ``encoded``."""
    columns = [Column("id", 3), Column("v", 15, metadata=200)]
    s = Shape.build("s", "t", ("id", "v"), columns, None, None, "base64", ("id",))
    out: list[Record] = []
    Formatter("canal", "m", "p", encoded=True).changes(
        "insert", s, [(1, "ok"), (2, "bad \ud800")], META, 0, out
    )
    assert [type(r) for r in out] == [Record, Record]
    assert out[1].data["data"] == [{"id": "2", "v": "bad \ud800"}]
    one: list[Record] = []  # a one-row event (encoded without the batch encoder)
    Formatter("canal", "m", "p", encoded=True).changes("delete", s, [(3, "\udfff")], META, 0, one)
    assert [type(r) for r in one] == [Record]
    assert one[0].data["data"] == [{"id": "3", "v": "\udfff"}]


def test_an_encoded_record_reads_as_a_record() -> None:
    """EncodedRecord: data decoded on first read (exact numbers); before it is stored a read
    drops the encoding (the reader may change the value in place), after it keeps it; setting
    data drops it."""
    raw = b'{"a":1.50,"b":[1,null],"c":"x"}'
    r = EncodedRecord.of(raw, "i", "s", "t", None, None, {})
    assert r.pending and r.encoded_data == raw
    assert r.data == {"a": Decimal("1.50"), "b": [1, None], "c": "x"}
    assert not r.pending and r.encoded_data is None
    stored = EncodedRecord.of(raw, "i", "s", "t", None, None, {})
    stored.offset = 7
    assert stored.data["c"] == "x" and stored.encoded_data == raw
    stored.data = {"c": "y"}
    assert stored.encoded_data is None and stored.data == {"c": "y"}
    assert stored.to_dict()["data"] == {"c": "y"} and stored.copy().data == {"c": "y"}


def test_a_primary_key_change_is_delete_plus_insert_outside_canal() -> None:
    after = (7, *IMAGE[1:])
    for fmt, types in [
        ("row", ["mysql.delete", "mysql.insert"]),
        ("debezium", ["mysql.delete", "mysql.insert"]),
        ("canal", ["mysql.update"]),
    ]:
        out: list[Any] = []
        Formatter(fmt, "mysql://h:1", "p").change("update", shape(), IMAGE, after, META, 0, out)
        assert [r.type for r in out] == types, fmt
    out = []
    Formatter("debezium", "mysql://h:1", "p").change("update", shape(), IMAGE, after, META, 0, out)
    assert [r.data["op"] for r in out] == ["d", "c"]
    assert (
        out[0].data["source"]["file"] == "binlog.000003"
        and out[1].extensions["partitionkey"] == "7"
    )


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("ALTER TABLE t ADD c INT", ("ALTER", "db", "t")),
        ("alter table `x`.`y` drop column c", ("ALTER", "x", "y")),
        ("CREATE TABLE IF NOT EXISTS a.b (id int)", ("CREATE", "a", "b")),
        ("DROP TABLE IF EXISTS `t1`", ("ERASE", "db", "t1")),
        ("RENAME TABLE a TO b", ("RENAME", "db", "a")),
        ("TRUNCATE TABLE s.t", ("TRUNCATE", "s", "t")),
        ("CREATE INDEX i ON t (c)", ("CINDEX", "db", "t")),
        ("/* hint */ DROP INDEX i ON s.t", ("DINDEX", "s", "t")),
        ("CREATE DATABASE shop", ("QUERY", "db", "")),
    ],
)
def test_ddl_info_parses_the_table(sql: str, expected: tuple[str, str, str]) -> None:
    assert ddl_info(sql, "db") == expected


def test_sql_types_follow_canal() -> None:
    assert sql_type("bigint", "bigint(20) unsigned") == 3
    assert sql_type("int", "int(10) unsigned") == -5
    assert sql_type("varchar", "varchar(5)") == 12
    assert sql_type("blob", "blob") == 2004
    assert sql_type("datetime", "datetime(6)") == 93


def test_snapshot_keys_survive_the_json_round_trip() -> None:
    key = (b"\x00\x01", Decimal("1.50"), dt.date(2024, 1, 2), dt.timedelta(seconds=-3), 5, "x")
    assert decode_key(encode_key(key)) == key


def test_canal_is_registered_with_its_extra() -> None:
    from meshconnect.plugins import load_registry

    entry = load_registry().connectors[("canal", "source")]
    assert entry.spec is not None
    assert entry.spec.extra == "mysql"
    assert set(entry.spec.requires) == {"pymysql", "pymysqlreplication"}


def test_mysql_gtids_are_tracked_in_mysql_flavour() -> None:
    uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
    src = source()
    src._reset(Position("binlog.000001", 100, gtids=f"{uuid}:1-6"))
    out: list[Any] = []
    src.handle(GtidEvent("binlog.000001", 150, 1, f"{uuid}:7"), out)
    src.handle(QueryEvent("binlog.000001", 200, 1, "shop", "BEGIN"), out)
    src.handle(insert(300, 1), out)
    src.handle(XidEvent("binlog.000001", 350, 1, 1), out)
    assert src.position().gtids == f"{uuid}:1-7"
    assert out[0].extensions["txid"] == f"{uuid}:7"


def test_without_gtids_the_transaction_id_is_its_start() -> None:
    src = source()
    out: list[Any] = []
    src.handle(QueryEvent("binlog.000001", 200, 1, "shop", "BEGIN"), out)
    src.handle(insert(300, 1), out)
    assert out[0].extensions["txid"] == "binlog.000001:100"
    assert "gtid" not in out[0].extensions


@pytest.mark.parametrize(
    ("sql", "kind", "statement", "tables"),
    [
        ("CREATE TABLE `we ird``t` (a INT)", "CREATE", "CREATE TABLE", [("db", "we ird`t")]),
        ("ALTER TABLE `s`.`a.b` ADD c INT", "ALTER", "ALTER TABLE", [("s", "a.b")]),
        (
            "RENAME TABLE a TO tmp, b TO a, tmp TO b",
            "RENAME",
            "RENAME TABLE",
            [("db", "a"), ("db", "tmp"), ("db", "b")],
        ),
        (
            "DROP TABLE `a`,`b` /* generated by server */",
            "ERASE",
            "DROP TABLE",
            [("db", "a"), ("db", "b")],
        ),
        ("ALTER TABLE t RENAME TO s.u", "ALTER", "ALTER TABLE", [("db", "t"), ("s", "u")]),
        ("ALTER TABLE t RENAME COLUMN a TO b", "ALTER", "ALTER TABLE", [("db", "t")]),
        (
            "CREATE DEFINER=`root`@`%` TRIGGER g BEFORE INSERT ON `t``1` FOR EACH ROW SET @a=1",
            "QUERY",
            "CREATE TRIGGER",
            [("db", "t`1")],
        ),
        ("CREATE DEFINER=`root`@`%` PROCEDURE p() SELECT 1", "QUERY", "CREATE PROCEDURE", []),
        ("GRANT SELECT ON *.* TO x", "QUERY", "GRANT", []),
        ("XA ROLLBACK X'7832',X'',1", "QUERY", "XA ROLLBACK", []),
        ("-- note\nTRUNCATE `t`", "TRUNCATE", "TRUNCATE", [("db", "t")]),
        ("ANALYZE TABLE a, s.`b`", "QUERY", "ANALYZE", [("db", "a"), ("s", "b")]),
        # sql_mode=ANSI_QUOTES: double quotes around names
        ('CREATE TABLE "q t" (id INT)', "CREATE", "CREATE TABLE", [("db", "q t")]),
        (
            'RENAME TABLE "s"."a""b" TO s2.c',
            "RENAME",
            "RENAME TABLE",
            [("s", 'a"b'), ("s2", "c")],
        ),
        ('ALTER TABLE "t" ADD c VARCHAR(3) DEFAULT "x"', "ALTER", "ALTER TABLE", [("db", "t")]),
        ("OPTIMIZE TABLE a,b", "QUERY", "OPTIMIZE", [("db", "a"), ("db", "b")]),
        ("REPAIR TABLE a, b QUICK", "QUERY", "REPAIR", [("db", "a"), ("db", "b")]),
    ],
)
def test_parse_ddl_names_every_table_exactly(
    sql: str, kind: str, statement: str, tables: list[tuple[str, str]]
) -> None:
    ddl = parse_ddl(sql, "db")
    assert (ddl.kind, ddl.statement, list(ddl.tables)) == (kind, statement, tables)


@pytest.mark.parametrize(
    ("key", "text"),
    [
        (("a|b", "c"), "a\\|b|c"),
        (("a", "b|c"), "a|b\\|c"),
        (("a\\", "|c"), "a\\\\|\\|c"),
        ((1, b"\x00\xff"), "1|AP8="),
    ],
)
def test_composite_keys_are_escaped_and_distinct(key: tuple[Any, ...], text: str) -> None:
    columns = [Column("a", 15, metadata=40, charset=45), Column("b", 15, metadata=40, charset=45)]
    s = Shape.build("s", "t", ("a", "b"), columns, None, None, "base64", ("a", "b"))
    assert s.key_text(key) == text
    one = Shape.build("s", "t", ("a", "b"), columns, None, None, "base64", ("a",))
    assert one.key_text(key) == str(key[0]).replace("\\", "\\\\")


@pytest.mark.parametrize(
    ("key", "one", "both"),
    [
        (("a\tb", "c"), "a\\u0009b", "a\\u0009b|c"),
        (("a\\u0009b", "c"), "a\\\\u0009b", "a\\\\u0009b|c"),
        (("line\nbreak", "\x7f"), "line\\u000abreak", "line\\u000abreak|\\u007f"),
        (("\ufffe", ""), "\\ufffe", "\\ufffe|"),
        (("plain", "x"), "plain", "plain|x"),
        (("", ""), "", "|"),
    ],
)
def test_keys_a_cloudevent_cannot_hold_are_escaped_one_to_one(
    key: tuple[Any, ...], one: str, both: str
) -> None:
    """A primary key holding a tab, a newline or a noncharacter (a MariaDB VARCHAR may) cannot
    be a CloudEvents String as it is: the partitionkey spells each such character \\uXXXX,
    with backslashes doubled first so a key written ``a\\u0009b`` stays distinct."""
    from meshconnect import eventrules

    columns = [Column("a", 15, metadata=40, charset=45), Column("b", 15, metadata=40, charset=45)]
    single = Shape.build("s", "t", ("a", "b"), columns, None, None, "base64", ("a",))
    composite = Shape.build("s", "t", ("a", "b"), columns, None, None, "base64", ("a", "b"))
    assert single.key_text(key) == one
    assert composite.key_text(key) == both
    for text in (one, both):
        assert eventrules.extension_value_problem(text) is None


def test_types_come_from_the_table_map_unless_the_schema_has_the_same_column() -> None:
    from meshconnect.connectors.canal.server import ColumnSchema, TableSchema

    columns = [
        Column("id", 3),
        Column("v", 15, metadata=120, charset=45),  # varchar(30) utf8mb4 when written
        Column("e", 254, metadata=1, enum_values=("a", "b'c")),
    ]
    columns[2] = Column("e", 247, metadata=1, enum_values=("a", "b'c"), charset=45)
    now = TableSchema(
        "s",
        "t",
        (
            ColumnSchema("id", "int", "int(5) zerofill", 4, 0, False),
            ColumnSchema("v", "varchar", "varchar(10)", 12, 0, False),
        ),
        ("v",),
    )
    s = Shape.build("s", "t", ("id", "v", "e"), columns, now, None, "base64", ("id",), {45: 4})
    assert s.mysql_type == {"id": "int(5) zerofill", "v": "varchar(30)", "e": "enum('a','b''c')"}
    assert s.sql_type == {"id": 4, "v": 12, "e": 4}
    assert s.pk == ("id",)


def test_the_json_history_follows_ddl() -> None:
    from meshconnect.connectors.canal.jsoncols import JsonColumns

    h = JsonColumns({("s", "old"): {"j"}})
    for sql in [
        "CREATE TABLE t (id INT PRIMARY KEY, a JSON, b LONGTEXT CHECK (json_valid(`b`)), c TEXT)",
        "ALTER TABLE t ADD COLUMN d JSON, ADD e INT, MODIFY a TEXT, RENAME COLUMN b TO bb",
        "CREATE TABLE `u``v` LIKE t",
        "RENAME TABLE t TO tmp, `u``v` TO t, tmp TO `u``v`",
        "ALTER TABLE t CHANGE d dd JSON, DROP COLUMN bb",
        "CREATE TABLE q SELECT 1 AS j",
        "DROP TABLE old",
    ]:
        h.apply(sql, "s")
    assert h.columns("s", "u`v") == {"bb", "d"}
    assert h.columns("s", "t") == {"dd"}
    assert h.columns("s", "q") is None  # types from a query: not followed
    assert h.columns("s", "old") == set() and h.columns("s", "never") == set()
    again = JsonColumns.from_json(h.to_json())
    assert again.to_json() == h.to_json() and again.columns("s", "q") is None
    partial = JsonColumns({}, complete=False)
    partial.apply("CREATE TABLE n (j JSON)", "s")
    assert partial.columns("s", "n") == {"j"} and partial.columns("s", "x") is None


# -- offsets reset --to with a hand-written position (found trying the docs) -----------------


@pytest.mark.parametrize(
    ("to", "problem"),
    [
        ('{"binlog": {"pos": 4}}', "missing field 'file'"),
        ('{"binlog": {"file": "binlog.000001", "pos": "x"}}', "pos must be a whole number"),
        ('{"binlog": {"file": "mysql-bin", "pos": 4}}', "file must be a binlog file name"),
        ('{"binlog": {"file": "binlog.000001", "pos": 0}}', "of at least 4"),
        ('{"binlog": {"file": "binlog.000001", "pos": 4, "events": -1}}', "of at least 0"),
        ('{"binlog.000001": {"file": "binlog.000001", "pos": 4}}', "its partitions: 'binlog'"),
        (
            '{"binlog": {"file": "binlog.000001", "pos": 4, "snapshot": {"tables": ["t"]}}}',
            'snapshot must be {"tables"',
        ),
    ],
)
def test_offsets_reset_refuses_a_position_the_source_cannot_start_from(
    tmp_path: Path, to: str, problem: str
) -> None:
    """``offsets reset --to '{JSON}'`` stored any JSON: the next run failed on it (a missing
    file: "the stored position is unusable"; an offset inside the 4-byte file header: the
    server's "binlog truncated in the middle of event")."""
    import subprocess
    import sys

    (tmp_path / "p.yaml").write_text(
        "pipelines:\n"
        "  - name: cdc\n"
        "    source:\n"
        "      connector: canal\n"
        "      config: {host: 127.0.0.1, port: 1, user: cdc, server_id: 9}\n"
        "    sinks:\n"
        "      - connector: file\n"
        "        config: {path: out.jsonl}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "meshconnect", "--state", str(tmp_path / "state"), "offsets",
         "reset", "p.yaml", "cdc", "--to", to, "--yes"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "--to: not a position of the 'canal' source" in done.stderr
    assert problem in done.stderr
    good = '{"binlog": {"file": "binlog.000001", "pos": 4}}'
    done = subprocess.run(
        [sys.executable, "-m", "meshconnect", "--state", str(tmp_path / "state"), "offsets",
         "reset", "p.yaml", "cdc", "--to", good, "--yes"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_a_position_with_its_table_filter_is_one_the_source_takes_back() -> None:
    # Two changes met: positions record the include/exclude they were written with, and a
    # stored position is checked field by field; without `filter` among the fields, every
    # position the source wrote was refused at its next start.
    from meshconnect.connectors.canal.positions import Position as BinlogPosition
    from meshconnect.connectors.canal.positions import position_problem

    written = BinlogPosition(
        "binlog.000002", 1234, filter={"include": ["shop\\\\..*"], "exclude": []}
    ).to_dict()
    assert position_problem(written) is None
    assert BinlogPosition.from_dict(written).filter == written["filter"]
    assert "filter must be" in (position_problem({**written, "filter": {"include": "x"}}) or "")
