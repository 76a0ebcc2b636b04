"""The direct road of message bodies (hyperdb.replication._wire_fast) held to its plain twin: the
canonical encoder and the strict decoder of hyperdb.primitives.cbor.

tests/test_replication.py checks whole messages both ways and random edits of their bodies; this
file holds each body writer to cbor.encode of its map for any field values (beyond what a message
may carry), and the reader to cbor.decode for every one-byte edit of a body of each type, both
ways: it declines whatever the strict decoder refuses or reads otherwise, and reads every
canonical map of the message shape."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperdb.errors import EncodingError, ProtocolError
from hyperdb.feed.feed import MAX_BLOCK_SIZE
from hyperdb.primitives import cbor
from hyperdb.replication import _wire_fast as fast
from hyperdb.replication import wire

BOUNDARIES = (0, 23, 24, 255, 256, 65_535, 65_536, (1 << 32) - 1, 1 << 32, (1 << 64) - 1)
LENGTHS = (0, 1, 23, 24, 255, 256, 65_535, 65_536)
uints = st.sampled_from(BOUNDARIES) | st.integers(0, (1 << 64) - 1)
binaries = st.binary(max_size=40) | st.sampled_from(LENGTHS).map(bytes)
texts = st.text(max_size=30) | st.sampled_from(LENGTHS).map(lambda size: "é" * (size // 2))


def plain(fields: dict[str, Any]) -> bytes:
    """The plain twin of a writer: the canonical encoding of the map."""
    return cbor.encode(fields)


# --- the writers: the canonical encoder's bytes ---------------------------------------------------


@given(key=binaries, protocol=texts, version=uints)
def test_hello(key: bytes, protocol: str, version: int) -> None:
    assert fast.hello_body(key, protocol, version) == plain(
        {"t": 0, "p": protocol, "v": version, "d": key}
    )


@given(records=binaries)
def test_have(records: bytes) -> None:
    assert fast.have_body(records) == plain({"t": 1, "f": records})


@given(feed=binaries, start=uints, end=uints)
def test_request(feed: bytes, start: int, end: int) -> None:
    assert fast.request_body(feed, start, end) == plain({"t": 2, "f": feed, "s": start, "e": end})


@settings(max_examples=300)
@given(
    feed=binaries,
    start=uints,
    blocks=st.lists(binaries, max_size=30),
    length=uints,
    nodes=binaries,
    signature=binaries,
)
def test_data(
    feed: bytes, start: int, blocks: list[bytes], length: int, nodes: bytes, signature: bytes
) -> None:
    """Mutations tried: the array head written as a byte string head (``BYTES`` for ``ARRAY``),
    ``size <= 0x100`` as the test of the table of block heads (an IndexError at 256) — each
    caught."""
    expected = plain(
        {"t": 3, "f": feed, "s": start, "b": blocks, "l": length, "n": nodes, "g": signature}
    )
    assert fast.data_body(feed, start, blocks, length, nodes, signature) == expected
    assert fast.data_body(feed, start, tuple(blocks), length, nodes, signature) == expected


@pytest.mark.parametrize("count", [0, 1, 23, 24, 255, 256, 1024])
def test_data_of_every_block_count(count: int) -> None:
    blocks = [bytes((index % 256,)) * (index % 30) for index in range(count)]
    assert fast.data_body(b"f", 1, blocks, 2, b"", b"g") == plain(
        {"t": 3, "f": b"f", "s": 1, "b": blocks, "l": 2, "n": b"", "g": b"g"}
    )


@given(seen=uints)
def test_idle(seen: int) -> None:
    assert fast.idle_body(seen) == plain({"t": 4, "c": seen})


@given(reason=texts)
def test_error(reason: str) -> None:
    """Mutation tried: the head of the reason's length in characters rather than UTF-8 bytes —
    caught (by any reason outside ASCII)."""
    assert fast.error_body(reason) == plain({"t": 5, "r": reason})


# --- the reader: declines or reads what the strict decoder reads, and reads every map of its shape


def in_shape(obj: object) -> bool:
    """Whether ``obj`` is a map of the shape parse_plain reads: 1 to 23 keys of one ASCII
    character other than NUL, to unsigned integers, byte or text strings, or arrays of byte
    strings."""
    if type(obj) is not dict or not 1 <= len(obj) <= 23:
        return False
    for key, value in obj.items():
        if type(key) is not str or len(key) != 1 or not 0 < ord(key) < 0x80:
            return False
        if type(value) is list:
            if not all(type(item) is bytes for item in value):
                return False
        elif type(value) not in (int, bytes, str) or (type(value) is int and value < 0):
            return False
    return True


def assert_twins_agree(body: bytes) -> None:
    """parse_plain reads exactly what the strict decoder reads (types included) when that is a
    map of its shape, and declines everything else."""
    try:
        strict: Any = cbor.decode(body, max_size=len(body) + 1)
    except EncodingError:
        strict = None
    got = fast.parse_plain(body)
    if strict is not None and in_shape(strict):
        assert repr(got) == repr(strict)
    else:
        assert got is None


KEY = bytes(range(32))
BODIES = {
    "hello": fast.hello_body(KEY, "hyperdb", 1),
    "have": fast.have_body(KEY + bytes(8)),
    "request": fast.request_body(KEY, 300, 70_000),
    "data": fast.data_body(KEY, 5, [b"", b"block", b"b" * 30], 1 << 33, bytes(48), bytes(64)),
    "idle": fast.idle_body(1 << 40),
    "error": fast.error_body("reason é"),
}
EDIT_BYTES = bytes((0x00, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1F, 0x40, 0x5F, 0x61, 0x7F, 0x81, 0xA1))


@pytest.mark.parametrize("name", sorted(BODIES))
def test_every_one_byte_edit_is_read_alike_by_both_roads(name: str) -> None:
    """Each byte of a body replaced by every value, each byte deleted, a few telling bytes
    inserted anywhere, every truncation. Mutations tried: ``last <= key`` as the test of key
    order (reads a key twice), the type test of an array item dropped (reads text in an array),
    the test that the map ends the body dropped, ``pos + 1 <= size`` (or no test) before the
    inline read of an item's one-byte length (an IndexError on a body cut there) — each caught.
    (Dropping the test of a string's length or of an array's count against the bytes left changes
    no answer: the end test declines the same bodies, later.)"""
    body = BODIES[name]
    assert fast.parse_plain(body) is not None
    for at in range(len(body)):
        for byte in range(256):
            assert_twins_agree(body[:at] + bytes((byte,)) + body[at + 1 :])
        assert_twins_agree(body[:at] + body[at + 1 :])
        assert_twins_agree(body[:at])
        for byte in EDIT_BYTES:
            assert_twins_agree(body[:at] + bytes((byte,)) + body[at:])


@pytest.mark.parametrize(
    ("body", "read"),
    [
        ("a0", False),  # an empty map: no message
        ("a1616100", True),
        ("b8016161", False),  # a count of one in a byte after the head
        ("bf616100ff", False),  # a map of indefinite length
        ("b7" + "".join(f"61{key:02x}00" for key in range(0x41, 0x58)), True),  # 23 entries
        ("b818" + "".join(f"61{key:02x}00" for key in range(0x41, 0x59)), False),  # 24
        ("a26161006161" + "00", False),  # a key twice
        ("a2616200616100", False),  # keys out of order
        ("a1617f00", True),  # the last key in ASCII
        ("a1618000", False),  # beyond it
    ],
)
def test_map_heads_and_keys(body: str, read: bool) -> None:
    """Mutation tried: ``0xA0 <= body[0]`` as the test of the map's head (reads an empty map,
    which is no message) — caught."""
    data = bytes.fromhex(body)
    assert (fast.parse_plain(data) is not None) == read
    assert_twins_agree(data)


def head(major: int, argument: int, width: int) -> bytes:
    """A head of ``major`` with ``argument`` in ``width`` bytes after the first (0: in the first
    byte), whether or not that is its shortest form."""
    if not width:
        return bytes((major << 5 | argument,))
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes((major << 5 | info,)) + argument.to_bytes(width, "big")


#: (argument, a width longer than its shortest, its shortest width)
LONG_FORMS = [(0, 1, 0), (23, 1, 0), (24, 2, 1), (255, 2, 1), (256, 4, 2), (65_536, 8, 4)]


@pytest.mark.parametrize(("argument", "width", "shortest"), LONG_FORMS)
@pytest.mark.parametrize("where", ["uint", "bytes", "text", "array", "item", "map"])
def test_longer_than_shortest_heads_are_declined(
    argument: int, width: int, shortest: int, where: str
) -> None:
    """A head one width too long in every place a head can be; the same map with the shortest
    head is read. Mutations tried: ``head & 31 <= 24`` as the inline test of the map's values
    (reads 0x18 as an argument of 24 without its byte), ``0x40 <= head <= 0x58`` as the inline
    test of an array item (the same for an item), ``body[pos + 1] >= 23`` as the inline test of an
    item's one-byte length (reads 0x58 0x17) — each caught."""

    def body(width: int) -> bytes:
        if where == "uint":
            value = head(0, argument, width)
        elif where == "bytes":
            value = head(2, argument, width) + bytes(argument)
        elif where == "text":
            value = head(3, argument, width) + b"x" * argument
        elif where == "array":
            value = head(4, argument, width) + b"\x40" * argument
        elif where == "item":
            value = b"\x81" + head(2, argument, width) + bytes(argument)
        else:
            value = b"\x00"
        prefix = head(5, 1, width if where == "map" else 0)  # a map of one entry
        return prefix + b"\x61a" + value

    if where == "map" and (argument, width) != (0, 1):
        return  # the map's count is 1: one long form of it is enough
    long_form = body(width)
    assert fast.parse_plain(long_form) is None
    assert_twins_agree(long_form)
    if where != "map":
        assert fast.parse_plain(body(shortest)) is not None
        assert_twins_agree(body(shortest))


def test_the_reader_has_no_size_limit_and_decode_message_keeps_big_bodies_from_it() -> None:
    """A data message over the frame limit is read by parse_plain (which has no limit) but refused
    by decode_message, whose strict decoder enforces it. Mutation tried: the size test dropped
    from decode_message's choice of the fast road (the message is then accepted) — caught."""
    blocks = (bytes(MAX_BLOCK_SIZE), bytes(MAX_BLOCK_SIZE))
    big = wire.Data(KEY, 0, blocks, 2, (), bytes(64))
    body = wire.encode_message(big)
    assert len(body) > wire.MAX_FRAME_SIZE
    assert fast.parse_plain(body) is not None
    with pytest.raises(ProtocolError):
        wire.decode_message(body)
    small = wire.Data(KEY, 0, (bytes(MAX_BLOCK_SIZE),), 1, (), bytes(64))
    assert wire.decode_message(wire.encode_message(small)) == small
