"""Header and node records: canonical round trips and strict validation (hyperdb.model.record)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import trie
from hyperdb.errors import EncodingError
from hyperdb.model import record
from hyperdb.model.record import Header, NodeRecord
from hyperdb.primitives import cbor as encoding
from tests.helpers.errors import raises_code

KEY = bytes(range(32))
KEY2 = bytes(range(32, 64))
MAX_UINT = 2**64 - 1

keys32 = st.binary(min_size=32, max_size=32)


def clean_prefixes(raw: list[str]) -> tuple[str, ...] | None:
    """``raw`` made a valid scope: normalized, non-empty, no prefix within another, sorted by
    UTF-8 bytes (None when nothing is left)."""
    kept: list[str] = []
    for prefix in sorted({p for p in map(trie.normalize, raw) if p}, key=len):
        if not any(prefix == k or prefix.startswith(k + "/") for k in kept):
            kept.append(prefix)
    return tuple(sorted(kept, key=lambda p: p.encode("utf-8"))) or None


@st.composite
def nodes(draw: st.DrawFn) -> NodeRecord:
    """Valid node records of every shape: plain entries (with or without p), first nodes,
    context nodes, grants (with roles and scopes) and revokes."""
    shape = draw(st.sampled_from(["plain", "first", "context", "grant", "revoke"]))
    key = draw(st.text(max_size=30))
    deleted = draw(st.booleans())
    value = None if deleted else draw(st.none() | st.binary(max_size=50))
    trie_data = draw(st.binary(max_size=40))
    if shape == "plain":
        context_seq = draw(st.none() | st.integers(2, 300) | st.integers(2, MAX_UINT))
        return NodeRecord(key, value, deleted, trie_data, {}, context_seq=context_seq)
    clock = draw(st.dictionaries(st.integers(0, 300), st.integers(0, 1 << 40), max_size=4))
    feeds = tuple(draw(st.lists(keys32, min_size=1, max_size=3, unique=True)))
    kind, authorized, role, prefixes = record.KIND_ENTRY, (), record.ROLE_WRITER, None
    if shape in ("grant", "revoke"):
        key, value, deleted = "", None, False
        kind = record.KIND_GRANT if shape == "grant" else record.KIND_REVOKE
        authorized = tuple(draw(st.lists(keys32, min_size=1, max_size=3, unique=True)))
        if shape == "grant":
            role = draw(st.sampled_from(record.ROLES))
            if role == record.ROLE_WRITER:
                raw = draw(st.lists(st.text("ab/é", min_size=1, max_size=6), max_size=5))
                prefixes = clean_prefixes(raw)
    if shape == "first" or (draw(st.booleans()) and shape != "context"):
        return NodeRecord(
            key, value, deleted, trie_data, clock, feeds, kind, authorized, role, prefixes
        )
    ordinal = draw(st.integers(2, 40) | st.integers(2, MAX_UINT))
    based = record.base_ordinal(ordinal) != 0
    return NodeRecord(
        key,
        value,
        deleted,
        trie_data,
        clock,
        draw(st.none() | st.just(feeds)) if based else feeds,
        kind,
        authorized,
        role,
        prefixes,
        ordinal,
        draw(st.integers(2, MAX_UINT)) if based else None,
        draw(st.none() | st.integers(1, MAX_UINT)),
    )


@given(nodes())
def test_node_round_trip(node: NodeRecord) -> None:
    data = record.encode_node(node)
    assert record.decode_node(data) == node
    assert record.decode_node(data, trusted=True) == node


def test_deletion_and_system_nodes_round_trip() -> None:
    deletion = NodeRecord("a/b", None, True, b"", {}, context_seq=3)
    assert record.decode_node(record.encode_node(deletion)) == deletion
    grant = NodeRecord("", None, False, b"\x00", {0: 2}, (KEY,), record.KIND_GRANT, (KEY2,))
    assert record.decode_node(record.encode_node(grant)) == grant
    assert record.KIND_AUTHORIZE == record.KIND_GRANT
    scoped = NodeRecord(
        "", None, False, b"", {}, None, record.KIND_GRANT, (KEY2,), record.ROLE_WRITER,
        ("a", "a-b", "b/c"), ordinal=3, base_seq=2, system_seq=2,
    )  # fmt: skip
    assert record.decode_node(record.encode_node(scoped)) == scoped
    revoke = NodeRecord(
        "", None, False, b"", {}, (KEY,), record.KIND_REVOKE, (KEY2, KEY), ordinal=4
    )
    assert record.decode_node(record.encode_node(revoke)) == revoke


def test_header() -> None:
    data = record.encode_header(Header(KEY))
    assert record.decode_header(data) == Header(KEY)
    assert encoding.decode(data)["v"] == 3
    older = encoding.encode({"p": "hyperdb", "v": 2, "k": KEY})  # format 3 reads format 2
    assert record.decode_header(older) == Header(KEY, version=2)
    for bad, words in (
        ({"p": "hyperdb", "v": 1, "k": KEY}, r"older hyperdb \(format 1\)"),
        ({"p": "hyperdb", "v": 4, "k": KEY}, r"newer hyperdb \(format 4\)"),
        ({"p": "hyperdb", "v": 0, "k": KEY}, "no format version"),
        ({"p": "hyperdb", "v": "2", "k": KEY}, "no format version"),
        ({"p": "other", "v": 2, "k": KEY}, "protocol"),
        ({"p": "hyperdb", "v": 2, "k": b"short"}, "32 bytes"),
        ({"p": "hyperdb", "v": 2}, "exactly"),
        ([1], "exactly"),
    ):
        with raises_code("encoding_error", match=words):
            record.decode_header(encoding.encode(bad))


GRANT: dict[str, Any] = {"k": "", "t": b"", "y": 1, "a": [KEY2], "f": [KEY]}  # a first node
CONTEXT: dict[str, Any] = {"k": "a", "t": b"", "q": 3, "b": 2, "z": 2, "c": {1: 4}}


def variant(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``base`` with ``changes`` (a value of ``None`` removes the field)."""
    out = {**base, **changes}
    return {name: value for name, value in out.items() if value is not None}


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
        {"k": "a", "t": b"", "v": None},  # a second encoding of "no value"
        {"k": "a", "t": b"", "f": [KEY], "c": {}},
        {"k": "a", "t": b"", "f": [KEY], "c": {0: -1}},
        {"k": "a", "t": b"", "f": [KEY], "c": {"x": 1}},
        {"k": "a", "t": b"", "f": [b"short"]},
        {"k": "a", "t": b"", "f": []},
        {"k": "a", "t": b"", "f": [KEY, KEY]},
        {"k": "a", "t": b"", "y": 0},
        {"k": "a", "t": b"", "y": 7},
        {"k": "a", "t": b"", "y": True},
        {"k": "a", "t": b"", "y": 1},
        {"k": "a", "t": b"", "a": [KEY]},
        {"k": "a", "t": b"", "z": 1},
        {"k": "x" * (record.MAX_KEY_BYTES + 1), "t": b""},
        {"k": "a", "t": b"\x00" * (record.MAX_TRIE_BYTES + 1)},
        [1, 2],
        # system nodes: the empty key, no value, no deletion flag, unique non-empty keys
        variant(GRANT, k="a"),
        variant(GRANT, v=b""),
        variant(GRANT, d=True),
        variant(GRANT, y=2, v=b"x"),  # a revoke with a value
        variant(GRANT, a=None),
        variant(GRANT, a=[]),
        variant(GRANT, a=[KEY2, KEY2]),
        variant(GRANT, a=[b"short"]),
        variant(GRANT, f=None),  # a system node that is not a context node
        variant(GRANT, f=None, p=5),
        variant(GRANT, y=3),
        # roles: on grants only, never the default written
        variant(GRANT, g=0),
        variant(GRANT, g=3),
        variant(GRANT, g=True),
        variant(GRANT, y=2, g=1),
        variant({"k": "a", "t": b""}, g=1),
        # scopes: on grants of role writer, normalized, sorted, unique, none within another
        variant(GRANT, g=1, s=["a"]),  # on an owner grant
        variant(GRANT, g=2, s=["a"]),  # on a seeder grant
        variant(GRANT, y=2, s=["a"]),  # on a revoke
        variant(GRANT, s=[]),
        variant(GRANT, s=["b", "a"]),  # not sorted
        variant(GRANT, s=["a", "a"]),  # twice
        variant(GRANT, s=["a", "a/b"]),  # nested
        variant(GRANT, s=["a/b", "a/b/c/d"]),  # nested deeper
        variant(GRANT, s=[""]),
        variant(GRANT, s=["a/"]),  # not normalized
        variant(GRANT, s=["/a"]),
        variant(GRANT, s=["a//b"]),
        variant(GRANT, s=[b"a"]),
        variant(GRANT, s=[f"p{i:03}" for i in range(record.MAX_PREFIXES + 1)]),
        variant(GRANT, s=["x" * (record.MAX_KEY_BYTES + 1)]),
        variant(GRANT, s="a"),
        # the context fields
        variant(CONTEXT, q=1, b=None),  # ordinal 1 is never written
        variant(CONTEXT, q=0, b=None),
        variant(CONTEXT, q=-3),
        variant(CONTEXT, b=None),  # ordinal 3's base is ordinal 2: its seq is required
        variant(CONTEXT, b=1),  # a base of ordinal >= 2 is never seq 1
        variant(CONTEXT, q=4),  # ordinal 4's base is ordinal 0: no b...
        variant(CONTEXT, q=4, b=None),  # ...and the whole feeds list
        variant(CONTEXT, z=0),
        variant(CONTEXT, q=None, b=None),  # b and z without an ordinal
        variant(CONTEXT, q=None, b=None, z=None),  # c on a node that is no context node
        variant(CONTEXT, p=2),  # p on a context node
        variant({"k": "a", "t": b"", "f": [KEY]}, p=2),
        variant({"k": "a", "t": b""}, p=1),  # p of 1 is omitted
        variant({"k": "a", "t": b""}, p=0),
        variant({"k": "a", "t": b""}, p=-1),
        # null is no second spelling of an omitted field
        *({"k": "a", "t": b"", name: None} for name in "abcdfgpqsvyz"),
    ],
)
def test_invalid_nodes_are_rejected(obj: Any) -> None:
    """Each a rule of spec/node.md section 2 (2.2, 2.5) that a record alone shows broken. Mutations
    tried: the nesting check dropped, the check that b is present exactly when the base is not
    ordinal 0 dropped, ``context_seq < 1`` for p's lower bound — each caught. (A ``"p": null``
    read as no p, a second encoding of the node, was found by the one-byte edits of
    tests/test_record_fast.py.)"""
    data = encoding.encode(obj)
    with raises_code("encoding_error"):
        record.decode_node(data)
    with raises_code("encoding_error"):
        record.decode_node(data, trusted=True)


@pytest.mark.parametrize(
    "obj",
    [
        GRANT,
        variant(GRANT, y=2),
        variant(GRANT, g=1),
        variant(GRANT, g=2),
        variant(GRANT, s=["a", "a-b", "a.b/c", "b"]),  # "a-b" sorts between "a" and "a/..."
        variant(GRANT, s=[f"p{i:03}" for i in range(record.MAX_PREFIXES)]),
        variant(GRANT, s=["z", "é/x"]),  # sorted by UTF-8 bytes
        CONTEXT,
        variant(CONTEXT, q=4, b=None, f=[KEY]),
        variant(CONTEXT, q=2**64 - 1),
        variant({"k": "a", "t": b""}, p=2),
        variant({"k": "a", "t": b"", "f": [KEY]}, c={0: 2}),
    ],
)
def test_valid_nodes_of_format_2(obj: dict[str, Any]) -> None:
    data = encoding.encode(obj)
    node = record.decode_node(data)
    assert record.encode_node(node) == data


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


context_seqs = st.none() | st.integers(2, 30) | st.integers(2, MAX_UINT)


@given(
    key=st.text(max_size=300),
    value=st.none() | st.binary(max_size=300),
    deleted=st.booleans(),
    trie=st.binary(max_size=300),
    context_seq=context_seqs,
)
def test_fast_entry_encoding_matches_the_generic_one(
    key: str, value: bytes | None, deleted: bool, trie: bytes, context_seq: int | None
) -> None:
    node = NodeRecord(key, None if deleted else value, deleted, trie, {}, context_seq=context_seq)
    try:
        expected = record.encode_node(node)
    except EncodingError:
        with raises_code("encoding_error"):
            record.encode_entry(key, value, deleted, trie, context_seq)
        return
    assert record.encode_entry(key, value, deleted, trie, context_seq) == expected


@pytest.mark.parametrize("size", [0, 23, 24, 255, 256, 65535, 65536])
def test_fast_entry_encoding_at_length_boundaries(size: int) -> None:
    value = b"v" * size
    for context_seq in (None, max(size, 2)):
        assert record.encode_entry(
            "k" * min(size, 4096), value, False, b"t" * min(size, 1000), context_seq
        ) == record.encode_node(
            NodeRecord(
                "k" * min(size, 4096),
                value,
                False,
                b"t" * min(size, 1000),
                {},
                context_seq=context_seq,
            )
        )


def _simple_or_none(data: bytes) -> Any:
    try:
        return record._parse_simple(data)
    except record._NotSimple:
        return None


@given(nodes())
def test_direct_parser_reads_records_as_the_generic_decoder(node: NodeRecord) -> None:
    data = record.encode_node(node)
    assert _simple_or_none(data) == encoding.decode(data)


@given(nodes(), st.data())
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
        bytes.fromhex("a3616b616161701801617440"),  # p of 1 in a non-minimal head
        bytes.fromhex("a3616b6161617381416161744000"),  # s holding a byte string
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
    assert strict.kind == record.KIND_ENTRY and not strict.is_context
    assert fast == (strict.key, strict.value, strict.deleted, strict.trie, strict.context_seq)
    assert type(fast[0]) is str and type(fast[3]) is bytes


plain_entries = st.builds(
    lambda key, value, deleted, trie, p: (key, None if deleted else value, deleted, trie, p),
    st.text(max_size=300),
    st.none() | st.binary(max_size=300),
    st.booleans(),
    st.binary(max_size=300),
    context_seqs,
)


@given(plain_entries)
def test_plain_reader_reads_every_plain_entry(
    entry: tuple[str, bytes | None, bool, bytes, int | None],
) -> None:
    try:
        data = record.encode_entry(*entry)
    except EncodingError:
        return
    assert record.decode_plain(data) == entry
    _assert_plain_agrees(data)


@given(nodes())
def test_plain_reader_defers_other_records(node: NodeRecord) -> None:
    data = record.encode_node(node)
    fast = record.decode_plain(data)
    if node.is_context or node.kind != record.KIND_ENTRY:
        assert fast is None
    else:
        assert fast == (node.key, node.value, node.deleted, node.trie, node.context_seq)
    _assert_plain_agrees(data)


@given(plain_entries | nodes(), st.data())
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
        bytes.fromhex("a3616b616161700261744061"),  # p, then one byte too many
        bytes.fromhex("a3616b616161700261744061"[:-2]),  # p
        bytes.fromhex("a3616b616161700161744061"[:-2]),  # p of 1
        bytes.fromhex("a3616b616161700061744061"[:-2]),  # p of 0
        bytes.fromhex("a3616b616161701802617440"),  # p in a non-minimal head
        bytes.fromhex("a3616b616161702061744061"[:-2]),  # p negative
        bytes.fromhex("a4616b61616170026174406176"),  # p, a value cut off
        bytes.fromhex("a2616b6161617002617440"),  # p not counted in the map's head
        bytes.fromhex("a5616b6161617002617440617640"),  # one field counted too many
        bytes.fromhex("a4616b6161617002617003617440"),  # p twice
        encoding.encode({"k": "x" * (record.MAX_KEY_BYTES + 1), "t": b""}),
        encoding.encode({"k": "x" * record.MAX_KEY_BYTES, "t": b""}),
        encoding.encode({"k": "a", "t": b"\x00" * (record.MAX_TRIE_BYTES + 1)}),
        encoding.encode({"k": "a", "t": b"\x00" * 300, "v": b"v" * 70000}),
        encoding.encode({"k": "a", "t": b"", "p": MAX_UINT}),
        encoding.encode({"k": "a", "t": b"", "p": 2, "q": 2}),
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
    """decode_node answers the same with the direct record checks as with the general ones.
    Mutations tried in the direct checks (``record._simple_record``): b's lower bound dropped,
    z's dropped, the uniqueness of f's keys dropped, p accepted beside other context fields —
    each caught by the tests that call this."""
    fast = _decoded_or_error(data)
    saved = record._simple_record
    record._simple_record = lambda obj: None  # type: ignore[assignment]
    try:
        general = _decoded_or_error(data)
    finally:
        record._simple_record = saved
    assert fast == general


unusual_uints = st.none() | st.sampled_from([0, 1, 2, 3, 4, 5, 24, 2**64 - 1]) | st.just(True)


@given(
    st.fixed_dictionaries(
        {"k": st.text(max_size=10), "t": st.binary(max_size=10)},
        optional={
            "v": st.none() | st.binary(max_size=10),
            "d": st.sampled_from([True, False]),
            "c": st.dictionaries(st.integers(0, 30), st.integers(0, 1 << 20), max_size=3),
            "f": st.lists(st.binary(min_size=31, max_size=33), max_size=3),
            "y": st.sampled_from([0, 1, 2, 3]),
            "a": st.lists(st.binary(min_size=31, max_size=33), max_size=2),
            "g": st.sampled_from([0, 1, 2, 3]),
            "s": st.lists(st.sampled_from(["a", "b", "a/b", "", "a/", "é"]), max_size=3),
            "q": unusual_uints,
            "b": unusual_uints,
            "z": unusual_uints,
            "p": unusual_uints,
        },
    ),
    st.data(),
)
def test_direct_record_checks_agree_with_the_general_ones(
    obj: dict[str, Any], data: st.DataObject
) -> None:
    obj = {name: value for name, value in obj.items() if value is not None}
    encoded = bytearray(encoding.encode(obj))
    _check_direct_record_path(bytes(encoded))
    for _ in range(data.draw(st.integers(0, 2))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    _check_direct_record_path(bytes(encoded))


@given(nodes())
def test_direct_record_checks_on_valid_records(node: NodeRecord) -> None:
    _check_direct_record_path(record.encode_node(node))


@pytest.mark.parametrize(
    "obj",
    [
        {"k": "x" * (record.MAX_KEY_BYTES + 1), "t": b"", "p": 2},
        {"k": "é" * (record.MAX_KEY_BYTES // 2), "t": b"", "p": 2},
        {"k": "é" * (record.MAX_KEY_BYTES // 2 + 1), "t": b"", "p": 2},
        {"k": "a", "t": b"\x00" * (record.MAX_TRIE_BYTES + 1), "p": 2},
        {"k": "a", "t": b"", "p": 1},
        {"k": "a", "t": b"", "d": True, "v": b"", "p": 2},
        {"k": "a", "t": b"", "f": [KEY] * 3},
        {"k": "a", "t": b"", "f": []},
        {"k": "a", "t": b"", "f": [KEY, b"short"]},
        {"k": "", "t": b"", "y": 1, "a": [KEY], "f": [KEY]},
        {"k": "", "t": b"", "y": 1, "a": [], "f": [KEY]},
        {"k": "", "t": b"", "y": 1},
        {"k": "", "t": b"", "y": 0, "c": {0: 2}},
        {"k": "", "t": b"", "y": 2, "a": [KEY], "q": 2, "f": [KEY]},
        {"k": "", "t": b"", "a": [KEY]},
        {"t": b"", "p": 2},
        {"k": "a", "p": 2},
    ],
)
def test_direct_record_checks_edge_cases(obj: dict[str, Any]) -> None:
    _check_direct_record_path(encoding.encode(obj))
