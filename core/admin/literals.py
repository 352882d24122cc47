"""Secrets written as literals in a pipeline given to the admin API.

A config's ``SecretStr`` fields and its ``${env:…}``/``${file:…}`` values are masked by the
loader. A body sent to ``PUT /connectors/{name}`` may also hold secrets in plain fields: an
``Authorization`` header of an ``http`` sink, a password in a URL's user info, an ``api_key``
query parameter. :func:`literal_secrets` finds those so the run masks them (with
:func:`..config.interpolate.register_secrets`) in every answer, log line and metric.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["literal_secrets"]

#: Keys whose string values (or the strings of a list under them) are secrets.
_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|apikey|auth(?!ors?\b)|credential|cookie|"
    r"private[-_]?key|signature|session",
    re.IGNORECASE,
)
#: ... unless the key names where a secret is found or sent, not the secret itself.
_NOT_SECRET_KEY = re.compile(r"(url|uri|endpoint|header|path|file|type|types|field)s?$", re.I)
#: ``Bearer abc``: ``abc`` is masked alone as well, wherever it shows up without its scheme.
_SCHEME = re.compile(r"^(bearer|basic|token|digest|apikey)\s+(\S+)$", re.IGNORECASE)


def literal_secrets(data: Any) -> set[str]:
    """The secret texts written as literals in ``data`` (a pipeline as JSON)."""
    return set(_walk(data, None))


def _walk(value: Any, key: str | None) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, str(k))
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, key)
    elif isinstance(value, str):
        if (
            key is not None
            and _SECRET_KEY.search(key)
            and not _NOT_SECRET_KEY.search(key)
            and value.strip()
        ):
            yield value
            scheme = _SCHEME.match(value.strip())
            if scheme:
                yield scheme.group(2)
        yield from _url_secrets(value)


def _url_secrets(text: str) -> Iterator[str]:
    """A URL's password and the values of its query parameters with secret names."""
    if "://" not in text:
        return
    try:
        parts = urlsplit(text.strip())
        password = parts.password
    except ValueError:
        return
    if password:
        yield password
    for name, val in parse_qsl(parts.query, keep_blank_values=False):
        if val and _SECRET_KEY.search(name):
            yield val
