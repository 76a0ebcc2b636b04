"""hyperdb.model.node.StoredNode: ``path``, ``trie`` and an unseen ``clock`` computed on first use,
plain slots after."""

from __future__ import annotations

import pytest

import trie
from hyperdb.model.node import StoredNode
from hyperdb.primitives import crypto
from tests.helpers.errors import raises_code


def test_path_and_trie_are_computed_once_on_first_use() -> None:
    table = trie.TrieTable([(0, 1, [(0, 3)])])
    node = StoredNode("a/b", 0, 5, {0: 6}, False, b"v", 0, trie_data=table.encode())
    assert node.path == trie.key_path("a/b", crypto.siphash24)
    assert node.path is node.path
    assert node.trie == table
    assert node.trie is node.trie


def test_a_clock_given_as_none_is_the_nodes_own_entry() -> None:
    node = StoredNode("a", 3, 7, None, False, b"v", 0)
    assert node.clock == {3: 8}
    assert node.clock is node.clock
    assert trie.seen_by(StoredNode("b", 3, 6, None, False, b"v", 0), node)
    assert not trie.seen_by(StoredNode("b", 4, 0, None, False, b"v", 0), node)
    given = {3: 8, 4: 2}
    assert StoredNode("a", 3, 7, given, False, b"v", 0).clock is given


def test_given_path_and_table_are_kept() -> None:
    table = trie.TrieTable([(0, 1, [(0, 3)])])
    node = StoredNode("a", 0, 1, {0: 2}, False, None, 0, table=table, path=b"\x01\x04")
    assert node.trie is table
    assert node.path == b"\x01\x04"


def test_feed_map_applies_to_the_lazy_trie() -> None:
    table = trie.TrieTable([(0, 1, [(1, 3)])])
    node = StoredNode("a", 0, 5, {0: 6}, False, b"v", 0, trie_data=table.encode(), feed_map=[0, 7])
    assert node.trie == trie.TrieTable([(0, 1, [(7, 3)])])


def test_a_damaged_trie_and_unknown_attributes() -> None:
    node = StoredNode("a", 2, 5, {2: 6}, False, b"v", 0, trie_data=b"\x00")
    with raises_code("corrupt"):
        _ = node.trie
    with pytest.raises(AttributeError):
        _ = node.nothing
    assert not hasattr(node, "nothing")
    assert getattr(node, "__deepcopy__", None) is None
