"""The admin HTTP server: the REST API of :mod:`.openapi`, ``/metrics`` and the dashboard.

It is an aiohttp application of its own rather than routes on the shared listener
(:mod:`meshconnect.httplisten`): that listener dispatches exact paths owned by connectors that
come and go with their pipelines, while the admin API needs templated paths
(``/connectors/{name}/…``), one auth middleware over everything, and must be up before any
pipeline starts and stay up while pipelines are stopped, restarted and the run drains.

Auth: every mutating call (PUT, PATCH, POST, DELETE) needs ``Authorization: Bearer TOKEN``.
When the operator gives a token (``--admin-token`` / ``MESHCONNECT_ADMIN_TOKEN``), every call
needs it; without one, a random token is made for the run and written to
``<state dir>/admin.token`` (mode 0600) for the local CLI, reads stay open, and the server
refuses to bind an address that is not loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.interpolate import redact
from ..errors import ConfigError, MeshconnectError, ValidationErrors
from ..httplisten import parse_listen
from .control import Controller, NotFound, Refused
from .openapi import document

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["DEFAULT_LISTEN", "AdminServer", "is_loopback", "token_file"]

log = logging.getLogger("meshconnect.admin")

DEFAULT_LISTEN = "127.0.0.1:8083"
_MUTATING = {"PUT", "PATCH", "POST", "DELETE"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_file(state: str | os.PathLike[str] | None) -> Path:
    """Where a run without an operator token keeps the token it made (for the local CLI)."""
    from ..mesh import state_dir

    return Path(state_dir(state)) / "admin.token"


class AdminServer:
    """Serves the admin API for ``controller`` on ``listen`` (``HOST:PORT``)."""

    def __init__(
        self,
        controller: Controller,
        listen: str = DEFAULT_LISTEN,
        token: str | None = None,
        state: str | os.PathLike[str] | None = None,
    ) -> None:
        self.controller = controller
        self.host, self.port = parse_listen(listen)
        self.listen = listen
        #: Whether the operator gave the token (then every call needs it).
        self.token_given = bool(token)
        if not token and not is_loopback(self.host):
            raise ConfigError(
                f"--admin {listen}: without a token the admin API binds only loopback "
                "(127.0.0.1, ::1, localhost); set MESHCONNECT_ADMIN_TOKEN (or --admin-token) "
                "to serve other addresses"
            )
        self.token = token or secrets.token_urlsafe(32)
        self.state = state
        self.token_path: Path | None = None
        self._runner: Any = None
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind and serve; returns the bound port. A bind failure is a ConfigError."""
        from aiohttp import web

        app = web.Application(middlewares=[self._guard], client_max_size=1 << 20)
        self._routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"--admin {self.listen}: cannot bind: {exc.strerror}") from exc
        self._runner = runner
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        if not self.token_given:
            self.token_path = token_file(self.state)
            self.token_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.token + "\n")
        self._sampler = asyncio.create_task(self._sample(), name="admin-rates")
        log.info(
            "admin API on http://%s:%d/ (%s)",
            self.host if ":" not in self.host else f"[{self.host}]",
            self.port,
            "token required for every call"
            if self.token_given
            else f"token for changes in {self.token_path}",
        )
        return self.port

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.token_path is not None:
            with contextlib.suppress(OSError):
                self.token_path.unlink()

    async def _sample(self) -> None:
        while True:
            self.controller.sample()
            await asyncio.sleep(1.0)

    # -- middleware ----------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return False
        return hmac.compare_digest(given.strip().encode(), self.token.encode())

    @property
    def _guard(self) -> Any:
        from aiohttp import web

        @web.middleware
        async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
            # The dashboard page holds no data (it asks for the token itself).
            if not self.token_given and not _local_host(request.host):
                # Reads are open on loopback: a web page must not reach them by pointing a
                # name of its own at 127.0.0.1 (DNS rebinding).
                return problem(
                    403,
                    "Forbidden",
                    f"Host {request.host!r} is not a loopback name; without a token only "
                    "localhost and loopback addresses are served",
                )
            public = request.method == "GET" and request.path in ("/", "/dashboard.html")
            needs = request.method in _MUTATING or (self.token_given and not public)
            if needs and not self._authorized(request):
                given = "Authorization" in request.headers
                return problem(
                    401,
                    "Unauthorized",
                    # A wrong token is not a missing one; and the token file is named whole,
                    # for a client run from another directory than the worker.
                    ("the bearer token given is not this worker's" if given else
                     "this call needs Authorization: Bearer <token>")
                    + ("" if self.token_given or self.token_path is None else
                       f" (the token is in {self.token_path.absolute()})"),
                    {"WWW-Authenticate": 'Bearer realm="meshconnect"'},
                )  # fmt: skip
            try:
                return await handler(request)
            except web.HTTPException as exc:
                if exc.status >= 400:
                    return problem(exc.status, exc.reason, exc.text or exc.reason)
                raise
            except NotFound as exc:
                return problem(404, "Not Found", str(exc))
            except Refused as exc:
                return problem(409, "Conflict", str(exc))
            except ValidationErrors as exc:
                return problem(
                    400,
                    "Bad Request",
                    f"{len(exc.problems)} problem(s) found",
                    problems=[_problem(p) for p in exc.problems],
                )
            except MeshconnectError as exc:
                return problem(400, "Bad Request", str(exc))
            except Exception:  # a fault of ours: logged (secrets masked), told as a problem
                log.exception("admin API: %s %s failed", request.method, request.path)
                return problem(500, "Internal Server Error", "the worker's log has the traceback")

        return guard

    # -- routes --------------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.dashboard)
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/health", self.health)
        r.add_get("/ready", self.ready)
        r.add_get("/metrics", self.metrics)
        r.add_get("/topics", self.topics)
        r.add_get("/cluster", self.cluster)
        r.add_get("/connector-plugins", self.plugins)
        r.add_put("/connector-plugins/{type}/config/validate", self.validate)
        r.add_get("/connectors", self.connectors)
        for path in ("/connectors/{name}", "/connectors/{name}/config"):
            r.add_put(path, self.put)
            r.add_delete(path, self.delete)
        r.add_get("/connectors/{name}", self.info)
        r.add_get("/connectors/{name}/config", self.config)
        r.add_get("/connectors/{name}/status", self.status)
        r.add_put("/connectors/{name}/pause", self.pause)
        r.add_put("/connectors/{name}/resume", self.resume)
        r.add_put("/connectors/{name}/stop", self.stop)
        r.add_post("/connectors/{name}/restart", self.restart)
        r.add_get("/connectors/{name}/offsets", self.offsets)
        r.add_patch("/connectors/{name}/offsets", self.patch_offsets)
        r.add_delete("/connectors/{name}/offsets", self.delete_offsets)

    async def dashboard(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        page = resources.files(__package__).joinpath("dashboard.html").read_bytes()
        return web.Response(
            body=page,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-store", "Content-Security-Policy": _CSP},
        )

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        from .. import __version__

        return reply(document(__version__))

    async def health(self, request: web.Request) -> web.StreamResponse:
        return reply({"status": "UP"})

    async def ready(self, request: web.Request) -> web.StreamResponse:
        worker = self.controller.worker
        if worker.stopping:
            return reply({"status": "NOT_READY", "detail": "stopping"}, 503)
        cluster = self.controller.cluster
        if cluster is not None:
            # A member is ready once it joined and the units it took are out of STARTING.
            if not getattr(worker.member, "joined", False):
                return reply({"status": "NOT_READY", "detail": f"joining cluster {cluster}"}, 503)
            keys = set(worker.member.local_status_keys().values())
            starting = sorted(
                k for k, s in worker.statuses.items() if k in keys and s.state == "STARTING"
            )
            if starting:
                return reply(
                    {"status": "NOT_READY", "detail": "starting: " + ", ".join(starting)}, 503
                )
            return reply({"status": "READY"})
        if worker.ownership is None:
            return reply({"status": "NOT_READY", "detail": "taking the store's leases"}, 503)
        starting = sorted(k for k, s in worker.statuses.items() if s.state == "STARTING")
        if starting or len(worker.tasks) < len(self.controller.pipelines):
            return reply({"status": "NOT_READY", "detail": "starting: " + ", ".join(starting)}, 503)
        return reply({"status": "READY"})

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        from ..metrics import CONTENT_TYPE

        text = redact(await self.controller.worker.metrics.scrape())
        return web.Response(body=text.encode("utf-8"), headers={"Content-Type": CONTENT_TYPE})

    async def topics(self, request: web.Request) -> web.StreamResponse:
        store = self.controller.worker.store
        infos = await store.topics()
        lag: dict[str, dict[str, int]] = {}
        for g in await store.groups():
            for topic, offset in g.offsets.items():
                lag.setdefault(topic, {})[g.group] = offset
        ends = {info.name: info.end for info in infos}
        for topic, groups in lag.items():
            for group, offset in groups.items():
                groups[group] = max(0, ends.get(topic, offset) - offset)
        # This run's sinks that have not committed yet lag too (by all they have to read).
        for pipeline in self.controller.pipelines:
            for (topic, group), records in (await self.controller.group_lags(pipeline)).items():
                lag.setdefault(topic, {})[group] = records
        rows = [
            {
                "topic": info.name,
                "records": info.end - info.start,
                "start": info.start,
                "end": info.end,
                "lag": lag.get(info.name, {}),
            }
            for info in infos
        ]
        return reply(rows)

    async def cluster(self, request: web.Request) -> web.StreamResponse:
        return reply(await self.controller.cluster_view())

    async def plugins(self, request: web.Request) -> web.StreamResponse:
        return reply([e.as_dict() for e in self.controller.registry.entries])

    async def validate(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["type"]
        kind = request.query.get("kind")
        if kind not in (None, "source", "sink"):
            return problem(400, "Bad Request", "kind: source or sink")
        body = await _body(request)
        if not isinstance(body, dict):
            return problem(400, "Bad Request", "the body must be a JSON object (the config)")
        if kind is None:
            kinds = {e.kind for e in self.controller.registry.entries if e.name == name}
            kind = "source" if "source" in kinds or not kinds else "sink"
        entry: dict[str, Any] = {"connector": name, "config": body}
        pipeline = {"source": entry} if kind == "source" else {"sinks": [entry]}
        try:
            self.controller.load("validate", pipeline)
            problems = []
        except ValidationErrors as exc:
            prefix = "source.config." if kind == "source" else "sinks[0].config."
            problems = [
                {**_problem(p, prefix), "location": f"connector-plugins/{name}/config"}
                for p in exc.problems
            ]
        return reply({"name": name, "kind": kind, "error_count": len(problems),
                      "problems": problems})  # fmt: skip

    async def connectors(self, request: web.Request) -> web.StreamResponse:
        expand = set(request.query.getall("expand", []))
        if expand - {"status", "info"}:
            return problem(400, "Bad Request", "expand: status and/or info")
        names = [p.name for p in self.controller.pipelines]
        if not expand:
            return reply(names)
        out: dict[str, Any] = {}
        for name in names:
            item: dict[str, Any] = {}
            if "status" in expand:
                item["status"] = await self.controller.status(name)
            if "info" in expand:
                item["info"] = self.controller.info(name)
            out[name] = item
        return reply(out)

    async def info(self, request: web.Request) -> web.StreamResponse:
        return reply(self.controller.info(request.match_info["name"]))

    async def config(self, request: web.Request) -> web.StreamResponse:
        return reply(self.controller.info(request.match_info["name"])["config"])

    async def put(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = await _body(request)
        created = await self.controller.put(name, body)
        return reply(self.controller.info(name), 201 if created else 200)

    async def delete(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        await self.controller.delete(request.match_info["name"])
        return web.Response(status=204)

    async def status(self, request: web.Request) -> web.StreamResponse:
        return reply(await self.controller.status(request.match_info["name"]))

    async def _done(self, name: str) -> web.StreamResponse:
        state = (await self.controller.status(name))["state"]
        return reply({"name": name, "state": state}, 202)

    async def pause(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        await self.controller.pause(name)
        return await self._done(name)

    async def resume(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        await self.controller.resume(name)
        return await self._done(name)

    async def stop(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        await self.controller.stop(name)
        return await self._done(name)

    async def restart(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        await self.controller.restart(name)
        return await self._done(name)

    async def offsets(self, request: web.Request) -> web.StreamResponse:
        return reply(await self.controller.offsets(request.match_info["name"]))

    def _dry_run(self, request: web.Request) -> bool:
        # An offsets change takes dry_run alone: a misspelt one (`?dry-run=true`, `?dryrun`)
        # was ignored, and the look before the leap moved the offsets for real.
        unknown = sorted(set(request.query) - {"dry_run"})
        if unknown:
            raise ConfigError(
                f"unknown query parameter {unknown[0]!r}: this call takes dry_run "
                "(true or false) only; nothing was changed"
            )
        value = request.query.get("dry_run", "false").lower()
        if value not in ("true", "false", "1", "0"):
            raise ConfigError("dry_run: true or false")
        return value in ("true", "1")

    async def patch_offsets(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        dry_run = self._dry_run(request)
        body = await _body(request)
        targets = self.controller.reset_targets(name, body)
        return reply(await self.controller.reset(name, targets, dry_run))

    async def delete_offsets(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        dry_run = self._dry_run(request)
        targets = self.controller.everything(name)
        return reply(await self.controller.reset(name, targets, dry_run))


#: The dashboard runs only its own inline script and talks only to this server.
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:"
)


def _local_host(host: str) -> bool:
    """Whether a Host header names this machine's loopback (``localhost``, ``127.0.0.1:8083``,
    ``[::1]:8083``)."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name.startswith("["):
        name = name[1 : name.find("]")]
    return is_loopback(name.lower())


#: The deepest nesting of arrays and objects a body may have: a pipeline needs about 10; a
#: body nested thousands deep would exhaust the recursion of the JSON parser or the loader.
MAX_DEPTH = 64


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise ConfigError("the request needs a JSON body")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ConfigError(f"the body is nested more than {MAX_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the body is not JSON: {exc}") from None
    if _depth(data) > MAX_DEPTH:
        raise ConfigError(f"the body is nested more than {MAX_DEPTH} levels deep")
    return data


def _depth(data: Any) -> int:
    """How deep arrays and objects nest in ``data`` (without recursion)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in value)
    return deepest


def _problem(p: Any, field_prefix: str = "") -> dict[str, Any]:
    """A validation problem as JSON: ``location`` is where in the API (``connectors/NAME/
    config``), without the line and column of the temporary file it was checked in; the
    message names the field by its path in the body (``field_prefix`` cut off)."""
    message = p.message
    if field_prefix and message.startswith(field_prefix):
        message = message[len(field_prefix) :]
    return {"location": None if p.location is None else p.location.file, "message": message}


def reply(data: Any, status: int = 200) -> web.Response:
    """JSON with every secret the run knows masked (:func:`..config.interpolate.redact`)."""
    from aiohttp import web

    text = redact(json.dumps(data, default=str))
    return web.Response(text=text, status=status, content_type="application/json")


def problem(
    status: int,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    problems: list[dict[str, Any]] | None = None,
) -> web.Response:
    from aiohttp import web

    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                            "detail": detail}  # fmt: skip
    if problems is not None:
        body["problems"] = problems
    return web.Response(
        text=redact(json.dumps(body)),
        status=status,
        content_type="application/problem+json",
        headers=headers,
    )
