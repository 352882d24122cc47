"""Regenerate ``connectors/canal/_charset_data.py`` from a MariaDB server's own conversions.

Run against a private binlog MariaDB (or any MariaDB 10.10+ with the SEQUENCE engine)::

    python integration/gen_charsets.py            # starts a private server
    python integration/gen_charsets.py --port 3307

For every character set ``SHOW CHARACTER SET`` lists it asks the server what each byte
sequence is in Unicode (``CONVERT(CONVERT(x USING cs) USING utf8mb4)``, what a client sees):

* single-byte charsets: all 256 bytes, a full decoding table (bytes the server cannot
  convert are ``?``, as the server prints them);
* multi-byte charsets: every one-, two- (and for ujis/eucjpms three-) byte sequence the server
  reads as one character (or as one ``?``: well formed, so stored, but without a Unicode
  mapping), compared with Python's codec; the sequences where they differ are overrides;
* collation ids: every id in ``COLLATION_CHARACTER_SET_APPLICABILITY`` and its charset.
"""

from __future__ import annotations

import argparse
import codecs
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "connectors" / "canal" / "_charset_data.py"

#: MySQL charset -> the Python codec that comes closest (multi-byte ones: the base of overrides).
PYTHON_CODEC = {
    "big5": "big5",
    "ujis": "euc_jp",
    "eucjpms": "euc_jp",
    "sjis": "shift_jis",
    "cp932": "cp932",
    "euckr": "cp949",
    "gb2312": "gb2312",
    "gbk": "gbk",
}
UNICODE = {"utf8mb3", "utf8mb4", "ucs2", "utf16", "utf16le", "utf32", "binary"}


def _rows(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def _convert(conn: Any, charset: str, first: int, last: int, width: int) -> dict[int, str]:
    """Sequence (as an int, ``width`` bytes) -> the text the server makes of it."""
    sql = (
        f"SELECT seq, HEX(CONVERT(CONVERT(UNHEX(LPAD(HEX(seq), {2 * width}, '0')) USING "
        f"{charset}) USING utf8mb4)) FROM seq_{first}_to_{last}"
    )
    return {int(n): bytes.fromhex(h).decode("utf-8") for n, h in _rows(conn, sql)}


def single_byte(conn: Any, charset: str) -> str:
    table = _convert(conn, charset, 0, 255, 1)
    assert all(len(table[i]) == 1 for i in range(256)), charset
    return "".join(table[i] for i in range(256))


def multi_byte(conn: Any, charset: str) -> tuple[bytes, list[tuple[int, int, int]]]:
    codec = PYTHON_CODEC[charset]
    server: dict[bytes, str] = {}
    for i, text in _convert(conn, charset, 0, 255, 1).items():
        if len(text) == 1 and (text != "?" or i == 0x3F):
            server[bytes([i])] = text
    # A multi-byte sequence that comes out as one '?' is well formed but has no Unicode
    # mapping: the server stores it and prints it as '?' (an invalid first byte would be one
    # '?' and the next byte another character).
    for i, text in _convert(conn, charset, 0x8000, 0xFFFF, 2).items():
        if len(text) == 1:
            server[i.to_bytes(2, "big")] = text
    if charset in ("ujis", "eucjpms"):
        for i, text in _convert(conn, charset, 0x8FA1A1, 0x8FFEFE, 3).items():
            if len(text) == 1 and (i >> 8) & 0xFF >= 0xA1 and i & 0xFF >= 0xA1:
                server[i.to_bytes(3, "big")] = text
    overrides = {}
    for seq, text in server.items():
        try:
            mine = seq.decode(codec)
        except UnicodeDecodeError:
            mine = None
        if mine != text:
            overrides[seq] = text
    print(f"{charset}: {len(server)} characters, {len(overrides)} overrides", file=sys.stderr)
    leads = bytes(sorted({seq[0] for seq in server if len(seq) > 1}))
    return leads, _runs(overrides)


def _runs(overrides: dict[bytes, str]) -> list[tuple[int, int, int]]:
    """Overrides as runs ``(first, last, code point of first)`` of sequences (big-endian ints)
    that map to consecutive code points, or all to ``?`` (code point -1)."""
    runs: list[list[int]] = []
    for seq, text in sorted(overrides.items(), key=lambda kv: (len(kv[0]), kv[0])):
        n, cp = int.from_bytes(seq, "big"), (-1 if text == "?" else ord(text))
        if runs:
            first, last, start = runs[-1]
            same_width = len(seq) == (first.bit_length() + 7) // 8
            if same_width and last == n - 1 and cp == (-1 if start < 0 else start + n - first):
                runs[-1][1] = n
                continue
        runs.append([n, n, cp])
    return [(a, b, c) for a, b, c in runs]


def generate(conn: Any) -> str:
    charsets = [(str(n), int(m)) for n, _d, _c, m in _rows(conn, "SHOW CHARACTER SET")]
    collations = sorted(
        (int(i), str(c))
        for i, c in _rows(
            conn,
            "SELECT ID, CHARACTER_SET_NAME FROM "
            "information_schema.COLLATION_CHARACTER_SET_APPLICABILITY",
        )
    )
    runs: list[list[Any]] = []
    for cid, name in collations:
        if runs and runs[-1][2] == name and runs[-1][1] == cid - 1:
            runs[-1][1] = cid
        else:
            runs.append([cid, cid, name])
    version = _rows(conn, "SELECT VERSION()")[0][0]
    out = [
        '"""Generated by integration/gen_charsets.py from MariaDB '
        f'{version}: do not edit.\n\nSee :mod:`._charsets` for what the tables mean."""',
        "",
        "# ruff: noqa: E501, RUF001",
        "",
        "#: (first id, last id, charset) runs of collation ids.",
        "COLLATION_RUNS: tuple[tuple[int, int, str], ...] = (",
        *(f"    ({a}, {b}, {n!r})," for a, b, n in runs),
        ")",
        "",
        "#: Single-byte charsets: the character of each byte, 0x00 to 0xFF.",
        "SINGLE_BYTE: dict[str, str] = {",
    ]
    for name, maxlen in charsets:
        if maxlen == 1 and name not in UNICODE:
            table = single_byte(conn, name)
            out.append(f"    {name!r}: (")
            for k in range(0, 256, 32):
                out.append(f"        {table[k : k + 32]!r}")
            out.append("    ),")
    out += [
        "}",
        "",
        "#: Multi-byte charsets: the Python codec, the first bytes of multi-byte characters, the",
        "#: longest character (bytes) and the runs of sequences where the server and the codec",
        "#: differ: (first, last, code point of first or -1 for ?), sequences as big-endian ints.",
        "MULTI_BYTE: dict[str, tuple[str, bytes, int, tuple[tuple[int, int, int], ...]]] = {",
    ]
    for name, maxlen in charsets:
        if maxlen > 1 and name not in UNICODE:
            leads, runs = multi_byte(conn, name)
            out.append(f"    {name!r}: (")
            out.append(f"        {PYTHON_CODEC[name]!r},")
            out.append(f"        {leads!r},")
            out.append(f"        {3 if name in ('ujis', 'eucjpms') else 2},")
            out.append("        (")
            out += [f"            ({a:#x}, {b:#x}, {c})," for a, b, c in runs]
            out.append("        ),")
            out.append("    ),")
    out += ["}", ""]
    return "\n".join(out)


def main() -> None:
    import pymysql

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="a running MariaDB (root, no password)")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    for name in PYTHON_CODEC.values():
        codecs.lookup(name)
    if args.port:
        conn = pymysql.connect(
            host=args.host, port=args.port, user="root", charset="utf8mb4", database="mysql"
        )
        write(generate(conn))
        return
    sys.path.insert(0, str(HERE))
    from mariadb import private_mariadb

    with tempfile.TemporaryDirectory() as tmp, private_mariadb(Path(tmp)) as server:
        conn = pymysql.connect(**server.connect_args("mysql"), charset="utf8mb4")
        write(generate(conn))


def write(text: str) -> None:
    OUT.write_text(text)
    subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(OUT)], check=True)


if __name__ == "__main__":
    main()
