"""The ``chatgpt`` connector and the ``llm`` transform: prompts received over HTTP become
CloudEvents (``mode: chat`` and ``mode: parse``), and records are enriched by a model, through
the ``openai`` SDK's async client against any OpenAI-compatible server."""
