"""The ``meshconnect`` command line.

Heavy imports (the worker, pydantic models, client libraries) happen inside the commands, so
``meshconnect --help`` stays fast and never imports a connector's client library.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from .config.loader import LoadedConfig
    from .mesh.store import MeshStore
    from .offsets import ResetPlan
    from .plugins import Registry

__all__ = ["main"]


class _Options:
    def __init__(
        self, state: str | None, store: str | None, plugins: str | None, strict: bool
    ) -> None:
        self.state = state
        self.store = store
        self.plugins = plugins
        self.strict = strict
        self._registry: Registry | None = None

    def registry(self) -> Registry:
        if self._registry is None:
            from .errors import PluginError
            from .plugins import PluginPolicy, load_registry

            try:
                policy = PluginPolicy.read(self.plugins)
                self._registry = load_registry(policy, strict=self.strict or None)
            except PluginError as exc:
                raise _Fail(str(exc)) from None
        return self._registry

    def store_url(self, config: LoadedConfig | None = None) -> str:
        from .config.interpolate import register_secrets
        from .mesh import default_store_url
        from .secrets import url_secrets

        if self.store:
            url = self.store
        elif config is not None and config.store:
            url = config.store
        elif os.environ.get("MESHCONNECT_STORE"):
            url = os.environ["MESHCONNECT_STORE"]
        else:
            return default_store_url(self.state)
        # A password in a --store or $MESHCONNECT_STORE URL: masked in all this prints or
        # logs, the store client's own errors included.
        register_secrets(url_secrets(url))
        return url

    def load(self, files: Sequence[str]) -> LoadedConfig:
        from .config.interpolate import register_secrets
        from .config.loader import load_pipeline_files
        from .errors import MeshconnectError, ValidationErrors

        try:
            config = load_pipeline_files(files, self.registry())
            # Masked in everything this command prints or logs from now on.
            register_secrets(config.secrets)
            return config
        except ValidationErrors as exc:
            for problem in exc.problems:
                _echo(str(problem), err=True)
            _echo(f"{len(exc.problems)} problem(s) found", err=True)
            sys.exit(1)
        except MeshconnectError as exc:
            _echo(f"error: {exc}", err=True)
            sys.exit(1)

    def open_store(self, url: str, existing: bool = False) -> MeshStore:
        """The store of ``url``; with ``existing`` (a command that only reads it), an embedded
        SQLite store whose file is not there is an error saying where it looked, rather than
        a new, empty store made in the current directory (`topics list` run in the wrong
        place created ``./.meshconnect/mesh.db`` and listed nothing)."""
        from .errors import MeshconnectError
        from .mesh import open_store

        if existing and url.startswith("sqlite:///"):
            from .mesh.sqlite import store_path

            path = store_path(url)
            if path is not None and not path.exists():
                raise _Fail(
                    f"no mesh store at {path}: a run keeps its store in its state directory "
                    "(--state, default ./.meshconnect); give the run's --state or --store"
                )
        try:
            return open_store(url, self.registry())
        except MeshconnectError as exc:
            raise _Fail(str(exc)) from None


pass_options = click.make_pass_decorator(_Options)


class _Fail(click.ClickException):
    """A command's error, printed as ``Error: message`` with non-printable characters escaped."""

    def format_message(self) -> str:
        from .config.interpolate import redact
        from .textsafe import printable

        return printable(redact(self.message), keep="\n")


def _echo(message: str, err: bool = False) -> None:
    """``click.echo`` with the secrets of the loaded files masked and every non-printable
    character escaped (names and messages can come from records and pipeline files: no escape
    sequence reaches the terminal raw)."""
    from .config.interpolate import redact
    from .textsafe import printable

    click.echo(printable(redact(message), keep="\n"), err=err)


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # A library's or plugin's warning goes through the same handler: Python would print it
    # to stderr as it is (not masked, not escaped, not JSON with --log-format json).
    logging.captureWarnings(True)
    # So does an exception that ends a library's or plugin's thread.
    threading.excepthook = _log_thread_exception


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("meshconnect").error(
        "thread %s stopped on an unexpected error",
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
    )


def _clean(text: str) -> str:
    """A log text with the run's secrets masked and control characters escaped."""
    from .config.interpolate import redact
    from .textsafe import printable

    return printable(redact(text), keep="\n\t")


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _clean(super().format(record))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        from .config.interpolate import redact

        out: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "terminal_width": 100})
@click.version_option(package_name="meshconnect")
@click.option(
    "--state",
    metavar="DIR",
    envvar="MESHCONNECT_STATE",
    help="State directory of the embedded store (default ./.meshconnect).",
)
@click.option("--store", metavar="URL", help="Mesh store URL; overrides `store:` in the files.")
@click.option(
    "--plugins",
    "plugins_file",
    metavar="FILE",
    help="Plugin policy file (default ./plugins.toml or $MESHCONNECT_PLUGINS).",
)
@click.option("--strict", is_flag=True, help="Fail when any plugin fails to load.")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.option(
    "--log-format", default="text", show_default=True, type=click.Choice(["text", "json"])
)
@click.pass_context
def cli(
    ctx: click.Context,
    state: str | None,
    store: str | None,
    plugins_file: str | None,
    strict: bool,
    log_level: str,
    log_format: str,
) -> None:
    """meshconnect: connectors, transforms and a durable mesh, declared in YAML."""
    _setup_logging(log_level, log_format)
    ctx.obj = _Options(state, store, plugins_file, strict)


# -- run / validate ---------------------------------------------------------------------------


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "--metrics",
    "metrics_listen",
    metavar="HOST:PORT",
    help="Serve the Prometheus metrics at GET /metrics on this address (docs/metrics.md).",
)
@click.option(
    "--admin",
    metavar="HOST:PORT",
    is_flag=False,
    flag_value="127.0.0.1:8083",
    default=None,
    envvar="MESHCONNECT_ADMIN",
    help="Serve the admin API, /metrics and the dashboard (off unless given; --admin alone: "
    "127.0.0.1:8083). Without a token only loopback addresses bind.",
)
@click.option(
    "--admin-token",
    metavar="TOKEN",
    envvar="MESHCONNECT_ADMIN_TOKEN",
    help="Bearer token every admin call then needs (prefer $MESHCONNECT_ADMIN_TOKEN). "
    "Without it changes need the token written to STATE/admin.token.",
)
@click.option(
    "--cluster",
    "cluster_name",
    metavar="NAME",
    envvar="MESHCONNECT_CLUSTER",
    help="Run as a member of this worker cluster on a redis:// or nats:// store (overrides "
    "`cluster:`; FILES may then be left out: the cluster's pipelines run). docs/scaleout.md",
)
@click.option(
    "--failover-timeout",
    metavar="DURATION",
    help="Cluster mode: longest time a dead member's work stays without an owner "
    "(default 10s, or the files' cluster: failover_timeout).",
)
@pass_options
def run(
    options: _Options,
    files: tuple[str, ...],
    metrics_listen: str | None,
    admin: str | None,
    admin_token: str | None,
    cluster_name: str | None,
    failover_timeout: str | None,
) -> None:
    """Run every pipeline in FILES in one worker, in the foreground.

    SIGINT/SIGTERM stop polling, drain, flush sinks, commit offsets and exit 0. When every
    source is bounded the run exits 0 once every record is delivered and committed. A re-run
    resumes from the committed offsets. With --admin, FILES may be left out: pipelines are
    then added over the admin API (docs/operations.md) and kept in the store. With --cluster
    (or `cluster:` in the files) the worker joins a cluster of workers that share the
    pipelines and split their sources and sinks (docs/scaleout.md); it runs until stopped.
    """
    if admin is not None and ":" not in admin:
        # `run --admin pipelines.yaml`: the optional value took a file (HOST:PORT has a colon).
        files, admin = (admin, *files), "127.0.0.1:8083"
    if not files and admin is None and cluster_name is None:
        raise click.UsageError(
            "give pipeline FILES (or --admin to add pipelines over its API, or --cluster NAME "
            "to run a cluster's pipelines)"
        )
    if admin is not None and metrics_listen is not None and _same_port(admin, metrics_listen):
        raise click.UsageError(
            f"--metrics {metrics_listen}: the admin API on that port serves /metrics already; "
            "leave --metrics out or give it another port"
        )
    config = options.load(files)
    if cluster_name is not None or failover_timeout is not None:
        _cluster_options(config, cluster_name, failover_timeout)
    url = options.store_url(config)
    if config.cluster is not None:
        from .cluster import ClusterError, check_cluster_store

        try:
            check_cluster_store(config, url)
        except ClusterError as exc:
            _echo(f"error: {exc}", err=True)
            sys.exit(1)
    store = options.open_store(url)
    from .errors import ConfigError, StoreError
    from .mesh.ownership import OwnershipError

    admin_setup = None
    if admin is not None:
        admin_setup = (admin, admin_token or None, options)
    try:
        import asyncio

        code = asyncio.run(_run(config, store, admin_setup, metrics_listen, options.registry()))
    except (OwnershipError, ConfigError) as exc:  # a --metrics address refused, a cluster
        _echo(f"error: {exc}", err=True)
        code = 1
    except StoreError as exc:  # unreachable past reconnect_timeout, refused credentials
        logging.getLogger("meshconnect").debug("the store failed", exc_info=True)
        _echo(f"error: {exc}", err=True)
        code = 1
    except Exception:  # logged (secrets masked) rather than a raw traceback on stderr
        logging.getLogger("meshconnect").exception("the worker stopped on an unexpected error")
        code = 1
    sys.exit(code)


def _cluster_options(config: LoadedConfig, name: str | None, failover_timeout: str | None) -> None:
    """Apply --cluster and --failover-timeout to ``config`` (they override ``cluster:``)."""
    from pydantic import ValidationError

    from .config.model import ClusterConfig

    given: dict[str, Any] = {}
    if config.cluster is not None:
        given = config.cluster.model_dump()
    if name is not None:
        given["name"] = name
        config.cluster_at = ""
    if failover_timeout is not None:
        given["failover_timeout"] = failover_timeout
    if "name" not in given:
        raise click.UsageError("--failover-timeout needs --cluster NAME (or cluster: in a file)")
    try:
        config.cluster = ClusterConfig.model_validate(given)
    except ValidationError as exc:
        options = {"name": "--cluster", "failover_timeout": "--failover-timeout"}
        problems = "; ".join(
            f"{options.get(str(e['loc'][0]), e['loc'][0]) if e['loc'] else 'cluster'}: "
            f"{str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise click.UsageError(problems) from None


def tune_runtime() -> None:
    """Process-wide settings for a worker process (``meshconnect run`` owns its process):

    * Records are short-lived containers made by the hundred thousand: with CPython's default
      thresholds the cyclic collector runs every 700 allocations and rescans long-lived
      objects often. Freeze what start-up made and collect less often; reference counting
      still frees each record as soon as it is delivered. No collection before the freeze:
      it took ~20 ms of every run's start-up to free ~60 objects, which stay frozen instead.
    * The event loop's thread and the store's thread hand the GIL back and forth; the
      default 5 ms switch interval made the store thread wait behind Python work. 1 ms
      measured ~25% faster on the file pipeline benchmark (docs/benchmarks.md).
    """
    import gc

    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 50_000), max(gen1, 20), max(gen2, 100))
    sys.setswitchinterval(0.001)


def _same_port(admin: str, metrics: str) -> bool:
    """Whether --admin and --metrics would bind one port (of the same or any address)."""
    from .errors import ConfigError
    from .httplisten import parse_listen

    try:
        (a_host, a_port), (m_host, m_port) = parse_listen(admin), parse_listen(metrics)
    except ConfigError:
        return False  # told when each is bound
    wildcard = {"0.0.0.0", "::", ""}
    return a_port == m_port != 0 and (a_host == m_host or {a_host, m_host} & wildcard != set())


async def _run(
    config: LoadedConfig,
    store: MeshStore,
    admin: tuple[str, str | None, _Options] | None = None,
    metrics_listen: str | None = None,
    registry: Registry | None = None,
) -> int:
    from .errors import ConfigError
    from .worker import Worker

    tune_runtime()
    await store.open()
    worker = Worker(config, store)
    worker.registry = registry
    if metrics_listen:
        from .metrics import serve_metrics

        try:
            await serve_metrics(worker.http, metrics_listen, worker.metrics)
        except BaseException:
            await worker.http.close()
            await store.close()
            raise
    server = None
    if admin is not None:
        from .admin import AdminServer, Controller

        listen, token, options = admin
        controller = Controller(worker, options.registry())
        try:
            if config.cluster is None:  # a cluster's pipelines are its members' files'
                await controller.load_persisted()
            server = AdminServer(controller, listen, token, options.state)
            await server.start()
            worker.http.reserve(server.port, f"the admin API (--admin {listen})")
        except ConfigError as exc:
            _echo(f"error: {exc}", err=True)
            await worker.http.close()
            await store.close()
            return 1
    import asyncio

    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            logging.getLogger("meshconnect").warning("second signal: exiting without draining")
            os._exit(130)
        worker.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        return await worker.run()
    finally:
        if server is not None:
            await server.close()
        await store.close()


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@pass_options
def validate(options: _Options, files: tuple[str, ...]) -> None:
    """Check pipeline FILES; print each problem as FILE:LINE:COL: message.

    Exit 0 when valid, 1 otherwise. Secret values are never printed.
    """
    config = options.load(files)
    count = len(config.pipelines)
    _echo(f"ok: {count} pipeline{'s' if count != 1 else ''} in {len(files)} file(s)")


@cli.command("test")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@pass_options
def test_command(options: _Options, files: tuple[str, ...]) -> None:
    """Run pipeline config tests: feed each case's input records through a pipeline's
    transforms (and a sink's) and check the records out, their topics and the dead letters.

    FILES are *_test.yaml files (format: docs/testing.md). Prints a diff for each failing
    case; exit 0 when every case passes, 1 otherwise or when a file has problems
    (FILE:LINE:COL: message).
    """
    from .errors import ValidationErrors
    from .pipetest import load_test_files, run_test_file

    try:
        tests = load_test_files(list(files), options.registry())
    except ValidationErrors as exc:
        for problem in exc.problems:
            _echo(str(problem), err=True)
        _echo(f"{len(exc.problems)} problem(s) found", err=True)
        sys.exit(1)
    passed = failed = 0
    for test in tests:
        for result in run_test_file(test):
            where = f"{result.location.file}:{result.location.line}"
            if result.passed:
                passed += 1
                _echo(f"PASS {where}: {result.name}")
                continue
            failed += 1
            _echo(f"FAIL {where}: {result.name}")
            for diff in result.diffs:
                _echo("\n".join("    " + line for line in diff.splitlines()))
    summary = f"{passed} passed, {failed} failed"
    _echo(summary if not failed else f"FAILED: {summary}")
    sys.exit(1 if failed else 0)


@cli.command()
@click.option("--connector", metavar="NAME", help="Only this connector's config schema.")
@click.option(
    "--kind",
    type=click.Choice(["source", "sink"]),
    default=None,
    help="With --connector: the source's or the sink's schema (needed when the name is both).",
)
@pass_options
def schema(options: _Options, connector: str | None, kind: str | None) -> None:
    """Print the JSON Schema of pipeline files (for editor completion), with every installed
    connector's and transform's options."""
    from .schema import connector_schema, pipeline_file_schema

    registry = options.registry()
    if connector:
        try:
            out = connector_schema(registry, connector, kind)
        except KeyError as exc:
            raise _Fail(str(exc.args[0])) from None
    else:
        out = pipeline_file_schema(registry)
    _echo(json.dumps(out, indent=2))


# -- plugins ----------------------------------------------------------------------------------


@cli.group()
def plugins() -> None:
    """List and install plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_options
def plugins_list(options: _Options, as_json: bool) -> None:
    """Every connector and transform with kind, version, distribution and status."""
    registry = options.registry()
    rows = [e.as_dict() for e in registry.entries]
    if as_json:
        _echo(json.dumps(rows, indent=2))
        return
    headers = ["NAME", "KIND", "VERSION", "DISTRIBUTION", "STATUS"]
    table = [
        [
            r["name"],
            r["kind"],
            r["version"] or "-",
            r["distribution"] or "-",
            r["status"] + (f" ({r['reason']})" if r["reason"] else ""),
        ]
        for r in rows
    ]
    _echo(_table(headers, table))


@plugins.command("install")
@click.argument("spec")
@click.option("--yes", is_flag=True, help="Do not ask before running pip.")
@pass_options
def plugins_install(options: _Options, spec: str, yes: bool) -> None:
    """pip-install a plugin distribution SPEC and record it in plugins.toml."""
    import subprocess

    if not yes and sys.stdin.isatty():
        click.confirm(f"pip install {spec!r} into {sys.prefix}?", abort=True)
    command = [sys.executable, "-m", "pip", "install", spec]
    _echo(" ".join(command), err=True)
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise _Fail(f"pip install {spec} failed (exit {result.returncode})")
    path = Path(options.plugins or os.environ.get("MESHCONNECT_PLUGINS") or "plugins.toml")
    _record_install(path, spec)
    _echo(f"installed {spec}; recorded in {path}")


def _record_install(path: Path, spec: str) -> None:
    import tomlkit

    doc = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else tomlkit.document()
    section = doc.setdefault("plugins", tomlkit.table())
    installed = section.setdefault("installed", tomlkit.array())
    if spec not in installed:
        installed.append(spec)
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")


# -- new ------------------------------------------------------------------------------------


@cli.group()
def new() -> None:
    """Start a new package from a template."""


@new.command("connector")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="Where to write the package (default: ./NAME). Must not exist or be empty.",
)
def new_connector(name: str, directory: str | None) -> None:
    """Scaffold a third-party connector package NAME: pyproject with the entry point, a source
    and a sink with config models, tests running the conformance suites, a README."""
    from . import __version__
    from .errors import ConfigError
    from .scaffold import new_connector as write_package

    target = Path(directory or name)
    try:
        written = write_package(name, target, __version__, _names_in_use())
    except ConfigError as exc:
        raise _Fail(str(exc)) from None
    for path in written:
        _echo(str(path))
    _echo(f"next: meshconnect plugins install ./{target} && python -m pytest {target / 'tests'}")


def _names_in_use() -> dict[str, str]:
    """The connector and entry-point names the installed plugins use, each with its user."""
    from .plugins import load_registry

    registry = load_registry(strict=False)
    taken: dict[str, str] = {}
    for entry in registry.entries:
        who = f"{entry.distribution or entry.plugin} {entry.version or ''}".strip()
        if entry.kind in ("source", "sink"):
            taken.setdefault(entry.name, f"the {entry.kind} connector of {who}")
        taken.setdefault(entry.plugin, f"the entry point of {who}")
    return taken


# -- status / connectors (admin API clients) -------------------------------------------------

_admin_url = click.option(
    "--admin",
    "admin_url",
    metavar="URL",
    default="http://127.0.0.1:8083",
    show_default=True,
    envvar="MESHCONNECT_ADMIN_URL",
    help="The worker's admin API ($MESHCONNECT_ADMIN_URL).",
)
_admin_token = click.option(
    "--token",
    metavar="TOKEN",
    envvar="MESHCONNECT_ADMIN_TOKEN",
    help="Its bearer token ($MESHCONNECT_ADMIN_TOKEN; default: the one a local worker wrote "
    "to STATE/admin.token).",
)


def _client(options: _Options, url: str, token: str | None) -> Any:
    from .admin.client import AdminClient
    from .admin.server import token_file
    from .config.interpolate import register_secrets
    from .secrets import url_secrets

    client = AdminClient(url, token, token_file(options.state))
    # The token and a password or token in the URL: masked in all this command prints.
    register_secrets(url_secrets(url) | ({client.token} if client.token else set()))
    return client


@cli.command()
@_admin_url
@_admin_token
@click.option("--watch", "-w", is_flag=True, help="Keep the table up to date (Ctrl-C ends).")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between updates.")
@click.option(
    "--cluster",
    "cluster_name",
    metavar="NAME",
    envvar="MESHCONNECT_CLUSTER",
    help="Show worker cluster NAME from the store (--store or $MESHCONNECT_STORE): its "
    "members, pipelines, and which member owns each source and sink, with lease epochs.",
)
@click.option("--json", "as_json", is_flag=True, help="With --cluster: print JSON.")
@pass_options
def status(
    options: _Options,
    admin_url: str,
    token: str | None,
    watch: bool,
    interval: float,
    cluster_name: str | None,
    as_json: bool,
) -> None:
    """The connectors of a running worker (run --admin): state, records in and out, rates,
    consumer lag, restarts and last error, as a table (live with --watch). With --cluster:
    the members of a worker cluster and who owns what."""
    if cluster_name is not None:
        _cluster_status(options, cluster_name, as_json)
        return
    from .admin.client import AdminError

    try:
        from rich.console import Console
        from rich.live import Live
    except ImportError:
        raise _Fail("meshconnect status needs rich: pip install 'meshconnect[admin]'") from None
    client = _client(options, admin_url, token)

    def table(watching: bool = False) -> Any:
        try:
            data = client.call("GET", "/connectors?expand=status")
        except AdminError as exc:
            if not watching:
                raise _Fail(str(exc)) from None
            # A worker restarting (or gone for a moment) under a watch: say so and try again,
            # rather than end the watch that the docs say runs until Ctrl-C.
            from rich.text import Text

            return Text(f"{exc}; trying again every {interval:g} s (Ctrl-C ends)")
        return _status_table(data, console.width)

    console = Console()
    if not watch:
        console.print(table())
        return
    import signal
    import time

    # Ctrl-C ends the loop even when its KeyboardInterrupt is lost: raised while a finalizer
    # runs (a response or socket collected between two updates), Python reports it as
    # ignored, on the stderr that Live redirects, and the loop would run on (CI saw a watch
    # outlive its SIGINT by a minute, once).
    interrupted: list[bool] = []

    def on_interrupt(signum: int, frame: Any) -> None:
        interrupted.append(True)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        with Live(table(), console=console, auto_refresh=False) as live:
            while not interrupted:
                time.sleep(interval)
                if not interrupted:
                    live.update(table(watching=True), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, previous)


def _cluster_status(options: _Options, name: str, as_json: bool) -> None:
    import asyncio

    from .cluster import CLUSTER_SCHEMES, cluster_report
    from .errors import StoreError

    url = options.store_url()
    scheme = url.partition("://")[0]
    if scheme not in CLUSTER_SCHEMES:
        shown = f"{scheme}://…" if "@" in url else url
        raise _Fail(
            f"--cluster {name}: a cluster runs on a redis:// or nats:// store, and this store is "
            f"{shown}; give --store or $MESHCONNECT_STORE"
        )
    store = options.open_store(url)

    async def report() -> dict[str, Any]:
        await store.open()
        try:
            return await cluster_report(store, name)
        finally:
            await store.close()

    try:
        data = asyncio.run(report())
    except StoreError as exc:  # unreachable, refused credentials: no traceback
        raise _Fail(str(exc)) from None
    if as_json:
        _echo(json.dumps(data, indent=2))
        return
    alive = [m for m in data["members"] if m["alive"]]
    _echo(f"cluster {name} on {data['store']}: {len(alive)} live member(s)")
    rows = [
        [m["worker"], "alive" if m["alive"] else "gone", f"{m['lease_left']:.1f}s", m["id"]]
        for m in data["members"]
    ]
    if rows:
        _echo(_table(["MEMBER", "STATE", "LEASE LEFT", "ID"], rows))
    units = [
        [
            f"{p['name']} v{p['version']}"
            + ("" if p["target_state"] == "STARTED" else f" {p['target_state']}"),
            u["unit"],
            u["worker"] or "(no owner)",
            "" if u["epoch"] is None else str(u["epoch"]),
        ]
        for p in data["pipelines"]
        for u in p["units"]
    ]
    _echo("")
    _echo(_table(["PIPELINE", "UNIT", "OWNER", "EPOCH"], units) if units else "no pipelines")


def _status_table(data: dict[str, Any], width: int = 120) -> Any:
    """The status table, one line a connector for a terminal ``width`` columns wide."""
    from rich.table import Table
    from rich.text import Text

    from .textsafe import printable

    colors = {"RUNNING": "green", "PAUSED": "yellow", "DEGRADED": "dark_orange",
              "FAILED": "red", "STOPPED": "bright_black"}  # fmt: skip
    headers = ("CONNECTOR", "STATE", "IN", "OUT", "IN/S", "OUT/S", "LAG", "RESTARTS")
    rows: list[list[Any]] = []
    for name, item in data.items():
        s = item["status"]
        error = s.get("error")
        where = ""
        if error and error.get("topic") is not None:
            where = f"[{error['topic']}@{error['offset']}] "
        restarts = str(s["restarts"])
        if s.get("next_restart_at"):
            restarts += f" (next {s['next_restart_at'][11:19]})"
        rows.append(
            [
                Text(printable(name)),
                Text(s["state"], style=colors.get(s["state"], "")),
                str(s["records_in"]),
                str(s["records_out"]),
                f"{s['rate_in']:.1f}",
                f"{s['rate_out']:.1f}",
                str(s["lag"]),
                restarts,
                Text(printable(where + error["message"]) if error else ""),
            ]
        )
    table = Table(box=None, pad_edge=False)
    used = 0
    for i, header in enumerate(headers):
        used += max([len(header)] + [len(str(row[i])) for row in rows]) + 2
        table.add_column(
            header, justify="left" if header in ("CONNECTOR", "STATE") else "right", no_wrap=True
        )
    # One line a connector: only the error gives way, cut to the terminal's width (its
    # failing record first, so that stays in sight); the whole text is in GET .../status.
    table.add_column(
        "LAST ERROR", no_wrap=True, overflow="ellipsis", max_width=max(20, width - used)
    )
    for row in rows:
        table.add_row(*row)
    return table


@cli.group()
def connectors() -> None:
    """Pause, resume or restart a connector of a running worker (run --admin)."""


def _control(options: _Options, url: str, token: str | None, method: str, path: str) -> None:
    from .admin.client import AdminError

    try:
        out = _client(options, url, token).call(method, path)
    except AdminError as exc:
        raise _Fail(str(exc)) from None
    _echo(f"{out['name']}: {out['state']}")


@connectors.command("pause")
@click.argument("name")
@_admin_url
@_admin_token
@pass_options
def connectors_pause(options: _Options, name: str, admin_url: str, token: str | None) -> None:
    """Pause connector NAME: its source stops polling, its sinks commit and wait."""
    _control(options, admin_url, token, "PUT", f"/connectors/{_quote(name)}/pause")


@connectors.command("resume")
@click.argument("name")
@_admin_url
@_admin_token
@pass_options
def connectors_resume(options: _Options, name: str, admin_url: str, token: str | None) -> None:
    """Resume connector NAME (paused or stopped)."""
    _control(options, admin_url, token, "PUT", f"/connectors/{_quote(name)}/resume")


@connectors.command("restart")
@click.argument("name")
@_admin_url
@_admin_token
@pass_options
def connectors_restart(options: _Options, name: str, admin_url: str, token: str | None) -> None:
    """Restart connector NAME: drain, flush, commit, start again (unpaused)."""
    _control(options, admin_url, token, "POST", f"/connectors/{_quote(name)}/restart")


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


# -- offsets ----------------------------------------------------------------------------------


@cli.group()
def offsets() -> None:
    """Show and reset source positions and sink consumer offsets."""


@offsets.command("show")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
@pass_options
def offsets_show(options: _Options, files: tuple[str, ...], as_json: bool) -> None:
    """Source positions and sink offsets (with lag); only those of FILES' pipelines if given
    (then a source with nothing committed says what its first start reads)."""
    config = options.load(files) if files else None
    # With FILES it says what each pipeline's first start reads, also before any run.
    store = options.open_store(options.store_url(config), existing=not files)
    import asyncio

    report = asyncio.run(_offsets_report(store, config))
    if as_json:
        _echo(json.dumps(report, indent=2))
        return
    for source in report["sources"]:
        _echo(f"source {source['id']}")
        if not source["positions"]:
            _echo(f"  (no committed position: {source.get('empty') or 'nothing read yet'})")
        for part, pos in source["positions"].items():
            _echo(f"  {part}: {json.dumps(pos)}")
    for group in report["sinks"]:
        _echo(f"sink {group['group']}")
        if not group["topics"]:
            _echo("  (no committed offset: starts from the beginning)")
        for t in group["topics"]:
            _echo(f"  {t['topic']}: offset {t['offset']} of {t['end']} (lag {t['lag']})")
        if group["state"] is not None:
            _echo(f"  state: {json.dumps(group['state'], sort_keys=True)}")


@offsets.command("reset")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("pipeline")
@click.option("--sink", "sink_name", metavar="NAME", help="Reset this sink (default: the source).")
@click.option(
    "--to",
    "target",
    default="beginning",
    show_default=True,
    help="beginning | end | a topic offset in digits, up to its end (sinks; each partition's, "
    "for a partitioned topic) | a JSON position per partition, of the fields the source "
    "writes (sources).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_options
def offsets_reset(
    options: _Options, file: str, pipeline: str, sink_name: str | None, target: str, yes: bool
) -> None:
    """Reset the source (or --sink NAME) of PIPELINE in FILE to the beginning, the end or a
    given position. Stop the worker first.

    Prints what moves and what happens to the output before asking: a sink keeps its output
    and state and goes on after what it committed (rewinding writes records again after the
    existing output; moving forward skips records). A JSON position the source could never
    have written (a partition it does not read, an unknown or missing field, a value of the
    wrong type or range) is refused, naming the partition and the field, and nothing is
    reset."""
    config = options.load([file])
    matches = [p for p in config.pipelines if p.name == pipeline]
    if not matches:
        names = ", ".join(p.name for p in config.pipelines)
        raise _Fail(f"no pipeline {pipeline!r} in {file} (pipelines: {names})")
    store = options.open_store(options.store_url(config))
    import asyncio

    asyncio.run(_refuse_while_owned(store, matches[0]))
    plan = asyncio.run(_reset_plan(store, matches[0], sink_name, target))
    _echo(plan.describe)
    if not yes and not click.confirm("Apply this reset?", default=False):
        _echo("nothing changed")
        sys.exit(1)
    asyncio.run(_apply_reset(store, plan))
    _echo("reset done")


async def _refuse_while_owned(store: MeshStore, pipeline: Any) -> None:
    """``offsets reset`` changes what a running worker reads: refuse while one owns the
    pipeline's source or sinks (docs/security.md, the one-owner rule)."""
    from .mesh.ownership import describe_owner, live_leases
    from .offsets import sink_groups, source_id

    names = [f"group {g}" for s in pipeline.sinks for g in sink_groups(pipeline, s.name)]
    if pipeline.source is not None:
        names.append(f"source {source_id(pipeline.name, pipeline.source.name)}")
    await store.open()
    try:
        held = await live_leases(store, names)
    finally:
        await store.close()
    if held:
        owners = ", ".join(sorted({describe_owner(lease.owner) for lease in held}))
        raise _Fail(
            f"pipeline {pipeline.name!r} is running ({owners} owns "
            f"{', '.join(lease.name for lease in held)}); stop it before resetting offsets"
        )


async def _reset_plan(
    store: MeshStore, pipeline: Any, sink_name: str | None, target: str
) -> ResetPlan:
    from .errors import MeshconnectError
    from .offsets import reset_plan

    await store.open()
    try:
        return await reset_plan(store, pipeline, sink_name, target)
    except MeshconnectError as exc:
        raise _Fail(str(exc)) from None
    finally:
        await store.close()


async def _offsets_report(store: MeshStore, config: LoadedConfig | None) -> dict[str, Any]:
    from .offsets import offsets_report

    await store.open()
    try:
        return await offsets_report(store, config)
    finally:
        await store.close()


async def _apply_reset(store: MeshStore, plan: ResetPlan) -> None:
    from .offsets import apply_reset

    await store.open()
    try:
        await apply_reset(store, plan)
    finally:
        await store.close()


# -- topics -----------------------------------------------------------------------------------


@cli.group()
def topics() -> None:
    """Inspect topics stored in the mesh."""


@topics.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_options
def topics_list(options: _Options, as_json: bool) -> None:
    """Every topic with its record count and each consumer group's lag."""
    store = options.open_store(options.store_url(), existing=True)
    import asyncio

    rows = asyncio.run(_topics_report(store))
    if as_json:
        _echo(json.dumps(rows, indent=2))
        return
    table = [
        [
            r["topic"],
            str(r["records"]),
            f"{r['start']}..{r['end']}",
            ", ".join(f"{g}={lag}" for g, lag in r["lag"].items()) or "-",
        ]
        for r in rows
    ]
    _echo(_table(["TOPIC", "RECORDS", "OFFSETS", "LAG"], table))


async def _topics_report(store: MeshStore) -> list[dict[str, Any]]:
    await store.open()
    try:
        infos = await store.topics()
        groups = await store.groups()
        rows = []
        for info in infos:
            lag = {
                g.group: max(0, info.end - g.offsets[info.name])
                for g in groups
                if info.name in g.offsets
            }
            rows.append(
                {
                    "topic": info.name,
                    "records": info.end - info.start,
                    "start": info.start,
                    "end": info.end,
                    "lag": lag,
                }
            )
        return rows
    finally:
        await store.close()


@topics.command("tail")
@click.argument("topic")
@click.option(
    "--from-beginning",
    is_flag=True,
    help="Start at the oldest stored record (with -n: print the first N records).",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records.")
@click.option(
    "-n",
    "lines",
    type=click.IntRange(min=0),
    default=None,
    help="How many records: the last N (default 10), or with --from-beginning the first N "
    "(default all).",
)
@pass_options
def topics_tail(
    options: _Options, topic: str, from_beginning: bool, follow: bool, lines: int | None
) -> None:
    """Print a topic's records as CloudEvents JSON lines.

    A topic with partitions prints each of them (TOPIC#0, TOPIC#1, ...; -n counts in each);
    'TOPIC#2' prints one. A topic that does not exist is an error (exit 1) naming it, except
    with --follow, which waits for it to appear."""
    if from_beginning and follow and lines is not None:
        raise click.UsageError("-n with --from-beginning --follow: give one or the other")
    # --follow waits for the topic, so also for the store a starting run is about to make.
    store = options.open_store(options.store_url(), existing=not follow)
    import asyncio

    try:
        asyncio.run(_tail(store, topic, from_beginning, follow, lines))
    except KeyboardInterrupt:
        pass


def _tail_parts(topic: str, names: Any) -> list[str]:
    """The stored topics ``topics tail TOPIC`` prints: ``TOPIC`` itself and its partitions
    ``TOPIC#0``, ``TOPIC#1``… in order (a sink naming ``TOPIC`` reads them all); only that
    partition for ``TOPIC#k``."""
    from .config.topics import partition_of, partitions_in
    from .mesh.routing import partition_topic

    if partition_of(topic) != (topic, 0):  # a partition named: that one
        return [topic] if topic in names else []
    parts = [partition_topic(topic, k) for k in partitions_in(topic, names)]
    return ([topic] if topic in names else []) + parts


async def _tail(
    store: MeshStore, topic: str, from_beginning: bool, follow: bool, n: int | None
) -> None:
    import asyncio

    from . import jsonvalue
    from .textsafe import printable_json

    await store.open()
    try:
        infos = {t.name: t for t in await store.topics()}
        parts = _tail_parts(topic, infos)
        if not parts:
            names = ", ".join(sorted(infos)) or "none"
            if not follow:
                raise _Fail(f"no topic {topic!r} in {store.url} (topics: {names})")
            _echo(f"topic {topic!r} does not exist yet; waiting for it", err=True)
        # Per stored topic (each partition): the next offset to print and where to stop.
        offsets: dict[str, int] = {}
        stops: dict[str, int | None] = {}
        for name in parts:
            start, end = infos[name].start, infos[name].end
            if from_beginning:
                offsets[name] = start
                stops[name] = None if n is None else start + n
            else:
                offsets[name] = max(start, end - (10 if n is None else n))
                stops[name] = None
        out = sys.stdout.buffer
        while True:
            printed = False
            for name, offset in offsets.items():
                stop = stops[name]
                limit = 1000 if stop is None else min(1000, stop - offset)
                records = await store.read(name, offset, limit) if limit > 0 else []
                for record in records:
                    line = jsonvalue.dumps(record.to_dict())
                    if not line.isascii():  # escape what a terminal would act on, JSON intact
                        line = printable_json(line.decode()).encode()
                    out.write(line + b"\n")
                out.flush()
                if records:
                    offsets[name] = records[-1].offset + 1  # type: ignore[operator]
                    printed = True
            if printed:
                continue
            if not follow:
                return
            await asyncio.wait([asyncio.ensure_future(store.data_changed())], timeout=1.0)
            # A partition that appears meanwhile is new: all of it is printed.
            infos = {t.name: t for t in await store.topics()}
            for name in _tail_parts(topic, infos):
                if name not in offsets:
                    offsets[name], stops[name] = infos[name].start, None
    finally:
        await store.close()


@topics.command("replay")
@click.argument("dead_letter_topic", metavar="DLQ_TOPIC")
@click.option("--to", "to", metavar="TOPIC", required=True, help="Topic to publish to.")
@click.option(
    "--where",
    metavar="EXPR",
    help="Replay only the dead letters for which EXPR is true; it sees the dead letter, e.g. "
    "\"errortype == 'DataError' and errorstage == 'sink'\".",
)
@click.option(
    "--from-beginning",
    is_flag=True,
    help="Start over: consider every stored dead letter, also those replayed before.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Count what would be replayed, and to which partition; change nothing.",
)
@pass_options
def topics_replay(
    options: _Options,
    dead_letter_topic: str,
    to: str,
    where: str | None,
    from_beginning: bool,
    dry_run: bool,
) -> None:
    """Publish the dead letters of DLQ_TOPIC again to --to TOPIC, once their cause is fixed.

    Each record keeps its id, attributes and data; the error* extensions go. Into a
    partitioned topic (a count recorded in the store), each record goes to the partition of
    its partitionkey (none: partition 0), as the pipeline's router would put it; --to names
    the topic, not a partition. Progress is stored with the records (atomically), so a second
    run replays only dead letters that arrived since, and a crash never replays one twice.
    """
    from .expr import Compiler, ExpressionError
    from .replay import replay_dead_letters

    if to == dead_letter_topic:
        raise _Fail("--to must name another topic than the dead-letter topic")
    from .config.topics import partition_of, topic_problem
    from .errors import ConfigError

    base, number = partition_of(to)
    if base != to:
        raise _Fail(
            f"--to {to!r} names partition {number} of topic {base!r}: give the topic "
            f"(--to {base}) and each record goes to the partition of its partitionkey"
        )
    if (problem := topic_problem(to)) is not None:
        raise _Fail(f"--to {to!r}: {problem}")
    predicate = None
    if where is not None:
        try:
            predicate = Compiler(options.registry().functions).predicate(where, field="--where")
        except ExpressionError as exc:
            raise _Fail(str(exc)) from None
    store = options.open_store(options.store_url(), existing=True)

    async def replay() -> Any:
        await store.open()
        try:
            if dead_letter_topic not in {t.name for t in await store.topics()}:
                raise _Fail(f"no topic {dead_letter_topic!r} in {store.url}")
            return await replay_dead_letters(
                store,
                dead_letter_topic,
                to,
                predicate,
                from_beginning=from_beginning,
                dry_run=dry_run,
            )
        except ConfigError as exc:
            raise _Fail(str(exc)) from None
        finally:
            await store.close()

    import asyncio

    summary = asyncio.run(replay())
    verb = "would replay" if dry_run else "replayed"
    _echo(
        f"{verb} {summary.replayed} record(s) from {dead_letter_topic} to {to} "
        f"(offsets {summary.start}..{summary.end}); "
        f"{summary.skipped} skipped by --where, {summary.failed} where --where failed"
    )
    target = summary.target
    if target.partitions > 1:
        _echo(
            f"{to} has {target.partitions} partitions ({target.why}); by partitionkey, "
            f"{'would go' if dry_run else 'went'}:"
        )
        for name, count in sorted(summary.topics.items(), key=lambda kv: partition_of(kv[0])):
            _echo(f"  {name}: {count}")
    if summary.start > 0 and not from_beginning:
        _echo(
            f"offsets below {summary.start} were replayed to {to} before "
            "(--from-beginning to start over)"
        )
    if summary.first_failure:
        _echo(f"first --where failure: {summary.first_failure}", err=True)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``meshconnect`` command. As click's standalone mode, except that Ctrl-C before a
    command installs its own handling (while the config loads, the store opens) exits 130
    (128 + SIGINT, as a shell reports it) without click's ``Aborted!``: nothing was done
    that needs undoing, and an exit status of 1 would read as a failure of the command."""
    from .errors import StoreError

    args = list(argv) if argv is not None else None
    try:
        code = cli.main(args=args, prog_name="meshconnect", standalone_mode=False)
    except click.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            sys.exit(130)
        _echo("Aborted!", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except StoreError as exc:  # unreachable past reconnect_timeout, refused credentials:
        # the reason says what to fix (the URL, the server); a traceback adds nothing
        _echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except BrokenPipeError:  # output piped into `head`: as click, quietly
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - flushed at exit
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        sys.exit(1)
    except Exception as exc:  # a fault (ours, a plugin's): the traceback, secrets masked
        import traceback

        # Python's own report would print the exception's text as it is, and a client
        # library's or a store plugin's message may hold a URL with its password.
        _echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
        sys.exit(1)
    sys.exit(code if type(code) is int else 0)
