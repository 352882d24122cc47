"""Start-up imports only what the command needs (issue 21: ``--help`` ≤ 0.25 s, a smaller
baseline RSS). Each check runs in a fresh interpreter, as the command does: what another test
imported into this process must not hide a regression."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def fresh(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


HEAVY = ("pydantic", "asyncio", "yaml", "re2", "uvloop", "msgspec", "orjson", "pluggy")


def test_help_imports_no_model_library_nor_event_loop() -> None:
    out = fresh(
        f"""
        import sys
        from meshconnect.cli import cli
        try:
            cli(["--help"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        print(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}))
        """
    )
    assert "Commands:" in out
    assert out.strip().splitlines()[-1] == "[]"


def test_the_public_names_resolve_on_first_use() -> None:
    out = fresh(
        """
        import sys
        import meshconnect
        print("pydantic" in sys.modules)
        from meshconnect import ConnectorConfig, ConnectorSpec, Duration, Record, hookimpl
        import meshconnect.api, meshconnect.config.model, meshconnect.records
        print(ConnectorSpec is meshconnect.api.ConnectorSpec,
              Duration is meshconnect.config.model.Duration,
              Record is meshconnect.records.Record,
              issubclass(ConnectorConfig, meshconnect.api.BaseModel))
        try:
            meshconnect.NoSuchName
        except AttributeError as exc:
            print(exc)
        print(meshconnect.httpbody.__name__, meshconnect.expr.Compiler.__name__)
        from meshconnect import eventrules, jsonvalue
        print(jsonvalue is meshconnect.jsonvalue, eventrules.__name__)
        """
    )
    assert out.splitlines() == [
        "False",
        "True True True True",
        "module 'meshconnect' has no attribute 'NoSuchName'",
        "meshconnect.httpbody Compiler",
        "True meshconnect.eventrules",
    ]


def test_re2_is_imported_by_the_first_regular_expression() -> None:
    out = fresh(
        """
        import sys
        from meshconnect.expr import Compiler
        keep = Compiler({}).predicate("data.total >= 10")
        print("re2" in sys.modules)
        match = Compiler({}).predicate("matches(data.name, '^a+b$')")
        print("re2" in sys.modules)
        from meshconnect.records import Record
        print(match(Record(data={"name": "aab"})), match(Record(data={"name": "ab!"})))
        """
    )
    assert out.splitlines() == ["False", "True", "True False"]
