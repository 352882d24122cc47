"""The slack source answers 200 only once an event is durably in the mesh: a worker killed with
SIGKILL right after the 200 loses nothing, and Slack's retries of those events after the restart
are de-duplicated by event_id (the ids are part of the committed source position)."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import socket
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import meshconnect, run_cli, start_worker

SECRET = "integration-signing-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post_event(url: str, event_id: str, retry: int = 0) -> tuple[int, str]:
    body = json.dumps(
        {
            "team_id": "T0MESH",
            "api_app_id": "A0MESH",
            "type": "event_callback",
            "event_id": event_id,
            "event_time": 1700000000,
            "event": {"type": "app_mention", "channel": "C0OPS", "text": f"<@U0BOT> {event_id}"},
        }
    ).encode()
    stamp = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": "v0=" + digest.hexdigest(),
    }
    if retry:
        headers["X-Slack-Retry-Num"] = str(retry)
    deadline = time.monotonic() + 60
    while True:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (ConnectionError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_events_answered_200_survive_sigkill_and_their_retries_are_dropped(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/slack/events"
    pipeline = tmp_path / "slack.yaml"
    pipeline.write_text(
        textwrap.dedent(
            f"""
            pipelines:
              - name: slack
                source:
                  connector: slack
                  config:
                    listen: "127.0.0.1:{port}"
                    signing_secret: {SECRET}
            """
        )
    )
    state = tmp_path / "state"
    log = tmp_path / "worker.log"
    command = meshconnect(state, "run", str(pipeline))
    answered: list[str] = []
    for round_ in range(3):
        worker = start_worker(command, log)
        try:
            for i in range(5):
                event_id = f"Ev{round_}x{i}"
                status, text = post_event(url, event_id)
                assert status == 200, (text, log.read_text())
                answered.append(event_id)
        finally:
            worker.send_signal(signal.SIGKILL)  # right after the last 200
            worker.wait(30)

    worker = start_worker(command, log)
    try:
        for n, event_id in enumerate(answered):  # Slack retries every one of them
            assert post_event(url, event_id, retry=1 + n % 3) == (
                200,
                "duplicate: already stored",
            ), log.read_text()
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, log.read_text()

    tail = run_cli(state, "topics", "tail", "slack", "--from-beginning")
    assert tail.returncode == 0, tail.stderr
    stored = [json.loads(line) for line in tail.stdout.splitlines() if line.strip()]
    assert [event["id"] for event in stored] == answered
    assert {event["type"] for event in stored} == {"com.slack.app_mention"}
    assert SECRET not in log.read_text()


def test_slack_sink_exactly_once_posts_nothing_twice_across_sigkills(tmp_path: Path) -> None:
    """The sink killed mid-stream, before its first commit and after later ones: with
    ``exactly_once`` every record is posted once (the channel's history is read back for what
    the state does not cover)."""
    import asyncio
    import sys
    import threading
    from collections import Counter

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from fixtures.slackgpt.slack_api import TOKEN, FakeSlack

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    slack = asyncio.run_coroutine_threadsafe(FakeSlack(post_pause=0.02).start(), loop).result(30)
    total = 120
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"n": i}) + "\n" for i in range(total)))
    pipeline = tmp_path / "slack.yaml"
    pipeline.write_text(
        textwrap.dedent(
            f"""
            pipelines:
              - name: notify
                source:
                  connector: file
                  config: {{path: in.jsonl, format: json, follow: false}}
                topic: notes
                sinks:
                  - name: slack
                    connector: slack
                    commit_interval: 1
                    config:
                      token: {TOKEN}
                      base_url: {slack.base_url}
                      channel: C0ALERTS
                      text: "n={{data.n}}"
                      exactly_once: true
            """
        )
    )
    state = tmp_path / "state"
    log = tmp_path / "worker.log"
    command = meshconnect(state, "run", str(pipeline))
    try:
        for stop_at in (5, 50):  # before the first commit, then after some
            worker = start_worker(command, log)
            try:
                deadline = time.monotonic() + 60
                while len(slack.messages) < stop_at and time.monotonic() < deadline:
                    if worker.poll() is not None:
                        break
                    time.sleep(0.005)
            finally:
                worker.send_signal(signal.SIGKILL)
                worker.wait(30)
            assert len(slack.messages) < total, "the worker finished before the kill"
        worker = start_worker(command, log)
        assert worker.wait(120) == 0, log.read_text()
        posts = Counter(m.text for m in slack.messages)
        assert set(posts) == {f"n={i}" for i in range(total)}
        assert [text for text, count in posts.items() if count > 1] == []
        assert slack.history_calls >= 2  # the kill before any commit was read back too
    finally:
        asyncio.run_coroutine_threadsafe(slack.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
