"""Property test: random puts, deletes, batches, reads, listings, ranges and reopens against a dict
model, on LMDB and in memory; every get and listing is answered by the derived index and by the
trie, and both must match the model."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import hyperdb
import trie
from hyperdb.primitives import crypto

COMPONENTS = st.sampled_from(["a", "b", "c", "dd", "é", "x y"])
KEYS = st.lists(COMPONENTS, min_size=1, max_size=3).map("/".join)
VALUES = st.binary(max_size=12)


class DatabaseModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, bytes] = {}
        self.directory: Path | None = None
        self.db: hyperdb.Database | None = None

    @initialize(on_disk=st.booleans())
    def open_database(self, on_disk: bool) -> None:
        if on_disk:
            self.directory = Path(tempfile.mkdtemp(prefix="hyperdb-model-"))
            self.db = hyperdb.open(self.directory / "db", durable=False)
        else:
            self.db = hyperdb.open(memory=True)

    @property
    def database(self) -> hyperdb.Database:
        assert self.db is not None
        return self.db

    @rule(key=KEYS, value=VALUES)
    def put(self, key: str, value: bytes) -> None:
        node = self.database.put(key, value)
        assert node.value == value
        self.model[key] = value

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        assert self.database.delete(key).deleted
        self.model.pop(key, None)

    @rule(ops=st.lists(st.tuples(st.booleans(), KEYS, VALUES), max_size=6))
    def batch(self, ops: list[tuple[bool, str, bytes]]) -> None:
        nodes = self.database.batch(
            [{"type": "put" if put else "del", "key": k, "value": v} for put, k, v in ops]
        )
        assert len(nodes) == len(ops)
        for put, key, value in ops:
            if put:
                self.model[key] = value
            else:
                self.model.pop(key, None)

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        expected = [self.model[key]] if key in self.model else []
        assert [n.value for n in self.database.get(key)] == expected
        assert [n.value for n in self.database.snapshot().get(key)] == expected

    @rule(prefix=st.sampled_from(["", "a", "b", "a/b", "dd"]), reverse=st.booleans())
    def list_prefix(self, prefix: str, reverse: bool) -> None:
        keys = [k for k in self.model if trie.is_under(k, prefix)]
        expected = trie.hash_order(keys, crypto.siphash24, reverse=reverse)
        listed = list(self.database.list(prefix, reverse=reverse))
        assert [k for k, _ in listed] == expected
        assert all([n.value for n in nodes] == [self.model[k]] for k, nodes in listed)

    @rule(
        prefix=st.sampled_from(["", "a", "b", "a/b", "dd", "é/x y"]),
        recursive=st.booleans(),
        reverse=st.booleans(),
        gt=st.booleans(),
    )
    def list_index_matches_trie(
        self, prefix: str, recursive: bool, reverse: bool, gt: bool
    ) -> None:
        """The database lists from its index; a snapshot walks the trie: same answers."""
        options = {"recursive": recursive, "reverse": reverse, "gt": gt}
        listed = list(self.database.list(prefix, **options))
        assert listed == list(self.database.snapshot().list(prefix, **options))
        if recursive and not gt:
            assert {k for k, _ in listed} == {k for k in self.model if trie.is_under(k, prefix)}

    @rule(
        low=st.none() | KEYS,
        high=st.none() | KEYS,
        reverse=st.booleans(),
        limit=st.none() | st.integers(0, 5),
    )
    def range(self, low: str | None, high: str | None, reverse: bool, limit: int | None) -> None:
        keys = sorted(
            (
                k
                for k in self.model
                if (low is None or k.encode() >= low.encode())
                and (high is None or k.encode() < high.encode())
            ),
            key=lambda k: k.encode(),
            reverse=reverse,
        )
        if limit is not None:
            keys = keys[:limit]
        got = list(self.database.range(gte=low, lt=high, reverse=reverse, limit=limit))
        assert [k for k, _ in got] == keys
        assert [n[0].value for _, n in got] == [self.model[k] for k in keys]

    @precondition(lambda self: self.directory is not None)
    @rule()
    def reopen(self) -> None:
        assert self.directory is not None
        self.database.close()
        self.db = hyperdb.open(self.directory / "db", durable=False)

    @invariant()
    def index_matches_model(self) -> None:
        if self.db is None:
            return
        assert {k: n[0].value for k, n in self.database.range()} == self.model

    def teardown(self) -> None:
        if self.db is not None:
            self.db.close()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


DatabaseModel.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestDatabaseModel = DatabaseModel.TestCase
