"""Secrets written as literals in a pipeline: the one place that says what they are.

``${env:…}``/``${file:…}`` values are secrets by where they come from (:mod:`.config.interpolate`).
A pipeline file or a body sent to ``PUT /connectors/{name}`` may also hold secrets written as
they are: a ``SecretStr`` field (``password: hunter2``), an ``Authorization`` header of an
``http`` sink, a password in a URL's user info (``postgresql://bob:pw@db/app``,
``store: redis://:pw@host``), an ``api_key`` query parameter. :func:`literal_secrets` (a
connector's config, a PUT body), :func:`pipeline_secrets` (a whole pipeline file),
:func:`url_secrets` (a store URL given with ``--store``) and :func:`secret_str_values` (a
validated config model) find them, so the run masks them (with
:func:`.config.interpolate.register_secrets`) in every log line (a client library's own, tracebacks
included), error, dead letter, admin API answer and metric, and validation masks them in its
messages. :func:`shown_url` is a URL as messages show it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

from pydantic import BaseModel, SecretBytes, SecretStr

from .config.interpolate import MASK

__all__ = [
    "literal_secrets",
    "pipeline_secrets",
    "secret_str_values",
    "shown_url",
    "url_secrets",
]

#: Keys whose string values (or the strings of a list under them) are secrets.
_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|apikey|"
    # not mongodb's auth_source/authSource (a database name) or authMechanism (a method)
    r"auth(?!ors?\b|_?source\b|_?mechanism\b)|credential|cookie|"
    r"private[-_]?key|signature|session",
    re.IGNORECASE,
)
#: ... unless the key names where a secret is found or sent, not the secret itself.
_NOT_SECRET_KEY = re.compile(r"(url|uri|endpoint|header|path|file|type|types|field)s?$", re.I)
#: The password of a URL's user info, for a URL ``urlsplit`` refuses.
_USERINFO = re.compile(r"://[^/@:]*:([^/@]*)@")
#: URL schemes whose user info without a password is itself the credential: the NATS
#: client sends ``nats://TOKEN@host`` as the token (and the store shows its URL).
_TOKEN_USER_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})
_LONE_USER = re.compile(r"://([^/@:?#]+)@")
#: The password as SQLAlchemy's URL parser reads it: from the user's ``:`` to the first ``@``,
#: ``/``, ``?`` and ``#`` included (``postgresql://u:pa/ss@h/db`` connects with ``pa/ss``,
#: where ``urlsplit`` sees no user info at all). Not in web URLs, whose clients split them as
#: ``urlsplit`` does (``http://h:80/p:q@r`` is a port and a path), nor what reads as a port.
_LENIENT_PASSWORD = re.compile(
    r"^(?!(?:https?|wss?)://)[A-Za-z][\w+.-]*://[^:/@]*:(?!\d+(?:[/?#]|$))([^@]*)@", re.I
)
#: A header name that carries a credential: besides the names above, any ``…-Key``
#: (``Ocp-Apim-Subscription-Key``, ``X-Functions-Key``) or ``…Sig…`` header.
_SECRET_HEADER = re.compile(r"key|sig", re.IGNORECASE)
#: ``Bearer abc``: ``abc`` is masked alone as well, wherever it shows up without its scheme.
_SCHEME = re.compile(r"^(bearer|basic|token|digest|apikey)\s+(\S+)$", re.IGNORECASE)


def literal_secrets(data: Any) -> set[str]:
    """The secret texts written as literals in ``data`` (a pipeline as JSON)."""
    return set(_walk(data, None))


def _walk(value: Any, key: str | None) -> Iterator[str]:
    if isinstance(value, dict):
        headers = key is not None and key.lower() == "headers"
        for k, v in value.items():
            if headers and isinstance(v, str) and v.strip() and _SECRET_HEADER.search(str(k)):
                yield v
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


def url_secrets(text: str) -> set[str]:
    """The secrets of one URL: its password (a NATS URL's token: ``nats://TOKEN@host``) and
    its secret-named query parameters' values."""
    return set(_url_secrets(text))


def pipeline_secrets(data: Any) -> set[str]:
    """The secret texts written as literals in a pipeline file's data: everything
    :func:`literal_secrets` finds in each connector's ``config`` (and in the keys of a transform
    item, such as the ``llm`` transform's ``api_key``), and the secrets of every URL anywhere
    (``store:`` included). Elsewhere a key's name alone does not make its value a secret (a
    ``rename: {token: access_token}`` names fields)."""
    found = set(_urls_anywhere(data))
    if not isinstance(data, dict) or not isinstance(data.get("pipelines"), list):
        return found
    for pipeline in data["pipelines"]:
        if not isinstance(pipeline, dict):
            continue
        parts = [pipeline.get("source"), *_items(pipeline.get("sinks"))]
        for part in parts:
            if isinstance(part, dict):
                found |= literal_secrets(part.get("config"))
                found |= _transform_secrets(part.get("transforms"))
        found |= _transform_secrets(pipeline.get("transforms"))
    return found


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _transform_secrets(items: Any) -> set[str]:
    found: set[str] = set()
    for item in _items(items):
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(value, str):
                    found |= set(_walk(value, str(key)))
    return found


def _urls_anywhere(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _urls_anywhere(item)
    elif isinstance(value, list):
        for item in value:
            yield from _urls_anywhere(item)
    elif isinstance(value, str):
        yield from _url_secrets(value)


def secret_str_values(value: Any) -> set[str]:
    """The values of every ``SecretStr``/``SecretBytes`` in a validated model (nested models,
    lists and dicts of them included)."""
    found: set[str] = set()
    _secret_values(value, found, 0)
    return {s for s in found if s.strip()}


def _secret_values(value: Any, found: set[str], depth: int) -> None:
    if depth > 20:
        return
    if isinstance(value, SecretStr):
        found.add(value.get_secret_value())
    elif isinstance(value, SecretBytes):
        found.add(value.get_secret_value().decode("utf-8", "replace"))
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _secret_values(getattr(value, name, None), found, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            _secret_values(item, found, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _secret_values(item, found, depth + 1)


def shown_url(url: str) -> str:
    """``url`` as messages show it: its password and the values of its secret-named query
    parameters masked (``postgresql://bob:**********@db/app``), and the token a NATS URL gives
    as its user info (``nats://**********@host:4222``); the rest as written."""
    lenient = _LENIENT_PASSWORD.match(url)
    if lenient and set(lenient.group(1)) & set("/?#"):  # a password urlsplit would cut
        url = url[: lenient.start(1)] + MASK + url[lenient.end(1) :]
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(an invalid URL)"
    netloc = parts.netloc
    if password is not None:
        host = netloc.rpartition("@")[2]
        user = netloc.rpartition("@")[0].partition(":")[0]
        netloc = f"{user}:{MASK}@{host}"
    elif "@" in netloc and parts.scheme.lower() in _TOKEN_USER_SCHEMES:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    pairs = []
    for pair in parts.query.split("&") if parts.query else []:
        name, sep, raw = pair.partition("=")
        secret = sep and raw and _SECRET_KEY.search(unquote_plus(name))
        pairs.append(f"{name}={MASK}" if secret else pair)
    return urlunsplit(parts._replace(netloc=netloc, query="&".join(pairs)))


def _url_secrets(text: str) -> Iterator[str]:
    """A URL's password and the values of its query parameters with secret names, each as
    written (``p%40ss``, what the URL shows) and decoded (``p@ss``, what a client may show)."""
    if "://" not in text:
        return
    text = text.strip()
    try:
        parts = urlsplit(text)
        password, query = parts.password, parts.query
        if password is None and parts.scheme.lower() in _TOKEN_USER_SCHEMES:
            password = parts.username
    except ValueError:  # a broken [IPv6] literal: the parts as the text has them
        match = _USERINFO.search(text)
        password = match.group(1) if match else None
        if match is None and text.partition("://")[0].lower() in _TOKEN_USER_SCHEMES:
            lone = _LONE_USER.search(text)
            password = lone.group(1) if lone else None
        query = text.partition("?")[2].partition("#")[0]
    if password:
        yield password
        yield unquote(password)
    lenient = _LENIENT_PASSWORD.match(text)
    if lenient and lenient.group(1) and lenient.group(1) != password:
        yield lenient.group(1)
        yield unquote(lenient.group(1))
    for pair in query.split("&"):
        name, sep, raw = pair.partition("=")
        if sep and raw and _SECRET_KEY.search(unquote_plus(name)):
            yield raw
            yield unquote_plus(raw)
