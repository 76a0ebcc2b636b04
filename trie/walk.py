"""The steps lookups and iteration share: following a trie one digit at a time from a set of nodes.

A **frontier** for a digit prefix ``P`` is a list of nodes whose paths start with ``P`` and from
which every current node of every key below ``P`` can be reached. The heads are the frontier of
the empty prefix; :func:`child_frontier` gives the frontier of ``P + v`` (each node whose own path
continues with ``v``, plus the nodes in its bucket ``v`` at position ``len(P)`` otherwise), and
:func:`key_group` the candidate nodes for the keys whose path is exactly ``P`` plus the
terminator. Every frontier is pruned: a node another frontier node has seen is dropped, because
that other node indexes everything it did (``spec/trie.md`` section 5).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from trie.node import N, clock_at
from trie.path import TERMINATOR, first_difference
from trie.table import Pointer


def prune_frontier(nodes: Sequence[N]) -> list[N]:
    """``nodes`` (distinct) without those another of them has seen.

    Within one feed only the latest node survives (it has seen the others by the definition of
    a clock); across feeds the clocks decide.
    """
    if len(nodes) < 2:
        return list(nodes)
    latest: dict[int, N] = {}
    for node in nodes:
        current = latest.get(node.feed)
        if current is None or node.seq > current.seq:
            latest[node.feed] = node
    if len(latest) == 1:
        return list(latest.values())
    candidates = list(latest.values())
    return [
        node
        for node in candidates
        if not any(
            other is not node and clock_at(other.clock, node.feed) > node.seq
            for other in candidates
        )
    ]


def start_frontier(heads: Iterable[N]) -> list[N]:
    """The frontier of the empty prefix: the heads, deduplicated. Heads are mutually unseen by
    definition, so they are not pruned (that would cost a clock comparison per pair of heads);
    a dominated head passed anyway changes nothing but the work done."""
    unique = {(node.feed, node.seq): node for node in heads}
    return list(unique.values())


def child_frontier(
    nodes: Sequence[N], position: int, digit: int, child: bytes, load: Callable[[Pointer], N]
) -> list[N]:
    """The frontier of ``child`` (= the frontier's prefix + ``digit``, ``position`` = its length
    minus one). Pointed nodes whose path does not start with ``child`` are ignored."""
    if len(nodes) == 1:  # one node: it continues, or its bucket is the frontier unless it forks
        node = nodes[0]
        if node.path[position] == digit:
            return [node]
        pointers = node.trie.get(position, digit)
        if not pointers:
            return []
        if len(pointers) == 1:
            target = load(pointers[0])
            return [target] if target.path.startswith(child) else []
    found: dict[tuple[int, int], N] = {}
    for node in nodes:
        if node.path[position] == digit:
            found[(node.feed, node.seq)] = node
            continue
        for pointer in node.trie.get(position, digit):
            if pointer not in found:
                target = load(pointer)
                if target.path.startswith(child):
                    found[pointer] = target
    return prune_frontier(list(found.values()))


def descend(
    nodes: list[N], target: bytes, position: int, stop: int, load: Callable[[Pointer], N]
) -> list[N]:
    """Follow ``target`` from the frontier of ``target[:position]`` to that of ``target[:stop]``
    (``stop`` below the terminator), jumping over digits where every node simply continues."""
    while nodes and position < stop:
        jump = stop
        for node in nodes:
            differs = first_difference(node.path, target, position)
            if differs < jump:
                jump = differs
        if jump >= stop:
            break
        nodes = child_frontier(nodes, jump, target[jump], target[: jump + 1], load)
        position = jump + 1
    return nodes


def key_group(
    nodes: Sequence[N], position: int, load: Callable[[Pointer], N]
) -> dict[tuple[int, int], N]:
    """Candidates for the keys whose path ends (terminator) at ``position``, from the frontier
    of that path without terminator: the frontier nodes ending there and the nodes in bucket 4
    of the others (together: the *arrived* nodes), plus every node in the collision bucket
    (bucket 4 at ``position``) of an arrived node. Not filtered by key or path."""
    arrived: dict[tuple[int, int], N] = {}
    for node in nodes:
        path = node.path
        if len(path) > position and path[position] == TERMINATOR:
            arrived[(node.feed, node.seq)] = node
            continue
        for pointer in node.trie.get(position, TERMINATOR):
            if pointer not in arrived:
                arrived[pointer] = load(pointer)
    group = dict(arrived)
    for node in arrived.values():
        for pointer in node.trie.get(position, TERMINATOR):
            if pointer not in group:
                group[pointer] = load(pointer)
    return group
