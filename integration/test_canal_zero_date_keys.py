"""Primary keys holding zero dates (found trying the canal connector from its docs): a zero or
partly zero DATE/DATETIME/TIMESTAMP is the text the server prints, the other values date
objects; the snapshot sorted a chunk's keys (and compared keys with a chunk's bounds) in
Python and failed with ``TypeError: '<' not supported between … datetime and str`` on
every retry. Against the private binlog MariaDB."""

from __future__ import annotations

import datetime as dt

import pytest
from canal_support import mariadb, run_source
from mariadb import MariaDB

from meshconnect.connectors.canal.keyorder import KeyOrder

__all__ = ["mariadb"]

TABLES = {
    "dtm": (
        "DATETIME(6)",
        ["0000-00-00 00:00:00", "2024-00-00 10:00:00", "1000-01-01 00:00:00",
         "2024-02-29 23:59:59.999999", "9999-12-31 23:59:59.999999"],
    ),
    "dat": ("DATE", ["0000-00-00", "2024-00-00", "2024-02-00", "1000-01-01", "2024-02-29"]),
    "tsp": ("TIMESTAMP(3)", ["0000-00-00 00:00:00", "1970-01-02 00:00:00", "2038-01-01 00:00:00"]),
}  # fmt: skip


@pytest.fixture(scope="module")
def zero_keys(mariadb: MariaDB) -> None:
    mariadb.execute("CREATE DATABASE zk")
    for table, (kind, values) in TABLES.items():
        mariadb.execute(
            f"CREATE TABLE zk.{table} (k {kind} NOT NULL PRIMARY KEY, n INT)",
            f"INSERT INTO zk.{table} VALUES "
            + ", ".join(f"('{v}', {i})" for i, v in enumerate(values)),
            database="zk",
        )


@pytest.mark.parametrize("chunk_size", [2, 100])
def test_a_snapshot_of_zero_date_keys_reads_every_row(
    mariadb: MariaDB, zero_keys: None, chunk_size: int
) -> None:
    total = sum(len(v) for _, v in TABLES.values())
    records, _ = run_source(
        mariadb, None, total, format="row", snapshot="initial_only", include=["zk\\..*"],
        chunk_size=chunk_size, limit=30,
    )  # fmt: skip
    got = sorted((r.subject, r.data["n"]) for r in records)
    assert got == sorted(
        (f"zk.{table}", i) for table, (_, values) in TABLES.items() for i in range(len(values))
    )


def test_key_bounds_compare_zero_dates_in_the_servers_order() -> None:
    """The comparison a change during a chunk's window makes against the chunk's bounds."""
    order = KeyOrder([("datetime", "datetime(6)", None, None)], lambda sql, args: [])
    zero = ("0000-00-00 00:00:00.000000",)
    partly = ("2024-00-00 10:00:00.000000",)
    day = (dt.datetime(2024, 2, 29, 23, 59, 59),)
    utc = (dt.datetime(2024, 2, 29, 23, 59, 59, 1, tzinfo=dt.UTC),)
    assert order.at_most([zero, partly, day, utc], day) == [True, True, True, False]
    assert order.at_most([zero, partly, day], zero) == [True, False, False]
    assert order.at_most([zero, day], partly) == [True, False]
    dates = KeyOrder([("date", "date", None, None)], lambda sql, args: [])
    assert dates.at_most([("0000-00-00",), ("2024-02-00",)], (dt.date(1000, 1, 1),)) == [
        True,
        False,
    ]
