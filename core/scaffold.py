"""``meshconnect new connector NAME``: a third-party connector package to start from.

The package has a pyproject with the ``meshconnect`` entry point, config models, a bounded
source and an exactly-once file-like sink (the shapes of :doc:`plugins`), tests that run the
shipped conformance suites (:mod:`meshconnect.testing`) and a pipeline through
``meshconnect run``, an example pipeline and a README. It installs with
``meshconnect plugins install ./NAME`` and passes its tests as generated; the author replaces
the counting source and the JSON-lines sink with calls to their system's client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from string import Template

from .errors import ConfigError

__all__ = ["NAME_RULE", "files_for", "new_connector"]

#: A connector name: lower case letters, digits and ``_``, starting with a letter (it becomes
#: a Python module name and the ``connector:`` of pipelines).
NAME_RULE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "meshconnect connector '$name': a source and a sink."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["meshconnect>=$version"]

[project.optional-dependencies]
test = ["pytest>=8", "pytest-asyncio>=0.23"]

# The worker finds the connector through this entry point group.
[project.entry-points.meshconnect]
$name = "$module.plugin"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
"""

_README = """\
# $dist

A [meshconnect](https://pypi.org/project/meshconnect/) connector package: the `$name`
source and the `$name` sink, made with `meshconnect new connector $name`.

```sh
meshconnect plugins install ./$name     # or: pip install -e './$name[test]'
meshconnect plugins list                # $name (source) and $name (sink): loaded
meshconnect run example.yaml            # 10 records from the source into out.jsonl
python -m pytest $name/tests            # the conformance suites and a pipeline run
```

What is here, and what to change:

- `src/$module/plugin.py`: the hooks that declare the connectors. Every worker imports
  it, so it stays light: the classes are named by string and imported on first use.
- `src/$module/config.py`: the `config:` models. Field descriptions appear in
  `meshconnect schema`; declare secrets as `pydantic.SecretStr`.
- `src/$module/source.py`: a bounded source counting to `count`; its position is the
  next number, and `position_problem` refuses a hand-written one it never writes
  (`meshconnect offsets reset --to`).
- `src/$module/sink.py`: a sink appending JSON lines to a file. Its committed state is
  the file size and it truncates to it on open, so a crash neither loses nor duplicates.
- `tests/test_conformance.py`: meshconnect's source and sink conformance suites, as the
  built-in connectors run them.
- `tests/test_pipeline.py`: `meshconnect run` over `example.yaml`.

Replace the counting and the file writing with your system's client, keep the contracts the
suites check (positions that resume exactly, a sink that is idempotent or truncates to its
committed state), and keep the suites green. The contracts: meshconnect's `docs/plugins.md`.
"""

_INIT = '''\
"""meshconnect connector '$name' (see plugin.py for the hooks)."""
'''

_PLUGIN = '''\
"""The hooks of the '$name' connectors. Every worker imports this module, so it imports only
meshconnect; the config models load when a pipeline uses a connector, the source and sink
classes when one runs."""

from __future__ import annotations

from meshconnect import ConnectorSpec, hookimpl


@hookimpl
def meshconnect_connectors() -> list[ConnectorSpec]:
    return [
        ConnectorSpec(
            name="$name",
            kind="source",
            config_model="$module.config:${Class}SourceConfig",
            factory="$module.source:${Class}Source",
            description="Counts from 0 to count - 1, one record each (bounded).",
        ),
        ConnectorSpec(
            name="$name",
            kind="sink",
            config_model="$module.config:${Class}SinkConfig",
            factory="$module.sink:${Class}Sink",
            description="Appends each record's data as a JSON line to a file, exactly once.",
        ),
    ]
'''

_CONFIG = '''\
"""The `config:` models of the '$name' source and sink."""

from __future__ import annotations

from pydantic import Field

from meshconnect import ConnectorConfig


class ${Class}SourceConfig(ConnectorConfig):
    """The `config:` of the $name source."""

    count: int = Field(10, ge=0, description="How many records: data {n: 0} to {n: count - 1}.")
    batch_size: int = Field(100, ge=1, le=100_000, description="Records per batch at most.")


class ${Class}SinkConfig(ConnectorConfig):
    """The `config:` of the $name sink."""

    path: str = Field(
        description="The JSON-lines file to append to (relative: to the pipeline file)."
    )
'''

_SOURCE = '''\
"""The $name source: counts from 0 to ``count - 1``. Replace the counting with reads from your
system; keep the position the place to resume from (the next item, not the last one read)."""

from __future__ import annotations

from collections.abc import Mapping

from meshconnect import Position, Record, Source, SourceBatch
from meshconnect.positioncheck import fields_problem, partition_problem, whole

from .config import ${Class}SourceConfig

#: The source's one partition; a source reading several streams has a partition each.
PARTITION = "counter"


class ${Class}Source(Source[${Class}SourceConfig]):
    """Records ``{"n": i}`` with ids ``$name-i`` (a replay gives the same ids)."""

    bounded = True
    empty_position = "counts from 0"

    def position_problem(self, partition: str, position: Position) -> str | None:
        """What ``meshconnect offsets reset --to`` refuses: a partition never read, a field
        never written (a typo would be ignored), a value of the wrong type or range."""
        return partition_problem(partition, [PARTITION]) or fields_problem(
            position, {"next": whole()}, required=["next"]
        )

    async def start(self, positions: Mapping[str, Position]) -> None:
        self.next = int(positions.get(PARTITION, {}).get("next", 0))

    async def poll(self) -> SourceBatch | None:
        count = self.config.count
        if self.next >= count:
            return None  # bounded and done
        end = min(count, self.next + self.config.batch_size)
        records = [
            Record(
                {"n": i},
                id=f"$name-{i}",
                source=f"$name://{self.context.pipeline}/{self.context.name}",
                type="$name.counted",
            )
            for i in range(self.next, end)
        ]
        self.next = end
        return SourceBatch(records, {PARTITION: {"next": end}})
'''

_SINK = '''\
"""The $name sink: appends each record's data as a JSON line. Exactly once by truncation: the
committed state is the file's size, and ``open`` cuts what was written after the last commit
(the worker delivers those records again). A sink that cannot take writes back makes them
idempotent instead (upsert by key, deterministic names)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from meshconnect import DataError, Record, Sink
from meshconnect.jsonvalue import dumps

from .config import ${Class}SinkConfig


class ${Class}Sink(Sink[${Class}SinkConfig]):
    """One JSON line per record; state ``{"size": bytes committed}``."""

    def __init__(self, config: ${Class}SinkConfig, context: Any) -> None:
        super().__init__(config, context)
        self.path = Path(context.base_dir, config.path)
        self.file: IO[bytes] | None = None

    async def open(self, state: Mapping[str, Any] | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.path.open("ab")
        committed = int(state["size"]) if state else 0
        if self.file.tell() > committed:  # written after the last commit: delivered again
            self.file.truncate(committed)
            self.file.seek(committed)

    async def write(self, records: Sequence[Record]) -> None:
        assert self.file is not None
        try:  # encode the whole batch first: a bad record leaves nothing half-written
            lines = b"".join(dumps(r.data, newline=True) for r in records)
        except TypeError as exc:
            raise DataError(f"$name sink: data is not JSON: {exc}") from exc
        self.file.write(lines)

    async def flush(self) -> dict[str, Any]:
        assert self.file is not None
        self.file.flush()
        os.fsync(self.file.fileno())
        return {"size": self.file.tell()}

    async def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
'''

_TEST_CONFORMANCE = '''\
"""meshconnect's conformance suites over the $name source and sink."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from meshconnect import ConnectorContext, Record
from meshconnect.testing import SinkConformance, SourceConformance

from $module.config import ${Class}SinkConfig, ${Class}SourceConfig
from $module.sink import ${Class}Sink
from $module.source import ${Class}Source


def context(tmp_path: Path, name: str) -> ConnectorContext:
    return ConnectorContext("test", name, logging.getLogger(name), str(tmp_path))


class Test${Class}Source(SourceConformance):
    def make_source(self, tmp_path: Path) -> ${Class}Source:
        config = ${Class}SourceConfig(count=250, batch_size=40)
        return ${Class}Source(config, context(tmp_path, "source"))

    def input_ids(self, tmp_path: Path) -> list[str]:  # the input: a full read gives these
        return [f"${name}-{i}" for i in range(250)]


class Test${Class}Sink(SinkConformance):
    def make_sink(self, tmp_path: Path) -> ${Class}Sink:
        return ${Class}Sink(${Class}SinkConfig(path="out.jsonl"), context(tmp_path, "sink"))

    def durable(self, tmp_path: Path) -> list[Any]:
        path = tmp_path / "out.jsonl"
        return [json.loads(line)["n"] for line in path.open()] if path.exists() else []

    def poison_record(self, i: int) -> Record | None:
        return Record({"n": float("nan")})  # not JSON: the sink rejects it alone
'''

_TEST_PIPELINE = '''\
"""The example pipeline through ``meshconnect run``: the installed entry point is found."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parent.parent / "example.yaml"


def test_the_example_pipeline_runs(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "example.yaml")
    command = [sys.executable, "-m", "meshconnect", "--state", str(tmp_path / "state")]
    command += ["run", str(tmp_path / "example.yaml")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"n": i} for i in range(10)]
'''

_EXAMPLE = """\
# meshconnect run example.yaml: 10 records from the $name source through the mesh into the
# $name sink (out.jsonl next to this file).
pipelines:
  - name: $name-demo
    source:
      connector: $name
      config: {count: 10}
    sinks:
      - name: out
        connector: $name
        config: {path: out.jsonl}
"""


def files_for(name: str, version: str) -> dict[str, str]:
    """The package's files (path relative to the package directory → text) for connector
    ``name`` depending on ``meshconnect>=version``. ``ConfigError`` for a name that breaks
    :data:`NAME_RULE`."""
    if not NAME_RULE.match(name):
        raise ConfigError(
            f"connector name {name!r}: use lower case letters, digits and _, starting with a "
            "letter (at most 40 characters), e.g. acme or acme_crm"
        )
    module = f"meshconnect_{name}"
    values = {
        "name": name,
        "module": module,
        "dist": f"meshconnect-{name.replace('_', '-')}",
        "Class": "".join(part.capitalize() for part in name.split("_")),
        "version": version,
    }
    templates = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        "example.yaml": _EXAMPLE,
        f"src/{module}/__init__.py": _INIT,
        f"src/{module}/plugin.py": _PLUGIN,
        f"src/{module}/config.py": _CONFIG,
        f"src/{module}/source.py": _SOURCE,
        f"src/{module}/sink.py": _SINK,
        "tests/test_conformance.py": _TEST_CONFORMANCE,
        "tests/test_pipeline.py": _TEST_PIPELINE,
    }
    return {path: Template(text).substitute(values) for path, text in templates.items()}


def new_connector(
    name: str, directory: Path, version: str, taken: Mapping[str, str] | None = None
) -> list[Path]:
    """Write the package for connector ``name`` into ``directory`` (created; it must not exist
    or be empty) and return the files written. ``ConfigError`` for a bad name, a name in
    ``taken`` (the names installed plugins use, each with what uses it: the package would
    clash with it once installed), or a directory that holds files."""
    files = files_for(name, version)
    if taken and name in taken:
        raise ConfigError(
            f"connector name {name!r} is taken: {taken[name]} (installed, it would clash: "
            "choose another name)"
        )
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ConfigError(f"{directory} already exists and is not empty: choose another --dir")
    written = []
    for rel, text in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
