"""Cluster mode at the limits of its engine: a definition NATS cannot store is refused with a
message that says why (it stopped the worker with a traceback and ``MaxPayloadError()``)."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli


def test_a_definition_bigger_than_nats_max_payload_is_refused_by_name(
    tmp_path: Path,
    nats_server,  # type: ignore[no-untyped-def]
) -> None:
    (tmp_path / "in.jsonl").write_text('{"a": 1}\n')
    big = "x" * 1_200_000  # a lookup table inlined in a transform
    path = tmp_path / "p.yaml"
    path.write_text(
        f"store: {nats_server.url}?prefix=limits\n"
        "cluster: {name: big, failover_timeout: 2s}\n"
        "pipelines:\n"
        "  - name: big\n"
        "    source: {connector: file, config: {path: ./in.jsonl, follow: true}}\n"
        "    transforms:\n"
        f"      - {{type: insert_field, field: data.blob, value: '{big}'}}\n"
        "    topic: t\n"
    )
    done = run_cli(tmp_path / "state", "run", str(path), timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "error: cluster 'big': could not store the definitions of big (1,2" in done.stderr
    assert "max_payload" in done.stderr
