"""Literal secrets found in a PUT body, and the status table of ``meshconnect status``."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from meshconnect.cli import _status_table
from meshconnect.secrets import literal_secrets


def test_literal_secrets_by_key_url_and_query() -> None:
    body = {
        "author": "bob",  # not auth
        "source": {"config": {"bearer_tokens": ["tok-1", {"token": "tok-2", "types": ["a.*"]}]}},
        "sinks": [
            {
                "config": {
                    "url": "https://u:pw-3@h.example/p?api_key=key-4&tenant=t5",
                    "token_url": "https://idp.example/token",
                    "headers": {"Authorization": "Bearer tok-6", "X-Tenant": "t7"},
                    "hmac": {"secret": "sec-8", "header": "X-Sig"},
                    "password": "   ",
                }
            }
        ],
    }
    assert literal_secrets(body) == {
        "tok-1", "tok-2", "pw-3", "key-4", "Bearer tok-6", "tok-6", "sec-8",
    }  # fmt: skip


def test_status_table_keeps_one_line_a_connector_and_the_failing_record() -> None:
    error = {"message": "DataError: sink: cast " + "x" * 300, "topic": "orders", "offset": 3990}
    data = {
        "orders": {"status": {"state": "DEGRADED", "records_in": 4210, "records_out": 3990,
                              "rate_in": 98.24, "rate_out": 0.0, "lag": 220, "restarts": 3,
                              "next_restart_at": "2026-11-29T21:14:09.000+00:00",
                              "error": error}},
        "audit": {"status": {"state": "RUNNING", "records_in": 4210, "records_out": 4210,
                             "rate_in": 98.2, "rate_out": 98.2, "lag": 0, "restarts": 0,
                             "next_restart_at": None, "error": None}},
    }  # fmt: skip
    out = io.StringIO()
    Console(file=out, width=110).print(_status_table(data, 110))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, out.getvalue()
    assert lines[0].split()[:8] == ["CONNECTOR", "STATE", "IN", "OUT", "IN/S", "OUT/S", "LAG",
                                    "RESTARTS"]  # fmt: skip
    orders = lines[1]
    assert orders.split()[:8] == ["orders", "DEGRADED", "4210", "3990", "98.2", "0.0", "220", "3"]
    assert "(next 21:14:09)  [orders@3990] DataError: sink: cast xxx" in orders
    assert orders.rstrip().endswith("…") and len(orders.rstrip()) <= 110


def test_run_refuses_metrics_on_the_admin_port(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from meshconnect.cli import cli

    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("pipelines: []\n")
    for admin, metrics in (("127.0.0.1:18111", "127.0.0.1:18111"), ("0.0.0.0:9", "127.0.0.1:9")):
        result = CliRunner().invoke(
            cli,
            ["--state", str(tmp_path / "s"), "run", str(pipeline), "--admin", admin,
             "--metrics", metrics],
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert "the admin API on that port serves /metrics already" in result.output
