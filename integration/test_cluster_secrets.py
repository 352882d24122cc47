"""Secrets in a cluster (``run --cluster`` processes on a private NATS whose URL carries a
token): the store keeps a pipeline as written, ``${env:…}`` references unresolved; each member
resolves them from its own environment; and no member's log or admin API, nor ``status
--cluster``, shows a literal secret, a resolved one or the store's token."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cluster_support import Members, StoreProbe
from test_cluster_admin import admin_url, call, until

from conftest import run_cli

TOKEN = "cluster-admin-integration-token"
MASK = "**********"


class _Receiver(BaseHTTPRequestHandler):
    """The http sink's target: records the Authorization header of each request."""

    seen: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append(self.headers.get("Authorization") or "")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_members_resolve_references_from_their_own_environment_and_show_no_secret(
    tmp_path: Path, nats_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`status --cluster` and a member's `/cluster` showed the store URL
    `nats://TOKEN@host` with the token the NATS client authenticates with in clear, and so
    did the members' logs."""
    store_token, literal = f"nats-{uuid.uuid4().hex[:12]}", f"lit-{uuid.uuid4().hex[:12]}"
    env_a, env_b = f"env-a-{uuid.uuid4().hex[:12]}", f"env-b-{uuid.uuid4().hex[:12]}"
    secrets = (store_token, literal, env_a, env_b)
    url = f"nats://{store_token}@{nats_server.host}:{nats_server.port}?prefix=sec{uuid.uuid4().hex[:8]}"
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.seen = []
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(5)))
    pipeline = {
        "name": "p",
        "source": {"connector": "file", "config": {"path": str(source), "follow": True}},
        "topic": "t",
        "sinks": [
            {
                "name": "h",
                "connector": "http",
                "config": {
                    "url": f"http://127.0.0.1:{receiver.server_port}/in?api_key={literal}",
                    "headers": {"Authorization": "Bearer ${env:HOOK_TOKEN}"},
                },
            }
        ],
    }
    config = tmp_path / "p.yaml"
    config.write_text(json.dumps({"store": url, "cluster": "sec", "pipelines": [pipeline]}))
    monkeypatch.setenv("MESHCONNECT_ADMIN_TOKEN", TOKEN)
    members = Members(tmp_path, ["run", str(config), "--admin", "127.0.0.1:0"])
    answers: dict[str, str] = {}
    try:
        monkeypatch.setenv("HOOK_TOKEN", env_a)
        members.start("a")
        until(lambda: f"Bearer {env_a}" in _Receiver.seen, "member a to send", members)
        monkeypatch.setenv("HOOK_TOKEN", env_b)
        members.start("b", ["--store", url, "run", "--cluster", "sec", "--admin", "127.0.0.1:0"])
        urls = {name: admin_url(members.log(name)) for name in ("a", "b")}
        until(
            lambda: call(urls["b"], "GET", "/connectors/p/config")[0] == 200,
            "member b to load the pipeline from the store",
            members,
        )
        for name, base in urls.items():
            for path in ("/cluster", "/connectors/p/config", "/connectors?expand=info"):
                answers[f"{name} {path}"] = json.dumps(call(base, "GET", path)[1])
        for args in ((), ("--json",)):
            done = run_cli(tmp_path, "--store", url, "status", "--cluster", "sec", *args)
            assert done.returncode == 0, done.stderr
            answers[f"status --cluster {args}"] = done.stdout + done.stderr
        probe = StoreProbe(url)
        try:
            stored = json.dumps(
                probe.call(lambda: probe.store.positions("cluster:sec")), default=str
            )
        finally:
            probe.close()
        members.signal("a", 15)  # b takes the sink over and sends with its own token
        with source.open("a") as f:
            f.write(json.dumps({"id": 5}) + "\n")
        until(lambda: f"Bearer {env_b}" in _Receiver.seen, "member b to send", members)
    finally:
        members.stop_all()
        receiver.shutdown()
    assert "${env:HOOK_TOKEN}" in stored and env_a not in stored
    for name in ("a", "b"):
        answers[f"log of {name}"] = members.log(name).read_text()
    for where, text in answers.items():
        assert [s for s in secrets if s in text] == [], f"{where}: {text[-3000:]}"
    assert f"nats://{MASK}@" in answers["b /cluster"]
    assert f"nats://{MASK}@" in answers["status --cluster ()"]
    config_b = json.loads(answers["b /connectors/p/config"])
    assert config_b["sinks"][0]["config"]["headers"] == {"Authorization": MASK}
    assert config_b["sinks"][0]["config"]["url"].endswith(f"?api_key={MASK}")
