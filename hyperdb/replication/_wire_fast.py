"""Message bodies written and read byte by byte: the fast paths of :mod:`.wire`.

Every message of the replication protocol is a canonical CBOR map of one-letter text keys to
unsigned integers, byte strings, text strings or an array of byte strings (``spec/protocol.md``),
so its body is written here directly (one writer per message type, from its fields, the keys in
canonical order and every length and integer in its shortest form) and read by
:func:`parse_plain`, which takes exactly that canonical shape and declines everything else.

Each is the twin of the plain path through :mod:`hyperdb.primitives.cbor`: a writer's bytes are
``cbor.encode`` of the message's map, byte for byte, and :func:`parse_plain` either declines
(``None``) or returns what ``cbor.decode`` returns (``tests/test_replication.py``,
``tests/test_wire_fast.py``). :mod:`.wire` owns the messages, their record layouts and their
checks; it calls the writers and asks :func:`parse_plain` first. Item heads are the canonical ones
of :mod:`hyperdb.primitives._cbor_head`; those of the blocks of a data message shorter than 256
bytes, nearly all of them, are written from a table and read inline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hyperdb.primitives._cbor_head import ARRAY, BYTES, TEXT, UNSIGNED, encode_head, read_head

# the head of a byte string shorter than 256 bytes, by length: the blocks of a data message
_BYTES_HEADS = tuple(encode_head(BYTES, size) for size in range(0x100))


def hello_body(discovery_key: bytes, protocol: str, version: int) -> bytes:
    """``{"d": discovery_key, "p": protocol, "t": 0, "v": version}``."""
    return b"".join(
        (
            b"\xa4ad",
            encode_head(BYTES, len(discovery_key)),
            discovery_key,
            b"ap",
            _text(protocol),
            b"at\x00av",
            encode_head(UNSIGNED, version),
        )
    )


def have_body(records: bytes) -> bytes:
    """``{"f": records, "t": 1}``, ``records`` the packed feed records."""
    return b"\xa2af" + encode_head(BYTES, len(records)) + records + b"at\x01"


def request_body(feed: bytes, start: int, end: int) -> bytes:
    """``{"e": end, "f": feed, "s": start, "t": 2}``."""
    return b"".join(
        (
            b"\xa4ae",
            encode_head(UNSIGNED, end),
            b"af",
            encode_head(BYTES, len(feed)),
            feed,
            b"as",
            encode_head(UNSIGNED, start),
            b"at\x02",
        )
    )


def data_body(
    feed: bytes, start: int, blocks: Sequence[bytes], length: int, nodes: bytes, signature: bytes
) -> bytes:
    """``{"b": blocks, "f": feed, "g": signature, "l": length, "n": nodes, "s": start, "t": 3}``,
    ``nodes`` the packed proof node records."""
    return b"".join(
        (
            b"\xa7ab",
            encode_head(ARRAY, len(blocks)),
            *[
                (_BYTES_HEADS[size] if (size := len(block)) < 0x100 else encode_head(BYTES, size))
                + block
                for block in blocks
            ],
            b"af",
            encode_head(BYTES, len(feed)),
            feed,
            b"ag",
            encode_head(BYTES, len(signature)),
            signature,
            b"al",
            encode_head(UNSIGNED, length),
            b"an",
            encode_head(BYTES, len(nodes)),
            nodes,
            b"as",
            encode_head(UNSIGNED, start),
            b"at\x03",
        )
    )


def idle_body(seen: int) -> bytes:
    """``{"c": seen, "t": 4}``."""
    return b"\xa2ac" + encode_head(UNSIGNED, seen) + b"at\x04"


def error_body(reason: str) -> bytes:
    """``{"r": reason, "t": 5}``."""
    return b"\xa2ar" + _text(reason) + b"at\x05"


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return encode_head(TEXT, len(data)) + data


def parse_plain(body: bytes) -> dict[str, Any] | None:
    """The map ``body`` encodes if it is the canonical CBOR of a map of one to 23 one-letter ASCII
    keys to unsigned integers, byte strings, text strings or arrays of byte strings (every
    message this protocol defines), else None.

    A fast path for :func:`hyperdb.primitives.cbor.decode`, which needs a structural scan, the
    generic decoder and a re-encoding for the same result: whatever this accepts, that accepts too
    with an equal result, and whatever this declines goes to it. It has no size limit: the caller
    keeps bodies over its own from it.
    """
    size = len(body)
    if not size or not 0xA1 <= body[0] <= 0xB7:
        return None
    obj: dict[str, Any] = {}
    pos, last = 1, 0
    for _ in range(body[0] - 0xA0):
        if pos + 3 > size or body[pos] != 0x61:
            return None
        key = body[pos + 1]
        if not last < key < 0x80:  # canonical order (bytewise, as every key is one byte long)
            return None
        last = key
        head = body[pos + 2]
        if head & 31 < 24:  # the argument is in the head (read inline, for speed)
            major, argument, pos = head >> 5, head & 31, pos + 3
        else:
            major, argument, pos = read_head(body, pos + 2)
            if major < 0:
                return None
        value: Any
        if major == UNSIGNED:
            value = argument
        elif BYTES <= major <= TEXT:  # a byte or a text string
            if argument > size - pos:
                return None
            value = body[pos : pos + argument]
            pos += argument
            if major == TEXT:
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    return None
        elif major == ARRAY:
            if argument > size - pos:
                return None
            items = []
            for _ in range(argument):
                if pos >= size:
                    return None
                head = body[pos]
                if 0x40 <= head < 0x58:  # a byte string shorter than 24 bytes
                    length, pos = head - 0x40, pos + 1
                elif head == 0x58 and pos + 1 < size and body[pos + 1] >= 24:  # shorter than 256
                    length, pos = body[pos + 1], pos + 2
                else:
                    major, length, pos = read_head(body, pos)
                    if major != BYTES:
                        return None
                if length > size - pos:
                    return None
                items.append(body[pos : pos + length])
                pos += length
            value = items
        else:
            return None
        obj[chr(key)] = value
    return obj if pos == size else None
