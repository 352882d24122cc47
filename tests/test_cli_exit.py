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
