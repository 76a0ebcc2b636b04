"""Hostile writers against the governance rules (``spec/node.md`` 5.3-5.5), for tests: writes a
modified client would sign, a forged revocation built record by record, TCP syncs bounded by a
timeout, and what a replica has applied (as opposed to what it stores).

A hostile writer holds a genuine key. What the local API refuses it (a write without a grant,
outside its scope, a grant by a writer that is no owner, a revocation of the database key) it can
still sign: :func:`unchecked` switches the permission check of the write path off, as a modified
client would; :func:`forged_revocation` goes further and builds the record itself
(:func:`hyperdb.model.record.encode_node`) and signs it (``tests/helpers/forged_feed.py``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import hyperdb
from hyperdb.feed.feed import Proof
from hyperdb.model import record
from hyperdb.replication import net
from tests.helpers.forged_feed import resign
from tests.helpers.storage_dump import dump

HOST = "127.0.0.1"
TIMEOUT = 10.0
#: The tables a replica derives from the nodes it applies (the feeds it stores aside): what must
#: not change when nothing new may be applied.
APPLIED_TABLES = ("applied", "auth", "index")


@contextmanager
def unchecked() -> Iterator[None]:
    """Writes as a modified client makes them: the local permission check
    (``hyperdb.model.writer.check_permission``) switched off; everything else (the records, the
    signature) is genuine."""
    with mock.patch("hyperdb.model.writer.check_permission"):
        yield


def tcp_sync(client: hyperdb.Database, server: hyperdb.Database) -> net.SyncResult:
    """One non-live sync of ``client`` with ``server`` served on loopback, both ways, bounded by
    :data:`TIMEOUT` (a stall raises)."""
    with net.serve_in_background(server, HOST, 0, timeout=TIMEOUT) as served:
        result = net.sync_blocking(client, served.host, served.port, timeout=TIMEOUT)
    assert result.ok
    return result


def values(db: hyperdb.Database, key: str) -> list[Any]:
    """The values of ``key``'s current nodes, by writer key."""
    return [node.value for node in db.get(key)]


def contents(db: hyperdb.Database) -> list[tuple[str, list[Any]]]:
    """Every key with its current values, sorted."""
    return sorted((key, sorted(node.value for node in nodes)) for key, nodes in db.list(""))


def applied_rows(db: hyperdb.Database) -> dict[str, list[tuple[bytes, bytes]]]:
    """The rows of :data:`APPLIED_TABLES` and the ``meta`` rows of the heads and the cut-offs:
    what the replica has applied, byte for byte (what it stores of the feeds aside)."""
    rows = dump(db._context.storage)
    applied = {table: rows[table] for table in APPLIED_TABLES}
    applied["meta"] = [(k, v) for k, v in rows["meta"] if k in (b"heads", b"cutoffs")]
    return applied


def applied_length(db: hyperdb.Database, writer: bytes) -> int:
    """Blocks of ``writer``'s feed applied here (header included; 0 when not held)."""
    info = [i for i in db.writers_info() if i.key == writer]
    return info[0].applied if info else 0


def own_blocks(db: hyperdb.Database) -> list[bytes]:
    """Every block of ``db``'s own feed, header first."""
    return [db._local.get(seq) for seq in range(db._local.length)]


def forged_revocation(
    owner_path: Path, scratch: Path, targets: tuple[bytes, ...]
) -> tuple[list[bytes], Proof]:
    """The feed of the owner whose directory is ``owner_path`` (closed) with one more node: a
    revocation of ``targets`` that the local API would never write (naming the database key,
    say), and a genuine proof for it.

    The record is built, not written: a copy of the directory (``scratch``: the same key, as a
    thief holding it) writes a genuine revocation of a throwaway key, whose record (context
    fields and trie: a node of key ``""`` over the same heads) is then changed to name ``targets``
    (:func:`record.encode_node`) and the whole feed signed again by the owner's key. The owner's
    own directory is left as it was."""
    shutil.copytree(owner_path, scratch)
    with hyperdb.open(scratch) as thief:
        throwaway = hyperdb.open(memory=True, key=thief.key)
        try:
            template = thief.revoke(throwaway.local_key)
        finally:
            throwaway.close()
        blocks = own_blocks(thief)
        assert template.seq == len(blocks) - 1
        node = record.decode_node(blocks[-1])
        assert node.kind == record.KIND_REVOKE and node.authorized == (throwaway.local_key,)
        forged = record.encode_node(node._replace(authorized=targets))
        blocks[-1] = forged
        proof = resign(thief, blocks)
        assert isinstance(proof, Proof)
        return blocks, proof


__all__ = [
    "APPLIED_TABLES",
    "HOST",
    "TIMEOUT",
    "applied_length",
    "applied_rows",
    "contents",
    "forged_revocation",
    "own_blocks",
    "tcp_sync",
    "unchecked",
    "values",
]
