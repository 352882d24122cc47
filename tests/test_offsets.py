"""The offsets module (what `meshconnect offsets` and the admin API call), on an open store."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from meshconnect.config.loader import load_pipeline_files
from meshconnect.errors import ConfigError
from meshconnect.mesh.memory import MemoryStore
from meshconnect.offsets import apply_reset, offsets_report, reset_plan
from meshconnect.testing import MemorySink, run_pipelines, test_registry


async def test_report_plan_and_reset_without_the_command_line(tmp_path: Path) -> None:
    MemorySink.outputs.clear()
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            """
            pipelines:
              - name: p
                source: {connector: memory, config: {records: [{n: 1}, {n: 2}, {n: 3}]}}
                topic: t
                sinks:
                  - {name: out, connector: memory, config: {name: out}}
            """
        )
    )
    store_url = "memory://offsets-module"
    assert await run_pipelines([path], store_url) == 0
    config = load_pipeline_files([str(path)], test_registry())
    store = MemoryStore(store_url)
    await store.open()
    try:
        report = await offsets_report(store, config)
        assert report["sources"] == [
            {
                "id": "p/memory",
                "positions": {"memory": {"next": 3}},
                "empty": "starts from the beginning",
            }
        ]
        assert report["sinks"] == [
            {
                "group": "p/out",
                "topics": [{"topic": "t", "offset": 3, "end": 3, "lag": 0}],
                "state": {"count": 3},
            }
        ]
        plan = await reset_plan(store, config.pipelines[0], "out", "1")
        assert (plan.kind, plan.id, plan.new) == ("sink", "p/out", {"t": 1})
        await apply_reset(store, plan)
        assert (await store.group("p/out")).offsets == {"t": 1}
        source = await reset_plan(store, config.pipelines[0], None, "beginning")
        await apply_reset(store, source)
        assert await store.positions("p/memory") == {}
        with pytest.raises(ConfigError, match="no sink 'nope' in p \\(out\\)"):
            await reset_plan(store, config.pipelines[0], "nope", "end")
        # Past the end: the records stored up to it later would be skipped without a word.
        with pytest.raises(ConfigError, match=r"--to: offset 4 is past the end of t \(3\)"):
            await reset_plan(store, config.pipelines[0], "out", "4")
        assert (await reset_plan(store, config.pipelines[0], "out", "3")).new == {"t": 3}
        with pytest.raises(ConfigError, match="--to: not JSON"):
            await reset_plan(store, config.pipelines[0], None, "{oops")
    finally:
        await store.close()
        MemoryStore.discard("offsets-module")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("-1", "--to: an offset is 0 or more: '-1'"),
        (" 2", "--to: beginning, end or an offset: ' 2'"),
        ("+2", "--to: beginning, end or an offset: '+2'"),
        ("1_0", "--to: beginning, end or an offset: '1_0'"),
        ("\u0662", "--to: beginning, end or an offset: '\u0662'"),  # ARABIC-INDIC DIGIT TWO
        ("2.0", "--to: beginning, end or an offset: '2.0'"),
        ("two", "--to: beginning, end or an offset: 'two'"),
    ],
)
async def test_a_sink_offset_is_ascii_digits(tmp_path: Path, target: str, message: str) -> None:
    """int() took " 2", "+2", "1_0" (10) and other scripts' digits as offsets."""
    MemorySink.outputs.clear()
    path = tmp_path / "p.yaml"
    path.write_text(
        "pipelines:\n  - name: p\n    source: {connector: memory, config: {records: [{n: 1}, "
        "{n: 2}, {n: 3}]}}\n    topic: t\n    sinks:\n      - {name: out, connector: memory, "
        "config: {name: out}}\n"
    )
    url = f"memory://offsets-digits-{tmp_path.name}"
    assert await run_pipelines([path], url) == 0
    config = load_pipeline_files([str(path)], test_registry())
    store = MemoryStore(url)
    await store.open()
    try:
        with pytest.raises(ConfigError) as info:
            await reset_plan(store, config.pipelines[0], "out", target)
        assert str(info.value) == message
        assert (await reset_plan(store, config.pipelines[0], "out", "2")).new == {"t": 2}
    finally:
        await store.close()
        MemoryStore.discard(f"offsets-digits-{tmp_path.name}")


async def test_end_for_a_source_that_cannot_tell_names_both_ways_to_give_a_position(
    tmp_path: Path,
) -> None:
    # The admin API's PATCH …/offsets {"source": "end"} answered "give a JSON position per
    # partition with --to": an option of the command line, not of the API asked.
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            """
            pipelines:
              - name: hooks
                source: {connector: webhook, config: {listen: "127.0.0.1:0", path: /in}}
                sinks: [{connector: file, config: {path: out.jsonl}}]
            """
        )
    )
    (pipeline,) = load_pipeline_files([str(path)], test_registry()).pipelines
    store = MemoryStore("memory://")
    await store.open()
    with pytest.raises(ConfigError) as err:
        await reset_plan(store, pipeline, None, "end")
    message = str(err.value)
    assert "the 'webhook' source cannot tell where its input ends" in message
    assert "offsets reset --to" in message and '{"source": {"PARTITION": {...}}}' in message
