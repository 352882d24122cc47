"""Secrets of the slack and chatgpt connectors (bot token, signing secret, API key) never appear
in ``validate`` output and are write-only in ``schema``; config mistakes are named by file,
line and field."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from click.testing import CliRunner

from meshconnect.cli import cli

TOKEN = "xoxb-1111-2222-secret-token"
SIGNING = "f00dfeedsigningsecret"
API_KEY = "sk-proj-secret-api-key-1234"


def test_validate_names_mistakes_and_never_prints_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            pipelines:
              - name: events
                source:
                  connector: slack
                  config: {{signing_secret: {SIGNING}, max_age: 5 minutes}}
                sinks:
                  - connector: slack
                    config:
                      token: {TOKEN}
                      channel: "{{data.channel"
                      text: hi
              - name: ask
                source:
                  connector: chatgpt
                  config: {{api_key: {API_KEY}, mode: summarise}}
                transforms:
                  - type: llm
                    api_key: {API_KEY}
                    prompt: "{{data.text}}"
                    field: summary
            """
        )
    )
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    out = result.output
    for secret in (TOKEN, SIGNING, API_KEY):
        assert secret not in out
    assert f"{path}:6:" in out and "max_age" in out
    assert f"{path}:11:" in out and "channel" in out
    assert f"{path}:16:" in out and "mode" in out
    assert "field" in out and "give a path under data, such as data.summary" in out


def test_validate_names_mistakes_a_run_would_only_meet_later(tmp_path: Path) -> None:
    """Each of these passed ``validate`` and then failed the run at start (listen, path), failed
    every call (an empty secret, a base_url without its scheme: connection errors, retried,
    then every record dead-lettered) or every record (an empty channel or text)."""
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            """
            pipelines:
              - name: events
                source:
                  connector: slack
                  config:
                    listen: localhost
                    path: slack/events
                    signing_secret: "${env:UNSET_SIGNING_SECRET:-}"
                transforms:
                  - {type: llm, prompt: "{data.text}", field: data.x, base_url: "localhost:1/v1"}
                sinks:
                  - connector: slack
                    config: {token: "", channel: " ", text: hi, base_url: slack.com/api/}
                  - connector: slack
                    config: {token: xoxb-1, channel: C1, text: ""}
              - name: ask
                source:
                  connector: chatgpt
                  config: {listen: "0.0.0.0:80800", path: ask, base_url: "api.openai.com/v1"}
              - name: ask2
                source:
                  connector: chatgpt
                  config: {bearer_tokens: [ok-token, "${env:UNSET_ASK_TOKEN:-}"]}
              - name: hook
                source:
                  connector: webhook
                  config: {bearer_tokens: [{token: "", types: ["*"]}]}
            """
        )
    )
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    out = result.output
    expected = [
        ("7", "source.config.listen", "expected HOST:PORT"),
        ("8", "source.config.path", "must start with '/'"),
        ("9", "source.config.signing_secret", "empty"),
        ("11", "transforms[0].base_url", "expected an http:// or https:// URL"),
        ("14", "sinks[0].config.token", "empty"),
        ("14", "sinks[0].config.channel", "empty"),
        ("14", "sinks[0].config.base_url", "expected an http:// or https:// URL"),
        ("16", "sinks[1].config", "the message would be empty"),
        ("20", "source.config.listen", "port 80800 is above 65535"),
        ("20", "source.config.path", "must start with '/'"),
        ("20", "source.config.base_url", "expected an http:// or https:// URL"),
        ("24", "source.config.bearer_tokens", "[1] is empty"),
        ("28", "source.config.bearer_tokens", "[0] is empty"),
    ]
    for line, field, why in expected:
        assert any(
            row.startswith(f"{path}:{line}:") and field in row and why in row
            for row in out.splitlines()
        ), (line, field, why, out)


def test_the_schema_marks_every_secret_write_only() -> None:
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0, result.output
    text = result.output
    for name in ('"token"', '"signing_secret"', '"api_key"'):
        assert name in text

    def walk(node: object) -> list[tuple[str, dict[str, object]]]:
        found = []
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("token", "signing_secret", "api_key") and isinstance(value, dict):
                    found.append((key, value))
                found.extend(walk(value))
        elif isinstance(node, list):
            for item in node:
                found.extend(walk(item))
        return found

    secrets = walk(json.loads(text))
    assert {k for k, _ in secrets} == {"token", "signing_secret", "api_key"}
    assert all(v.get("format") == "password" and v.get("writeOnly") for _, v in secrets)


def test_a_base_url_with_credentials_is_refused_by_its_field_without_echoing_them(
    tmp_path: Path,
) -> None:
    """``base_url: http://u:PASSWORD@host/…`` passed validation; slack-sdk then refused every
    call (aiohttp cannot send user info next to the token's Authorization header) after its
    debug log had printed the URL, and the openai SDK sent it as Basic auth in place of the
    API key."""
    password = "pw-BASEURL-S3CR3T"
    url = f"http://bob:{password}@127.0.0.1:9/v1"
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            pipelines:
              - name: ask
                source:
                  connector: chatgpt
                  config: {{api_key: {API_KEY}, base_url: "{url}"}}
                transforms:
                  - {{type: llm, api_key: {API_KEY}, prompt: "{{data.text}}",
                      field: data.summary, base_url: "{url}"}}
                sinks:
                  - connector: slack
                    config: {{token: {TOKEN}, channel: C1, text: hi, base_url: "{url}"}}
            """
        )
    )
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    out = result.output
    assert password not in out
    problems = [line for line in out.splitlines() if "credentials in the URL" in line]
    assert [line.split(":")[1] for line in problems] == ["6", "9", "12"]
    assert "source.config.base_url" in problems[0]
    assert "transforms[0].base_url" in problems[1]
    assert "sinks[0].config.base_url" in problems[2]
