"""Siblings of the faults of issue 18 that its own tests do not try: times whose offset takes
them past year 9999 or before year 1, fraction and separator forms RFC 3339 does not have,
integers longer than Python reads, and file names no CloudEvents String can hold as they are
(control characters, noncharacters, bytes that are not UTF-8): every line is stored or
dead-lettered with its rule, and every record the file source makes is valid."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_cloudevents import BASE, event, expected_message, run_lines
from test_file_edges import read_to_end, started

from meshconnect.eventrules import attribute_problems

_TIME = "attribute 'time' must be an RFC 3339 timestamp such as 2018-04-05T17:31:00Z, not "

#: (line, the error of its dead letter, or None: stored as it came)
SIBLINGS = [
    (event(time="9999-12-31T23:59:59-23:59"), None),  # past 9999 in UTC: kept as written
    (event(time="0001-01-01T00:00:00+01:00"), None),  # before year 1 in UTC
    (event(time="2018-04-05T17:31:00.Z"), _TIME + "'2018-04-05T17:31:00.Z'"),
    (event(time="2018-04-05T17:31:00,5Z"), _TIME + "'2018-04-05T17:31:00,5Z'"),
    (event(time=" 2018-04-05T17:31:00Z"), _TIME + "' 2018-04-05T17:31:00Z'"),
    (
        event(specversion="1.0 "),
        "attribute 'specversion' must be \"1.0\" (the only version supported), not '1.0 '",
    ),
    (event(id=True), "attribute 'id' must be a string, not a boolean"),
    (event(source="/ü"), "attribute 'source' must be a URI-reference (RFC 3986), not '/ü'"),
    (
        '{"specversion":"1.0","id":"e1","source":"/s","type":"t","data":' + "9" * 5000 + "}",
        "invalid JSON: an integer of more than 4300 digits (Python's limit on integer text)",
    ),
    (
        '{"specversion":"1.0","id":"e1","source":"/s","type":"t","big":-' + "9" * 5000 + "}",
        "invalid JSON: an integer of more than 4300 digits (Python's limit on integer text)",
    ),
]


async def test_sibling_lines_are_stored_or_dead_lettered_with_their_rule(tmp_path: Path) -> None:
    lines: list[str] = []
    want_dead: dict[int, str] = {}
    want_stored = []
    for i, (line, message) in enumerate(SIBLINGS):
        lines += [event(id=f"good{i}"), line]
        want_stored.append({**BASE, "id": f"good{i}"})
        if message is None:
            want_stored.append(json.loads(line))
        else:
            want_dead[len(lines)] = expected_message(message)
    stored, dead = await run_lines(tmp_path, lines)
    assert dead == want_dead
    assert stored == want_stored


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ("tab\there.jsonl", "tab\\u0009here.jsonl"),
        ("new\nline.jsonl", "new\\u000aline.jsonl"),
        ("del\x7f.jsonl", "del\\u007f.jsonl"),
        ("nc\ufffe.jsonl", "nc\\ufffe.jsonl"),
        # a backslash is doubled, so the name above cannot collide with one spelled so
        ("tab\\u0009here.jsonl", "tab\\\\u0009here.jsonl"),
        ("back\\slash.jsonl", "back\\\\slash.jsonl"),
        ("plain é.jsonl", "plain é.jsonl"),
    ],
)
async def test_a_file_name_a_string_cannot_hold_is_a_spelled_subject(
    tmp_path: Path, name: str, subject: str
) -> None:
    (tmp_path / name).write_bytes(b"{}\n")
    records, failures, _ = await read_to_end(await started(tmp_path, path=name))
    assert failures == []
    assert [r.subject for r in records] == [subject]
    assert attribute_problems(records[0]) == {}


async def test_a_file_name_that_is_not_utf8_is_a_spelled_subject(tmp_path: Path) -> None:
    with open(os.fsencode(str(tmp_path)) + b"/x\xff.jsonl", "wb") as f:
        f.write(b"{}\n")
    records, failures, _ = await read_to_end(
        await started(tmp_path, path=os.fsdecode(b"x\xff.jsonl"))
    )
    assert failures == []
    folder = str(tmp_path).replace("%", "%25")
    assert [(r.source, r.subject) for r in records] == [
        (f"file://{folder}/x%FF.jsonl", "x\\udcff.jsonl")
    ]
    assert attribute_problems(records[0]) == {}


def test_spelled_string_takes_printable_text_as_it_is_and_spells_every_bad_character() -> None:
    """The fast path (``str.isprintable``) agrees with the full check on every code point:
    none that is printable is a character a String may not hold."""
    import sys

    from meshconnect.eventrules import attribute_problem, spelled_string

    for point in range(sys.maxunicode + 1):
        char = chr(point)
        spelled = spelled_string(f"a{char}b")
        assert attribute_problem("subject", spelled) is None, hex(point)
        if char.isprintable() and char != "\\":
            assert spelled == f"a{char}b", hex(point)
