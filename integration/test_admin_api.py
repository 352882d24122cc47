"""The admin API against a real worker subprocess (``meshconnect run --admin``): every
endpoint, auth, pause/resume while records flow, offsets reset while running, FAILED status
with the failing record, auto-restart with its backoff, pipelines kept across a restart."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from admin_support import TOKEN, AdminWorker, flowing, jsonl, write_pipeline

from conftest import meshconnect, run_cli

SECRET = "s3cr3t-value-that-must-not-leak"


def _append(path: Path, ids: range, pause: float = 0.0) -> None:
    with path.open("a", encoding="utf-8") as f:
        for i in ids:
            f.write(json.dumps({"id": i}) + "\n")
            f.flush()
            if pause:
                time.sleep(pause)


@pytest.fixture
def worker(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "in.jsonl").write_text("")
    files = [
        write_pipeline(
            tmp_path / "p.yaml",
            [
                flowing("orders", "./in.jsonl", "./out.jsonl"),
                # The secret reaches a config value through interpolation: it must be masked.
                flowing("secretive", "./in.jsonl", "./out-${env:ADMIN_TEST_SECRET}.jsonl"),
            ],
        )
    ]
    w = AdminWorker(tmp_path, files, env={"ADMIN_TEST_SECRET": SECRET})
    with w:
        yield w


def test_every_read_endpoint_and_no_secret_anywhere(worker: AdminWorker, tmp_path: Path) -> None:
    _append(tmp_path / "in.jsonl", range(5))
    worker.wait_for(lambda: len(jsonl(tmp_path / "out.jsonl")) == 5, "5 records out")
    bodies: list[str] = []

    def get(path: str, expect: int = 200) -> Any:
        reply = worker.call("GET", path)
        assert reply.status == expect, (path, reply.text)
        bodies.append(reply.text)
        return reply.json if path != "/metrics" else reply.text

    assert get("/connectors") == ["orders", "secretive"]
    expanded = get("/connectors?expand=status&expand=info")
    assert set(expanded["orders"]) == {"status", "info"}
    assert expanded["orders"]["status"]["state"] == "RUNNING"
    assert set(get("/connectors?expand=status")["secretive"]) == {"status"}
    info = get("/connectors/orders")
    assert info["origin"].startswith("file ")
    assert [t["kind"] for t in info["tasks"]] == ["source", "sink"]
    config = get("/connectors/secretive/config")
    assert config["sinks"][0]["config"]["path"] == "**********"  # interpolated: masked
    status = get("/connectors/orders/status")
    assert (status["records_in"], status["records_out"], status["lag"]) == (5, 5, 0)
    offsets = get("/connectors/orders/offsets")
    assert offsets["sinks"][0]["topics"] == [{"topic": "orders", "offset": 5, "end": 5, "lag": 0}]
    topics = {t["topic"]: t for t in get("/topics")}
    assert topics["orders"]["records"] == 5 and topics["orders"]["lag"] == {"orders/file": 0}
    plugins = {(p["name"], p["kind"]) for p in get("/connector-plugins")}
    assert {("file", "source"), ("file", "sink")} <= plugins
    assert get("/health") == {"status": "UP"}
    assert get("/ready")["status"] == "READY"
    metrics = worker.call("GET", "/metrics")
    # the exposition format's own media type, as `run --metrics` serves it (a scraper that
    # negotiates by it, Prometheus 3 among them, is told which text format this is)
    assert metrics.status == 200
    assert metrics.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    bodies.append(metrics.text)
    spec = get("/openapi.json")
    assert spec["openapi"] == "3.1.0" and "/connectors/{name}/offsets" in spec["paths"]
    get("/connectors/nope", 404)
    get("/connectors/nope/status", 404)
    get("/connectors?expand=bogus", 400)
    page = worker.call("GET", "/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b'<table id="connectors">' in page.body
    assert b"<script src" not in page.body and b"<link" not in page.body  # self-contained
    for body in bodies:
        assert SECRET not in body


def test_auth(worker: AdminWorker) -> None:
    for method, path in [
        ("PUT", "/connectors/orders/pause"),
        ("PUT", "/connectors/orders/resume"),
        ("PUT", "/connectors/orders/stop"),
        ("POST", "/connectors/orders/restart"),
        ("DELETE", "/connectors/orders"),
        ("PUT", "/connectors/x/config"),
        ("PATCH", "/connectors/orders/offsets"),
        ("DELETE", "/connectors/orders/offsets"),
        ("PUT", "/connector-plugins/file/config/validate"),
    ]:
        for token in (None, "wrong-token"):
            reply = worker.call(method, path, {}, token=token)
            assert reply.status == 401, (method, path, token, reply.text)
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
            # a wrong token is told apart from none (the CLI's --token or env var was wrong)
            assert reply.json["detail"] == (
                "this call needs Authorization: Bearer <token>"
                if token is None
                else "the bearer token given is not this worker's"
            )
    # A token was given: reads need it too (the dashboard page itself holds no data).
    assert worker.call("GET", "/connectors", token=None).status == 401
    assert worker.call("GET", "/metrics", token=None).status == 401
    assert worker.call("GET", "/", token=None).status == 200
    assert worker.call("GET", "/connectors/orders/status").json["state"] == "RUNNING"


def test_without_a_token_reads_are_open_changes_need_the_token_file(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("")
    files = [write_pipeline(tmp_path / "p.yaml", [flowing("orders", "./in.jsonl", "./o.jsonl")])]
    with AdminWorker(tmp_path, files, token=None) as w:
        assert w.call("GET", "/connectors", token=None).json == ["orders"]
        # A page that points a name of its own at 127.0.0.1 (DNS rebinding) reads nothing.
        rebound = w.call("GET", "/connectors", token=None, headers={"Host": "evil.example"})
        assert rebound.status == 403 and "loopback" in rebound.json["detail"]
        assert w.call("GET", "/health", headers={"Host": f"localhost:{w.port}"}).status == 200
        refused = w.call("PUT", "/connectors/orders/pause", token=None)
        token_file = tmp_path / "state" / "admin.token"
        # the whole path: a client in another directory finds it
        assert refused.status == 401 and refused.json["detail"].endswith(f"in {token_file})")
        assert token_file.stat().st_mode & 0o077 == 0  # only the owner reads it
        assert w.call("PUT", "/connectors/orders/pause", token=True).status == 202
        # The CLI finds the token in the state directory by itself.
        out = run_cli(tmp_path / "state", "connectors", "resume", "orders", "--admin", w.url)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "orders: RUNNING"
        assert w.stop() == 0
    assert not token_file.exists()


def test_refuses_to_bind_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    result = subprocess.run(
        meshconnect(tmp_path / "state", "run", "--admin", "0.0.0.0:0"),
        capture_output=True,
        text=True,
        timeout=60,
        env={**_env_without_token()},
        check=False,
    )
    assert result.returncode == 1
    assert "without a token the admin API binds only loopback" in result.stderr
    # With a token it binds every address.
    with AdminWorker(tmp_path, (), token=TOKEN, listen="0.0.0.0:0") as w:
        assert w.call("GET", "/health").json == {"status": "UP"}
        assert w.stop() == 0


def _env_without_token() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "MESHCONNECT_ADMIN_TOKEN"}


def test_pause_and_resume_while_records_flow(worker: AdminWorker, tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    total = 3000
    writer = threading.Thread(target=_append, args=(source, range(total), 0.001))
    writer.start()
    try:
        worker.wait_for(lambda: len(jsonl(out)) >= 100, "100 records out")
        assert worker.ok("PUT", "/connectors/orders/pause", expect=202)["state"] == "PAUSED"

        # Paused: the sink commits what it wrote (what is stored beyond waits) and everything
        # stays put.
        def committed() -> bool:
            (sink,) = worker.ok("GET", "/connectors/orders/offsets")["sinks"]
            written = [t for t in worker.status("orders")["tasks"] if t["kind"] == "sink"]
            return bool(sink["topics"]) and sink["topics"][0]["offset"] == written[0]["records_out"]

        worker.wait_for(committed, "the paused sink to commit what it wrote")
        held = worker.status("orders")
        assert held["state"] == "PAUSED"
        writer.join()
        time.sleep(1.5)  # room for a pause that does not hold to show itself
        after = worker.status("orders")
        assert after["state"] == "PAUSED"
        assert (after["records_in"], after["records_out"]) == (
            held["records_in"],
            held["records_out"],
        )
        assert after["records_in"] < total
        assert len(jsonl(out)) == held["records_out"]
    finally:
        writer.join()
    assert worker.ok("PUT", "/connectors/orders/resume", expect=202)["state"] == "RUNNING"
    worker.wait_for(lambda: len(jsonl(out)) >= total, f"{total} records out")
    worker.wait_for(lambda: worker.status("orders")["lag"] == 0, "the sink to commit")
    ids = [r["id"] for r in jsonl(out)]
    assert ids == list(range(total))  # no loss, no duplicate, in order
    assert worker.stop() == 0


def test_stop_resume_restart(worker: AdminWorker, tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _append(source, range(10))
    worker.wait_for(lambda: len(jsonl(out)) == 10, "10 records out")
    assert worker.ok("PUT", "/connectors/orders/stop", expect=202)["state"] == "STOPPED"
    assert {t["state"] for t in worker.status("orders")["tasks"]} == {"STOPPED"}
    # Stopped: a pause is refused; resume starts it again from its committed offsets.
    assert worker.call("PUT", "/connectors/orders/pause").status == 409
    _append(source, range(10, 20))
    assert worker.ok("PUT", "/connectors/orders/resume", expect=202)["state"] == "RUNNING"
    worker.wait_for(lambda: len(jsonl(out)) == 20, "20 records out")
    assert worker.ok("POST", "/connectors/orders/restart", expect=202)["state"] == "RUNNING"
    _append(source, range(20, 30))
    worker.wait_for(lambda: len(jsonl(out)) == 30, "30 records out")
    assert [r["id"] for r in jsonl(out)] == list(range(30))
    assert worker.call("POST", "/connectors/nope/restart").status == 404


def test_offsets_reset_while_running_with_a_dry_run(worker: AdminWorker, tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _append(source, range(8))
    worker.wait_for(lambda: worker.status("orders")["records_out"] == 8, "8 records out")
    worker.wait_for(
        lambda: (
            worker.ok("GET", "/connectors/orders/offsets")["sinks"][0]["topics"][0]["offset"] == 8
        ),
        "offset 8 committed",
    )
    change = {"sinks": {"file": 3}}
    preview = worker.ok("PATCH", "/connectors/orders/offsets?dry_run=true", change)
    assert preview["dry_run"] is True
    (plan,) = preview["plans"]
    assert plan["kind"] == "sink" and plan["new"] == {"orders": 3}
    assert "5 record(s) at offsets 3..7 are delivered again" in plan["describe"]
    # A misspelt dry run is refused, not taken for a real change (it moved the offsets).
    for query in ("dry-run=true", "dryrun=true", "dry_run=true&force=1"):
        for method, body in (("PATCH", change), ("DELETE", None)):
            typo = worker.call(method, f"/connectors/orders/offsets?{query}", body)
            assert typo.status == 400, (method, query, typo.text)
            assert "unknown query parameter" in typo.json["detail"]
    # A dry run changes nothing.
    sinks = worker.ok("GET", "/connectors/orders/offsets")["sinks"]
    assert sinks[0]["topics"][0]["offset"] == 8
    assert worker.status("orders")["state"] == "RUNNING"
    done = worker.ok("PATCH", "/connectors/orders/offsets", change)
    assert done["dry_run"] is False
    worker.wait_for(lambda: len(jsonl(out)) == 13, "the 5 records again")
    assert [r["id"] for r in jsonl(out)] == [*range(8), *range(3, 8)]
    assert worker.status("orders")["state"] == "RUNNING"
    # And it keeps running: new records flow after the reset.
    _append(source, range(8, 10))
    worker.wait_for(lambda: len(jsonl(out)) == 15, "2 new records")
    # DELETE resets the source and every sink to the beginning (here: dry run only).
    preview = worker.ok("DELETE", "/connectors/orders/offsets?dry_run=true")
    assert [p["kind"] for p in preview["plans"]] == ["source", "sink"]
    bad = worker.call("PATCH", "/connectors/orders/offsets", {"sinks": {"nope": 0}})
    assert bad.status == 400 and "no sink 'nope'" in bad.json["detail"]
    assert worker.call("PATCH", "/connectors/orders/offsets", {"x": 1}).status == 400


def test_put_validate_delete_and_kept_across_a_restart(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("")
    _append(tmp_path / "api-in.jsonl", range(4))
    with AdminWorker(tmp_path, ()) as w:
        assert w.call("GET", "/connectors").json == []
        body = flowing("api", "./api-in.jsonl", "./api-out.jsonl")
        del body["name"]
        # Invalid: the problems `meshconnect validate` prints.
        bad = json.loads(json.dumps(body))
        bad["sinks"][0]["config"]["formatt"] = "json"
        reply = w.call("PUT", "/connectors/api/config", bad)
        assert reply.status == 400
        messages = [p["message"] for p in reply.json["problems"]]
        assert any("formatt" in m and "did you mean" in m for m in messages), messages
        created = w.call("PUT", "/connectors/api/config", body)
        assert created.status == 201 and created.json["origin"] == "api"
        w.wait_for(lambda: len(jsonl(tmp_path / "api-out.jsonl")) == 4, "4 records out")
        assert w.ok("PUT", "/connectors/api", body)["name"] == "api"  # replaced: 200
        assert w.stop() == 0
    with AdminWorker(tmp_path, ()) as w:
        assert w.call("GET", "/connectors").json == ["api"]
        w.wait_for(lambda: w.status("api")["state"] == "RUNNING", "the kept pipeline to run")
        _append(tmp_path / "api-in.jsonl", range(4, 6))
        w.wait_for(lambda: len(jsonl(tmp_path / "api-out.jsonl")) == 6, "6 records out")
        assert [r["id"] for r in jsonl(tmp_path / "api-out.jsonl")] == list(range(6))
        assert w.call("DELETE", "/connectors/api").status == 204
        assert w.call("GET", "/connectors/api").status == 404
        assert w.stop() == 0
    with AdminWorker(tmp_path, ()) as w:
        assert w.call("GET", "/connectors").json == []  # deleted for good


def test_a_replaced_pipeline_leaves_no_trace_of_a_sink_it_no_longer_has(tmp_path: Path) -> None:
    """PUT again with the sink renamed: the old sink's status and its /metrics series go (they
    stayed until the worker stopped), the source's and the new sink's are there."""
    (tmp_path / "in.jsonl").write_text("")
    _append(tmp_path / "api-in.jsonl", range(3))
    with AdminWorker(tmp_path, ()) as w:
        body = flowing("api", "./api-in.jsonl", "./first.jsonl")
        body["sinks"][0]["name"] = "first"
        assert w.call("PUT", "/connectors/api/config", body).status == 201
        w.wait_for(lambda: len(jsonl(tmp_path / "first.jsonl")) == 3, "3 records out")
        assert 'connector="first"' in w.call("GET", "/metrics").text
        body = flowing("api", "./api-in.jsonl", "./second.jsonl")
        body["sinks"][0]["name"] = "second"
        assert w.call("PUT", "/connectors/api/config", body).status == 200
        w.wait_for(lambda: len(jsonl(tmp_path / "second.jsonl")) == 3, "3 records out")
        scrape = w.call("GET", "/metrics").text
        assert 'connector="second"' in scrape and 'connector="file"' in scrape, scrape
        assert 'connector="first"' not in scrape, scrape
        tasks = w.status("api")["tasks"]
        assert [t["id"] for t in tasks if t["kind"] == "sink"] == ["api/second"], tasks
        assert w.stop() == 0


def test_a_files_pipeline_is_not_replaced_over_the_api(worker: AdminWorker) -> None:
    body = flowing("orders", "./in.jsonl", "./x.jsonl")
    reply = worker.call("PUT", "/connectors/orders/config", body)
    assert reply.status == 409 and "p.yaml" in reply.json["detail"]
    assert worker.call("DELETE", "/connectors/orders").status == 409


def test_validate_prints_what_meshconnect_validate_prints(worker: AdminWorker, tmp_path: Path):
    good = worker.ok(
        "PUT",
        "/connector-plugins/file/config/validate?kind=sink",
        {"path": "./v.jsonl", "format": "json"},
    )
    assert good == {"name": "file", "kind": "sink", "error_count": 0, "problems": []}
    bad = worker.ok(
        "PUT", "/connector-plugins/file/config/validate", {"path": "./v.jsonl", "formatt": "x"}
    )
    assert bad["kind"] == "source" and bad["error_count"] >= 1
    # The same messages as the command line's for the same config in a file.
    file = write_pipeline(
        tmp_path / "v.yaml",
        [{"name": "validate", "source": {"connector": "file",
                                         "config": {"path": "./v.jsonl", "formatt": "x"}}}],
    )  # fmt: skip
    cli = run_cli(tmp_path / "state2", "validate", file)
    assert cli.returncode == 1
    for problem in bad["problems"]:
        assert problem["message"] in cli.stderr


def test_failed_status_names_the_record_and_restarts_with_backoff(tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("")
    pipeline = flowing("orders", "./in.jsonl", "./out.jsonl")
    # A sink-side cast that fails on the record whose qty is not a number (tolerance none).
    pipeline["sinks"][0]["transforms"] = [{"type": "cast", "fields": {"data.qty": "int"}}]
    files = [write_pipeline(tmp_path / "p.yaml", [pipeline])]
    with AdminWorker(tmp_path, files) as w:
        with source.open("a") as f:
            for i in range(3):
                f.write(json.dumps({"id": i, "qty": str(i)}) + "\n")
        w.wait_for(lambda: len(jsonl(out)) == 3, "3 good records out")
        w.wait_for(lambda: w.status("orders")["lag"] == 0, "the sink to commit")
        with source.open("a") as f:
            f.write(json.dumps({"id": 3, "qty": "three"}) + "\n")
        seen: dict[int, dict[str, Any]] = {}

        def failing() -> bool:
            status = w.status("orders")
            (sink,) = [t for t in status["tasks"] if t["kind"] == "sink"]
            if status["state"] == "DEGRADED" and sink["state"] == "FAILED":
                seen.setdefault(sink["restarts"], {**sink, "pipeline": status})
            return len(seen) >= 2 and max(seen) >= 3

        w.wait_for(failing, "the sink to fail and restart 3 times", timeout=120)
        first = seen[min(seen)]
        error = first["error"]
        assert "qty" in error["message"] and "three" in error["message"]
        assert (error["topic"], error["offset"]) == ("orders", 3)
        assert error["at"] is not None
        assert first["pipeline"]["error"]["offset"] == 3
        # The source goes on, the sink fails: DEGRADED; the backoff grows and is shown.
        assert first["next_restart_at"] is not None and first["backoff_seconds"] > 0
        backoffs = [seen[n]["backoff_seconds"] for n in sorted(seen)]
        assert backoffs == sorted(backoffs) and backoffs[-1] > backoffs[0], seen
        assert len(jsonl(out)) == 3
        assert w.stop() == 0


def test_cli_status_and_connectors(worker: AdminWorker, tmp_path: Path) -> None:
    state = tmp_path / "cli-state"
    env_args = ("--admin", worker.url, "--token", TOKEN)
    out = run_cli(state, "connectors", "pause", "orders", *env_args)
    assert (out.returncode, out.stdout.strip()) == (0, "orders: PAUSED"), out.stderr
    out = run_cli(state, "status", *env_args)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:]}
    assert rows["orders"][1] == "PAUSED" and rows["secretive"][1] == "RUNNING"
    assert out.stdout.split()[:3] == ["CONNECTOR", "STATE", "IN"]
    out = run_cli(state, "connectors", "restart", "orders", *env_args)
    assert (out.returncode, out.stdout.strip()) == (0, "orders: RUNNING"), out.stderr
    out = run_cli(state, "connectors", "resume", "nope", *env_args)
    assert out.returncode == 1 and "404 no connector 'nope'" in out.stderr
    out = run_cli(state, "connectors", "pause", "orders", "--admin", worker.url)
    assert out.returncode == 1 and "401" in out.stderr
    # --watch: a live table until Ctrl-C.
    watch = subprocess.Popen(
        meshconnect(state, "status", "--watch", "--interval", "0.2", *env_args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    watch.send_signal(signal.SIGINT)
    stdout, stderr = watch.communicate(timeout=60)
    assert watch.returncode == 0, stderr
    assert "CONNECTOR" in stdout and "orders" in stdout and "RUNNING" in stdout


def test_status_watch_outlives_a_worker_restart(tmp_path: Path) -> None:
    # `status --watch` keeps the table up to date until Ctrl-C: a worker restarted under it
    # (a deploy, a config change) showed why it was unreachable and ended the watch, exit 1.
    (tmp_path / "in.jsonl").write_text("")
    files = [write_pipeline(tmp_path / "p.yaml", [flowing("orders", "./in.jsonl", "./o.jsonl")])]
    first = AdminWorker(tmp_path, files).start()
    watch = subprocess.Popen(
        meshconnect(tmp_path / "cli", "status", "--watch", "--interval", "0.2",
                    "--admin", first.url, "--token", TOKEN),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        time.sleep(1)
        assert first.stop() == 0
        time.sleep(1)  # the watch finds no worker for a few rounds
        assert watch.poll() is None, watch.communicate()
        files = [write_pipeline(tmp_path / "q.yaml", [flowing("audit", "./in.jsonl", "./a.jsonl")])]
        second = AdminWorker(tmp_path, files, listen=f"127.0.0.1:{first.port}").start()
        time.sleep(2)  # and then the new one
        watch.send_signal(signal.SIGINT)
        stdout, stderr = watch.communicate(timeout=60)
        assert second.stop() == 0
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, stderr
    # the last table drawn is the new worker's
    assert "audit" in stdout and "RUNNING" in stdout, stdout
