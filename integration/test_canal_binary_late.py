"""Binary string columns of a table created after the source started (no schema to compare
with: the types come from the binlog's table map alone) are binary: VARBINARY, BINARY and BLOB
keep their type and their bytes, in every format (found by the jdbc trial: they arrived as
varchar/text holding base64, so a replica got text columns)."""

from __future__ import annotations

import pytest
from canal_support import end_positions, mariadb, run_source
from mariadb import MariaDB

__all__ = ["mariadb"]


@pytest.mark.parametrize("fmt", ["canal", "row"])
def test_binary_columns_of_a_table_made_while_streaming(mariadb: MariaDB, fmt: str) -> None:
    mariadb.execute("DROP DATABASE IF EXISTS lb", "CREATE DATABASE lb")
    start = end_positions(mariadb)
    mariadb.execute(
        "CREATE TABLE lb.t (id INT PRIMARY KEY, vb VARBINARY(20), bi BINARY(3), bl BLOB, "
        "tx TEXT, vc VARCHAR(5)) CHARSET utf8mb4",
        "INSERT INTO lb.t VALUES (1, x'00ff', x'0102', x'00ff10', 'é', 'ab')",
    )
    records, _ = run_source(
        mariadb, start, 1, format=fmt, snapshot="never", include=["lb\\..*"], ddl="none"
    )
    (row,) = [r for r in records if r.type == "mysql.insert"]
    if fmt == "canal":
        assert row.data["mysqlType"] == {
            "id": "int(11)",
            "vb": "varbinary(20)",
            "bi": "binary(3)",
            "bl": "blob",
            "tx": "text",
            "vc": "varchar(5)",
        }
        values = row.data["data"][0]
    else:
        values = row.data
    assert (values["vb"], values["bi"], values["bl"]) == ("AP8=", "AQIA", "AP8Q")
    assert (values["tx"], values["vc"]) == ("é", "ab")
