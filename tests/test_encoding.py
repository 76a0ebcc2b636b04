"""Canonical CBOR encoding and the strict decoder (hyperdb.primitives.cbor)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperdb.errors import EncodingError
from hyperdb.primitives import cbor as encoding
from tests.helpers.errors import raises_code

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 64), max_value=(1 << 64) - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5), children, max_size=5)
    ),
    max_leaves=20,
)


@given(plain)
def test_round_trip(value: Any) -> None:
    data = encoding.encode(value)
    assert encoding.decode(data) == value
    assert encoding.encode(encoding.decode(data)) == data


def test_map_keys_are_sorted_length_first() -> None:
    assert encoding.encode({"bb": 1, "a": 2, "c": 3}).hex() == "a361610261630362626201"


@pytest.mark.parametrize(
    "hex_input",
    [
        "c11a514b67b0",  # tag 1 (date): tags are not in the data model
        "a2616101616101",  # duplicate map key
        "5f41ff",  # indefinite-length byte string
        "fb3ff0000000000000",  # a float
        "1801",  # 1 encoded in two bytes: not the shortest form
        "a2616202616101",  # map keys out of canonical order
        "0102",  # trailing bytes
        "5a00000010",  # a byte string claiming more bytes than there are
        "",
        "ff",
        "c249010000000000000000",  # bignum 2**64 outside the 64-bit range
    ],
)
def test_rejects_non_canonical_or_unsupported(hex_input: str) -> None:
    with raises_code("encoding_error"):
        encoding.decode(bytes.fromhex(hex_input))


def test_size_and_depth_limits() -> None:
    with raises_code("encoding_error"):
        encoding.decode(encoding.encode(b"x" * 100), max_size=50)
    deep: Any = 1
    for _ in range(encoding.MAX_DEPTH + 2):
        deep = [deep]
    with raises_code("encoding_error"):
        encoding.encode(deep)
    data = b"\x81" * (encoding.MAX_DEPTH + 5) + b"\x01"
    with raises_code("encoding_error"):
        encoding.decode(data)


def test_encode_rejects_other_types() -> None:
    with raises_code("encoding_error"):
        encoding.encode(1.5)
    with raises_code("encoding_error"):
        encoding.encode({1, 2})
    with raises_code("encoding_error"):
        encoding.decode("text")  # type: ignore[arg-type]


@given(st.binary(max_size=64))
def test_decoder_only_raises_encoding_error(data: bytes) -> None:
    with contextlib.suppress(EncodingError):
        encoding.decode(data)


def test_shared_references_cannot_blow_up() -> None:
    # tag 28 (shareable) / tag 29 (shared reference): 612 bytes that describe 24**8 paths
    parts = [b"\xd8\x1c\x80"]
    for level in range(1, 9):
        parts.append(b"\xd8\x1c\x98\x18" + (b"\xd8\x1d" + bytes([level - 1])) * 24)
    doc = bytes([0x80 + len(parts)]) + b"".join(parts)
    for canonical in (True, False):
        with raises_code("encoding_error"):
            encoding.decode(doc, canonical=canonical)


@pytest.mark.parametrize("hex_input", ["d81c01", "c24101", "d9010280", "f7", "f93c00"])
def test_tags_and_other_simple_values_are_rejected_even_when_trusted(hex_input: str) -> None:
    with raises_code("encoding_error"):
        encoding.decode(bytes.fromhex(hex_input), canonical=False)
