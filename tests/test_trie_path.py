"""trie.path and trie.siphash: normalization, digit paths, hash order, and the reference vectors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import trie.path
from tests.helpers.errors import raises_code
from trie import siphash24, siphash_zero
from trie.path import (
    COMPONENT_CACHE_SIZE,
    DIGITS_PER_COMPONENT,
    ROOT_PATH,
    TERMINATOR,
    HashFn,
    component_digits,
    components,
    digits_to_text,
    first_difference,
    hash_order,
    is_under,
    key_path,
    normalize,
    order_key,
    path_order,
    text_to_digits,
)

# REFERENCE.md section 5.1: path('a/b') of hyperdb 3.5.0
REFERENCE_A_B = [
    1, 2, 0, 1, 2, 0, 2, 2, 3, 0, 1, 2, 1, 3, 0, 3, 0, 0, 2, 1, 0, 2, 0, 0, 2, 0, 0, 3, 2, 1, 1, 2,
    0, 1, 2, 3, 2, 2, 2, 0, 3, 1, 1, 3, 0, 3, 1, 3, 0, 1, 0, 1, 3, 2, 0, 2, 2, 3, 2, 2, 3, 3, 2, 3,
    4,
]  # fmt: skip


def test_siphash_reference_vectors() -> None:
    assert siphash_zero(b"hello").hex() == "b952f7b25d5dc18c"
    # the colliding pair of the reference's test/collisions.js
    assert siphash_zero(b"idgcmnmna") == siphash_zero(b"mpomeiehc")
    # SipHash paper, appendix A: key 00..0f, message 00..0e
    assert siphash24(bytes(range(16)), bytes(range(15))).hex() == "e545be4961ca29a1"
    with pytest.raises(ValueError):
        siphash24(b"short", b"")


def test_siphash_all_lengths_differ() -> None:
    digests = {siphash_zero(bytes(range(n))) for n in range(40)}
    assert len(digests) == 40 and all(len(d) == 8 for d in digests)


def test_reference_path_of_a_b() -> None:
    assert list(key_path("a/b", siphash_zero)) == REFERENCE_A_B
    assert key_path("a/b", siphash_zero, terminate=False) == bytes(REFERENCE_A_B[:-1])
    assert len(key_path("a/b/c", siphash_zero)) == 3 * DIGITS_PER_COMPONENT + 1


def test_component_digits_are_low_pair_first() -> None:
    def fixed(data: bytes) -> bytes:
        return bytes([0b11100100, 0xFF, 0, 1, 2, 3, 0x80, 0x40])

    digits = component_digits("x", fixed)
    assert list(digits[:4]) == [0, 1, 2, 3]
    assert list(digits[4:8]) == [3, 3, 3, 3]
    assert list(digits[28:]) == [0, 0, 0, 1]
    assert max(digits) < TERMINATOR


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("", ""),
        ("/", ""),
        ("//", ""),
        ("a", "a"),
        ("/a", "a"),
        ("a/", "a"),
        ("//a", "a"),
        ("/a//b/", "a/b"),
        ("a/b/c", "a/b/c"),
        ("é/ü", "é/ü"),
    ],
)
def test_normalize(raw: str, normal: str) -> None:
    assert normalize(raw) == normal
    assert key_path(raw, siphash_zero) == key_path(normal, siphash_zero)
    assert components(raw) == (normal.split("/") if normal else [])


def test_root_key_path() -> None:
    assert key_path("", siphash_zero) == ROOT_PATH == b"\x04"
    assert key_path("/", siphash_zero, terminate=False) == b""


def test_wrong_hash_size_is_rejected() -> None:
    with raises_code("trie_argument"):
        key_path("a", lambda data: b"1234")
    with raises_code("trie_argument"):
        key_path("a/\ud800", siphash_zero)  # a lone surrogate has no UTF-8 form


def test_is_under() -> None:
    assert is_under("foo", "foo") and is_under("foo/a", "foo") and is_under("foo/a/b", "foo")
    assert not is_under("foo/abc", "foo/a") and not is_under("foo", "fo")
    assert not is_under("fo", "foo") and is_under("anything", "")


def test_hash_order_puts_a_key_before_its_descendants() -> None:
    keys = ["a/b", "a", "b", "b/a/c", "c", "a/b/c", "/a/", ""]
    order = hash_order(keys, siphash_zero)
    assert len(order) == len(keys)
    paths = [key_path(key, siphash_zero, terminate=False) for key in order]
    assert paths == sorted(paths)
    assert order.index("a") < order.index("a/b") < order.index("a/b/c")
    assert order[0] == ""
    back = hash_order(keys, siphash_zero, reverse=True)
    assert [key_path(k, siphash_zero, terminate=False) for k in back] == paths[::-1]


def test_hash_order_ties_ascend_in_both_directions() -> None:
    def constant(data: bytes) -> bytes:
        return bytes(8)

    keys = ["c", "a", "b", "a/x", "b/x"]
    assert hash_order(keys, constant) == ["a", "b", "c", "a/x", "b/x"]
    assert hash_order(keys, constant, reverse=True) == ["a/x", "b/x", "a", "b", "c"]
    assert order_key("/b/", constant) == (bytes(32), "b")


def _collide_in_first_byte(data: bytes) -> bytes:
    return bytes([len(data) % 3]) + bytes(7)


@pytest.mark.parametrize("hash_fn", [siphash_zero, _collide_in_first_byte])
@given(keys=st.lists(st.lists(st.sampled_from(["a", "b", "cc", "ddd", "é"]), max_size=4)))
def test_path_order_sorts_as_the_digit_path(hash_fn: HashFn, keys: list[list[str]]) -> None:
    names = ["/".join(parts) for parts in keys]
    by_digits = sorted(names, key=lambda key: (key_path(key, hash_fn, terminate=False), key))
    assert sorted(names, key=lambda key: (path_order(key, hash_fn), key)) == by_digits
    for key in names:
        assert len(path_order(key, hash_fn)) == 8 * len(components(key))


@given(st.binary(max_size=40), st.binary(max_size=40), st.integers(0, 45))
def test_first_difference(a: bytes, b: bytes, start: int) -> None:
    common = min(len(a), len(b))
    expected = next((i for i in range(start, common) if a[i] != b[i]), common)
    assert first_difference(a, b, start) == expected


def test_digit_text_round_trip() -> None:
    path = key_path("a/b", siphash_zero)
    assert text_to_digits(digits_to_text(path)) == path
    assert digits_to_text(b"\x00\x01\x04") == "014"
    with raises_code("trie_argument"):
        text_to_digits("015")


def test_component_digits_are_cached_and_bounded() -> None:
    calls: list[bytes] = []

    def counting(data: bytes) -> bytes:
        calls.append(data)
        return siphash_zero(data)

    first = key_path("cache/test/one", counting)
    assert key_path("cache/test/two", counting)[:64] == first[:64]
    assert calls == [b"cache", b"test", b"one", b"two"]  # the folders were hashed once
    assert first == key_path("cache/test/one", siphash_zero)
    assert component_digits("one", counting) == first[64:96] and len(calls) == 4
    info = trie.path._cached_digits.cache_info()
    assert info.maxsize == COMPONENT_CACHE_SIZE and info.currsize <= COMPONENT_CACHE_SIZE


def test_an_unhashable_hash_function_is_used_uncached() -> None:
    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self, data: bytes) -> bytes:
            return siphash_zero(data)

    hash_fn = Unhashable()
    assert key_path("a/b", hash_fn) == key_path("a/b", siphash_zero)
    assert component_digits("a", hash_fn) == component_digits("a", siphash_zero)
