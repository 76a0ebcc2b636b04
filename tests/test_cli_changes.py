"""The command line's change commands and read formats, in subprocesses on LMDB: ``watch`` (up to
now, following a database nobody holds, following a served one through its control socket),
``history PATH KEY``, ``resolve`` (directly and beside ``serve``), and ``--json`` on every read
command.

Mutations tried by hand, each caught: ``watch`` printing without flushing (the following tests
wait in vain for the line); the serving process not relaying change sets (the served test, whose
``--interval`` is a minute so that only the socket can deliver in time); ``history KEY`` in the
order the API gives reversed (the order assertion); ``--json`` dropped from ``info`` (the read
command test names it); the people form printing ``before`` for ``after`` (the ``~`` line).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

import hyperdb
from hyperdb.cli import build_parser
from tests.helpers.cli_process import hyperdb_command, run, start_serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def ok(*args: str, cwd: Path) -> str:
    result = run(*args, cwd=cwd)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


class Following:
    """A ``hyperdb watch`` process in the background whose stdout lines are read as they come."""

    def __init__(self, *args: str, cwd: Path) -> None:
        # as a pipe reads it by default: block-buffered, unless the command flushes
        env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
        self.process = subprocess.Popen(
            [*hyperdb_command(), "watch", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def next(self, timeout: float = 20.0) -> str:
        return self.lines.get(timeout=timeout)

    def stop(self) -> tuple[int, str]:
        """SIGTERM; the exit code and stderr."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        self.reader.join(10)
        assert self.process.stderr is not None
        err = self.process.stderr.read()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return code, err


def test_watch_up_to_now_prints_each_transaction_and_resumes_from_any_version(
    tmp_path: Path,
) -> None:
    ok("init", "db", cwd=tmp_path)
    ok("put", "db", "users/alice", "Alice", cwd=tmp_path)
    ok("put", "db", "users/bob", "Bob", cwd=tmp_path)
    middle = ok("version", "db", cwd=tmp_path).strip()
    ok("put", "db", "users/alice", "Alicia", cwd=tmp_path)
    ok("del", "db", "users/bob", cwd=tmp_path)
    ok("put", "db", "other", "x", cwd=tmp_path)
    now = ok("version", "db", cwd=tmp_path).strip()

    sets = json_lines(ok("watch", "db", "--since", "empty", "--no-follow", "--json", cwd=tmp_path))
    assert len(sets) == 5
    assert [s["since"] for s in sets] == ["", *[s["version"] for s in sets[:-1]]]
    assert sets[-1]["version"] == now and sets[1]["version"] == middle
    assert [[c["key"] for c in s["changes"]] for s in sets] == [
        ["users/alice"],
        ["users/bob"],
        ["users/alice"],
        ["users/bob"],
        ["other"],
    ]
    changed = sets[2]["changes"][0]
    assert [n["value"] for n in changed["before"]] == ["Alice"]
    assert [n["value"] for n in changed["after"]] == ["Alicia"]
    assert sets[3]["changes"][0]["after"] == []

    later = ok("watch", "db", "users", "--since", middle, "--no-follow", cwd=tmp_path)
    lines = later.splitlines()
    assert [line.split(" (")[0] for line in lines if not line.startswith("@")] == [
        '~ users/alice: "Alice"',
        "- users/bob",
    ]
    assert '-> "Alicia" (' in lines[1]
    assert sum(line.startswith("@ ") for line in lines) == 2  # the set changing "other": none
    assert ok("watch", "db", "--no-follow", cwd=tmp_path) == ""  # from now: nothing yet
    bad = run("watch", "db", "--since", "zz", "--no-follow", cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.endswith("[invalid_argument]\n")


def test_watch_follows_a_database_no_process_holds(tmp_path: Path) -> None:
    ok("init", "db", cwd=tmp_path)
    ok("put", "db", "before", "not shown", cwd=tmp_path)
    since = ok("version", "db", cwd=tmp_path).strip()  # what it starts from, whenever it starts
    watching = Following("db", "--json", "--interval", "0.05", "--since", since, cwd=tmp_path)
    try:
        ok("put", "db", "k", "one", cwd=tmp_path)  # watch holds no lock: put opens it itself
        first = json.loads(watching.next())
        assert [c["key"] for c in first["changes"]] == ["k"]
        ok("put", "db", "k", '{"a": 1}', "--json", cwd=tmp_path)
        second = json.loads(watching.next())
        assert second["since"] == first["version"]
        assert second["changes"][0]["after"][0]["value"] == '{"a":1}'
    finally:
        code, err = watching.stop()
    assert code == 0 and "Traceback" not in err


def test_watch_follows_a_served_database_through_its_socket(tmp_path: Path) -> None:
    ok("init", "db", cwd=tmp_path)
    server, _ = start_serving("db", tmp_path)
    try:
        # a minute between reads: only the serving process can deliver in time
        watching = Following("db", "--interval", "60", "--since", "empty", cwd=tmp_path)
        try:
            ok("put", "db", "k", "one", cwd=tmp_path)  # through the server too
            ok("put", "db", "k", "two", cwd=tmp_path)
            assert watching.next().startswith("@ ")
            assert watching.next().startswith('+ k = "one" (')
            assert watching.next().startswith("@ ")
            line = watching.next()
            assert line.startswith('~ k: "one" (') and '-> "two" (' in line
        finally:
            code, err = watching.stop()
        assert code == 0 and "Traceback" not in err
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        if server.stdout is not None:
            server.stdout.close()


def test_watch_goes_on_when_the_server_stops_and_comes_back(tmp_path: Path) -> None:
    ok("init", "db", cwd=tmp_path)
    server, _ = start_serving("db", tmp_path)
    watching = Following("db", "--json", "--interval", "0.1", "--since", "empty", cwd=tmp_path)
    try:
        ok("put", "db", "k", "served", cwd=tmp_path)
        first = json.loads(watching.next())
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        if server.stdout is not None:
            server.stdout.close()
        ok("put", "db", "k", "direct", cwd=tmp_path)  # nobody holds it now: read by watch
        second = json.loads(watching.next())
        assert second["since"] == first["version"]
        server, _ = start_serving("db", tmp_path)
        ok("put", "db", "k", "served again", cwd=tmp_path)
        third = json.loads(watching.next())
        assert third["since"] == second["version"]
        assert [c["after"][0]["value"] for c in third["changes"]] == ["served again"]
    finally:
        code, err = watching.stop()
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        if server.stdout is not None:
            server.stdout.close()
    assert code == 0 and "Traceback" not in err


def test_history_of_one_key_newest_first(tmp_path: Path) -> None:
    ok("init", "db", cwd=tmp_path)
    ok("put", "db", "k", "one", cwd=tmp_path)
    ok("put", "db", "other", "x", cwd=tmp_path)
    ok("put", "db", "k", "two", cwd=tmp_path)
    ok("del", "db", "k", cwd=tmp_path)
    lines = ok("history", "db", "k", cwd=tmp_path).splitlines()
    assert [line.split(" (")[0] for line in lines] == ["<deleted>", '"two"', '"one"']
    assert lines[0].endswith(" #4)")
    rows = json_lines(ok("history", "db", "k", "--json", "--reverse", cwd=tmp_path))
    assert [[v["value"] for v in row["values"]] for row in rows] == [["one"], ["two"], [None]]
    assert {row["key"] for row in rows} == {"k"}
    assert len(ok("history", "db", "k", "--limit", "1", cwd=tmp_path).splitlines()) == 1
    refused = run("history", "db", "k", "--graph", cwd=tmp_path)
    assert refused.returncode == 1 and "[invalid_argument]" in refused.stderr


NOT_READ = {"init", "put", "del", "resolve", "authorize", "revoke", "rotate", "revert"}
NOT_READ |= {"serve", "sync", "clone", "demo", "mirror", "join", "seed", "dht-node"}
NOT_READ |= {"attach", "gc", "cat-blob"}  # cat-blob reads, but writes a blob's raw bytes
"""Commands that write, serve or sync: every other command reads, and takes --json."""

READS = {
    "info": [],
    "get": ["doc"],
    "ls": [],
    "range": [],
    "heads": [],
    "version": [],
    "diff": ["empty"],
    "history": [],
    "graph": [],
    "blame": [],
    "conflicts": [],
    "writers": [],
    "peers": [],
    "acks": [],
    "verify": [],
    "watch": ["--since", "empty", "--no-follow"],
    "blobs": [],
}


def test_every_read_command_prints_json_with_json(tmp_path: Path) -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if hasattr(a, "choices") and a.choices]
    assert isinstance(commands.choices, dict)
    reads = set(commands.choices) - NOT_READ
    assert reads == set(READS), "a read command without a case here"
    conflicting(tmp_path)  # "a" has a conflict, so that conflicts lists one
    for name, extra in READS.items():
        out = ok(name, "a", *extra, "--json", cwd=tmp_path)
        parsed = json_lines(out)  # one document, or one per line
        assert parsed, name
    history_key = json_lines(ok("history", "a", "doc", "--json", cwd=tmp_path))
    assert sorted(v["value"] for v in history_key[0]["values"]) == ["from a", "from b"]


def test_put_json_in_a_json_database_stores_the_value_and_text_as_a_string(
    tmp_path: Path,
) -> None:
    ok("init", "db", "--value-encoding", "json", cwd=tmp_path)
    ok("put", "db", "doc", '{"title": "Hi", "n": [1, 2]}', "--json", cwd=tmp_path)
    ok("put", "db", "text", "42", cwd=tmp_path)
    ok("put", "db", "number", "42", "--json", cwd=tmp_path)
    with hyperdb.open(tmp_path / "db", readonly=True) as db:
        assert db.value_encoding == "json"
        assert db.get("doc")[0].value == {"title": "Hi", "n": [1, 2]}
        assert db.get("text")[0].value == "42" and db.get("number")[0].value == 42
    got = json.loads(ok("get", "db", "doc", "--json", cwd=tmp_path))
    assert got["values"][0]["value"] == {"title": "Hi", "n": [1, 2]}  # not a string of JSON
    assert ok("get", "db", "number", cwd=tmp_path).startswith("number = 42  (")
    assert json.loads(ok("info", "db", "--json", cwd=tmp_path))["value_encoding"] == "json"


def conflicting(tmp_path: Path, encoding: str = "binary") -> tuple[Any, Any]:
    """Replicas ``a`` and ``b`` of one database, each having written ``doc`` unaware of the
    other, then synced: ``doc`` has two values on both."""
    values = {"binary": (b"from a", b"from b"), "json": ({"x": 1, "y": 1}, {"x": 1, "y": 2})}
    with hyperdb.open(tmp_path / "a", value_encoding=encoding) as a:
        b = hyperdb.open(tmp_path / "b", key=a.key, value_encoding=encoding)
        with b:
            a.authorize(b.local_key)
            hyperdb.replicate(a, b)
            a.put("doc", values[encoding][0])
            b.put("doc", values[encoding][1])
            hyperdb.replicate(a, b)
            assert len(a.get("doc")) == 2
            return a.key, b.key


needs_resolve = pytest.mark.skipif(
    not hasattr(hyperdb.Database, "resolve"), reason="Database.resolve is not there yet"
)


@needs_resolve
def test_resolve_supersedes_the_concurrent_values_directly_and_beside_serve(
    tmp_path: Path,
) -> None:
    conflicting(tmp_path)
    assert ok("get", "a", "doc", cwd=tmp_path).startswith("doc: 2 concurrent values")
    done = ok("resolve", "a", "doc", "merged", cwd=tmp_path)
    assert done.startswith('resolved doc = "merged" (')
    assert ok("get", "a", "doc", cwd=tmp_path).startswith('doc = "merged"  (')
    server, _ = start_serving("b", tmp_path)
    try:
        done = ok("resolve", "b", "doc", "--resolver", "last-writer", cwd=tmp_path)
        assert done.startswith("resolved doc = ")
        assert len(ok("get", "b", "doc", cwd=tmp_path).splitlines()) == 1
        none = run("resolve", "b", "doc", cwd=tmp_path)
        assert none.returncode == 1 and "[invalid_argument]" in none.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        if server.stdout is not None:
            server.stdout.close()


@needs_resolve
def test_resolve_with_the_json_merge(tmp_path: Path) -> None:
    conflicting(tmp_path, "json")
    done = ok("resolve", "a", "doc", "--resolver", "json-merge", cwd=tmp_path)
    assert done.startswith('resolved doc = {"x": 1, "y": ')
    got = json.loads(ok("get", "a", "doc", "--json", cwd=tmp_path))
    assert len(got["values"]) == 1 and got["values"][0]["value"]["x"] == 1
