"""Regenerate ``trie.json``: python spec/vectors/make_trie_vectors.py > spec/vectors/trie.json

The vectors are computed by the trie package and then frozen; tests/test_spec_trie.py checks the
implementation against them, recomputes hashes, paths and encodings from spec/trie.md alone, and
checks every lookup and listing against the causal model computed from the nodes directly.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from trie import (
    Pointer,
    TrieLimits,
    TrieTable,
    hash_order,
    iterate,
    key_path,
    lookup,
    normalize,
    pointer,
    prepare_put,
    seen_by,
    siphash_zero,
)
from trie.path import HashFn, digits_to_text


def constant_hash(data: bytes) -> bytes:
    return bytes.fromhex("5a5a5a5a5a5a5a5a")


HASHES: dict[str, HashFn] = {"siphash": siphash_zero, "constant": constant_hash}


@dataclass(frozen=True)
class Node:
    key: str
    path: bytes
    trie: TrieTable
    feed: int
    seq: int
    clock: tuple[int, ...]
    deleted: bool


def replay(hash_name: str, writers: int, steps: list[list[Any]]) -> dict[str, Any]:
    """Run ``steps`` (``["put"|"del", writer, key]``, ``["sync", a, b]``) and record the result."""
    hash_fn = HASHES[hash_name]
    feeds: list[list[Node]] = [[] for _ in range(writers)]
    known = [[0] * writers for _ in range(writers)]

    def load(pointer: Pointer) -> Node:
        feed, seq = pointer
        return feeds[feed][seq]

    def heads(writer: int) -> list[Node]:
        tips = [feeds[f][n - 1] for f, n in enumerate(known[writer]) if n]
        return [tip for tip in tips if not any(seen_by(tip, other) for other in tips)]

    for op, a, b in steps:
        if op == "sync":
            merged = [max(x, y) for x, y in zip(known[a], known[b], strict=True)]
            known[a], known[b] = merged, list(merged)
            continue
        key = normalize(b)
        path = key_path(key, hash_fn)
        seq = len(feeds[a])
        table = prepare_put(key, path, heads(a), load)
        clock = list(known[a])
        clock[a] = seq + 1
        feeds[a].append(Node(key, path, table, a, seq, tuple(clock), op == "del"))
        known[a][a] = seq + 1
    keys = sorted({node.key for feed in feeds for node in feed})
    gets = []
    lists = []
    for writer in range(writers):
        for key in keys:
            found = lookup(key_path(key, hash_fn), key, heads(writer), load)
            gets.append({"writer": writer, "key": key, "nodes": [[n.feed, n.seq] for n in found]})
        for prefix in sorted({""} | {k.split("/")[0] for k in keys if k}):
            for options in ({}, {"reverse": True}, {"gt": True}, {"recursive": False}):
                entries = iterate(prefix, heads(writer), load, hash_fn, **options)
                lists.append(
                    {
                        "writer": writer,
                        "prefix": prefix,
                        "options": options,
                        "entries": [[k, [[n.feed, n.seq] for n in ns]] for k, ns in entries],
                    }
                )
    return {
        "hash": hash_name,
        "writers": writers,
        "steps": steps,
        "nodes": [
            {
                "feed": node.feed,
                "seq": node.seq,
                "key": node.key,
                "deleted": node.deleted,
                "clock": list(node.clock),
                "trie": node.trie.encode().hex(),
            }
            for feed in feeds
            for node in feed
        ],
        "heads": [[[n.feed, n.seq] for n in heads(writer)] for writer in range(writers)],
        "gets": gets,
        "lists": lists,
    }


HISTORIES: list[tuple[str, str, int, list[list[Any]]]] = [
    (
        "single writer: puts, an overwrite, a delete",
        "siphash",
        1,
        [["put", 0, "a"], ["put", 0, "b"], ["put", 0, "a/b"], ["put", 0, "a"], ["del", 0, "b"]],
    ),
    (
        "two writers: concurrent puts of one key, then a merge",
        "siphash",
        2,
        [["put", 0, "x"], ["put", 1, "x"], ["sync", 0, 1], ["put", 0, "y"], ["put", 1, "x/z"]],
    ),
    (
        "reference stale-version repro (REFERENCE.md 5.5): x/b has one current node, a:1",
        "siphash",
        2,
        [
            ["put", 0, ""],
            ["put", 1, "x/b"],
            ["sync", 0, 1],
            ["put", 0, "x/b"],
            ["del", 0, "a/a/a"],
            ["put", 0, "b/a"],
            ["put", 1, "a/x/a"],
            ["sync", 0, 1],
            ["put", 0, "x/x"],
        ],
    ),
    (
        "tombstone concurrent with a put; concurrent deletes",
        "siphash",
        2,
        [
            ["put", 0, "k"],
            ["put", 0, "j"],
            ["sync", 0, 1],
            ["del", 0, "k"],
            ["put", 1, "k"],
            ["del", 0, "j"],
            ["del", 1, "j"],
            ["sync", 0, 1],
        ],
    ),
    (
        "constant hash: every key of one depth collides",
        "constant",
        3,
        [
            ["put", 0, "a"],
            ["put", 1, "b"],
            ["put", 2, "c"],
            ["put", 0, "a/x"],
            ["sync", 0, 1],
            ["put", 1, "a"],
            ["sync", 1, 2],
            ["put", 2, "b/y"],
            ["sync", 0, 2],
            ["del", 0, "c"],
        ],
    ),
]

SIPHASH_INPUTS = [b"", b"a", b"b", b"hello", b"idgcmnmna", b"mpomeiehc", "é".encode(), bytes(16)]
PATH_KEYS = ["", "/", "a", "/a/", "a//b", "a/b", "hello/world", "idgcmnmna", "mpomeiehc"]
ORDER_KEYS = ["a", "a/b", "b", "b/a", "c", "a/b/c", "hello", "hello/world", "x/y/z", "idgcmnmna"]


def entries_json(table: TrieTable) -> list[list[Any]]:
    return [[i, v, [list(p) for p in ptrs]] for i, v, ptrs in table]


def main() -> None:
    tables = [
        TrieTable(),
        TrieTable([(0, 0, [pointer(0, 0)])]),
        TrieTable([(1, 0, [pointer(0, 0)])]),
        TrieTable([(1, 0, [pointer(1, 0)])]),
        TrieTable([(1, 0, [pointer(0, 0), pointer(0, 1)])]),
        TrieTable([(1, 1, [pointer(0, 0), pointer(0, 1)])]),
        TrieTable([(32, 2, [pointer(0, 0)]), (32, 3, [pointer(0, 2)]), (32, 4, [pointer(0, 0)])]),
        TrieTable(
            [
                (3, 0, [pointer(2, 300), pointer(0, 7)]),
                (3, 4, [pointer(1, 1)]),
                (200, 1, [pointer(64, 1 << 40)]),
            ]
        ),
    ]
    invalid = [
        ("00", "decode", "truncated: bitfield missing"),
        ("000100", "decode", "truncated: seq missing"),
        ("00010100", "decode", "truncated: the more bit promises another pointer"),
        ("80", "decode", "truncated varint"),
        ("8000010000", "decode", "non-minimal varint"),
        ("000000", "decode", "empty bitfield"),
        ("00200000", "decode", "bit above bucket 4"),
        ("0001000000010000", "decode", "positions not strictly ascending"),
        ("000101020000", "decode", "pointers not ascending by (feed, seq)"),
        ("000101000000", "decode", "duplicate pointer"),
        ("0001" + "ff" * 10 + "0100", "decode", "varint longer than 10 bytes"),
        ("0001" + "ff" * 9 + "0200", "decode", "varint not below 2^64"),
    ]
    limited = [
        ({"max_path_length": 5}, "05010000"),
        ({"max_positions": 1}, "0001000001010000"),
        ({"max_bucket_pointers": 1}, "000101000001"),
        ({"max_total_pointers": 1}, "0003000000" + "00"),
        ({"max_feed": 2}, "00010400"),
        ({"max_seq": 10}, "0001000a"),
    ]
    for limits, encoded in limited:
        TrieTable.decode(bytes.fromhex(encoded))
        TrieLimits(**limits)
    vectors = {
        "siphash_key": "00" * 16,
        "siphash": [
            {"input": data.hex(), "output": siphash_zero(data).hex()} for data in SIPHASH_INPUTS
        ],
        "paths": [
            {
                "key": key,
                "normalized": normalize(key),
                "path": digits_to_text(key_path(key, siphash_zero)),
            }
            for key in PATH_KEYS
        ],
        "order": {
            "keys": ORDER_KEYS,
            "forward": hash_order(ORDER_KEYS, siphash_zero),
            "reverse": hash_order(ORDER_KEYS, siphash_zero, reverse=True),
        },
        "tables": [{"entries": entries_json(t), "encoded": t.encode().hex()} for t in tables],
        "invalid_tables": [
            {"encoded": encoded, "error": error, "why": why} for encoded, error, why in invalid
        ],
        "limited_tables": [{"limits": limits, "encoded": encoded} for limits, encoded in limited],
        "histories": [
            {"name": name, **replay(hash_name, writers, steps)}
            for name, hash_name, writers, steps in HISTORIES
        ],
    }
    json.dump(vectors, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
