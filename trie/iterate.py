"""Iteration: every key under a prefix with its current nodes, lazily, in hash order.

:func:`iterate` is a depth-first walk over digit prefixes, each visited with its frontier (see
:mod:`trie.walk`), so it sees exactly what a lookup of each key would see. At a prefix it first
emits the keys whose path ends there (the terminator sorts before the digits), then visits the
digits 0..3; ``reverse`` visits 3..0 and emits the keys last. Digits where every frontier node
simply continues are jumped over in one step, so the work is proportional to the branching of the
trie, not to the length of the paths. ``spec/trie.md`` section 6 is the normative description.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Generic

from trie.node import N, maximal
from trie.path import (
    DIGITS_PER_COMPONENT,
    TERMINATOR,
    HashFn,
    first_difference,
    is_under,
    key_path,
    normalize,
)
from trie.table import Pointer
from trie.walk import child_frontier, descend, key_group, start_frontier

_EXPAND = 0  # visit a prefix with its frontier
_CHILD = 1  # build the frontier of prefix + digit from the parent's frontier, then visit it
_KEYS = 2  # emit the keys whose path is exactly the prefix
NO_LIMIT = sys.maxsize  # a walk limit no path reaches (shared with trie.diff, as Walker is)
_DIGIT_BYTES = tuple(bytes([digit]) for digit in range(TERMINATOR + 1))


def iterate(
    prefix: str,
    heads: Sequence[N],
    load: Callable[[Pointer], N],
    hash_fn: HashFn,
    *,
    recursive: bool = True,
    reverse: bool = False,
    gt: bool = False,
) -> Iterator[tuple[str, list[N]]]:
    """Every key under ``prefix`` with its current nodes (as :func:`trie.get.lookup` returns
    them), skipping keys whose current nodes are all tombstones, in hash order.

    A key is under the (normalized) prefix when its path starts with the prefix's path and its
    string is the prefix or starts with the prefix plus ``/``. The prefix key itself is excluded
    with ``gt`` and always for the empty prefix. ``reverse`` reverses the digit order; keys with
    identical paths come in ascending key order either way. ``recursive=False`` yields one entry
    per child digit prefix (the next component's 32 digits): the first key of that subtree in
    forward hash order, i.e. the child key itself when it exists.
    """
    normal = normalize(prefix)
    base = key_path(normal, hash_fn, terminate=False)
    walker: Walker[N] = Walker(load, normal, len(base), gt or not normal)
    frontier = descend(start_frontier(heads), base, 0, len(base), load)
    if not frontier:
        return
    limit = NO_LIMIT if recursive else len(base) + DIGITS_PER_COMPONENT
    yield from walker.walk(base, frontier, reverse, limit)


class Walker(Generic[N]):
    """The state one iteration shares between its depth-first walks (:mod:`trie.diff` lists the
    keys of a side with it too)."""

    __slots__ = ("exclude_base", "load", "prefix", "prefix_length")

    def __init__(
        self, load: Callable[[Pointer], N], prefix: str, prefix_length: int, exclude_base: bool
    ) -> None:
        self.load = load
        self.prefix = prefix
        self.prefix_length = prefix_length
        self.exclude_base = exclude_base

    def walk(
        self, start: bytes, frontier: list[N], reverse: bool, limit: int
    ) -> Iterator[tuple[str, list[N]]]:
        """Depth-first from ``start``; a visit reaching ``limit`` digits yields only the first
        key (forward order) below it."""
        load = self.load
        stack: list[tuple[int, bytes, list[N], int]] = [(_EXPAND, start, frontier, 0)]
        while stack:
            kind, path, nodes, digit = stack.pop()
            if kind == _KEYS:
                yield from self.keys(path, nodes)
                continue
            position = len(path)
            if kind == _CHILD:
                path += _DIGIT_BYTES[digit]
                nodes = child_frontier(nodes, position, digit, path, load)
                if not nodes:
                    continue
                position += 1
            jump = next_event(nodes, position, limit)
            if jump > position:
                path += nodes[0].path[position:jump]
                position = jump
            if position >= limit:
                first = next(self.walk(path, nodes, False, NO_LIMIT), None)
                if first is not None:
                    yield first
                continue
            has_keys, digits = events(nodes, position)
            if position == self.prefix_length and self.exclude_base:
                has_keys = False
            if reverse:
                if has_keys:
                    stack.append((_KEYS, path, nodes, 0))
                for bucket in range(TERMINATOR):
                    if digits[bucket]:
                        stack.append((_CHILD, path, nodes, bucket))
            else:
                for bucket in range(TERMINATOR - 1, -1, -1):
                    if digits[bucket]:
                        stack.append((_CHILD, path, nodes, bucket))
                if has_keys:
                    stack.append((_KEYS, path, nodes, 0))

    def keys(self, path: bytes, nodes: list[N]) -> Iterator[tuple[str, list[N]]]:
        """The live keys whose path is exactly ``path`` plus the terminator, ascending."""
        position = len(path)
        if len(nodes) == 1:
            # one node ending here without a collision bucket: its key alone (the common case)
            node = nodes[0]
            own = node.path
            if (
                len(own) == position + 1
                and own[position] == TERMINATOR
                and not node.trie.get(position, TERMINATOR)
            ):
                if not node.deleted and own.startswith(path) and is_under(node.key, self.prefix):
                    yield node.key, [node]
                return
        by_key: dict[str, list[N]] = {}
        for node in key_group(nodes, position, self.load).values():
            own = node.path
            if len(own) != position + 1 or own[position] != TERMINATOR or not own.startswith(path):
                continue
            if not is_under(node.key, self.prefix):
                continue
            found = by_key.get(node.key)
            if found is None:
                by_key[node.key] = [node]
            else:
                found.append(node)
        for key in sorted(by_key):
            current = maximal(by_key[key])
            if not all(node.deleted for node in current):
                yield key, current


def events(nodes: Sequence[N], position: int) -> tuple[bool, list[bool]]:
    """At a prefix of length ``position`` with frontier ``nodes``: whether keys end there, and
    which digits continue from it."""
    has_keys = False
    digits = [False, False, False, False]
    for node in nodes:
        own = node.path[position]
        if own == TERMINATOR:
            has_keys = True
        else:
            digits[own] = True
        row = node.trie.row(position)
        if row is not None:
            if row[TERMINATOR]:
                has_keys = True
            for bucket in range(TERMINATOR):
                if bucket != own and row[bucket]:
                    digits[bucket] = True
    return has_keys, digits


def next_event(nodes: Sequence[N], position: int, limit: int) -> int:
    """The first position ``>= position`` (at most ``limit``) where something can happen: a node's
    path ends, a node has a non-empty row, or two nodes' paths part."""
    event = limit
    first = nodes[0].path
    for node in nodes:
        own = node.path
        end = len(own) - 1
        if end < event:
            event = end
        row = node.trie.next_position(position)
        if row is not None and row < event:
            event = row
        if own is not first:
            parted = first_difference(first, own, position)
            if parted < event:
                event = parted
    return event
