"""Registers the ``slack`` sink and source (through the same entry-point door as any plugin).

slack-sdk and aiohttp are imported only when a pipeline uses them."""

from __future__ import annotations

from meshconnect import ConnectorSpec, hookimpl

__all__ = ["meshconnect_connectors"]


@hookimpl
def meshconnect_connectors() -> list[ConnectorSpec]:
    """The ``slack`` sink (Web API) and source (Events API receiver)."""
    return [
        ConnectorSpec(
            name="slack",
            kind="sink",
            config_model="meshconnect.connectors.slack.config:SlackSinkConfig",
            factory="meshconnect.connectors.slack.sink:SlackSink",
            description=(
                "Posts one Slack message per record (chat.postMessage), text and Block Kit "
                "blocks from templates, in threads or updating a key's message (chat.update); "
                "waits out rate limits in order; rejected records go to the dead-letter topic "
                "with Slack's error code."
            ),
            requires=("slack_sdk", "aiohttp"),
            extra="slack",
        ),
        ConnectorSpec(
            name="slack",
            kind="source",
            config_model="meshconnect.connectors.slack.config:SlackSourceConfig",
            factory="meshconnect.connectors.slack.source:SlackEventsSource",
            description=(
                "Receives the Slack Events API on the shared HTTP listener: signed requests "
                "only, the url_verification challenge answered, retries de-duplicated by "
                "event_id, each event a CloudEvent com.slack.<type>, answered 200 once stored."
            ),
            requires=("aiohttp",),
            extra="http",
        ),
    ]
