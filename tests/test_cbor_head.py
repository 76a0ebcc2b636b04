"""The canonical CBOR head codec of the fast paths (hyperdb.primitives._cbor_head), held to cbor2
and to the strict decoder of hyperdb.primitives.cbor."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperdb.errors import EncodingError
from hyperdb.primitives import cbor
from hyperdb.primitives._cbor_head import (
    ARRAY,
    BYTES,
    MAP,
    NEGATIVE,
    SIMPLE,
    TAG,
    TEXT,
    UNSIGNED,
    encode_head,
    read_head,
)

MAJORS = (UNSIGNED, NEGATIVE, BYTES, TEXT, ARRAY, MAP, TAG, SIMPLE)
BOUNDARIES = (
    0,
    1,
    23,
    24,
    255,
    256,
    65_535,
    65_536,
    (1 << 32) - 1,
    1 << 32,
    (1 << 64) - 1,
)
#: Arguments small enough to build the item itself for cbor2 (a string, array or map that long).
BUILDABLE = tuple(argument for argument in BOUNDARIES if argument <= 65_536)
arguments = st.sampled_from(BOUNDARIES) | st.integers(0, (1 << 64) - 1)


def cbor2_head(major: int, argument: int) -> bytes:
    """The head cbor2 writes for an item of type ``major`` with ``argument``: the whole encoding of
    an integer or a tag of an empty item, the leading bytes of a string, array or map built that
    long, the shortest unsigned integer form with the major type put in for the rest (a simple
    value outside the ones CBOR defines, a length too big to build)."""
    if major == UNSIGNED:
        return bytes(cbor2.dumps(argument))
    if major == NEGATIVE:
        return bytes(cbor2.dumps(-1 - argument))
    if major == TAG:
        return bytes(cbor2.dumps(cbor2.CBORTag(argument, b"")))[:-1]  # without the empty b""
    if argument <= 65_536 and major != SIMPLE:
        data = bytes(cbor2.dumps(_item(major, argument), canonical=True))
        contents = _contents(major, argument)
        assert data.endswith(contents)
        return data[: len(data) - len(contents)]
    if major == SIMPLE and (argument < 20 or 32 <= argument < 256):
        return bytes(cbor2.dumps(cbor2.CBORSimpleValue(argument)))
    unsigned = bytes(cbor2.dumps(argument))
    return bytes((major << 5 | unsigned[0],)) + unsigned[1:]


def _item(major: int, argument: int) -> object:
    """A string, array or map of ``argument`` bytes, characters, items or entries."""
    if major == BYTES:
        return bytes(argument)
    if major == TEXT:
        return "x" * argument
    if major == ARRAY:
        return [0] * argument
    return dict.fromkeys(range(argument), 0)


def _contents(major: int, argument: int) -> bytes:
    """The encoding of what :func:`_item` holds, after its head."""
    if major == MAP:
        return b"".join(bytes(cbor2.dumps(key)) + b"\x00" for key in range(argument))
    return (b"x" if major == TEXT else b"\x00") * argument


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("argument", BOUNDARIES)
def test_every_major_type_and_boundary_is_written_as_cbor2_writes_it(
    major: int, argument: int
) -> None:
    """The head at every width boundary of every major type: the last argument of a width and the
    first of the next. Mutations tried: ``argument <= 24`` as the test of the first byte's own
    argument (writes 24 as 0x18 alone), ``<= 0x100`` for the one-byte form (256 in one byte),
    ``<= 0x1_0000`` and ``<= 0x1_0000_0000`` for the two- and four-byte forms — each caught."""
    head = encode_head(major, argument)
    assert head == cbor2_head(major, argument)
    assert len(head) == (1 if argument < 24 else 1 + {1: 1, 2: 2, 3: 4, 4: 8}[_width(argument)])


def _width(argument: int) -> int:
    return 1 if argument < 0x100 else 2 if argument < 0x1_0000 else 3 if argument < 1 << 32 else 4


@pytest.mark.parametrize("major", (BYTES, TEXT, ARRAY, MAP))
@pytest.mark.parametrize("argument", BUILDABLE)
def test_length_heads_are_the_heads_of_items_that_long(major: int, argument: int) -> None:
    """Strings, arrays and maps actually built that long, and decoded back by the strict decoder
    of hyperdb.primitives.cbor with the head written here in front of their items."""
    data = encode_head(major, argument) + _contents(major, argument)
    assert cbor.decode(data) == _item(major, argument)


@given(major=st.sampled_from(MAJORS), argument=arguments)
def test_any_head_is_written_as_cbor2_writes_it(major: int, argument: int) -> None:
    assert encode_head(major, argument) == cbor2_head(major, argument)


@given(
    major=st.sampled_from(MAJORS),
    argument=arguments,
    before=st.binary(max_size=3),
    after=st.binary(max_size=3),
)
def test_every_written_head_reads_back(
    major: int, argument: int, before: bytes, after: bytes
) -> None:
    """Read back at any position, with anything after it. Mutation tried: ``end = pos + width``
    (the first byte forgotten) in the reader — caught."""
    head = encode_head(major, argument)
    data = before + head + after
    assert read_head(data, len(before)) == (major, argument, len(before) + len(head))


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize(
    ("head", "argument"),
    [
        ("17", 23),
        ("1818", 24),
        ("18ff", 255),
        ("190100", 256),
        ("19ffff", 65_535),
        ("1a00010000", 65_536),
        ("1affffffff", (1 << 32) - 1),
        ("1b0000000100000000", 1 << 32),
        ("1bffffffffffffffff", (1 << 64) - 1),
    ],
)
def test_shortest_heads_are_read(major: int, head: str, argument: int) -> None:
    data = bytes.fromhex(head)
    data = bytes((data[0] | major << 5,)) + data[1:]
    assert read_head(data, 0) == (major, argument, len(data))


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize(
    "head",
    [
        "1800",  # 0 in one byte after the first
        "1817",  # 23 there
        "1900ff",  # 255 in two bytes
        "190000",
        "1a0000ffff",  # 65,535 in four bytes
        "1a00000017",
        "1b00000000ffffffff",  # 2^32 - 1 in eight bytes
        "1b0000000000000000",
    ],
)
def test_longer_than_shortest_heads_are_declined(major: int, head: str) -> None:
    """RFC 8949 deterministic encoding: the argument in the fewest bytes. Mutations tried in the
    reader's test of the shortest form: 23 as the least one-byte argument (accepts 0x18 0x17), no
    test at all (accepts 0x18 0x00), 25 as the least one-byte argument and ``1 << (8 * width)``
    as the least of a wider one (decline heads the writer writes, which
    test_every_written_head_reads_back catches) — each caught."""
    data = bytes.fromhex(head)
    data = bytes((data[0] | major << 5,)) + data[1:] + b"\x00"
    assert read_head(data, 0) == (-1, -1, 0)


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("info", [28, 29, 30, 31])
def test_reserved_and_indefinite_heads_are_declined(major: int, info: int) -> None:
    """Mutation tried: ``info > 28`` as the reserved test (reads 0x1c as a 16-byte argument) —
    caught, with arguments that would pass the shortest-form test (with zero bytes it was not)."""
    data = bytes((major << 5 | info,)) + b"\xff" * 128
    assert read_head(data, 0) == (-1, -1, 0)


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_heads_cut_off_by_the_end_are_declined(width: int) -> None:
    """Every head missing bytes of its argument, and a position at or past the end. Mutations
    tried: no test of the end (reads a cut head as a shorter argument), ``end >= len(data)`` as
    the test (declines a head that ends the data) — each caught."""
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    whole = bytes((BYTES << 5 | info,)) + b"\xff" * width
    assert read_head(whole, 0) == (BYTES, (1 << (8 * width)) - 1, len(whole))
    for cut in range(len(whole)):
        assert read_head(whole[:cut], 0) == (-1, -1, 0)
        assert read_head(b"ab" + whole[:cut], 2) == (-1, -1, 2)
    assert read_head(whole, len(whole)) == (-1, -1, len(whole))
    assert read_head(whole, len(whole) + 5) == (-1, -1, len(whole) + 5)


@given(st.binary(min_size=1, max_size=10))
def test_read_unsigned_heads_agree_with_the_strict_decoder(data: bytes) -> None:
    """Any bytes as an unsigned integer: the reader reads an integer head that is the whole data
    exactly when the strict decoder of hyperdb.primitives.cbor (canonical form required) reads
    the same integer from it."""
    data = bytes((data[0] & 31,)) + data[1:]
    major, argument, end = read_head(data, 0)
    try:
        strict = cbor.decode(data)
    except EncodingError:
        strict = None
    if major == UNSIGNED and end == len(data):
        assert strict == argument
    else:  # declined, or trailing bytes after the head
        assert strict is None


@pytest.mark.parametrize("argument", [-1, 1 << 64])
def test_arguments_out_of_range_are_refused(argument: int) -> None:
    with pytest.raises((ValueError, OverflowError)):
        encode_head(UNSIGNED, argument)
