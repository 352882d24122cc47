"""MariaDB's fixed-binary types (``UUID``, ``INET4``, ``INET6``) as the server prints them.

The binlog carries these columns as ``BINARY(n)`` (type STRING, charset binary): 16 bytes for
UUID and INET6, 4 for INET4, nothing says which type they are. The source knows the column's
type from the schema and turns the bytes into the text the server prints (what a ``SELECT``,
hence the snapshot, returns), following MariaDB's own formatting
(``plugin/type_uuid/sql_type_uuid.h``, ``plugin/type_inet/sql_type_inet.cc``):

* UUID: ``01020304-0506-0708-090a-0b0c0d0e0f10``, lower-case. The binlog has the in-memory
  (text-order) bytes; the segment swap MariaDB applies to RFC 4122 v1 to v5 UUIDs on disk is
  undone before the value is written to the binlog.
* INET4: dotted quad, ``10.0.0.1``.
* INET6: lower-case hex words without leading zeros; the longest run of zero words (the first
  of equal runs, even a single word) is ``::``; IPv4-compatible (``::1.2.3.4``) and
  IPv4-mapped (``::ffff:1.2.3.4``) addresses end in a dotted quad. This differs from
  Python's :mod:`ipaddress`, which never writes a dotted quad in 3.11 and does not compress a
  single zero word.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["TEXT_OF", "inet4_text", "inet6_text", "uuid_text"]


def uuid_text(raw: bytes) -> str:
    """16 bytes as MariaDB prints a UUID."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def inet4_text(raw: bytes) -> str:
    """4 bytes as MariaDB prints an INET4."""
    return ".".join(str(b) for b in raw[:4])


def inet6_text(raw: bytes) -> str:
    """16 bytes as MariaDB prints an INET6 (see the module docstring)."""
    words = [raw[i] << 8 | raw[i + 1] for i in range(0, 16, 2)]
    gap_pos, gap_len = -1, -1
    run_pos, run_len = -1, -1
    for i, w in enumerate(words):
        if w:
            if run_pos >= 0 and run_len > gap_len:
                gap_pos, gap_len = run_pos, run_len
            run_pos, run_len = -1, -1
        elif run_pos >= 0:
            run_len += 1
        else:
            run_pos, run_len = i, 1
    if run_pos >= 0 and run_len > gap_len:
        gap_pos, gap_len = run_pos, run_len
    out: list[str] = []
    i = 0
    while i < 8:
        if i == gap_pos:
            out.append("::" if i == 0 else ":")
            i += gap_len
            continue
        if i == 6 and gap_pos == 0 and (gap_len == 6 or (gap_len == 5 and words[5] == 0xFFFF)):
            out.append(inet4_text(raw[12:16]))
            break
        out.append(f"{words[i]:x}" + (":" if i != 7 else ""))
        i += 1
    return "".join(out)


#: ``information_schema.COLUMNS.DATA_TYPE`` -> the text of the binlog's bytes.
TEXT_OF: dict[str, Callable[[bytes], str]] = {
    "uuid": uuid_text,
    "inet4": inet4_text,
    "inet6": inet6_text,
}
