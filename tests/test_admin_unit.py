"""The admin package's pieces that need no worker: connector states from task states, the
OpenAPI document against the routes the server serves, the token and bind rules."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from meshconnect.admin import AdminServer, pipeline_state
from meshconnect.admin.openapi import document, reference_markdown
from meshconnect.errors import ConfigError
from meshconnect.runstate import ConnectorStatus, PipelineRunState, RunState


def _task(state: str) -> ConnectorStatus:
    status = ConnectorStatus("p/x", "sink", "file")
    status.set(state)
    return status


@pytest.mark.parametrize(
    ("paused", "halted", "states", "expected"),
    [
        (False, False, ["RUNNING", "RUNNING"], "RUNNING"),
        (False, False, ["STARTING", "RUNNING"], "RUNNING"),
        (False, False, ["RUNNING", "FAILED"], "DEGRADED"),
        (False, False, ["FAILED", "FAILED"], "FAILED"),
        (False, False, ["DONE", "FAILED"], "FAILED"),
        (True, False, ["RUNNING", "RUNNING"], "PAUSED"),
        (True, False, ["RUNNING", "FAILED"], "DEGRADED"),  # a failure outranks the pause
        (False, True, ["STOPPED", "FAILED"], "STOPPED"),
        (False, False, ["DONE", "DONE"], "STOPPED"),
    ],
)
def test_connector_state(paused: bool, halted: bool, states: list[str], expected: str) -> None:
    assert pipeline_state(paused, halted, [_task(s) for s in states]) == expected


def test_a_failure_is_kept_with_its_time_after_the_task_runs_again() -> None:
    status = _task("RUNNING")
    status.set("FAILED", "DataError: bad")
    status.next_restart, status.restart_delay = 123.0, 2.0
    at = status.failed_at
    status.set("RUNNING")
    assert (status.last_error, status.failed_at) == ("DataError: bad", at)
    assert (status.next_restart, status.restart_delay) == (None, None)


async def test_pipeline_run_state_pauses_and_stops_one_pipeline() -> None:
    run = RunState()
    view = PipelineRunState(run, "p")
    view.pause()
    waiter = asyncio.ensure_future(view.wait_resumed())
    await asyncio.sleep(0)
    assert not waiter.done() and view.paused
    view.resume()
    await asyncio.wait_for(waiter, 5)
    assert not view.stopping
    view.halt()  # this pipeline only
    assert view.stopping and view.halted and not run.stopping
    await asyncio.wait_for(view.stopped(), 5)
    other = PipelineRunState(run, "q")
    run.stop()  # the run stops: every pipeline too
    assert other.stopping and not other.halted
    await asyncio.wait_for(other.stopped(), 5)
    assert other.generation == run.generation  # the rest is the run's


def test_the_document_describes_every_route_the_server_serves() -> None:
    from aiohttp import web

    server = AdminServer(Any, "127.0.0.1:0", "token")  # type: ignore[arg-type]
    app = web.Application()
    server._routes(app)
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    spec = document()
    described = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert served == described
    assert spec["openapi"] == "3.1.0"
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for ops in spec["paths"].values():
        for op in ops.values():
            assert "401" in op["responses"]
    assert "| PATCH | `/connectors/{name}/offsets` (`?dry_run`) |" in reference_markdown()


@pytest.mark.parametrize("host", ["0.0.0.0:8083", "[::]:8083", "10.1.2.3:8083", "example.org:1"])
def test_without_a_token_only_loopback_binds(host: str) -> None:
    with pytest.raises(ConfigError, match="binds only loopback"):
        AdminServer(Any, host, None)  # type: ignore[arg-type]
    AdminServer(Any, host, "a-token")  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["127.0.0.1:0", "[::1]:0", "localhost:0", "127.0.0.2:0"])
def test_loopback_binds_without_a_token(host: str, tmp_path: Path) -> None:
    server = AdminServer(Any, host, None, tmp_path)  # type: ignore[arg-type]
    assert not server.token_given and len(server.token) >= 32


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1:8083", True),
        ("localhost:8083", True),
        ("LOCALHOST", True),
        ("[::1]:8083", True),
        ("::1", True),
        ("127.0.0.2", True),
        ("evil.example:8083", False),
        ("10.0.0.1:8083", False),
        ("", False),
    ],
)
def test_without_a_token_only_loopback_host_names_are_served(host: str, local: bool) -> None:
    from meshconnect.admin.server import _local_host

    assert _local_host(host) is local
