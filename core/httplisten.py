"""The shared HTTP listener: one aiohttp application per listen address, owned by the worker.

Sources that receive HTTP (webhook, Slack Events, ChatGPT) do not bind ports of their own:
they add routes through their context, and every route on the same ``HOST:PORT`` is served by
one server (the admin API is a server of its own, see :mod:`meshconnect.admin.server`; a route
on its port is a clash naming it)::

    async def start(self, positions):
        self.route = await self.context.http.add_route(
            self.config.listen, "POST", self.config.path, self.handle
        )

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response: ...

``add_route`` binds the address the first time a route names it. A route's handler is any
aiohttp handler. Clashes are :class:`~meshconnect.errors.ConfigError`\\ s naming both
pipelines: the same method and path on one address; one port under two host spellings
(``0.0.0.0:8080`` and ``127.0.0.1:8080``: use one spelling to share it); an address another
process holds; one address served with TLS by one route and without (or with another
certificate) by another. ``tls=(cert_file, key_file)`` serves the address over HTTPS (the
first route binds it; every route on it must name the same files). The worker removes a
connector's routes when it stops (a restart adds them again) and closes the servers at the
end of the run. A removed route's path answers ``503`` with ``Retry-After: 1`` until it is
added again (a restart) or the server closes, so senders retry instead of taking a 404 for a
permanent refusal. An unknown path (404) and a method no route takes (405, with ``Allow``)
get RFC 7807 ``application/problem+json`` bodies; what aiohttp's parser refuses before any
route sees it (a malformed request line or header, headers too long, a ``Content-Encoding``
it has no library for) is its own plain-text ``400``.

Every address guards itself against slow and numerous clients, for every source on it: a
connection that has not sent a request's complete headers ``header_timeout`` seconds (10 by
default) after it opened, or after the previous answer on a kept-alive connection, is closed
(a "slowloris" client holds nothing for long); beyond ``max_connections`` open connections
(512) a new one is answered ``503`` with ``Retry-After: 1`` and an RFC 7807 problem body, and
closed before anything is read, so the process never runs out of file descriptors.

aiohttp is the ``http`` extra (``pip install 'meshconnect[http]'``); it is imported only when a
route is added.
"""

from __future__ import annotations

import asyncio
import errno
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from aiohttp import web
    from pydantic import SecretStr

__all__ = [
    "HEADER_TIMEOUT",
    "MAX_CONNECTIONS",
    "HttpListeners",
    "HttpRoutes",
    "Route",
    "check_http_url",
    "check_listen",
    "check_path",
    "check_secret",
    "check_tokens",
    "parse_listen",
]

Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) -> (host, port); a ConfigError otherwise."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not port.isascii() or not host:
        raise ConfigError(f"listen {listen!r}: expected HOST:PORT, e.g. 0.0.0.0:8080")
    number = int(port)
    if number > 65535:
        raise ConfigError(f"listen {listen!r}: port {number} is above 65535")
    return host.strip("[]"), number


def check_listen(value: str) -> str:
    """A config validator: ``value`` when :func:`parse_listen` takes it, else a ValueError, so
    that ``meshconnect validate`` names the line instead of the run failing at start."""
    try:
        parse_listen(value)
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("listen ")) from None
    host = value.rpartition(":")[0]
    if host.startswith("[") != host.endswith("]") or (":" in host and host[0] != "["):
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, e.g. [::1]:8080")
    return value


#: A route's path: RFC 3986 path characters (pchar and "/") without %-escapes.
_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*\Z")


def check_path(value: str) -> str:
    """A config validator: a route's path starts with ``/`` (aiohttp refuses others) and
    is one a request can reach: a query, fragment, brace or %-escape in it never matches a
    request's path (every request 404), and a space or non-ASCII character makes no
    URI-reference of it (the webhook's default CloudEvent ``source`` is the path: every
    request 400)."""
    if not value.startswith("/"):
        raise ValueError(f"{value!r} must start with '/'")
    if not _PATH.match(value):
        raise ValueError(
            f"{value!r}: a URL path of letters, digits and -._~!$&'()*+,;=:@/ only (no query, "
            "fragment, space, braces, %-escapes or non-ASCII)"
        )
    return value


def check_http_url(value: str | None) -> str | None:
    """A config validator: an absolute ``http(s)`` URL (or None) without user info. Without
    its scheme a client (slack-sdk, the openai SDK) reports a connection error per call,
    retried, then a 503 or a dead letter per record, never naming the field."""
    from urllib.parse import urlsplit

    if value is None:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r}: expected an http:// or https:// URL")
    if "@" in parts.netloc:
        # slack-sdk's aiohttp refuses every call ("Cannot combine AUTHORIZATION header with
        # ... credentials encoded in URL"); the openai SDK's httpx sends them as Basic auth in
        # place of the API key; and the client's debug log prints the URL. Never echoed.
        raise ValueError(
            "credentials in the URL (user info before '@') are not sent as you mean: the "
            "connector's token or api_key authenticates; give the URL without them"
        )
    return value


def check_secret(value: SecretStr) -> SecretStr:
    """A config validator: a secret that is set. An empty one (``${env:NAME}`` of an empty
    variable) fails every call or request later, so it is refused here (its value is never
    shown)."""
    if not value.get_secret_value().strip():
        raise ValueError("empty: give the secret (an environment variable that is set)")
    return value


def check_tokens(tokens: Sequence[SecretStr]) -> None:
    """A config validator's check of ``bearer_tokens``: an empty token (``${env:NAME}`` of an
    empty variable) matches no request, and with only such tokens every request would be a
    401. ValueError naming the token by its index."""
    for i, token in enumerate(tokens):
        if not token.get_secret_value().strip():
            raise ValueError(f"[{i}] is empty: give the token (a variable that is set)")


@dataclass(slots=True)
class Route:
    """A route added by :meth:`HttpRoutes.add_route`; ``port`` is the bound port (useful with
    port 0)."""

    listen: str
    method: str
    path: str
    owner: str
    port: int
    _listeners: HttpListeners = field(repr=False)

    def remove(self) -> None:
        """Stop serving this route (the address stays bound for the others)."""
        self._listeners._remove(self)


#: Seconds a connection may take to send a request's complete headers (the request line and
#: every header): a slow-headers client ("slowloris") is closed after it.
HEADER_TIMEOUT = 10.0
#: Open connections per listen address; the next one is answered 503 and closed at once.
MAX_CONNECTIONS = 512

_BUSY_BODY = (
    b'{"type":"about:blank","title":"Service Unavailable","status":503,'
    b'"detail":"too many open connections to this address; retry later"}'
)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
    + str(len(_BUSY_BODY)).encode()
    + b"\r\n\r\n"
    + _BUSY_BODY
)


@dataclass(slots=True)
class _Server:
    host: str
    port: int
    bound_port: int
    runner: Any
    tls: tuple[str, str] | None = None
    #: path -> method -> (handler, owner); handler ``None``: the route was removed while the
    #: listener runs (its pipeline stops or restarts): answered 503 until added again
    routes: dict[str, dict[str, tuple[Handler | None, str]]] = field(default_factory=dict)
    header_timeout: float = HEADER_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    #: the asyncio server accepting connections (each wrapped in a :class:`_Guard`)
    listener: Any = None
    #: the open connections' guards, by transport
    guards: dict[Any, _Guard] = field(default_factory=dict)


class _Guard(asyncio.Protocol):
    """Wraps aiohttp's protocol of one connection: the connection is closed when a request's
    headers are not complete ``header_timeout`` seconds after the connection opened (or after
    the previous answer, on a kept-alive connection); beyond ``max_connections`` open ones
    a new connection gets a 503 and is closed before anything is read."""

    def __init__(self, inner: Any, server: _Server) -> None:
        self.inner = inner
        self.server = server
        self.transport: Any = None
        self.timer: asyncio.TimerHandle | None = None
        self.busy = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if len(self.server.guards) >= self.server.max_connections:
            transport.write(_BUSY)
            transport.close()
            self.inner = None
            return
        self.server.guards[transport] = self
        self.inner.connection_made(transport)
        self.arm()

    def arm(self) -> None:
        self.busy = False
        if self.timer is not None:
            self.timer.cancel()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.server.header_timeout, self._expired)

    def disarm(self) -> None:
        """The request's headers are complete (its handler runs)."""
        self.busy = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        if not self.busy and self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self.inner is None else self.inner.eof_received()

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.inner is None:
            return
        self.server.guards.pop(self.transport, None)
        self.inner.connection_lost(exc)


class HttpListeners:
    """The worker's HTTP servers, one per listen address (see the module docstring)."""

    def __init__(self) -> None:
        self._servers: dict[tuple[str, int], _Server] = {}
        self._lock: asyncio.Lock | None = None  # made on first use, on the running loop
        #: Ports this worker serves outside these listeners (the admin API), with who holds
        #: them: a route on one is a clash naming it, not "in use by another process".
        self._reserved: dict[int, str] = {}

    def reserve(self, port: int, owner: str) -> None:
        """Note that this worker serves ``port`` elsewhere (``owner`` names it)."""
        self._reserved[port] = owner

    async def add_route(
        self,
        listen: str,
        method: str,
        path: str,
        handler: Handler,
        owner: str,
        tls: tuple[str, str] | None = None,
        header_timeout: float = HEADER_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> Route:
        """Serve ``method path`` on ``listen`` with ``handler``; ``owner`` names the pipeline
        (and connector) in clash messages; ``tls``: (certificate file, key file), PEM.
        ``header_timeout`` (seconds) and ``max_connections`` are the address's (module
        docstring): the route that binds it sets them, a later one must name the same."""
        host, port = parse_listen(listen)
        method = method.upper()
        if not path.startswith("/"):
            raise ConfigError(f"{owner}: HTTP path {path!r} must start with '/'")
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # two sources starting at once must not both bind
            return await self._add(
                host,
                port,
                listen,
                method,
                path,
                handler,
                owner,
                tls,
                (header_timeout, max_connections),
            )

    async def _add(
        self,
        host: str,
        port: int,
        listen: str,
        method: str,
        path: str,
        handler: Handler,
        owner: str,
        tls: tuple[str, str] | None = None,
        limits: tuple[float, int] = (HEADER_TIMEOUT, MAX_CONNECTIONS),
    ) -> Route:
        server = self._servers.get((host, port))
        if server is None:
            if port in self._reserved:
                raise ConfigError(
                    f"listen {listen} ({owner}) clashes with {self._reserved[port]} on port "
                    f"{port}; give one of them another port"
                )
            if port:
                for (other_host, other_port), other in self._servers.items():
                    if other.bound_port == port:
                        raise ConfigError(
                            f"listen {listen} ({owner}) clashes with {other_host}:{other_port} "
                            f"({_owners(other)}): one port, two spellings of the address; use "
                            "the same listen address to share the port"
                        )
            server = await self._bind(host, port, listen, owner, tls, limits)
            self._servers[(host, port)] = server
        elif (server.header_timeout, server.max_connections) != limits:
            raise ConfigError(
                f"listen {listen} ({owner}): header_timeout {limits[0]:g}s and max_connections "
                f"{limits[1]} differ from those of {_owners(server)} "
                f"({server.header_timeout:g}s, {server.max_connections}); one address, one "
                "setting"
            )
        elif server.tls != tls:
            raise ConfigError(
                f"listen {listen} ({owner}): served with "
                f"{'TLS' if server.tls else 'plain HTTP'} by {_owners(server)}; every route on "
                "one address needs the same tls_cert and tls_key"
            )
        methods = server.routes.setdefault(path, {})
        for name in [m for m, (h, _) in methods.items() if h is None]:
            del methods[name]  # a removed route's 503 place-holder: this one takes over
        if method == "*":
            taken = next(iter(methods.values()), None)
        else:
            taken = methods.get(method) or methods.get("*")
        if taken is not None:
            raise ConfigError(
                f"HTTP route {method} {path} on {listen}: declared by {taken[1]} and by {owner}"
            )
        methods[method] = (handler, owner)
        return Route(listen, method, path, owner, server.bound_port, self)

    async def _bind(
        self,
        host: str,
        port: int,
        listen: str,
        owner: str,
        tls: tuple[str, str] | None,
        limits: tuple[float, int] = (HEADER_TIMEOUT, MAX_CONNECTIONS),
    ) -> _Server:
        try:
            from aiohttp import web
        except ImportError:
            raise ConfigError(
                f"{owner}: serving HTTP needs aiohttp: pip install 'meshconnect[http]'"
            ) from None
        context = None
        if tls is not None:
            import ssl

            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(*tls)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"listen {listen} ({owner}): cannot load tls_cert/tls_key: {exc}"
                ) from None
        server = _Server(host, port, port, None, tls, header_timeout=limits[0],
                         max_connections=limits[1])  # fmt: skip

        async def dispatch(request: web.Request) -> web.StreamResponse:
            guard = server.guards.get(request.transport)
            if guard is not None:
                guard.disarm()  # the headers are complete
            try:
                methods = server.routes.get(request.path)
                if not methods:
                    return problem(404, "Not Found", "no route for this path")
                entry = methods.get(request.method) or methods.get("*")
                if entry is None:
                    allowed = sorted(m for m, (h, _) in methods.items() if h is not None)
                    if not allowed:
                        return _unavailable()
                    return problem(
                        405,
                        "Method Not Allowed",
                        f"allowed: {', '.join(allowed)}",
                        {"Allow": ", ".join(allowed)},
                    )
                if entry[0] is None:
                    return _unavailable()
                return await entry[0](request)
            finally:
                if guard is not None:
                    guard.arm()  # the next request on this connection

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", dispatch)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        loop = asyncio.get_running_loop()
        make = runner.server
        assert make is not None
        try:
            server.listener = await loop.create_server(
                lambda: _Guard(make(), server),
                host,
                port,
                ssl=context,
                reuse_address=True,
                ssl_handshake_timeout=limits[0] if context is not None else None,
            )
        except OSError as exc:
            await runner.cleanup()
            why = "in use by another process" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ConfigError(f"listen {listen} ({owner}): cannot bind: {why}") from exc
        server.runner = runner
        for sock in server.listener.sockets:  # (host, port[, flow, scope]) of each socket
            address = sock.getsockname()
            if isinstance(address, tuple) and len(address) >= 2:
                server.bound_port = int(address[1])
                break
        return server

    def _remove(self, route: Route) -> None:
        host, port = parse_listen(route.listen)
        server = self._servers.get((host, port))
        if server is None:
            return
        methods = server.routes.get(route.path, {})
        entry = methods.get(route.method)
        if entry is not None and entry[1] == route.owner:
            # kept as "unavailable" (503 with Retry-After) until added again or the listener
            # closes: a sender must retry, not take a 404 for a permanent refusal
            methods[route.method] = (None, route.owner)

    def port(self, listen: str) -> int | None:
        """The port ``listen`` is bound to (its own, or the one chosen for port 0)."""
        server = self._servers.get(parse_listen(listen))
        return None if server is None else server.bound_port

    async def close(self) -> None:
        """Stop every server (end of the run)."""
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.listener.close()  # no new connections; the open ones end with the runner
            await server.runner.cleanup()
            for guard in list(server.guards.values()):
                guard.transport.close()


class HttpRoutes:
    """A connector's view of the listeners (``context.http``): the routes it adds carry its
    name for clash messages and are removed together when it stops."""

    def __init__(self, listeners: HttpListeners | None, owner: str) -> None:
        self.listeners = listeners if listeners is not None else HttpListeners()
        self.owner = owner
        self.routes: list[Route] = []

    async def add_route(
        self,
        listen: str,
        method: str,
        path: str,
        handler: Handler,
        tls: tuple[str, str] | None = None,
        header_timeout: float = HEADER_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> Route:
        """Serve ``method path`` (``"*"``: any method) on ``listen`` with ``handler``;
        ``tls``: (certificate file, key file) to serve the address over HTTPS;
        ``header_timeout`` and ``max_connections``: see :meth:`HttpListeners.add_route`."""
        route = await self.listeners.add_route(
            listen, method, path, handler, self.owner, tls, header_timeout, max_connections
        )
        self.routes.append(route)
        return route

    def remove_all(self) -> None:
        """Remove every route this connector added (the worker calls it when it stops)."""
        for route in self.routes:
            route.remove()
        self.routes.clear()


def problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    """An RFC 7807 ``application/problem+json`` response (no value from the request in it)."""
    from aiohttp import web

    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    return web.Response(
        status=status,
        text=body,
        content_type="application/problem+json",
        headers=headers,
    )


def _unavailable() -> web.Response:
    return problem(
        503,
        "Service Unavailable",
        "the pipeline serving this path is stopping or restarting; retry later",
        {"Retry-After": "1"},
    )


def _owners(server: _Server) -> str:
    owners = sorted({owner for methods in server.routes.values() for _, owner in methods.values()})
    return ", ".join(owners) or "no route"
