"""The canal source passes the shipped SourceConformance suite: a ``snapshot: initial_only``
read (a bounded source) of two tables on the private binlog MariaDB, resumed from every
batch boundary, replayed with the same ids, acked late, crashed on a sentinel row."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from canal_support import DECODER, mariadb
from mariadb import MariaDB

from meshconnect import ConnectorContext
from meshconnect.connectors.canal.config import CanalSourceConfig
from meshconnect.connectors.canal.source import CanalSource
from meshconnect.testing import SourceConformance

__all__ = ["mariadb"]


def create_tables(mariadb: MariaDB) -> None:
    """conf.a (230 rows, int key) and conf.b (95 rows, string key), once per server."""
    mariadb.execute("CREATE DATABASE IF NOT EXISTS conf")
    mariadb.execute(
        "CREATE TABLE IF NOT EXISTS conf.a (id INT PRIMARY KEY, v VARCHAR(20))",
        "CREATE TABLE IF NOT EXISTS conf.b (k VARCHAR(10) PRIMARY KEY, n BIGINT)",
        "INSERT IGNORE INTO conf.a SELECT seq, CONCAT('row ', seq) FROM seq_1_to_230",
        "INSERT IGNORE INTO conf.b SELECT CONCAT('k', seq), seq * 7 FROM seq_1_to_95",
        database="conf",
    )


def canal_config(server: MariaDB) -> CanalSourceConfig:
    settings: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "server_id": 3001,
        "decoder": DECODER,
        "include": ["conf\\..*"],
        "snapshot": "initial_only",
        "format": "row",
        "chunk_size": 40,
    }
    return CanalSourceConfig(**settings)


class TestCanalSnapshotConformance(SourceConformance):
    server: MariaDB

    @pytest.fixture(autouse=True)
    def _server(self, mariadb: MariaDB) -> None:
        type(self).server = mariadb
        create_tables(mariadb)

    def make_source(self, tmp_path: Path) -> CanalSource:
        return CanalSource(
            canal_config(self.server),
            ConnectorContext("conformance", "canal", logging.getLogger("canal-conformance")),
        )

    def input_ids(self, tmp_path: Path) -> list[str]:
        """``snapshot:<schema.table>:<key>`` (docs/connectors/canal.md), the tables in name
        order, each in key order (conf.b's are strings: k1, k10, k11, ...)."""
        return [
            *(f"snapshot:conf.a:{i}" for i in range(1, 231)),
            *(f"snapshot:conf.b:{k}" for k in sorted(f"k{i}" for i in range(1, 96))),
        ]
