"""The s3 connector's parts that need no server: config checks (secrets never shown), the key
template language, object names, formats, and the botocore error mapping. The connector
against a real endpoint is tested in integration/test_s3_*.py (moto_server)."""

from __future__ import annotations

import gzip
import itertools
import logging
import subprocess
import sys
from decimal import Decimal
from typing import Any

import botocore.exceptions as bex
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from meshconnect import (
    BatchError,
    ConfigError,
    ConnectorContext,
    DataError,
    Record,
    RetriableError,
    jsonvalue,
)
from meshconnect.connectors.s3 import formats
from meshconnect.connectors.s3.client import classify_s3_error
from meshconnect.connectors.s3.config import S3SinkConfig, S3SourceConfig
from meshconnect.connectors.s3.formats import decode_object, format_of_key, gunzip
from meshconnect.connectors.s3.keys import KeyTemplate, object_name, parse_object_name
from meshconnect.connectors.s3.source import S3Source, _Reading

SECRET = "wJalrXUtnFEMI-never-shown"


def test_importing_the_plugin_imports_neither_boto3_nor_pyarrow() -> None:
    code = (
        "import sys, meshconnect.connectors.s3.plugin, meshconnect.connectors.s3.config;"
        "print([m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'pyarrow')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_secret_never_appears_in_the_config_or_its_errors() -> None:
    config = S3SinkConfig(bucket="b-1", access_key_id="AKIA", secret_access_key=SECRET)
    assert SECRET not in repr(config) and SECRET not in str(config.model_dump())
    with pytest.raises(ValidationError) as caught:
        S3SinkConfig(bucket="b-1", access_key_id="AKIA", secret_access_key=SECRET, format="xml")
    assert SECRET not in str(caught.value)


def test_config_mistakes_name_the_field() -> None:
    with pytest.raises(ValidationError, match="access_key_id and secret_access_key together"):
        S3SinkConfig(bucket="b-1", secret_access_key=SECRET)
    with pytest.raises(ValidationError, match="not a bucket name"):
        S3SinkConfig(bucket="Bad_Bucket!")
    with pytest.raises(ValidationError, match="key_template"):
        S3SinkConfig(bucket="b-1", key_template="{topic/")
    with pytest.raises(ValidationError, match="multipart_threshold"):
        S3SinkConfig(bucket="b-1", multipart_threshold="1MB")
    with pytest.raises(ValidationError, match="needs move_to"):
        S3SourceConfig(bucket="b-1", after_read="move")
    with pytest.raises(ValidationError, match="would be read again"):
        S3SourceConfig(bucket="b-1", prefix="in/", after_read="move", move_to="in/done/")
    with pytest.raises(ValidationError, match="regular expression"):
        S3SourceConfig(bucket="b-1", pattern="(")


def test_the_key_pattern_runs_on_re2() -> None:
    """Issue 19 item 1 sibling: keys are chosen by whoever may write to the bucket; on
    Python's re, '(a+)+$' and a key of 40 a's and '!' stalled the worker."""
    import time

    from meshconnect.connectors.s3.source import _re2_search

    pattern = _re2_search(S3SourceConfig(bucket="b-1", pattern="(a+)+$").pattern or "")
    start = time.monotonic()

    assert pattern.search("a" * 1000 + "!") is None
    assert pattern.search("x/aaa") is not None
    assert time.monotonic() - start < 1
    with pytest.raises(ValidationError, match="no lookaround or backreferences"):
        S3SourceConfig(bucket="b-1", pattern="(?<!tmp)\\.jsonl$")


def test_owns_key_is_linear_in_a_hostile_key() -> None:
    """Issue 19 item 1 sibling: keys listed from the bucket were matched with Python's re,
    which backtracked on adjacent placeholders (4 of them and a 400-character key: 6 s)."""
    import time

    from meshconnect.connectors.s3.keys import object_name

    start = time.monotonic()
    assert not KeyTemplate("{data.a}{data.b}{data.c}{data.d}/").owns_key("x" * 1000 + "/", ".jsonl")
    spread = KeyTemplate("{topic}/{data.a}-{data.b}-{data.c}/")
    assert spread.owns_key(f"orders/{'-' * 1000}/{object_name('orders', 7, '.jsonl')}", ".jsonl")
    assert not spread.owns_key(f"orders/{'-' * 1000}/{object_name('other', 7, '.jsonl')}", ".jsonl")
    assert time.monotonic() - start < 1
    same_segment = KeyTemplate("p-{topic}-")
    assert same_segment.owns_key(f"p-orders-{object_name('orders', 5, '.jsonl')}", ".jsonl")
    assert not same_segment.owns_key(f"p-orders-{object_name('other', 5, '.jsonl')}", ".jsonl")


def test_the_object_names_are_a_level_of_their_own() -> None:
    """`{topic}/{time:%Y/%m/%d/%H}` (ARCHITECTURE's own example) made
    `orders/2024/05/01/14orders+….jsonl`, outside the `…/14/` a reader lists (found by the
    verify-1112 trial)."""
    config = S3SinkConfig(bucket="b-1", key_template="{topic}/{time:%Y/%m/%d/%H}")
    assert config.key_template == "{topic}/{time:%Y/%m/%d/%H}/"
    assert config.template.render(record({})) == "orders/2024/05/01/14/"
    assert S3SinkConfig(bucket="b-1", key_template="a/").key_template == "a/"
    assert S3SinkConfig(bucket="b-1", key_template="").key_template == ""


def test_sizes_and_durations_take_units() -> None:
    config = S3SinkConfig(bucket="b-1", rotate_bytes="10MB", rotate_interval="5m")
    assert config.rotate_bytes == 10_000_000 and config.rotate_interval == 300


def record(data: object, **kw: object) -> Record:
    return Record(data, topic="orders", time="2024-05-01T14:30:00.123456789Z", **kw)  # type: ignore[arg-type]


def test_templates_render_topic_time_fields_and_extensions() -> None:
    template = KeyTemplate(
        "a/{topic}/{time:%Y/%m/%d/%H}/c={data.addr.country}/{partitionkey}/{type}/{{x}}/"
    )
    r = record({"addr": {"country": "DE/AT"}}, type="t.x", extensions={"partitionkey": 42})
    assert template.render(r) == "a/orders/2024/05/01/14/c=DE%2FAT/42/t.x/{x}/"
    assert template.literal_prefix == "a/"
    assert not template.is_literal
    assert KeyTemplate("fixed/").render(r) == "fixed/"
    assert KeyTemplate("{data.flag}-{data.n}").render(record({"flag": True, "n": 1.5})) == (
        "true-1.5"
    )


@pytest.mark.parametrize(
    ("template", "data", "message"),
    [
        ("{data.country}/", {"n": 1}, "has no data.country"),
        ("{data.country}/", {"country": None}, "has no data.country"),
        ("{data.country}/", {"country": {"a": 1}}, "cannot be part of a key"),
        ("{partitionkey}/", {}, "no partitionkey extension"),
    ],
)
def test_a_record_the_template_cannot_place_is_a_data_error(
    template: str, data: object, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        KeyTemplate(template).render(record(data))


def test_a_record_without_time_is_a_data_error_for_time_but_not_for_now() -> None:
    r = Record({"n": 1}, topic="t")
    with pytest.raises(DataError, match="has no time"):
        KeyTemplate("{time:%Y}/").render(r)
    assert len(KeyTemplate("{now:%Y}/").render(r)) == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{topic", "unclosed"),
        ("topic}", "unmatched"),
        ("{}", "not a placeholder"),
        ("{time}", "needs a strftime format"),
        ("{topic:%Y}", "only time and now take a format"),
        ("{data.}", "not a placeholder"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KeyTemplate(text)


def test_object_names_sort_by_offset_and_parse_back() -> None:
    names = [object_name("cdc.shop+x", n, ".jsonl.gz") for n in (9, 10, 100, 2**40)]
    assert names == sorted(names)
    assert names[0] == "cdc.shop%2Bx+00000000000000000009.jsonl.gz"
    assert parse_object_name(names[1]) == ("cdc.shop%2Bx", 10, ".jsonl.gz")
    assert parse_object_name("notes.txt") is None


def test_formats_by_extension() -> None:
    assert format_of_key("a/b.jsonl.gz", "auto", "auto") == ("json", True)
    assert format_of_key("a/b.CSV", "auto", "auto") == ("csv", False)
    assert format_of_key("a/b.parquet", "auto", "auto") == ("parquet", False)
    assert format_of_key("a/b.txt", "auto", "auto") is None
    assert format_of_key("a/b.txt", "json", "gzip") == ("json", True)


def test_a_damaged_gzip_gives_nothing_and_concatenated_members_all() -> None:
    whole = gzip.compress(b"a\n" * 1000)
    assert gunzip(whole) == b"a\n" * 1000
    assert gunzip(whole + gzip.compress(b"b\n")) == b"a\n" * 1000 + b"b\n"
    assert gunzip(whole[: len(whole) // 2]) is None
    assert gunzip(b"not gzip") is None


def test_bad_items_are_failures_with_their_raw_text() -> None:
    items = list(decode_object(b'{"n": 1}\n\nnope\n{"n": 2.50}\n', "json"))
    assert items[0] == (0, {"n": 1}, None)
    assert items[1][0] == 2 and items[1][1] == "nope" and "line 3" in str(items[1][2])
    assert str(items[2][1]["n"]) == "2.50"  # exact: a Decimal from the text
    rows = list(decode_object(b"a,b\n1,2\n3\n", "csv"))
    assert rows[0] == (0, {"a": "1", "b": "2"}, None)
    assert rows[1][0] == 1 and "1 fields, the header has 2" in str(rows[1][2])


def test_bytes_that_are_not_utf_8_fail_with_those_bytes() -> None:
    """Issue 9 item 2's kind (the dead letter holds the raw line): a JSON line or a CSV object
    that is not UTF-8 was a failure with a U+FFFD copy, which a replay cannot restore."""
    items = list(decode_object(b'{"n": 1}\n\xff\xfe{"n": 2}\n', "json"))
    assert items[1][:2] == (1, b'\xff\xfe{"n": 2}') and "line 2" in str(items[1][2])
    ((index, raw, problem),) = list(decode_object(b"a,b\n1,\xe9\n", "csv"))
    assert (index, raw) == (0, b"a,b\n1,\xe9\n") and "not UTF-8 text" in str(problem)


def test_a_csv_header_over_the_field_limit_is_one_failure() -> None:
    """A header field over csv.field_size_limit() raised out of decode_object (a failed
    source); it is one failure of the object with its bytes, as a damaged object is."""
    body = b'"' + b"h" * 200_000 + b'",b\n1,2\n'
    ((index, raw, problem),) = list(decode_object(body, "csv"))
    assert (index, raw) == (0, body) and "field larger than field limit" in str(problem)


def test_botocore_errors_map_onto_the_taxonomy() -> None:
    def client_error(code: str, status: int) -> bex.ClientError:
        return bex.ClientError(
            {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
        )

    assert classify_s3_error(bex.EndpointConnectionError(endpoint_url="http://x")) is (
        RetriableError
    )
    assert classify_s3_error(client_error("SlowDown", 503)) is RetriableError
    assert classify_s3_error(client_error("Weird", 500)) is RetriableError
    assert classify_s3_error(client_error("NoSuchBucket", 404)) is ConfigError
    assert classify_s3_error(client_error("InvalidAccessKeyId", 403)) is ConfigError
    assert classify_s3_error(bex.NoCredentialsError()) is ConfigError
    assert classify_s3_error(ValueError("x")) is None


def test_a_template_owns_only_the_keys_it_could_have_made() -> None:
    name = "orders+00000000000000000001.jsonl"
    template = KeyTemplate("{topic}/a/{time:%Y/%m}/c={data.c}/")
    assert template.owns_key(f"orders/a/2024/05/c=DE/{name}", ".jsonl")
    assert not template.owns_key(f"other/a/2024/05/c=DE/{name}", ".jsonl")  # another topic
    assert not template.owns_key(f"orders/b/2024/05/c=DE/{name}", ".jsonl")
    assert not template.owns_key(f"orders/a/2024/c=DE/{name}", ".jsonl")
    assert not template.owns_key("orders/a/2024/05/c=DE/orders+1.jsonl", ".jsonl")
    assert not template.owns_key(f"orders/a/2024/05/c=DE/{name}", ".csv")
    assert KeyTemplate("fixed/").owns_key(f"fixed/{name}", ".jsonl")
    assert not KeyTemplate("fixed/").owns_key(f"fixed/sub/{name}", ".jsonl")


def test_dot_segments_and_empty_values_never_become_key_levels() -> None:
    template = KeyTemplate("a/c={data.c}/{data.d}/")
    assert template.render(record({"c": "..", "d": "."})) == "a/c=%2E%2E/%2E/"
    assert template.render(record({"c": "", "d": "_empty_"})) == "a/c=_empty_/%5Fempty_/"
    assert template.render(record({"c": "...", "d": ".x"})) == "a/c=.../.x/"
    assert KeyTemplate("{subject}/").render(record({}, subject="..")) == "%2E%2E/"


def test_a_csv_byte_order_mark_is_not_part_of_the_first_header() -> None:
    body = "\ufeffid,name\n1,a\n".encode()
    assert list(decode_object(body, "csv")) == [(0, {"id": "1", "name": "a"}, None)]


def test_a_json_lines_byte_order_mark_is_not_part_of_the_first_value() -> None:
    """PowerShell and Notepad write one; the first line failed as malformed JSON (found by the
    verify-1112 trial)."""
    body = '\ufeff{"a": 1}\r\n{"a": 2}\n'.encode()
    assert list(decode_object(body, "json")) == [(0, {"a": 1}, None), (1, {"a": 2}, None)]


@pytest.mark.parametrize("depth", [128, 129])
def test_a_json_line_nested_past_the_limit_fails_alone(depth: int) -> None:
    """The lines are decoded a chunk at a time by msgspec, which nests up to ~1,000 levels:
    the nesting limit of meshconnect's JSON (128) is checked on the lines that could pass it."""
    deep = b'{"a":' * depth + b"1" + b"}" * depth
    items = list(decode_object(b'{"n": 1}\n' + deep + b'\n{"n": 2}\n', "json"))
    assert [i for i, _, problem in items if problem is None] == (
        [0, 1, 2] if depth == 128 else [0, 2]
    )
    if depth == 129:
        assert "nested deeper than 128" in str(items[1][2])


@pytest.mark.parametrize(
    ("body", "bad"),
    [
        (b"1 2\n\n3\n", 0),
        (b"1 2\n \t\r\n3", 0),
        (b"\n1 2\n3\n", 1),
        (b" \n1 2\n3\n", 1),
        (b'{"a": 1} {"b": 2}\n\n3\n', 0),
    ],
)
def test_a_line_of_two_values_fails_even_beside_a_blank_line(body: bytes, bad: int) -> None:
    """A chunk's lines are decoded in one call, which skips blank lines and reads two values
    on one line: as many values as lines must not pass for one value a line."""
    items = list(decode_object(body, "json"))
    assert [(i, v) for i, v, problem in items if problem is None] == [(2, 3)]
    ((index, raw, problem),) = [item for item in items if item[2] is not None]
    assert index == bad and raw == body.split(b"\n")[bad].decode()
    assert f"line {bad + 1}" in str(problem)


def test_a_last_line_of_whitespace_is_blank_and_a_form_feed_line_is_no_json() -> None:
    """A last line of whitespace with no newline after it was not seen as blank, so beside a
    line of two values the count came right and that line's values were records (found by
    the property test below). A line of a form feed or a vertical tab (whitespace to Python,
    not to JSON) was skipped as blank: it is a failure with its text."""
    items = list(decode_object(b'{"a": 1} [1, 2]\n3\n ', "json"))
    assert [(i, v) for i, v, problem in items if problem is not None] == [(0, '{"a": 1} [1, 2]')]
    items = list(decode_object(b"1\n\x0c\n2\n\x0b", "json"))
    assert [(i, v, problem is None) for i, v, problem in items] == [
        (0, 1, True),
        (1, "\x0c", False),
        (2, 2, True),
        (3, "\x0b", False),
    ]


def line_by_line(body: bytes) -> list[tuple[int, str, bool]]:
    """What a JSON-lines object means, one line at a time: a line of JSON whitespace only is
    skipped, a line that is exactly one JSON value is that value, any other line a failure
    with its own text (its bytes when it is not UTF-8). Items as (index, the value's repr or
    the raw text's, failed), for :func:`blocks_of`."""
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    lines = body.split(b"\n")
    if body.endswith(b"\n"):
        lines.pop()
    items = []
    for index, line in enumerate(lines):
        if not line.strip(b" \t\r"):
            continue
        try:
            items.append((index, repr(jsonvalue.loads(line)), False))
        except (jsonvalue.JSONValueError, UnicodeDecodeError):
            try:
                raw: str | bytes = line.decode()
            except UnicodeDecodeError:
                raw = line
            items.append((index, repr(raw), True))
    return items


def blocks_of(body: bytes) -> list[tuple[int, str, bool]]:
    """The items ``decode_blocks`` makes of a JSON-lines ``body``, as :func:`line_by_line`;
    a failure's problem must name its own line."""
    items = []
    for indexes, values, problems in formats.decode_blocks(body, "json"):
        for index, value, problem in zip(
            indexes, values, problems or [None] * len(values), strict=True
        ):
            assert problem is None or problem.startswith(f"line {index + 1}: ")
            items.append((index, repr(value), problem is not None))
    return items


@pytest.mark.parametrize(
    "lines",
    [
        [b'{"a":1} {"b":2}', b'{"c":', b"3}"],
        [b"[1] [2]", b"[1", b",2]"],
        [b'{"a":1} {"b":2}', b'{"a":1', b',"b":2}'],
        [b"1 2", b'{"c":', b"3}"],
        [b"1 2", b"[1", b",2]"],
        [b'{"c":', b"3} 4"],  # no line of two whole values: the split one ends beside one
        [b"1 2 3", b"[", b"1,", b"2]"],
        [b"{}{}", b'{"s": "{[",', b'"t": 1}'],  # brackets in a string count for nothing
    ],
)
@pytest.mark.parametrize("around", ["alone", "amid good lines", "after a blank line"])
def test_a_value_over_lines_beside_a_line_of_more_values_is_no_record(
    lines: list[bytes], around: str
) -> None:
    """A block's lines are decoded in one call, which reads a value over two lines and two
    values on one line: as many values as lines passed for one value a line, and the bad
    lines became records. A JSON line is one value on one line; any other line fails with its
    own text, whatever its neighbours. After a blank line the block goes line by line, whose
    chunks were decoded in one call too (the same fault)."""
    good = [b'{"n": 1}']
    if around == "amid good lines":
        lines = [*good, *lines, *good]
    elif around == "after a blank line":
        lines = [b"", *lines]
    body = b"\n".join(lines) + b"\n"
    bad = [
        (i, repr(line.decode()), True) for i, line in enumerate(lines) if line not in (b"", *good)
    ]
    assert [item for item in blocks_of(body) if item[2]] == bad
    assert blocks_of(body) == line_by_line(body)


#: Lines for the property test below: good ones (one value each, brackets in strings too),
#: ones of several values, values split over lines at token boundaries (``|``), blank lines
#: and bad ones (a form feed and a vertical tab are no JSON whitespace).
_GOOD = [
    b'{"a": 1}', b"[1, 2]", b"3", b'"s"', b'{"n": 2.50}', b"null", b"{}", b"[]", b"-0.5e3",
    b'{"s": "}{][,:\\n"}', b'  {"pad": true}\t', b"[" * 128 + b"]" * 128,
]  # fmt: skip
_SPLIT = [
    b'{"c":|3}', b"[1|,2]", b'{"a":1|,"b":2}', b"[|]", b'{"x": [1,|2],|"y": {|}}', b'{|"k"|:|"v"}',
    b'[{"s": "]["}|,|3]', b"[|1|,|[|2|]|]", b'{|"a"|:|{|"b"|:|[|1|,|"x"|]|}|}', b"[|[|]|,|{|}|]",
    b'[|{|}|,|"s,"|,|null|]',
]  # fmt: skip
_BAD = [
    b"{oops", b"]", b",", b"\x0c", b"\x0b", b"1 x", b"\xff\xfe1", b"[" * 129 + b"]" * 129, b"}",
]  # fmt: skip


@st.composite
def _json_lines_bodies(draw: st.DrawFn) -> bytes:
    """Splices of the lines above, with \\n or \\r\\n line ends, a byte order mark or none."""
    pieces: list[bytes] = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["good", "several", "split", "blank", "bad"]))
        if kind == "good":
            pieces.append(draw(st.sampled_from(_GOOD)))
        elif kind == "several":
            values = draw(st.lists(st.sampled_from(_GOOD[:10]), min_size=2, max_size=3))
            pieces.append(draw(st.sampled_from([b" ", b"", b"\t"])).join(values))
        elif kind == "split":
            parts = draw(st.sampled_from(_SPLIT)).split(b"|")
            at = draw(st.sets(st.integers(1, len(parts) - 1), min_size=1, max_size=3))
            cut = st.sampled_from([b"\n", b" \n", b"\n\n", b"\r\n"])
            pieces.append(
                b"".join((draw(cut) if i in at else b"") + p for i, p in enumerate(parts))
            )
        elif kind == "blank":
            pieces.append(draw(st.sampled_from([b"", b" ", b"\t", b"\r"])))
        else:
            pieces.append(draw(st.sampled_from(_BAD)))
    body = draw(st.sampled_from([b"\n", b"\r\n"])).join(pieces)
    return (
        draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + body + draw(st.sampled_from([b"", b"\n"]))
    )


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=_json_lines_bodies(), chunk_bytes=st.sampled_from([1, 16, 64, 1 << 18]))
def test_blocks_of_json_lines_are_always_what_line_by_line_decoding_makes(
    body: bytes, chunk_bytes: int
) -> None:
    """Whatever the splice of good, bad, blank lines, lines of several values and values
    split over lines, and wherever the blocks end, the blocks hold exactly the items of
    decoding one line at a time (the fast paths are only faster)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(formats, "_CHUNK_BYTES", chunk_bytes)
        assert blocks_of(body) == line_by_line(body)


def test_the_bracket_shortcut_never_passes_a_value_over_lines() -> None:
    """_lines_of_brackets spares most blocks the look at the values' raw texts: it may say
    no where no value goes on over lines, never yes where one does. Every value of _SPLIT
    cut at every one or two of its token boundaries, alone and between lines of brackets.
    The truth, for a text that decodes: no value goes on over lines exactly when each line
    alone decodes (into whole values, none or more)."""
    decode = msgspec.json.Decoder().decode_lines

    def decodes(line: bytes) -> bool:
        try:
            decode(line)
        except msgspec.DecodeError:
            return False
        return True

    checked = 0
    for value in _SPLIT:
        parts = value.split(b"|")
        boundaries = range(1, len(parts))
        for at in [*itertools.combinations(boundaries, 1), *itertools.combinations(boundaries, 2)]:
            for cut in (b"\n", b" \n", b"\n\n", b"\r\n"):
                split = b"".join((cut if i in at else b"") + p for i, p in enumerate(parts))
                for body in (split, b"{}\n" + split + b"\n[]\n", b"[1] " + split + b" {}"):
                    over_lines = not all(decodes(line) for line in body.split(b"\n"))
                    assert over_lines, body  # every cut is inside the value
                    assert not formats._within_lines(body), body
                    structure, counts = formats._structure(body)
                    assert not formats._lines_of_brackets(structure, len(counts)), body
                    checked += 1
    assert checked > 2000
    for line in _GOOD:  # and it says yes to lines of objects and arrays
        body = b"{}\n" + line + b"\n[]"
        structure, counts = formats._structure(body)
        assert formats._within_lines(body)
        assert formats._lines_of_brackets(structure, len(counts)) is line.strip().startswith(
            (b"{", b"[")
        )


def test_lines_across_decoder_blocks_keep_their_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of about _CHUNK_BYTES bytes end at a line's end; a bad line or a blank one in a
    block makes only that block go line by line; numbers run on over the blocks."""
    monkeypatch.setattr(formats, "_CHUNK_BYTES", 64)
    lines = [b'{"i": %d, "pad": "%s"}' % (i, b"x" * (i % 50)) for i in range(300)]
    lines[117] = b"{oops"
    lines[205] = b""
    lines[206] = b"  "
    body = b"\n".join(lines)  # no newline after the last line
    items = list(decode_object(body, "json"))
    good = [i for i, _, problem in items if problem is None]
    assert good == [i for i in range(300) if i not in (117, 205, 206)]
    assert all(value["i"] == i for i, value, problem in items if problem is None)
    assert [(i, raw) for i, raw, problem in items if problem is not None] == [(117, "{oops")]
    blocks = list(formats.decode_blocks(body, "json"))
    assert len(blocks) > 10 and any(problems is None for _, _, problems in blocks)


def test_a_csv_blank_line_is_no_row_and_a_repeated_header_name_loses_nothing() -> None:
    """A blank line (a file ending in two newlines) was a failure with 0 fields; a header
    naming a column twice silently kept only the last value of it (found by the verify-1112
    trial): every row of such an object is now a failure with its raw text."""
    assert list(decode_object(b"x,y\n1,2\n\n3,4\n\n", "csv")) == [
        (0, {"x": "1", "y": "2"}, None),
        (1, {"x": "3", "y": "4"}, None),
    ]
    assert list(decode_object(b"x,x,y\n1,2,3\n", "csv")) == [
        (0, "1,2,3", "row 1: the header names ['x'] more than once")
    ]


def test_a_garbage_parquet_object_keeps_its_raw_bytes_for_the_dead_letter() -> None:
    body = b"PAR1 this is no parquet file"
    ((index, raw, problem),) = list(decode_object(body, "parquet"))
    assert (index, raw) == (0, body) and problem and "not a readable Parquet file" in problem


async def test_parquet_fields_in_another_order_stay_in_the_object() -> None:
    """The same fields in another order (JSON from another producer) started a new Parquet
    object, as they did for CSV (c9e6dc4): the object's columns are in its first record's
    order, and a later record's values go to their columns by name. Other fields, or a
    value of another type, still start a new object (a null fits any type)."""
    import io

    import pyarrow.parquet as pq

    from meshconnect.connectors.s3.sink import S3Sink

    sink = S3Sink(
        S3SinkConfig(bucket="bucket-1", format="parquet"),
        ConnectorContext("t", "s3", logging.getLogger("t")),
    )
    rows = [
        {"a": None, "b": "x"},
        {"b": "y", "a": 2},  # the null's type is known now: an integer
        {"b": None, "a": 3},
        {"b": 4, "a": 5},  # b an integer: another schema
        {"a": 6, "b": 7},
        {"a": 8},  # a field fewer
    ]
    await sink.write([Record(row, topic="t", offset=i) for i, row in enumerate(rows)])
    # the uploads of the closed objects would start in the background: nothing to upload to
    for task in sink.inflight:
        task.cancel()
    objects = [*sink.inflight.values(), *sink.sealed, *sink.open_objects.values()]
    assert [(o.first_offset, o.count) for o in objects] == [(0, 3), (3, 2), (5, 1)]
    tables = [pq.read_table(io.BytesIO(o.body.build())) for o in objects[:2]]
    assert [t.schema.names for t in tables] == [["a", "b"], ["b", "a"]]
    assert [str(t.schema.field("b").type) for t in tables] == ["string", "int64"]
    assert [t.to_pylist() for t in tables] == [
        [{"a": None, "b": "x"}, {"a": 2, "b": "y"}, {"a": 3, "b": None}],
        [{"b": 4, "a": 5}, {"b": 7, "a": 6}],
    ]


def test_rotate_bytes_null_needs_another_limit() -> None:
    with pytest.raises(ValidationError, match="rotate_bytes: null"):
        S3SinkConfig(bucket="b-1", rotate_bytes=None, rotate_interval=None)
    assert S3SinkConfig(bucket="b-1", rotate_bytes=None, rotate_records=10).rotate_bytes is None


def test_a_parquet_row_check_refuses_what_pyarrow_refuses_and_its_shortcut_never_lies() -> None:
    import pyarrow as pa

    from meshconnect.connectors.s3.formats import _plain, check_parquet_row

    for bad in [2**63, -(2**63) - 1, 10**30, Decimal("1.5E+400"), Decimal("NaN")]:
        with pytest.raises(DataError, match="cannot be a Parquet row"):
            check_parquet_row({"a": 1, "v": bad})
    values = [
        None, True, "x", 1.5, 2**63 - 1, -(2**63), Decimal("1E+37"), Decimal("-1.25"),
        Decimal("1E-38"), {"c": 1}, {"c": {"d": [1, 2]}}, [1, None, 3], ["a"], [],
        [1, "x"], {}, [{"a": 1}, {"a": "x"}], [1, 1.5], Decimal("1E+39"),
    ]  # fmt: skip
    for value in values:
        if _plain(value):
            pa.Table.from_pylist([{"v": value}])  # the shortcut said so: must convert
        check_parquet_row({"v": value})  # convertible, or kept as JSON text


@pytest.mark.parametrize(
    "time",
    ["2024-05-01t14:30:00z", "2024-05-01T16:30:00.123456789+02:00", "2024-05-01 14:30:00Z"],
)
def test_time_in_every_rfc_3339_spelling_fills_the_key(time: str) -> None:
    """Issue 20 fault 3's kind: RFC 3339 allows a lower-case t and z (a valid CloudEvent time,
    kept as it came); the key template failed on it ("Invalid isoformat string")."""
    r = Record({"n": 1}, topic="t", time=time)
    assert KeyTemplate("{time:%Y/%m/%d/%H}/").render(r) == "2024/05/01/14/"


@pytest.mark.parametrize(("batch_size", "resume"), [(7, 0), (7, 333), (1, 998), (5000, 40)])
def test_batches_cut_decoder_blocks_and_resume_mid_object(
    monkeypatch: pytest.MonkeyPatch, batch_size: int, resume: int
) -> None:
    """A batch takes whole blocks and parts of them; a restart at item ``resume`` passes over
    what came before, whatever block it is in; every line is a record or a failure once."""
    monkeypatch.setattr(formats, "_CHUNK_BYTES", 100)
    lines = [b'{"i": %d}' % i for i in range(1000)]
    for bad in (3, 334, 700):
        lines[bad] = b"{bad"
    body = b"\n".join(lines) + b"\n"
    config = S3SourceConfig(bucket="bucket-1", prefix="in/", batch_size=batch_size)
    source = S3Source(config, ConnectorContext("t", "s3", logging.getLogger("t")))
    key = "in/a.jsonl"
    source.reading = _Reading(
        key, len(body), "2024-01-01T00:00:00Z", formats.decode_blocks(body, "json"), resume
    )
    ids: list[str] = []
    failed: list[str] = []
    while source.reading is not None:
        batch = source._batch(source.reading)
        assert len(batch.records) + len(batch.failures) <= batch_size
        ids += [r.id for r in batch.records]
        failed += [r.id for r, _ in batch.failures]
        position = batch.positions[source.partition]
        seen = [r.id for r in batch.records] + [r.id for r, _ in batch.failures]
        if position["key"] is not None and seen:
            assert max(int(i.rsplit("#", 1)[1]) for i in seen) + 1 == position["index"]
    base = f"s3://bucket-1/{key}#"
    assert ids == [base + str(i) for i in range(resume, 1000) if i not in (3, 334, 700)]
    assert failed == [base + str(i) for i in (3, 334, 700) if i >= resume]


def test_a_key_a_string_cannot_hold_resumes_mid_object_where_it_stopped() -> None:
    """The records spell such a key (``\\u0009``); the position holds the key itself, which
    is what a restart compares the objects it lists with."""
    body = b"".join(b'{"i": %d}\n' % i for i in range(3))
    config = S3SourceConfig(bucket="bucket-1", prefix="in/", batch_size=1)
    source = S3Source(config, ConnectorContext("t", "s3", logging.getLogger("t")))
    key = "in/a\tb.jsonl"
    source.reading = _Reading(
        key, len(body), "2024-01-01T00:00:00Z", formats.decode_blocks(body, "json"), 0
    )
    batch = source._batch(source.reading)
    assert [r.subject for r in batch.records] == ["in/a\\u0009b.jsonl"]
    restarted = S3Source(config, ConnectorContext("t", "s3", logging.getLogger("t")))
    restarted.resume_key = batch.positions[source.partition]["key"]
    restarted.resume_index = batch.positions[source.partition]["index"]
    assert restarted._resume_index(key) == 1
    while source.reading is not None:
        batch = source._batch(source.reading)
    assert batch.positions[source.partition]["dirs"] == {"in/": key}
    assert source._is_read(key) and not source._is_read("in/a b.jsonl")


def test_cloudevents_lines_become_the_events_and_the_bad_ones_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """format: cloudevents reads each line as a CloudEvent (its id, source, type and data
    kept); a line that is no JSON and one that is no CloudEvent fail alone, across blocks."""
    monkeypatch.setattr(formats, "_CHUNK_BYTES", 200)
    lines = [
        b'{"specversion": "1.0", "id": "e%d", "source": "s", "type": "t", "data": {"n": %d.5}}'
        % (i, i)
        for i in range(40)
    ]
    lines[7] = b"{nope"
    lines[21] = b'{"specversion": "1.0", "id": "x"}'  # no source, no type
    body = b"\n".join(lines) + b"\n"
    config = S3SourceConfig(bucket="bucket-1", prefix="in/", batch_size=9, format="cloudevents")
    source = S3Source(config, ConnectorContext("t", "s3", logging.getLogger("t")))
    source.reading = _Reading(
        "in/e.jsonl", len(body), "2024-01-01T00:00:00Z", formats.decode_blocks(body, "json"), 0
    )
    records: list[Record] = []
    failures: list[tuple[Record, BaseException]] = []
    while source.reading is not None:
        batch = source._batch(source.reading)
        records += batch.records
        failures += batch.failures
    assert [r.id for r in records] == [f"e{i}" for i in range(40) if i not in (7, 21)]
    assert records[0].source == "s" and records[0].data == {"n": Decimal("0.5")}
    assert [r.id.rsplit("#", 1)[1] for r, _ in failures] == ["7", "21"]
    assert "not a CloudEvent" in str(failures[1][1])


async def test_an_unexpected_error_in_a_batch_takes_none_of_its_records() -> None:
    """An exception out of ``write`` (not a record's data error) leaves the open objects as
    they were: the worker retries the batch, which must not add its first records twice."""
    from meshconnect.connectors.s3.sink import S3Sink

    sink = S3Sink(
        S3SinkConfig(bucket="bucket-1", key_template="{data.k}/"),
        ConnectorContext("t", "s3", logging.getLogger("t")),
    )

    class Boom(dict[str, str]):  # a value whose rendering fails in an unforeseen way
        def get(self, key: object, default: object = None) -> object:
            raise RuntimeError("boom")

    batch = [Record({"k": "a"}, topic="t", offset=0), Record({"k": "a"}, topic="t", offset=1)]
    with pytest.raises(RuntimeError):
        await sink.write([*batch, Record(Boom(k="a"), topic="t", offset=2)])
    assert sink.open_objects == {} and sink.seq == 0
    await sink.write(batch)
    (obj,) = sink.open_objects.values()
    assert obj.count == 2
    # a time whose UTC is past year 9999: that record's data error, the others taken once
    late = Record({"k": "b"}, topic="t", offset=3, time="9999-12-31T23:59:59-01:00")
    timed = S3Sink(
        S3SinkConfig(bucket="bucket-1", key_template="{time:%Y}/"),
        ConnectorContext("t", "s3", logging.getLogger("t")),
    )
    with pytest.raises(BatchError) as raised:
        await timed.write(
            [Record({"k": "b"}, topic="t", offset=2, time="2024-01-01T00:00:00Z"), late]
        )
    assert list(raised.value.failures) == [1]
    assert isinstance(raised.value.failures[1], DataError)
    assert [o.count for o in timed.open_objects.values()] == [1]


def test_a_csv_row_the_reader_refuses_is_one_failure_and_the_rows_after_it_are_read() -> None:
    """A field over csv.field_size_limit() in the middle of an object ended the object there
    (the rows after it lost, the failure's text empty); an object ending inside a quoted field
    made one good row of everything after the quote."""
    big = "x" * 200_000
    body = f'a,b\n1,2\n3,{big}\n4,"{big}\n{big}",q\n5,6\n'.encode()
    items = list(decode_object(body, "csv"))
    assert [(i, v) for i, v, p in items if p is None] == [
        (0, {"a": "1", "b": "2"}),
        (3, {"a": "5", "b": "6"}),
    ]
    bad = [(i, v, p) for i, v, p in items if p is not None]
    assert [(i, v) for i, v, _ in bad] == [(1, f"3,{big}"), (2, f'4,"{big}\n{big}",q')]
    assert all("field larger than field limit" in str(p) for _, _, p in bad)
    items = list(decode_object(b'a,b\n1,2\n3,"open\n5,6\n', "csv"))
    assert items[0] == (0, {"a": "1", "b": "2"}, None)
    assert items[1][:2] == (1, '3,"open\n5,6') and "not closed" in str(items[1][2])
    assert len(items) == 2


@pytest.mark.parametrize("model", [S3SinkConfig, S3SourceConfig])
def test_an_endpoint_or_credential_mistake_is_found_by_validate(model: Any) -> None:
    """An endpoint without its scheme passed validate and failed each start ("Invalid
    endpoint", a restart loop); one with the bucket as its path listed the wrong place
    (NoSuchKey); an empty secret (``${env:NAME}`` of an empty variable) failed every request."""
    for url, why in [
        ("127.0.0.1:9000", "http:// or https://"),
        ("htp://127.0.0.1:9000", "http:// or https://"),
        ("https://acct.r2.cloudflarestorage.com/archive", "without a path"),
        ("http://127.0.0.1:9000?x=1", "without a path"),
        ("http://127.0.0.1:99999", "Port out of range"),
    ]:
        with pytest.raises(ValidationError, match="endpoint_url") as caught:
            model(bucket="b-1", endpoint_url=url)
        assert why in str(caught.value)
    for url in (
        "http://127.0.0.1:9000",
        "https://acct.r2.cloudflarestorage.com/",
        "http://[::1]:9",
    ):
        assert model(bucket="b-1", endpoint_url=url).endpoint_url == url
    with pytest.raises(ValidationError, match="secret_access_key") as caught:
        model(bucket="b-1", access_key_id="AKIA", secret_access_key=" ")
    with pytest.raises(ValidationError, match="access_key_id"):
        model(bucket="b-1", access_key_id="", secret_access_key=SECRET)
    with pytest.raises(ValidationError, match="session_token"):
        model(bucket="b-1", access_key_id="AKIA", secret_access_key=SECRET, session_token="")


def test_gzip_is_undone_but_for_a_parquet_file() -> None:
    """`compression: gzip` of the source: gunzip, except a Parquet file (PAR1 at its start),
    whose gzip is its column codec (the sink's `compression: gzip`)."""
    assert formats.unpack(gzip.compress(b"a\n"), "json", True) == b"a\n"
    assert formats.unpack(gzip.compress(b"a\n"), "csv", True) == b"a\n"
    assert formats.unpack(b"PAR1rest", "parquet", True) == b"PAR1rest"
    assert formats.unpack(gzip.compress(b"PAR1rest"), "parquet", True) == b"PAR1rest"
    assert formats.unpack(b"not gzip", "json", True) is None
    assert formats.unpack(b"PAR1", "json", False) == b"PAR1"


def test_gunzip_stops_at_its_limit() -> None:
    body = gzip.compress(b"a" * 1000) + gzip.compress(b"b" * 10)  # two members
    assert gunzip(body) == gunzip(body, 1010) == b"a" * 1000 + b"b" * 10
    with pytest.raises(formats.TooLarge):
        gunzip(body, 1009)
    with pytest.raises(formats.TooLarge):
        gunzip(gzip.compress(b"\0" * (64 * 1024 * 1024)), 1024 * 1024)
    assert gunzip(body[:-5], 5000) is None


def test_a_move_to_that_leads_back_under_the_prefix_is_refused() -> None:
    """prefix data/in/ with move_to data/ moved data/in/in/a.jsonl to data/in/a.jsonl, under
    the prefix again: read a second time (and moved on to data/a.jsonl)."""
    with pytest.raises(ValidationError, match="starts with move_to 'data/'"):
        S3SourceConfig(bucket="b-1", prefix="data/in/", after_read="move", move_to="data/")
    ok = S3SourceConfig(bucket="b-1", prefix="data/in/", after_read="move", move_to="data/done/")
    assert ok.move_to == "data/done/"


def test_objects_s3_cannot_take_are_refused_by_validate_or_get_larger_parts() -> None:
    """A multipart_threshold over 5GiB sent larger objects as one PUT, which S3 refuses
    (EntityTooLarge) on every retry; an object over part_size x 10,000 needed a part S3
    refuses (more than 10,000): either was an upload no retry could finish."""
    with pytest.raises(ValidationError, match="multipart_threshold"):
        S3SinkConfig(bucket="b-1", multipart_threshold="6GiB")
    assert S3SinkConfig(bucket="b-1", multipart_threshold="5GiB").multipart_threshold == 5 * 1024**3
    from meshconnect.connectors.s3.sink import part_step

    mib = 1024 * 1024
    assert part_step(100 * mib, 8 * mib) == 8 * mib
    size = 8 * mib * 10_000 + 1  # one byte more than 10,000 parts of 8MiB
    step = part_step(size, 8 * mib)
    assert step > 8 * mib and -(-size // step) <= 10_000


def test_a_prefix_given_as_an_s3_url_is_refused() -> None:
    """prefix: s3://my-archive/orders/ listed keys starting with that text: none, a bounded
    run that read nothing and ended with status 0."""
    with pytest.raises(ValidationError, match="prefix"):
        S3SourceConfig(bucket="my-archive", prefix="s3://my-archive/orders/")
    assert S3SourceConfig(bucket="my-archive", prefix="orders/").prefix == "orders/"


def test_a_key_template_with_an_empty_level_or_a_url_is_refused() -> None:
    """key_template: /archive/{topic}/ wrote keys starting with '/' (a folder without a name
    in consoles; a source with prefix archive/ found none of them); 'a//{topic}/' an empty
    level in the middle; s3://bucket/x/ a key starting with 's3:'."""
    for text in ("/archive/{topic}/", "a//{topic}/", "{topic}//", "s3://b/x/"):
        with pytest.raises(ValidationError, match="key_template"):
            S3SinkConfig(bucket="b-1", key_template=text)
    for text in ("", "{topic}/{data.x}/", "archive/{topic}/"):
        S3SinkConfig(bucket="b-1", key_template=text)


async def test_an_open_parquet_or_csv_object_holds_about_its_rows_json_size() -> None:
    """rotate_bytes (counted as the rows' JSON) bounds the memory of an open object: CSV and
    Parquet objects held each row as a dict, ~10 times its JSON here (64MiB of rows took
    over 600MiB per open object, per partition). The rest of the bound is the sink's
    bookkeeping of each record's offset (~100 bytes a record until a flush passes it)."""
    import gc
    import tracemalloc

    from meshconnect.connectors.s3.sink import S3Sink

    for fmt in ("parquet", "csv"):
        sink = S3Sink(
            S3SinkConfig(bucket="bucket-1", format=fmt, key_template="p/"),
            ConnectorContext("t", "s3", logging.getLogger("t")),
        )
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for b in range(20):
                batch = [
                    Record(
                        jsonvalue.loads(
                            b'{"id":%d,"qty":%d,"price":12.50,"total":%d.25,"country":"DE","ok":true}'
                            % (n, n % 7, n)
                        ),
                        topic="t",
                        offset=n,
                    )
                    for n in range(b * 1000, (b + 1) * 1000)
                ]
                await sink.write(batch)
                await sink.flush()  # nothing closed: the open object keeps its rows
                del batch
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        (obj,) = sink.open_objects.values()
        assert obj.count == 20_000
        assert held < 5 * obj.size, (fmt, held, obj.size)


@given(
    st.lists(st.sampled_from("abc"), min_size=1, max_size=40),
    st.sets(st.integers(0, 39), max_size=10),
    st.integers(0, 10**6),
)
def test_an_objects_floor_is_each_topics_first_offset_from_its_first_record(
    topics: list[str], opens: set[int], seq: int
) -> None:
    """What the sink keeps per write call instead of a (topic, offset) per record: for an
    object opened at a record of the call, each topic's first offset from that record on."""
    from meshconnect.connectors.s3.sink import S3Sink

    taken = [(topic, 10 * i) for i, topic in enumerate(topics)]
    opened = [object.__new__(_Opened) for _ in sorted(i for i in opens if i < len(taken))]
    for obj, i in zip(opened, sorted(i for i in opens if i < len(taken)), strict=True):
        obj.first_seq = seq + i
    firsts = S3Sink._floors(seq, taken, opened)  # type: ignore[arg-type]

    def naive(start: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for topic, offset in taken[start:]:
            out.setdefault(topic, offset)
        return out

    assert firsts == naive(0)
    for obj in opened:
        assert obj.floor == naive(obj.first_seq - seq)


class _Opened:
    first_seq: int
    floor: dict[str, int]
