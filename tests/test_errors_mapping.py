"""The error taxonomy: every exception a built-in can meet maps to config, retriable or data.

One table, checked against :func:`meshconnect.errors.classify`; and the built-ins raise what the
table promises (file I/O, the SQLite store, expressions, transforms).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from meshconnect.config.loader import load_pipeline_files
from meshconnect.errors import (
    ConfigError,
    DataError,
    FencedError,
    MeshconnectError,
    PluginError,
    RestartError,
    RetriableError,
    StoreError,
    StoreLostError,
    ValidationErrors,
    classify,
)
from meshconnect.expr import Compiler, ExpressionError
from meshconnect.mesh.codec import RecordEncodingError
from meshconnect.records import Record
from meshconnect.testing import test_registry


def _os(code: int) -> OSError:
    return OSError(code, f"{errno.errorcode[code]} on a path")


def _json_error() -> Exception:
    try:
        json.loads("{")
    except ValueError as exc:
        return exc
    raise AssertionError


def _orjson_error() -> Exception:
    try:
        orjson.dumps({1, 2})
    except TypeError as exc:
        return exc
    raise AssertionError


def _unicode_error() -> Exception:
    try:
        b"\xff".decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc
    raise AssertionError


TABLE: list[tuple[BaseException, type[MeshconnectError] | None]] = [
    # ours
    (ConfigError("x"), ConfigError),
    (ValidationErrors([]), ConfigError),
    (ExpressionError("x"), ConfigError),
    (PluginError("x"), PluginError),
    (RetriableError("x"), RetriableError),
    (DataError("x"), DataError),
    (RecordEncodingError(0, Record({}, id="r1"), "a set is not JSON"), DataError),
    (StoreError("x"), StoreError),
    # a replaced owner: retrying or dead-lettering would be writes by a worker that lost the lease
    (FencedError("another worker took over group p/s"), RestartError),
    (StoreLostError("the mesh is gone from Redis"), ConfigError),
    # network and timeouts
    (ConnectionResetError(), RetriableError),
    (ConnectionRefusedError(), RetriableError),
    (BrokenPipeError(), RetriableError),
    (TimeoutError(), RetriableError),
    (BlockingIOError(), RetriableError),
    (InterruptedError(), RetriableError),
    # file I/O: transient conditions
    (_os(errno.EIO), RetriableError),
    (_os(errno.ENOSPC), RetriableError),
    (_os(errno.EDQUOT), RetriableError),
    (_os(errno.EBUSY), RetriableError),
    (_os(errno.EMFILE), RetriableError),
    (_os(errno.ENFILE), RetriableError),
    (_os(errno.ESTALE), RetriableError),
    (_os(errno.ETIMEDOUT), RetriableError),
    (_os(errno.ENETUNREACH), RetriableError),
    # file I/O: a wrong path or permission
    (PermissionError(errno.EACCES, "denied"), ConfigError),
    (_os(errno.EPERM), ConfigError),
    (_os(errno.EROFS), ConfigError),
    (FileNotFoundError(errno.ENOENT, "missing"), ConfigError),
    (NotADirectoryError(errno.ENOTDIR, "not a dir"), ConfigError),
    (IsADirectoryError(errno.EISDIR, "a dir"), ConfigError),
    (_os(errno.ENAMETOOLONG), ConfigError),
    # other OS errors are failures of the connector (a bug, most likely)
    (_os(errno.EBADF), None),
    (OSError("no errno"), None),
    # SQLite
    (sqlite3.OperationalError("database is locked"), RetriableError),
    (sqlite3.OperationalError("database table is locked: t"), RetriableError),
    (sqlite3.OperationalError("disk I/O error"), RetriableError),
    (sqlite3.IntegrityError("UNIQUE constraint failed: t.id"), DataError),
    (sqlite3.DataError("string or blob too big"), DataError),
    (sqlite3.OperationalError("no such table: t"), None),
    # data
    (_json_error(), DataError),
    (_orjson_error(), DataError),
    (_unicode_error(), DataError),
    (csv.Error("field larger than field limit"), DataError),
    (ValueError("x"), DataError),
    (TypeError("x"), DataError),
    (KeyError("x"), DataError),
    (IndexError("x"), DataError),
    (ZeroDivisionError(), DataError),
    # unknown
    (RuntimeError("x"), None),
    (AssertionError("x"), None),
    (MemoryError(), None),
]


@pytest.mark.parametrize(
    ("exc", "expected"), TABLE, ids=[f"{type(e).__name__}:{e}"[:60] for e, _ in TABLE]
)
def test_classify_maps_each_exception(exc: BaseException, expected: type | None) -> None:
    assert classify(exc) is expected


def test_a_record_the_store_cannot_encode_is_a_data_error() -> None:
    assert issubclass(RecordEncodingError, DataError)


def test_a_failing_expression_is_a_data_error_and_a_bad_one_a_config_error() -> None:
    compiler = Compiler()
    with pytest.raises(ExpressionError) as bad:
        compiler.predicate("data.a ==")
    assert classify(bad.value) is ConfigError
    predicate = compiler.predicate("data.a > 1")
    with pytest.raises(Exception) as failing:
        predicate(Record({"a": "text"}))
    assert classify(failing.value) is DataError


def test_the_file_sink_maps_a_path_that_cannot_be_made_to_a_config_error(tmp_path: Path) -> None:
    """A config error stops the sink for good instead of restarting it forever."""
    import asyncio

    from meshconnect.api import ConnectorContext

    (tmp_path / "afile").write_text("")
    registry = test_registry()
    spec = registry.connector("file", "sink")
    config = spec.model().model_validate({"path": "afile/sub/out.jsonl"})
    context = ConnectorContext("p", "file", logging.getLogger("test"), base_dir=str(tmp_path))
    sink = spec.load()(config, context)
    with pytest.raises(Exception) as failure:
        asyncio.run(sink.open(None))
    assert classify(failure.value) is ConfigError


def test_the_sqlite_store_turns_sqlite_errors_into_retriable_store_errors(tmp_path: Path) -> None:
    """The store wraps SQLite's errors (a locked database included) in StoreError, which the
    worker retries."""
    import asyncio

    from meshconnect.mesh import open_store

    async def main() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'mesh.db'}", test_registry())
        await store.open()
        await store.close()
        with pytest.raises(StoreError) as failure:
            await store.read("t", 0, 10)
        assert classify(failure.value) is StoreError

    asyncio.run(main())


def test_a_transform_failure_becomes_a_data_error_of_its_stage(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "pipelines:\n"
        "  - name: p\n"
        "    source: {connector: memory, config: {}}\n"
        "    transforms:\n"
        "      - {type: mask, fields: [data.a.b]}\n"
    )
    config = load_pipeline_files([str(path)], test_registry())
    out, failures = config.pipelines[0].chain.process([Record({"a": "flat"})])
    assert out == []
    assert [(type(f.error), f.stage) for f in failures] == [(DataError, "transforms[0] (mask)")]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_under_the_file_sink_restarts_it_instead_of_retrying_in_place(
    tmp_path: Path,
) -> None:
    """ENOSPC mid-flush: part of the buffer may be on disk, so a retry in place could lose or
    repeat lines; the sink raises a failure the worker answers with a restart from the last
    commit (truncate-to-checkpoint). /dev/full answers every write with ENOSPC."""
    import asyncio

    from meshconnect.api import ConnectorContext
    from meshconnect.connectors.file.errors import FileIOFailure

    spec = test_registry().connector("file", "sink")
    config = spec.model().model_validate({"path": "out.jsonl"})
    context = ConnectorContext("p", "file", logging.getLogger("test"), base_dir=str(tmp_path))
    sink = spec.load()(config, context)

    async def main() -> None:
        await sink.open(None)
        sink._file.close()  # type: ignore[attr-defined]
        sink._file = open("/dev/full", "ab")  # type: ignore[attr-defined]  # noqa: SIM115
        await sink.write([Record({"n": 1})])
        with pytest.raises(FileIOFailure, match="No space left") as failure:
            await sink.flush()
        assert classify(failure.value) is RestartError
        assert classify(failure.value.__cause__) is RetriableError  # type: ignore[arg-type]
        with contextlib.suppress(OSError):  # the worker ignores errors of close() too
            await sink.close()

    asyncio.run(main())


class ThrottledByTheService(Exception):
    """What a client library might raise for a 429 (the core knows nothing of it)."""


class BadCredentials(Exception):
    """What a client library might raise for a 401."""


def library_mapping(exc: BaseException) -> type[MeshconnectError] | None:
    if isinstance(exc, ThrottledByTheService):
        return RetriableError
    if isinstance(exc, BadCredentials):
        return ConfigError
    if isinstance(exc, ZeroDivisionError):
        raise RuntimeError("a broken mapping")
    return None


def test_a_connector_mapping_comes_first_and_falls_back_to_the_builtin_table() -> None:
    assert classify(ThrottledByTheService()) is None
    assert classify(ThrottledByTheService(), library_mapping) is RetriableError
    assert classify(BadCredentials(), library_mapping) is ConfigError
    assert classify(TimeoutError(), library_mapping) is RetriableError  # not mapped: builtin
    assert classify(ZeroDivisionError(), library_mapping) is DataError  # mapping raised
    assert classify(RestartError("part-way")) is RestartError
    assert classify(FencedError("taken over"), lambda exc: RetriableError) is RestartError


async def test_the_worker_retries_and_stops_by_the_connectors_own_mapping(
    tmp_path: Path,
) -> None:
    """A sink whose library raises ThrottledByTheService twice is retried in place (its
    mapping says retriable); a source whose library raises BadCredentials is stopped for good
    (its mapping says config), without restarts."""
    from meshconnect import ConnectorConfig, ConnectorSpec, Sink, Source, hookimpl
    from meshconnect.testing import run_pipelines

    calls: list[str] = []

    class Cfg(ConnectorConfig):
        pass

    class ThrottledSink(Sink[Cfg]):
        async def write(self, records: Any) -> None:
            calls.append("write")
            if len(calls) <= 2:
                raise ThrottledByTheService("slow down")

        def classify_error(self, exc: BaseException) -> type[MeshconnectError] | None:
            return library_mapping(exc)

    class LockedOutSource(Source[Cfg]):
        bounded = True

        async def poll(self) -> Any:
            calls.append("poll")
            raise BadCredentials("401")

        def classify_error(self, exc: BaseException) -> type[MeshconnectError] | None:
            return library_mapping(exc)

    class Plugin:
        @hookimpl
        def meshconnect_connectors(self) -> list[ConnectorSpec]:
            return [
                ConnectorSpec("throttled", "sink", Cfg, ThrottledSink),
                ConnectorSpec("lockedout", "source", Cfg, LockedOutSource),
            ]

    registry = test_registry()
    registry.register(Plugin(), "mapping")
    sink_file = tmp_path / "sink.yaml"
    sink_file.write_text(
        "pipelines:\n"
        "  - name: p\n"
        "    source: {connector: memory, config: {records: [{n: 1}]}}\n"
        "    sinks:\n"
        "      - connector: throttled\n"
        "        errors: {retry: {max_attempts: 5, initial_backoff: 1ms}}\n"
    )
    store = f"sqlite:///{tmp_path / 'a.db'}"
    assert await run_pipelines([sink_file], store, registry=registry) == 0
    assert calls == ["write", "write", "write"]
    calls.clear()
    source_file = tmp_path / "source.yaml"
    source_file.write_text("pipelines:\n  - name: q\n    source: {connector: lockedout}\n")
    store = f"sqlite:///{tmp_path / 'b.db'}"
    code = await run_pipelines([source_file], store, registry=registry, restart_backoff=0.001)
    assert code == 1
    assert calls == ["poll"]  # neither retried nor restarted
