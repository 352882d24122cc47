"""``${env:…}`` and ``${file:…}`` interpolation in a pipeline file's string values.

Syntax, inside any string scalar (mapping keys are never interpolated):

* ``${env:NAME}``: the environment variable ``NAME``; undefined is an error.
* ``${env:NAME:-default}``: ``NAME``, or ``default`` when it is undefined *or empty* (as in the
  shell). The default is literal text up to the closing ``}``; it cannot nest another ``${``.
* ``${file:PATH}``: the contents of a file (UTF-8), with one trailing newline removed. A
  relative ``PATH`` resolves against the pipeline file's directory; ``~`` expands.
* ``$${`` is a literal ``${``. Any other ``${…}`` is an error, so a typo never passes silently.

Typing: a substituted value is always a **string**, even when the scalar is exactly one
reference (``port: ${env:PORT}`` gives ``"5432"``). It is never re-read as YAML, so a secret
such as ``yes`` or ``0123`` arrives as written; pydantic's lax mode then converts ``"5432"`` for
an ``int`` field.

Every path whose value came from a reference is recorded in :attr:`Interpolated.secrets`: such
values are treated as secrets and never printed (messages, ``config show``). At run time a
:class:`Redactor` built from :meth:`Interpolated.secret_values` masks them in every message the
worker logs or stores (expression failures, dead letters' ``errormessage``, connector errors):
each text of three characters or more taken from the environment or a file becomes
:data:`MASK` wherever it appears.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .yamlpos import YamlPath

__all__ = [
    "MASK",
    "Interpolated",
    "Redactor",
    "escaped_forms",
    "interpolate",
    "redact",
    "register_secrets",
]

#: What a secret value is shown as.
MASK = "**********"
#: Secrets shorter than this are not masked inside other words (a two-letter secret would
#: mask every message); validation masks them as whole words in messages about their field.
MIN_MASKED = 3

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SYNTAX = "use ${env:NAME}, ${env:NAME:-default} or ${file:PATH}; write $${ for a literal ${"


@dataclass(slots=True)
class Interpolated:
    """The data with references replaced, and what happened where."""

    data: Any
    #: Paths of string values that contained at least one reference (their values are secret),
    #: each with its whole value and the texts its references took from the environment or
    #: from files (a ``:-default`` is written in the file, so it is not listed).
    secrets: dict[YamlPath, list[str]] = field(default_factory=dict)
    #: Paths whose value differs from the file's text (references or ``$${`` escapes), so an
    #: offset inside the value no longer maps to a column in the file.
    rewritten: set[YamlPath] = field(default_factory=set)
    #: ``(path, message)`` for each reference that could not be resolved.
    errors: list[tuple[YamlPath, str]] = field(default_factory=list)
    #: Secrets written as literals in the data (a URL's password, an ``Authorization``
    #: header, a ``SecretStr`` field's value): the loader fills this in
    #: (:mod:`meshconnect.secrets`); they are masked as the texts of references are.
    literal: set[str] = field(default_factory=set)

    def secret_values(self) -> set[str]:
        """Every text a reference took from the environment or a file (defaults excluded),
        and every secret written as a literal."""
        taken = {value for values in self.secrets.values() for value in values[1:]}
        return taken | self.literal


class Redactor:
    """Masks secret texts in messages: ``redact(text)`` has each of ``secrets`` that is at
    least :data:`MIN_MASKED` characters long replaced by :data:`MASK` (longest first)."""

    __slots__ = ("_pattern",)

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = {form for s in secrets if len(s) >= MIN_MASKED for form in escaped_forms(s)}
        usable = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, usable))) if usable else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def redact(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)


def escaped_forms(secret: str) -> set[str]:
    """``secret`` as it may appear in a message: as it is, and as ``repr`` (either quote) and
    JSON write it inside a quoted string. A secret holding a quote, a backslash, a control or a
    non-ASCII character reaches a message escaped (``condition 'x == "it\\'s"'``, a dead letter's
    JSON, ``offsets show --json``), where masking the text as it is would miss it."""
    forms = {
        secret,
        repr(secret)[1:-1],
        repr(secret + "'\"")[1:-4],  # within a repr in single quotes: ' escaped
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    if '"' not in secret:  # within a repr in double quotes (never used for text with a ")
        forms.add(repr(secret + "'")[1:-2])
    return {form for form in forms if len(form) >= MIN_MASKED}


def interpolate(
    data: Any,
    *,
    env: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] = ".",
    written_env: Mapping[str, str] | None = None,
) -> Interpolated:
    """Replace references in every string of ``data`` (dicts and lists are rebuilt, not changed).

    ``written_env`` are variables written down elsewhere (a test file's ``env:``): they come
    before ``env`` and, like a ``:-default``, are not secrets.

    A value with an unresolvable reference keeps its original text (and its path is reported in
    ``errors``), so later checks can go on.
    """
    resolver = _Resolver(os.environ if env is None else env, Path(base_dir), written_env or {})
    result = Interpolated(None)
    result.data = resolver.walk(data, (), result)
    return result


class _Resolver:
    def __init__(self, env: Mapping[str, str], base_dir: Path, written: Mapping[str, str]) -> None:
        self.env = env
        self.base_dir = base_dir
        self.written = written

    def walk(self, value: Any, path: YamlPath, out: Interpolated) -> Any:
        if isinstance(value, dict):
            return {k: self.walk(v, (*path, k), out) for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v, (*path, i), out) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            return self.string(value, path, out)
        return value

    def string(self, text: str, path: YamlPath, out: Interpolated) -> str:
        parts: list[str] = []
        resolved: list[str] = []
        references = 0
        i = 0
        while True:
            start = text.find("$", i)
            if start < 0:
                parts.append(text[i:])
                break
            parts.append(text[i:start])
            if text.startswith("$${", start):
                parts.append("${")
                i = start + 3
                continue
            if not text.startswith("${", start):
                parts.append("$")
                i = start + 1
                continue
            end = text.find("}", start + 2)
            if end < 0:
                out.errors.append((path, f"unterminated '${{' ({_SYNTAX})"))
                return text
            body = text[start + 2 : end]
            try:
                value, secret = self.resolve(body)
            except _Unresolved as exc:
                out.errors.append((path, str(exc)))
                return text
            parts.append(value)
            references += 1
            if secret:
                resolved.append(value)
            i = end + 1
        result = "".join(parts)
        if references:
            out.secrets[path] = [result, *resolved] if resolved else []
        if result != text:
            out.rewritten.add(path)
        return result

    def resolve(self, body: str) -> tuple[str, bool]:
        """The text ``${body}`` stands for, and whether it is secret (not a default)."""
        kind, sep, arg = body.partition(":")
        if "${" in body:
            raise _Unresolved(f"nested '${{' inside a reference is not supported ({_SYNTAX})")
        if sep and kind == "env":
            name, has_default, default = arg.partition(":-")
            if not _ENV_NAME.match(name):
                raise _Unresolved(f"invalid environment variable name in ${{env:…}} ({_SYNTAX})")
            value = self.written.get(name, self.env.get(name))
            if has_default and not value:
                return default, False
            if value is None:
                raise _Unresolved(
                    f"undefined environment variable {name} "
                    f"(set it, or write ${{env:{name}:-default}})"
                )
            return value, name not in self.written
        if sep and kind == "file":
            return self.read(arg), True
        shown = f"${{{kind}:…}}" if sep else f"${{{body}}}"
        raise _Unresolved(f"unknown reference '{shown}' ({_SYNTAX})")

    def read(self, raw: str) -> str:
        if not raw.strip():
            raise _Unresolved("${file:} needs a path")
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise _Unresolved(f"secret file {path} is not UTF-8 text") from None
        except OSError as exc:
            raise _Unresolved(f"cannot read secret file {path}: {exc.strerror or exc}") from None
        if text.endswith("\r\n"):
            return text[:-2]
        if text.endswith("\n"):
            return text[:-1]
        return text


class _Unresolved(Exception):
    """A reference that cannot be resolved (the message says why and what to do)."""


# The secrets of the pipelines this process runs, masked in everything it logs or stores
# (``meshconnect run`` registers them once the files are loaded).
_process_redactor = Redactor(())


def register_secrets(secrets: Iterable[str]) -> None:
    """Add ``secrets`` to those :func:`redact` masks in this process."""
    global _process_redactor
    _registered.update(secrets)
    _process_redactor = Redactor(_registered)


def redact(text: str) -> str:
    """``text`` with every secret registered in this process masked
    (:func:`register_secrets`)."""
    return _process_redactor.redact(text)


_registered: set[str] = set()
