"""Statements naming no table belong to the schema of their object (found trying the canal
connector from its docs): ``USE other; CREATE VIEW shop.v …`` was matched (and reported)
against the session's schema ``other``, so with ``include: ["shop\\..*"]`` it never became
a record, while ``USE shop; CREATE VIEW other.v`` became one of ``shop``. Against the private
binlog MariaDB."""

from __future__ import annotations

from canal_support import end_positions, mariadb, run_source
from mariadb import MariaDB

__all__ = ["mariadb"]


def test_a_statement_on_an_object_of_another_schema_is_that_schemas(mariadb: MariaDB) -> None:
    mariadb.execute(
        "CREATE DATABASE ds",
        "CREATE DATABASE dother",
        "CREATE TABLE ds.t (id INT PRIMARY KEY)",
    )
    mariadb.execute("CREATE USER 'cdcg'@'%'")
    start = end_positions(mariadb)
    mariadb.execute(
        "CREATE VIEW ds.v AS SELECT * FROM ds.t",  # captured, session schema dother
        "CREATE VIEW dother.v AS SELECT 1",  # not captured
        "CREATE PROCEDURE `ds`.`p`() SELECT 1",  # captured
        "CREATE PROCEDURE dother.p() SELECT 1",  # not captured
        "CREATE SEQUENCE ds.s",  # captured
        "DROP VIEW IF EXISTS ds.v",  # captured
        "CREATE DEFINER = CURRENT_USER FUNCTION ds.f() RETURNS INT DETERMINISTIC RETURN 1",
        "GRANT SELECT ON ds.* TO 'cdcg'@'%'",  # captured
        "GRANT SELECT ON dother.* TO 'cdcg'@'%'",  # not captured
        "INSERT INTO ds.t VALUES (1)",
        database="dother",
    )
    mariadb.execute("CREATE VIEW dother.w AS SELECT 1", database="ds")  # not captured
    mariadb.execute("INSERT INTO ds.t VALUES (2)")
    records, _ = run_source(
        mariadb, start, 8, format="row", snapshot="never", include=["ds\\..*"], limit=20
    )
    got = [
        (r.subject, r.extensions.get("statement"), r.extensions.get("partitionkey"))
        for r in records
    ]
    assert got == [
        ("ds", "CREATE VIEW", None),
        ("ds", "CREATE PROCEDURE", None),
        ("ds", "CREATE SEQUENCE", None),
        ("ds", "DROP VIEW", None),
        ("ds", "CREATE FUNCTION", None),
        ("ds", "GRANT", None),
        ("ds.t", None, "1"),
        ("ds.t", None, "2"),
    ]
    assert [r.data.get("database") for r in records[:6]] == ["ds"] * 6
