"""The ``llm`` transform: asks a model about each record and writes the answer into a field.

An ``async`` transform: the chain awaits it for up to ``concurrency`` records of a batch at
once and keeps the batch's order (docs/plugins.md, Async transforms). Per record:

1. the ``system`` and ``prompt`` templates are rendered (a template that fails is a DataError);
2. with ``cache`` set, the answer is looked up by the SHA-256 of what decides it (model, API,
   system, prompt, schema, and the endpoint, temperature and ``max_tokens`` when set: see
   :func:`_cache_key`); a hit asks the model nothing;
3. otherwise the model is asked (:class:`~.client.ModelClient`: the SDK's retries on 429/5xx
   after ``Retry-After``, then the taxonomy), and the checked answer is cached;
4. the answer (text, or the JSON value with ``schema``) is written at ``field``; the objects
   on the way are copied, never changed in place, and created when missing.

A rejected key or an unknown model (a ConfigError) is remembered: every later record fails
with the same error without a call, so a wrong key does not hammer the server; the chain
lets a ConfigError through, so the connector stops for good (no record is dead-lettered).

Token usage is counted on the transform (:attr:`Llm.usage`: requests, cache hits, tokens),
in the worker's metrics (``openai_requests``, ``openai_cache_hits``, ``openai_prompt_tokens``,
``openai_completion_tokens``, labelled with the pipeline and the transform's stage: the worker
calls :meth:`Llm.bind_metrics`) and logged at most once a minute at INFO by
``meshconnect.transforms.llm``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from meshconnect import ConfigError, DataError, Record, Transform

from .client import Answer, ModelClient
from .config import LlmOptions

__all__ = ["Llm", "make_llm"]

log = logging.getLogger("meshconnect.transforms.llm")


class Llm(Transform):
    """See the module docstring."""

    copies_nested_objects = True

    def __init__(
        self,
        options: LlmOptions,
        prompt: Any,
        system: Any,
        cache: Path | None,
    ) -> None:
        self.options = options
        self.prompt = prompt
        self.system = system
        self.cache = cache
        self.concurrency = options.concurrency
        self.path = options.field.split(".")[1:]
        self.model = ModelClient(options, "llm")
        #: Requests sent, cache hits and token counts since start.
        self.usage = {
            "requests": 0,
            "cache_hits": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 0,
        }
        self._logged = time.monotonic()
        #: A rejected key or unknown model: every later record fails with it, unasked.
        self.fatal: ConfigError | None = None
        #: The worker's counters of each ``usage`` entry, once bound.
        self.counters: dict[str, Any] = {}

    def bind_metrics(self, metrics: Any) -> None:
        """Count the usage in the worker's metrics too (``metrics``: a labelled handle)."""
        self.counters = {
            "requests": metrics.counter("openai_requests", "Model calls answered"),
            "cache_hits": metrics.counter("openai_cache_hits", "Answers taken from the cache"),
            "prompt_tokens": metrics.counter("openai_prompt_tokens", "Prompt tokens used"),
            "completion_tokens": metrics.counter(
                "openai_completion_tokens", "Completion tokens used"
            ),
        }

    def _count(self, name: str, n: int = 1) -> None:
        self.usage[name] = self.usage.get(name, 0) + n
        counter = self.counters.get(name)
        if counter is not None:
            counter.inc(n)

    async def apply(self, record: Record) -> Record:  # type: ignore[override]  # async door
        data = record.data
        if data is None:  # a tombstone passes unchanged, unasked (issue 20: null is not missing)
            return record
        if not isinstance(data, dict):
            raise DataError(f"llm: data is {type(data).__name__}, not an object")
        for i, key in enumerate(self.path[:-1]):  # check before asking anything
            data = data.get(key) if isinstance(data, dict) else None
            if data is not None and not isinstance(data, dict):
                where = ".".join(["data", *self.path[: i + 1]])
                raise DataError(f"llm: {where} is {type(data).__name__}, not an object")
            if data is None:
                break
        system = self.system.render(record) if self.system is not None else None
        prompt = self.prompt.render(record)
        value = await self._answer(system, prompt)
        record.data = _set(record.data, self.path, value)
        return record

    async def _answer(self, system: str | None, prompt: str) -> Any:
        options = self.options
        key = None
        if self.cache is not None:
            key = _cache_key(options, system, prompt)
            hit = await asyncio.to_thread(_read, self.cache, key)
            if hit is not None:
                self._count("cache_hits")
                return self.model.check(hit, options.model, {}, "", options.schema_).value
        if self.fatal is not None:
            raise self.fatal
        try:
            answer: Answer = await self.model.ask(
                system, prompt, schema=options.schema_, api=options.api
            )
        except ConfigError as exc:
            self.fatal = exc
            raise
        self._count("requests")
        for name, count in answer.usage.items():
            self._count(name, count)
        if self.cache is not None and key is not None:
            await asyncio.to_thread(_write, self.cache, key, answer)
        if time.monotonic() - self._logged > 60:
            self._logged = time.monotonic()
            log.info("llm %s: %s", options.model, self.usage)
        return answer.value


def _cache_key(options: LlmOptions, system: str | None, prompt: str) -> str:
    """The cache key of an answer: the SHA-256 (hex) of everything that decides it. The model,
    the API, the messages and the schema always; the endpoint (``base_url``, a trailing ``/``
    dropped), ``temperature`` and ``max_tokens`` when set, since another server serving the
    same model name, or other sampling, gives another answer. Without them set, the key is
    the one earlier versions made, so a cache written with the defaults stays valid."""
    parts: list[Any] = [options.model, options.api, system, prompt, options.schema_]
    decides: dict[str, Any] = {}
    if options.base_url:
        decides["base_url"] = options.base_url.rstrip("/")
    if options.temperature is not None:
        decides["temperature"] = options.temperature
    if options.max_tokens is not None:
        decides["max_tokens"] = options.max_tokens
    if decides:
        parts.append(decides)
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read(folder: Path, key: str) -> str | None:
    try:
        entry = json.loads((folder / key[:2] / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or torn: ask again
    text = entry.get("answer") if isinstance(entry, dict) else None
    return text if isinstance(text, str) else None


def _write(folder: Path, key: str, answer: Answer) -> None:
    target = folder / key[:2] / f"{key}.json"
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = target.with_name(f".{key}.{os.getpid()}.tmp")
    # 0600 from the start (docs/security.md): answers may hold what the records held
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(json.dumps({"model": answer.model, "answer": answer.text, "usage": answer.usage}))
    os.replace(temp, target)  # a reader sees the whole entry or none


def _set(data: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """``data`` with ``value`` at ``path``, copying the objects on the way."""
    out = dict(data)
    if len(path) == 1:
        out[path[0]] = value
        return out
    inner = out.get(path[0])
    out[path[0]] = _set(inner if isinstance(inner, dict) else {}, path[1:], value)
    return out


def make_llm(options: LlmOptions, compiler: Any) -> Llm:
    """The factory of the ``llm`` step: templates compiled now, the client made on first use."""
    from meshconnect.transforms import build_context

    prompt = compiler.template(options.prompt, field="prompt")
    system = None if options.system is None else compiler.template(options.system, field="system")
    cache = None
    if options.cache is not None:
        cache = Path(options.cache)
        if not cache.is_absolute():
            cache = build_context().base_dir / cache
        try:
            # docs/security.md: directories meshconnect creates are 0700 (an existing one is
            # the user's to set)
            cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"llm: cache directory {str(cache)!r}: {exc.strerror}") from None
    return Llm(options, prompt, system, cache)
