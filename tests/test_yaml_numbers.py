"""Numbers written in the YAML files are exact too (issue 9 item 1's kind: one representation
for the whole product): a float in YAML is the ``Decimal`` of its text, as a JSON number with a
fraction is in ``meshconnect.jsonvalue``, so ``value: 1.10`` keeps its scale and
``169299987.35345112`` every digit, through ``meshconnect run`` to a JSON sink."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from meshconnect.config.model import parse_duration, parse_size
from meshconnect.config.yamlpos import parse_yaml

PIPELINE = """\
pipelines:
  - name: p
    source:
      connector: file
      config: {{path: {src}, format: json}}
    transforms:
      - {{type: insert_field, field: data.price, value: 1.10}}
      - {{type: insert_field, field: data.big, value: 123456789012345678901234567890}}
      - {{type: insert_field, field: data.f, value: 169299987.35345112}}
      - {{type: insert_field, field: data.obj, value: {{a: [0.10, 2.50e+3]}}}}
      - {{type: template, field: data.t, template: {{k: 0.000001, n: "{{data.a}}"}}}}
      - {{type: filter, where: "data.price == 1.1 and data.f > 169299987.35345111"}}
    sinks:
      - name: out
        connector: file
        config: {{path: {out}, format: json}}
"""


def test_yaml_numbers_reach_the_sink_with_every_digit(tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"a":1}\n{"a":2}\n')
    config = tmp_path / "p.yaml"
    config.write_text(PIPELINE.format(src=src, out=out))
    done = subprocess.run(
        [sys.executable, "-m", "meshconnect", "--state", str(tmp_path / "s"), "run", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text().splitlines() == [
        f'{{"a":{n},"price":1.10,"big":123456789012345678901234567890,"f":169299987.35345112,'
        f'"obj":{{"a":[0.10,2.50E+3]}},"t":{{"k":0.000001,"n":{n}}}}}'
        for n in (1, 2)
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1.10", Decimal("1.10")),
        ("-0.0", Decimal("-0.0")),
        ("6.8523015e+5", Decimal("6.8523015e+5")),
        ("1_000.5", Decimal("1000.5")),
        ("12", 12),
        ("0x1F", 31),
    ],
)
def test_a_yaml_number_is_exact(text: str, value: object) -> None:
    doc = parse_yaml(f"v: {text}\n", "f.yaml")
    got = doc.data["v"]
    assert got == value and type(got) is type(value) and str(got) == str(value)


@pytest.mark.parametrize("text", [".inf", "-.Inf", ".NaN"])
def test_yaml_infinity_and_nan_stay_floats(text: str) -> None:
    """Not JSON numbers: a JSON value option refuses them with a message (not a Decimal)."""
    assert isinstance(parse_yaml(f"v: {text}\n", "f.yaml").data["v"], float)


def test_durations_and_sizes_take_yaml_decimals() -> None:
    assert parse_duration(Decimal("0.5")) == 0.5
    assert parse_size(Decimal("1e6")) == 1_000_000
    with pytest.raises(ValueError):
        parse_size(Decimal("1.5"))


def test_a_non_finite_yaml_value_is_refused_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "p.yaml"
    config.write_text(
        PIPELINE.format(src=tmp_path / "in.jsonl", out=tmp_path / "o").replace(
            "value: 1.10", "value: .nan"
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "meshconnect", "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert f"{config}:7:" in done.stderr + done.stdout
    assert "NaN" in done.stderr + done.stdout
