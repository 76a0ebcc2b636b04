"""The SQLite mirror (``hyperdb.tools.mirror``): rows per key as ``get`` and ``get_one`` see it,
the checkpoint committed with the rows so each change set applies exactly once, both forms of a
change set, and refusing a file that mirrors another database."""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import hyperdb
from hyperdb.api.changes import Change, ChangeSet
from hyperdb.cli import mirror as mirror_cli
from hyperdb.errors import EncodingMismatch, InvalidArgument
from hyperdb.model import change_log
from hyperdb.tools.mirror import Mirror, mirror, rows_of


def change_set(db: hyperdb.Database, since: bytes) -> ChangeSet:
    """The change set from ``since`` to ``db``'s current version, built from ``diff`` (one
    transaction, or several as one merged set)."""
    changes = [Change(key, then, now) for key, now, then in db.diff(since or None)]
    return ChangeSet(db.version(), since, sorted(changes, key=lambda c: c.key))


def written(db: hyperdb.Database, steps: list[Any]) -> list[ChangeSet]:
    """Run each step (a callable writing to ``db``); the change set of each."""
    sets = []
    for step in steps:
        since = db.version()
        step()
        sets.append(change_set(db, since))
    return sets


def plain(rows: list[Any]) -> list[Any]:
    """Rows without the version that wrote them, sorted by key."""
    return sorted(row[:-1] for row in rows)


def test_rows_follow_puts_deletes_and_batches_with_json_values_as_json(tmp_path: Path) -> None:
    db = hyperdb.open(memory=True, value_encoding="json")
    sets = written(
        db,
        [
            lambda: db.put("todo/1", {"title": "milk", "done": False}),
            lambda: db.batch(
                [
                    {"key": "todo/2", "value": {"title": "eggs", "done": True}},
                    {"key": "todo/3", "value": [1, "two", None]},
                    {"type": "del", "key": "todo/1"},
                ]
            ),
            lambda: db.put("todo/3", "text"),
            lambda: db.delete("todo/missing"),
        ],
    )
    with Mirror(tmp_path / "m.sqlite", database=db.key, encoding="json") as mirror:
        assert mirror.checkpoint == b""
        for one in sets:
            assert mirror.apply(one) is True
        assert mirror.checkpoint == db.version()
        assert plain(mirror.rows()) == plain(list(rows_of(db, "json")))
        assert mirror.counts() == (4, 1 + 3 + 1 + 0)  # deleting a missing key changes none
        assert mirror.query("SELECT key FROM entries ORDER BY key") == [("todo/2",), ("todo/3",)]
        done = (
            "SELECT json_extract(value, '$.title') FROM entries WHERE json_extract(value, '$.done')"
        )
        assert mirror.query(done) == [("eggs",)]
        assert mirror.query(
            "SELECT value, conflict, deleted FROM entries WHERE key = 'todo/3'"
        ) == [('"text"', 0, 0)]
        writer, seq = mirror.query("SELECT writer, seq FROM entries WHERE key = 'todo/2'")[0]
        node = db.get("todo/2")[0]
        assert (writer, seq) == (node.writer.hex(), node.seq)
        versions = dict(mirror.query("SELECT key, version FROM entries"))
        assert versions == {"todo/2": sets[1].version.hex(), "todo/3": sets[2].version.hex()}


def test_a_change_set_applies_once_and_a_gap_is_refused_with_nothing_written(
    tmp_path: Path,
) -> None:
    db = hyperdb.open(memory=True, value_encoding="utf-8")
    first, second, third = written(
        db, [lambda: db.put("a", "1"), lambda: db.put("b", "2"), lambda: db.put("a", "3")]
    )
    with Mirror(tmp_path / "m.sqlite", database=db.key, encoding="utf-8", log=True) as mirror:
        assert mirror.apply(first) and mirror.apply(second)
        rows = mirror.rows()
        assert mirror.apply(second) is False  # delivered again: skipped
        with pytest.raises(InvalidArgument):  # from further back: refused, not skipped
            mirror.apply_many([first, second])
    with Mirror(tmp_path / "m.sqlite") as mirror:
        assert mirror.rows() == rows and mirror.counts() == (2, 2)
        with pytest.raises(InvalidArgument, match="does not follow"):
            mirror.apply(ChangeSet(third.version, first.version, third.changes))
        assert mirror.rows() == rows and mirror.checkpoint == second.version
        assert mirror.apply_many([second, third]) == (1, 1, 1)  # one skipped, one applied
        assert [(since, version) for _, since, version, _, _ in mirror.log()] == [
            ("", first.version.hex()),
            (first.version.hex(), second.version.hex()),
            (second.version.hex(), third.version.hex()),
        ]
        assert mirror.query("SELECT value FROM entries WHERE key = 'a'") == [("3",)]


def test_an_old_set_after_the_checkpoint_moved_on_is_refused(tmp_path: Path) -> None:
    db = hyperdb.open(memory=True, value_encoding="utf-8")
    first, second = written(db, [lambda: db.put("a", "1"), lambda: db.put("b", "2")])
    with Mirror(tmp_path / "m.sqlite", database=db.key, encoding="utf-8") as mirror:
        mirror.apply_many([first, second])
        with pytest.raises(InvalidArgument, match="does not follow"):
            mirror.apply(first)  # neither the next set nor the last one applied
        assert mirror.counts() == (2, 2)


def test_a_failing_group_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    db = hyperdb.open(memory=True, value_encoding="utf-8")
    first, second, third = written(
        db, [lambda: db.put("a", "1"), lambda: db.put("b", "2"), lambda: db.put("c", "3")]
    )
    with Mirror(tmp_path / "m.sqlite", database=db.key, encoding="utf-8") as mirror:
        mirror.apply(first)
        with pytest.raises(InvalidArgument):
            mirror.apply_many([second, ChangeSet(third.version, b"\x01" * 33, third.changes)])
        assert mirror.checkpoint == first.version and mirror.counts() == (1, 1)
        assert mirror.query("SELECT key FROM entries") == [("a",)]


def test_conflicts_and_a_deletion_beside_a_put_as_get_and_get_one_see_them(
    tmp_path: Path,
) -> None:
    alice = hyperdb.open(memory=True, value_encoding="json")
    bob = hyperdb.open(memory=True, key=alice.key, value_encoding="json")
    alice.authorize(bob.local_key)
    alice.put("doc", {"v": 0})
    alice.put("gone", 1)
    hyperdb.replicate(alice, bob)
    path = tmp_path / "m.sqlite"
    mirror(alice, path)
    alice.put("doc", {"v": "alice"})
    bob.put("doc", {"v": "bob"})
    alice.put("gone", 2)
    bob.delete("gone")
    hyperdb.replicate(alice, bob)
    assert mirror(alice, path).sets == 3  # alice's two puts, then what bob's message applied
    with Mirror(path) as target:
        assert plain(target.rows()) == plain(list(rows_of(alice, "json")))
        rows = {row[0]: row for row in target.rows()}
        _, value, deleted, writer, seq, conflict, nodes, _ = rows["doc"]
        chosen = alice.get_one("doc")
        assert chosen is not None and json.loads(value) == chosen.value
        assert (deleted, writer, seq, conflict) == (0, chosen.writer.hex(), chosen.seq, 1)
        assert nodes is not None
        assert [n["value"] for n in json.loads(nodes)] == [n.value for n in alice.get("doc")]
        assert {n["value"]["v"] for n in json.loads(nodes)} == {"alice", "bob"}
        gone = rows["gone"]
        assert gone[5] == 1 and gone[6] is not None
        assert [n["deleted"] for n in json.loads(gone[6])] == [n.deleted for n in alice.get("gone")]
        assert {n["deleted"] for n in json.loads(gone[6])} == {True, False}
        assert bool(gone[2]) == (alice.get_one("gone") is None)  # get_one's choice, either way


@pytest.mark.parametrize("encoding", ["binary", "utf-8", "json"])
def test_the_json_form_gives_the_same_rows_as_the_change_set(tmp_path: Path, encoding: str) -> None:
    db = hyperdb.open(memory=True, value_encoding=encoding)
    samples: dict[str, list[Any]] = {
        "binary": [b"text", b"\xff\x00bin", None, b""],
        "utf-8": ["text", "\u00e9t\u00e9", None, ""],
        "json": [{"hex": "00"}, "text", None, [1.5, {"a": True}]],
    }
    values = samples[encoding]
    sets = written(db, [lambda v=v, i=i: db.put(f"k{i}", v) for i, v in enumerate(values)])
    sets += written(db, [lambda: db.delete("k0")])
    with (
        Mirror(tmp_path / "a.sqlite", database=db.key, encoding=encoding) as objects,
        Mirror(tmp_path / "b.sqlite", database=db.key, encoding=encoding) as dicts,
    ):
        for one in sets:
            objects.apply(one)
            dicts.apply(json.loads(json.dumps(one.to_json())))
        assert objects.rows() == dicts.rows()
        assert plain(objects.rows()) == plain(list(rows_of(db, encoding)))
        stored = dict(objects.query("SELECT key, value FROM entries"))
    if encoding == "binary":
        assert stored == {"k1": b"\xff\x00bin", "k2": None, "k3": b""}
    elif encoding == "utf-8":
        assert stored == {"k1": "\u00e9t\u00e9", "k2": None, "k3": ""}
    else:
        assert stored == {"k1": '"text"', "k2": "null", "k3": '[1.5,{"a":true}]'}


def test_a_file_mirrors_one_database_with_one_encoding(tmp_path: Path) -> None:
    one = hyperdb.open(memory=True, value_encoding="utf-8")
    other = hyperdb.open(memory=True, value_encoding="utf-8")
    path = tmp_path / "m.sqlite"
    with Mirror(path, database=one.key, encoding="utf-8") as mirror:
        mirror.apply(written(one, [lambda: one.put("a", "1")])[0])
    with pytest.raises(InvalidArgument, match="mirrors database") as refused:
        Mirror(path, database=other.key, encoding="utf-8")
    assert refused.value.code == "invalid_argument"
    with pytest.raises(EncodingMismatch) as mismatch:
        Mirror(path, database=one.key, encoding="json")
    assert mismatch.value.code == "encoding_mismatch"
    with Mirror(path) as mirror:  # unchanged, and readable without naming the database
        assert mirror.database == one.key and mirror.encoding == "utf-8"
        assert mirror.checkpoint == one.version()
    with Mirror(tmp_path / "new.sqlite") as unbound, pytest.raises(InvalidArgument, match="which"):
        unbound.apply(written(one, [lambda: one.put("b", "2")])[0])


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"not a database at all, " * 100)
    with pytest.raises(InvalidArgument, match="not a SQLite file"):
        Mirror(path)
    assert path.read_bytes() == b"not a database at all, " * 100


def test_another_reader_sees_whole_transactions_only(tmp_path: Path) -> None:
    """A second SQLite connection (an application's) sees the rows and the checkpoint of the
    last commit together: never rows without their checkpoint."""
    db = hyperdb.open(memory=True, value_encoding="utf-8")
    sets = written(
        db,
        [
            lambda i=i: db.batch([{"key": f"k{j}", "value": str(i)} for j in range(50)])
            for i in range(5)
        ],
    )
    path = tmp_path / "m.sqlite"
    with Mirror(path, database=db.key, encoding="utf-8") as mirror:
        reader = sqlite3.connect(path)
        try:
            for one in sets:
                mirror.apply(one)
                (checkpoint,) = reader.execute(
                    "SELECT value FROM mirror_state WHERE name = 'checkpoint'"
                ).fetchone()
                values = {v for (v,) in reader.execute("SELECT DISTINCT value FROM entries")}
                assert checkpoint == one.version.hex() and len(values) == 1
        finally:
            reader.close()


def test_mirror_resumes_from_its_checkpoint_through_the_change_stream(tmp_path: Path) -> None:
    db = hyperdb.open(tmp_path / "db", value_encoding="json", durable=False)
    path = tmp_path / "m.sqlite"
    for i in range(30):
        db.put(f"k{i % 7}", {"i": i})
    db.batch([{"type": "del", "key": "k1"}, {"key": "new", "value": None}])
    first = mirror(db, path)
    assert (first.sets, first.skipped, first.checkpoint) == (31, 0, db.version())
    assert first.changes == 30 + 2
    db.put("k2", "again")
    db.delete("k3")
    second = mirror(db, path)  # only what came after the checkpoint
    assert (second.sets, second.changes, second.checkpoint) == (2, 2, db.version())
    assert mirror(db, path).sets == 0
    with Mirror(path) as done:
        assert plain(done.rows()) == plain(list(rows_of(db, "json")))
        assert done.counts() == (33, 34)
    db.close()


def test_a_merged_change_set_where_the_log_does_not_reach_back(tmp_path: Path) -> None:
    db = hyperdb.open(memory=True, value_encoding="utf-8", change_log=4)
    path = tmp_path / "m.sqlite"
    db.put("a", "1")
    mirror(db, path)
    for i in range(change_log.TRIM_EVERY + 10):  # past a trimming of the log
        db.put(f"k{i % 5}", str(i))
    db.delete("a")
    with Mirror(path, log=True) as target:
        sets = list(db.changes(target.checkpoint))
        assert sets[0].merged  # the log was trimmed to the last 4: one merged set covers the rest
        assert target.apply_many(sets)[0] == len(sets)
        assert plain(target.rows()) == plain(list(rows_of(db, "utf-8")))


def test_live_mirror_follows_new_writes_until_stopped(tmp_path: Path) -> None:
    db = hyperdb.open(memory=True, value_encoding="json")
    path = tmp_path / "m.sqlite"
    db.put("before", 0)
    stop = threading.Event()
    result: list[Any] = []
    follower = threading.Thread(
        target=lambda: result.append(mirror(db, path, live=True, stop=stop))
    )
    follower.start()
    try:
        with Mirror(path) as reader:
            for i in range(20):
                db.put(f"live/{i % 3}", {"i": i})
                if i % 5 == 0:
                    db.batch([{"key": f"batch/{i}/{j}", "value": j} for j in range(10)])
            deadline = time.monotonic() + 10
            while reader.checkpoint != db.version():
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert plain(reader.rows()) == plain(list(rows_of(db, "json")))
    finally:
        stop.set()
        follower.join(10)
    assert not follower.is_alive()
    (stats,) = result
    assert (stats.sets, stats.checkpoint) == (1 + 20 + 4, db.version())


def mirror_command(*argv: str) -> int:
    """``hyperdb mirror ARGV...`` in this process (its parser and run function)."""
    parser = argparse.ArgumentParser()
    mirror_cli.add_commands(parser.add_subparsers())
    args = parser.parse_args(["mirror", *argv])
    result: int = args.run(args)
    return result


def test_the_command_mirrors_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with hyperdb.open(tmp_path / "db", value_encoding="json") as db:
        db.batch([{"key": f"todo/{i}", "value": {"done": i % 2 == 0}} for i in range(10)])
        db.put("todo/3", {"done": True})
        version = db.version()
    out = str(tmp_path / "out.sqlite")
    assert mirror_command(str(tmp_path / "db"), out) == 0
    assert capsys.readouterr().out.startswith("mirrored 2 change sets (11 key changes) into ")
    assert mirror_command(str(tmp_path / "db"), out, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["sets"], report["keys"], report["checkpoint"]) == (0, 10, version.hex())
    with hyperdb.open(tmp_path / "db", readonly=True) as db, Mirror(out) as target:
        assert plain(target.rows()) == plain(list(rows_of(db, "json")))
        done = "SELECT count(*) FROM entries WHERE json_extract(value, '$.done')"
        assert target.query(done) == [(6,)]


def test_a_group_of_sets_gives_the_rows_applying_them_one_by_one_gives(tmp_path: Path) -> None:
    db = hyperdb.open(memory=True, value_encoding="utf-8")
    sets = written(
        db,
        [
            lambda: db.put("a", "1"),
            lambda: db.delete("a"),  # put then deleted within the group
            lambda: db.put("b", "1"),
            lambda: db.batch([{"key": "b", "value": "2"}, {"key": "c", "value": "1"}]),
            lambda: db.delete("c"),
            lambda: db.put("c", "again"),  # deleted then put again
        ],
    )
    with (
        Mirror(tmp_path / "one.sqlite", database=db.key, encoding="utf-8", log=True) as one,
        Mirror(tmp_path / "all.sqlite", database=db.key, encoding="utf-8", log=True) as group,
    ):
        for each in sets:
            one.apply(each)
        assert group.apply_many(sets) == (6, 7, 0)
        assert group.rows() == one.rows()
        assert group.log() == one.log() and group.counts() == one.counts() == (6, 7)
        assert [row[:2] for row in group.rows()] == [("b", "2"), ("c", "again")]


def test_two_connections_opening_a_new_file_at_once_both_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL from two connections at once can fail at once in SQLite
    ("database is locked", no busy wait): the mirror tries again."""
    db = hyperdb.open(memory=True)
    failures: list[BaseException] = []

    def open_one(path: Path) -> None:
        try:
            Mirror(path, database=db.key, encoding="binary").close()
        except BaseException as exc:
            failures.append(exc)

    for n in range(60):
        threads = [
            threading.Thread(target=open_one, args=(tmp_path / f"m{n}.sqlite",)) for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
