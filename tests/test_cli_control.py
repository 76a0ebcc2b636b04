"""The control socket (``hyperdb.cli.control``): writes from the command line to a database another
hyperdb process holds. In process: the server on an event loop in a thread over a real LMDB
database, the client functions the commands use, hostile and malformed requests, the socket's
permission, stale sockets and long paths. In subprocesses: ``put``/``del`` beside ``hyperdb serve``
print and fail exactly as direct writes do.

Mutations tried by hand, each caught: no umask around ``bind`` (the mode test sees 0777, with
``chmod`` disabled as the test does); the server answering a request that is not JSON with
nothing (the garbage test times out on its ``recv``, then fails); ``error_from`` always raising
the base class (the in-process and the subprocess error tests see another class, exit code and
message); ``ControlServer.close`` not removing its socket (the stop test sees it remain); a stale
socket not cleared (the server refuses to start with ``in_use``); the long-path fallback removed
(``bind`` fails with "AF_UNIX path too long"); ``sync --live`` without the socket (the live sync
test waits for it in vain).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hyperdb
from hyperdb.cli import control
from hyperdb.errors import HyperDBError, InvalidArgument, InvalidKey, StorageError
from tests.helpers.cli_process import hyperdb_command, run, start_serving
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


class Served:
    """A database in ``path`` answered by a :class:`control.ControlServer` on a loop in a
    thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = hyperdb.open(path)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = control.ControlServer(self.db, path)
        try:
            self.call(self.server.start())
        except BaseException:
            self.close()
            raise

    def call(self, work: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(30)

    def close(self) -> None:
        self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()
        self.db.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    served = Served(tmp_path / "db")
    try:
        yield served
    finally:
        served.close()


def put_request(key: str, text: str, form: str = "text") -> dict[str, Any]:
    return {"op": "put", "key": key, "value": control.value_spec(form, text.encode())}


def raw(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(control.socket_path(path)))
    return sock


def answers(sock: socket.socket, count: int) -> list[dict[str, Any]]:
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return [json.loads(line) for line in data.splitlines()]


# --- what a value becomes (no socket) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "form", "given", "stored"),
    [
        ("binary", "text", b"hi", b"hi"),
        ("binary", "text", b"\xff", b"\xff"),  # bytes that are not UTF-8 stay exactly
        ("binary", "json", b' {"a": [1, 2]} ', b'{"a":[1,2]}'),
        ("binary", "bytes", b"\x00{", b"\x00{"),
        ("utf-8", "text", b"caf\xc3\xa9", "café"),
        ("utf-8", "json", b"[true, null]", "[true,null]"),
        ("json", "text", b"42", "42"),  # text stays a JSON string; --json makes it a number
        ("json", "json", b"42", 42),
        ("json", "json", b'{"\xc3\xa9": "x"}', {"é": "x"}),
        ("json", "bytes", b'{"a": 1}', {"a": 1}),
    ],
)
def test_a_value_is_stored_as_the_database_encoding_reads_it(
    encoding: str, form: str, given: bytes, stored: object
) -> None:
    assert control.stored_value(encoding, form, given) == stored


@pytest.mark.parametrize(
    ("encoding", "form", "given", "message"),
    [
        ("binary", "json", b"{bad", "the value is not JSON: Expecting property name"),
        ("json", "json", b"NaN", "the value is not JSON: NaN is not a JSON value"),
        ("json", "bytes", b"\xff", "not UTF-8 text, so it is not JSON"),
        ("utf-8", "text", b"\xff", "not UTF-8 text, which this database stores"),
        ("json", "json", b"[" * 100_000, "nested too deeply"),
    ],
)
def test_a_bad_value_is_refused_saying_why(
    encoding: str, form: str, given: bytes, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        control.stored_value(encoding, form, given)


def test_an_error_comes_back_as_the_class_with_its_code() -> None:
    error = control.error_from("invalid_key", "bad key")
    assert type(error) is InvalidKey and str(error) == "bad key"
    unknown = control.error_from("something_new", "from a newer server")
    assert type(unknown) is HyperDBError and unknown.code == "something_new"
    assert control.error_from("ack_timeout", "late").code == "ack_timeout"  # takes keywords too


# --- the server in process ------------------------------------------------------------------------


@pytest.mark.integration
def test_the_socket_is_0600_from_its_creation_and_removed_on_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = os.umask(0)  # the widest a process could have
    try:
        with monkeypatch.context() as patched:
            patched.setattr(os, "chmod", lambda *args: None)  # the umask alone must do it
            served = Served(tmp_path / "db")
        assert os.umask(0) == 0  # bind gave the process its umask back
    finally:
        os.umask(previous)
    where = control.socket_path(tmp_path / "db")
    try:
        mode = os.stat(where).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    finally:
        served.close()
    assert not where.exists()


@pytest.mark.integration
def test_writes_forwarded_do_what_direct_writes_do(served: Served) -> None:
    path = str(served.path)
    forwarded = control.forward(path, put_request("users/alice", "Alice"))
    assert forwarded is not None
    (node,), encoding = forwarded
    assert encoding == "binary"
    assert (node.key, node.value, node.seq, node.writer) == (
        "users/alice",
        b"Alice",
        1,
        served.db.local_key,
    )
    assert [n.value for n in served.db.get("users/alice")] == [b"Alice"]
    deleted = control.forward(path, {"op": "del", "key": "users/alice"})
    assert deleted is not None and deleted[0][0].deleted and served.db.get("users/alice") == []
    as_json = control.forward(path, put_request("doc", '{"b": 1, "a": [2]}', "json"))
    assert as_json is not None and served.db.get("doc")[0].value == b'{"b":1,"a":[2]}'

    with pytest.raises(InvalidKey) as forwarded_error:
        control.forward(path, put_request("", "x"))
    with pytest.raises(InvalidKey) as direct_error:
        served.db.put("", b"x")
    assert str(forwarded_error.value) == str(direct_error.value)


@pytest.mark.integration
def test_changes_of_who_writes_go_through_too(served: Served) -> None:
    path, db = str(served.path), served.db
    with hyperdb.open(memory=True, key=db.key) as one, hyperdb.open(memory=True, key=db.key) as two:
        first, second = one.local_key, two.local_key
    request = {"op": "authorize", "writer": first.hex(), "role": "writer", "prefixes": ["notes"]}
    forwarded = control.forward(path, request)
    assert forwarded is not None
    ((grant,), _) = forwarded
    assert (grant.kind, grant.authorizes, grant.prefixes) == ("grant", (first,), ("notes",))
    assert db.is_authorized(first)
    rotated = control.forward(path, {"op": "rotate", "old": first.hex(), "new": second.hex()})
    assert rotated is not None and [n.kind for n in rotated[0]] == ["revoke", "grant"]
    revoked = control.forward(path, {"op": "revoke", "writer": second.hex()})
    assert revoked is not None and revoked[0][0].revokes == (second,)
    db.put("k", b"kept")
    late = db.put("k", b"reverted")
    reverted = control.forward(
        path, {"op": "revert", "writer": db.local_key.hex(), "seq": late.seq}
    )
    assert reverted is not None and [n.value for n in db.get("k")] == [b"kept"]

    with pytest.raises(HyperDBError) as forwarded_error:
        control.forward(path, {"op": "revoke", "writer": db.key.hex()})
    with pytest.raises(HyperDBError) as direct_error:
        db.revoke(db.key)
    assert type(forwarded_error.value) is type(direct_error.value)
    assert str(forwarded_error.value) == str(direct_error.value)
    for bad in (
        {"op": "authorize", "writer": "zz", "role": "writer"},
        {"op": "authorize", "writer": first.hex(), "role": "writer", "prefixes": "notes"},
        {"op": "rotate", "old": first.hex()},
        {"op": "revert", "writer": first.hex(), "seq": 0},
    ):
        with pytest.raises(InvalidArgument):
            control.forward(path, bad)


@pytest.mark.integration
def test_garbage_gets_an_error_answer_and_the_server_goes_on(served: Served) -> None:
    garbage = [
        b"not json",
        b"[1, 2]",
        b'{"op": "drop_everything"}',
        b'{"op": "put", "key": 7, "value": null}',
        b'{"op": "put", "key": "k"}',
        b'{"op": "put", "key": "k", "value": {"form": "text", "data": "!!"}}',
        b'{"op": "put", "key": "k", "value": {"form": "pickle", "data": ""}}',
        b'{"op": "resolve", "key": "k"}',
        b'{"op": "changes", "since": 5, "prefix": "", "live": false}',
        b"[" * 100_000,
        b"\xff\xfe",
    ]
    with raw(served.path) as sock:
        for line in garbage[:-3]:
            sock.sendall(line + b"\n")
        replies = answers(sock, len(garbage) - 3)
        assert [r["ok"] for r in replies] == [False] * len(replies)
        assert {r["code"] for r in replies} == {"invalid_argument"}
        line = json.dumps(put_request("k", "fine")).encode()
        sock.sendall(line + b"\n")  # the same connection still works
        assert answers(sock, 1)[0]["ok"] is True
    for line in garbage[-3:]:  # a changes request that fails, deep nesting, not UTF-8
        with raw(served.path) as sock:
            sock.sendall(line + b"\n")
            (reply,) = answers(sock, 1)
            assert reply["ok"] is False and reply["code"] == "invalid_argument"
    with raw(served.path) as sock:  # a line longer than any request: refused, connection closed
        sock.sendall(b"a" * (control.MAX_REQUEST + 1024))
        (reply,) = answers(sock, 1)
        assert reply["code"] == "invalid_argument" and "at most" in reply["message"]
    with raw(served.path) as sock:  # half a request, then gone
        sock.sendall(b'{"op": "pu')
    forwarded = control.forward(str(served.path), put_request("k", "still"))
    assert forwarded is not None and served.db.get("k")[0].value == b"still"


@pytest.mark.integration
def test_a_value_of_the_largest_size_fits_in_a_request(served: Served) -> None:
    big = base64.b64encode(b"\x01" * (4 * 1024 * 1024)).decode()
    request = {"op": "put", "key": "big", "value": {"form": "bytes", "data": big}}
    forwarded = control.forward(str(served.path), request)
    assert forwarded is not None and len(served.db.get("big")[0].value) == 4 * 1024 * 1024


@pytest.mark.integration
def test_a_stale_socket_is_replaced_and_anything_else_refused(tmp_path: Path) -> None:
    path = tmp_path / "db"
    hyperdb.open(path).close()
    where = control.socket_path(path)
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(where))  # what a killed server leaves: a socket file nothing listens on
    left.close()
    assert control.connect(path) is None  # a client finds nothing there
    served = Served(path)
    try:
        assert control.forward(str(path), put_request("k", "v")) is not None
    finally:
        served.close()
    where.write_text("not a socket")
    with pytest.raises(StorageError, match="is not a socket"):
        Served(path)
    assert where.read_text() == "not a socket"


@pytest.mark.integration
def test_a_database_path_too_long_for_a_socket_address_still_works(tmp_path: Path) -> None:
    path = tmp_path / ("d" * 60) / ("e" * 60)
    assert len(str(control.socket_path(path).absolute())) > 108
    served = Served(path)
    try:
        assert stat.S_IMODE(os.stat(control.socket_path(path)).st_mode) == 0o600
        forwarded = control.forward(str(path), put_request("k", "v"))
        assert forwarded is not None and forwarded[0][0].value == b"v"
    finally:
        served.close()
    assert not control.socket_path(path).exists()


# --- the commands beside a real server ------------------------------------------------------------


def check(result: Any) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return str(result.stdout)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_put_and_del_beside_serve_print_and_fail_as_direct_writes(tmp_path: Path) -> None:
    check(run("init", "db", cwd=tmp_path))
    direct = check(run("put", "db", "a", "one", cwd=tmp_path))
    direct_bad = run("put", "db", "", "x", cwd=tmp_path)
    direct_json = run("put", "db", "j", "{bad", "--json", cwd=tmp_path)
    server, _ = start_serving("db", tmp_path)
    try:
        assert stat.S_IMODE(os.stat(tmp_path / "db" / "control.sock").st_mode) == 0o600
        forwarded = check(run("put", "db", "a", "two", cwd=tmp_path))
        assert direct.replace("#1", "#2") == forwarded  # "put a (abcd1234 #2)"
        bad = run("put", "db", "", "x", cwd=tmp_path)
        assert (bad.returncode, bad.stdout, bad.stderr) == (
            direct_bad.returncode,
            direct_bad.stdout,
            direct_bad.stderr,
        )
        assert bad.returncode == 1 and bad.stderr.endswith("[invalid_key]\n")
        bad_json = run("put", "db", "j", "{bad", "--json", cwd=tmp_path)
        assert (bad_json.returncode, bad_json.stderr) == (
            direct_json.returncode,
            direct_json.stderr,
        )
        check(run("put", "db", "j", '{"n": 1}', "--json", cwd=tmp_path))
        assert check(run("del", "db", "a", cwd=tmp_path)).startswith("deleted a (")
        got = json.loads(check(run("get", "db", "j", "--json", cwd=tmp_path)))
        assert [v["value"] for v in got["values"]] == ['{"n":1}']  # its JSON text: a binary db
        assert run("get", "db", "a", cwd=tmp_path).returncode == 1
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        if server.stdout is not None:
            server.stdout.close()
    assert not (tmp_path / "db" / "control.sock").exists()
    assert check(run("put", "db", "a", "three", cwd=tmp_path)).endswith(" #5)\n")


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_killed_server_leaves_a_socket_the_next_one_replaces(tmp_path: Path) -> None:
    check(run("init", "db", cwd=tmp_path))
    server, _ = start_serving("db", tmp_path)
    server.send_signal(signal.SIGKILL)
    server.wait(30)
    if server.stdout is not None:
        server.stdout.close()
    assert (tmp_path / "db" / "control.sock").exists()
    assert check(run("put", "db", "k", "direct", cwd=tmp_path)).endswith(" #1)\n")
    server, _ = start_serving("db", tmp_path)
    try:
        assert check(run("put", "db", "k", "forwarded", cwd=tmp_path)).endswith(" #2)\n")
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        if server.stdout is not None:
            server.stdout.close()
    with hyperdb.open(tmp_path / "db", readonly=True) as db:
        assert [n.value for n in db.get("k")] == [b"forwarded"]


def field(output: str, name: str) -> str:
    return next(line.split()[1] for line in output.splitlines() if line.split()[:1] == [name])


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_live_sync_takes_writes_for_its_replica_and_passes_them_on(tmp_path: Path) -> None:
    key = field(check(run("init", "a", cwd=tmp_path)), "database")
    writer = field(check(run("init", "b", "--key", key, cwd=tmp_path)), "writer")
    check(run("authorize", "a", writer, cwd=tmp_path))
    server, address = start_serving("a", tmp_path)
    live = subprocess.Popen(
        [*hyperdb_command(), "sync", "b", address, "--live"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: (tmp_path / "b" / "control.sock").exists())
        # b is held by the live sync: the put goes through it (once b learnt of its grant),
        # and on to a's server
        wait_until(lambda: run("put", "b", "from/b", "hello", cwd=tmp_path).returncode == 0)
        wait_until(lambda: run("get", "a", "from/b", cwd=tmp_path).returncode == 0)
        assert check(run("get", "a", "from/b", cwd=tmp_path)).startswith('from/b = "hello"  (')
    finally:
        live.send_signal(signal.SIGTERM)
        out, err = live.communicate(timeout=30)
        assert "stopped" in out
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        if server.stdout is not None:
            server.stdout.close()
    assert live.returncode == 0 and "Traceback" not in err, err
    assert not (tmp_path / "b" / "control.sock").exists()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_database_held_by_a_process_without_a_socket_still_refuses_writes(
    tmp_path: Path,
) -> None:
    check(run("init", "db", cwd=tmp_path))
    with hyperdb.open(tmp_path / "db"):  # a program holds it, and answers no control socket
        refused = run("put", "db", "k", "v", cwd=tmp_path)
    assert refused.returncode == 1 and refused.stderr.endswith("[in_use]\n")
    assert "db is open in another process" in refused.stderr
