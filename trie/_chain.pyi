"""The compiled helpers (``trie/_chain.c``): :func:`trie.put.walk_chain` and
:meth:`trie.table.TrieTable.check_usual`, compiled."""

from collections.abc import Callable, Sequence
from typing import Any

def chain(
    path: bytes,
    head: Any,
    head_pointer: bytes,
    load: Callable[[tuple[int, int]], Any],
    nodes: tuple[dict[tuple[int, int], Any], ...],
) -> tuple[bytes, Sequence[int], Sequence[int], Any, Any, bytes | None] | None: ...
def check_encoded(data: bytes, path: bytes, limit: Callable[[int], int]) -> bool | None: ...
