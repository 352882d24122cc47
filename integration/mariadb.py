"""A private MariaDB server with the binlog on, for CDC tests and benchmarks.

The machine's own MariaDB (port 3306) runs with the binlog off, so CDC needs its own server::

    with private_mariadb(tmp_path) as server:
        conn = pymysql.connect(**server.connect_args())

It is started from the machine's ``mariadbd`` with ``--log-bin --binlog-format=ROW
--binlog-row-metadata=FULL --binlog-row-image=FULL`` on a free port, with its data directory
under ``base`` (``mariadb-install-db`` makes it), and stopped (and waited for) on exit.
``MariaDB.missing()`` says why no server can be started here, for ``require_server``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MariaDB", "free_port", "private_mariadb"]

#: Where Debian installs the server; PATH may not include /usr/sbin.
_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(name: str) -> str | None:
    return shutil.which(name, path=_SEARCH)


@dataclass
class MariaDB:
    """A running private server (root, empty password, over TCP on 127.0.0.1)."""

    base: Path
    port: int
    server_id: int
    process: subprocess.Popen[bytes] | None = None
    extra_args: Sequence[str] = field(default_factory=tuple)

    host = "127.0.0.1"
    user = "root"
    password = ""

    @staticmethod
    def missing() -> str | None:
        """Why no private server can start here, or ``None`` when it can."""
        for name in ("mariadbd", "mariadb-install-db"):
            if _binary(name) is None:
                return f"{name} not found (apt install mariadb-server)"
        return None

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def socket_path(self) -> Path:
        return self.base / "mysqld.sock"

    @property
    def log_path(self) -> Path:
        return self.base / "mariadbd.log"

    def connect_args(self, database: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``pymysql.connect``."""
        args: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "autocommit": True,
        }
        if database:
            args["database"] = database
        return args

    def install(self, attempts: int = 3) -> None:
        """Make the data directory with ``mariadb-install-db``.

        A failed bootstrap is retried on a wiped directory (a CI run once saw it fail with no
        other sign of trouble); the last failure raises with the tool's own output.
        """
        install = _binary("mariadb-install-db")
        assert install is not None, MariaDB.missing()
        command = [
            install,
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--user=root" if os.geteuid() == 0 else f"--user={os.getlogin()}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        for attempt in range(1, attempts + 1):
            shutil.rmtree(self.datadir, ignore_errors=True)
            self.datadir.mkdir(parents=True)
            done = subprocess.run(command, capture_output=True, check=False)
            if done.returncode == 0:
                return
            output = (done.stdout + done.stderr).decode(errors="replace")[-3000:]
            print(f"mariadb-install-db failed (attempt {attempt}): {output}", file=sys.stderr)
            time.sleep(1.0)
        raise RuntimeError(
            f"mariadb-install-db failed {attempts} times (exit {done.returncode}): {output}"
        )

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (installing the data directory the first time)."""
        if not (self.datadir / "mysql").exists():
            self.install()
        server = _binary("mariadbd")
        assert server is not None, MariaDB.missing()
        args = [
            server,
            "--no-defaults",
            f"--datadir={self.datadir}",
            # its own temporary directory: a shared /tmp that other processes clean up would
            # lose the server's temporary tables mid-query
            f"--tmpdir={self.base}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.base / 'mysqld.pid'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--log-error={self.log_path}",
            "--log-bin=binlog",
            "--binlog-format=ROW",
            "--binlog-row-image=FULL",
            "--binlog-row-metadata=FULL",
            f"--server-id={self.server_id}",
            "--innodb-buffer-pool-size=128M",
            "--innodb-flush-log-at-trx-commit=2",
            "--sync-binlog=0",
            "--skip-name-resolve",
            "--max-connections=200",
            *self.extra_args,
        ]
        if os.geteuid() == 0:
            args.append("--user=root")
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited at start: {self._log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.5),
            ):
                if self._ping():
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"mariadbd did not start in {timeout:.0f}s: {self._log_tail()}")

    def _ping(self) -> bool:
        import pymysql

        try:
            pymysql.connect(**self.connect_args(), connect_timeout=2).close()
        except pymysql.err.MySQLError:
            return False
        return True

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the server down cleanly (SIGTERM), or kill it after ``timeout``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def execute(self, *statements: str, database: str | None = None) -> list[tuple[Any, ...]]:
        """Run statements on a fresh connection; the rows of the last one."""
        import pymysql

        conn = pymysql.connect(**self.connect_args(database))
        try:
            with conn.cursor() as cur:
                rows: list[tuple[Any, ...]] = []
                for statement in statements:
                    cur.execute(statement)
                    rows = list(cur.fetchall())
                return rows
        finally:
            conn.close()


@contextlib.contextmanager
def private_mariadb(
    base: Path, *, server_id: int = 1, extra_args: Sequence[str] = ()
) -> Iterator[MariaDB]:
    """A private MariaDB with the binlog on under ``base``, stopped on exit."""
    server = MariaDB(base, free_port(), server_id, extra_args=tuple(extra_args))
    server.start()
    try:
        yield server
    finally:
        server.stop()
