"""Registers the ``webhook`` source and the ``http`` sink (aiohttp: the ``http`` extra)."""

from __future__ import annotations

from meshconnect import ConnectorSpec, hookimpl

__all__ = ["meshconnect_connectors"]


@hookimpl
def meshconnect_connectors() -> list[ConnectorSpec]:
    """The ``webhook`` source and ``http`` sink; their classes (and aiohttp) are imported only
    when a pipeline uses them."""
    return [
        ConnectorSpec(
            name="webhook",
            kind="source",
            config_model="meshconnect.connectors.webhook.config:WebhookConfig",
            factory="meshconnect.connectors.webhook.source:WebhookSource",
            description=(
                "Receive CloudEvents (binary, structured, batch) or plain JSON/form/text bodies "
                "over HTTP; 2xx only after the durable append."
            ),
            requires=["aiohttp"],
            extra="http",
        ),
        ConnectorSpec(
            name="http",
            kind="sink",
            config_model="meshconnect.connectors.webhook.config:HttpSinkConfig",
            factory="meshconnect.connectors.webhook.sink:HttpSink",
            description=(
                "POST or PUT each record as a CloudEvent (binary or structured) or its data, "
                "with retries, signing, OAuth2 and ordering per partition key."
            ),
            requires=["aiohttp"],
            extra="http",
        ),
    ]
