"""Reading an HTTP request's body whole, within a size limit, for the HTTP sources, and
checking the path an HTTP source serves (:func:`check_path`, for its config model).

``StreamReader.read(n)`` returns what has arrived so far, up to ``n`` bytes: a body sent in
several TCP segments (any client on a slow link, chunked transfer encoding) comes back cut
short, so a signature over it fails and a half prompt is stored. :func:`read_body` reads to
the end of the body, stopping as soon as it passes the limit.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["check_listen", "check_path", "read_body"]

_CHUNK = 1 << 16
#: A route's path: RFC 3986 path characters (pchar and "/") without %-escapes.
_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*\Z")


def check_listen(value: str) -> str:
    """``HOST:PORT`` with a port of 0-65535 (``[::1]:8080`` for IPv6), as the shared
    listener reads it; refused here so ``validate`` names the line."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not port.isascii():
        raise ValueError(f"{value!r}: expected HOST:PORT, e.g. 0.0.0.0:8080")
    if int(port) > 65535:
        raise ValueError(f"{value!r}: port {int(port)} is above 65535")
    if host.startswith("[") != host.endswith("]") or (":" in host and host[0] != "["):
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, e.g. [::1]:8080")
    return value


def check_path(value: str) -> str:
    """``value`` when it is a path a request can be routed to; ``ValueError`` otherwise (a
    config model's validator: ``validate`` then names the file, line and field). A query,
    fragment, brace or %-escape in it never matches a request's path (every request gets
    404), and a space or non-ASCII character makes no URI-reference of it (the webhook's
    default CloudEvent ``source`` is the path: every request got 400)."""
    if not value.startswith("/"):
        raise ValueError("must start with '/'")
    if not _PATH.match(value):
        raise ValueError(
            "a URL path of letters, digits and -._~!$&'()*+,;=:@/ only (no query, fragment, "
            "space, braces, %-escapes or non-ASCII)"
        )
    return value


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body of ``request``, or ``None`` when it is longer than ``limit`` bytes
    (by its ``Content-Length`` before anything is read, else as soon as more has arrived)."""
    if (request.content_length or 0) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
