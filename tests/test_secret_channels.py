"""Secrets written as literals in a pipeline file (a URL's password, an ``Authorization``
header, an API key in a query string, a ``SecretStr`` field) never leave the worker: not in
the admin API's view of a connector's config, not in OpenTelemetry spans, not in messages.
(A client library's debug log: integration/test_s3_secrets.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from cli_support import mc

from meshconnect.secrets import pipeline_secrets, secret_str_values, shown_url, url_secrets

#: Each literal secret of the pipelines below, distinct so a leak names its channel.
SECRETS = [
    "pw-HTTP-S3CR3T",
    "pw-QS-S3CR3T",
    "pw-HDR-S3CR3T",
    "pw-XKEY-S3CR3T",
    "pw-SUBKEY-S3CR3T",
    "pw-JDBC-S3CR3T",
]


_MC = [sys.executable, "-m", "meshconnect"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sinks(closed: int) -> str:
    retry = "{retry: {max_attempts: 2, initial_backoff: 10ms}, tolerance: all, "
    retry += "dead_letter_topic: dlq}"
    return textwrap.dedent(
        f"""\
          - name: http
            connector: http
            config:
              url: "http://al:pw-HTTP-S3CR3T@127.0.0.1:{closed}/x?api_key=pw-QS-S3CR3T"
            errors: {retry}
          - name: http2
            connector: http
            config:
              url: "http://127.0.0.1:{closed}/y"
              headers: {{Authorization: "Bearer pw-HDR-S3CR3T", X-Api-Key: pw-XKEY-S3CR3T,
                         Ocp-Apim-Subscription-Key: pw-SUBKEY-S3CR3T}}
            errors: {retry}
        """
    )


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def _get(url: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_admin_api_masks_literal_secrets_in_a_connectors_config(tmp_path: Path) -> None:
    """GET /connectors/NAME/config showed an http sink's Authorization header, its URL's
    password and api_key, and a jdbc URL's password as written (only ``${env:…}`` values and
    ``SecretStr`` fields were masked)."""
    closed = _closed_port()
    admin, hook = _closed_port(), _closed_port()
    sinks = textwrap.indent(_sinks(closed), "    ")
    jdbc = f"postgresql+psycopg://bob:pw-JDBC-S3CR3T@127.0.0.1:{closed}/test"
    (tmp_path / "p.yaml").write_text(
        "pipelines:\n  - name: p\n    source:\n      connector: webhook\n"
        f'      config: {{listen: "127.0.0.1:{hook}", path: /in}}\n'
        f"    sinks:\n{sinks}"
        f"    - {{name: pg, connector: jdbc, config: {{url: '{jdbc}', table: t}}}}\n"
    )
    env = {**os.environ, "MESHCONNECT_ADMIN_TOKEN": "tok-admin"}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshconnect",
            "--state",
            str(tmp_path / "state"),
            "run",
            "--admin",
            f"127.0.0.1:{admin}",
            "p.yaml",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        answers: dict[str, str] = {}
        for _ in range(300):  # bounded: the worker answers within seconds
            try:
                status, body = _get(f"http://127.0.0.1:{admin}/connectors/p/config", "tok-admin")
            except OSError:
                assert worker.poll() is None, worker.communicate(timeout=10)[0][-2000:]
                time.sleep(0.1)
                continue
            assert status == 200, body
            answers["config"] = body
            break
        assert "config" in answers, "the admin API never answered"
        for path in ("/connectors/p", "/connectors?expand=info", "/metrics"):
            answers[path] = _get(f"http://127.0.0.1:{admin}{path}", "tok-admin")[1]
    finally:
        worker.terminate()
        output = worker.communicate(timeout=60)[0]
    for name, body in answers.items():
        assert _leaks(body) == [], name
    assert _leaks(output) == []
    config = json.loads(answers["config"])
    http = next(s for s in config["sinks"] if s["name"] == "http")["config"]
    http2 = next(s for s in config["sinks"] if s["name"] == "http2")["config"]
    assert http2["headers"] == dict.fromkeys(
        ["Authorization", "X-Api-Key", "Ocp-Apim-Subscription-Key"], "**********"
    )
    assert http["url"] == f"http://al:**********@127.0.0.1:{closed}/x?api_key=**********"
    pg = next(s for s in config["sinks"] if s["name"] == "pg")["config"]
    assert pg["url"] == f"postgresql+psycopg://bob:**********@127.0.0.1:{closed}/test"


def test_pipeline_secrets_finds_literals_where_secrets_are_written() -> None:
    data = {
        "store": "redis://:pw-store@127.0.0.1:6379/0",
        "pipelines": [
            {
                "transforms": [
                    {"type": "rename", "fields": {"data.token": "data.access_token"}},
                    {"type": "llm", "api_key": "sk-llm", "base_url": "http://u:pw-llm@h/v1"},
                ],
                "sinks": [
                    {
                        "config": {
                            "headers": {
                                "Authorization": "Basic dXNlcg==",
                                "Ocp-Apim-Subscription-Key": "sub-key-1",
                                "X-Request-Id": "{id}",
                            }
                        }
                    }
                ],
            }
        ],
    }
    assert pipeline_secrets(data) == {
        "pw-store", "sk-llm", "pw-llm", "Basic dXNlcg==", "dXNlcg==", "sub-key-1",
    }  # fmt: skip


def test_secret_str_values_walks_nested_models() -> None:
    from pydantic import BaseModel, SecretStr

    class Inner(BaseModel):
        secret: SecretStr

    class Outer(BaseModel):
        token: SecretStr | None
        items: list[Inner]
        empty: SecretStr = SecretStr("")

    model = Outer(token=SecretStr("tok-1"), items=[Inner(secret=SecretStr("sec-2"))])
    assert secret_str_values(model) == {"tok-1", "sec-2"}


def test_shown_url_masks_the_password_and_secret_query_values() -> None:
    assert shown_url("postgresql://bob:pw@db:5432/app") == "postgresql://bob:**********@db:5432/app"
    assert shown_url("redis://:pw@h:6379/0?prefix=x") == "redis://:**********@h:6379/0?prefix=x"
    assert shown_url("https://h/x?api_key=k&a=1") == "https://h/x?api_key=**********&a=1"
    assert shown_url("https://h/x") == "https://h/x"
    assert shown_url("redis://[::1/0") == "(an invalid URL)"
    # A NATS URL's user info without a password is the token the client authenticates with.
    assert shown_url("nats://tok-1@h:4222?prefix=x") == "nats://**********@h:4222?prefix=x"
    assert url_secrets("nats://tok-1@h:4222") == {"tok-1"}
    assert url_secrets("nats://tok-2@[::1:4222") == {"tok-2"}
    assert shown_url("postgresql://bob@db/app") == "postgresql://bob@db/app"
    # A password SQLAlchemy reads up to the '@' (urlsplit stops at '/', '?', '#').
    assert shown_url("mysql://u:pa#ss@h/db") == "mysql://u:**********@h/db"
    assert url_secrets("postgresql://u:pa/ss@h/db") == {"pa/ss"}
    assert url_secrets("http://h:80/p:q@r") == url_secrets("postgresql://h:5432/a:b@c") == set()
    assert url_secrets("postgresql://bob@db/app") == set()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis://:pw-STORE-S3CR3T@127.0.0.1:notaport/0", "Port could not be cast"),
        ("redis://:pw-STORE-S3CR3T@[::1/0", "Invalid IPv6 URL"),
        ("nats://u:pw-STORE-S3CR3T@127.0.0.1:notaport", "Port could not be cast"),
        ("nats://u:pw-STORE-S3CR3T@[::1", "Invalid IPv6 URL"),
    ],
)
def test_a_store_url_python_cannot_split_is_an_error_without_its_password(
    tmp_path: Path, url: str, reason: str
) -> None:
    """A --store URL with a port that is not a number, or a broken IPv6 literal, crashed
    ``run`` with a traceback from the client (or from the store's own message builder)."""
    (tmp_path / "in.jsonl").write_text('{"id": 1}\n')
    (tmp_path / "p.yaml").write_text(
        "pipelines:\n  - name: p\n    source:\n      connector: file\n"
        "      config: {path: in.jsonl, format: json, follow: false}\n"
    )
    run = mc(tmp_path, "--store", url, "run", "p.yaml", timeout=60)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "store URL" in run.stderr and reason in run.stderr
    assert "pw-STORE-S3CR3T" not in run.stdout + run.stderr


_BOOM = '''
from meshconnect import hookimpl
from meshconnect.mesh import StoreSpec
from meshconnect.mesh.memory import MemoryStore


class BoomStore(MemoryStore):
    """A store plugin whose unexpected error names its URL, password and all."""

    def __init__(self, url):
        super().__init__("memory://")
        self.target = url

    async def open(self):
        raise RuntimeError(f"could not reach {self.target}")


@hookimpl
def meshconnect_stores():
    return [StoreSpec("boom", BoomStore, "a store that cannot open")]
'''


@pytest.mark.parametrize(
    "command", [["run", "p.yaml"], ["topics", "list"], ["offsets", "show", "p.yaml"]]
)
def test_a_crash_traceback_masks_the_store_urls_password(
    tmp_path: Path, command: list[str]
) -> None:
    """An unexpected error (a store plugin's) whose text holds the --store URL: Python's own
    report printed it as it is (topics, offsets), and ``run`` logged it unmasked (the
    password of a --store URL was not among the run's secrets)."""
    (tmp_path / "boom.py").write_text(_BOOM)
    (tmp_path / "plugins.toml").write_text('[plugins]\npaths = ["./boom.py"]\n')
    (tmp_path / "in.jsonl").write_text('{"id": 1}\n')
    (tmp_path / "p.yaml").write_text(
        "pipelines:\n  - name: p\n    source:\n      connector: file\n"
        "      config: {path: in.jsonl, format: json, follow: false}\n"
    )
    done = mc(tmp_path, "--store", "boom://u:pw-BOOM-S3CR3T@h/x", *command, timeout=60)
    assert done.returncode == 1
    assert "RuntimeError: could not reach boom://u:**********@h/x" in done.stderr, done.stderr
    assert "pw-BOOM-S3CR3T" not in done.stdout + done.stderr


def test_the_metrics_endpoint_masks_secrets_in_labels_as_the_admin_api_does(
    tmp_path: Path,
) -> None:
    """``run --metrics`` served label values (here a pipeline named from an environment
    variable) unmasked, where the admin API's /metrics masked them."""
    metrics, hook = _closed_port(), _closed_port()
    (tmp_path / "p.yaml").write_text(
        'pipelines:\n  - name: "orders-${env:TENANT_SECRET}"\n    source:\n'
        f'      connector: webhook\n      config: {{listen: "127.0.0.1:{hook}", path: /in}}\n'
    )
    env = {**os.environ, "TENANT_SECRET": "pw-LABEL-S3CR3T"}
    worker = subprocess.Popen(
        [
            *_MC,
            "--state",
            str(tmp_path / "state"),
            "run",
            "--metrics",
            f"127.0.0.1:{metrics}",
            "p.yaml",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    body = None
    try:
        for _ in range(300):  # bounded: the worker serves within seconds
            try:
                body = _get(f"http://127.0.0.1:{metrics}/metrics", "")[1]
                break
            except OSError:
                assert worker.poll() is None, worker.communicate(timeout=10)[0][-2000:]
                time.sleep(0.1)
    finally:
        worker.terminate()
        output = worker.communicate(timeout=60)[0]
    assert body is not None, "the metrics endpoint never answered"
    assert 'pipeline="orders-**********"' in body
    assert "pw-LABEL-S3CR3T" not in body + output


@pytest.mark.parametrize(
    ("command", "url", "shown"),
    [
        (["status"], "http://u:pw-ADMIN-S3CR3T@127.0.0.1:{port}", "u:**********@127.0.0.1"),
        (["connectors", "pause", "p"], "http://127.0.0.1:{port}/?token=pw-ADMIN-S3CR3T",
         "?token=**********"),
    ],
)  # fmt: skip
def test_an_admin_url_with_credentials_is_never_echoed(
    tmp_path: Path, command: list[str], url: str, shown: str
) -> None:
    """``cannot reach the admin API at URL`` printed the --admin URL as given, password or
    token query value included."""
    admin = url.format(port=_closed_port())
    done = mc(tmp_path, *command, "--admin", admin, "--token", "tok-S3CR3T-cli", timeout=60)
    assert done.returncode == 1
    assert "cannot reach the admin API" in done.stderr and shown in done.stderr, done.stderr
    assert "pw-ADMIN-S3CR3T" not in done.stdout + done.stderr
    assert "tok-S3CR3T-cli" not in done.stdout + done.stderr


def test_an_http_sink_refuses_url_credentials_next_to_another_authorization(
    tmp_path: Path,
) -> None:
    """User info in an http sink's url is sent as Basic auth; next to an Authorization header
    or oauth2, aiohttp refused every request at run time (each record failed). Validation
    names the sink's config, never the URL's password."""
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent(
            """\
            pipelines:
              - name: p
                source: {connector: webhook, config: {listen: "127.0.0.1:0", path: /in}}
                sinks:
                  - name: header
                    connector: http
                    config:
                      url: "http://al:pw-URL-S3CR3T@127.0.0.1:9/x"
                      headers: {authorization: "Bearer pw-HDR-S3CR3T"}
                  - name: oauth
                    connector: http
                    config:
                      url: "http://al:pw-URL-S3CR3T@127.0.0.1:9/{data.x}"
                      oauth2: {token_url: "http://127.0.0.1:9/t", client_id: c,
                               client_secret: pw-OAUTH-S3CR3T}
                  - name: basic
                    connector: http
                    config: {url: "http://al:pw-URL-S3CR3T@127.0.0.1:9/x"}
            """
        )
    )
    done = mc(tmp_path, "validate", "p.yaml")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert [line.split(": ")[0] for line in lines[:-1]] == ["p.yaml:8:11", "p.yaml:13:11"]
    assert "and an Authorization header cannot both" in lines[0]
    assert "and oauth2 cannot both" in lines[1]
    assert lines[-1] == "2 problem(s) found"  # user info alone is Basic auth: fine
    assert "S3CR3T" not in done.stdout + done.stderr


_WARNS = """
import warnings

from meshconnect import hookimpl
from meshconnect.mesh import StoreSpec
from meshconnect.mesh.memory import MemoryStore


class WarnStore(MemoryStore):
    \"\"\"A store plugin that warns about its URL, password and all.\"\"\"

    def __init__(self, url):
        warnings.warn(f"{url}: the legacy scheme is deprecated", UserWarning, stacklevel=1)
        super().__init__("memory://")


@hookimpl
def meshconnect_stores():
    return [StoreSpec("warn", WarnStore, "a store that warns")]
"""


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_warning_goes_through_the_log_with_secrets_masked(
    tmp_path: Path, log_format: str
) -> None:
    """Python printed a library's or plugin's warning to stderr as it is: a URL's password
    in it was not masked (nor was it JSON under --log-format json)."""
    (tmp_path / "warns.py").write_text(_WARNS)
    (tmp_path / "plugins.toml").write_text('[plugins]\npaths = ["./warns.py"]\n')
    (tmp_path / "in.jsonl").write_text('{"id": 1}\n')
    (tmp_path / "p.yaml").write_text(
        "pipelines:\n  - name: p\n    source:\n      connector: file\n"
        "      config: {path: in.jsonl, format: json, follow: false}\n"
    )
    store = "warn://u:pw-WARN-S3CR3T@h/x"
    done = mc(tmp_path, "--log-format", log_format, "--store", store, "run", "p.yaml")
    assert done.returncode == 0, done.stderr
    assert "warn://u:**********@h/x: the legacy scheme is deprecated" in done.stderr
    assert "pw-WARN-S3CR3T" not in done.stdout + done.stderr
    if log_format == "json":
        lines = [json.loads(line) for line in done.stderr.splitlines()]
        assert any(line["logger"] == "py.warnings" for line in lines)


async def test_an_embedded_worker_masks_the_files_secrets_in_dead_letters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only ``meshconnect run`` registered the files' secrets: a worker started by a program
    (``meshconnect.testing.run_pipelines``, the Worker API) stored a failing cast's message
    with the ``${env:…}`` value it quoted in the dead letter."""
    from meshconnect.testing import MemorySink, run_pipelines

    monkeypatch.setenv("EMBED_SECRET", "pw-EMBED-S3CR3T")
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent(
            """\
            pipelines:
              - name: p
                source:
                  connector: memory
                  config: {records: [{n: 1}]}
                  errors: {tolerance: all, dead_letter_topic: dlq}
                transforms:
                  - {type: insert_field, field: data.k, value: "${env:EMBED_SECRET}"}
                  - {type: cast, fields: {data.k: int}}
              - name: d
                sinks:
                  - {connector: memory, topics: [dlq], config: {name: embedded-dlq}}
            """
        )
    )
    MemorySink.outputs.pop("embedded-dlq", None)
    assert await asyncio.wait_for(run_pipelines([tmp_path / "p.yaml"]), 60) == 0
    (dead,) = MemorySink.outputs["embedded-dlq"]
    message = str(dead.extensions["errormessage"])
    assert message.startswith("cast: data.k: '**********' is not a number"), message


def test_url_secrets_are_found_as_written_and_decoded() -> None:
    """A query value was found only decoded (``a/b``) while the URL, in the admin API's
    config and in messages, shows it encoded (``a%2Fb``); a URL ``urlsplit`` refuses (a
    broken IPv6 literal) gave no secret at all, though messages may still quote it."""
    from meshconnect.secrets import url_secrets

    assert url_secrets("postgresql://bob:p%40ss-1@h/db?api_key=a%2Fb-2&x=1") == {
        "p%40ss-1", "p@ss-1", "a%2Fb-2", "a/b-2",
    }  # fmt: skip
    assert url_secrets("redis://:pw-broken@[::1/0?token=t-3") == {"pw-broken", "t-3"}
    assert shown_url("https://h/x?api_key=a%2Fb-2") == "https://h/x?api_key=**********"


_THREADS = """
import threading

from meshconnect import hookimpl
from meshconnect.mesh import StoreSpec
from meshconnect.mesh.memory import MemoryStore


def _lose(url):
    raise RuntimeError(f"lost the connection to {url}")


class ThreadStore(MemoryStore):
    \"\"\"A store plugin whose background thread dies naming its URL, password and all.\"\"\"

    def __init__(self, url):
        super().__init__("memory://")
        thread = threading.Thread(target=_lose, args=(url,), name="keepalive")
        thread.start()
        thread.join()


@hookimpl
def meshconnect_stores():
    return [StoreSpec("thread", ThreadStore, "a store whose thread dies")]
"""


def test_a_thread_that_dies_is_logged_with_secrets_masked(tmp_path: Path) -> None:
    """Python printed the traceback of an exception that ended a library's or plugin's
    thread to stderr as it was, a URL's password in it included."""
    (tmp_path / "threads.py").write_text(_THREADS)
    (tmp_path / "plugins.toml").write_text('[plugins]\npaths = ["./threads.py"]\n')
    (tmp_path / "in.jsonl").write_text('{"id": 1}\n')
    (tmp_path / "p.yaml").write_text(
        "pipelines:\n  - name: p\n    source:\n      connector: file\n"
        "      config: {path: in.jsonl, format: json, follow: false}\n"
    )
    done = mc(tmp_path, "--store", "thread://u:pw-THREAD-S3CR3T@h/x", "run", "p.yaml")
    assert done.returncode == 0, done.stderr
    assert "thread keepalive stopped on an unexpected error" in done.stderr
    assert "lost the connection to thread://u:**********@h/x" in done.stderr
    assert "pw-THREAD-S3CR3T" not in done.stdout + done.stderr


def test_names_of_settings_beside_a_secret_are_not_secrets() -> None:
    """mongodb's ``auth_source: admin`` (and ``?authSource=admin``) was taken for a secret:
    every ``admin`` the worker printed became ``**********`` ("********** API on …")."""
    data = {
        "pipelines": [
            {
                "sinks": [
                    {
                        "config": {
                            "uri": "mongodb://h/?authSource=admin&authMechanism=SCRAM-SHA-256"
                            "&authMechanismProperties=AWS_SESSION_TOKEN:tok-9",
                            "auth_source": "admin",
                            "username": "bob",
                            "author": "ada",
                        }
                    }
                ]
            }
        ]
    }
    assert pipeline_secrets(data) == {"AWS_SESSION_TOKEN:tok-9"}


def test_offsets_show_does_not_print_the_pipelines_the_admin_api_keeps(tmp_path: Path) -> None:
    """`offsets show` without a file listed `admin/pipelines`, where the admin API keeps the
    pipelines PUT to it as given, as a source: a literal bearer token in clear. The store
    keeps a `${env:}` reference as the reference, never its value."""
    literal, from_env = f"lit-{uuid.uuid4().hex[:12]}", f"env-{uuid.uuid4().hex[:12]}"
    admin, hook = _closed_port(), _closed_port()
    env = {**os.environ, "MESHCONNECT_ADMIN_TOKEN": "tok-admin", "HOOK_TOKEN": from_env}
    worker = subprocess.Popen(
        [*_MC, "--state", str(tmp_path / "state"), "run", "--admin", f"127.0.0.1:{admin}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    body = {
        "source": {
            "connector": "webhook",
            "config": {
                "listen": f"127.0.0.1:{hook}",
                "path": "/in",
                "bearer_tokens": [literal, "${env:HOOK_TOKEN}"],
            },
        },
        "sinks": [{"connector": "file", "config": {"path": "out.jsonl"}}],
    }
    try:
        for _ in range(300):  # bounded: the worker answers within seconds
            request = urllib.request.Request(
                f"http://127.0.0.1:{admin}/connectors/hook/config",
                data=json.dumps(body).encode(),
                method="PUT",
                headers={"Authorization": "Bearer tok-admin", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    assert answer.status == 201
                    break
            except urllib.error.HTTPError as exc:
                if exc.code != 409:  # 409: still starting
                    raise AssertionError(exc.read().decode()) from None
            except OSError:
                assert worker.poll() is None, worker.communicate(timeout=10)[0][-2000:]
            time.sleep(0.1)
        else:
            raise AssertionError("the admin API never took the pipeline")
    finally:
        worker.terminate()
        output = worker.communicate(timeout=60)[0]
    assert literal not in output and from_env not in output
    shown = mc(tmp_path, "offsets", "show")
    as_json = mc(tmp_path, "offsets", "show", "--json")
    for result in (shown, as_json):
        assert result.returncode == 0, result.stderr
        out = result.stdout + result.stderr
        assert literal not in out and from_env not in out and "HOOK_TOKEN" not in out, out
    assert "sink hook/file" in shown.stdout and "admin/pipelines" not in shown.stdout
    db = (tmp_path / "state" / "mesh.db").read_bytes()
    assert b"${env:HOOK_TOKEN}" in db and from_env.encode() not in db


def test_a_database_password_that_urlsplit_cuts_is_masked_as_sqlalchemy_reads_it(
    tmp_path: Path,
) -> None:
    """SQLAlchemy reads `postgresql://u:pa/ss@h/db` as the password `pa/ss` (so do `?` and
    `#`), where `urlsplit` finds no user info at all: the admin API's view of the jdbc sink's
    config showed it as written."""
    secret = f"pa/ss?{uuid.uuid4().hex[:12]}"
    admin, hook = _closed_port(), _closed_port()
    url = f"postgresql+psycopg://postgres:{secret}@127.0.0.1:5432/test"
    (tmp_path / "p.yaml").write_text(
        "pipelines:\n  - name: p\n    source:\n      connector: webhook\n"
        f'      config: {{listen: "127.0.0.1:{hook}", path: /in}}\n'
        f"    sinks:\n    - {{name: pg, connector: jdbc, config: {{url: '{url}', table: t}}}}\n"
    )
    env = {**os.environ, "MESHCONNECT_ADMIN_TOKEN": "tok-admin"}
    worker = subprocess.Popen(
        [
            *_MC,
            "--state",
            str(tmp_path / "state"),
            "run",
            "--admin",
            f"127.0.0.1:{admin}",
            "p.yaml",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(300):  # bounded: the worker answers within seconds
            try:
                status, body = _get(f"http://127.0.0.1:{admin}/connectors/p/config", "tok-admin")
                break
            except OSError:
                assert worker.poll() is None, worker.communicate(timeout=10)[0][-2000:]
                time.sleep(0.1)
        else:
            raise AssertionError("the admin API never answered")
    finally:
        worker.terminate()
        output = worker.communicate(timeout=60)[0]
    assert status == 200, body
    assert secret not in body and secret not in output
    pg = json.loads(body)["sinks"][0]["config"]
    assert pg["url"] == "postgresql+psycopg://postgres:**********@127.0.0.1:5432/test"
