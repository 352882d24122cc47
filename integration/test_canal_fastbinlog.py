"""FastReader against a private MariaDB (binlog ROW, FULL image, FULL metadata).

Every value the contract lists is inserted with pymysql and read back from the binlog; the
decoded rows must equal the inserted values, and must equal what the library-backed reader
(``binlog.LibraryReader``) makes of the same binlog. Then updates, deletes, multi-row
statements, rotation, heartbeats, the table filter, resuming from a position, MariaDB's
compressed events and the errors. One server for the module.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from mariadb import MariaDB, private_mariadb

from conftest import require_server
from meshconnect.connectors.canal.events import (
    Event,
    GtidEvent,
    HeartbeatEvent,
    QueryEvent,
    RotateEvent,
    RowsEvent,
    XidEvent,
)
from meshconnect.errors import ConfigError, RetriableError

pymysql = pytest.importorskip("pymysql")
from meshconnect.connectors.canal.fastbinlog import FastReader  # noqa: E402

UTC = dt.UTC
FSPS = range(7)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    missing = MariaDB.missing()
    if missing:
        require_server("MariaDB", missing)
    with private_mariadb(tmp_path_factory.mktemp("fastbinlog")) as srv:
        srv.execute("CREATE DATABASE shop CHARACTER SET utf8mb4")
        yield srv


def connect(server: MariaDB) -> Any:
    conn = pymysql.connect(**server.connect_args("shop"), charset="utf8mb4")
    with conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
    return conn


def run(server: MariaDB, sql: str, params: Any = None, *, many: bool = False) -> None:
    conn = connect(server)
    try:
        with conn.cursor() as cur:
            if many:
                cur.executemany(sql, params)
            else:
                cur.execute(sql, params)
    finally:
        conn.close()


def position(server: MariaDB) -> tuple[str, int]:
    file, pos = server.execute("SHOW MASTER STATUS")[0][:2]
    return str(file), int(pos)


def read_until(reader: Any, end: tuple[str, int], *, limit: float = 30.0) -> list[Event]:
    """Events until the reader has passed ``end`` (file, pos)."""
    events: list[Event] = []
    deadline = dt.datetime.now() + dt.timedelta(seconds=limit)
    while dt.datetime.now() < deadline:
        batch = reader.read(1000, 0.5)
        events.extend(batch)
        last = [e for e in events if not isinstance(e, HeartbeatEvent)]
        if last and (last[-1].log_file, last[-1].log_pos) >= end:
            return events
    raise AssertionError(f"did not reach {end}; last events {events[-3:]}")


def fast(server: MariaDB, start: tuple[str, int], **kwargs: Any) -> FastReader:
    return FastReader(
        server.connect_args(), server_id=101, log_file=start[0], log_pos=start[1], **kwargs
    )


def rows_events(events: list[Event]) -> list[RowsEvent]:
    return [e for e in events if isinstance(e, RowsEvent)]


# ---------------------------------------------------------------- every type

TYPES_DDL = (
    "CREATE TABLE types (id INT PRIMARY KEY,"
    " ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,"
    " mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,"
    " bi BIGINT, biu BIGINT UNSIGNED,"
    " d65 DECIMAL(65,30), d10 DECIMAL(10,2), d5 DECIMAL(5,0), d18 DECIMAL(18,9),"
    " f FLOAT, db DOUBLE,"
    " c CHAR(10), vc VARCHAR(300), vs VARCHAR(20), vl VARCHAR(20) CHARACTER SET latin1,"
    " tx TEXT, mtx MEDIUMTEXT, ltx LONGTEXT CHARACTER SET latin1,"
    " bn BINARY(4), vb VARBINARY(300), tb TINYBLOB, bl BLOB, mb MEDIUMBLOB, lb LONGBLOB,"
    " dd DATE, y YEAR, e ENUM('small','medium','large'), st SET('a','b','c','d'),"
    " b1 BIT(1), b64 BIT(64), j JSON, "
    + ", ".join(f"dt{f} DATETIME({f}), ts{f} TIMESTAMP({f}) NULL, tm{f} TIME({f})" for f in FSPS)
    + ")"
)
COLUMNS = [
    "id",
    *[
        "ti",
        "tiu",
        "si",
        "siu",
        "mi",
        "miu",
        "i",
        "iu",
        "bi",
        "biu",
        "d65",
        "d10",
        "d5",
        "d18",
        "f",
        "db",
    ],
    *[
        "c",
        "vc",
        "vs",
        "vl",
        "tx",
        "mtx",
        "ltx",
        "bn",
        "vb",
        "tb",
        "bl",
        "mb",
        "lb",
        "dd",
        "y",
        "e",
        "st",
        "b1",
        "b64",
        "j",
    ],
    *[f"{k}{f}" for f in FSPS for k in ("dt", "ts", "tm")],
]


def temporal(row: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Inserted (SQL text) and expected values of the fsp columns for a row kind."""
    sql: dict[str, Any] = {}
    want: dict[str, Any] = {}
    us = 123456 if row == 1 else 999999
    for f in FSPS:
        frac = int(str(us)[:f].ljust(6, "0")) if f else 0
        digits = f".{str(us)[:f]}" if f else ""
        if row == 1:
            sql[f"dt{f}"] = f"2024-02-29 23:59:58{digits}"
            want[f"dt{f}"] = dt.datetime(2024, 2, 29, 23, 59, 58, frac)
            sql[f"ts{f}"] = f"2038-01-19 03:14:07{digits}"
            want[f"ts{f}"] = dt.datetime(2038, 1, 19, 3, 14, 7, frac, tzinfo=UTC)
            sql[f"tm{f}"] = f"-838:59:58{digits}"
            want[f"tm{f}"] = -dt.timedelta(hours=838, minutes=59, seconds=58, microseconds=frac)
        else:
            sql[f"dt{f}"] = f"1000-01-01 00:00:00{digits}"
            want[f"dt{f}"] = dt.datetime(1000, 1, 1, 0, 0, 0, frac)
            sql[f"ts{f}"] = f"1970-01-01 00:00:01{digits}"
            want[f"ts{f}"] = dt.datetime(1970, 1, 1, 0, 0, 1, frac, tzinfo=UTC)
            sql[f"tm{f}"] = f"-00:00:00{digits}" if f else "-00:00:01"
            want[f"tm{f}"] = -dt.timedelta(microseconds=frac) if f else -dt.timedelta(seconds=1)
    return sql, want


def type_rows() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(values to insert, expected decoded values) per row."""
    big = Decimal("12345678901234567890123456789012345.123456789012345678901234567890")
    maxes: dict[str, Any] = {
        "id": 1,
        "ti": 127,
        "tiu": 255,
        "si": 32767,
        "siu": 65535,
        "mi": 8388607,
        "miu": 16777215,
        "i": 2147483647,
        "iu": 4294967295,
        "bi": 9223372036854775807,
        "biu": 18446744073709551615,
        "d65": big,
        "d10": Decimal("99999999.99"),
        "d5": Decimal("99999"),
        "d18": Decimal("123456789.000000001"),
        "f": 1.5,
        "db": 1.7976931348623157e308,
        "c": "char ✓",
        "vc": "émoji 😀 " * 20,
        "vs": "",
        "vl": "latin1 é€ñ",
        "tx": "text 😀",
        "mtx": "m" * 70000,
        "ltx": "Grüße ÿ",
        "bn": b"\x00\x01\xfe\xff",
        "vb": bytes(range(256)),
        "tb": b"\x00",
        "bl": b"blob\x00\xff",
        "mb": b"\xab" * 70000,
        "lb": b"",
        "dd": dt.date(9999, 12, 31),
        "y": 2155,
        "e": "large",
        "st": "a,d",
        "b1": 1,
        "b64": 18446744073709551615,
        "j": '{"k": [1, 2.5, "x", null, true], "n": {"m": "😀"}}',
    }
    max_want = dict(maxes, st=("a", "d"))
    mins: dict[str, Any] = {
        "id": 2,
        "ti": -128,
        "tiu": 0,
        "si": -32768,
        "siu": 0,
        "mi": -8388608,
        "miu": 0,
        "i": -2147483648,
        "iu": 0,
        "bi": -9223372036854775808,
        "biu": 0,
        "d65": -big,
        "d10": Decimal("-0.01"),
        "d5": Decimal("-99999"),
        "d18": Decimal("-0.000000001"),
        "f": -2.5,
        "db": -5e-324,
        "c": "",
        "vc": "a",
        "vs": "z",
        "vl": "\xa0",
        "tx": "",
        "mtx": "",
        "ltx": "",
        "bn": b"\x00\x00\x00\x00",
        "vb": b"",
        "tb": b"",
        "bl": b"",
        "mb": b"",
        "lb": b"\x00" * 3,
        "dd": dt.date(1000, 1, 1),
        "y": 1901,
        "e": "small",
        "st": "",
        "b1": 0,
        "b64": 0,
        "j": "[]",
    }
    min_want = dict(mins, st=())
    rows = []
    for kind, values, want in ((1, maxes, max_want), (2, mins, min_want)):
        sql_t, want_t = temporal(kind)
        rows.append(({**values, **sql_t}, {**want, **want_t}))
    nulls = {name: None for name in COLUMNS} | {"id": 3}
    rows.append((nulls, dict(nulls)))
    zeros = {"id": 4, "dd": "0000-00-00", "y": 0, **{f"dt{f}": "0000-00-00 00:00:00" for f in FSPS}}
    zero_want = {name: None for name in COLUMNS} | {
        "id": 4,
        "dd": "0000-00-00",
        "y": 0,
        **{f"dt{f}": "0000-00-00 00:00:00" + ("." + "0" * f if f else "") for f in FSPS},
    }
    rows.append((zeros | {k: None for k in COLUMNS if k not in zeros}, zero_want))
    return rows


@pytest.fixture(scope="module")
def typed_binlog(server: MariaDB) -> tuple[tuple[str, int], tuple[str, int], list[dict[str, Any]]]:
    """Create ``types``, insert the rows; the binlog range and the expected rows."""
    run(server, TYPES_DDL)
    start = position(server)
    expected = []
    for values, want in type_rows():
        names = ", ".join(values)
        marks = ", ".join(["%s"] * len(values))
        run(server, f"INSERT INTO types ({names}) VALUES ({marks})", list(values.values()))
        expected.append(want)
    return start, position(server), expected


def test_every_type_decodes_to_the_inserted_value(
    server: MariaDB, typed_binlog: tuple[Any, Any, list[dict[str, Any]]]
) -> None:
    start, end, expected = typed_binlog
    reader = fast(server, start)
    try:
        events = rows_events(read_until(reader, end))
    finally:
        reader.close()
    assert [e.kind for e in events] == ["insert"] * len(expected)
    table = events[0].table
    assert (table.schema, table.name, table.primary_key) == ("shop", "types", ("id",))
    assert list(table.column_names) == COLUMNS
    for event, want in zip(events, expected, strict=True):
        (row,) = event.rows
        got = dict(zip(table.column_names, row, strict=True))
        for name in COLUMNS:
            assert got[name] == want[name], (want["id"], name, got[name], want[name])
            if want[name] is not None:
                assert type(got[name]) is type(want[name]), (name, got[name])


def close_soon(reader: Any) -> None:
    """Close a reader without letting a hanging close hang the test run."""
    closer = threading.Thread(target=reader.close, daemon=True)
    closer.start()
    closer.join(10)


def test_same_rows_as_the_library_reader(
    server: MariaDB, typed_binlog: tuple[Any, Any, list[dict[str, Any]]]
) -> None:
    binlog = pytest.importorskip("meshconnect.connectors.canal.binlog")
    start, end, _ = typed_binlog
    ours_reader = fast(server, start)
    theirs_reader = binlog.LibraryReader(
        server.connect_args(), server_id=102, log_file=start[0], log_pos=start[1]
    )
    try:
        ours = rows_events(read_until(ours_reader, end))
        theirs = rows_events(read_until(theirs_reader, end))
    finally:
        close_soon(ours_reader)
        close_soon(theirs_reader)
    assert [(e.kind, e.log_file, e.log_pos) for e in ours] == [
        (e.kind, e.log_file, e.log_pos) for e in theirs
    ]
    differences = set()
    for a, b in zip(ours, theirs, strict=True):
        assert a.table.column_names == b.table.column_names
        for row_a, row_b in zip(a.rows, b.rows, strict=True):
            for name, x, y in zip(a.table.column_names, row_a, row_b, strict=True):
                if (x, type(x)) != (y, type(y)):
                    differences.add(name)
    # The fast reader's value is checked against the inserted value above, so any
    # difference is a bug of one of the two readers.
    assert not differences, sorted(differences)


# ---------------------------------------------------------------- changes, positions, streams


@pytest.fixture()
def table(server: MariaDB, request: pytest.FixtureRequest) -> str:
    name = f"t_{request.node.name[5:40]}"
    run(server, f"DROP TABLE IF EXISTS {name}")
    run(server, f"CREATE TABLE {name} (id INT PRIMARY KEY, name VARCHAR(40), qty INT UNSIGNED)")
    return name


def test_updates_deletes_and_multi_row_statements(server: MariaDB, table: str) -> None:
    start = position(server)
    run(
        server,
        f"INSERT INTO {table} VALUES (%s, %s, %s)",
        [(i, f"n{i}", i) for i in range(5)],
        many=True,
    )
    run(server, f"INSERT INTO {table} VALUES (10, 'a', 1), (11, NULL, 2), (12, 'c', NULL)")
    run(server, f"UPDATE {table} SET qty = qty + 100 WHERE id >= 10")
    run(server, f"UPDATE {table} SET id = 20, name = 'moved' WHERE id = 0")
    run(server, f"DELETE FROM {table} WHERE id IN (1, 2)")
    reader = fast(server, start)
    try:
        events = rows_events(read_until(reader, position(server)))
    finally:
        reader.close()
    got = [(e.kind, e.rows, e.before) for e in events]
    inserts = [row for kind, rows, _ in got if kind == "insert" for row in rows]
    assert inserts == [(i, f"n{i}", i) for i in range(5)] + [
        (10, "a", 1),
        (11, None, 2),
        (12, "c", None),
    ]
    updates = [(kind, rows, before) for kind, rows, before in got if kind == "update"]
    assert updates == [
        ("update", [(10, "a", 101), (11, None, 102)], [(10, "a", 1), (11, None, 2)]),
        ("update", [(20, "moved", 0)], [(0, "n0", 0)]),
    ]
    assert [(k, r) for k, r, _ in got if k == "delete"] == [
        ("delete", [(1, "n1", 1), (2, "n2", 2)])
    ]


def test_transactions_carry_gtid_query_and_xid_and_positions_resume(
    server: MariaDB, table: str
) -> None:
    start = position(server)
    for i in range(3):
        run(server, f"INSERT INTO {table} VALUES ({i}, 'x', {i})")
    end = position(server)
    reader = fast(server, start)
    try:
        events = read_until(reader, end)
    finally:
        reader.close()
    kinds = [type(e).__name__ for e in events if not isinstance(e, RotateEvent)]
    assert kinds == ["GtidEvent", "RowsEvent", "XidEvent"] * 3
    gtids = [e.gtid for e in events if isinstance(e, GtidEvent)]
    assert len(set(gtids)) == 3 and all(g.startswith("0-1-") for g in gtids)
    assert events[-1].log_pos == end[1]
    # Resume after the first transaction: exactly the other two follow.
    first_xid = next(e for e in events if isinstance(e, XidEvent))
    reader = fast(server, (first_xid.log_file, first_xid.log_pos))
    try:
        rest = rows_events(read_until(reader, end))
    finally:
        reader.close()
    assert [e.rows for e in rest] == [[(1, "x", 1)], [(2, "x", 2)]]


def test_rotation_moves_the_file(server: MariaDB, table: str) -> None:
    start = position(server)
    run(server, f"INSERT INTO {table} VALUES (1, 'before', 1)")
    run(server, "FLUSH BINARY LOGS")
    run(server, f"INSERT INTO {table} VALUES (2, 'after', 2)")
    end = position(server)
    assert end[0] != start[0]
    reader = fast(server, start)
    try:
        # Until the second insert's commit, not until ``end``: the server may write the new
        # binlog's Binlog_checkpoint event after the insert (asynchronously, once the old file's
        # transactions are flushed), and the reader passes it over without an event.
        events: list[Event] = []
        deadline = dt.datetime.now() + dt.timedelta(seconds=30)
        while (
            not any(isinstance(e, XidEvent) and e.log_file == end[0] for e in events)
            and dt.datetime.now() < deadline
        ):
            events.extend(reader.read(1000, 0.5))
    finally:
        reader.close()
    assert any(isinstance(e, XidEvent) and e.log_file == end[0] for e in events), events[-3:]
    rotates = [e for e in events if isinstance(e, RotateEvent) and e.next_file == end[0]]
    assert rotates and rotates[0].next_pos == 4
    rows = rows_events(events)
    assert [(e.log_file, e.rows) for e in rows] == [
        (start[0], [(1, "before", 1)]),
        (end[0], [(2, "after", 2)]),
    ]


def test_heartbeats_while_idle_carry_the_position(server: MariaDB) -> None:
    end = position(server)
    reader = fast(server, end, heartbeat_period=0.2)
    try:
        seen: list[Event] = []
        for _ in range(20):
            seen.extend(reader.read(10, 0.5))
            if any(isinstance(e, HeartbeatEvent) for e in seen):
                break
    finally:
        reader.close()
    beats = [e for e in seen if isinstance(e, HeartbeatEvent)]
    assert beats
    # The position the server had reached when it sent the beat: ``end``, or a bit further
    # when MariaDB has since written a binlog checkpoint event (it does so asynchronously
    # after a rotation, and may write it after the beat: CI saw 638 against 678 by then).
    assert beats[0].log_file == end[0]
    assert end[1] <= beats[0].log_pos <= position(server)[1]


def test_the_table_filter_skips_rows_of_other_tables(server: MariaDB, table: str) -> None:
    run(server, "CREATE TABLE IF NOT EXISTS skipped (id INT PRIMARY KEY, v JSON)")
    start = position(server)
    run(server, "INSERT INTO skipped VALUES (1, '[1]')")
    run(server, f"INSERT INTO {table} VALUES (1, 'kept', 1)")
    asked: list[tuple[str, str]] = []

    def wanted(schema: str, name: str) -> bool:
        asked.append((schema, name))
        return name != "skipped"

    reader = fast(server, start, table_filter=wanted)
    try:
        events = read_until(reader, position(server))
    finally:
        reader.close()
    assert [(e.table.name, e.rows) for e in rows_events(events)] == [(table, [(1, "kept", 1)])]
    assert sorted(set(asked)) == sorted({("shop", "skipped"), ("shop", table)})
    assert sum(isinstance(e, XidEvent) for e in events) == 2  # the skipped one still moves on


def test_ddl_arrives_as_a_query_and_the_new_shape_is_decoded(server: MariaDB, table: str) -> None:
    start = position(server)
    run(server, f"INSERT INTO {table} VALUES (1, 'a', 1)")
    run(server, f"ALTER TABLE {table} ADD COLUMN note TEXT AFTER name")
    run(server, f"INSERT INTO {table} VALUES (2, 'b', 'noted', 2)")
    reader = fast(server, start)
    try:
        events = read_until(reader, position(server))
    finally:
        reader.close()
    ddl = [e for e in events if isinstance(e, QueryEvent) and "ALTER" in e.query]
    assert ddl and ddl[0].schema == "shop"
    rows = rows_events(events)
    assert rows[0].table.column_names == ("id", "name", "qty")
    assert rows[1].table.column_names == ("id", "name", "note", "qty")
    assert rows[1].rows == [(2, "b", "noted", 2)]


def test_mariadb_compressed_events(server: MariaDB, table: str) -> None:
    server.execute("SET GLOBAL log_bin_compress = ON", "SET GLOBAL log_bin_compress_min_len = 10")
    try:
        start = position(server)
        run(
            server,
            f"INSERT INTO {table} VALUES (%s, %s, %s)",
            [(i, "z" * 40, i) for i in range(50)],
            many=True,
        )
        run(server, f"UPDATE {table} SET name = 'compressed update' WHERE id < 3")
        run(server, f"DELETE FROM {table} WHERE id >= 3")
        end = position(server)
    finally:
        server.execute("SET GLOBAL log_bin_compress = OFF")
    reader = fast(server, start)
    try:
        events = read_until(reader, end)
    finally:
        reader.close()
    rows = rows_events(events)
    assert [r for e in rows if e.kind == "insert" for r in e.rows] == [
        (i, "z" * 40, i) for i in range(50)
    ]
    update = next(e for e in rows if e.kind == "update")
    assert update.rows == [(i, "compressed update", i) for i in range(3)]
    assert sum(len(e.rows) for e in rows if e.kind == "delete") == 47


def test_lost_connection_is_retriable(server: MariaDB) -> None:
    reader = fast(server, position(server))
    try:
        reader.read(10, 0.2)
        dumps = [
            row[0] for row in server.execute("SHOW PROCESSLIST") if "Binlog Dump" in str(row[4])
        ]
        for thread in dumps:
            server.execute(f"KILL {thread}")
        with pytest.raises(RetriableError):
            for _ in range(40):
                reader.read(10, 0.25)
    finally:
        reader.close()


def test_a_missing_binlog_file_is_a_clear_error(server: MariaDB) -> None:
    reader = fast(server, ("binlog.999999", 4))
    try:
        with pytest.raises(ConfigError, match=r"binlog\.999999"):
            for _ in range(20):
                reader.read(10, 0.25)
    finally:
        reader.close()


def test_a_rows_event_without_its_table_map_is_refused(server: MariaDB, table: str) -> None:
    start = position(server)
    run(server, f"INSERT INTO {table} VALUES (1, 'a', 1)")
    reader = fast(server, start)
    try:
        events = read_until(reader, position(server))
    finally:
        reader.close()
    gtid = next(e for e in events if isinstance(e, GtidEvent))
    # Start just after BEGIN's table map would be: at the rows event itself.
    rows = rows_events(events)[0]
    query = [e for e in events if isinstance(e, QueryEvent)]
    assert not query or query[0].log_pos < rows.log_pos
    reader = fast(server, (gtid.log_file, _table_map_start(server, gtid, rows)))
    try:
        with pytest.raises(ConfigError, match="table map"):
            for _ in range(20):
                reader.read(10, 0.25)
    finally:
        reader.close()


def _table_map_start(server: MariaDB, gtid: GtidEvent, rows: RowsEvent) -> int:
    """The position of the rows event (the end of the table map before it)."""
    events = server.execute(f"SHOW BINLOG EVENTS IN '{gtid.log_file}' FROM {gtid.log_pos}")
    return int(next(e[4] for e in events if e[2] == "Table_map"))


def test_checksums_verify_and_a_bounded_read_ends(
    server: MariaDB, typed_binlog: tuple[Any, Any, list[dict[str, Any]]]
) -> None:
    start, end, expected = typed_binlog
    reader = fast(server, start, verify_checksum=True, non_blocking=True)
    events: list[Event] = []
    try:
        for _ in range(100):
            batch = reader.read(1000, 0.5)
            events.extend(batch)
            if reader.at_end:
                break
    finally:
        reader.close()
    assert reader.at_end
    rows = rows_events(events)
    assert [r.rows[0][0] for r in rows[: len(expected)]] == [w["id"] for w in expected]
    assert (events[-1].log_file, events[-1].log_pos) >= end


def test_minimal_row_images_leave_absent_columns_none(server: MariaDB, table: str) -> None:
    start = position(server)
    conn = connect(server)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION binlog_row_image = 'MINIMAL'")
            cur.execute(f"INSERT INTO {table} VALUES (1, 'a', NULL)")
            cur.execute(f"UPDATE {table} SET qty = 5 WHERE id = 1")
            cur.execute(f"DELETE FROM {table} WHERE id = 1")
    finally:
        conn.close()
    reader = fast(server, start)
    try:
        rows = rows_events(read_until(reader, position(server)))
    finally:
        reader.close()
    assert [(e.kind, e.rows, e.before) for e in rows] == [
        ("insert", [(1, "a", None)], None),
        ("update", [(None, None, 5)], [(1, None, None)]),
        ("delete", [(1, None, None)], None),
    ]


def test_an_event_over_16_mib_spans_packets(server: MariaDB) -> None:
    server.execute("SET GLOBAL max_allowed_packet = 67108864")
    run(server, "CREATE TABLE IF NOT EXISTS big (id INT PRIMARY KEY, b LONGBLOB)")
    blob = bytes(range(256)) * (17 * 4096)  # 17 MiB: the event is split into 2 packets
    start = position(server)
    run(server, "INSERT INTO big VALUES (1, %s)", (blob,))
    run(server, "INSERT INTO big VALUES (2, 'small')")
    reader = fast(server, start)
    try:
        rows = rows_events(read_until(reader, position(server), limit=60))
    finally:
        reader.close()
    assert [(r.rows[0][0], len(r.rows[0][1])) for r in rows] == [(1, len(blob)), (2, 5)]
    assert rows[0].rows[0][1] == blob
