"""Topic names (one documented rule) and dead-letter loops: checked by ``validate`` for
literal names, by the router for rendered ones (issue 9 items 4 and 6, issue 19 item 7)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from cli_support import mc

from meshconnect.config.topics import (
    MAX_TOPIC_LENGTH,
    DeadLetterSink,
    dead_letter_loops,
    pattern_problem,
    topic_problem,
)

RULE = "use letters, digits, '.', '_' and '-'"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    "name",
    ["orders", "dlq.orders", "cdc.shop.order_items", "a-b", "Ünïcode.表", "x" * MAX_TOPIC_LENGTH],
)
def test_valid_topic_names(name: str) -> None:
    assert topic_problem(name) is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "a topic name may not be empty"),
        ("a b", f"a topic name may not contain a space: {RULE}"),
        ("a/b", f"a topic name may not contain '/': {RULE}"),
        ("a*", f"a topic name may not contain '*': {RULE}"),
        ("a?", f"a topic name may not contain '?': {RULE}"),
        ("a[1]", f"a topic name may not contain '[': {RULE}"),
        ("a\nb", f"a topic name may not contain a newline: {RULE}"),
        ("a\tb", f"a topic name may not contain the control or space character U+0009: {RULE}"),
        (
            "\x1b]0;x\x07",
            f"a topic name may not contain the control or space character U+001B: {RULE}",
        ),
        ("a\u200bb", f"a topic name may not contain the control or space character U+200B: {RULE}"),
        ("a:b", f"a topic name may not contain ':': {RULE}"),
        (".", "'.' is not a topic name"),
        ("..", "'..' is not a topic name"),
        ("x" * 250, "a topic name has at most 249 characters, this one 250"),
    ],
)
def test_invalid_topic_names(name: str, problem: str) -> None:
    assert topic_problem(name) == problem


def test_sink_patterns_allow_globs_but_not_other_characters() -> None:
    assert pattern_problem("dlq.*") is None
    assert pattern_problem("orders.[ab]?") is None
    assert pattern_problem("a b*") == (
        f"a topic name may not contain a space: {RULE} (and '*', '?', '[...]' in globs)"
    )


def test_dead_letter_loops_self_pair_and_none() -> None:
    sinks = [
        DeadLetterSink("p/self", ("dlq.*",), "dlq.s"),
        DeadLetterSink("p/a", ("x",), "y"),
        DeadLetterSink("p/b", ("y",), "x"),
        DeadLetterSink("p/c", ("orders",), "dlq.c"),  # read by p/self, which loops on itself
    ]

    assert [index for index, _ in dead_letter_loops(sinks)] == [0, 1]


def test_validate_reports_topic_names_and_dead_letter_loops_with_positions(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("")
    p = write(
        tmp_path,
        "p.yaml",
        """\
        pipelines:
          - name: loop
            source:
              connector: file
              config: {path: in.jsonl}
              errors: {tolerance: all, dead_letter_topic: loop}
            sinks:
              - name: s
                connector: file
                topics: ["dlq.*"]
                config: {path: out.jsonl}
                errors: {tolerance: all, dead_letter_topic: dlq.s}
          - name: pair
            topic: "has space"
            transforms:
              - {type: route, rules: [{when: "true", topic: "a/b"}]}
            source:
              connector: file
              config: {path: in.jsonl}
            sinks:
              - name: a
                connector: file
                topics: [x, "y*z w"]
                config: {path: a.jsonl}
                errors: {tolerance: all, dead_letter_topic: y}
              - name: b
                connector: file
                topics: [y]
                config: {path: b.jsonl}
                errors: {tolerance: all, dead_letter_topic: "x"}
        """,
    )

    result = mc(tmp_path, "validate", str(p))

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{p}:6:51: pipelines[0].source.errors.dead_letter_topic: the source dead-letters into "
        "'loop', a topic this pipeline writes (loop): dead letters would be mixed with its "
        "records and delivered by its sinks; use a topic of their own, e.g. 'dlq.' + the "
        "pipeline name",
        f"{p}:12:53: pipelines[0].sinks[0].errors.dead_letter_topic: dead-letter loop: sink "
        "loop/s dead-letters into 'dlq.s', which it reads itself (topics: dlq.*); a record "
        "that fails would come back to it and fail again, forever. Use a dead-letter topic "
        "outside its topics",
        f"{p}:14:12: pipelines[1].topic: a topic name may not contain a space: {RULE}",
        f"{p}:16:53: pipelines[1].transforms[0].rules[0].topic: a topic name may not contain "
        f"'/': {RULE}",
        f"{p}:23:21: pipelines[1].sinks[0].topics[1]: a topic name may not contain a space: "
        f"{RULE} (and '*', '?', '[...]' in globs)",
        f"{p}:25:53: pipelines[1].sinks[0].errors.dead_letter_topic: dead-letter loop: sink "
        "pair/a dead-letters into 'y', read by sink pair/b, which dead-letters into 'x', read "
        "by sink pair/a; a record that fails in each would circle forever. Use dead-letter "
        "topics that no sink on the loop reads",
        "6 problem(s) found",
    ]


def test_a_record_routed_to_an_invalid_topic_is_dead_lettered(tmp_path: Path) -> None:
    lines = ["ok", "a b", "x/y", "*", "\n", "\u001b]0;pwned\u0007", "z" * 249]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"s": s}) + "\n" for s in lines))
    p = write(
        tmp_path,
        "p.yaml",
        """\
        pipelines:
          - name: routed
            source:
              connector: file
              config: {path: in.jsonl}
              errors: {tolerance: all, dead_letter_topic: dlq.routed}
            transforms:
              - {type: route, topic: "t{data.s}"}
        """,
    )

    run = mc(tmp_path, "run", str(p))
    listed = mc(tmp_path, "topics", "list", "--json")
    dead = mc(tmp_path, "topics", "tail", "dlq.routed", "--from-beginning")

    assert run.returncode == 0, run.stderr
    assert [t["topic"] for t in json.loads(listed.stdout)] == ["dlq.routed", "tok"]
    how = "(set by a transform)"
    assert [json.loads(line)["errormessage"] for line in dead.stdout.splitlines()] == [
        f"topic 'ta b' {how}: a topic name may not contain a space: {RULE}",
        f"topic 'tx/y' {how}: a topic name may not contain '/': {RULE}",
        f"topic 't*' {how}: a topic name may not contain '*': {RULE}",
        f"topic 't\\n' {how}: a topic name may not contain a newline: {RULE}",
        f"topic 't\\x1b]0;pwned\\x07' {how}: a topic name may not contain the control or space "
        f"character U+001B: {RULE}",
        f"topic '{'t' + 'z' * 249}' {how}: a topic name has at most 249 characters, this one 250",
    ]


def test_a_rendered_pipeline_topic_is_checked_too(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"k":"good"}\n{"k":"bad one"}\n')
    p = write(
        tmp_path,
        "p.yaml",
        """\
        pipelines:
          - name: tmpl
            topic: "t.{data.k}"
            source:
              connector: file
              config: {path: in.jsonl}
              errors: {tolerance: all, dead_letter_topic: dlq.tmpl}
        """,
    )

    run = mc(tmp_path, "run", str(p))
    dead = mc(tmp_path, "topics", "tail", "dlq.tmpl", "--from-beginning")

    assert run.returncode == 0, run.stderr
    assert [json.loads(line)["errormessage"] for line in dead.stdout.splitlines()] == [
        "topic 't.bad one' (rendered from the topic template): a topic name may not contain a "
        f"space: {RULE}"
    ]


def test_a_sink_never_dead_letters_into_a_topic_it_reads(tmp_path: Path) -> None:
    """The runtime guard behind validate: a sink whose dead-letter topic it reads itself (here
    set after loading, as validate refuses it) fails instead of feeding failures back in."""
    import asyncio

    from meshconnect.config.loader import load_pipeline_files
    from meshconnect.mesh import open_store
    from meshconnect.plugins import PluginPolicy, load_registry
    from meshconnect.worker import Worker

    (tmp_path / "in.jsonl").write_text('{"s":"abc"}\n')
    p = write(
        tmp_path,
        "p.yaml",
        """\
        pipelines:
          - name: p
            topic: dlq.in
            source: {connector: file, config: {path: in.jsonl}}
            sinks:
              - name: s
                connector: file
                topics: ["dlq.*"]
                transforms: [{type: filter, where: "int(data.s) == 1"}]
                config: {path: out.jsonl}
                errors: {tolerance: all, dead_letter_topic: elsewhere}
        """,
    )
    registry = load_registry(PluginPolicy.read(None))
    config = load_pipeline_files([p], registry, env={})
    config.pipelines[0].sinks[0].errors.dead_letter_topic = "dlq.s"

    async def run() -> tuple[int, list[str]]:
        store = open_store(f"sqlite:///{tmp_path / 'mesh.db'}", registry)
        await store.open()
        try:
            code = await asyncio.wait_for(Worker(config, store).run(), 60)
            return code, [t.name for t in await store.topics()]
        finally:
            await store.close()

    code, topics = asyncio.run(run())

    assert (code, topics) == (1, ["dlq.in"])


def test_topics_replay_checks_the_target_topic_name(tmp_path: Path) -> None:
    result = mc(tmp_path, "topics", "replay", "dlq", "--to", "a b")

    assert result.returncode == 1
    assert result.stderr == f"Error: --to 'a b': a topic name may not contain a space: {RULE}\n"
