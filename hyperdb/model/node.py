"""Nodes: the public view callers get, and the decoded form the database and the trie work on.

:class:`Node` is what ``put``, ``get``, ``list`` and friends return: the key, the decoded value,
whether it is a deletion, which writer wrote it (its public key), where (``seq`` in that writer's
feed, the header being seq 0) and its vector clock by writer key. :class:`StoredNode` is the
internal form: it satisfies the ``trie.Node`` protocol with feeds numbered by their local storage
ids, and is immutable, so decoded nodes can be cached.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trie
from hyperdb.errors import CorruptionError
from hyperdb.primitives import crypto
from trie import TrieTable


@dataclass(frozen=True, slots=True)
class Node:
    """One write: ``value`` is ``None`` for deletions (``deleted`` is then true)."""

    key: str
    value: Any
    deleted: bool
    writer: bytes
    seq: int
    clock: Mapping[bytes, int]
    authorizes: tuple[bytes, ...] = ()
    """For a grant (key ``""``, no value): the writer keys it granted."""
    kind: str = "entry"
    """``"entry"`` (a put or a deletion), ``"grant"`` or ``"revoke"`` (system nodes)."""
    role: str | None = None
    """For a grant: the role it gives, ``"owner"``, ``"writer"`` or ``"seeder"``."""
    prefixes: tuple[str, ...] | None = None
    """For a grant: the key prefixes it covers (``None``: the whole database)."""
    revokes: tuple[bytes, ...] = ()
    """For a revocation (key ``""``, no value): the writer keys it revoked."""
    blobs: tuple[Any, ...] = ()
    """The blobs the put references (``hyperdb.BlobRef``: id and size), in ascending order of
    id: read them with ``Database.open_blob`` or ``get_blob``."""

    def __repr__(self) -> str:
        if self.kind != "entry":
            keys = self.authorizes or self.revokes
            what = f"{self.kind}={','.join(key.hex()[:8] for key in keys)}"
        else:
            what = "deleted" if self.deleted else f"value={self.value!r}"
        return f"Node(key={self.key!r}, {what}, writer={self.writer.hex()[:8]}, seq={self.seq})"


def json_value(value: Any) -> Any:
    """A value in JSON: UTF-8 text as a string, other bytes as ``{"hex": ...}``."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"hex": value.hex()}
    return value


def node_json(node: Node) -> dict[str, Any]:
    """A node in JSON for scripts: its value as :func:`json_value` gives it, keys in hex."""
    data: dict[str, Any] = {
        "key": node.key,
        "value": json_value(node.value),
        "deleted": node.deleted,
        "writer": node.writer.hex(),
        "seq": node.seq,
        "clock": {writer.hex(): length for writer, length in sorted(node.clock.items())},
    }
    if node.kind != "entry":
        data["kind"] = node.kind
    if node.kind == "grant":
        data["authorizes"] = [key.hex() for key in node.authorizes]
        data["role"] = node.role
        data["prefixes"] = None if node.prefixes is None else list(node.prefixes)
    if node.kind == "revoke":
        data["revokes"] = [key.hex() for key in node.revokes]
    if node.blobs:
        data["blobs"] = [{"id": blob_id.hex(), "size": size} for blob_id, size in node.blobs]
    return data


class StoredNode:
    """A node decoded from its feed block, in local feed-id numbering (the ``trie.Node`` view).

    Immutable. ``path`` and ``trie`` are computed on first use: ``get`` and ``range`` never need
    them, and decoding a trie table costs more than the rest of the node. They are slots filled
    by :meth:`__getattr__` the first time they are read while unset, so every later read (the
    trie walks read them for every node they visit) is a plain attribute read. So is ``clock``
    when it is given as ``None``: the clock of a node that had seen nothing of other feeds,
    ``{feed: seq + 1}``, built only if asked for (a put's walk never asks; cached nodes stay
    smaller).

    ``kind`` is the record's (entry, grant or revoke); ``authorizes`` the keys a grant grants or a
    revoke revokes; ``role`` and ``prefixes`` (``None``: the whole database) a grant's role and
    scope (``hyperdb.model.record``).
    """

    __slots__ = (
        "_feed_map",
        "_trie_data",
        "authorizes",
        "blobs",
        "clock",
        "deleted",
        "feed",
        "key",
        "kind",
        "path",
        "prefixes",
        "role",
        "seq",
        "trie",
        "value",
    )

    path: bytes
    trie: TrieTable
    clock: Mapping[int, int]
    role: int
    prefixes: tuple[str, ...] | None
    blobs: tuple[tuple[bytes, int], ...]

    def __init__(
        self,
        key: str,
        feed: int,
        seq: int,
        clock: Mapping[int, int] | None,
        deleted: bool,
        value: bytes | None,
        kind: int,
        *,
        trie_data: bytes = b"",
        feed_map: Sequence[int] | None = None,
        table: TrieTable | None = None,
        path: bytes | None = None,
        authorizes: tuple[bytes, ...] = (),
        role: int = 0,
        prefixes: tuple[str, ...] | None = None,
        blobs: tuple[tuple[bytes, int], ...] = (),
    ) -> None:
        self.key = key
        self.feed = feed
        self.seq = seq
        if clock is not None:
            self.clock = clock
        self.deleted = deleted
        self.value = value
        self.kind = kind
        self._trie_data = trie_data
        self._feed_map = feed_map
        if table is not None:
            self.trie = table
        if path is not None:
            self.path = path
        self.authorizes = authorizes
        if role:
            self.role = role
        if prefixes is not None:
            self.prefixes = prefixes
        self.blobs = blobs

    def __getattr__(self, name: str) -> bytes | TrieTable | Mapping[int, int] | int | None:
        # Called only for an attribute not set: ``path``, ``trie`` or ``clock`` on first use,
        # ``role`` and ``prefixes`` when they hold the default.
        if name == "role":  # unset: the default, a grant of role writer (0) or no grant
            return 0
        if name == "prefixes":  # unset: the whole database, or no grant
            return None
        if name == "clock":
            clock = self.clock = {self.feed: self.seq + 1}
            return clock
        if name == "path":
            path = self.path = trie.key_path(self.key, crypto.siphash24)
            return path
        if name == "trie":
            try:
                table = TrieTable.decode(self._trie_data, feed_map=self._feed_map)
            except trie.TrieError as exc:
                raise CorruptionError(
                    f"the trie of node {self.seq} of feed {self.feed} is damaged: {exc}"
                ) from exc
            self.trie = table
            return table
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"StoredNode({self.key!r}, feed={self.feed}, seq={self.seq})"
