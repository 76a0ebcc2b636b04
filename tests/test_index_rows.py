"""hyperdb.model.index rows: the direct encoding of single-entry rows matches the general one, the
direct reading of a row of one live inline node agrees with the general one (and declines every
other row), and merging the rows of many nodes in one pass matches merging them one at a time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hyperdb.model import index
from hyperdb.model.apply import merge_index
from hyperdb.model.node import StoredNode
from hyperdb.storage import MemoryStorage

keys = st.one_of(
    st.text(min_size=1, max_size=20),
    st.text(min_size=1, max_size=3).map(lambda s: s * 200),  # long keys (hashed row keys)
    st.sampled_from(["a" * index.INLINE_KEY_BYTES, "a" * (index.INLINE_KEY_BYTES + 1)]),
)
values = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.sampled_from([b"", b"v" * index.INLINE_VALUE_BYTES, b"v" * (index.INLINE_VALUE_BYTES + 1)]),
)


@given(keys, st.integers(0, 2**32 - 1), st.integers(0, 2**48), st.booleans(), values)
def test_single_entry_rows(
    key: str, feed: int, seq: int, deleted: bool, value: bytes | None
) -> None:
    key_bytes = key.encode("utf-8")
    row_key = index.row_key(key_bytes)
    if len(key_bytes) <= index.INLINE_KEY_BYTES:
        assert row_key == key_bytes
    else:  # the first bytes, then a 16-byte hash of the whole key
        assert row_key[: index.INLINE_KEY_BYTES] == key_bytes[: index.INLINE_KEY_BYTES]
        assert len(row_key) == index.INLINE_KEY_BYTES + 16 and row_key != key_bytes
    row = index.encode_single(key, feed, seq, deleted, value, key_bytes)
    assert row == index.encode_row(key, [index.entry(feed, seq, deleted, value)])
    decoded_key, entries = index.decode_row(row_key, row)
    assert decoded_key == key
    assert entries == [index.entry(feed, seq, deleted, value)]
    assert index.key_of_row(row_key, row) == key
    [item] = entries
    direct = index.decode_single(row)
    if (
        not item.deleted
        and item.inline
        and item.value is not None
        and len(key_bytes) <= index.INLINE_KEY_BYTES
    ):
        assert direct == (feed, seq, value)
    else:
        assert direct is None


@given(
    st.lists(st.tuples(st.integers(0, 9), st.integers(0, 99), st.booleans(), values), max_size=3)
)
def test_only_rows_of_one_live_inline_node_are_read_directly(
    entries: list[tuple[int, int, bool, bytes | None]],
) -> None:
    items = [index.entry(feed, seq, deleted, value) for feed, seq, deleted, value in entries]
    row = index.encode_row("k", items)
    direct = index.decode_single(row)
    if len(items) == 1 and not items[0].deleted and items[0].inline and items[0].value is not None:
        assert direct == (items[0].feed, items[0].seq, items[0].value)
    else:
        assert direct is None
    for cut in range(len(row)):  # a damaged (truncated) row is never read directly
        assert index.decode_single(row[:cut]) is None


node_specs = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c/d"]),  # few keys: rows come again in one pass
        st.integers(0, 3),  # feed
        st.booleans(),  # deleted
        st.dictionaries(st.integers(0, 3), st.integers(1, 20), max_size=3),  # clock
    ),
    max_size=12,
)


@given(node_specs)
def test_merging_rows_in_one_pass_equals_one_at_a_time(
    specs: list[tuple[str, int, bool, dict[int, int]]],
) -> None:
    seqs: dict[int, int] = {}
    nodes = []
    for key, feed, deleted, clock in specs:
        seqs[feed] = seq = seqs.get(feed, 0) + 1
        value = None if deleted else f"{feed}:{seq}".encode()
        nodes.append(StoredNode(key, feed, seq, {**clock, feed: seq + 1}, deleted, value, 0))
    one_pass, one_by_one = MemoryStorage(["index"]), MemoryStorage(["index"])
    with one_pass.write() as tx:
        merge_index(tx, nodes)
    with one_by_one.write() as tx:
        for node in nodes:
            merge_index(tx, (node,))
    with one_pass.read() as a, one_by_one.read() as b:
        assert list(a.scan("index")) == list(b.scan("index"))
