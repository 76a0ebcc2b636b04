"""spec/trie.md test vectors: each value is checked against the implementation and recomputed
from the specification alone (hashes against libsodium, digits, order and encodings from their
formulas, lookups and listings from the causal model over the recorded nodes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hyperdb.primitives import crypto
from tests.helpers.errors import raises_code
from trie import (
    Pointer,
    TrieLimitError,
    TrieLimits,
    TrieTable,
    hash_order,
    iterate,
    key_path,
    lookup,
    normalize,
    prepare_put,
    seen_by,
    siphash_zero,
)

VECTORS = json.loads((Path(__file__).parent.parent / "spec/vectors/trie.json").read_text())
HISTORIES: list[dict[str, Any]] = VECTORS["histories"]
HASHES: dict[str, Callable[[bytes], bytes]] = {
    "siphash": crypto.siphash24,
    "constant": lambda data: bytes.fromhex("5a5a5a5a5a5a5a5a"),
}

# --- the formulas of spec/trie.md, written out independently -------------------------------------


def spec_normalize(key: str) -> str:
    return "/".join(part for part in key.split("/") if part)


def spec_digits(key: str, hash_fn: Callable[[bytes], bytes]) -> list[int]:
    digits: list[int] = []
    for part in spec_normalize(key).split("/") if spec_normalize(key) else []:
        for byte in hash_fn(part.encode()):
            digits += [byte & 3, (byte >> 2) & 3, (byte >> 4) & 3, byte >> 6]
    return digits


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        if value < 0x80:
            out.append(value)
            return bytes(out)
        out.append(value & 0x7F | 0x80)
        value >>= 7


def spec_encode(entries: list[list[Any]]) -> bytes:
    rows: dict[int, dict[int, list[list[int]]]] = {}
    for position, bucket, pointers in entries:
        rows.setdefault(position, {})[bucket] = pointers
    out = b""
    for position in sorted(rows):
        buckets = rows[position]
        out += varint(position) + varint(sum(1 << bucket for bucket in buckets))
        for bucket in sorted(buckets):
            pointers = buckets[bucket]
            for index, (feed, seq) in enumerate(pointers):
                out += varint(feed * 2 + (index < len(pointers) - 1)) + varint(seq)
    return out


def spec_hash_order(keys: list[str], hash_fn: Callable[[bytes], bytes], reverse: bool) -> list[str]:
    decorated = sorted((spec_digits(key, hash_fn), spec_normalize(key)) for key in keys)
    if reverse:
        decorated.sort(key=lambda item: item[0], reverse=True)
    return [key for _, key in decorated]


# --- hashes, paths, order, tables -----------------------------------------------------------------


def test_siphash() -> None:
    assert VECTORS["siphash_key"] == "00" * 16
    for case in VECTORS["siphash"]:
        data = bytes.fromhex(case["input"])
        assert crypto.siphash24(data).hex() == case["output"]
        assert siphash_zero(data).hex() == case["output"]
    assert {"input": b"hello".hex(), "output": "b952f7b25d5dc18c"} in VECTORS["siphash"]


def test_paths() -> None:
    for case in VECTORS["paths"]:
        assert spec_normalize(case["key"]) == case["normalized"] == normalize(case["key"])
        digits = [*spec_digits(case["key"], crypto.siphash24), 4]
        assert "".join(map(str, digits)) == case["path"]
        assert key_path(case["key"], crypto.siphash24) == bytes(digits)


def test_order() -> None:
    order = VECTORS["order"]
    for reverse, name in [(False, "forward"), (True, "reverse")]:
        assert spec_hash_order(order["keys"], crypto.siphash24, reverse) == order[name]
        assert hash_order(order["keys"], crypto.siphash24, reverse=reverse) == order[name]


def test_tables() -> None:
    for case in VECTORS["tables"]:
        encoded = bytes.fromhex(case["encoded"])
        assert spec_encode(case["entries"]) == encoded
        table = TrieTable(
            (i, v, [(f, s) for f, s in pointers]) for i, v, pointers in case["entries"]
        )
        assert table.encode() == encoded
        decoded = TrieTable.decode(encoded)
        assert [[i, v, [list(p) for p in ps]] for i, v, ps in decoded] == case["entries"]


def test_invalid_and_limited_tables() -> None:
    for case in VECTORS["invalid_tables"]:
        with raises_code("trie_decode") as failure:
            TrieTable.decode(bytes.fromhex(case["encoded"]))
        assert not isinstance(failure.value, TrieLimitError), case["why"]
    for case in VECTORS["limited_tables"]:
        data = bytes.fromhex(case["encoded"])
        TrieTable.decode(data)
        with raises_code("trie_limit"):
            TrieTable.decode(data, limits=TrieLimits(**case["limits"]))


# --- histories ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VectorNode:
    key: str
    path: bytes
    trie: TrieTable
    feed: int
    seq: int
    clock: tuple[int, ...]
    deleted: bool


def recorded_nodes(history: dict[str, Any]) -> dict[tuple[int, int], VectorNode]:
    hash_fn = HASHES[history["hash"]]
    return {
        (n["feed"], n["seq"]): VectorNode(
            n["key"],
            key_path(n["key"], hash_fn),
            TrieTable.decode(bytes.fromhex(n["trie"])),
            n["feed"],
            n["seq"],
            tuple(n["clock"]),
            n["deleted"],
        )
        for n in history["nodes"]
    }


@pytest.mark.parametrize("history", HISTORIES, ids=[h["name"][:40] for h in HISTORIES])
def test_replaying_the_steps_builds_the_recorded_tables(history: dict[str, Any]) -> None:
    hash_fn = HASHES[history["hash"]]
    writers = history["writers"]
    feeds: list[list[VectorNode]] = [[] for _ in range(writers)]
    known = [[0] * writers for _ in range(writers)]

    def load(pointer: Pointer) -> VectorNode:
        feed, seq = pointer
        return feeds[feed][seq]

    def heads(writer: int) -> list[VectorNode]:
        tips = [feeds[f][n - 1] for f, n in enumerate(known[writer]) if n]
        return [tip for tip in tips if not any(seen_by(tip, other) for other in tips)]

    for op, a, b in history["steps"]:
        if op == "sync":
            merged = [max(x, y) for x, y in zip(known[a], known[b], strict=True)]
            known[a], known[b] = merged, list(merged)
            continue
        key = normalize(b)
        path = key_path(key, hash_fn)
        seq = len(feeds[a])
        clock = list(known[a])
        clock[a] = seq + 1
        table = prepare_put(key, path, heads(a), load)
        feeds[a].append(VectorNode(key, path, table, a, seq, tuple(clock), op == "del"))
        known[a][a] = seq + 1
    replayed = [node for feed in feeds for node in feed]
    assert len(replayed) == len(history["nodes"])
    for node, recorded in zip(replayed, history["nodes"], strict=True):
        assert (node.feed, node.seq, node.key) == (
            recorded["feed"],
            recorded["seq"],
            recorded["key"],
        )
        assert list(node.clock) == recorded["clock"]
        assert node.trie.encode().hex() == recorded["trie"]
    assert [[[n.feed, n.seq] for n in heads(w)] for w in range(writers)] == history["heads"]


def model_current(past: list[VectorNode], key: str) -> list[VectorNode]:
    same = [n for n in past if n.key == key]
    return sorted(
        (n for n in same if not any(o is not n and o.clock[n.feed] > n.seq for o in same)),
        key=lambda n: (n.feed, n.seq),
    )


def model_list(
    past: list[VectorNode], hash_fn: Callable[[bytes], bytes], prefix: str, options: dict[str, bool]
) -> list[list[Any]]:
    base = spec_digits(prefix, hash_fn)
    selected = []
    for key in {n.key for n in past}:
        digits = spec_digits(key, hash_fn)
        if digits[: len(base)] != base:
            continue
        if prefix and key != prefix and not key.startswith(prefix + "/"):
            continue
        if (options.get("gt") or not prefix) and len(digits) == len(base):
            continue
        current = model_current(past, key)
        if current and not all(n.deleted for n in current):
            selected.append((digits, key, current))
    if options.get("recursive") is False:
        first: dict[tuple[int, ...], tuple[list[int], str, list[VectorNode]]] = {}
        for entry in selected:
            group = tuple(entry[0][: len(base) + 32])
            if group not in first or entry[:2] < first[group][:2]:
                first[group] = entry
        selected = [(list(group), key, nodes) for group, (_, key, nodes) in first.items()]
    selected.sort(key=lambda entry: (entry[0], entry[1]))
    if options.get("reverse"):
        selected.sort(key=lambda entry: entry[0], reverse=True)
    return [[key, [[n.feed, n.seq] for n in nodes]] for _, key, nodes in selected]


@pytest.mark.parametrize("history", HISTORIES, ids=[h["name"][:40] for h in HISTORIES])
def test_lookups_and_listings_follow_the_causal_model(history: dict[str, Any]) -> None:
    hash_fn = HASHES[history["hash"]]
    nodes = recorded_nodes(history)

    def load(pointer: Pointer) -> VectorNode:
        return nodes[pointer]

    def heads_of(writer: int) -> list[VectorNode]:
        return [nodes[f, s] for f, s in history["heads"][writer]]

    def past_of(writer: int) -> list[VectorNode]:
        heads = heads_of(writer)
        return [n for n in nodes.values() if any(n is h or seen_by(n, h) for h in heads)]

    for case in history["gets"]:
        key = case["key"]
        expected = [[n.feed, n.seq] for n in model_current(past_of(case["writer"]), key)]
        assert case["nodes"] == expected, case
        found = lookup(key_path(key, hash_fn), key, heads_of(case["writer"]), load)
        assert [[n.feed, n.seq] for n in found] == expected
    for case in history["lists"]:
        expected = model_list(past_of(case["writer"]), hash_fn, case["prefix"], case["options"])
        assert case["entries"] == expected, case
        entries = iterate(
            case["prefix"], heads_of(case["writer"]), load, hash_fn, **case["options"]
        )
        assert [[k, [[n.feed, n.seq] for n in ns]] for k, ns in entries] == expected
