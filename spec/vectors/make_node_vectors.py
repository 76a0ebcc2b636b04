"""Regenerate ``node.json``: python spec/vectors/make_node_vectors.py > spec/vectors/node.json

Single records of every shape (format 2, ``spec/node.md`` section 2), and a worked feed: the
records of one writer's feed over a history of appends (what each append had seen, the feeds list,
its grants and revokes), written by the implementation's writer rule
(``hyperdb.model.writer.encode_records``; tries left empty, as the record format does not read
them), with each node's context as the history defines it. ``tests/test_spec_node.py``
reconstructs every context from the records alone, following section 2.3, and compares.
"""

from __future__ import annotations

import json
from typing import Any

from hyperdb.model import record
from hyperdb.model.record import (
    KIND_GRANT,
    KIND_REVOKE,
    ROLE_OWNER,
    ROLE_SEEDER,
    Header,
    NodeRecord,
    SystemOp,
)
from hyperdb.model.state import NO_CONTEXT, ContextNode
from hyperdb.model.writer import encode_records

KEY_A = bytes(range(32))  # the database key
KEY_B = bytes(range(32, 64))  # the writer of the worked feed
KEY_C = bytes(range(64, 96))
KEY_D = bytes(range(96, 128))

BLOB_1 = bytes(range(32))
BLOB_2 = bytes(range(32, 64))
CASES = [
    (
        "a put, its writer's latest context node being seq 1",
        NodeRecord("a/b", b"value", False, b"", {}),
    ),
    (
        "a put referencing two blobs (r, format 3), the latest context node being seq 5",
        NodeRecord(
            "photos/1",
            b"caption",
            False,
            b"",
            {},
            context_seq=5,
            blobs=((BLOB_1, 65_537), (BLOB_2, 0)),
        ),
    ),
    (
        "a first node referencing a blob, with no value",
        NodeRecord("f", None, False, b"", {0: 2}, (KEY_A, KEY_B), blobs=((BLOB_2, 1 << 40),)),
    ),
    (
        "a put with a trie, the latest context node being seq 9",
        NodeRecord("a/b", b"\x00\x01", False, bytes.fromhex("00010000"), {}, context_seq=9),
    ),
    ("a put without a value", NodeRecord("x", None, False, b"", {}, context_seq=300)),
    ("a deletion", NodeRecord("hello/world", None, True, b"", {}, context_seq=2)),
    (
        "first node of a writer: its whole feeds list and clock",
        NodeRecord("k", b"v", False, b"", {0: 4}, (KEY_A, KEY_B)),
    ),
    (
        "a context node (ordinal 6: base ordinal 4 at seq 8, latest system node seq 6)",
        NodeRecord(
            "k", b"v", False, b"", {2: 4, 3: 2}, (KEY_D,), ordinal=6, base_seq=8, system_seq=6
        ),
    ),
    (
        "a context node whose base is ordinal 0 (ordinal 8): the whole list again",
        NodeRecord("k", b"v", False, b"", {0: 7}, (KEY_A, KEY_B), ordinal=8, system_seq=3),
    ),
    (
        "a grant of role writer for the whole database (authorize)",
        NodeRecord("", None, False, b"", {0: 3}, (KEY_A, KEY_B), KIND_GRANT, (KEY_C,)),
    ),
    (
        "a grant of role writer within two prefixes",
        NodeRecord(
            "",
            None,
            False,
            b"",
            {},
            None,
            KIND_GRANT,
            (KEY_C, KEY_D),
            prefixes=("docs", "users/c"),
            ordinal=3,
            base_seq=2,
        ),
    ),
    (
        "a grant of role owner",
        NodeRecord("", None, False, b"", {}, (KEY_C,), KIND_GRANT, (KEY_D,), ROLE_OWNER, ordinal=2),
    ),
    (
        "a grant of role seeder",
        NodeRecord(
            "",
            None,
            False,
            b"",
            {},
            None,
            KIND_GRANT,
            (KEY_D,),
            ROLE_SEEDER,
            ordinal=5,
            base_seq=4,
            system_seq=3,
        ),
    ),
    (
        "a revoke",
        NodeRecord(
            "",
            None,
            False,
            b"",
            {},
            None,
            KIND_REVOKE,
            (KEY_D,),
            ordinal=5,
            base_seq=8,
            system_seq=6,
        ),
    ),
]


def node_fields(node: NodeRecord) -> dict[str, Any]:
    return {
        "key": node.key,
        "value": None if node.value is None else node.value.hex(),
        "deleted": node.deleted,
        "trie": node.trie.hex(),
        "kind": node.kind,
        "authorized": [a.hex() for a in node.authorized],
        "role": node.role,
        "prefixes": None if node.prefixes is None else list(node.prefixes),
        "clock": {str(k): v for k, v in node.clock.items()},
        "feeds": None if node.feeds is None else [f.hex() for f in node.feeds],
        "ordinal": node.ordinal,
        "base": node.base_seq,
        "system": node.system_seq,
        "context": node.context_seq,
        "blobs": [[blob_id.hex(), size] for blob_id, size in node.blobs],
    }


# The worked feed: writer B's appends. Each: what it had seen (the full clock of other feeds, by
# key), its feeds list, its system operations, the keys of its entries. Feed ids here are the
# feed numbers (the list's order), so the writer needs no renumbering.
FEED_IDS = {KEY_A: 0, KEY_B: 1, KEY_C: 2, KEY_D: 3}
APPENDS: list[tuple[dict[bytes, int], tuple[bytes, ...], tuple[SystemOp, ...], list[str]]] = [
    ({}, (KEY_A, KEY_B), (), ["a"]),
    ({}, (KEY_A, KEY_B), (), ["b"]),
    ({KEY_A: 3}, (KEY_A, KEY_B), (), ["c"]),
    ({KEY_A: 3}, (KEY_A, KEY_B), (), ["d", "e"]),
    (
        {KEY_A: 3, KEY_C: 2},
        (KEY_A, KEY_B, KEY_C),
        (SystemOp(KIND_GRANT, (KEY_D,), prefixes=("docs",)),),
        ["f"],
    ),
    ({KEY_A: 5, KEY_C: 2}, (KEY_A, KEY_B, KEY_C), (), ["g"]),
    ({KEY_A: 5, KEY_C: 2}, (KEY_A, KEY_B, KEY_C), (SystemOp(KIND_REVOKE, (KEY_D,)),), []),
    ({KEY_A: 5, KEY_C: 2}, (KEY_A, KEY_B, KEY_C), (), ["h"]),
    ({KEY_A: 5, KEY_C: 4, KEY_D: 2}, (KEY_A, KEY_B, KEY_C, KEY_D), (), ["i"]),
    (
        {KEY_A: 5, KEY_C: 4, KEY_D: 2},
        (KEY_A, KEY_B, KEY_C, KEY_D),
        (SystemOp(KIND_GRANT, (KEY_C,), ROLE_OWNER),),
        [],
    ),
    ({KEY_A: 7, KEY_C: 4, KEY_D: 2}, (KEY_A, KEY_B, KEY_C, KEY_D), (), ["j"]),
    ({KEY_A: 7, KEY_C: 4, KEY_D: 2}, (KEY_A, KEY_B, KEY_C, KEY_D), (), ["k", "l"]),
]


def worked_feed() -> dict[str, Any]:
    blocks: list[bytes] = []
    contexts: list[dict[str, Any]] = []
    latest = NO_CONTEXT
    recorded: dict[int, tuple[ContextNode, dict[int, int]]] = {}
    previous: tuple[dict[bytes, int], tuple[bytes, ...]] | None = None
    for seen_keys, keys, system, entries in APPENDS:
        first = len(blocks) + 1
        seen = {FEED_IDS[k]: n for k, n in seen_keys.items()}
        ops = [*(("", None, False) for _ in system), *((e, b"v", False) for e in entries)]
        new_blocks, new_contexts = encode_records(
            ops,
            [b""] * len(ops),
            system,
            first,
            None,
            seen,
            keys,
            (seen_keys, keys) != previous,
            latest,
            lambda ordinal: recorded[ordinal][0],
            lambda node: recorded[node.ordinal][1],
        )
        for node in new_contexts:
            recorded[node.ordinal] = (node, seen)
            latest = node
        blocks.extend(new_blocks)
        for _ in ops:
            contexts.append(
                {
                    "clock": {k.hex(): n for k, n in seen_keys.items()},
                    "feeds": [k.hex() for k in keys],
                }
            )
        previous = (seen_keys, keys)
    return {
        "description": "Writer B's feed (blocks 1, 2, ...; block 0 is the header), and each "
        "node's context as the history defines it: the full clock of the other feeds by "
        "writer key, and the feeds list.",
        "writer": KEY_B.hex(),
        "blocks": [block.hex() for block in blocks],
        "contexts": contexts,
    }


def main() -> None:
    out = {
        "description": "Node and header records of spec/node.md, format 3 (canonical CBOR).",
        "header": {
            "database_key": KEY_A.hex(),
            "encoded": record.encode_header(Header(KEY_A)).hex(),
        },
        "nodes": [
            {"name": name, "fields": node_fields(node), "encoded": record.encode_node(node).hex()}
            for name, node in CASES
        ],
        "feed": worked_feed(),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
