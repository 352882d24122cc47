"""How the jdbc connector classes database errors: the exceptions the drivers really raise,
with the codes each database really sends (PyMySQL 1.1.1+ carries MySQL's SQLSTATE too)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("sqlalchemy")
pymysql = pytest.importorskip("pymysql")
from sqlalchemy import exc as sa_exc  # noqa: E402

from meshconnect.connectors.jdbc.engine import classify_db_error  # noqa: E402
from meshconnect.errors import DataError, RetriableError  # noqa: E402


def mysql(kind: Any, errno: int, sqlstate: str | None, message: str = "x") -> BaseException:
    wrapper = {
        pymysql.err.OperationalError: sa_exc.OperationalError,
        pymysql.err.IntegrityError: sa_exc.IntegrityError,
        pymysql.err.DataError: sa_exc.DataError,
        pymysql.err.InternalError: sa_exc.InternalError,
    }[kind]
    return wrapper("INSERT …", {}, kind(errno, message, sqlstate=sqlstate))


@pytest.mark.parametrize(
    ("errno", "sqlstate", "expected"),
    [
        (1205, "HY000", RetriableError),  # lock wait timeout
        (1213, "40001", RetriableError),  # deadlock
        (1290, "HY000", RetriableError),  # --read-only (a failover)
        (1317, "70100", RetriableError),  # KILL QUERY
        (1927, "08S01", RetriableError),  # connection killed
        (1969, "70100", RetriableError),  # MariaDB max_statement_time
        (3024, "HY000", RetriableError),  # MySQL max_execution_time
        (1040, "08004", RetriableError),  # too many connections
        (2013, None, RetriableError),  # lost connection (the client's own: no SQLSTATE)
        (1062, "23000", DataError),  # duplicate key
        (1406, "22001", DataError),  # data too long
        (1366, "22007", DataError),  # incorrect value
        (1048, "23000", DataError),  # column cannot be null
        (1054, "42S22", DataError),  # unknown column
    ],
)
def test_a_mysql_error_is_classed_by_its_number_not_its_sqlstate(
    errno: int, sqlstate: str | None, expected: type
) -> None:
    # MySQL's SQLSTATEs are not PostgreSQL's: read by PostgreSQL's classes, 1205 (HY000) and
    # 1290 were data errors, and the blocked batch went to the dead-letter topic.
    for kind in (pymysql.err.OperationalError, pymysql.err.InternalError):
        assert classify_db_error(mysql(kind, errno, sqlstate)) is expected
