"""The llm transform in pipelines, with the real openai AsyncOpenAI against a local OpenAI API
(tests/fixtures/slackgpt/openai_api.py): 500 records at concurrency 8 under random latency and
5 % 429s, each enriched once and in order; the on-disk cache that makes a re-run ask nothing;
structured output validated (bad answers dead-lettered); the Responses API; lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.slackgpt.openai_api import KEY, FakeOpenAI

from meshconnect.mesh.sqlite import SqliteStore
from meshconnect.testing import MemorySink, collect, run_pipelines, test_registry


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAI]:
    server = await FakeOpenAI().start()
    yield server
    await server.stop()


def pipeline(tmp_path: Path, records: list[Any], step: str, name: str = "llm") -> Path:
    """A pipeline: the memory source with ``records`` -> the llm step -> the memory sink."""
    options = textwrap.indent(textwrap.dedent(step).strip(), " " * 8)
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"""
pipelines:
  - name: {name}
    source:
      connector: memory
      config: {{records: {json.dumps(records)}}}
      errors: {{tolerance: all, dead_letter_topic: dlq.llm,
                retry: {{max_attempts: 2, initial_backoff: 10ms}}}}
    transforms:
      - type: llm
{options}
    sinks:
      - {{connector: memory, config: {{name: {name}}}}}
"""
    )
    return path


async def dead(tmp_path: Path) -> list[Any]:
    store = SqliteStore(f"sqlite:///{tmp_path}/mesh.db")
    await store.open()
    try:
        if "dlq.llm" not in {t.name for t in await store.topics()}:
            return []
        return await store.read("dlq.llm", 0, 1000)
    finally:
        await store.close()


async def run(tmp_path: Path, path: Path, db: str = "mesh.db") -> int:
    return await run_pipelines([path], f"sqlite:///{tmp_path}/{db}", registry=test_registry())


async def test_500_records_at_concurrency_8_under_429s_are_each_enriched_once_in_order(
    tmp_path: Path, openai: FakeOpenAI
) -> None:
    openai.latency = (0.0, 0.02)
    openai.rate_limit_chance = 0.05
    MemorySink.outputs.clear()
    records = [{"n": i, "text": f"ticket {i}"} for i in range(500)]
    step = f"""
        model: gpt-4o-mini
        api_key: {KEY}
        base_url: {openai.base_url}
        system: Label the ticket.
        prompt: "Label: {{data.text}}"
        field: data.label
        concurrency: 8
        cache: cache
        """
    path = pipeline(tmp_path, records, step)
    assert await run(tmp_path, path) == 0
    out = collect("llm")
    assert [d["n"] for d in out] == list(range(500))
    assert all(d["label"] == f"echo: Label: ticket {d['n']}" for d in out)
    assert openai.statuses[429] > 0  # the 429s happened, and were waited out
    assert 1 < openai.max_in_flight <= 8  # concurrent, within the limit
    assert set(openai.answered.values()) == {1}  # each prompt answered once
    assert len(openai.answered) == 500
    assert await dead(tmp_path) == []

    # docs/security.md: the cache directories 0700, its files 0600
    entries = list((tmp_path / "cache").rglob("*.json"))
    assert len(entries) == 500
    assert {p.stat().st_mode & 0o777 for p in entries} == {0o600}
    dirs = [tmp_path / "cache", *(p.parent for p in entries)]
    assert {d.stat().st_mode & 0o777 for d in dirs} == {0o700}

    # A second run from scratch (a new store, the same cache): no request at all.
    before = openai.requests
    MemorySink.outputs.clear()
    assert await run(tmp_path, path, db="again.db") == 0
    assert openai.requests == before
    assert collect("llm") == out


async def test_structured_output_is_validated_and_bad_answers_dead_lettered(
    tmp_path: Path, openai: FakeOpenAI
) -> None:
    def answer(body: dict[str, Any]) -> str:
        text = body["messages"][-1]["content"]
        if "broken" in text:
            return '{"sentiment": "meh", "score": 0.5}'
        return '{"sentiment": "positive", "score": 0.91}'

    openai.answer = answer
    MemorySink.outputs.clear()
    schema = {
        "type": "object",
        "properties": {
            "sentiment": {"enum": ["positive", "neutral", "negative"]},
            "score": {"type": "number", "minimum": 0, "maximum": 1.5},  # a Decimal in YAML
        },
        "required": ["sentiment", "score"],
    }
    step = f"""
        api_key: {KEY}
        base_url: {openai.base_url}
        prompt: "{{data.text}}"
        field: data.review.analysis
        schema: {json.dumps(schema)}
        """
    records = [{"text": "great"}, {"text": "broken"}, {"text": "fine", "review": {"by": "ada"}}]
    assert await run(tmp_path, pipeline(tmp_path, records, step)) == 0
    out = collect("llm")
    assert [d["text"] for d in out] == ["great", "fine"]
    assert str(out[0]["review"]["analysis"]["score"]) == "0.91"
    assert out[1]["review"] == {
        "by": "ada",
        "analysis": {"sentiment": "positive", "score": out[1]["review"]["analysis"]["score"]},
    }
    [bad] = await dead(tmp_path)
    assert bad.data == {"text": "broken"}  # as it came in
    assert "answer.sentiment: 'meh' is not one of" in json.dumps(bad.extensions)
    assert openai.bodies[0]["response_format"]["json_schema"]["schema"] == schema


async def test_malformed_and_oversized_answers_are_dead_lettered(
    tmp_path: Path, openai: FakeOpenAI
) -> None:
    openai.answer = lambda body: "x" * 3000 if "big" in body["messages"][-1]["content"] else "ok"
    MemorySink.outputs.clear()
    step = f"""
        api_key: {KEY}
        base_url: {openai.base_url}
        prompt: "{{data.text}}"
        field: data.answer
        max_answer_bytes: 2KB
        max_retries: 0
        """
    records = [{"text": "big"}, {"text": "small"}]
    openai.malformed_next = 0
    assert await run(tmp_path, pipeline(tmp_path, records, step)) == 0
    assert collect("llm") == [{"text": "small", "answer": "ok"}]
    [big] = await dead(tmp_path)
    assert "answer: 3000 bytes, at most 2000" in json.dumps(big.extensions)

    # An answer that is not even JSON at the HTTP level: retried, then dead-lettered.
    (tmp_path / "mesh.db").unlink()
    MemorySink.outputs.clear()
    openai.malformed_next = 10
    assert await run(tmp_path, pipeline(tmp_path, [{"text": "small"}], step)) == 0
    assert collect("llm") == []
    [broken] = await dead(tmp_path)
    assert broken.data == {"text": "small"}
    assert "an unreadable answer" in json.dumps(broken.extensions)
    assert openai.received["small"] >= 3  # the first run, then two attempts


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize(
    ("finish", "why"),
    [
        ("length", "cut off at the token limit (finish_reason length, max_tokens 5)"),
        ("content_filter", "withheld or cut off by the server (finish_reason content_filter)"),
    ],
)
async def test_an_unfinished_answer_is_dead_lettered_never_written(
    tmp_path: Path, openai: FakeOpenAI, api: str, finish: str, why: str
) -> None:
    """A model stopped by ``max_tokens`` (or a content filter) still answers 200 with the
    text so far: a summary cut mid-word, JSON cut mid-string. It is no answer."""
    MemorySink.outputs.clear()
    openai.finish_reason = finish
    step = f"""
        api_key: {KEY}
        base_url: {openai.base_url}
        api: {api}
        prompt: "{{data.text}}"
        field: data.answer
        max_tokens: 5
        """
    assert await run(tmp_path, pipeline(tmp_path, [{"text": "hi"}], step)) == 0
    assert collect("llm") == []
    [cut] = await dead(tmp_path)
    assert cut.data == {"text": "hi"}
    assert why in json.dumps(cut.extensions)
    assert openai.received["hi"] == 1  # a data error: not asked again


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_a_refusal_is_dead_lettered_by_either_api(
    tmp_path: Path, openai: FakeOpenAI, api: str
) -> None:
    """The Responses API gives a refusal as a ``refusal`` content part: its ``output_text`` is
    empty, and an empty answer was written as if the model had answered ""."""
    MemorySink.outputs.clear()
    openai.refusal = "I can't help with that."
    step = f"""
        api_key: {KEY}
        base_url: {openai.base_url}
        api: {api}
        prompt: "{{data.text}}"
        field: data.answer
        """
    assert await run(tmp_path, pipeline(tmp_path, [{"text": "hi"}], step)) == 0
    assert collect("llm") == []
    [refused] = await dead(tmp_path)
    assert "the model refused: I can't help with that." in json.dumps(refused.extensions)


async def test_a_timeout_or_conflict_answer_is_retried_not_dead_lettered(
    tmp_path: Path, openai: FakeOpenAI
) -> None:
    """408 and 409 are what the SDK itself retries: still failing after ``max_retries``, they
    are retriable (the worker's ``errors.retry``), not the record's fault."""
    MemorySink.outputs.clear()
    openai.status_next = [408, 409]
    step = f"""
        api_key: {KEY}
        base_url: {openai.base_url}
        prompt: "{{data.text}}"
        field: data.answer
        max_retries: 0
        """
    records = [{"text": "a"}, {"text": "b"}]
    path = (
        pipeline(tmp_path, records, step).read_text().replace("max_attempts: 2", "max_attempts: 3")
    )
    (tmp_path / "llm.yaml").write_text(path)
    assert await run(tmp_path, tmp_path / "llm.yaml") == 0
    assert collect("llm") == [
        {"text": "a", "answer": "echo: a"},
        {"text": "b", "answer": "echo: b"},
    ]
    assert await dead(tmp_path) == []


async def test_a_proxy_asking_for_credentials_stops_the_pipeline(
    tmp_path: Path, openai: FakeOpenAI
) -> None:
    """A 407 (or 405, 410) comes from something that is not the API: every record would fail
    the same way, so none is dead-lettered; the error names base_url."""
    MemorySink.outputs.clear()
    openai.status_next = [407] * 5
    step = f"""
        api_key: {KEY}
        base_url: {openai.base_url}
        prompt: "{{data.text}}"
        field: data.answer
        max_retries: 0
        """
    assert await run(tmp_path, pipeline(tmp_path, [{"text": "a"}, {"text": "b"}], step)) == 1
    assert await dead(tmp_path) == []
    assert openai.requests <= 2  # the two asked at once (concurrency), no retries


async def test_an_html_answer_is_retried_like_the_docs_say(
    tmp_path: Path, openai: FakeOpenAI
) -> None:
    MemorySink.outputs.clear()
    openai.html_next = 1  # a proxy's page with 200, once
    step = f"""
        api_key: {KEY}
        base_url: {openai.base_url}
        prompt: "{{data.text}}"
        field: data.answer
        max_retries: 0
        """
    assert await run(tmp_path, pipeline(tmp_path, [{"text": "hi"}], step)) == 0
    assert collect("llm") == [{"text": "hi", "answer": "echo: hi"}]
    assert await dead(tmp_path) == []
    assert openai.received["hi"] == 2


async def test_the_responses_api(tmp_path: Path, openai: FakeOpenAI) -> None:
    MemorySink.outputs.clear()
    step = f"""
        api: responses
        api_key: {KEY}
        base_url: {openai.base_url}
        system: Be brief.
        prompt: "{{data.q}}"
        field: data.a
        """
    assert await run(tmp_path, pipeline(tmp_path, [{"q": "why"}], step)) == 0
    assert collect("llm") == [{"q": "why", "a": "echo: why"}]
    assert openai.bodies[0]["instructions"] == "Be brief."
    assert openai.bodies[0]["input"] == "why"


def test_loading_the_plugins_does_not_import_openai_or_slack_sdk() -> None:
    code = (
        "import sys; from meshconnect.plugins import load_registry; r = load_registry(); "
        "assert ('llm' in r.transforms), r.transforms; "
        "heavy = [m for m in sys.modules "
        "if m.split('.')[0] in ('openai', 'slack_sdk', 'aiohttp')]; "
        "print(heavy); assert not heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_a_rejected_key_stops_the_pipeline_without_hammering_the_server(
    tmp_path: Path, openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    MemorySink.outputs.clear()
    wrong = "sk-wrong-key-never-shown-0000"
    step = f"""
        api_key: {wrong}
        base_url: {openai.base_url}
        prompt: "{{data.n}}"
        field: data.a
        concurrency: 4
        """
    with caplog.at_level("DEBUG"):
        # A config error: the source stops for good (exit 1) under tolerance: all too, and no
        # record is dead-lettered (none could pass; they are read again after the fix).
        assert await run(tmp_path, pipeline(tmp_path, [{"n": i} for i in range(40)], step)) == 1
    assert collect("llm") == []
    assert await dead(tmp_path) == []
    assert "check api_key" in caplog.text
    assert openai.requests <= 4  # the first calls in flight; the rest were not sent
    assert wrong not in caplog.text


async def test_token_usage_is_in_the_workers_metrics(tmp_path: Path, openai: FakeOpenAI) -> None:
    from meshconnect.config.loader import load_pipeline_files
    from meshconnect.mesh.memory import MemoryStore
    from meshconnect.worker import Worker

    step = f"""
        api_key: {KEY}
        base_url: {openai.base_url}
        prompt: "{{data.text}}"
        field: data.label
        cache: cache
        concurrency: 1
        """
    records = [{"text": "one two"}, {"text": "three"}, {"text": "one two"}]  # the 3rd: cached
    path = pipeline(tmp_path, records, step)
    store = MemoryStore("memory://")
    await store.open()
    try:
        worker = Worker(load_pipeline_files([str(path)], test_registry()), store)
        assert await worker.run() == 0
    finally:
        await store.close()
    lines = worker.metrics.render().splitlines()
    labels = '{pipeline="llm",transform="transforms[0] (llm)"}'
    # the fake server counts a prompt's words + 7 prompt tokens, the answer's words
    for line in [
        f"meshconnect_openai_requests_total{labels} 2.0",
        f"meshconnect_openai_cache_hits_total{labels} 1.0",
        f"meshconnect_openai_prompt_tokens_total{labels} {(2 + 7) + (1 + 7)}.0",
        f"meshconnect_openai_completion_tokens_total{labels} {3 + 2}.0",
    ]:
        assert line in lines, "\n".join(x for x in lines if "openai" in x)


async def test_a_tombstone_passes_unchanged_and_unasked(tmp_path: Path, openai: FakeOpenAI) -> None:
    """Issue 20 fault 1's kind for the llm transform: a record whose data is null passed every
    built-in transform but this one, which failed it ("data is NoneType"), so under the default
    tolerance one tombstone stopped the connector."""
    openai.answer = lambda body: "ok"
    MemorySink.outputs.clear()
    tombstone = {"specversion": "1.0", "id": "t", "source": "s", "type": "t", "data": None}
    path = tmp_path / "p.yaml"
    path.write_text(
        f"""
pipelines:
  - name: llm
    source:
      connector: memory
      config: {{records: {json.dumps([{"text": "a"}, tombstone])}}}
    transforms:
      - {{type: llm, api_key: {KEY}, base_url: "{openai.base_url}", prompt: "{{data.text}}",
          field: data.answer, max_retries: 0}}
    sinks:
      - {{connector: memory, config: {{name: llm}}}}
"""
    )

    assert await run(tmp_path, path) == 0
    assert collect("llm") == [{"text": "a", "answer": "ok"}, None]
    assert MemorySink.outputs["llm"][1].null_data
    assert openai.requests == 1


async def test_the_cache_keeps_apart_answers_of_other_sampling_and_other_endpoints(
    tmp_path: Path, openai: FakeOpenAI
) -> None:
    """The cache key holds what decides an answer: a run at another temperature or with
    another max_tokens asks the model again, a base_url written with a trailing '/' is the
    same endpoint (carried-over item: the key once left out base_url and temperature)."""
    records = [{"text": "one"}, {"text": "two"}]

    async def asked(settings: str, name: str) -> int:
        before = openai.requests
        step = f"""
            api_key: {KEY}
            prompt: "{{data.text}}"
            field: data.label
            cache: cache
            {settings}
            """
        path = pipeline(tmp_path, records, step, name=name)
        assert await run(tmp_path, path, db=f"{name}.db") == 0
        return openai.requests - before

    url = openai.base_url.rstrip("/")
    assert await asked(f"base_url: {url}\n            temperature: 0.2", "a") == 2
    assert await asked(f"base_url: {url}/\n            temperature: 0.2", "b") == 0
    assert await asked(f"base_url: {url}\n            temperature: 0.9", "c") == 2
    assert (
        await asked(
            f"base_url: {url}\n            temperature: 0.9\n            max_tokens: 5", "d"
        )
        == 2
    )


def test_a_cache_key_of_the_defaults_is_the_one_earlier_versions_made() -> None:
    """A cache written before the key held the endpoint and sampling stays valid for a
    transform that sets none of them."""
    import hashlib

    from meshconnect.connectors.chatgpt.config import LlmOptions
    from meshconnect.connectors.chatgpt.llm import _cache_key

    options = LlmOptions(prompt="p", field="data.x", api_key="k")
    earlier = json.dumps(["gpt-4o-mini", "chat", "s", "p", None], sort_keys=True)
    assert _cache_key(options, "s", "p") == hashlib.sha256(earlier.encode()).hexdigest()
    other = LlmOptions(prompt="p", field="data.x", api_key="k", base_url="http://h/v1")
    assert _cache_key(other, "s", "p") != _cache_key(options, "s", "p")
