"""Asserting that trie tables cost the cyclic garbage collector nothing: every row, bucket and
pointer an exact tuple the GC has untracked (the trie tests' check that a cache of decoded tables
adds no work to full collections)."""

from __future__ import annotations

import gc

from trie import TrieTable


def assert_untracked(*values: TrieTable) -> None:
    """Every row, bucket and pointer of ``values`` is an exact tuple (of ints, for a pointer) that
    the cyclic GC has untracked, so a cache of decoded tables costs full collections nothing."""
    # CPython untracks an exact tuple once its items are untracked, one level of nesting per
    # collection (it visits containers before their items): pointers, then buckets, then rows.
    # A decoded table builds its rows on first use: build them all before collecting
    for value in values:
        list(value)
    for _ in range(3):
        gc.collect()
    for value in values:
        assert value.positions
        for position in value.positions:
            row = value.row(position)
            assert row is not None and type(row) is tuple and len(row) == 5
            assert not gc.is_tracked(row), f"row {position} is GC-tracked"
            for bucket in row:
                assert type(bucket) is tuple
                assert not gc.is_tracked(bucket), f"a bucket at {position} is GC-tracked"
                for item in bucket:
                    assert type(item) is tuple and len(item) == 2
                    assert all(type(number) is int for number in item)
                    assert not gc.is_tracked(item), f"pointer {item!r} is GC-tracked"
