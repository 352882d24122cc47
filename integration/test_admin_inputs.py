"""The admin API against inputs an operator (or an attacker) may send, on a real worker
(``meshconnect run --admin``): literal secrets in a PUT body, offsets moved past a topic's end,
a connector whose sink never committed, validation problems told against the body."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from admin_support import AdminWorker, flowing, jsonl, write_pipeline
from s3_support import free_port

#: Literal secrets in plain (not ``SecretStr``) fields of a PUT body.
LITERALS = {
    "url_password": "Url-Pa55word-xyz",
    "api_key": "query-key-0987",
    "header": "header-token-4321",
    "api_header": "api-key-header-5555",
    "webhook": "webhook-bearer-7777",
}


def _leaks(text: str) -> list[str]:
    return [name for name, value in LITERALS.items() if value in text]


def test_literal_secrets_in_a_put_body_never_come_back(tmp_path: Path) -> None:
    hook, closed = free_port(), free_port()  # nothing listens on `closed`: the sink fails
    body = {
        "source": {
            "connector": "webhook",
            "config": {
                "listen": f"127.0.0.1:{hook}",
                "path": "/in",
                "bearer_tokens": [LITERALS["webhook"]],
            },
        },
        "sinks": [
            {
                "connector": "http",
                "config": {
                    "url": f"http://ops:{LITERALS['url_password']}@127.0.0.1:{closed}/x"
                    f"?api_key={LITERALS['api_key']}&tenant=7",
                    "headers": {
                        "X-Authorization-Token": f"Bearer {LITERALS['header']}",
                        "X-Api-Key": LITERALS["api_header"],
                        "X-Tenant": "seven",
                    },
                    "timeout": 2,
                },
                "errors": {"retry": {"max_attempts": 1}},
            }
        ],
    }
    with AdminWorker(tmp_path, ()) as w:
        bodies: list[str] = []
        created = w.call("PUT", "/connectors/leaky", body)
        assert created.status == 201, created.text
        bodies.append(created.text)
        config = created.json["config"]["sinks"][0]["config"]
        assert config["headers"]["X-Tenant"] == "seven"  # what is no secret stays readable
        assert "tenant=7" in config["url"] and "ops:" in config["url"]
        request = urllib.request.Request(
            f"http://127.0.0.1:{hook}/in",
            data=b'{"n": 1}',
            method="POST",
            headers={
                "Authorization": f"Bearer {LITERALS['webhook']}",
                "Content-Type": "application/json",
            },
        )

        def send() -> bool:  # once the webhook listens (it starts after the answer)
            with urllib.request.urlopen(request, timeout=30) as reply:
                return reply.status == 202

        w.wait_for(send, "the webhook to take the event")
        w.wait_for(lambda: w.status("leaky")["error"] is not None, "the sink to fail")
        for path in (
            "/connectors/leaky",
            "/connectors/leaky/config",
            "/connectors/leaky/status",
            "/connectors/leaky/offsets",
            "/connectors?expand=status&expand=info",
            "/topics",
            "/metrics",
        ):
            reply = w.call("GET", path)
            assert reply.status == 200, (path, reply.text)
            bodies.append(reply.text)
        # A body that does not validate: its problems may quote the values.
        bad = json.loads(json.dumps(body))
        bad["sinks"][0]["config"]["url"] = f"ftp://ops:{LITERALS['url_password']}@x/{{nope"
        reply = w.call("PUT", "/connectors/leaky2", bad)
        assert reply.status == 400
        bodies.append(reply.text)
        reply = w.call("PUT", "/connector-plugins/http/config/validate", bad["sinks"][0]["config"])
        bodies.append(reply.text)
        assert w.stop() == 0
    for text in bodies:
        assert _leaks(text) == [], text
    assert _leaks(w.logs()) == []


def test_lag_counts_what_a_sink_that_never_committed_has_to_read(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"qty": "x"}) + "\n" for _ in range(3)))
    pipeline = flowing("stuck", "./in.jsonl", "./out.jsonl")
    # The first record already fails the sink: its group never commits.
    pipeline["sinks"][0]["transforms"] = [{"type": "cast", "fields": {"data.qty": "int"}}]
    with AdminWorker(tmp_path, [write_pipeline(tmp_path / "p.yaml", [pipeline])]) as w:
        w.wait_for(lambda: w.status("stuck")["error"] is not None, "the sink to fail")
        w.wait_for(lambda: w.status("stuck")["records_in"] == 3, "3 records stored")
        assert w.status("stuck")["lag"] == 3
        (topic,) = [t for t in w.ok("GET", "/topics") if t["topic"] == "stuck"]
        assert topic["lag"] == {"stuck/file": 3}
        assert 'meshconnect_consumer_lag_records{group="stuck/file",topic="stuck"} 3.0' in (
            w.call("GET", "/metrics").text
        )
        assert jsonl(tmp_path / "out.jsonl") == []
        assert w.stop() == 0


def _append(path: Path, ids: range) -> None:
    with path.open("a", encoding="utf-8") as f:
        for i in ids:
            f.write(json.dumps({"id": i}) + "\n")


def test_offsets_past_the_end_are_refused(tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _append(source, range(4))
    files = [write_pipeline(tmp_path / "p.yaml", [flowing("orders", "./in.jsonl", "./out.jsonl")])]
    with AdminWorker(tmp_path, files) as w:
        w.wait_for(lambda: w.status("orders")["lag"] == 0 and len(jsonl(out)) == 4, "4 out")
        for dry_run in ("?dry_run=true", ""):
            reply = w.call("PATCH", f"/connectors/orders/offsets{dry_run}", {"sinks": {"file": 9}})
            assert reply.status == 400, reply.text
            detail = reply.json["detail"]
            assert "past the end of orders (4)" in detail and "--to" not in detail, detail
        # Up to the end is fine, and nothing stored later is skipped.
        w.ok("PATCH", "/connectors/orders/offsets", {"sinks": {"file": 4}})
        _append(source, range(4, 9))
        w.wait_for(lambda: len(jsonl(out)) == 9, "5 more records out")
        assert [r["id"] for r in jsonl(out)] == list(range(9))
        assert w.stop() == 0


def test_problems_name_the_field_of_the_body_not_a_line_of_a_temporary_file(
    tmp_path: Path,
) -> None:
    with AdminWorker(tmp_path, ()) as w:
        body: dict[str, Any] = flowing("x", "./in.jsonl", "./out.jsonl")
        del body["name"]
        body["sinks"][0]["config"]["formatt"] = "json"
        reply = w.call("PUT", "/connectors/orders/config", body)
        assert reply.status == 400
        (problem,) = reply.json["problems"]
        assert problem["location"] == "connectors/orders/config"
        assert problem["message"].startswith("sinks[0].config.formatt:"), problem
        reply = w.call("PUT", "/connectors/a%20b/config", body)
        assert {p["location"] for p in reply.json["problems"]} == {"connectors/a b/config"}
        assert all(p["message"].startswith(("name:", "sinks[0]")) for p in reply.json["problems"])
        checked = w.ok("PUT", "/connector-plugins/file/config/validate?kind=sink", {"formatt": 1})
        messages = {p["message"].split(":")[0] for p in checked["problems"]}
        assert "formatt" in messages and "path" in messages, checked
        assert {p["location"] for p in checked["problems"]} == {"connector-plugins/file/config"}
        assert w.stop() == 0


def test_a_deleted_connector_leaves_metrics(tmp_path: Path) -> None:
    _append(tmp_path / "in.jsonl", range(3))
    body = flowing("gone", "./in.jsonl", "./out.jsonl")
    files = [write_pipeline(tmp_path / "p.yaml", [flowing("kept", "./in.jsonl", "./k.jsonl")])]
    with AdminWorker(tmp_path, files) as w:
        assert w.call("PUT", "/connectors/gone", body).status == 201
        w.wait_for(lambda: len(jsonl(tmp_path / "out.jsonl")) == 3, "3 records out")
        w.wait_for(lambda: w.status("kept")["records_out"] == 3, "3 records out of kept")
        text = w.call("GET", "/metrics").text
        assert 'pipeline="gone"' in text and 'group="gone/file"' in text
        assert w.call("DELETE", "/connectors/gone").status == 204
        text = w.call("GET", "/metrics").text
        assert 'pipeline="gone"' not in text and 'group="gone/file"' not in text, text
        assert (
            'meshconnect_records_out_total{connector="file",kind="sink",pipeline="kept"} 3.0'
            in (text)
        )
        assert w.stop() == 0


def test_deep_and_huge_bodies_are_refused_not_a_server_error(tmp_path: Path) -> None:
    _append(tmp_path / "in.jsonl", range(1))
    files = [write_pipeline(tmp_path / "p.yaml", [flowing("orders", "./in.jsonl", "./o.jsonl")])]
    deep_array = b"[" * 100_000 + b"]" * 100_000  # beyond the JSON parser's recursion
    deep_object = b'{"source": ' + b'{"a": ' * 500 + b"1" + b"}" * 501  # parsed, too deep
    calls = [
        ("PUT", "/connectors/deep"),
        ("PATCH", "/connectors/orders/offsets?dry_run=true"),
        ("PUT", "/connector-plugins/file/config/validate"),
    ]
    with AdminWorker(tmp_path, files) as w:
        for method, path in calls:
            for raw in (deep_array, deep_object):
                reply = w.call(method, path, raw=raw)
                assert reply.status == 400, (method, path, reply.status, reply.text)
                assert "nested more than 64 levels" in reply.json["detail"]
            huge = w.call(method, path, raw=b'{"a": "' + b"x" * (1 << 20) + b'"}')
            assert huge.status == 413, (method, path, huge.status)
        assert w.call("GET", "/health").status == 200
        assert w.stop() == 0


def test_a_source_position_the_source_never_writes_is_refused(tmp_path: Path) -> None:
    """PATCH .../offsets {"source": {...}} stored any object for a source other than ``file``:
    a webhook ``{"stored": "x"}`` then failed every restart of the source with
    ``ValueError: invalid literal for int()``."""
    webhook = {
        "name": "hooks",
        "source": {"connector": "webhook", "config": {"listen": f"127.0.0.1:{free_port()}"}},
        "sinks": [{"connector": "file", "config": {"path": "./out.jsonl", "format": "json"}}],
    }
    files = [write_pipeline(tmp_path / "p.yaml", [webhook])]
    with AdminWorker(tmp_path, files) as w:
        for dry_run in ("?dry_run=true", ""):
            body = {"source": {"webhook": {"stored": "x"}}}
            reply = w.call("PATCH", f"/connectors/hooks/offsets{dry_run}", body)
            assert reply.status == 400, reply.text
            detail = reply.json["detail"]
            assert 'webhook: stored must be a whole number of at least 0, not "x"' in detail
            assert "--to" not in detail, detail
        assert w.ok("GET", "/connectors/hooks/offsets")["sources"][0]["positions"] == {}
        w.ok("PATCH", "/connectors/hooks/offsets", {"source": {"webhook": {"stored": 7}}})
        positions = w.ok("GET", "/connectors/hooks/offsets")["sources"][0]["positions"]
        assert positions == {"webhook": {"stored": 7}}
        assert w.stop() == 0
