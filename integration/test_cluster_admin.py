"""Two ``meshconnect run --cluster --admin`` worker processes on a private Redis: each one's
admin API shows the whole cluster (the members, who owns each unit with its epoch, as
``status --cluster --json`` does) and the tasks of the units it runs; a restart restarts the
units of the worker asked and leaves the other's alone (pause, resume and stop:
test_cluster_targets.py)."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cluster_support import Members

from conftest import run_cli

TOKEN = "cluster-admin-integration-token"
SINKS = ("out1", "out2", "out3")
UNITS = {"source p/file", *(f"group p/{s}" for s in SINKS)}


def call(url: str, method: str, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(url + path, method=method)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def admin_url(log: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"admin API on (http://[^ ]*:\d+)/", log.read_text(errors="replace"))
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no admin API in {log}:\n{log.read_text()[-3000:]}")


def until(check: Any, what: str, members: Members, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{members.tails()}"
        time.sleep(0.1)


def owners(view: dict[str, Any]) -> dict[str, str | None]:
    return {u["unit"]: u["owner"] for p in view["pipelines"] for u in p["units"]}


def lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_each_members_admin_api_shows_the_whole_cluster(
    tmp_path: Path, redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{redis_server.url}?prefix=cladmin{time.monotonic_ns()}"
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(40)))
    pipeline = {
        "name": "p",
        "source": {"connector": "file", "config": {"path": str(source), "follow": True}},
        "topic": "t",
        "sinks": [
            {"name": s, "connector": "file", "config": {"path": str(tmp_path / f"{s}.jsonl")}}
            for s in SINKS
        ],
    }
    config = tmp_path / "p.yaml"
    config.write_text(json.dumps({"store": url, "cluster": "adm", "pipelines": [pipeline]}))
    monkeypatch.setenv("MESHCONNECT_ADMIN_TOKEN", TOKEN)
    members = Members(tmp_path, ["run", str(config), "--admin", "127.0.0.1:0"])
    try:
        members.start("w1")
        members.start("w2", ["--store", url, "run", "--cluster", "adm", "--admin", "127.0.0.1:0"])
        urls = {name: admin_url(members.log(name)) for name in ("w1", "w2")}

        def split() -> bool:
            status, view = call(urls["w1"], "GET", "/cluster")
            held = [o for o in owners(view).values() if o] if status == 200 else []
            return len(held) == 4 and len(set(held)) == 2 and held.count(held[0]) == 2

        until(split, "the two members to split the four units", members)
        until(
            lambda: all(len(lines(tmp_path / f"{s}.jsonl")) == 40 for s in SINKS),
            "every sink to write the 40 records",
            members,
        )
        # A unit that changed hands after its sink wrote the 40 records is still opening on
        # its new owner (STARTING) for a moment: the views are taken once both are ready.
        until(
            lambda: all(call(u, "GET", "/ready")[0] == 200 for u in urls.values()),
            "both members ready (their units out of STARTING)",
            members,
        )
        views = {name: call(u, "GET", "/cluster")[1] for name, u in urls.items()}
        cli = run_cli(tmp_path, "--store", url, "status", "--cluster", "adm", "--json")
        assert cli.returncode == 0, cli.stderr
        from_cli = json.loads(cli.stdout)
        ids = {name: views[name]["member"]["id"] for name in urls}
        assert ids["w1"] != ids["w2"] and ids["w1"].startswith("w1:")
        for name, view in views.items():
            assert view["cluster"] == "adm" and view["member"]["joined"] is True
            assert {m["id"] for m in view["members"] if m["alive"]} == set(ids.values())
            # The same owners as every other view of the cluster.
            assert owners(view) == owners(views["w1"]) == owners(from_cli)
            assert set(owners(view)) == UNITS
            (p,) = view["pipelines"]
            assert p["version"] == from_cli["pipelines"][0]["version"] == 1
            for unit in p["units"]:
                assert unit["epoch"] == next(
                    u["epoch"]
                    for u in from_cli["pipelines"][0]["units"]
                    if u["unit"] == unit["unit"]
                )
                assert unit["local"] is (unit["owner"] == ids[name])
                assert (unit["task"] is not None) is unit["local"]
                if unit["local"]:
                    assert unit["task"]["state"] == "RUNNING"
            # The connector's status: this worker's tasks, and the owner of every unit.
            status, body = call(urls[name], "GET", "/connectors/p/status")
            assert status == 200 and body["state"] == "RUNNING"
            local = {u["unit"] for u in p["units"] if u["local"]}
            assert len(local) == 2
            assert {("source " if t["kind"] == "source" else "group ") + t["id"]
                    for t in body["tasks"]} == local  # fmt: skip
            assert {u["unit"]: u["owner"] for u in body["cluster"]["units"]} == owners(view)
            assert call(urls[name], "GET", "/ready") == (200, {"status": "READY"})
        # w1 restarts its own units; w2's keep running.
        before = {u["unit"]: u["epoch"] for u in views["w1"]["pipelines"][0]["units"]}
        status, body = call(urls["w1"], "POST", "/connectors/p/restart")
        assert status == 202, body
        assert "w1 restarting" not in members.log("w2").read_text()
        log = members.log("w1").read_text()
        w1_units = {u for u, o in owners(views["w1"]).items() if o == ids["w1"]}
        for unit in w1_units:
            assert f"cluster adm: restarting {unit}" in log
        status, after = call(urls["w2"], "GET", "/cluster")
        assert owners(after) == owners(views["w1"])  # the same owners, the same epochs
        assert {u["unit"]: u["epoch"] for u in after["pipelines"][0]["units"]} == before
        with source.open("a") as f:  # the restarted units go on from their commits
            f.write("".join(json.dumps({"id": i}) + "\n" for i in range(40, 50)))
        until(
            lambda: all(len(lines(tmp_path / f"{s}.jsonl")) == 50 for s in SINKS),
            "every sink to write the 10 records appended",
            members,
        )
    finally:
        codes = members.stop_all()
    assert codes == {"w1": 0, "w2": 0}, members.tails()
    for s in SINKS:
        assert [r["id"] for r in lines(tmp_path / f"{s}.jsonl")] == list(range(50))
