"""trie.table: pointers, the table value type, the reference's byte vectors and strict decoding."""

from __future__ import annotations

import gc

import pytest
from hypothesis import given
from hypothesis import strategies as st

import trie
from tests.helpers.errors import raises_code
from tests.helpers.gc_untracked import assert_untracked
from trie import (
    EMPTY_TABLE,
    Pointer,
    TrieDecodeError,
    TrieLimitError,
    TrieLimits,
    TrieShapeError,
    TrieTable,
    pointer,
)
from trie.table import CHECK, _decode, _lazy_row, _scan

P = pointer
Entry = tuple[int, int, list[Pointer]]


def table(*entries: tuple[int, int, list[Pointer]]) -> TrieTable:
    return TrieTable(entries)


# test/trie-encoding.js of hyperdb 3.5.0 (feed map = identity)
REFERENCE_VECTORS = [
    (table(), ""),
    (table((0, 0, [P(0, 0)])), "00010000"),
    (table((1, 0, [P(0, 0)])), "01010000"),
    (table((1, 0, [P(1, 0)])), "01010200"),
    (table((1, 0, [P(0, 0), P(0, 1)])), "010101000001"),
    (table((1, 1, [P(0, 0), P(0, 1)])), "010201000001"),
]


@pytest.mark.parametrize(("value", "encoded"), REFERENCE_VECTORS)
def test_reference_encoding_vectors(value: TrieTable, encoded: str) -> None:
    assert value.encode().hex() == encoded
    assert TrieTable.decode(bytes.fromhex(encoded)) == value


def test_reference_complex_trie_round_trips() -> None:
    value = table((32, 2, [P(0, 0)]), (32, 3, [P(0, 2)]), (32, 4, [P(0, 0)]))
    assert TrieTable.decode(value.encode()) == value
    assert value.encode() == bytes([32, 0b11100, 0, 0, 0, 2, 0, 0])


def test_feed_map_as_in_the_reference() -> None:
    # enc.encode(set(1, [[{feed: 0, seq: 0}]]), [1]) -> 01 01 02 00
    assert table((1, 0, [P(0, 0)])).encode(feed_map=[1]).hex() == "01010200"
    # enc.decode(01 01 02 00, [1, 0]) -> feed 0
    assert TrieTable.decode(bytes.fromhex("01010200"), feed_map=[1, 0]) == table((1, 0, [P(0, 0)]))
    with raises_code("trie_argument"):
        TrieTable.decode(bytes.fromhex("01010400"), feed_map=[1, 0])
    assert table((0, 0, [P(3, 1)])).encode(feed_map={3: 200}).hex() == "0001" + "9003" + "01"


def test_remap_resorts_buckets() -> None:
    value = table((5, 2, [P(0, 9), P(1, 3)]))
    mapped = value.remap(lambda feed: 1 - feed)
    assert mapped.get(5, 2) == (P(0, 3), P(1, 9))
    assert mapped.remap([1, 0]) == value
    with raises_code("trie_argument"):
        value.remap({0: 0})
    with raises_code("trie_argument"):
        table((5, 2, [P(0, 3), P(1, 3)])).remap([4, 4])  # would merge two pointers


def test_constructor_merges_sorts_and_drops_empties() -> None:
    value = TrieTable(
        [(3, 1, [P(2, 1), P(0, 5)]), (3, 1, [P(0, 5)]), (1, 4, []), (0, 0, [P(0, 0)])]
    )
    assert value.positions == (0, 3)
    assert value.get(3, 1) == (P(0, 5), P(2, 1))
    assert value.get(1, 4) == () and value.get(99, 0) == ()
    assert value.row(1) is None and value.row(3) == ((), (P(0, 5), P(2, 1)), (), (), ())
    assert list(value) == [(0, 0, (P(0, 0),)), (3, 1, (P(0, 5), P(2, 1)))]
    assert list(value.pointers()) == [P(0, 0), P(0, 5), P(2, 1)]
    assert value.pointer_count == 3
    assert value.next_position(1) == 3 and value.next_position(4) is None
    assert list(value.rows_between(0, 3)) == [(0, value.row(0))]
    assert [i for i, _ in value.rows_between(1, 10)] == [3] and not list(value.rows_between(4, 9))
    assert bool(value) and not EMPTY_TABLE and TrieTable() == EMPTY_TABLE
    assert hash(value) == hash(TrieTable.decode(value.encode()))
    assert value != EMPTY_TABLE and value != "not a table"
    assert "3, 1, [0:5, 2:1]" in repr(value)
    for bad in [(-1, 0, [P(0, 0)]), (0, 5, [P(0, 0)]), (0, 0, [P(-1, 0)])]:
        with raises_code("trie_argument"):
            TrieTable([bad])


def test_multi_byte_varints() -> None:
    value = table((300, 4, [P(70, 1 << 40), P(200, 127), P(200, 128)]))
    encoded = value.encode()
    assert encoded.startswith(bytes([0xAC, 0x02, 0x10]))
    assert TrieTable.decode(encoded) == value


@pytest.mark.parametrize(
    ("encoded", "reason"),
    [
        ("00", "truncated: no bitfield"),
        ("0001", "truncated: no pointer"),
        ("000100", "truncated: no seq"),
        ("00010100", "truncated: more bit set, next pointer missing"),
        ("80", "truncated varint"),
        ("00018000", "truncated varint inside a pointer"),
        ("8000010000", "non-minimal position"),
        ("0001000080 00", "non-minimal seq"),
        ("000000", "empty bitfield"),
        ("00200000", "bitfield bit above bucket 4"),
        ("0081010000", "bitfield as a two-byte varint"),
        ("0001000000010000", "positions not ascending (equal)"),
        ("0101000000010000", "positions not ascending"),
        ("0001010100 00", "pointers not ascending"),
        ("0001010000 00", "duplicate pointer"),
        ("00010001 0000", "trailing bytes after a complete table"),
        ("00 01 00 ffffffffffffffffffff01", "varint above 2^64 / longer than 10 bytes"),
    ],
)
def test_malformed_tables_are_rejected(encoded: str, reason: str) -> None:
    with raises_code("trie_decode"):
        TrieTable.decode(bytes.fromhex(encoded.replace(" ", "")))


@pytest.mark.parametrize(
    ("limits", "encoded"),
    [
        (TrieLimits(max_path_length=5), "05010000"),
        (TrieLimits(max_positions=1), "0001000001010000"),
        (TrieLimits(max_bucket_pointers=1), "000101000001"),
        (TrieLimits(max_total_pointers=1), "0003000000 00".replace(" ", "")),
        (TrieLimits(max_feed=2), "00010400"),
        (TrieLimits(max_seq=10), "0001000a"),
    ],
)
def test_limits(limits: TrieLimits, encoded: str) -> None:
    data = bytes.fromhex(encoded)
    TrieTable.decode(data)  # fine without the limit
    with raises_code("trie_limit"):
        TrieTable.decode(data, limits=limits)


def test_check_shape() -> None:
    path = bytes([1, 2, 4])
    table((0, 0, [P(0, 0)]), (2, 4, [P(0, 1)]), (2, 0, [P(0, 2)])).check_shape(path)
    with raises_code("trie_shape"):
        table((0, 1, [P(0, 0)])).check_shape(path)  # own digit
    with raises_code("trie_shape"):
        table((3, 0, [P(0, 0)])).check_shape(path)  # beyond the path


@pytest.mark.parametrize("lazy", [False, True])
def test_check_node(lazy: bool) -> None:
    def made(*entries: tuple[int, int, list[Pointer]]) -> TrieTable:
        value = table(*entries)
        return TrieTable.decode(value.encode()) if lazy else value

    path = bytes([1, 2, 4])
    bounds = {0: 3, 1: 200, 70: 1}.get
    ok = made((0, 0, [P(0, 0)]), (2, 4, [P(0, 2), P(1, 199)]), (2, 0, [P(70, 0)]))
    assert ok.check_node(path, lambda feed: bounds(feed, 0))
    outside = made((0, 0, [P(0, 3)]), (2, 0, [P(1, 150)]))
    assert not outside.check_node(path, lambda feed: bounds(feed, 0))
    assert not made((1, 0, [P(5, 0)])).check_node(path, lambda feed: bounds(feed, 0))
    with raises_code("trie_shape"):  # the shape is reported before a pointer out of bounds
        made((0, 0, [P(0, 9)]), (1, 2, [P(0, 0)])).check_node(path, lambda feed: 1)
    with raises_code("trie_shape"):
        made((3, 0, [P(0, 0)])).check_node(path, lambda feed: 1)


pointers = st.builds(pointer, st.integers(0, 300), st.integers(0, (1 << 48) - 1))
entries = st.lists(
    st.tuples(st.integers(0, 700), st.integers(0, 4), st.lists(pointers, max_size=3))
)


@given(entries)
def test_round_trip(items: list[tuple[int, int, list[Pointer]]]) -> None:
    value = TrieTable(items)
    encoded = value.encode()
    decoded = TrieTable.decode(encoded)
    assert decoded == value and decoded.encode() == encoded
    assert list(decoded) == list(value)


@given(st.binary(max_size=60))
def test_decode_is_strict_and_canonical(data: bytes) -> None:
    try:
        value = TrieTable.decode(data)
    except TrieDecodeError:
        return
    assert value.encode() == data


def reference_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def reference_encode(value: TrieTable) -> bytes:
    """Section 3.2 of spec/trie.md, written out plainly."""
    out = bytearray()
    for position in value.positions:
        row = value.row(position)
        assert row is not None
        out += reference_varint(position)
        out += reference_varint(sum(1 << index for index, bucket in enumerate(row) if bucket))
        for bucket in row:
            for index, (feed, seq) in enumerate(bucket):
                out += reference_varint(feed * 2 + (index < len(bucket) - 1))
                out += reference_varint(seq)
    return bytes(out)


# every varint length the encoder and decoder special-case, with the values at their edges
edge_ints = st.sampled_from([0, 1, 63, 64, 127, 128, 129, 16383, 16384, (1 << 21) - 1, 1 << 21])
seqs = st.one_of(edge_ints, st.integers(0, 1 << 22), st.integers(0, (1 << 48) - 1))
feeds = st.one_of(st.sampled_from([0, 1, 63, 64, 65, 8191, 8192]), st.integers(0, 65_535))
positions = st.one_of(st.sampled_from([0, 127, 128, 16383, 16384]), st.integers(0, 65_536))
varied_entries = st.lists(
    st.tuples(positions, st.integers(0, 4), st.lists(st.builds(pointer, feeds, seqs), max_size=3))
)


@given(varied_entries)
def test_encoding_matches_the_plain_definition(items: list[tuple[int, int, list[Pointer]]]) -> None:
    value = TrieTable(items)
    encoded = value.encode()
    assert encoded == reference_encode(value)
    decoded = TrieTable.decode(encoded)
    assert decoded == value and decoded.encode() == encoded
    assert decoded.forked == value.forked == any(len(b) > 1 for _, _, b in value)


@pytest.mark.parametrize(
    "encoded",
    ["000100808000", "000100ff8000", "00010080808000", "000100808080808080808080808001"],
)
def test_non_minimal_and_over_long_seqs_are_rejected(encoded: str) -> None:
    with raises_code("trie_decode"):
        TrieTable.decode(bytes.fromhex(encoded))


def test_three_and_four_byte_seqs() -> None:
    for seq in (16384, (1 << 21) - 1, 1 << 21, (1 << 28) - 1):
        value = table((1, 2, [P(3, seq)]))
        assert value.encode() == bytes([1, 4, 6]) + reference_varint(seq)
        assert TrieTable.decode(value.encode()) == value


def test_forked_tells_whether_a_bucket_holds_several_pointers() -> None:
    assert not EMPTY_TABLE.forked
    assert not table((0, 1, [P(0, 1)]), (3, 4, [P(2, 2)])).forked
    several = table((0, 1, [P(0, 1)]), (3, 4, [P(2, 2), P(3, 0)]))
    assert several.forked and TrieTable.decode(several.encode()).forked
    assert not TrieTable.decode(table((0, 1, [P(0, 1)])).encode()).forked
    assert several.remap(lambda feed: feed).forked


def test_pointers_are_plain_tuples() -> None:
    made = pointer(3, 7)
    assert type(made) is tuple and made == (3, 7)
    gc.collect()
    assert not gc.is_tracked(made)
    assert type(next(table((0, 0, [P(1, 2)])).pointers())) is tuple


def test_decoded_and_built_tables_hold_no_gc_tracked_tuples() -> None:
    built = table(
        (0, 0, [P(0, 0)]),
        (1, 2, [P(3, 1 << 40), P(1, 5)]),
        (200, 4, [P(70, 300), P(70, 301), P(2, 1)]),
        (300, 1, [(9, 20000)]),  # a plain tuple given as a pointer
    )
    decoded = TrieTable.decode(built.encode())
    assert decoded == built
    assert_untracked(
        decoded,
        built,
        decoded.remap(lambda feed: feed + 1),
        TrieTable.decode(built.encode(), feed_map=lambda feed: 100 - feed),
        # the common case the decoder builds inline: one pointer per bucket, short varints
        TrieTable.decode(bytes.fromhex("00010000" + "0102" + "02" + "8001")),
    )


def test_lazily_decoded_rows_match_the_built_table() -> None:
    built = table(
        (0, 1, [P(0, 5)]), (2, 0, [P(3, 200)]), (2, 4, [P(1, 20000)]), (9, 3, [P(63, 1 << 20)])
    )
    decoded = TrieTable.decode(built.encode())
    assert decoded.row(2) == built.row(2) and decoded.get(9, 3) == ((63, 1 << 20),)
    assert list(decoded.rows_between(1, 9)) == list(built.rows_between(1, 9))
    assert decoded.row(1) is None and decoded.positions == built.positions
    assert decoded == built and hash(decoded) == hash(built) and list(decoded) == list(built)
    assert decoded.encode() == built.encode() and not decoded.forked


@given(varied_entries)
def test_row_offsets_index_the_encoding(items: list[tuple[int, int, list[Pointer]]]) -> None:
    """``_index``: the encoding and where each row starts in it, the same for a table built from
    rows and for the table decoded from its bytes (lazily or not)."""
    value = TrieTable(items)
    data, starts = value._index()
    assert data == value.encode() == reference_encode(value)
    assert len(starts) == len(value.positions)
    ends = [*starts, len(data)][1:]
    for position, start, end in zip(value.positions, starts, ends, strict=True):
        row = value.row(position)
        assert row is not None
        assert data[start:end] == reference_encode(TrieTable(entries_of(position, row)))
        if not value.forked:
            assert _lazy_row(data, start) == row
    decoded = TrieTable.decode(data)
    assert decoded._index() == (data, starts)
    assert list(decoded) == list(value) and decoded._index() == (data, starts)


def entries_of(position: int, row: tuple[tuple[Pointer, ...], ...]) -> list[Entry]:
    return [(position, bucket, list(pointers)) for bucket, pointers in enumerate(row) if pointers]


def test_lazily_decoded_tables_keep_their_offsets_once_fully_decoded() -> None:
    built = table((0, 1, [P(0, 5)]), (2, 0, [P(3, 200)]), (130, 4, [P(1, 20000)]))
    decoded = TrieTable.decode(built.encode())
    index = decoded._index()
    assert list(decoded) == list(built)  # decodes every row
    assert decoded._index() == index == built._index()
    assert decoded.row(2) == built.row(2) and decoded.row(1) is None


small_limits = st.builds(
    TrieLimits,
    max_path_length=st.sampled_from([0x80, 200, 16_384, 65_537]),
    max_positions=st.integers(1, 6),
    max_bucket_pointers=st.integers(1, 3),
    max_total_pointers=st.integers(1, 12),
    max_feed=st.sampled_from([64, 65, 8192, 65_536]),
    max_seq=st.sampled_from([1 << 21, (1 << 21) + 5, 1 << 48]),
)


def check_scan(data: bytes, limits: TrieLimits) -> dict[int, int] | None:
    """``_scan`` accepts only what the strict decoder accepts, and finds the same rows."""
    offsets = _scan(data, limits)
    if offsets is not None:
        rows, forked = _decode(data, limits)
        assert not forked and tuple(offsets) == tuple(rows)
        for position, start in offsets.items():
            assert _lazy_row(data, start) == rows[position]
    return offsets


@given(st.binary(max_size=60), st.one_of(st.just(TrieLimits()), small_limits))
def test_the_lazy_scan_is_as_strict_as_the_decoder(data: bytes, limits: TrieLimits) -> None:
    check_scan(data, limits)


@given(varied_entries, st.one_of(st.just(TrieLimits()), small_limits))
def test_tables_of_one_pointer_per_bucket_decode_lazily(
    items: list[tuple[int, int, list[Pointer]]], limits: TrieLimits
) -> None:
    first = {(position, bucket): pointers[:1] for position, bucket, pointers in reversed(items)}
    value = TrieTable((*place, pointers) for place, pointers in first.items())
    assert not value.forked
    data = value.encode()
    offsets = check_scan(data, limits)
    try:
        decoded = TrieTable.decode(data, limits=limits)
    except TrieLimitError:
        assert offsets is None
        return
    assert decoded == value and list(decoded) == list(value)
    if limits == TrieLimits():
        assert offsets is not None  # every valid table of this shape is scanned
        assert list(offsets) == list(value._positions)
        assert list(offsets.values()) == list(value._index()[1])


@given(st.integers(0, (1 << 64) - 1))
def test_public_varints_round_trip(value: int) -> None:
    data = trie.encode_varint(value)
    assert trie.decode_varint(b"x" + data, 1) == (value, len(data) + 1)


@pytest.mark.parametrize("data", [b"", b"\x80", b"\x80\x00", b"\xff" * 10 + b"\x01"])
def test_public_varint_decoding_is_strict(data: bytes) -> None:
    with raises_code("trie_decode"):
        trie.decode_varint(data)


def _general_check(data: bytes, path: bytes, bounds: dict[int, int]) -> object:
    """What decode + check_node answers or raises (the error type and message)."""
    try:
        return TrieTable.decode(data).check_node(path, lambda feed: bounds.get(feed, 0))
    except trie.TrieError as exc:
        return (type(exc), str(exc))


def _fast_check(data: bytes, path: bytes, bounds: dict[int, int]) -> object:
    """check_encoded's answer (the compiled one pass of trie/_chain.c first, where it is
    built), held to the same answer through the one pass in Python alone (check_usual)."""
    answers = []
    usual = TrieTable.check_usual if type(data) is bytes else TrieTable.check_encoded
    for check in (TrieTable.check_encoded, usual):
        try:
            answers.append(check(data, path, lambda feed: bounds.get(feed, 0)))
        except trie.TrieError as exc:
            answers.append((type(exc), str(exc)))
    assert answers[0] == answers[1], answers
    return answers[0]


small_entries = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 40), st.sampled_from([127, 128, 129, 200, 16383, 16384])),
        st.integers(0, 4),
        st.lists(
            st.builds(
                pointer,
                st.one_of(st.integers(0, 3), st.sampled_from([63, 64, 65])),
                st.one_of(st.integers(0, 20), edge_ints),
            ),
            min_size=1,
            max_size=2,
        ),
    ),
    max_size=8,
)
paths = st.one_of(
    st.binary(min_size=1, max_size=45).map(lambda b: bytes(x % 4 for x in b) + b"\x04"),
    st.binary(min_size=1, max_size=300).map(lambda b: bytes(x % 5 for x in b)),
)
bounds_maps = st.dictionaries(
    st.one_of(st.integers(0, 3), st.sampled_from([63, 64, 65])),
    st.one_of(st.integers(0, 25), edge_ints),
    max_size=6,
)


@given(small_entries, paths, bounds_maps)
def test_check_encoded_matches_decode_and_check_node(
    items: list[tuple[int, int, list[Pointer]]], path: bytes, bounds: dict[int, int]
) -> None:
    data = TrieTable(items).encode()
    assert _fast_check(data, path, bounds) == _general_check(data, path, bounds)


@given(small_entries, paths, bounds_maps, st.data())
def test_check_encoded_on_damaged_tables(
    items: list[tuple[int, int, list[Pointer]]],
    path: bytes,
    bounds: dict[int, int],
    data: st.DataObject,
) -> None:
    encoded = bytearray(TrieTable(items).encode())
    if encoded:
        for _ in range(data.draw(st.integers(0, 3))):
            encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
        if data.draw(st.booleans()):
            encoded = encoded[: data.draw(st.integers(0, len(encoded)))]
    damaged = bytes(encoded)
    assert _fast_check(damaged, path, bounds) == _general_check(damaged, path, bounds)


@given(st.binary(max_size=40), paths, bounds_maps)
def test_check_encoded_on_garbage(data: bytes, path: bytes, bounds: dict[int, int]) -> None:
    assert _fast_check(data, path, bounds) == _general_check(data, path, bounds)


def test_check_encoded_examples() -> None:
    path = bytes([1, 2, 4])
    bounds = {0: 3, 1: 200, 70: 1}

    def both(*entries: tuple[int, int, list[Pointer]]) -> object:
        data = table(*entries).encode()
        fast = _fast_check(data, path, bounds)
        assert fast == _general_check(data, path, bounds)
        return fast

    assert both((0, 0, [P(0, 0)]), (2, 4, [P(1, 199)])) is True
    assert both((0, 0, [P(0, 0)]), (2, 4, [P(0, 2), P(1, 199)]), (2, 0, [P(70, 0)])) is True
    assert both((0, 0, [P(0, 3)]), (2, 0, [P(1, 150)])) is False
    assert both((1, 0, [P(5, 0)])) is False
    assert both((0, 0, [P(0, 9)]), (1, 2, [P(0, 0)]))[0] is TrieShapeError  # type: ignore[index]
    assert both((3, 0, [P(0, 0)]))[0] is TrieShapeError  # type: ignore[index]
    assert _fast_check(b"", path, bounds) is True
    assert _fast_check(bytearray(table((0, 0, [P(0, 2)])).encode()), path, bounds) is True


@pytest.mark.skipif(CHECK is None, reason="trie/_chain.c is not built here (no C compiler)")
def test_the_compiled_check_answers_the_usual_tables_itself() -> None:
    """The compiled one pass answers the usual table (not handing it over), and hands over what
    it does not read (several pointers in a bucket, a feed of 64). Mutation tried in the C loop:
    the seq comparison with ``>`` instead of ``>=`` (caught by the property tests above)."""
    assert CHECK is not None
    path = bytes([1, 2, 4])
    bounds = {0: 3, 1: 200}.get
    assert CHECK(table((0, 0, [P(0, 0)]), (2, 4, [P(1, 199)])).encode(), path, bounds) is True
    assert CHECK(table((0, 0, [P(0, 3)])).encode(), path, bounds) is False
    assert CHECK(table((0, 0, [P(0, 0), P(1, 1)])).encode(), path, bounds) is None
    assert CHECK(table((0, 0, [P(64, 0)])).encode(), path, bounds) is None
