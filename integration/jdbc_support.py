"""Fixtures for the jdbc integration tests: a database of its own (random name, dropped at the
end) on the machine's PostgreSQL (127.0.0.1:5432) and MariaDB (127.0.0.1:3306), and a private
PostgreSQL instance that a test may stop and start."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mariadb import free_port

from conftest import require_server

PG_HOST = os.environ.get("MESHCONNECT_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("MESHCONNECT_PG_PORT", "5432"))
MY_HOST = os.environ.get("MESHCONNECT_MYSQL_HOST", "127.0.0.1")
MY_PORT = int(os.environ.get("MESHCONNECT_MYSQL_PORT", "3306"))
PG_BIN = Path(os.environ.get("MESHCONNECT_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _name(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(5)}"


def pg_database(port: int = PG_PORT, host: str = PG_HOST) -> Iterator[str]:
    """A fresh database on PostgreSQL; yields its SQLAlchemy URL; dropped afterwards."""
    import psycopg

    try:
        admin = psycopg.connect(
            host=host,
            port=port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
        )
    except psycopg.OperationalError as exc:
        require_server(f"PostgreSQL on {host}:{port}", str(exc).strip())
    name = _name("mc_jdbc")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@{host}:{port}/{name}"
    finally:
        with contextlib.suppress(Exception):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextlib.contextmanager
def pg_replica() -> Iterator[tuple[str, str]]:
    """A fresh PostgreSQL database (:func:`pg_database`) as a context: its SQLAlchemy URL (for
    a jdbc sink's config) and its libpq DSN (for psycopg in the test); dropped afterwards."""
    databases = pg_database()
    url = next(databases)
    try:
        yield url, url.replace("postgresql+psycopg://", "postgresql://")
    finally:
        databases.close()


def my_database(charset: str = "utf8mb4") -> Iterator[str]:
    """A fresh database on the machine's MariaDB (default character set ``charset``); yields
    its URL; dropped afterwards."""
    import pymysql

    try:
        admin = pymysql.connect(
            host=MY_HOST, port=MY_PORT, user="root", autocommit=True, connect_timeout=5
        )
    except pymysql.err.MySQLError as exc:
        require_server(f"MariaDB on {MY_HOST}:{MY_PORT}", str(exc))
    name = _name("mc_jdbc")
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET {charset}")
    try:
        yield f"mysql+pymysql://root@{MY_HOST}:{MY_PORT}/{name}?charset=utf8mb4"
    finally:
        with contextlib.suppress(Exception), admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    yield from pg_database()


@pytest.fixture(scope="session")
def my_url() -> Iterator[str]:
    yield from my_database()


def engine(url: str) -> Any:
    import sqlalchemy as sa

    return sa.create_engine(url)


def query(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    import sqlalchemy as sa

    eng = sa.create_engine(url)
    try:
        with eng.begin() as conn:
            result = conn.execute(sa.text(sql), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        eng.dispose()


class PrivatePostgres:
    """A PostgreSQL 15 server of its own (Debian's binaries), run as ``postgres`` in a temp
    directory owned by it, on a free port; ``stop()``/``start()`` restart it on the same
    data."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="mc-pg-"))
        self.port = free_port()
        self.data = self.base / "data"
        self.log = self.base / "pg.log"

    @staticmethod
    def missing() -> str | None:
        if not (PG_BIN / "initdb").exists():
            return f"no {PG_BIN}/initdb (apt install postgresql-15)"
        if shutil.which("runuser") is None or os.geteuid() != 0:
            return "needs root and runuser to run postgres as its own user"
        return None

    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], check=check, capture_output=True, text=True
        )

    def init(self) -> None:
        shutil.chown(self.base, "postgres", "postgres")
        self._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )

    def start(self) -> None:
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False
        )

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:
    missing = PrivatePostgres.missing()
    if missing:
        require_server("a private PostgreSQL", missing)
    pg = PrivatePostgres()
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.remove()


def wait_for(condition: Any, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
