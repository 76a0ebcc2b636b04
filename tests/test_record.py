"""Header and node records: canonical round trips and strict validation (hyperdb.model.record)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperdb.errors import EncodingError
from hyperdb.model import record
from hyperdb.model.record import KIND_AUTHORIZE, Header, NodeRecord
from hyperdb.primitives import cbor as encoding
from tests.helpers.errors import raises_code

KEY = bytes(range(32))

nodes = st.builds(
    NodeRecord,
    key=st.text(max_size=30),
    value=st.none() | st.binary(max_size=50),
    deleted=st.just(False),
    trie=st.binary(max_size=40),
    clock=st.dictionaries(st.integers(0, 300), st.integers(0, 1 << 40), max_size=4),
    feeds=st.none() | st.lists(st.binary(min_size=32, max_size=32), max_size=3).map(tuple),
)


@given(nodes)
def test_node_round_trip(node: NodeRecord) -> None:
    data = record.encode_node(node)
    assert record.decode_node(data) == node
    assert record.decode_node(data, trusted=True) == node


def test_deletion_and_authorization_round_trip() -> None:
    deletion = NodeRecord("a/b", None, True, b"", {0: 3})
    assert record.decode_node(record.encode_node(deletion)) == deletion
    auth = NodeRecord("", None, False, b"\x00", {0: 2}, (KEY,), KIND_AUTHORIZE, (KEY,))
    assert record.decode_node(record.encode_node(auth)) == auth


def test_header() -> None:
    data = record.encode_header(Header(KEY))
    assert record.decode_header(data) == Header(KEY)
    for bad in (
        {"p": "hyperdb", "v": 2, "k": KEY},
        {"p": "other", "v": 1, "k": KEY},
        {"p": "hyperdb", "v": 1, "k": b"short"},
        {"p": "hyperdb", "v": 1},
        [1],
    ):
        with raises_code("encoding_error"):
            record.decode_header(encoding.encode(bad))


@pytest.mark.parametrize(
    "obj",
    [
        {"t": b""},  # no key
        {"k": "a"},  # no trie
        {"k": 1, "t": b""},
        {"k": "a", "t": "text"},
        {"k": "a", "t": b"", "d": False},
        {"k": "a", "t": b"", "d": True, "v": b"x"},
        {"k": "a", "t": b"", "v": "text"},
        {"k": "a", "t": b"", "c": {}},
        {"k": "a", "t": b"", "c": {0: -1}},
        {"k": "a", "t": b"", "c": {"x": 1}},
        {"k": "a", "t": b"", "f": [b"short"]},
        {"k": "a", "t": b"", "y": 0},
        {"k": "a", "t": b"", "y": 7},
        {"k": "a", "t": b"", "y": 1},
        {"k": "a", "t": b"", "a": [KEY]},
        {"k": "a", "t": b"", "z": 1},
        {"k": "x" * (record.MAX_KEY_BYTES + 1), "t": b""},
        {"k": "a", "t": b"\x00" * (record.MAX_TRIE_BYTES + 1)},
        [1, 2],
    ],
)
def test_invalid_nodes_are_rejected(obj: Any) -> None:
    with raises_code("encoding_error"):
        record.decode_node(encoding.encode(obj))


def test_value_limit() -> None:
    big = NodeRecord("a", b"x" * (record.MAX_VALUE_BYTES + 1), False, b"", {})
    with raises_code("encoding_error"):
        record.encode_node(big)
    with raises_code("encoding_error"):
        record.encode_node(NodeRecord("\ud800", None, False, b"", {}))


@given(st.binary(max_size=80))
def test_garbage_only_raises_encoding_error(data: bytes) -> None:
    with contextlib.suppress(EncodingError):
        record.decode_node(data)


@given(
    key=st.text(max_size=300),
    value=st.none() | st.binary(max_size=300),
    deleted=st.booleans(),
    trie=st.binary(max_size=300),
)
def test_fast_entry_encoding_matches_the_generic_one(
    key: str, value: bytes | None, deleted: bool, trie: bytes
) -> None:
    node = NodeRecord(key, None if deleted else value, deleted, trie, {})
    try:
        expected = record.encode_node(node)
    except EncodingError:
        with raises_code("encoding_error"):
            record.encode_entry(key, value, deleted, trie)
        return
    assert record.encode_entry(key, value, deleted, trie) == expected


@pytest.mark.parametrize("size", [0, 23, 24, 255, 256, 65535, 65536])
def test_fast_entry_encoding_at_length_boundaries(size: int) -> None:
    value = b"v" * size
    assert record.encode_entry("k" * min(size, 4096), value, False, b"t" * min(size, 1000)) == (
        record.encode_node(
            NodeRecord("k" * min(size, 4096), value, False, b"t" * min(size, 1000), {})
        )
    )


def _simple_or_none(data: bytes) -> Any:
    try:
        return record._parse_simple(data)
    except record._NotSimple:
        return None


@given(nodes)
def test_direct_parser_reads_records_as_the_generic_decoder(node: NodeRecord) -> None:
    data = record.encode_node(node)
    assert _simple_or_none(data) == encoding.decode(data)


@given(nodes, st.data())
def test_direct_parser_never_accepts_what_the_generic_decoder_reads_otherwise(
    node: NodeRecord, data: st.DataObject
) -> None:
    """Damaged records: whenever the direct parser answers, the strict generic decoder accepts
    the same bytes and reads the same value (otherwise the parser must defer to it)."""
    encoded = bytearray(record.encode_node(node))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(encoded) - 1))
        encoded[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        encoded = encoded[: data.draw(st.integers(0, len(encoded)))]
    damaged = bytes(encoded)
    fast = _simple_or_none(damaged)
    if fast is not None:
        assert encoding.decode(damaged) == fast


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("a2616b6161617440"),  # {"k": "a", "t": b""}
        bytes.fromhex("a2617440616b6161"),  # keys out of order
        bytes.fromhex("a2616b61616174580040"),  # a non-minimal length
        bytes.fromhex("a3616b616161634061744000"),  # trailing byte
    ],
)
def test_direct_parser_edge_cases(data: bytes) -> None:
    fast = _simple_or_none(data)
    try:
        generic = encoding.decode(data)
    except EncodingError:
        generic = None
    assert fast is None or fast == generic


def _strict_or_none(data: bytes) -> NodeRecord | None:
    try:
        return record.decode_node(data)
    except EncodingError:
        return None


def _assert_plain_agrees(data: bytes) -> None:
    """decode_plain answers only for plain entries, exactly as decode_node reads them."""
    fast = record.decode_plain(data)
    strict = _strict_or_none(data)
    if fast is None:
        return
    assert strict is not None
    assert strict.clock == {} and strict.feeds is None and strict.authorized == ()
    assert strict.kind == record.KIND_ENTRY
    assert fast == (strict.key, strict.value, strict.deleted, strict.trie)
    assert type(fast[0]) is str and type(fast[3]) is bytes


plain_entries = st.builds(
    lambda key, value, deleted, trie: (key, None if deleted else value, deleted, trie),
    st.text(max_size=300),
    st.none() | st.binary(max_size=300),
    st.booleans(),
    st.binary(max_size=300),
)


@given(plain_entries)
def test_plain_reader_reads_every_plain_entry(entry: tuple[str, bytes | None, bool, bytes]) -> None:
    key, value, deleted, trie = entry
    try:
        data = record.encode_entry(key, value, deleted, trie)
    except EncodingError:
        return
    assert record.decode_plain(data) == entry
    _assert_plain_agrees(data)


@given(nodes)
def test_plain_reader_defers_other_records(node: NodeRecord) -> None:
    data = record.encode_node(node)
    fast = record.decode_plain(data)
    if node.clock or node.feeds is not None:
        assert fast is None
    else:
        assert fast == (node.key, node.value, node.deleted, node.trie)
    _assert_plain_agrees(data)


@given(plain_entries | nodes.map(lambda n: n), st.data())
def test_plain_reader_never_accepts_what_the_strict_decoder_reads_otherwise(
    node: Any, data: st.DataObject
) -> None:
    if isinstance(node, NodeRecord):
        encoded = bytearray(record.encode_node(node))
    else:
        try:
            encoded = bytearray(record.encode_entry(*node))
        except EncodingError:
            return
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, len(encoded) - 1))
        encoded[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        encoded = encoded[: data.draw(st.integers(0, len(encoded)))]
    _assert_plain_agrees(bytes(encoded))


@given(st.binary(max_size=80))
def test_plain_reader_on_garbage(data: bytes) -> None:
    _assert_plain_agrees(data)


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("a2616b6161617440"),  # {"k": "a", "t": b""}
        bytes.fromhex("a3616b6161617440617640"),  # with an empty value
        bytes.fromhex("a36164f5616b6161617440"),  # a deletion
        bytes.fromhex("a46164f5616b6161617440617640"),  # a deletion with a value
        bytes.fromhex("a3616b6161617440617640"[:-2]),  # truncated
        bytes.fromhex("a2617440616b6161"),  # keys out of order
        bytes.fromhex("a2616b61616174580040"),  # a non-minimal length
        bytes.fromhex("a2616b7800617440"),  # a non-minimal key length
        bytes.fromhex("a2616b6161617440" + "00"),  # trailing byte
        bytes.fromhex("a2616b61ff617440"),  # a key that is not UTF-8
        bytes.fromhex("a2616b4161617440"),  # a byte-string key
        bytes.fromhex("a2616b6161617460"),  # a text trie
        bytes.fromhex("a3616b6161617440617660"),  # a text value
        bytes.fromhex("a3616b6161617440617901"),  # a kind
        encoding.encode({"k": "x" * (record.MAX_KEY_BYTES + 1), "t": b""}),
        encoding.encode({"k": "x" * record.MAX_KEY_BYTES, "t": b""}),
        encoding.encode({"k": "a", "t": b"\x00" * (record.MAX_TRIE_BYTES + 1)}),
        encoding.encode({"k": "a", "t": b"\x00" * 300, "v": b"v" * 70000}),
    ],
)
def test_plain_reader_edge_cases(data: bytes) -> None:
    _assert_plain_agrees(data)


def _decoded_or_error(data: bytes) -> object:
    try:
        return record.decode_node(data)
    except EncodingError:
        return EncodingError


def _check_direct_record_path(data: bytes) -> None:
    """decode_node answers the same with the direct record checks as with the general ones."""
    fast = _decoded_or_error(data)
    saved = record._simple_record
    record._simple_record = lambda obj: None  # type: ignore[assignment]
    try:
        general = _decoded_or_error(data)
    finally:
        record._simple_record = saved
    assert fast == general


unusual_nodes = st.builds(
    NodeRecord,
    key=st.text(max_size=10),
    value=st.none() | st.binary(max_size=10),
    deleted=st.booleans(),
    trie=st.binary(max_size=10),
    clock=st.dictionaries(st.integers(0, 30), st.integers(0, 1 << 20), max_size=3),
    feeds=st.none() | st.lists(st.binary(min_size=31, max_size=33), max_size=3).map(tuple),
    kind=st.sampled_from([record.KIND_ENTRY, record.KIND_AUTHORIZE, 2]),
    authorized=st.lists(st.binary(min_size=31, max_size=33), max_size=2).map(tuple),
)


@given(unusual_nodes, st.data())
def test_direct_record_checks_agree_with_the_general_ones(
    node: NodeRecord, data: st.DataObject
) -> None:
    obj: dict[str, Any] = {"k": node.key, "t": node.trie}
    if node.deleted:
        obj["d"] = True
    if node.value is not None:
        obj["v"] = node.value
    if node.clock or data.draw(st.booleans()):
        obj["c"] = node.clock
    if node.feeds is not None:
        obj["f"] = list(node.feeds)
    if node.kind != record.KIND_ENTRY or data.draw(st.booleans()):
        obj["y"] = node.kind
    if node.authorized or data.draw(st.booleans()):
        obj["a"] = list(node.authorized)
    encoded = bytearray(encoding.encode(obj))
    _check_direct_record_path(bytes(encoded))
    for _ in range(data.draw(st.integers(0, 2))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    _check_direct_record_path(bytes(encoded))


@given(nodes)
def test_direct_record_checks_on_valid_records(node: NodeRecord) -> None:
    _check_direct_record_path(record.encode_node(node))


@pytest.mark.parametrize(
    "obj",
    [
        {"k": "x" * (record.MAX_KEY_BYTES + 1), "t": b"", "c": {0: 2}},
        {"k": "é" * (record.MAX_KEY_BYTES // 2), "t": b"", "c": {0: 2}},
        {"k": "é" * (record.MAX_KEY_BYTES // 2 + 1), "t": b"", "c": {0: 2}},
        {"k": "a", "t": b"\x00" * (record.MAX_TRIE_BYTES + 1), "c": {0: 2}},
        {"k": "a", "t": b"", "c": {}},
        {"k": "a", "t": b"", "d": True, "v": b"", "c": {0: 2}},
        {"k": "a", "t": b"", "f": [KEY] * 3},
        {"k": "a", "t": b"", "f": []},
        {"k": "a", "t": b"", "f": [KEY, b"short"]},
        {"k": "", "t": b"", "y": 1, "a": [KEY]},
        {"k": "", "t": b"", "y": 1, "a": []},
        {"k": "", "t": b"", "y": 1},
        {"k": "", "t": b"", "y": 0, "c": {0: 2}},
        {"k": "", "t": b"", "y": 2, "a": [KEY]},
        {"k": "", "t": b"", "a": [KEY]},
        {"t": b"", "c": {0: 2}},
        {"k": "a", "c": {0: 2}},
    ],
)
def test_direct_record_checks_edge_cases(obj: dict[str, Any]) -> None:
    _check_direct_record_path(encoding.encode(obj))
