"""Reading the current database from its derived index: get, list and range.

:class:`IndexReads` answers a writable database's ``get``, ``list`` and ``range`` from the
key-order index (``hyperdb.model.index``), which every commit keeps in step with the tries: a get
reads one row, a range scans rows in key order, a listing reads the keys under a prefix and sorts
them into trie hash order. A listing too large to sort in memory is answered by walking the tries
of the current heads (``hyperdb.model.trie_reads``) instead; both give the same answers.
:class:`CheckoutReads` answers a checkout's ``get`` from the index too, when the key's current
nodes are all in the checkout's past; :class:`ViewReads` a read-only view's. Arguments are
already checked (normalized keys, checked bounds).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from hyperdb.feed import Feed
from hyperdb.model import index
from hyperdb.model.context import DatabaseContext
from hyperdb.model.node import Node
from hyperdb.model.reader import NodeReader
from hyperdb.model.state import State, stored_heads
from hyperdb.model.trie_reads import TrieReads
from hyperdb.storage import ReadTxn
from trie import Pointer

Listing = Iterator[tuple[str, list[Node]]]


class IndexReads:
    """The reads of the current database, from its index."""

    def __init__(self, context: DatabaseContext, reader: NodeReader) -> None:
        self._context = context
        self._reader = reader

    def get(self, key: str) -> list[Node]:
        self._context.check_open()
        if not key:
            return []  # the root key is never written
        with self._context.storage.read() as tx:  # a snapshot: no lock, writers do not block
            return self.get_in(tx, key)

    def get_in(self, tx: ReadTxn, key: str) -> list[Node]:
        """:meth:`get` of a non-empty ``key`` in the open transaction ``tx``."""
        row_key = index.row_key(key.encode("utf-8"))
        row = tx.get("index", row_key)
        if row is None:
            return []
        return self._reader.answer_row(tx, self._context.state, key, row_key, row)

    def list(self, prefix: str, recursive: bool, reverse: bool, gt: bool) -> Listing:
        """The keys under ``prefix`` sorted into hash order, each answered from its row; through
        the tries when there are too many to sort in memory."""
        self._context.check_open()
        state = self._context.state
        with self._context.storage.read() as tx:
            keys = index.listing(
                tx, prefix, recursive=recursive, reverse=reverse, exclude_base=gt or not prefix
            )
            if keys is not None:
                get = tx.get
                answer_row = self._reader.answer_row
                key_of_row = index.key_of_row
                for row_key in keys:
                    row = get("index", row_key)
                    assert row is not None  # listed in this transaction
                    key = key_of_row(row_key, row)
                    answer = answer_row(tx, state, key, row_key, row)
                    if answer:
                        yield key, answer
                return
        walk = TrieReads(self._context, self._reader, state, state.heads)
        yield from walk.list(prefix, recursive, reverse, gt)

    def range(self, bounds: dict[str, str], reverse: bool, limit: int | None) -> Listing:
        """Keys in sorted order within ``bounds`` (at most one lower and one upper), at most
        ``limit`` of them."""
        self._context.check_open()
        if limit == 0:
            return
        low = bounds.get("gt", bounds.get("gte"))
        high = bounds.get("lt", bounds.get("lte"))
        start = index.row_key(low.encode("utf-8"))[: index.INLINE_KEY_BYTES] if low else None
        stop = None
        if high is not None:
            high_bytes = high.encode("utf-8")
            if len(high_bytes) > index.INLINE_KEY_BYTES:  # rows sharing the prefix: filter below
                stop = high_bytes[: index.INLINE_KEY_BYTES] + b"\xff" * 17
            else:
                stop = high_bytes + (b"\x00" if "lte" in bounds else b"")
        if stop == b"":
            return
        count = 0
        state = self._context.state
        in_bounds = index.in_bounds
        with self._context.storage.read() as tx:
            rows = tx.scan("index", start=start, stop=stop, reverse=reverse)
            answer_row = self._reader.answer_row
            for key, row_key, row in index.sort_long_keys(rows, reverse):
                if bounds and not in_bounds(key, bounds):
                    continue
                answer = answer_row(tx, state, key, row_key, row)
                if not answer:
                    continue
                yield key, answer
                count += 1
                if limit is not None and count >= limit:
                    return


class ViewReads(TrieReads):
    """The reads of a read-only view, as of the heads it saw when opened, while another process
    may write the store: a ``get`` reads the index while the store's heads are still the view's
    (no commit since: the index then answers exactly what the tries of those heads do, since
    the applied nodes are those the heads have seen), and walks the tries once they moved on."""

    def __init__(
        self,
        context: DatabaseContext,
        reader: NodeReader,
        state: State,
        heads: Sequence[Pointer],
        local: Feed,
    ) -> None:
        super().__init__(context, reader, state, heads)
        self._index = IndexReads(context, reader)
        self._local = local

    def get(self, key: str) -> list[Node]:
        self._context.check_open()
        if key:
            with self._context.storage.read() as tx:
                local = self.state.local_id
                if stored_heads(tx, local, self._local.head(tx).length) == self.heads:
                    return self._index.get_in(tx, key)
        return super().get(key)


#: Answers a checkout keeps (by key) for repeated gets.
ANSWERS_KEPT = 4096


class CheckoutReads(TrieReads):
    """The reads of a checkout or snapshot (fixed heads) of a database with an index: a ``get``
    answers from the key's index row when every node in it is in the past of the heads, and
    walks the tries otherwise. The row holds the key's current nodes, the maximal ones of all
    its applied nodes; every applied node of the key is one of them or seen by one; so when they
    are all in the heads' past, they are also the maximal nodes of that past: the answer as of
    the heads. While a revocation is in force every get walks the tries (a conservative rule:
    a checkout names applied nodes only, whose past the index covers, but a revocation rebuilds
    rows in ways this reasoning does not follow step by step)."""

    def __init__(
        self,
        context: DatabaseContext,
        reader: NodeReader,
        state: State,
        heads: Sequence[Pointer],
    ) -> None:
        super().__init__(context, reader, state, heads)
        self._past: dict[int, int] | None = None
        self._answers: dict[str, tuple[Node, ...]] = {}

    def at(self, heads: Sequence[Pointer]) -> CheckoutReads:
        return CheckoutReads(self._context, self._reader, self.state, heads)

    def _past_of(self, tx: ReadTxn) -> dict[int, int]:
        """Feed id -> how many of its blocks the heads have seen (the union of their clocks)."""
        if self._past is None:
            past: dict[int, int] = {}
            for node in self.head_nodes(tx):
                for feed, length in node.clock.items():
                    if length > past.get(feed, 0):
                        past[feed] = length
            self._past = past
        return self._past

    def get(self, key: str) -> list[Node]:
        """The key's nodes as of the heads; answers are kept (a checkout never changes), the
        latest :data:`ANSWERS_KEPT` keys' (nodes are immutable; each call gets its own list)."""
        self._context.check_open()
        if not key:
            return []
        answer = self._answers.get(key)
        if answer is None:
            answer = tuple(self._get(key))
            if len(self._answers) >= ANSWERS_KEPT:
                self._answers.clear()
            self._answers[key] = answer
        return list(answer)

    def _get(self, key: str) -> list[Node]:
        state = self._context.state
        if not (state.has_revocations or self.state.has_revocations):
            with self._context.storage.read() as tx:
                row_key = index.row_key(key.encode("utf-8"))
                row = tx.get("index", row_key)
                if row is None:
                    return []  # no node of the key was ever applied
                past = self._past_of(tx)
                single = index.decode_single(row)
                if single is not None:  # the usual row: one node, its value inline
                    within = single[1] < past.get(single[0], 0)
                else:
                    entries = index.decode_row(row_key, row)[1]
                    within = all(entry.seq < past.get(entry.feed, 0) for entry in entries)
                if within:
                    return self._reader.answer_row(tx, state, key, row_key, row)
        return super().get(key)
