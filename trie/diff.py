"""Diff: the keys whose current nodes differ between two sets of heads, without listing both.

:func:`diff` walks the two tries together, digit prefix by digit prefix, with the frontier of
each side (:mod:`trie.walk`). Where the two frontiers are the same nodes, everything below that
prefix is the same on both sides (a frontier decides every key under its prefix), so the walk
skips it: the work is proportional to what changed and its depth, not to the size of the trie.
Where one side has nothing, the other side's keys are listed (:mod:`trie.iterate`). Keys come in
hash order, as :func:`trie.iterate.iterate` lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from trie.iterate import NO_LIMIT, Walker, events, next_event
from trie.node import N
from trie.path import TERMINATOR, HashFn, first_difference, key_path, normalize
from trie.table import Pointer
from trie.walk import child_frontier, descend, start_frontier

_DIGIT_BYTES = tuple(bytes([digit]) for digit in range(TERMINATOR + 1))


def diff(
    prefix: str,
    heads_a: Sequence[N],
    heads_b: Sequence[N],
    load: Callable[[Pointer], N],
    hash_fn: HashFn,
) -> Iterator[tuple[str, list[N], list[N]]]:
    """``(key, nodes_a, nodes_b)`` for every key under ``prefix`` whose current nodes (as
    :func:`trie.iterate.iterate` gives them; ``[]`` where the key is absent or only deleted)
    are not the same nodes on both sides, in hash order."""
    normal = normalize(prefix)
    base = key_path(normal, hash_fn, terminate=False)
    walker: Walker[N] = Walker(load, normal, len(base), not normal)
    side_a = descend(start_frontier(heads_a), base, 0, len(base), load)
    side_b = descend(start_frontier(heads_b), base, 0, len(base), load)
    stack: list[tuple[bytes, list[N], list[N]]] = [(base, side_a, side_b)]
    while stack:
        path, nodes_a, nodes_b = stack.pop()
        if _same(nodes_a, nodes_b):
            continue
        if not nodes_a or not nodes_b:
            flip = not nodes_a
            for key, nodes in walker.walk(path, nodes_b if flip else nodes_a, False, NO_LIMIT):
                yield (key, [], nodes) if flip else (key, nodes, [])
            continue
        position = len(path)
        jump = min(
            next_event(nodes_a, position, NO_LIMIT),
            next_event(nodes_b, position, NO_LIMIT),
            first_difference(nodes_a[0].path, nodes_b[0].path, position),
        )
        if jump > position:  # every node of both sides continues with the same digits
            path += nodes_a[0].path[position:jump]
            position = jump
        keys_a, digits_a = events(nodes_a, position)
        keys_b, digits_b = events(nodes_b, position)
        if position == walker.prefix_length and walker.exclude_base:
            keys_a = keys_b = False
        for bucket in range(TERMINATOR - 1, -1, -1):
            if digits_a[bucket] or digits_b[bucket]:
                child = path + _DIGIT_BYTES[bucket]
                stack.append(
                    (
                        child,
                        child_frontier(nodes_a, position, bucket, child, load)
                        if digits_a[bucket]
                        else [],
                        child_frontier(nodes_b, position, bucket, child, load)
                        if digits_b[bucket]
                        else [],
                    )
                )
        if keys_a or keys_b:
            here_a = dict(walker.keys(path, nodes_a)) if keys_a else {}
            here_b = dict(walker.keys(path, nodes_b)) if keys_b else {}
            for key in sorted(here_a.keys() | here_b.keys()):
                now_a, now_b = here_a.get(key, []), here_b.get(key, [])
                if not _same(now_a, now_b):
                    yield key, now_a, now_b


def _same(nodes_a: Sequence[N], nodes_b: Sequence[N]) -> bool:
    if len(nodes_a) != len(nodes_b):
        return False
    return {(n.feed, n.seq) for n in nodes_a} == {(n.feed, n.seq) for n in nodes_b}


__all__ = ["diff"]
