"""Pause, resume and stop of a cluster's pipeline over any member's admin API
(docs/scaleout.md#pause-resume-and-stop): two ``meshconnect run --cluster --admin`` worker
processes on a private Redis and on a private NATS, one running the pipeline's file source,
the other its file sink. A pause asked of the sink's member stops the other member's source
while records keep arriving in its file; the source's owner is SIGKILLed while paused and the
survivor takes the source over paused; the killed member, started again, honours the pause
too; a resume on it delivers everything exactly once; a stop ends both units on both members
and no member takes them until the resume."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cluster_support import Members, StoreProbe

from conftest import run_cli

TOKEN = "cluster-targets-integration-token"
CLUSTER = "tgt"
SOURCE = "source p/file"
SINK = "group p/out"
#: failover_timeout 4s: leases of 2 s renewed every 0.4 s.
FAILOVER = 4.0


def call(url: str, method: str, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(url + path, method=method)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def until(check: Any, what: str, members: Members, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{members.tails()}"
        time.sleep(0.05)


def admin_url(members: Members, name: str, offset: int = 0) -> str:
    """The admin API member ``name`` logged after ``offset`` bytes of its log."""
    found: list[str] = []

    def logged() -> bool:
        text = members.log(name).read_bytes()[offset:].decode(errors="replace")
        found[:] = re.findall(r"admin API on (http://[^ ]*:\d+)/", text)
        return bool(found)

    until(logged, f"{name}'s admin API", members, timeout=60)
    return found[-1]


def logged(members: Members, name: str, text: str, offset: int = 0) -> bool:
    return text in members.log(name).read_bytes()[offset:].decode(errors="replace")


def ids(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.endswith("}")]


def append(path: Path, start: int, end: int) -> None:
    with path.open("a") as f:
        f.write("".join(json.dumps({"id": i}) + "\n" for i in range(start, end)))


@pytest.mark.parametrize("engine", ["redis", "nats"])
def test_pause_resume_and_stop_act_on_every_member_and_survive_failover_and_restart(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = request.getfixturevalue(f"{engine}_server")
    url = f"{server.url}?prefix=targets{time.monotonic_ns()}"
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    append(source, 0, 20)
    pipeline = {
        "name": "p",
        "source": {
            "connector": "file",
            "config": {"path": str(source), "follow": True, "poll_interval": 0.05},
        },
        "topic": "t",
        "sinks": [
            {
                "name": "out",
                "connector": "file",
                "commit_interval": 0.1,
                "config": {"path": str(output)},
            }
        ],
    }
    config = tmp_path / "p.yaml"
    config.write_text(
        json.dumps(
            {
                "store": url,
                "cluster": {"name": CLUSTER, "failover_timeout": f"{FAILOVER}s"},
                "pipelines": [pipeline],
            }
        )
    )
    monkeypatch.setenv("MESHCONNECT_ADMIN_TOKEN", TOKEN)
    members = Members(tmp_path, ["run", str(config), "--admin", "127.0.0.1:0"])
    probe = StoreProbe(url, "t")

    def owner(unit: str) -> str | None:
        lease = probe.owner(unit)
        return None if lease is None else members.named(lease.owner)

    def rounds(name: str, n: int = 3) -> None:
        """Wait until member ``name`` renewed its leases ``n`` more times (a round each)."""
        prefix = f"member {CLUSTER} {name}:"

        def expires() -> float:
            held = [lease for lease in probe.leases().values() if lease.name.startswith(prefix)]
            return max((lease.expires for lease in held), default=0.0)

        first = expires()
        until(
            lambda: expires() >= first + n * FAILOVER / 10 * 0.9,
            f"{n} rounds of {name}",
            members,
        )

    try:
        members.start("w1")
        members.start("w2", ["--store", url, "run", "--cluster", CLUSTER, "--admin", "127.0.0.1:0"])
        urls = {name: admin_url(members, name) for name in ("w1", "w2")}
        until(
            lambda: {owner(SOURCE), owner(SINK)} == {"w1", "w2"},
            "each member to run one unit",
            members,
        )
        until(lambda: ids(output) == list(range(20)), "the first 20 records", members)
        b = owner(SOURCE)  # runs the source
        a = "w1" if b == "w2" else "w2"  # runs the sink, and is asked to pause
        assert b is not None and owner(SINK) == a

        # A pause asked of A stops B's source.
        status, body = call(urls[a], "PUT", "/connectors/p/pause")
        assert (status, body["state"]) == (202, "PAUSED"), body
        until(
            lambda: logged(members, b, f"cluster {CLUSTER}: pausing {SOURCE}"),
            f"{b} to pause its source",
            members,
        )
        assert logged(members, a, f"cluster {CLUSTER}: pausing {SINK}")
        rounds(b, 1)  # the poll in hand when it paused is over
        end = probe.end()
        append(source, 20, 30)  # records keep arriving at the paused source
        rounds(b)
        assert probe.end() == end and ids(output) == list(range(20))
        for name in (a, b):  # every member shows what was asked
            status, body = call(urls[name], "GET", "/connectors/p/status")
            assert (body["state"], body["cluster"]["target_state"]) == ("PAUSED", "PAUSED")
            status, view = call(urls[name], "GET", "/cluster")
            assert view["pipelines"][0]["target_state"] == "PAUSED"
        cli = run_cli(tmp_path, "--store", url, "status", "--cluster", CLUSTER)
        assert cli.returncode == 0 and "p v1 PAUSED" in cli.stdout, cli.stdout + cli.stderr

        # B dies while paused: A takes the source over, paused.
        members.kill(b)
        until(lambda: owner(SOURCE) == a, f"{a} to take the source over", members)
        assert logged(members, a, f"took {SOURCE} (epoch")
        assert re.search(rf"took {SOURCE} \(epoch \d+\) paused", members.log(a).read_text())
        rounds(a)
        assert probe.end() == end and ids(output) == list(range(20))

        # B starts again (the same file): it takes its share back, paused.
        offset = members.log(b).stat().st_size
        members.start(b)
        urls[b] = admin_url(members, b, offset)
        until(lambda: owner(SOURCE) == b or owner(SINK) == b, f"{b} to take a unit", members)
        assert re.search(
            r"took (source p/file|group p/out) \(epoch \d+\) paused",
            members.log(b).read_bytes()[offset:].decode(errors="replace"),
        )
        rounds(b)
        assert probe.end() == end and ids(output) == list(range(20))

        # A resume asked of B: everything arrives, once.
        status, body = call(urls[b], "PUT", "/connectors/p/resume")
        assert status == 202, body
        until(lambda: ids(output) == list(range(30)), "the 10 records held back", members)
        status, body = call(urls[a], "GET", "/connectors/p/status")
        assert body["cluster"]["target_state"] == "STARTED"

        # A stop asked of A: both units end on every member, and no member takes them.
        status, body = call(urls[a], "PUT", "/connectors/p/stop")
        assert (status, body["state"]) == (202, "STOPPED"), body
        until(
            lambda: owner(SOURCE) is None and owner(SINK) is None,
            "both units to be given back",
            members,
        )
        end = probe.end()
        append(source, 30, 40)
        rounds(a)
        rounds(b)
        assert owner(SOURCE) is None and owner(SINK) is None
        assert probe.end() == end and ids(output) == list(range(30))
        status, body = call(urls[b], "GET", "/connectors/p/status")
        assert (body["state"], body["cluster"]["target_state"], body["tasks"]) == (
            "STOPPED",
            "STOPPED",
            [],
        )
        status, body = call(urls[b], "PUT", "/connectors/p/pause")
        assert status == 409 and "resume it first" in body["detail"], body

        status, body = call(urls[a], "PUT", "/connectors/p/resume")
        assert status == 202, body
        until(lambda: ids(output) == list(range(40)), "the records sent while stopped", members)
        codes = members.stop_all()
        assert codes == {"w1": 0, "w2": 0}, members.tails()
        assert ids(output) == list(range(40))  # exactly once through pause, failover, stop
        assert [r.data["id"] for r in probe.read_all("t")] == list(range(40))
    finally:
        members.stop_all()
        probe.close()
