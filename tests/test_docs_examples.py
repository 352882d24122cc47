"""Every example block in docs/ is exercised (issue 9 item 8): docs describe only what exists.

Each fenced block of every ``docs/**/*.md`` page (and of README.md) is checked by its language:

* ``yaml``: a whole pipeline file (``pipelines:``) is loaded by the pipeline loader (what
  ``validate`` and ``run`` use) and must have no problem. A fragment (``source:``, ``sinks:``,
  ``errors:``, ``transforms:`` steps, ``retention:``, ...) is put into the smallest pipeline
  file that can hold it and loaded the same way. A ``meshconnect test`` file (``tests:``) is
  checked against the test-file model.
* ``sh`` / ``console``: every ``meshconnect`` command line is parsed by the real CLI (the
  command exists, its options and arguments are accepted); ``python -m meshconnect`` and
  ``.venv/bin/meshconnect`` count too.
* ``json``: the block is JSON, or JSON lines.
* ``python``: the block compiles. ``toml``: it parses. ``ini``: it parses.
* ``text``, ``sql``, ``ebnf``: shown output, SQL for a database server, the grammar: not run.

A block preceded by ``<!-- example: KIND -->`` is checked as KIND instead: ``other-yaml``
(YAML that is not meshconnect's, e.g. a CI workflow: it must parse), ``output`` (not run), or
a fragment wrapper name (``source``, ``sink``, ``transform``, ``top``...). The plugin tutorial
of docs/plugins.md is built from its code blocks, registered, and its pipeline run.
"""

from __future__ import annotations

import ast
import asyncio
import configparser
import importlib
import json
import re
import shlex
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import click
import pytest
import yaml

from meshconnect.cli import cli
from meshconnect.config.loader import load_pipeline_files
from meshconnect.errors import ValidationErrors
from meshconnect.pipetest import TestFileSpec
from meshconnect.plugins import PluginPolicy, Registry, load_registry

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```([A-Za-z0-9_-]*)\s*$")
DIRECTIVE = re.compile(r"<!--\s*example:\s*([a-z-]+)\s*-->")
NOT_RUN = {"text", "sql", "ebnf", "output"}
#: YAML that is not meshconnect's (a CI workflow): it must parse, nothing more.
OTHER_YAML = "other-yaml"


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    text: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for page in [DOCS.parent / "README.md", *sorted(DOCS.rglob("*.md"))]:
        lines = page.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            match = FENCE.match(lines[i])
            if not match:
                i += 1
                continue
            start, lang = i, match.group(1)
            j = i + 1
            while j < len(lines) and lines[j].rstrip() != "```":
                j += 1
            before = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            directive = DIRECTIVE.search(before)
            kind = directive.group(1) if directive else lang
            name = str(page.relative_to(DOCS)) if page.parent != DOCS.parent else page.name
            found.append(Block(name, start + 1, kind, "\n".join(lines[start + 1 : j]) + "\n"))
            i = j + 1
    return found


BLOCKS = blocks()


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The ``meshconnect_hello`` plugin of docs/plugins.md, built from the page's own code
    blocks (each under the line naming its file)."""
    root = tmp_path_factory.mktemp("hello")
    package = root / "meshconnect_hello"
    package.mkdir()
    lines = (DOCS / "plugins.md").read_text(encoding="utf-8").splitlines()
    written = []
    for block in BLOCKS:
        if block.page != "plugins.md" or block.lang != "python":
            continue
        above = lines[: block.line - 1]
        while above and not above[-1].strip():
            above.pop()
        paragraph = []
        while above and above[-1].strip():
            paragraph.append(above.pop())
        named = re.match(r"`src/meshconnect_hello/(\w+\.py)`", paragraph[-1] if paragraph else "")
        if named:
            (package / named.group(1)).write_text(block.text, encoding="utf-8")
            written.append(named.group(1))
    assert sorted(written) == ["__init__.py", "config.py", "source.py"]
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module("meshconnect_hello")
    finally:
        sys.path.remove(str(root))


@pytest.fixture(scope="module")
def registry(hello: ModuleType) -> Registry:
    """The installed plugins plus the tutorial's, as after `pip install -e ./meshconnect-hello`."""
    registry = load_registry(PluginPolicy.read(None))
    registry.register(hello, "meshconnect-hello")
    return registry


def test_the_docs_have_examples_and_every_language_is_handled() -> None:
    handled = {"yaml", "sh", "console", "json", "python", "toml", "ini", OTHER_YAML}
    handled |= NOT_RUN | set(WRAPPERS)
    assert len(BLOCKS) > 100
    assert {b.lang for b in BLOCKS} <= handled, {b.lang for b in BLOCKS} - handled
    assert all(b.lang for b in BLOCKS), [str(b) for b in BLOCKS if not b.lang]


def test_every_extra_the_docs_name_exists() -> None:
    """getting-started.md once listed extras that did not exist (issue 9 item 8): each
    `meshconnect[a,b]` in docs/ and README.md names extras of pyproject.toml."""
    extras = set(
        tomllib.loads((DOCS.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"][
            "optional-dependencies"
        ]
    )
    named: dict[str, str] = {}
    for page in [DOCS.parent / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for match in re.finditer(r"meshconnect\[([^\]]+)\]", page.read_text(encoding="utf-8")):
            for extra in match.group(1).split(","):
                named.setdefault(extra.strip(), page.name)

    assert len(named) >= 5
    assert {e: p for e, p in named.items() if e not in extras} == {}


# -- YAML ---------------------------------------------------------------------------------------

SOURCE_STUB = "source: {connector: file, config: {path: in.jsonl}}"


def _pipeline(body: str) -> str:
    return "pipelines:\n  - name: p\n" + textwrap.indent(body, "    ")


def _wrap_source(text: str) -> str:
    return _pipeline(text)


def _wrap_sinks(text: str) -> str:
    return _pipeline(SOURCE_STUB + "\n" + text)


def _wrap_sink(text: str) -> str:
    lines = text.rstrip("\n").splitlines()
    if lines and lines[0].startswith("- "):  # written as the list item already
        item = "\n".join("  " + line for line in lines)
    else:
        item = "\n".join(("  - " if i == 0 else "    ") + line for i, line in enumerate(lines))
    return _pipeline(SOURCE_STUB + "\nsinks:\n" + item + "\n")


def _wrap_transforms(text: str) -> str:
    return _pipeline(SOURCE_STUB + "\n" + text)


def _wrap_steps(text: str) -> str:
    return _pipeline(SOURCE_STUB + "\ntransforms:\n" + textwrap.indent(text, "  "))


def _wrap_transform(text: str) -> str:
    lines = text.splitlines()
    body = "\n".join(["- " + lines[0], *("  " + line for line in lines[1:])])
    return _wrap_steps(body)


def _wrap_errors(text: str) -> str:
    return _pipeline(
        "source:\n  connector: file\n  config: {path: in.jsonl}\n" + textwrap.indent(text, "  ")
    )


def _wrap_top(text: str) -> str:
    return text + "\n" + _pipeline(SOURCE_STUB)


WRAPPERS = {
    "source": _wrap_source,
    "sinks": _wrap_sinks,
    "sink": _wrap_sink,
    "transforms": _wrap_transforms,
    "transform": _wrap_transform,
    "errors": _wrap_errors,
    "top": _wrap_top,
}


def as_pipeline_file(block: Block) -> str:
    """The block as a whole pipeline file (wrapped when it is a fragment)."""
    if block.lang in WRAPPERS:
        return WRAPPERS[block.lang](block.text)
    data = yaml.safe_load(block.text)
    if isinstance(data, list):
        return _wrap_steps(block.text)
    assert isinstance(data, dict), f"{block}: not a mapping or a list"
    keys = set(data)
    if "pipelines" in keys:
        return block.text
    if keys <= {"store", "retention", "cluster", "expressions"}:
        return _wrap_top(block.text)
    if keys <= {"topic", "name"}:
        return _pipeline(SOURCE_STUB + "\n" + block.text)
    if keys == {"source"}:
        return _wrap_source(block.text)
    if keys == {"sinks"}:
        return _wrap_sinks(block.text)
    if keys == {"transforms"}:
        return _wrap_transforms(block.text)
    if keys == {"errors"}:
        return _wrap_errors(block.text)
    if "type" in keys:
        return _wrap_transform(block.text)
    if "connector" in keys:
        return _wrap_sink(block.text)
    raise AssertionError(f"{block}: a YAML fragment of unknown shape (keys {sorted(keys)})")


def _env_for(text: str) -> dict[str, str]:
    import base64

    names = re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)", text)
    # 32 zero bytes in base64 serve as a key and as a salt
    return dict.fromkeys(names, base64.b64encode(bytes(32)).decode())


def _load(block: Block, text: str, tmp_path: Path, registry: Registry) -> None:
    (tmp_path / "schemas").mkdir(exist_ok=True)  # the validate transform's examples
    (tmp_path / "schemas" / "order.json").write_text('{"type": "object"}')
    for name in re.findall(r"\$\{file:([^}]+)\}", text):
        target = tmp_path / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("secret")
        text = text.replace(f"${{file:{name}}}", f"${{file:{target}}}")
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    load_pipeline_files([path], registry, env=_env_for(text))


YAML_BLOCKS = [b for b in BLOCKS if b.lang in ("yaml", *WRAPPERS)]


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=str)
def test_yaml_examples_load(block: Block, tmp_path: Path, registry: Registry) -> None:
    data = yaml.safe_load(block.text)
    if isinstance(data, dict) and "tests" in data:
        TestFileSpec.model_validate(data)
        return
    text = as_pipeline_file(block)
    try:
        _load(block, text, tmp_path, registry)
    except ValidationErrors as exc:
        problems = "\n".join(str(p) for p in exc.problems)
        pytest.fail(f"{block}: the example does not load:\n{problems}\n--- as loaded:\n{text}")


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == OTHER_YAML], ids=str)
def test_other_yaml_examples_parse(block: Block) -> None:
    assert yaml.safe_load(block.text) is not None


def test_the_plugin_tutorial_runs(tmp_path: Path, registry: Registry) -> None:
    """docs/plugins.md end to end: its plugin, its pipeline, run by the worker."""
    from meshconnect.mesh import open_store
    from meshconnect.worker import Worker

    (block,) = [
        b for b in BLOCKS if b.page == "plugins.md" and b.lang == "yaml" and "greetings" in b.text
    ]
    path = tmp_path / "hello.yaml"
    path.write_text(block.text, encoding="utf-8")
    config = load_pipeline_files([path], registry, env={})

    async def run() -> int:
        store = open_store(f"sqlite:///{tmp_path / 'mesh.db'}", registry)
        await store.open()
        try:
            return await Worker(config, store).run()
        finally:
            await store.close()

    assert asyncio.run(run()) == 0
    lines = (tmp_path / "out" / "hello.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"name": "Ada", "text": "Hello, ada!"},
        {"name": "Grace", "text": "Hello, grace!"},
    ]


# -- command lines ------------------------------------------------------------------------------

_PREFIXES = (
    ("meshconnect",),
    (".venv/bin/meshconnect",),
    ("python", "-m", "meshconnect"),
    ("python3", "-m", "meshconnect"),
    (".venv/bin/python", "-m", "meshconnect"),
)


def command_lines(block: Block) -> list[list[str]]:
    text = re.sub(r"\\\n\s*", " ", block.text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if block.lang == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        commands: list[list[str]] = [[]]
        for word in shlex.split(line, comments=True):
            if word in ("&&", "||", ";"):
                commands.append([])
            else:
                commands[-1].append(word)
        for words in commands:
            for redirect in (">", ">>", "|", "2>", "<"):
                if redirect in words:
                    words = words[: words.index(redirect)]
            for prefix in _PREFIXES:
                if tuple(words[: len(prefix)]) == prefix:
                    out.append(words[len(prefix) :])
    return out


def parse_command(args: list[str]) -> None:
    """Parse ``args`` as the real CLI would, down to the leaf command, without running it."""
    command: click.Command = cli
    ctx = command.make_context("meshconnect", list(args), resilient_parsing=False)
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            return
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        command = sub
        ctx = command.make_context(name, rest, parent=ctx, resilient_parsing=False)


SHELL_LINES = [
    (block, args)
    for block in BLOCKS
    if block.lang in ("sh", "console")
    for args in command_lines(block)
]


def test_the_shell_examples_hold_meshconnect_commands() -> None:
    assert len(SHELL_LINES) > 20


@pytest.mark.parametrize(
    ("block", "args"), SHELL_LINES, ids=lambda v: str(v) if isinstance(v, Block) else " ".join(v)
)
def test_meshconnect_command_examples_parse(block: Block, args: list[str]) -> None:
    try:
        parse_command(args)
    except click.exceptions.Exit:
        pass  # --help, --version
    except click.ClickException as exc:
        pytest.fail(f"{block}: meshconnect {' '.join(args)}: {exc.format_message()}")


# -- the other languages ------------------------------------------------------------------------


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "json"], ids=str)
def test_json_examples_parse(block: Block) -> None:
    try:
        json.loads(block.text)
    except json.JSONDecodeError:
        for line in block.text.splitlines():
            if line.strip():
                json.loads(line)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "python"], ids=str)
def test_python_examples_compile(block: Block) -> None:
    ast.parse(block.text, filename=str(block))


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "toml"], ids=str)
def test_toml_examples_parse(block: Block) -> None:
    tomllib.loads(block.text)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "ini"], ids=str)
def test_ini_examples_parse(block: Block) -> None:
    configparser.ConfigParser().read_string(block.text)


def test_a_sink_fragment_becomes_one_item_of_sinks() -> None:
    """``<!-- example: sink -->`` blocks hold one sink's keys; the wrapper makes them a list item
    (it once left them unindented, so no sink fragment could load)."""
    import yaml

    text = _wrap_sink("name: out\nconnector: file\nconfig:\n  path: out.jsonl\n")
    (pipeline,) = yaml.safe_load(text)["pipelines"]
    assert pipeline["sinks"] == [
        {"name": "out", "connector": "file", "config": {"path": "out.jsonl"}}
    ]
    as_item = _wrap_sink("- name: out\n  connector: file\n  config: {path: out.jsonl}\n")
    assert yaml.safe_load(as_item)["pipelines"][0]["sinks"] == pipeline["sinks"]
