"""The jdbc sink on each dialect: SQLite, the machine's PostgreSQL and MariaDB (a database of
its own per session): upsert/update/delete semantics, quoting, odd values, per-record dead
letters with the database's error, auto_create/auto_evolve, CDC records of each format."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jdbc_support import my_url, pg_url, query

from meshconnect import BatchError, ConnectorContext, DataError, Record
from meshconnect.connectors.jdbc.config import JdbcSinkConfig
from meshconnect.connectors.jdbc.sink import JdbcSink
from meshconnect.testing import SinkConformance

__all__ = ["my_url", "pg_url"]

_counter = iter(range(1_000_000))


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'out.db'}"
    elif request.param == "postgresql":
        yield request.getfixturevalue("pg_url")
    else:
        yield request.getfixturevalue("my_url")


def table_name(base: str) -> str:
    return f"{base}_{next(_counter)}"


def make(url: str, tmp_path: Path, **config: Any) -> JdbcSink:
    context = ConnectorContext("it", "jdbc", logging.getLogger("it"), base_dir=str(tmp_path))
    return JdbcSink(JdbcSinkConfig(url=url, **config), context)


def rec(data: Any, i: int, **kw: Any) -> Record:
    return Record(data, id=f"r{i}", topic="t", offset=i, **kw)


def q(url: str, sql: str) -> list[tuple[Any, ...]]:
    if url.startswith("mysql"):
        sql = sql.replace('"', "`")
    return query(url, sql)


async def test_upsert_update_delete_tombstone(url: str, tmp_path: Path) -> None:
    t = table_name("items")
    s = make(url, tmp_path, table=t, key=["id"], auto_create=True)
    await s.open(None)
    await s.write(
        [rec({"id": 1, "name": "a", "qty": 1}, 0), rec({"id": 2, "name": "b", "qty": 2}, 1)]
    )
    # the same key twice in one batch: the last wins
    await s.write(
        [rec({"id": 1, "name": "A", "qty": 5}, 2), rec({"id": 1, "name": "AA", "qty": 6}, 3)]
    )
    assert q(url, f'SELECT id, name, qty FROM "{t}" ORDER BY id') == [(1, "AA", 6), (2, "b", 2)]
    await s.write([rec(None, 4, extensions={"partitionkey": "2"})])  # a tombstone
    assert q(url, f'SELECT id FROM "{t}"') == [(1,)]
    await s.close()
    u = make(url, tmp_path, table=t, key=["id"], mode="update")
    await u.open(None)
    await u.write([rec({"id": 1, "qty": 9}, 5), rec({"id": 7, "qty": 9}, 6)])  # 7: no such row
    assert q(url, f'SELECT id, name, qty FROM "{t}" ORDER BY id') == [(1, "AA", 9)]
    await u.close()
    i = make(url, tmp_path, table=t, mode="insert")
    await i.open(None)
    with pytest.raises(BatchError) as err:  # a duplicate key in insert mode: that record only
        await i.write(
            [rec({"id": 3, "name": "c", "qty": 3}, 7), rec({"id": 1, "name": "x", "qty": 0}, 8)]
        )
    assert list(err.value.failures) == [1]
    assert q(url, f'SELECT id, name FROM "{t}" ORDER BY id') == [(1, "AA"), (3, "c")]
    await i.close()


async def test_names_that_need_quoting_and_odd_values(url: str, tmp_path: Path) -> None:
    t = table_name('Order Items "q"')
    s = make(url, tmp_path, table=t, key=["select"], auto_create=True, auto_evolve=True)
    await s.open(None)
    odd = 'it\'s \\ "quoted" 😀 ; DROP TABLE x; -- %s %(x)s :name'
    await s.write([rec({"select": 1, "MixedCase": odd, 'we"ird': None}, 0)])
    await s.write([rec({"select": 2, "MixedCase": "", "new col": 3.5, 'we"ird': "x"}, 1)])
    qt = t.replace('"', '""') if not url.startswith("mysql") else t
    if url.startswith("mysql"):
        sql = f'SELECT `select`, `MixedCase`, `we"ird`, `new col` FROM `{qt}` ORDER BY 1'
        got = query(url, sql)
    else:
        got = query(
            url, f'SELECT "select", "MixedCase", "we""ird", "new col" FROM "{qt}" ORDER BY 1'
        )
    assert got == [(1, odd, None, None), (2, "", "x", 3.5)]
    await s.close()


async def test_one_constraint_violation_goes_alone_with_the_database_error(
    url: str, tmp_path: Path
) -> None:
    t = table_name("checked")
    text = "INT" if url.startswith("mysql") else "INTEGER"
    q(url, f'CREATE TABLE "{t}" (id {text} PRIMARY KEY, v VARCHAR(10) NOT NULL, w {text} UNIQUE)')
    s = make(url, tmp_path, table=t, mode="insert", exactly_once=True)
    await s.open(None)
    batch = [rec({"id": i, "v": f"v{i}", "w": 50 if i == 6 else i}, i) for i in range(10)]
    batch[3] = rec({"id": 3, "v": None, "w": 3}, 3)  # NOT NULL
    with pytest.raises(BatchError) as err:
        await s.write(batch)
    assert sorted(err.value.failures) == [3]
    assert isinstance(err.value.failures[3], DataError)
    assert "null" in str(err.value.failures[3]).lower()
    assert [r[0] for r in q(url, f'SELECT id FROM "{t}" ORDER BY id')] == [
        0,
        1,
        2,
        4,
        5,
        6,
        7,
        8,
        9,
    ]
    # replayed (the mesh commit was lost): nothing twice, exactly_once skips the written
    # records; the rejected one is tried again and fails again (to the dead-letter topic, or
    # stopping the sink under tolerance: none), never skipped unseen
    await s.close()
    again = make(url, tmp_path, table=t, mode="insert", exactly_once=True)
    await again.open(None)
    with pytest.raises(BatchError) as err:
        await again.write(batch)
    await again.close()
    assert sorted(err.value.failures) == [3]
    assert len(q(url, f'SELECT id FROM "{t}"')) == 9


def canal_msg(
    table: str, kind: str, row: dict[str, Any], old: dict[str, Any] | None = None
) -> dict[str, Any]:
    types = {
        "id": "int(11)",
        "d": "decimal(65,30)",
        "u": "bigint(20) unsigned",
        "dt": "datetime(6)",
        "tm": "time(6)",
        "y": "year(4)",
        "e": "enum('a','b')",
        "s": "set('x','y')",
        "j": "json",
        "b": "blob",
        "bits": "bit(8)",
        "zd": "date",
    }
    return {
        "data": [row],
        "database": "shop",
        "es": 0,
        "gtid": "",
        "id": 1,
        "isDdl": False,
        "mysqlType": types,
        "old": [old] if old else None,
        "pkNames": ["id"],
        "sql": "",
        "sqlType": {},
        "table": table,
        "ts": 0,
        "type": kind,
    }


async def test_canal_records_with_mysql_types(url: str, tmp_path: Path) -> None:
    t = table_name("typed")
    s = make(url, tmp_path, table=t, auto_create=True)
    await s.open(None)
    row = {
        "id": "1",
        "d": "-12345678901234567890.012345678901234567890123456789",
        "u": "18446744073709551615",
        "dt": "2024-02-29 23:59:59.123456",
        "tm": "-838:59:59.000000",
        "y": "2155",
        "e": "b",
        "s": "x,y",
        "j": '{"a": [1, 2.50, 12345678901234567890123]}',
        "b": "AAEC/w==",
        "bits": "5",
        "zd": "0000-00-00",
    }
    records = [
        Record(
            canal_msg(t, "INSERT", row),
            id="a",
            type="mysql.insert",
            subject=f"shop.{t}",
            topic="t",
            offset=0,
        ),
        Record(
            canal_msg(t, "INSERT", {**row, "id": "2", "zd": "2024-01-02"}),
            id="b",
            type="mysql.insert",
            subject=f"shop.{t}",
            topic="t",
            offset=1,
        ),
        # a primary-key change: 2 -> 3
        Record(
            canal_msg(t, "UPDATE", {**row, "id": "3", "zd": "2024-01-02"}, {"id": "2"}),
            id="c",
            type="mysql.update",
            subject=f"shop.{t}",
            topic="t",
            offset=2,
        ),
    ]
    await s.write(records)
    assert s.zero_dates.value == 1
    await s.close()
    got = q(url, f'SELECT id, d, u, dt, y, e, s, zd FROM "{t}" ORDER BY id')
    assert [r[0] for r in got] == [1, 3]
    first = got[0]
    assert Decimal(first[1]) == Decimal(row["d"])
    assert int(first[2]) == 18446744073709551615
    assert str(first[3]).replace("T", " ") == "2024-02-29 23:59:59.123456"
    assert int(first[4]) == 2155 and first[5] == "b" and first[6] == "x,y" and first[7] is None
    assert got[1][7] in (dt.date(2024, 1, 2), "2024-01-02")
    tm, b, j, bits = q(url, f'SELECT tm, b, j, bits FROM "{t}" WHERE id = 1')[0]
    assert int(bits) == 5
    if url.startswith("postgresql"):
        assert tm == -dt.timedelta(hours=838, minutes=59, seconds=59)
        assert (
            j == {"a": [1, Decimal("2.50"), 12345678901234567890123]}
            or j["a"][2] == 12345678901234567890123
        )
    assert bytes(b) == b"\x00\x01\x02\xff"


@pytest.mark.parametrize("fmt", ["debezium", "row"])
async def test_debezium_and_row_records(url: str, tmp_path: Path, fmt: str) -> None:
    t = table_name(f"cdc_{fmt}")
    text = "INT" if url.startswith("mysql") else "INTEGER"
    q(
        url,
        f'CREATE TABLE "{t}" (a {text} NOT NULL, b VARCHAR(10) NOT NULL, v VARCHAR(20), '
        "PRIMARY KEY (a, b))",
    )
    s = make(url, tmp_path)

    def change(op: str, before: Any, after: Any, i: int) -> Record:
        kind = {"c": "insert", "u": "update", "d": "delete", "r": "read"}[op]
        if fmt == "debezium":
            data = {
                "before": before,
                "after": after,
                "op": op,
                "ts_ms": 0,
                "source": {"db": "shop", "table": t},
            }
        else:
            data = after if after is not None else before
        return Record(
            data, id=f"{i}", type=f"mysql.{kind}", subject=f"shop.{t}", topic="t", offset=i
        )

    await s.open(None)
    await s.write(
        [
            change("r", None, {"a": 1, "b": "x", "v": "one"}, 0),
            change("c", None, {"a": 2, "b": "y|z", "v": "two"}, 1),
            change("u", {"a": 1, "b": "x", "v": "one"}, {"a": 1, "b": "x", "v": "uno"}, 2),
            change("d", {"a": 2, "b": "y|z", "v": "two"}, None, 3),
            change("c", None, {"a": 3, "b": "w", "v": "tres"}, 4),
        ]
    )
    await s.close()
    assert q(url, f'SELECT a, b, v FROM "{t}" ORDER BY a') == [(1, "x", "uno"), (3, "w", "tres")]


async def test_last_writer_wins(url: str, tmp_path: Path) -> None:
    t = table_name("lww")
    s = make(url, tmp_path, table=t, key=["id"], auto_create=True, last_writer_wins="ver")
    await s.open(None)
    await s.write(
        [rec({"id": 1, "note": "v5", "ver": 5}, 0), rec({"id": 2, "note": "v5", "ver": 5}, 1)]
    )
    await s.write(
        [rec({"id": 1, "note": "v4", "ver": 4}, 2), rec({"id": 2, "note": "v6", "ver": 6}, 3)]
    )
    # an older version later in the same batch, on a new key and on a stored one: it loses
    # (the batch's upserts of one key were cut to the last, which then won)
    await s.write(
        [
            rec({"id": 3, "note": "v9", "ver": 9}, 4),
            rec({"id": 3, "note": "v7", "ver": 7}, 5),
            rec({"id": 2, "note": "v8", "ver": 8}, 6),
            rec({"id": 2, "note": "v7", "ver": 7}, 7),
        ]
    )
    await s.close()
    assert q(url, f'SELECT id, note, ver FROM "{t}" ORDER BY id') == [
        (1, "v5", 5),
        (2, "v8", 8),
        (3, "v9", 9),
    ]


class _ServerConformance(SinkConformance):
    """The shipped sink conformance suite on a server: a table per test, named after it."""

    server = "pg_url"

    @pytest.fixture(autouse=True)
    def _server(self, request: pytest.FixtureRequest) -> None:
        self.url = request.getfixturevalue(self.server)

    def table(self, tmp_path: Path) -> str:
        return "conf_" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]

    def make_sink(self, tmp_path: Path) -> JdbcSink:
        t = self.table(tmp_path)
        # A lock wait of a second at most: the outage below is a lock held elsewhere.
        if self.server == "pg_url":
            url = self.url + "?options=-c%20lock_timeout%3D300ms"
        else:
            url = self.url + "&init_command=SET innodb_lock_wait_timeout = 1"
        return make(url, tmp_path, table=t, mode="insert", auto_create=True,
                    exactly_once=True, offsets_table=f"{t}_offsets")  # fmt: skip

    def durable(self, tmp_path: Path) -> list[Any]:
        try:
            return [r[0] for r in q(self.url, f'SELECT n FROM "{self.table(tmp_path)}" ORDER BY n')]
        except Exception:  # no table yet
            return []

    def make_record(self, i: int) -> Record:
        return Record({"n": i, "text": f"r{i}"}, id=f"c-{i}", topic="conformance", offset=i)

    def poison_record(self, i: int) -> Record | None:
        return Record({"n": i, "nope": 1}, id=f"c-{i}", topic="conformance", offset=i)

    @contextlib.contextmanager
    def _locked(self, tmp_path: Path) -> Iterator[None]:
        """Another session holds the table's lock (no insert gets through) until the end."""
        import sqlalchemy as sa

        t = self.table(tmp_path)
        if self.server == "pg_url":
            import psycopg

            dsn = sa.make_url(self.url).set(drivername="postgresql").render_as_string()
            with psycopg.connect(dsn) as pg:
                pg.execute(f'LOCK TABLE "{t}" IN EXCLUSIVE MODE')  # reads only
                yield
                pg.rollback()
        else:
            import pymysql

            db = sa.make_url(self.url).database
            my = pymysql.connect(host="127.0.0.1", user="root", database=db)
            try:
                with my.cursor() as cur:  # every row and the gap after the last, locked
                    cur.execute(f"SELECT * FROM `{t}` FOR UPDATE")
                yield
                my.rollback()
            finally:
                my.close()

    def unavailable(self, tmp_path: Path) -> contextlib.AbstractContextManager[None]:
        return self._locked(tmp_path)


class TestPostgresConformance(_ServerConformance):
    server = "pg_url"


class TestMariaDBConformance(_ServerConformance):
    server = "my_url"


async def test_large_batches_odd_values(url: str, tmp_path: Path) -> None:
    """Runs of 1,000+ rows (PostgreSQL: COPY into a staging table, then one upsert)."""
    t = table_name("big %s 50%")
    s = make(url, tmp_path, table=t, key=["id"], auto_create=True, last_writer_wins="ver")
    await s.open(None)
    odd = "tab\there, newline\n, back\\slash, \"q\", 's', \\N, 😀, %s"

    def row(i: int, ver: int) -> dict[str, Any]:
        return {
            "id": i,
            "ver": ver,
            "text": None if i % 7 == 0 else f"{odd} {i}",
            "price": Decimal(f"{i}.25"),
            "doc": {"i": i, "x": [1, Decimal("2.50")]},
        }

    await s.write([rec(row(i, 5), i) for i in range(2500)])
    # again, the same key twice in the batch and some older versions (not applied)
    batch = [rec(row(i, 4 if i % 2 else 6), i) for i in range(2500)] + [rec(row(3, 9), 9999)]
    await s.write(batch)
    await s.close()
    got = {r[0]: r[1:] for r in q(url, f'SELECT id, ver, text, price FROM "{t}"')}
    assert len(got) == 2500
    assert got[3][:2] == (9, f"{odd} 3") and Decimal(str(got[3][2])) == Decimal("3.25")
    assert got[4][0] == 6 and got[5][0] == 5 and got[7][1] is None


async def test_a_nul_byte_postgresql_cannot_store_fails_its_record_alone(
    url: str, tmp_path: Path
) -> None:
    """psycopg refuses a NUL in text before the server sees it ("PostgreSQL text fields cannot
    contain NUL (0x00) bytes"): that record fails alone, the others are written, instead of the
    sink restarting forever on an unknown error (found by the jdbc trial)."""
    t = table_name("nul")
    text = "INT" if url.startswith("mysql") else "INTEGER"
    q(url, f'CREATE TABLE "{t}" (id {text} PRIMARY KEY, v TEXT)')
    s = make(url, tmp_path, table=t, mode="upsert", key=["id"])
    await s.open(None)
    batch = [rec({"id": i, "v": "a\x00b" if i == 2 else f"v{i}"}, i) for i in range(5)]
    try:
        await s.write(batch)
        failed: list[int] = []
    except BatchError as err:
        failed = sorted(err.failures)
    except DataError:  # the whole write refused: the loop writes the records one by one
        failed = []
        for r in batch:
            try:
                await s.write([r])
            except (BatchError, DataError):
                failed.append(r.data["id"])
    await s.close()
    ids = [r[0] for r in q(url, f'SELECT id FROM "{t}" ORDER BY id')]
    if url.startswith("postgresql"):
        assert failed == [2] and ids == [0, 1, 3, 4]
    else:  # MariaDB and SQLite keep the NUL
        assert failed == [] and ids == [0, 1, 2, 3, 4]


async def test_bit_columns_keep_their_number(url: str, tmp_path: Path) -> None:
    """BIT(n) is a number in the records: BIT(64) all ones did not fit a BIGINT, and on a
    MariaDB target a BIT column took the number's text (5 stored as 0x35) (found by the jdbc
    trial)."""
    t = table_name("bits")
    s = make(url, tmp_path, table=t, auto_create=True)
    await s.open(None)
    msg = canal_msg(t, "INSERT", {})
    msg["mysqlType"] = {"id": "int(11)", "b64": "bit(64)", "b8": "bit(8)"}
    records = []
    for n, (b64, b8) in enumerate([("18446744073709551615", "255"), ("5", "5"), ("0", "0")]):
        data = {**msg, "data": [{"id": str(n), "b64": b64, "b8": b8}]}
        records.append(
            Record(data, id=f"r{n}", type="mysql.insert", subject=f"shop.{t}", topic="t", offset=n)
        )
    await s.write(records)
    await s.close()
    got = q(url, f'SELECT id, b64, b8 FROM "{t}" ORDER BY id')
    assert [(int(i), int(a), int(b)) for i, a, b in got] == [
        (0, 18446744073709551615, 255),
        (1, 5, 5),
        (2, 0, 0),
    ]


async def test_an_auto_created_integer_key_is_not_an_identity(url: str, tmp_path: Path) -> None:
    """The rows bring their keys: a created table's integer key must not be SERIAL/IDENTITY
    (PostgreSQL's sequence stayed at 1, so a later insert without id hit a duplicate key)
    (found by the jdbc trial)."""
    t = table_name("keyed")
    s = make(url, tmp_path, table=t, key=["id"], auto_create=True)
    await s.open(None)
    await s.write([rec({"id": 1, "v": "a"}, 0)])
    await s.close()
    if url.startswith("postgresql"):
        default = q(
            url,
            "SELECT column_default, is_identity FROM information_schema.columns "
            f"WHERE table_name = '{t}' AND column_name = 'id'",
        )
        assert default == [(None, "NO")]
    elif url.startswith("mysql"):
        extra = q(
            url,
            "SELECT extra FROM information_schema.columns "
            f"WHERE table_name = '{t}' AND column_name = 'id'",
        )
        assert "auto_increment" not in str(extra).lower()


async def test_a_backtick_in_a_mysql_name(my_url: str, tmp_path: Path) -> None:
    """SQLAlchemy's MySQL reflection gives ``c``d`` for a column named c`d, which was then
    quoted again ("Unknown column", "Duplicate column"): names with a backtick work like any
    other (found by the jdbc trial)."""
    t = table_name("Ins`Tbl")
    s = make(my_url, tmp_path, table=t, key=["id"], auto_create=True, auto_evolve=True)
    await s.open(None)
    await s.write([rec({"id": 1, "we`ird col": "a"}, 0)])
    await s.write([rec({"id": 2, "we`ird col": "b", "n`2": 3}, 1)])
    await s.close()
    qt = t.replace("`", "``")
    assert q(my_url, f"SELECT id, `we``ird col`, `n``2` FROM `{qt}` ORDER BY id") == [
        (1, "a", None),
        (2, "b", 3),
    ]


async def test_values_for_a_mariadb_json_column(my_url: str, tmp_path: Path) -> None:
    """MariaDB's JSON is a LONGTEXT with CHECK (json_valid(col)), reflected as LONGTEXT: a list
    went in as its items joined by commas (``[]`` as an empty string, which the CHECK refused,
    ``["x", "y"]`` as ``x,y``), a number or a boolean as Python's text. Every JSON value is
    now written as JSON text, and text as it is (found by the verify-1112 trial)."""
    t = table_name("mjson")
    query(my_url, f"CREATE TABLE `{t}` (id INT PRIMARY KEY, doc JSON, `j``2` JSON, s TEXT)")
    s = make(my_url, tmp_path, table=t, key=["id"])
    await s.open(None)
    await s.write(
        [
            rec({"id": 1, "doc": [], "j`2": ["x", "y"], "s": "a"}, 0),
            rec({"id": 2, "doc": {"a": [1, Decimal("2.50")]}, "j`2": True, "s": None}, 1),
            rec({"id": 3, "doc": Decimal("1.10"), "j`2": '{"t": "text as it is"}'}, 2),
            rec({"id": 4, "doc": None, "j`2": "null"}, 3),
        ]
    )
    await s.close()
    assert q(my_url, f"SELECT id, doc, `j``2` FROM `{t}` ORDER BY id") == [
        (1, "[]", '["x","y"]'),
        (2, '{"a":[1,2.50]}', "true"),
        (3, "1.10", '{"t": "text as it is"}'),
        (4, None, "null"),
    ]


async def test_values_a_column_cannot_hold_exactly_are_dead_letters(
    url: str, tmp_path: Path
) -> None:
    """A value the column would round or guess at fails its record; the good ones are written
    once. PostgreSQL and MariaDB rounded 1.5 into a BIGINT (to 2) and 1.239 into a
    NUMERIC(10,2) (to 1.24), and every dialect but MariaDB took "banana" as false."""
    t = table_name("exact")
    quote = "`" if url.startswith("mysql") else '"'
    boolean = "BOOLEAN" if not url.startswith("mysql") else "BOOL"
    q(url, f"CREATE TABLE {quote}{t}{quote} (id INT PRIMARY KEY, n BIGINT, d NUMERIC(10,2), "
           f"b {boolean})")  # fmt: skip
    s = make(url, tmp_path, table=t)
    await s.open(None)
    with pytest.raises(BatchError) as err:
        await s.write(
            [
                rec({"id": 1, "n": Decimal("2.0"), "d": Decimal("1.500"), "b": True}, 0),
                rec({"id": 2, "n": Decimal("1.5")}, 1),
                rec({"id": 3, "d": Decimal("1.239")}, 2),
                rec({"id": 4, "n": 7.25}, 3),
                rec({"id": 5, "b": "yes"}, 4),  # MySQL's BOOLEAN (TINYINT(1)) too
                rec({"id": 6, "b": "banana"}, 5),
            ]
        )
    failed = set(err.value.failures)
    assert failed == {1, 2, 3, 5}
    assert "scale" in str(err.value.failures[2])
    got = q(url, f'SELECT id, n, d, b FROM "{t}" ORDER BY id')
    assert got == [(1, 2, Decimal("1.50"), 1), (5, None, None, 1)]
    await s.close()


async def test_a_timestamp_with_an_offset_is_the_same_instant_everywhere(
    url: str, tmp_path: Path
) -> None:
    """Text with an offset is turned to UTC: into a column without a time zone goes the UTC
    wall time (PyMySQL and SQLite dropped the offset, PostgreSQL applied the session's
    zone), into a time-zone column the instant."""
    t = table_name("tz")
    s = make(url, tmp_path, table=t, key=["id"], auto_create=True)
    await s.open(None)
    await s.write([rec({"id": 0, "ts": None}, 0)])  # a TEXT column: the table made, not used
    await s.close()
    q(url, f'DROP TABLE "{t}"')
    quote = "`" if url.startswith("mysql") else '"'
    kind = "DATETIME(6)" if url.startswith("mysql") else "TIMESTAMP"
    q(url, f"CREATE TABLE {quote}{t}{quote} (id INT PRIMARY KEY, ts {kind})")
    s = make(url, tmp_path, table=t)
    await s.open(None)
    await s.write(
        [
            rec({"id": 1, "ts": "2024-01-01T10:00:00+02:00"}, 1),
            rec({"id": 2, "ts": "2024-01-01T08:00:00Z"}, 2),
            rec({"id": 3, "ts": "2024-01-01 08:00:00"}, 3),
        ]
    )
    got = [r[0] for r in q(url, f'SELECT ts FROM "{t}" ORDER BY id')]
    if url.startswith("sqlite"):
        got = [dt.datetime.fromisoformat(v) for v in got]
    assert got == [dt.datetime(2024, 1, 1, 8, 0)] * 3
    await s.close()


async def test_a_mysql_timestamp_is_utc_whatever_the_server_time_zone(
    my_url: str, tmp_path: Path
) -> None:
    """The sink's sessions run in UTC: on a server whose time zone is +02:00 (here the
    session's, set as the server's would be) a TIMESTAMP was stored two hours off."""
    t = table_name("mytz")
    query(my_url, f"CREATE TABLE `{t}` (id INT PRIMARY KEY, ts TIMESTAMP(6) NULL)")
    s = make(my_url + "&init_command=SET+time_zone%3D%27%2B02%3A00%27", tmp_path, table=t)
    await s.open(None)
    await s.write([rec({"id": 1, "ts": "2024-01-01 08:00:00"}, 0)])  # UTC, as canal writes it
    await s.close()
    got = query(my_url, f"SELECT UNIX_TIMESTAMP(ts) FROM `{t}`")
    assert int(got[0][0]) == int(dt.datetime(2024, 1, 1, 8, tzinfo=dt.UTC).timestamp())


async def test_plain_records_write_lists_and_objects_into_text_as_json(
    url: str, tmp_path: Path
) -> None:
    """Into a TEXT column a plain record's list is JSON, as its object is (it was joined with
    commas, items as Python wrote them: ``{'x': 1}``); a null into a JSON column is SQL NULL
    on every dialect (SQLite and MySQL wrote the JSON text ``null``)."""
    t = table_name("lists")
    s = make(url, tmp_path, table=t, key=["id"], auto_create=True)
    await s.open(None)
    await s.write(
        [
            rec({"id": 1, "t": "x", "j": {"a": 1}}, 0),
            rec({"id": 2, "t": ["a,b", "c"], "j": None}, 1),
            rec({"id": 3, "t": [{"x": 1}], "j": None}, 2),
        ]
    )
    got = q(url, f'SELECT id, t, j IS NULL FROM "{t}" ORDER BY id')
    assert got == [(1, "x", 0), (2, '["a,b","c"]', 1), (3, '[{"x":1}]', 1)]
    await s.close()


@pytest.mark.parametrize("dialect", ["postgresql", "mariadb"])
async def test_a_name_longer_than_the_database_takes_fails_its_record_alone(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """PostgreSQL cuts names to 63 bytes with a NOTICE: a 70-character table name stopped
    the sink (SQLAlchemy's IdentifierError) and a long column was created cut and then
    added again and again (DuplicateColumn). Now such a record is a dead letter naming the
    limit, and the others are written."""
    url = request.getfixturevalue("pg_url" if dialect == "postgresql" else "my_url")
    t = table_name("longnames")
    long = "é" * 40 if dialect == "postgresql" else "c" * 65  # 80 bytes / 65 characters
    s = make(url, tmp_path, table="{data.table}", key=["id"], auto_create=True,
             auto_evolve=True)  # fmt: skip
    await s.open(None)
    with pytest.raises(BatchError) as err:
        await s.write(
            [
                rec({"table": t, "id": 1}, 0),
                rec({"table": "t" * 70, "id": 2}, 1),
                rec({"table": t, "id": 3, long: 1}, 2),
                rec({"table": t, "id": 4}, 3),
            ]
            # a name the server refuses whatever its length
            + ([rec({"table": "t ", "id": 5}, 4)] if dialect == "mariadb" else [])
        )
    assert set(err.value.failures) == ({1, 2} if dialect == "postgresql" else {1, 2, 4})
    assert all("takes at most" in str(err.value.failures[i]) for i in (1, 2))
    assert q(url, f'SELECT id FROM "{t}" ORDER BY id') == [(1,), (4,)]
    await s.close()


async def test_a_table_made_in_a_latin1_mariadb_database_takes_any_character(
    tmp_path: Path,
) -> None:
    """auto_create makes utf8mb4 tables whatever the database's default: in a latin1
    database (MariaDB's default before 11.6) the table took latin1 and refused an emoji."""
    from jdbc_support import my_database

    database = my_database(charset="latin1")
    url = next(database)
    try:
        s = make(url, tmp_path, table="texts", key=["id"], auto_create=True)
        await s.open(None)
        await s.write([rec({"id": 1, "s": "emoji 😀 漢字"}, 0)])
        await s.close()
        assert query(url, "SELECT s FROM texts") == [("emoji 😀 漢字",)]
    finally:
        database.close()  # drops it


async def test_a_mariadb_server_without_strict_mode_changes_no_value(
    my_url: str, tmp_path: Path
) -> None:
    """On a server whose sql_mode lacks strict mode (here the session's, set as the server's
    would be), MariaDB cut 'abcdef' to 'abcd', stored an emoji in a utf8mb3 column as '?'
    and 300 in a TINYINT as 127, with a warning only. The sink's sessions are strict: each
    is a dead letter, the good record is written."""
    t = table_name("lax")
    query(my_url, f"CREATE TABLE `{t}` (id INT PRIMARY KEY, s VARCHAR(4) CHARACTER SET utf8mb3, "
                  "n TINYINT)")  # fmt: skip
    s = make(my_url + "&init_command=SET+sql_mode%3D%27%27", tmp_path, table=t)
    await s.open(None)
    with pytest.raises(BatchError) as err:
        await s.write(
            [
                rec({"id": 1, "s": "abcdef"}, 0),
                rec({"id": 2, "s": "😀"}, 1),
                rec({"id": 3, "n": 300}, 2),
                rec({"id": 4, "s": "ok", "n": 1}, 3),
            ]
        )
    await s.close()
    assert set(err.value.failures) == {0, 1, 2}
    assert query(my_url, f"SELECT id, s, n FROM `{t}`") == [(4, "ok", 1)]


async def test_a_postgresql_lock_wait_is_bounded_and_retriable(pg_url: str, tmp_path: Path) -> None:
    # PostgreSQL waits for a lock for ever by default: a transaction left open elsewhere held
    # the sink (and its stop) as long as it stayed open; with a lock_timeout, 55P03 was taken
    # for a fault of the record's data and the record dead-lettered.
    import psycopg
    import sqlalchemy as sa

    from meshconnect import RetriableError
    from meshconnect.connectors.jdbc.engine import PG_LOCK_TIMEOUT

    t = table_name("locked")
    q(pg_url, f'CREATE TABLE "{t}" (id int PRIMARY KEY, v text)')
    q(pg_url, f"INSERT INTO \"{t}\" VALUES (1, 'old')")
    s = make(pg_url, tmp_path, table=t, key=["id"])
    await s.open(None)
    with s.engine.connect() as conn:  # a session without one gets InnoDB's default
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == PG_LOCK_TIMEOUT
    await s.close()

    dbname = sa.make_url(pg_url).database
    dsn = sa.make_url(pg_url).set(drivername="postgresql").render_as_string()
    with psycopg.connect(dsn, autocommit=True) as admin:  # a DBA's setting is kept
        admin.execute(f"ALTER DATABASE \"{dbname}\" SET lock_timeout = '300ms'")
    try:
        s = make(pg_url, tmp_path, table=t, key=["id"])
        await s.open(None)
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "300ms"
        with psycopg.connect(dsn) as holder:
            holder.execute(f"UPDATE \"{t}\" SET v = 'held' WHERE id = 1")  # row lock, open
            with pytest.raises(Exception) as err:
                await s.write([rec({"id": 1, "v": "new"}, 0)])
            assert s.classify_error(err.value) is RetriableError, err.value
            holder.rollback()
        await s.write([rec({"id": 1, "v": "new"}, 0)])  # the retry, once the lock is gone
        assert q(pg_url, f'SELECT v FROM "{t}"') == [("new",)]
        await s.close()
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" RESET lock_timeout')


async def test_a_read_only_postgresql_is_retried_not_a_data_error(
    pg_url: str, tmp_path: Path
) -> None:
    # A standby, or a primary demoted in a failover, refuses writes with 25006 until the pool
    # reaches the new primary: every record of the batch was dead-lettered as bad data.
    import psycopg
    import sqlalchemy as sa

    from meshconnect import RetriableError

    t = table_name("readonly")
    q(pg_url, f'CREATE TABLE "{t}" (id int PRIMARY KEY, v text)')
    dbname = sa.make_url(pg_url).database
    dsn = sa.make_url(pg_url).set(drivername="postgresql").render_as_string()
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
    try:
        s = make(pg_url, tmp_path, table=t, key=["id"])
        await s.open(None)
        with pytest.raises(Exception) as err:
            await s.write([rec({"id": 1, "v": "a"}, 0), rec({"id": 2, "v": "b"}, 1)])
        assert s.classify_error(err.value) is RetriableError, err.value
        await s.close()
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SET default_transaction_read_only = off")
            admin.execute(f'ALTER DATABASE "{dbname}" RESET default_transaction_read_only')
    s = make(pg_url, tmp_path, table=t, key=["id"])
    await s.open(None)
    await s.write([rec({"id": 1, "v": "a"}, 0), rec({"id": 2, "v": "b"}, 1)])
    assert q(pg_url, f'SELECT id, v FROM "{t}" ORDER BY id') == [(1, "a"), (2, "b")]
    await s.close()


@pytest.mark.parametrize("kill", ["QUERY", "CONNECTION"])
async def test_a_mariadb_statement_killed_by_an_operator_is_retried(
    my_url: str, tmp_path: Path, kill: str
) -> None:
    # KILL QUERY (1317) is an operator's intervention, as PostgreSQL's query_canceled (57014,
    # retriable): every record of the batch was dead-lettered as bad data.
    import asyncio

    import pymysql

    from meshconnect import RetriableError

    t = table_name("killed")
    q(my_url, f"CREATE TABLE `{t}` (id int PRIMARY KEY, v text)")
    q(my_url, f"INSERT INTO `{t}` VALUES (1, 'old')")
    s = make(my_url, tmp_path, table=t, key=["id"])
    await s.open(None)
    db = my_url.rsplit("/", 1)[1].split("?")[0]
    holder = pymysql.connect(host="127.0.0.1", user="root", database=db)
    admin = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    try:
        with holder.cursor() as cur:  # a row lock, held
            cur.execute(f"UPDATE `{t}` SET v = 'held' WHERE id = 1")
        write = asyncio.create_task(s.write([rec({"id": 1, "v": "new"}, 0)]))
        for _ in range(200):  # the sink's statement waits for the lock
            with admin.cursor() as cur:
                cur.execute(
                    "SELECT id FROM information_schema.processlist "
                    "WHERE id <> CONNECTION_ID() AND info LIKE %s",
                    (f"%{t}%",),
                )
                row = cur.fetchone()
            if row is not None:
                break
            await asyncio.sleep(0.05)
        assert row is not None, "the sink's statement never waited for the lock"
        with admin.cursor() as cur:
            cur.execute(f"KILL {kill} {int(row[0])}")
        with pytest.raises(Exception) as err:
            await asyncio.wait_for(write, 60)
        assert s.classify_error(err.value) is RetriableError, getattr(
            err.value, "failures", err.value
        )
        holder.rollback()
        await s.write([rec({"id": 1, "v": "new"}, 0)])  # the retry
        assert q(my_url, f"SELECT v FROM `{t}`") == [("new",)]
    finally:
        holder.close()
        admin.close()
        await s.close()


async def test_a_mariadb_lock_wait_timeout_is_retried_not_a_data_error(
    my_url: str, tmp_path: Path
) -> None:
    # PyMySQL gives 1205 the SQLSTATE HY000, which was read as PostgreSQL's: the blocked
    # record went to the dead-letter topic instead of being retried.
    import pymysql

    from meshconnect import RetriableError

    t = table_name("waited")
    q(my_url, f"CREATE TABLE `{t}` (id int PRIMARY KEY, v text)")
    q(my_url, f"INSERT INTO `{t}` VALUES (1, 'old')")
    url = my_url + "&init_command=SET innodb_lock_wait_timeout = 1"
    s = make(url, tmp_path, table=t, key=["id"])
    await s.open(None)
    db = my_url.rsplit("/", 1)[1].split("?")[0]
    holder = pymysql.connect(host="127.0.0.1", user="root", database=db)
    try:
        with holder.cursor() as cur:  # a row lock, held
            cur.execute(f"UPDATE `{t}` SET v = 'held' WHERE id = 1")
        with pytest.raises(Exception) as err:
            await s.write([rec({"id": 1, "v": "new"}, 0), rec({"id": 2, "v": "two"}, 1)])
        assert s.classify_error(err.value) is RetriableError, getattr(
            err.value, "failures", err.value
        )
        holder.rollback()
        await s.write([rec({"id": 1, "v": "new"}, 0), rec({"id": 2, "v": "two"}, 1)])
        assert q(my_url, f"SELECT id, v FROM `{t}` ORDER BY id") == [(1, "new"), (2, "two")]
    finally:
        holder.close()
        await s.close()


async def test_a_rejected_row_on_postgresql_logs_no_psycopg_warning(
    pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # psycopg logged "error ignored terminating <psycopg.Pipeline [INERROR]>: pipeline
    # aborted" at WARNING on most batches holding a row the database refused (a race in its
    # pipeline mode), though the sink handles the refusal: the batch is applied again record by
    # record and the rejected one is reported. Several batches, so the race shows on the old
    # code whichever way it goes each time.
    t = table_name("refused")
    q(pg_url, f'CREATE TABLE "{t}" (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)')
    s = make(pg_url, tmp_path, table=t)
    await s.open(None)
    with caplog.at_level(logging.WARNING):
        for n in range(6):
            batch = [rec({"id": n * 200 + i, "v": None if i == 1 else i}, i) for i in range(200)]
            with pytest.raises(BatchError) as err:
                await s.write(batch)
            assert sorted(err.value.failures) == [1]
    await s.close()
    assert len(q(pg_url, f'SELECT id FROM "{t}"')) == 6 * 199
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []
