"""The installed ``hyperdb`` command serving and syncing over loopback TCP, in subprocesses:
init, serve, clone, sync (once and live), authorize beside a server, and the exit codes of
failures."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import hyperdb
from hyperdb.replication import net
from tests.helpers.cli_process import hyperdb_command, run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def field(output: str, name: str) -> str:
    for line in output.splitlines():
        parts = line.split()
        if parts and parts[0] == name:
            return parts[1]
    raise AssertionError(f"no {name} in {output!r}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A database ``a`` with 2,000 keys, served by ``hyperdb serve``: yields (key, HOST:PORT).
    Beside it, ``w``: a replica whose writer ``a`` made an owner (the served store is locked by
    the server process; tests write through ``w``)."""
    created = run("init", "a", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    key = field(created.stdout, "database")
    with hyperdb.open(tmp_path / "a") as db:
        db.batch([{"type": "put", "key": f"k/{i}", "value": b"v%d" % i} for i in range(2000)])
    writer = run("init", "w", "--key", key, cwd=tmp_path)
    granted = run("authorize", "a", field(writer.stdout, "writer"), "--role", "owner", cwd=tmp_path)
    assert granted.returncode == 0, granted.stderr
    server = subprocess.Popen(
        [*hyperdb_command(), "serve", "a", "--port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    assert line.startswith(f"serving {key} on 127.0.0.1:"), line
    try:
        yield key, line.split()[3]
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
        assert server.returncode == 0, err
        assert "stopped after" in out
        assert "Traceback" not in err


def test_clone_authorize_and_sync_both_ways(tmp_path: Path, served: tuple[str, str]) -> None:
    key, address = served
    cloned = run("clone", key, address, "b", cwd=tmp_path)
    assert cloned.returncode == 0, cloned.stderr
    assert field(cloned.stdout, "database") == key
    writer = field(cloned.stdout, "writer")
    assert "not authorized yet" in cloned.stdout
    assert "2002 blocks received" in cloned.stdout  # header, 2,000 keys, authorization of w
    with hyperdb.open(tmp_path / "b") as b:
        assert [n.value for n in b.get("k/1999")] == [b"v1999"]
    refused = run("put", "b", "from/b", "hello", cwd=tmp_path)  # no grant yet: nothing written
    assert refused.returncode == 1 and refused.stderr.endswith(" [permission_denied]\n")
    # the served store is the server's: writes to it go through the server (its control
    # socket); here w, made an owner by a, grants b
    read = run("get", "a", "k/7", cwd=tmp_path)  # reading beside the server works
    assert read.returncode == 0 and read.stdout.startswith('k/7 = "v7"'), read.stderr
    assert run("history", "a", "--limit", "1", cwd=tmp_path).returncode == 0
    # w has not synced since a granted it: it holds no grant yet, and writes nothing
    early = run("authorize", "w", writer, cwd=tmp_path)
    assert early.returncode == 1 and early.stderr.endswith(" [permission_denied]\n")
    assert run("sync", "w", address, cwd=tmp_path).returncode == 0
    authorized = run("authorize", "w", writer, cwd=tmp_path)
    assert authorized.returncode == 0, authorized.stderr
    assert authorized.stdout.startswith(f"authorized {writer} as writer (seq 1 of writer ")
    assert run("sync", "w", address, cwd=tmp_path).returncode == 0
    assert run("sync", "b", address, cwd=tmp_path).returncode == 0  # b learns of its grant
    assert run("put", "b", "from/b", "hello", cwd=tmp_path).returncode == 0
    synced = run("sync", "b", address, cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    assert "0 blocks received, 1 sent" in synced.stdout  # its write (its header went before)
    info = run("info", "b", cwd=tmp_path)
    assert f"writer     {writer} (authorized)" in info.stdout
    assert "writers    3" in info.stdout


def test_live_sync_carries_new_writes_until_stopped(
    tmp_path: Path, served: tuple[str, str]
) -> None:
    key, address = served
    assert run("init", "c", "--key", key, cwd=tmp_path).returncode == 0
    live = subprocess.Popen(
        [*hyperdb_command(), "sync", "c", address, "--live"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    host, port = address.rsplit(":", 1)
    try:
        assert live.stdout is not None
        assert live.stdout.readline().startswith(f"live sync with {address}")
        with hyperdb.open(tmp_path / "w") as w:  # an authorized writer pushes to the server
            net.sync_blocking(w, host, int(port))
            w.put("late/news", b"arrives live")
            net.sync_blocking(w, host, int(port))
            wanted = f"received   writer {w.local_key.hex()[:16]} now at 2 blocks"
        for line in live.stdout:  # the server passed it on to the live session at once
            if line.strip() == wanted:
                break
    finally:
        live.send_signal(signal.SIGTERM)
        out, err = live.communicate(timeout=30)
    assert live.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err
    with hyperdb.open(tmp_path / "c") as c:
        assert [n.value for n in c.get("late/news")] == [b"arrives live"]


def test_a_sync_stopped_at_any_moment_ends_at_once_and_keeps_a_sound_store(
    tmp_path: Path, served: tuple[str, str]
) -> None:
    """SIGTERM during the handshake, the transfer or the live wait: the command says "stopped",
    exits 0 within seconds (the event loop handles the signal: no exception lands inside the
    loop or a lock), and what it stored verifies."""
    key, address = served
    for attempt, delay in enumerate((0.0, 0.05, 0.15, 0.3, 0.6, 1.2)):
        name = f"c{attempt}"
        assert run("init", name, "--key", key, cwd=tmp_path).returncode == 0
        live = subprocess.Popen(
            [*hyperdb_command(), "sync", name, address, "--live"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert live.stdout is not None
        assert live.stdout.readline().startswith(f"live sync with {address}")
        time.sleep(delay)
        live.send_signal(signal.SIGTERM)
        out, err = live.communicate(timeout=15)
        assert live.returncode == 0, (delay, err)
        assert out.rstrip().endswith("stopped") and "Traceback" not in err, (delay, out, err)
        checked = run("verify", name, cwd=tmp_path)
        assert checked.returncode == 0, (delay, checked.stdout, checked.stderr)


def test_failures_are_one_line_with_their_exit_code(
    tmp_path: Path, served: tuple[str, str]
) -> None:
    _, address = served
    assert run("init", "other", cwd=tmp_path).returncode == 0
    wrong = run("sync", "other", address, cwd=tmp_path)
    assert wrong.returncode == 4
    assert wrong.stderr.count("\n") == 1 and "another database" in wrong.stderr
    assert wrong.stderr.endswith(" [wrong_database]\n")
    refused = run("sync", "other", "127.0.0.1:1", cwd=tmp_path)
    assert refused.returncode == 3 and "cannot connect" in refused.stderr
    assert refused.stderr.count("\n") == 1 and refused.stderr.endswith(" [network]\n")
    missing = run("sync", "nothing-here", address, cwd=tmp_path)
    assert missing.returncode == 1 and "no database in nothing-here" in missing.stderr
    assert missing.stderr.endswith(" [not_found]\n")
    bad = run("sync", "other", "no-port", cwd=tmp_path)
    assert bad.returncode == 1 and "HOST:PORT" in bad.stderr
    assert bad.stderr.endswith(" [invalid_argument]\n")
    again = run("init", "other", cwd=tmp_path)
    assert again.returncode == 1 and "already holds a database" in again.stderr
    assert again.stderr.endswith(" [invalid_argument]\n")


def test_a_failed_clone_removes_what_it_created_and_nothing_else(tmp_path: Path) -> None:
    """A clone from an unreachable peer exits 3 and leaves nothing behind: a directory it made
    (with the missing parents it made) is gone; in a directory that existed, only the entries
    the clone added are removed, the directory and what was in it stay.

    Mutation caught: removing the whole target directory even when it existed before (the
    file put there beforehand went with it)."""
    key = field(run("init", "a", cwd=tmp_path).stdout, "database")
    made = run("clone", key, "127.0.0.1:1", "new/deeper/replica", cwd=tmp_path)
    assert made.returncode == 3 and made.stderr.endswith(" [network]\n"), made.stderr
    assert "removed the unfinished replica in new/deeper/replica" in made.stdout
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    (existing / "notes").mkdir(parents=True)
    (existing / "mine.txt").write_text("keep me")
    kept = run("clone", key, "127.0.0.1:1", "existing", cwd=tmp_path)
    assert kept.returncode == 3, kept.stderr
    assert sorted(p.name for p in existing.iterdir()) == ["mine.txt", "notes"]
    assert (existing / "mine.txt").read_text() == "keep me"
    again = run("clone", key, "127.0.0.1:1", "existing", cwd=tmp_path)  # can simply run again
    assert again.returncode == 3 and "already holds" not in again.stderr


def test_a_live_clone_stopped_before_it_fetched_anything_removes_it(tmp_path: Path) -> None:
    """``clone --live`` keeps retrying an unreachable peer; stopped (SIGTERM) before anything
    arrived, it says "stopped", exits 0 and removes the replica it made."""
    key = field(run("init", "a", cwd=tmp_path).stdout, "database")
    live = subprocess.Popen(
        [*hyperdb_command(), "clone", key, "127.0.0.1:1", "c", "--live"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert live.stdout is not None
        for line in live.stdout:  # bounded: the process is killed by the timeout below
            if line.startswith("connection to 127.0.0.1:1 lost or refused"):
                break
    finally:
        live.send_signal(signal.SIGTERM)
        out, err = live.communicate(timeout=30)
    assert live.returncode == 0, err
    assert "stopped" in out and "removed the unfinished replica in c" in out, out
    assert not (tmp_path / "c").exists()


def test_a_clone_refused_for_load_exits_3_and_leaves_nothing(tmp_path: Path) -> None:
    """A server whose handshake places for this address are held answers a clone with the busy
    signal: exit 3, "is busy ... try again later [busy]", and no directory left behind."""
    with hyperdb.open(tmp_path / "a") as a:
        a.put("k", b"v")
        with (
            net.serve_in_background(
                a, "127.0.0.1", max_handshakes_per_address=1, evict_after=60, handshake_timeout=60
            ) as server,
            socket.create_connection(("127.0.0.1", server.port), timeout=5),
        ):
            deadline = time.monotonic() + 10
            while server.server.handshakes < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            cloned = run("clone", a.key.hex(), f"127.0.0.1:{server.port}", "b", cwd=tmp_path)
    assert cloned.returncode == 3, cloned.stderr
    assert "is busy" in cloned.stderr and cloned.stderr.endswith("try again later [busy]\n")
    assert not (tmp_path / "b").exists()
