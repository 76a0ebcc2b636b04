"""The direct road of node records (hyperdb.model._record_fast) held to its plain twin: the strict
encode_node / decode_node of hyperdb.model.record through hyperdb.primitives.cbor.

tests/test_record.py checks random records and random damage; this file adds every head width of
every field, the limits at their edges, and every one-byte edit of a few records of each shape."""

from __future__ import annotations

import pytest

from hyperdb.errors import EncodingError
from hyperdb.model import _record_fast as fast
from hyperdb.model import record
from hyperdb.model.record import KIND_GRANT, KIND_REVOKE, ROLE_SEEDER, NodeRecord
from hyperdb.primitives import cbor

KEY = bytes(range(32))
MAX_KEY, MAX_TRIE, MAX_VALUE = record.MAX_KEY_BYTES, record.MAX_TRIE_BYTES, record.MAX_VALUE_BYTES
#: Lengths at the edges of every head width a field can have, up to its limit.
KEY_SIZES = (0, 1, 23, 24, 255, 256, MAX_KEY)
TRIE_SIZES = (0, 23, 24, 255, 256, 65_535, 65_536, MAX_TRIE)
VALUE_SIZES = (0, 23, 24, 255, 256, 65_535, 65_536, MAX_VALUE)


def strict(data: bytes) -> NodeRecord | None:
    try:
        return record.decode_node(data)
    except EncodingError:
        return None


def plain_fields(
    node: NodeRecord | None, data: bytes
) -> tuple[str, bytes | None, bool, bytes, int | None] | None:
    """What decode_plain must answer for ``data``, which the strict decoder read as ``node``: its
    fields when it is a plain entry (no context of its own, at most p)."""
    if node is None or node.is_context or node.kind != record.KIND_ENTRY:
        return None
    fields = (node.key, node.value, node.deleted, node.trie, node.context_seq)
    assert fast.encode_entry(*fields) == data  # one encoding per node
    return fields


def simple_or_none(data: bytes) -> object:
    try:
        return fast.parse_simple(data)
    except fast.NotSimple:
        return None


def generic_or_none(data: bytes) -> object:
    try:
        return cbor.decode(data, max_size=record.MAX_RECORD_BYTES)
    except EncodingError:
        return None


def assert_twins_agree(data: bytes) -> None:
    """decode_plain answers exactly for the plain records the strict decoder reads in the form
    the writer writes them, with their fields; parse_simple declines or reads what the strict
    generic decoder reads; decode_node answers the same through its direct road and without it."""
    node = strict(data)
    assert fast.decode_plain(data) == plain_fields(node, data)
    simple = simple_or_none(data)
    if simple is not None:
        assert repr(simple) == repr(generic_or_none(data))  # equal types too (1 and True differ)
    if simple is not None:
        assert node == strict_without_direct_road(data)


def strict_without_direct_road(data: bytes) -> NodeRecord | None:
    obj = generic_or_none(data)
    if obj is None:
        return None
    try:
        return record.decode_node(data, trusted=True)  # the general checks alone
    except EncodingError:
        return None


# --- the writer: the strict encoder's bytes at every head width and limit -------------------------


@pytest.mark.parametrize("size", KEY_SIZES)
def test_keys_of_every_head_width(size: int) -> None:
    """Mutation tried: ``key_size <= 0x100`` for the table of heads (an IndexError at 256) —
    caught."""
    for key in ("k" * size, "é" * (size // 2)):
        entry = (key, b"v", False, b"t", None)
        data = fast.encode_entry(*entry)
        assert data == record.encode_node(NodeRecord(key, b"v", False, b"t", {}))
        assert fast.decode_plain(data) == entry
        assert_twins_agree(data)


@pytest.mark.parametrize("size", TRIE_SIZES)
def test_tries_of_every_head_width(size: int) -> None:
    for deleted in (False, True):
        entry = ("a/b", None, deleted, b"\x01" * size)
        data = fast.encode_entry(*entry)
        assert data == record.encode_node(NodeRecord(*entry, {}))
        assert fast.decode_plain(data) == (*entry, None)
        assert record.decode_node(data) == NodeRecord(*entry, {})


@pytest.mark.parametrize("size", VALUE_SIZES)
def test_values_of_every_head_width(size: int) -> None:
    entry = ("a", b"\xff" * size, False, b"t")
    data = fast.encode_entry(*entry)
    assert data == record.encode_node(NodeRecord(*entry, {}))
    assert fast.decode_plain(data) == (*entry, None)
    assert record.decode_node(data) == NodeRecord(*entry, {})


#: p at the edges of every head width, up to the largest unsigned integer.
CONTEXT_SEQS = (2, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**64 - 1)


@pytest.mark.parametrize("context_seq", CONTEXT_SEQS)
def test_context_seqs_of_every_head_width(context_seq: int) -> None:
    """A plain node with p: the writer writes what the strict encoder writes, both readers read
    it. Mutations tried: ``context_seq <= 0x100`` for the table of heads (an IndexError at 256);
    p written after the trie (the strict encoder's order is d, k, p, t, v) — each caught."""
    for value, deleted in ((b"v", False), (None, True), (None, False)):
        entry = ("a/b", value, deleted, b"\x02\x03", context_seq)
        data = fast.encode_entry(*entry)
        node = NodeRecord("a/b", value, deleted, b"\x02\x03", {}, context_seq=context_seq)
        assert data == record.encode_node(node)
        assert fast.decode_plain(data) == entry
        assert record.decode_node(data) == node
        assert_twins_agree(data)


@pytest.mark.parametrize("context_seq", [0, 1, -1, 2**64, True, 2.0])
def test_the_writer_refuses_a_context_seq_the_strict_encoder_refuses(context_seq: object) -> None:
    """p is omitted when it would be 1 and is never 0 (seq 0 is the header)."""
    with pytest.raises(EncodingError):
        record.encode_node(NodeRecord("a", b"", False, b"", {}, context_seq=context_seq))  # type: ignore[arg-type]
    with pytest.raises(EncodingError):
        fast.encode_entry("a", b"", False, b"", context_seq)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "value", "trie"),
    [
        ("k" * (MAX_KEY + 1), b"", b""),
        ("€" * (MAX_KEY // 3 + 1), b"", b""),  # within the limit in characters, not in bytes
        ("\ud800", b"", b""),  # not encodable as UTF-8
        ("k", b"\x00" * (MAX_VALUE + 1), b""),
        ("k", b"", b"\x00" * (MAX_TRIE + 1)),
    ],
)
def test_the_writer_refuses_what_the_strict_encoder_refuses(
    key: str, value: bytes, trie: bytes
) -> None:
    """Mutations tried: ``key_size >= MAX_KEY_BYTES`` (refuses a key of exactly the limit, which
    test_keys_of_every_head_width catches) and the value's limit test dropped — each caught."""
    with pytest.raises(EncodingError):
        record.encode_node(NodeRecord(key, value, False, trie, {}))
    with pytest.raises(EncodingError):
        fast.encode_entry(key, value, False, trie)


# --- the readers decline every other shape --------------------------------------------------------


def head(major: int, argument: int, width: int) -> bytes:
    """A head of ``major`` with ``argument`` in ``width`` bytes after the first (0: in the first
    byte), whether or not that is its shortest form."""
    if not width:
        return bytes((major << 5 | argument,))
    return bytes((major << 5 | {1: 24, 2: 25, 4: 26, 8: 27}[width],)) + argument.to_bytes(
        width, "big"
    )


def node_bytes(key: bytes, trie: bytes, value: bytes | None = None, deleted: bool = False) -> bytes:
    """A plain record of already encoded items (``key``, ``trie``, ``value``: head and content)."""
    count = 2 + (value is not None) + deleted
    return b"".join(
        (
            bytes((0xA0 + count,)),
            b"\x61d\xf5" if deleted else b"",
            b"\x61k",
            key,
            b"\x61t",
            trie,
            b"" if value is None else b"\x61v" + value,
        )
    )


@pytest.mark.parametrize("field", ["key", "trie", "value"])
@pytest.mark.parametrize(
    ("size", "width"), [(5, 1), (23, 1), (200, 2), (255, 2), (300, 4), (70_000, 8)]
)
def test_longer_than_shortest_heads_are_declined(field: str, size: int, width: int) -> None:
    """The key, trie or value with a head one width too long: the strict decoder refuses the
    record (not canonical), both readers decline it. Mutations tried: ``data[pos + 3] >= 23`` as
    the inline test of a one-byte length in decode_plain (reads 0x78 0x17), for each of the three
    fields; ``info < 23`` in parse_simple; decode_plain's key limit test dropped (reads a key of
    70,000 bytes) — each caught."""
    items = {
        "key": head(3, 1, 0) + b"k",
        "trie": head(2, 1, 0) + b"t",
        "value": head(2, 1, 0) + b"v",
    }
    items[field] = head(3 if field == "key" else 2, size, width) + b"x" * size
    data = node_bytes(items["key"], items["trie"], items["value"])
    assert strict(data) is None
    assert fast.decode_plain(data) is None
    assert simple_or_none(data) is None
    shortest = head(3 if field == "key" else 2, size, {1: 0, 2: 1, 4: 2, 8: 4}[width])
    items[field] = shortest + b"x" * size
    canonical = node_bytes(items["key"], items["trie"], items["value"])
    assert (strict(canonical) is not None) == (field != "key" or size <= MAX_KEY)
    assert_twins_agree(canonical)


@pytest.mark.parametrize(
    "obj",
    [
        {"k": "a", "t": b"", "v": b"\x00" * (MAX_VALUE + 1)},
        {"k": "a", "t": b"\x00" * (MAX_TRIE + 1)},
        {"k": "k" * (MAX_KEY + 1), "t": b""},
        {"k": "€" * (MAX_KEY // 3 + 1), "t": b""},
        {"k": "a", "t": b"", "d": True, "v": b""},
        {"k": "a", "t": b"", "d": False},
        {"k": "a", "t": b"", "d": None},
        {"k": "a", "t": b"", "v": None},  # a second encoding of "no value": refused
        {"k": "a", "t": b"", "p": 1},
        {"k": "a", "t": b"", "p": 0},
        {"k": "a", "t": b"", "p": True},
        {"k": "a", "t": b"", "p": -2},
        {"k": "a", "t": b"", "p": b"\x02"},
        {"k": "a", "t": b"", "p": 2, "q": 2},
        {"k": "a", "t": b"", "p": 2, "z": 2},
        {"k": "a", "t": b"", "p": 2, "c": {0: 2}},
        {"k": "a", "t": b"", "p": 2, "f": [KEY]},
        {"k": "a", "t": b"", "q": 2, "f": [KEY]},
        {"k": "a", "t": b"", "f": [KEY]},
        {"k": "a", "t": b"", "y": 0},
        {"k": "a", "t": b"", "c": {0: 1}},
        {"k": "a", "t": b"", "f": []},
        {"k": "a", "t": b"", "z": b""},
        {"k": b"a", "t": b""},
        {"k": "a", "t": ""},
        {"k": "a", "t": b"", "v": "text"},
        {"k": "a"},
        {"t": b""},
        {"k": "a", "t": b"", "d": True, "v": b"", "y": 1},
        ["k", "t"],
    ],
)
def test_unusual_records_are_declined_by_the_plain_reader(obj: object) -> None:
    """Everything but a put or deletion within the limits, written canonically (by cbor2, which
    writes what the strict encoder refuses). Mutations tried in decode_plain: the value's or the
    trie's limit test dropped, ``deleted or`` dropped from its test of a value after "d", its test
    of true after "d" dropped — each caught."""
    data = cbor.encode(obj)
    assert fast.decode_plain(data) is None
    assert_twins_agree(data)


def test_only_bytes_are_read() -> None:
    data = fast.encode_entry("a", b"v", False, b"t")
    assert fast.decode_plain(data) is not None
    for other in (bytearray(data), memoryview(data)):
        assert fast.decode_plain(other) is None  # type: ignore[arg-type]


# --- every one-byte edit of records of each shape -------------------------------------------------

RECORDS = {
    "put": fast.encode_entry("a/b", b"value", False, b"\x00\x01\x02"),
    "put of a long value": fast.encode_entry("k" * 30, b"v" * 300, False, b"t" * 24),
    "put of a long key": fast.encode_entry("é" * 200, b"", False, b"t"),
    "deletion": fast.encode_entry("a/b", None, True, b"\x05\x06"),
    "entry without a value": fast.encode_entry("a", None, False, b""),
    "put with p": fast.encode_entry("a/b", b"value", False, b"\x00\x01", 7),
    "deletion with a wide p": fast.encode_entry("a/b", None, True, b"\x05", 70_000),
    "first node, with a clock and feeds": record.encode_node(
        NodeRecord("a", b"v", False, b"t", {0: 3, 1: 300}, (KEY, KEY[::-1]))
    ),
    "context node": record.encode_node(
        NodeRecord(
            "a", b"v", False, b"t", {1: 9}, (KEY[::-1],), ordinal=7, base_seq=6, system_seq=2
        )
    ),
    "grant of a scoped writer": record.encode_node(
        NodeRecord(
            "", None, False, b"\x00", {0: 2}, (KEY,), KIND_GRANT, (KEY,), prefixes=("a", "b/c")
        )
    ),
    "grant of a seeder": record.encode_node(
        NodeRecord("", None, False, b"", {}, (KEY,), KIND_GRANT, (KEY,), ROLE_SEEDER, ordinal=2)
    ),
    "revoke": record.encode_node(
        NodeRecord("", None, False, b"", {}, None, KIND_REVOKE, (KEY,), ordinal=3, base_seq=2)
    ),
}
EDIT_BYTES = bytes((0x00, 0x01, 0x17, 0x18, 0x19, 0x40, 0x58, 0x60, 0x61, 0x78, 0x80, 0xA0, 0xF5))


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_every_one_byte_edit_is_read_alike_by_both_roads(name: str) -> None:
    """Each byte replaced by every value, each byte deleted, each of a few telling bytes inserted
    anywhere, every truncation. Mutations tried in parse_simple: ``letter < previous`` (a key
    twice), ``number < last`` (a clock entry twice), the type test of a clock length dropped, of
    the record's map dropped, of an item of "f" or "a" dropped, of an item of "s" dropped — each
    caught; in decode_plain, p's lower bound dropped (``context_seq < 2``) — caught."""
    data = RECORDS[name]
    assert_twins_agree(data)
    # every position of a short record; of a long one, its heads and a few bytes of each string
    positions = (
        range(len(data)) if len(data) < 100 else [*range(48), *range(len(data) - 4, len(data))]
    )
    for at in positions:
        for byte in range(256):
            assert_twins_agree(data[:at] + bytes((byte,)) + data[at + 1 :])
        assert_twins_agree(data[:at] + data[at + 1 :])
        assert_twins_agree(data[:at])
        for byte in EDIT_BYTES:
            assert_twins_agree(data[:at] + bytes((byte,)) + data[at:])
    for byte in EDIT_BYTES:
        assert_twins_agree(data + bytes((byte,)))
