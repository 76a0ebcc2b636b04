"""hyperdb.model.state: the heads row re-encoded from the base state's row matches a whole
encoding."""

from __future__ import annotations

import dataclasses
import struct
from itertools import chain

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hyperdb
from hyperdb.model import state as state_module
from hyperdb.model.state import StateBuilder

feeds = st.integers(0, 300)
seqs = st.integers(1, 1 << 40)
changes = st.lists(st.tuples(feeds, st.none() | seqs), max_size=5)


def whole(heads: dict[int, int]) -> tuple[tuple[tuple[int, int], ...], bytes]:
    items = tuple(sorted(heads.items()))
    return items, struct.pack(">" + "IQ" * len(items), *chain.from_iterable(items))


def _refuse(count: int) -> struct.Struct:
    raise AssertionError("the row was encoded whole")


@given(st.dictionaries(feeds, seqs, max_size=80), changes)
def test_heads_row_from_the_base_row(
    base: dict[int, int], edits: list[tuple[int, int | None]]
) -> None:
    with hyperdb.open(memory=True) as db:
        state = dataclasses.replace(db._context.state, heads=tuple(sorted(base.items())))
        assert state.heads_row == whole(base)[1]
        with db._context.storage.write() as tx:
            b = StateBuilder(state, tx)
            for feed_id, seq in edits:  # as apply_node changes the heads: in place, recorded
                if seq is None:
                    b.heads.pop(feed_id, None)
                else:
                    b.heads[feed_id] = seq
                b.heads_touched.add(feed_id)
            assert b._encode_heads(dict(b.heads)) == whole(b.heads)  # not the tracked dict
            if base and len(b.heads_touched) * 8 <= len(base):
                with pytest.MonkeyPatch.context() as patch:
                    patch.setattr(state_module, "_heads_row", _refuse)
                    assert b._encode_heads(b.heads) == whole(b.heads)
            assert b._encode_heads(b.heads) == whole(b.heads)
            if len(b.heads) > 1:
                b.set_heads(b.heads)
                built = b.build()
                assert built.heads == whole(b.heads)[0]
                assert built.heads_row == whole(b.heads)[1]
                assert built.heads_map == b.heads
