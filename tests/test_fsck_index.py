"""``verify`` compares the derived index with the tries, each read from its own source: a missing,
a changed and an extra index row are each reported by key, through the API and by
``hyperdb verify`` (exit code 5).

The defect this pins: ``verify`` once took the keys "the tries hold" from ``Database.list``, which
answers from the index, so a deleted index row left both sides of the comparison without the key
and ``verify`` said ok while ``get`` answered ``[]`` for a key the tries hold.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import hyperdb
from hyperdb.cli import main
from hyperdb.model import index
from hyperdb.storage import WriteTxn


def _damage(path: Path, change: Callable[[WriteTxn], None]) -> None:
    with hyperdb.open(path) as db, db._context.storage.write() as tx:
        change(tx)


def _row_key(key: str) -> bytes:
    return index.row_key(key.encode("utf-8"))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "db"
    with hyperdb.open(path) as db:
        db.batch([{"key": f"k/{i}", "value": b"value %d" % i} for i in range(20)])
        db.put("k/3", b"newer")
        assert db.verify().ok
    return path


def _index_damage(path: Path) -> list[tuple[str | None, str]]:
    with hyperdb.open(path) as db:
        report = db.verify()
    return [(d.key, d.message) for d in report.damage if d.kind == "index"]


def test_a_missing_index_row_is_reported_by_key(store: Path) -> None:
    """Mutation tried: taking the tries' keys from ``Database.list`` again (caught: ok)."""
    _damage(store, lambda tx: tx.delete("index", _row_key("k/7")))
    with hyperdb.open(store) as db:
        assert db.get("k/7") == []  # what the user sees: the key is gone
        assert [n.value for n in db.snapshot().get("k/7")] == [b"value 7"]  # the tries hold it
    [(key, message)] = _index_damage(store)
    assert key == "k/7" and "no row" in message


def test_a_changed_index_row_is_reported_by_key(store: Path) -> None:
    def change(tx: WriteTxn) -> None:
        row = tx.get("index", _row_key("k/3"))
        assert row is not None
        [entry] = index.decode_row(_row_key("k/3"), row)[1]
        other = index.entry(entry.feed, entry.seq - 1, False, b"value 3")  # another node
        tx.put("index", _row_key("k/3"), index.encode_row("k/3", [other]))

    _damage(store, change)
    [(key, message)] = _index_damage(store)
    assert key == "k/3" and "disagree" in message


def test_an_extra_index_row_is_reported_by_key(store: Path) -> None:
    def change(tx: WriteTxn) -> None:
        row = tx.get("index", _row_key("k/1"))
        assert row is not None
        tx.put("index", _row_key("k/1x"), row)

    _damage(store, change)
    damage = _index_damage(store)
    assert [key for key, _ in damage] == ["k/1x"] and "which the tries do not" in damage[0][1]


def test_the_command_exits_5_and_names_the_key(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(store)]) == 0
    capsys.readouterr()
    _damage(store, lambda tx: tx.delete("index", _row_key("k/12")))
    assert main(["verify", str(store)]) == 5
    out = capsys.readouterr()
    assert "'k/12'" in out.out + out.err
