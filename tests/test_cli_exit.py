"""Exit statuses of ``meshconnect`` (``meshconnect.cli.main``): click's standalone mode, except
that Ctrl-C before a command's own signal handling exits 130 without ``Aborted!``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshconnect import cli
from meshconnect.config import loader


def _exit(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[Any, str, str]:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_ctrl_c_while_the_config_loads_exits_130_quietly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "p.yaml").write_text("pipelines: []\n")

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(loader, "load_pipeline_files", interrupted)
    code, _, err = _exit(capsys, ["validate", str(tmp_path / "p.yaml")])
    assert code == 130
    assert "Aborted" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "code", "stream", "text"),
    [
        (["--help"], 0, "out", "Usage: meshconnect"),
        (["no-such-command"], 2, "err", "No such command 'no-such-command'"),
        (["validate"], 2, "err", "Missing argument"),
        (["--log-level", "loud", "validate", "x"], 2, "err", "Invalid value for '--log-level'"),
    ],
)
def test_click_exit_statuses_and_messages_stay(
    capsys: pytest.CaptureFixture[str], argv: list[str], code: int, stream: str, text: str
) -> None:
    got, out, err = _exit(capsys, argv)
    assert got == code
    assert text in (out if stream == "out" else err)


def test_a_command_exit_status_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("pipelines:\n  - name: x\n    source: {connector: nope}\n")
    code, _, err = _exit(capsys, ["validate", str(bad)])
    assert code == 1 and "p.yaml:3" in err
    good = tmp_path / "ok.yaml"
    good.write_text(
        "pipelines:\n  - name: x\n    source:\n      connector: file\n"
        "      config: {path: in.jsonl, format: json}\n"
        "    sinks:\n      - connector: file\n        config: {path: out.jsonl, format: json}\n"
    )
    code, _, _ = _exit(capsys, ["validate", str(good)])
    assert code == 0


@pytest.mark.parametrize(
    "store",
    [
        "redis://:s3cretpw@127.0.0.1:1/0?reconnect_timeout=0.3",
        "nats://u:s3cretpw@127.0.0.1:1?reconnect_timeout=0.3",
    ],
)
@pytest.mark.parametrize("command", [["topics", "list"], ["offsets", "show"], ["run"]])
def test_an_unreachable_store_is_one_line_naming_it_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store: str, command: list[str]
) -> None:
    # Nothing listens on port 1: the store gives up after reconnect_timeout. The reason names
    # the store; a traceback (every command but `status --cluster` printed one, `run` under
    # "the worker stopped on an unexpected error") only hid it.
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "pipelines:\n  - name: x\n    source:\n      connector: file\n"
        f"      config: {{path: {tmp_path / 'in.jsonl'}, format: json, follow: true}}\n"
        f"    sinks:\n      - connector: file\n        config: {{path: {tmp_path / 'o.jsonl'}}}\n"
    )
    argv = ["--state", str(tmp_path / "state"), "--store", store, *command]
    code, _, err = _exit(capsys, [*argv, str(pipeline)] if command == ["run"] else argv)
    assert code == 1
    assert "unreachable for 0.3 s" in err and "127.0.0.1:1" in err
    # ... and while it waits it says so (the NATS store waited in silence)
    assert "waiting for " in err
    assert "Traceback" not in err and "unexpected error" not in err
    assert "s3cretpw" not in err
