"""Value codecs of the canal source that need no server: MariaDB's UUID/INET text forms and
the charset decoders (the matrix integration test checks both against a real server)."""

from __future__ import annotations

import pytest

from meshconnect.connectors.canal import _charsets
from meshconnect.connectors.canal._fixedbin import inet4_text, inet6_text, uuid_text


@pytest.mark.parametrize(
    ("hexed", "text"),
    [
        ("00000000000000000000ffff01020304", "::ffff:1.2.3.4"),
        ("00000000000000000000000001020304", "::1.2.3.4"),
        ("00000000000000000000000000000000", "::"),
        ("00000000000000000000000000000001", "::1"),
        ("00010000000000000000000000000000", "1::"),
        ("00010000000200000000000300000004", "1:0:2::3:0:4"),
        ("20010db8000000000001000000000001", "2001:db8::1:0:0:1"),
        ("00010002000300040005000600070008", "1:2:3:4:5:6:7:8"),
        ("ffff0000000000000000ffff01020304", "ffff::ffff:102:304"),
        ("00000000000000000000ffff00000000", "::ffff:0.0.0.0"),
    ],
)
def test_inet6_text_is_mariadbs(hexed: str, text: str) -> None:
    assert inet6_text(bytes.fromhex(hexed)) == text


def test_uuid_and_inet4_text() -> None:
    raw = bytes(range(1, 17))
    assert uuid_text(raw) == "01020304-0506-0708-090a-0b0c0d0e0f10"
    assert inet4_text(b"\x0a\x00\x00\x01") == "10.0.0.1"


@pytest.mark.parametrize(
    ("collation", "raw", "text"),
    [
        (54, "😀a".encode("utf-16-be"), "😀a"),  # utf16_general_ci: big-endian, no BOM
        (56, "😀a".encode("utf-16-le"), "😀a"),  # utf16le_general_ci
        (60, "😀".encode("utf-32-be"), "😀"),  # utf32_general_ci
        (35, "é".encode("utf-16-be"), "é"),  # ucs2_general_ci
        (8, b"\x80\x81\xe9", "€\x81é"),  # latin1 is cp1252 with the C1 gaps kept
        (10, b"[\\]{|}", "ÄÖÅäöå"),  # swe7
        (13, b"\x81\x5f", "\\"),  # sjis: the server's backslash, not U+FF3C
        (97, b"\x8f\xa2\xaf", "˘"),  # eucjpms three-byte JIS X 0212
        (1, b"\xa1\x5a", "\ufffd"),  # big5 as MariaDB maps it
        (45, b"a\xffb", "a?b"),  # invalid UTF-8 prints as ? (as CONVERT does)
        (2304, "ü".encode(), "ü"),  # utf8mb4_uca1400_ai_ci (MariaDB 10.10+ ids)
    ],
)
def test_charsets_decode_as_the_server(collation: int, raw: bytes, text: str) -> None:
    assert _charsets.codec(collation) is not None
    encoding, errors = _charsets.codec(collation)  # type: ignore[misc]
    assert raw.decode(encoding, errors) == text
    name = _charsets.codec_name(collation)
    assert name is not None and raw.decode(name, "strict") == text


def test_binary_has_no_codec() -> None:
    assert _charsets.codec(63) is None
    assert _charsets.charset_name(255) == "utf8mb4"  # MySQL 8's utf8mb4_0900_ai_ci


def test_snapshot_reads_sets_by_mask_and_floats_as_double() -> None:
    from meshconnect.connectors.canal.keyorder import members as _members
    from meshconnect.connectors.canal.server import ColumnSchema, TableSchema
    from meshconnect.connectors.canal.snapshot import _normaliser, _select_expr

    assert _members("set('','a','b''c','d,e')") == ("", "a", "b'c", "d,e")
    s = ColumnSchema("s`x", "set", "set('','a','b')", -7, 0, False)
    f = ColumnSchema("f", "float", "float", 7, 0, False)
    assert (_select_expr(s), _select_expr(f)) == ("`s``x` + 0", "CAST(`f` AS DOUBLE)")
    [(i, fix)] = _normaliser(TableSchema("d", "t", (f, s), ()))
    assert (i, fix(1), fix(3), fix(0), fix(6)) == (1, ("",), ("", "a"), (), ("a", "b"))


def test_key_order_pages_enum_and_set_keys_by_index_and_mask() -> None:
    """The server sorts ENUM by the member's index and SET by its mask; a page's WHERE must
    give those numbers (``enum_col > 'm'`` would compare text). Keys of such types compare in
    Python, without asking the server."""
    from meshconnect.connectors.canal.keyorder import KeyOrder

    def no_server(sql: str, args: list[object]) -> list[tuple[object, ...]]:
        raise AssertionError("asked the server")

    order = KeyOrder(
        [("enum", "enum('z','m','a')", None, None), ("set", "set('x','y')", None, None)],
        no_server,
    )
    assert order.python
    assert order.params(("a", ("x", "y"))) == [3, 3]
    assert order.params(("z", ())) == [1, 0]
    assert order.at_most([("z", ("y",)), ("a", ())], ("m", ())) == [True, False]


def test_key_order_asks_the_server_for_collated_strings_and_uuids() -> None:
    from meshconnect.connectors.canal.keyorder import KeyOrder

    asked: list[tuple[str, list[object]]] = []

    def server(sql: str, args: list[object]) -> list[tuple[object, ...]]:
        asked.append((sql, args))
        return [tuple(1 for _ in range(len(args) // 4))]

    order = KeyOrder(
        [("varchar", "varchar(20)", "utf8mb4", "utf8mb4_general_ci"), ("uuid", "uuid", None, None)],
        server,
    )
    assert not order.python
    keys = [("a", "u1"), ("B", "u2"), ("a", "u1")]
    assert order.at_most(keys, ("c", "u3")) == [True, True, True]
    ((sql, args),) = asked
    assert sql.count("CONVERT(%s USING utf8mb4) COLLATE utf8mb4_general_ci") == 4
    assert sql.count("CAST(%s AS UUID)") == 4
    assert args == ["a", "u1", "c", "u3", "B", "u2", "c", "u3"]
    order.at_most(keys[:1], ("c", "u3"))  # remembered for the window
    assert len(asked) == 1
