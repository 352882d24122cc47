"""``meshconnect test``: config tests of pipelines (issue 3, item 5)."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from meshconnect.cli import cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def mc_test(*files: Path | str) -> Result:
    return CliRunner().invoke(cli, ["test", *map(str, files)])


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_the_quickstart_example_passes() -> None:
    result = mc_test(EXAMPLES / "quickstart_test.yaml")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "4 passed, 0 failed"


def test_a_broken_expectation_fails_with_a_diff(tmp_path: Path) -> None:
    text = (EXAMPLES / "quickstart_test.yaml").read_text()
    text = text.replace("file: quickstart.yaml", f"file: {EXAMPLES / 'quickstart.yaml'}")
    broken = text.replace("region: eu}", "region: us}", 1)
    assert broken != text
    path = tmp_path / "broken_test.yaml"
    path.write_text(broken)
    result = mc_test(path)
    assert result.exit_code == 1
    assert f"FAIL {path}:7: a big European order is kept" in result.output
    assert '-      "region": "us",\n    +      "region": "eu",' in result.output
    assert "--- expected records out" in result.output
    assert result.output.splitlines()[-1] == "FAILED: 3 passed, 1 failed"


PIPELINE = """
pipelines:
  - name: orders
    source:
      connector: memory
      config: {}
      errors: {tolerance: all, dead_letter_topic: dlq.orders}
    transforms:
      - {type: insert_field, field: data.tag, value: "${env:TAG}"}
    topic: "orders.{data.region}"
    sinks:
      - name: audit
        connector: memory
        topics: ["orders.eu"]
        transforms:
          - {type: mask, fields: [data.card.number]}
        errors: {tolerance: all, dead_letter_topic: dlq.audit}
  - name: replies
    sinks:
      - {name: out, connector: memory, transforms: [{type: filter, where: "data.ok"}]}
"""


def plugins(tmp_path: Path) -> list[str]:
    """The memory test connector, for the CLI (a local plugin)."""
    (tmp_path / "memory_plugin.py").write_text(
        "from meshconnect.testing import meshconnect_connectors  # noqa: F401\n"
    )
    (tmp_path / "plugins.toml").write_text('[plugins]\npaths = ["memory_plugin.py"]\n')
    return ["--plugins", str(tmp_path / "plugins.toml")]


def run(tmp_path: Path, tests: str) -> Result:
    write(tmp_path, "p.yaml", PIPELINE)
    path = write(tmp_path, "p_test.yaml", tests)
    return CliRunner().invoke(cli, [*plugins(tmp_path), "test", str(path)])


def test_routing_sink_transforms_and_dead_letters_of_both_sides(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        """
        file: p.yaml
        pipeline: orders
        env: {TAG: t1}
        tests:
          - name: routed by region, each with the tag from the environment
            input:
              - data: {region: eu}
              - data: {region: us}
              - data: "not an object"
            expect:
              - {topic: orders.eu, data: {region: eu, tag: t1}}
              - {topic: orders.us, data: {region: us, tag: t1}}
            dead_letters:
              - {topic: dlq.orders, errorstage: "transforms[0]", data: "not an object"}
          - name: the audit sink reads orders.eu only and masks the card number
            sink: audit
            input:
              - data: {region: eu, card: {number: "4111"}}
              - data: {region: eu, card: "none"}
              - data: {region: us, card: {number: "4222"}}
            expect:
              - data: {region: eu, card: {number: "****"}, tag: t1}
            dead_letters:
              - topic: dlq.audit
                errorstage: sinks[0].transforms[0]
                errortype: DataError
                errorconnector: audit
                errortopic: orders.eu
                data: {region: eu, card: "none", tag: t1}
          - name: a sink-only pipeline tests its sink with records of its topic
            pipeline: replies
            sink: out
            input:
              - {data: {ok: true}, type: reply}
              - {data: {ok: false}}
            expect:
              - {topic: replies, type: reply, data: {ok: true}}
        """,
    )
    assert result.exit_code == 0, result.output
    assert "3 passed, 0 failed" in result.output


def test_extra_or_missing_records_show_in_the_diff(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        """
        file: p.yaml
        env: {TAG: t1}
        tests:
          - name: one expected, two out, one dead letter not expected
            pipeline: orders
            input:
              - data: {region: eu}
              - data: {region: us}
              - data: "not an object"
            expect:
              - {data: {region: eu, tag: t1}}
        """,
    )
    assert result.exit_code == 1
    assert '+      "region": "us",' in result.output
    assert "--- expected dead letters" in result.output
    assert '"errorstage": "transforms[0] (insert_field)"' in result.output


def test_problems_in_a_test_file_are_located(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        """
        file: p.yaml
        env: {TAG: t1}
        tests:
          - name: which pipeline?
            input: [{data: {}}]
          - name: misspelt
            pipeline: orders
            inputs: [{data: {}}]
          - name: no such sink
            pipeline: orders
            sink: archive
            input: [{data: {}}]
        """,
    )
    assert result.exit_code == 1
    path = tmp_path / "p_test.yaml"
    assert f"{path}:7:5: tests[1].input: missing required field 'input'" in result.output
    assert f"{path}:9:5: tests[1].inputs: unknown key 'inputs' (did you mean 'input'?)" in (
        result.output
    )


def test_names_are_checked_against_the_pipeline_file(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        """
        file: p.yaml
        env: {TAG: t1}
        tests:
          - name: which pipeline?
            input: [{data: {}}]
          - name: no such sink
            pipeline: orders
            sink: archive
            input: [{data: {}}]
          - name: no data
            pipeline: orders
            input: [{type: x}]
        """,
    )
    assert result.exit_code == 1
    path = tmp_path / "p_test.yaml"
    assert f"{path}:5:5: tests[0]: say which pipeline to test" in result.output
    assert f"{path}:9:11: tests[1].sink: no sink 'archive' in pipeline 'orders'" in result.output
    assert f"{path}:13:13: tests[2].input[0]: an input record needs 'data'" in result.output


def test_problems_in_the_pipeline_file_are_reported_as_validate_does(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        """
        file: p.yaml
        tests:
          - {name: x, pipeline: orders, input: [{data: {}}]}
        """,
    )
    assert result.exit_code == 1
    assert f"{tmp_path / 'p.yaml'}:" in result.output
    assert "TAG" in result.output  # ${env:TAG} is not set and the test file gives no env


def test_a_missing_pipeline_file_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path, "x_test.yaml", "file: nope.yaml\ntests: [{name: x, input: [{data: 1}]}]\n"
    )
    result = mc_test(path)
    assert result.exit_code == 1
    assert f"{path}:1:7: file: no pipeline file" in result.output


def test_numbers_are_compared_exactly_digits_and_scale(tmp_path: Path) -> None:
    """A case compares numbers as the records hold them: 169299987.35345113 is not ...112 and
    1.1 is not 1.10 (through a float both were equal, so a case could not catch lost digits);
    a float counts as its shortest text, a whole Decimal as its integer."""
    write(
        tmp_path,
        "p.yaml",
        """
        pipelines:
          - name: p
            source: {connector: file, config: {path: in.jsonl}}
            topic: t
            transforms:
              - {type: cast, fields: {data.f: float}}
        """,
    )
    path = write(
        tmp_path,
        "p_test.yaml",
        """
        file: p.yaml
        tests:
          - name: same
            pipeline: p
            input: [{data: {d: 169299987.35345112, s: 1.10, f: 2.50, i: 10}}]
            expect: [{data: {d: 169299987.35345112, s: 1.10, f: 2.5, i: 10}}]
          - name: a digit beyond a float's
            pipeline: p
            input: [{data: {d: 169299987.35345112, f: 1}}]
            expect: [{data: {d: 169299987.35345113, f: 1.0}}]
          - name: the scale
            pipeline: p
            input: [{data: {s: 1.10, f: 1}}]
            expect: [{data: {s: 1.1, f: 1.0}}]
        """,
    )

    result = mc_test(path)

    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == "FAILED: 1 passed, 2 failed", result.output
    assert '-      "d": 169299987.35345113,\n    +      "d": 169299987.35345112,' in result.output
    assert '-      "s": 1.1\n    +      "s": 1.10' in result.output


def test_secrets_are_masked_in_diffs_and_dead_letters_but_test_file_env_values_are_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`meshconnect test` printed a secret as `run` never does: a literal password of the
    pipeline file in a record of a failure diff, and a `${env:}` value put in a record, in
    that diff and in a dead letter's errormessage. The test file's own `env:` values are
    written in it, so they are shown (`test` there is not masked in `meshconnect-test`)."""
    literal, from_env = f"lit-{uuid.uuid4().hex[:12]}", f"env-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("PIPETEST_TOKEN", from_env)
    write(
        tmp_path,
        "s.yaml",
        f"""
        pipelines:
          - name: s
            source:
              connector: memory
              config: {{}}
              errors: {{tolerance: all, dead_letter_topic: dlq}}
            transforms:
              - {{type: insert_field, field: data.token, value: "${{env:PIPETEST_TOKEN}}"}}
              - {{type: insert_field, field: data.label, value: "${{env:LABEL}}"}}
              - {{type: cast, fields: {{data.token: int}}, when: "data.bad == true"}}
            topic: t
            sinks:
              - name: out
                connector: http
                config: {{url: "http://al:{literal}@127.0.0.1:9/x"}}
        """,
    )
    path = write(
        tmp_path,
        "s_test.yaml",
        f"""
        file: s.yaml
        env: {{LABEL: test}}
        tests:
          - name: a record echoed in a diff
            input:
              - data: {{dsn: "postgresql://al:{literal}@db/app"}}
            expect:
              - data: {{}}
          - name: a dead letter
            input:
              - data: {{bad: true}}
        """,
    )
    result = CliRunner().invoke(cli, [*plugins(tmp_path), "test", str(path)])
    assert result.exit_code == 1
    out = result.output
    assert literal not in out and from_env not in out, out
    assert '"dsn": "postgresql://al:**********@db/app"' in out
    assert '"token": "**********"' in out
    assert "cast: data.token: '**********' is not a number" in out
    assert '"label": "test"' in out and '"source": "meshconnect-test"' in out


def test_the_diffs_run_test_file_gives_mask_the_pipelines_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A program that runs test files (meshconnect.pipetest) and prints the diffs got the
    records of a failed case with a `${env:}` value and a literal URL password in clear."""
    from meshconnect.pipetest import load_test_files, run_test_file
    from meshconnect.testing import test_registry

    literal, from_env = f"lit-{uuid.uuid4().hex[:12]}", f"env-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("PIPETEST_API_TOKEN", from_env)
    write(
        tmp_path,
        "a.yaml",
        f"""
        pipelines:
          - name: a
            source: {{connector: memory, config: {{}}}}
            transforms:
              - {{type: insert_field, field: data.token, value: "${{env:PIPETEST_API_TOKEN}}"}}
            topic: t
            sinks:
              - {{connector: http, config: {{url: "http://al:{literal}@127.0.0.1:9/x"}}}}
        """,
    )
    path = write(
        tmp_path,
        "a_test.yaml",
        f"""
        file: a.yaml
        tests:
          - name: a record echoed in a diff
            input: [{{data: {{dsn: "postgresql://al:{literal}@db/app"}}}}]
            expect: [{{data: {{}}}}]
        """,
    )
    (test,) = load_test_files([str(path)], test_registry())
    (result,) = run_test_file(test)
    (diff,) = result.diffs
    assert literal not in diff and from_env not in diff
    assert '"token": "**********"' in diff and "al:**********@db" in diff
