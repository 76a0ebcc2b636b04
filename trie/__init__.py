"""The hash trie that indexes a hyperdb database: pure computation, no I/O, no import from hyperdb.

Path hashing, the per-node trie table and its byte encoding, lookups, prefix iteration and diffs
live here (``spec/trie.md``). The package reads nodes only through a loader the caller provides
and takes its hash function as a parameter, so it can be tested with forced collisions and reused
on its own.
"""

from __future__ import annotations

from trie.diff import diff
from trie.errors import (
    TrieArgumentError,
    TrieDecodeError,
    TrieError,
    TrieLimitError,
    TrieShapeError,
)
from trie.get import lookup
from trie.iterate import iterate
from trie.node import (
    Clock,
    Loader,
    Node,
    check_pointers,
    clock_at,
    dominated,
    maximal,
    pointer_of,
    seen_by,
)
from trie.path import (
    DIGITS_PER_COMPONENT,
    TERMINATOR,
    HashFn,
    components,
    hash_order,
    is_under,
    key_path,
    normalize,
    order_key,
    path_order,
)
from trie.put import prepare_put
from trie.siphash import siphash24, siphash_zero
from trie.table import (
    DEFAULT_LIMITS,
    EMPTY_TABLE,
    Pointer,
    TrieLimits,
    TrieTable,
    decode_varint,
    encode_varint,
    pointer,
)

__all__ = [
    "DEFAULT_LIMITS",
    "DIGITS_PER_COMPONENT",
    "EMPTY_TABLE",
    "TERMINATOR",
    "Clock",
    "HashFn",
    "Loader",
    "Node",
    "Pointer",
    "TrieArgumentError",
    "TrieDecodeError",
    "TrieError",
    "TrieLimitError",
    "TrieLimits",
    "TrieShapeError",
    "TrieTable",
    "check_pointers",
    "clock_at",
    "components",
    "decode_varint",
    "diff",
    "dominated",
    "encode_varint",
    "hash_order",
    "is_under",
    "iterate",
    "key_path",
    "lookup",
    "maximal",
    "normalize",
    "path_order",
    "order_key",
    "pointer",
    "pointer_of",
    "prepare_put",
    "seen_by",
    "siphash24",
    "siphash_zero",
]
