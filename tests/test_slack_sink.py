"""The slack sink with the real slack-sdk AsyncWebClient against a local Web API
(tests/fixtures/slackgpt/slack_api.py): order under rate limits, per-record results with
Slack's error codes in the dead-letter topic, Block Kit checked before sending, threads and
updates per key, and a bad token that stops the connector without showing it."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.slackgpt.slack_api import TOKEN, FakeSlack

from meshconnect import BatchError, ConnectorContext, Record
from meshconnect.connectors.slack.config import SlackSinkConfig
from meshconnect.connectors.slack.sink import SlackSink
from meshconnect.mesh.sqlite import SqliteStore
from meshconnect.testing import SinkConformance, run_pipelines


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    server = await FakeSlack().start()
    yield server
    await server.stop()


def pipeline(tmp_path: Path, records: list[Any], sink: str, token: str = TOKEN) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            """
            pipelines:
              - name: alerts
                source: {connector: memory, config: {records: RECORDS, batch_size: 100}}
                topic: alerts
                sinks:
                  - name: slack
                    connector: slack
                    errors: {tolerance: all, dead_letter_topic: dlq.slack,
                             retry: {max_attempts: 5, initial_backoff: 10ms, max_backoff: 50ms}}
                    config:
                      token: TOKEN
            """
        )
        .replace("RECORDS", json.dumps(records))
        .replace("TOKEN", json.dumps(token))
        + textwrap.indent(textwrap.dedent(sink).strip(), " " * 10)
        + "\n"
    )
    return path


async def run(tmp_path: Path, path: Path) -> int:
    return await run_pipelines([path], f"sqlite:///{tmp_path}/mesh.db", restart_backoff=0.01)


async def dead_letters(tmp_path: Path) -> list[Any]:
    store = SqliteStore(f"sqlite:///{tmp_path}/mesh.db")
    await store.open()
    try:
        if "dlq.slack" not in {t.name for t in await store.topics()}:
            return []
        return await store.read("dlq.slack", 0, 10_000)
    finally:
        await store.close()


async def test_1000_messages_under_rate_limits_arrive_all_in_order_none_twice(
    tmp_path: Path, slack: FakeSlack
) -> None:
    slack.rate_limit_every = 50
    slack.retry_after = "1"  # 20 pauses of a second: ~20 s of this test
    records = [{"n": i} for i in range(1000)]
    path = pipeline(
        tmp_path,
        records,
        f"""
        base_url: {slack.base_url}
        channel: C0ALERTS
        text: "order {{data.n}}"
        """,
    )
    assert await run(tmp_path, path) == 0
    assert slack.texts() == [f"order {i}" for i in range(1000)]
    assert slack.rate_limited == 20  # every 50th of 1,020 calls
    for i, (when, _, status) in enumerate(slack.log):
        if status == 429:  # nothing was sent during the Retry-After second
            assert slack.log[i + 1][0] - when >= 1.0
    assert await dead_letters(tmp_path) == []


async def test_the_sink_waits_retry_after_before_sending_again(
    tmp_path: Path, slack: FakeSlack
) -> None:
    slack.rate_limit_every = 2
    slack.retry_after = "1"
    path = pipeline(
        tmp_path,
        [{"n": i} for i in range(3)],
        f"""
        base_url: {slack.base_url}
        channel: C0ALERTS
        text: "n={{data.n}}"
        """,
    )
    assert await run(tmp_path, path) == 0
    assert slack.texts() == ["n=0", "n=1", "n=2"]
    limited = [i for i, (_, _, status) in enumerate(slack.log) if status == 429]
    assert limited
    for i in limited:  # the next call came after the Retry-After second
        assert slack.log[i + 1][0] - slack.log[i][0] >= 1.0


async def test_rejected_records_go_to_the_dead_letter_topic_with_slacks_code(
    tmp_path: Path, slack: FakeSlack
) -> None:
    records = [
        {"n": 0, "channel": "C0ALERTS"},
        {"n": 1, "channel": "C0NOWHERE"},
        {"n": 2, "channel": "C0OPS", "big": "x" * 40_001},
        {"n": 3, "channel": "C0OPS"},
    ]
    path = pipeline(
        tmp_path,
        records,
        f"""
        base_url: {slack.base_url}
        channel: "{{data.channel}}"
        text: "{{data.n}}{{data.big}}"
        """,
    )
    assert await run(tmp_path, path) == 0
    assert slack.texts() == ["0", "3"]
    dead = await dead_letters(tmp_path)
    assert [r.data["n"] for r in dead] == [1, 2]
    messages = [json.dumps(r.extensions) for r in dead]
    assert "channel_not_found" in messages[0]
    assert "msg_too_long" in messages[1]


async def test_block_kit_is_checked_before_sending(tmp_path: Path, slack: FakeSlack) -> None:
    records = [
        {"n": 0, "title": "disk full", "detail": "db-1: 99% used"},
        {"n": 1, "title": "t" * 151, "detail": "a header longer than 150 characters"},
        {"n": 2, "title": 'quote " and {brace}', "detail": "values need no escaping"},
    ]
    path = pipeline(
        tmp_path,
        records,
        f"""
        base_url: {slack.base_url}
        channel: C0OPS
        text: "{{data.title}}"
        blocks:
          - type: header
            text: {{type: plain_text, text: "{{data.title}}"}}
          - type: section
            text: {{type: mrkdwn, text: "*{{data.detail}}*"}}
        """,
    )
    calls_before = slack.calls
    assert await run(tmp_path, path) == 0
    assert [m.blocks[0]["text"]["text"] for m in slack.messages] == [
        "disk full",
        'quote " and {brace}',
    ]
    assert slack.messages[1].blocks[1]["text"]["text"] == "*values need no escaping*"
    assert slack.calls - calls_before == 2  # the invalid one was never sent
    dead = await dead_letters(tmp_path)
    assert [r.data["n"] for r in dead] == [1]
    assert "invalid_blocks: blocks[0].text.text: 151 characters, at most 150" in json.dumps(
        dead[0].extensions
    )


async def test_a_blocks_template_must_render_json(tmp_path: Path, slack: FakeSlack) -> None:
    path = pipeline(
        tmp_path,
        [{"n": 0, "blocks": [{"type": "divider", "x": 1.25}]}, {"n": 1, "blocks": "not json"}],
        f"""
        base_url: {slack.base_url}
        channel: C0OPS
        text: fallback
        blocks: "{{data.blocks}}"
        """,
    )
    assert await run(tmp_path, path) == 0
    assert [m.blocks for m in slack.messages] == [[{"type": "divider", "x": 1.25}]]
    dead = await dead_letters(tmp_path)
    assert [r.data["n"] for r in dead] == [1]
    assert "invalid_blocks: the blocks template did not render JSON" in json.dumps(
        dead[0].extensions
    )


async def test_a_truncated_blocks_rendering_is_explained(slack: FakeSlack) -> None:
    sink = _sink(slack, blocks="{data.x}", exactly_once=False)
    await sink.open(None)
    with pytest.raises(BatchError) as failed:
        await sink.write([Record({"x": '[{"type": "section"'}, topic="t", offset=0)])
    message = str(failed.value.failures[0])
    assert "ends early" in message and "truncated" not in message, message


async def test_slack_escape_keeps_mentions_and_links_as_text(slack: FakeSlack) -> None:
    sink = _sink(slack, text="alert: {slack_escape(data.msg)} <!here>", exactly_once=False)
    await sink.open(None)
    await sink.write([Record({"msg": "<!channel> & <@U1> <http://x|y>"}, topic="t", offset=0)])
    assert slack.texts() == ["alert: &lt;!channel&gt; &amp; &lt;@U1&gt; &lt;http://x|y&gt; <!here>"]


async def test_chat_post_messages_own_rate_limited_error_is_waited_out(
    tmp_path: Path, slack: FakeSlack
) -> None:
    """``rate_limited`` (with an underscore: "Application has posted too many messages") is
    a rate limit like a 429's ``ratelimited``, not a fault of the record."""
    slack.posting_limited_next = 3
    path = pipeline(
        tmp_path,
        [{"n": i} for i in range(4)],
        f"""
        base_url: {slack.base_url}
        channel: C0OPS
        text: "n={{data.n}}"
        """,
    )
    assert await run(tmp_path, path) == 0
    assert await dead_letters(tmp_path) == []
    assert slack.texts() == [f"n={i}" for i in range(4)]
    assert slack.rate_limited == 3


async def test_a_server_error_is_retried_in_order(tmp_path: Path, slack: FakeSlack) -> None:
    slack.fail_next = 2
    path = pipeline(
        tmp_path,
        [{"n": i} for i in range(5)],
        f"""
        base_url: {slack.base_url}
        channel: C0OPS
        text: "{{data.n}}"
        """,
    )
    assert await run(tmp_path, path) == 0
    assert slack.texts() == ["0", "1", "2", "3", "4"]


async def test_per_key_threads_and_updates(tmp_path: Path, slack: FakeSlack) -> None:
    records = [
        {"order": "A", "status": "new"},
        {"order": "B", "status": "new"},
        {"order": "A", "status": "paid"},
        {"order": "A", "status": "shipped"},
    ]
    path = pipeline(
        tmp_path,
        records,
        f"""
        base_url: {slack.base_url}
        channel: C0OPS
        text: "{{data.order}}: {{data.status}}"
        thread_key: "{{data.order}}"
        """,
    )
    assert await run(tmp_path, path) == 0
    parent_a = slack.messages[0].ts
    assert [(m.text, m.thread_ts) for m in slack.messages] == [
        ("A: new", None),
        ("B: new", None),
        ("A: paid", parent_a),
        ("A: shipped", parent_a),
    ]

    slack.messages.clear()
    (tmp_path / "mesh.db").unlink()
    path = pipeline(
        tmp_path,
        records,
        f"""
        base_url: {slack.base_url}
        channel: C0OPS
        text: "{{data.order}}: {{data.status}}"
        update_key: "{{data.order}}"
        """,
    )
    assert await run(tmp_path, path) == 0
    assert [(m.text, m.updates) for m in slack.messages] == [("A: shipped", 2), ("B: new", 0)]

    # Someone deleted A's message: the next update of A posts a new one.
    del slack.messages[0]
    more = [*records, {"order": "A", "status": "delivered"}]
    assert (
        await run(
            tmp_path,
            pipeline(
                tmp_path,
                more,
                f"""
        base_url: {slack.base_url}
        channel: C0OPS
        text: "{{data.order}}: {{data.status}}"
        update_key: "{{data.order}}"
        """,
            ),
        )
        == 0
    )
    assert [(m.text, m.updates) for m in slack.messages] == [("B: new", 0), ("A: delivered", 0)]


async def test_a_bad_token_stops_the_connector_without_showing_it(
    tmp_path: Path, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "xoxb-wrong-token-do-not-print"
    path = pipeline(
        tmp_path,
        [{"n": 0}, {"n": 1}],
        f"""
        base_url: {slack.base_url}
        channel: C0OPS
        text: "{{data.n}}"
        """,
        token=wrong,
    )
    with caplog.at_level(logging.DEBUG):
        assert await run(tmp_path, path) == 1
    assert slack.messages == []
    assert slack.calls == 1  # not retried: a config error
    text = caplog.text
    assert "slack chat.postMessage: invalid_auth (check config.token" in text
    assert wrong not in text
    assert await dead_letters(tmp_path) == []


@pytest.mark.parametrize("where", ["{root}", "{root}v1/", "{root}api/chat.postMessage/"])
async def test_a_base_url_that_is_not_slacks_stops_the_connector(
    tmp_path: Path, slack: FakeSlack, where: str
) -> None:
    """An HTTP 404 from a wrong ``base_url`` is no fault of the records: dead-lettering every
    one of them hides the mistake. The connector stops, naming the field."""
    root = slack.base_url.removesuffix("api/")
    path = pipeline(
        tmp_path,
        [{"n": 0}, {"n": 1}],
        f"""
        base_url: {where.format(root=root)}
        channel: C0OPS
        text: "{{data.n}}"
        """,
    )
    assert await run(tmp_path, path) == 1
    assert await dead_letters(tmp_path) == []
    assert slack.messages == []


async def test_a_proxys_200_page_is_retried_not_dead_lettered(
    tmp_path: Path, slack: FakeSlack
) -> None:
    slack.html_next = 2  # a captive portal's page, twice
    path = pipeline(
        tmp_path,
        [{"n": 0}, {"n": 1}],
        f"""
        base_url: {slack.base_url}
        channel: C0OPS
        text: "{{data.n}}"
        """,
    )
    assert await run(tmp_path, path) == 0
    assert await dead_letters(tmp_path) == []
    assert slack.texts() == ["0", "1"]


def test_slacks_error_codes_map_onto_the_taxonomy() -> None:
    from meshconnect import ConfigError, DataError, RetriableError
    from meshconnect.connectors.slack.sink import SlackCallError, slack_error_kind

    def kind(code: str, status: int | None = 200) -> Any:
        return slack_error_kind(SlackCallError("chat.postMessage", code, status))

    for code in ("invalid_auth", "token_revoked", "missing_scope", "unknown_method"):
        assert kind(code) is ConfigError, code
    assert kind("http_404", 404) is ConfigError
    assert kind("http_407", 407) is ConfigError
    for code in ("channel_not_found", "not_in_channel", "msg_too_long", "invalid_blocks"):
        assert kind(code) is DataError, code
    assert kind("http_413", 413) is DataError
    for code in (
        "ratelimited",
        "rate_limited",
        "fatal_error",
        "team_added_to_org",
        "unexpected_response",
    ):
        assert kind(code) is RetriableError, code
    assert kind("http_503", 503) is RetriableError
    assert kind("http_408", 408) is RetriableError


class TestSlackSinkConformance(SinkConformance):
    """The sink contract with ``exactly_once``: after a crash before the commit, what was
    posted is read back from the channel's history and not posted again."""

    server: FakeSlack

    @pytest.fixture(autouse=True)
    async def _server(self) -> AsyncIterator[None]:
        type(self).server = await FakeSlack(history_page=7).start()
        yield
        await self.server.stop()

    def make_sink(self, tmp_path: Path) -> SlackSink:
        config = SlackSinkConfig(
            token=TOKEN,
            channel="C0ALERTS",
            text="{data.n}",
            exactly_once=True,
            base_url=self.server.base_url,
            outage_wait=0.5,  # then an outage goes back to the worker (the retry test)
        )
        return SlackSink(config, ConnectorContext("test", "slack", logging.getLogger("test")))

    def durable(self, tmp_path: Path) -> list[Any]:
        return [int(text) for text in self.server.texts() if text is not None]

    def poison_record(self, i: int) -> Record:
        return Record({"n": "x" * 40_001}, id="poison", topic="conformance", offset=10_000)

    @contextlib.contextmanager
    def _down(self) -> Iterator[None]:
        self.server.down_until = math.inf  # every call answered 503 (an HTML page)
        try:
            yield
        finally:
            self.server.down_until = 0.0

    def unavailable(self, tmp_path: Path) -> contextlib.AbstractContextManager[None]:
        """An outage: the Web API answers every call 503 until it ends."""
        return self._down()


async def test_exactly_once_reads_back_every_page_of_history(tmp_path: Path) -> None:
    server = await FakeSlack(history_page=3).start()
    try:
        suite = TestSlackSinkConformance()
        type(suite).server = server
        await suite.test_redelivery_after_a_crash_before_the_commit(tmp_path, True)
        assert server.history_calls >= 10  # 30 messages after the commit, 3 per page
    finally:
        await server.stop()


async def test_threads_continue_after_a_restart_and_thread_ts_from_a_field(
    tmp_path: Path, slack: FakeSlack
) -> None:
    sink = f"""
        base_url: {slack.base_url}
        channel: C0OPS
        text: "{{data.order}}: {{data.status}}"
        thread_key: "{{data.order}}"
        """
    first = [{"order": "A", "status": "new"}, {"order": "B", "status": "new"}]
    assert await run(tmp_path, pipeline(tmp_path, first, sink)) == 0
    # The next run resumes after the committed records; the key's thread is in the sink state.
    assert (
        await run(tmp_path, pipeline(tmp_path, [*first, {"order": "A", "status": "paid"}], sink))
        == 0
    )
    parent_a = slack.messages[0].ts
    assert [(m.text, m.thread_ts) for m in slack.messages] == [
        ("A: new", None),
        ("B: new", None),
        ("A: paid", parent_a),
    ]

    (tmp_path / "mesh.db").unlink()
    slack.messages.clear()
    reply = f"""
        base_url: {slack.base_url}
        channel: C0OPS
        text: "{{data.text}}"
        thread_ts: "{{data.parent}}"
        """
    assert await run(tmp_path, pipeline(tmp_path, [{"text": "root", "parent": None}], reply)) == 0
    root = slack.messages[0].ts
    (tmp_path / "mesh.db").unlink()
    records = [{"text": "in thread", "parent": root}, {"text": "nowhere", "parent": "1.000009"}]
    assert await run(tmp_path, pipeline(tmp_path, records, reply)) == 0
    assert [(m.text, m.thread_ts) for m in slack.messages] == [("root", None), ("in thread", root)]
    [dead] = await dead_letters(tmp_path)
    assert "thread_not_found" in json.dumps(dead.extensions)


def _sink(server: FakeSlack, **config: Any) -> SlackSink:
    config.setdefault("exactly_once", True)
    config.setdefault("text", "n={data.n}")
    settings = SlackSinkConfig(token=TOKEN, channel="C0ALERTS", base_url=server.base_url, **config)
    return SlackSink(settings, ConnectorContext("test", "slack", logging.getLogger("test")))


async def test_exactly_once_covers_records_sent_before_the_first_commit(
    slack: FakeSlack,
) -> None:
    assert SlackSink.batch_size_hint == 20
    records = [Record({"n": i}, topic="alerts", offset=i) for i in range(10)]
    first = _sink(slack)
    await first.open(None)
    await first.write(records[:4])  # then a crash: nothing was committed
    second = _sink(slack)
    await second.open(None)
    await second.write(records)
    assert slack.texts() == [f"n={i}" for i in range(10)]
    assert slack.history_calls == 2  # each open read the channel back once


@pytest.mark.parametrize("mode", ["update_key", "thread_key"])
async def test_exactly_once_keeps_a_keys_message_found_in_the_history(
    slack: FakeSlack, mode: str
) -> None:
    """A key's first message posted after the last commit, then a crash: the restart finds it
    in the history and does not post it again, and must also take its ``ts`` as the key's,
    or the key's next record starts a second message (or thread) for the key."""
    records = [
        Record({"n": 0, "k": "a"}, topic="alerts", offset=0),
        Record({"n": 1, "k": "b"}, topic="alerts", offset=1),
        Record({"n": 2, "k": "b"}, topic="alerts", offset=2),
    ]
    first = _sink(slack, **{mode: "{data.k}"})
    await first.open(None)
    await first.write(records[:1])
    state = await first.flush()  # committed: record 0, and the channel's newest ts
    await first.write(records[1:2])  # then a crash before the commit
    second = _sink(slack, **{mode: "{data.k}"})
    await second.open(state)
    await second.write(records[1:])
    assert [m.text for m in slack.messages] == (
        ["n=0", "n=2"] if mode == "update_key" else ["n=0", "n=1", "n=2"]
    )
    if mode == "update_key":
        assert slack.messages[1].updates == 1
    else:
        assert slack.messages[2].thread_ts == slack.messages[1].ts
    assert (await second.flush() or {})["keys"]["b"] == slack.messages[1].ts


@pytest.mark.parametrize("committed", [True, False])
async def test_exactly_once_finds_thread_replies_posted_before_a_crash(
    slack: FakeSlack, committed: bool
) -> None:
    """Slack's ``conversations.history`` holds a channel's top-level messages only, never the
    replies in threads: replies posted after the last commit (or before any) are found in
    their thread (``conversations.replies``), not posted twice."""
    records = [Record({"n": i, "k": "a"}, topic="alerts", offset=i) for i in range(5)]
    first = _sink(slack, thread_key="{data.k}")
    await first.open(None)
    await first.write(records[:1])
    state = await first.flush() if committed else None
    await first.write(records[1:3])  # two replies, then a crash before the commit
    second = _sink(slack, thread_key="{data.k}")
    await second.open(state)
    await second.write(records[1:] if committed else records)  # redelivered after the commit
    assert slack.texts() == [f"n={i}" for i in range(5)]
    parent = slack.messages[0].ts
    assert [m.thread_ts for m in slack.messages] == [None] + [parent] * 4
    # one look at the thread after the restart; none while the first sink ran
    assert [m for _, m, _ in slack.log].count("conversations.replies") == 1


async def test_exactly_once_looks_in_the_thread_after_a_reply_timed_out(
    slack: FakeSlack,
) -> None:
    parent = Record({"n": 0, "parent": None}, topic="alerts", offset=0)
    sink = _sink(slack, thread_ts="{data.parent}", timeout=1)
    await sink.open(None)
    await sink.write([parent])
    reply = Record({"n": 1, "parent": slack.messages[0].ts}, topic="alerts", offset=1)
    slack.slow_next, slack.slow_seconds = 1, 1.5  # posted, answered after the timeout
    await sink.write([reply])
    assert slack.texts() == ["n=0", "n=1"]


async def test_exactly_once_checks_the_history_after_a_timeout(
    tmp_path: Path, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    slack.slow_next, slack.slow_seconds = 1, 1.5  # posted, but answered after the timeout
    path = pipeline(
        tmp_path,
        [{"n": i} for i in range(3)],
        f"""
        base_url: {slack.base_url}
        channel: C0ALERTS
        text: "n={{data.n}}"
        timeout: 1s
        exactly_once: true
        """,
    )
    with caplog.at_level(logging.WARNING):
        assert await run(tmp_path, path) == 0
    assert slack.texts() == ["n=0", "n=1", "n=2"]
    assert "slack chat.postMessage: timeout (no answer within 1s" in caplog.text
    assert await dead_letters(tmp_path) == []


async def test_a_failed_look_at_the_history_is_made_again(slack: FakeSlack) -> None:
    slack.slow_next, slack.slow_seconds = 1, 1.5  # posted, but answered after the timeout
    slack.history_fail_next = 2  # the looks before the first post and after the timeout
    sink = _sink(slack, timeout=1.0)
    await sink.open(None)
    await sink.write([Record({"n": i}, topic="alerts", offset=i) for i in range(2)])
    assert slack.texts() == ["n=0", "n=1"]


async def test_a_short_outage_is_ridden_out_and_nothing_is_dead_lettered(
    tmp_path: Path, slack: FakeSlack
) -> None:
    import time

    slack.down_until = time.monotonic() + 1.0  # 503s for a second from the start
    path = pipeline(
        tmp_path,
        [{"n": i} for i in range(20)],
        f"""
        base_url: {slack.base_url}
        channel: C0ALERTS
        text: "n={{data.n}}"
        """,
    )
    assert await run(tmp_path, path) == 0
    assert slack.texts() == [f"n={i}" for i in range(20)]
    assert await dead_letters(tmp_path) == []
    assert set(slack.tried) == {f"n={i}" for i in range(20)}


async def test_in_a_long_outage_only_records_tried_max_attempts_times_are_dead_lettered(
    tmp_path: Path, slack: FakeSlack
) -> None:
    import time

    slack.down_until = time.monotonic() + 3600
    path = pipeline(
        tmp_path,
        [{"n": i} for i in range(3)],
        f"""
        base_url: {slack.base_url}
        channel: C0ALERTS
        text: "n={{data.n}}"
        outage_wait: 0.3s
        """,
    )
    assert await run(tmp_path, path) == 0
    dead = await dead_letters(tmp_path)
    assert [d.data for d in dead] == [{"n": i} for i in range(3)]
    assert all(slack.tried[f"n={i}"] >= 5 for i in range(3)), slack.tried  # max_attempts 5


async def test_a_rate_limit_is_waited_out_once_per_record(slack: FakeSlack) -> None:
    """429s past max_rate_limit_wait: the head waited it out once; the records behind it were
    tried (not charged unsent), and the worker's retries wait no more (a stop is not held up
    by max_attempts * max_rate_limit_wait)."""
    slack.always_limited, slack.retry_after = True, "0.3"
    sink = _sink(slack, max_rate_limit_wait=0.7, exactly_once=False)
    await sink.open(None)
    records = [Record({"n": i}, topic="alerts", offset=i) for i in range(3)]
    with pytest.raises(BatchError) as first:
        await sink.write(records)
    assert sorted(first.value.failures) == [0, 1, 2]
    assert slack.tried == {"n=0": 3, "n=1": 1, "n=2": 1}  # two waits, then once each
    with pytest.raises(BatchError):
        await sink.write(records)  # the worker's retry: one attempt each, no waiting
    assert slack.tried == {"n=0": 4, "n=1": 2, "n=2": 2}
