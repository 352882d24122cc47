"""Registers the ``chatgpt`` source and the ``llm`` transform (through the same entry-point door
as any plugin). The openai SDK is imported only when a pipeline uses one of them: the
transform's factory builds an object whose client is made on its first call."""

from __future__ import annotations

from typing import Any

from meshconnect import ConnectorSpec, TransformSpec, hookimpl

from .config import LlmOptions

__all__ = ["meshconnect_connectors", "meshconnect_transforms"]


@hookimpl
def meshconnect_connectors() -> list[ConnectorSpec]:
    """The ``chatgpt`` source."""
    return [
        ConnectorSpec(
            name="chatgpt",
            kind="source",
            config_model="meshconnect.connectors.chatgpt.config:ChatGPTSourceConfig",
            factory="meshconnect.connectors.chatgpt.source:ChatGPTSource",
            description=(
                "Prompts POSTed to an HTTP endpoint on the shared listener become CloudEvents: "
                "mode chat stores the prompt with the model's answer and token usage, mode "
                "parse stores the event the model extracts by structured output, validated "
                "(invalid output is answered 422 and nothing is stored)."
            ),
            requires=("openai", "aiohttp"),
            extra="openai",
        )
    ]


def _make_llm(options: LlmOptions, compiler: Any) -> Any:
    from .llm import make_llm  # light: openai itself is imported on the first call

    return make_llm(options, compiler)


@hookimpl
def meshconnect_transforms() -> list[TransformSpec]:
    """The ``llm`` transform."""
    return [
        TransformSpec(
            name="llm",
            options_model=LlmOptions,
            factory=_make_llm,
            description=(
                "Asks a language model (any OpenAI-compatible server) about each record: "
                "renders a prompt template, writes the answer (text, or JSON validated "
                "against a schema) into a data field; async with a concurrency limit, "
                "retries on 429/5xx after Retry-After, an optional on-disk cache."
            ),
            examples=[
                "- type: llm\n"
                "  model: gpt-4o-mini\n"
                "  api_key: ${env:OPENAI_API_KEY}\n"
                "  system: You label support tickets.\n"
                '  prompt: "One word for the mood of: {data.text}"\n'
                "  field: data.mood\n"
                "  concurrency: 8\n"
                "  cache: .llm-cache",
            ],
        )
    ]
