"""An end-to-end command-line session as a new user would run it, in subprocesses on LMDB: init,
authorize a second replica, concurrent writes, serve + sync, conflicts, history --graph, diff,
graph export, blame and verify, with the output asserted. (The help of every subcommand is
tested in process, in ``tests/test_cli_help.py``.)"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.helpers.cli_process import run, start_serving

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def ok(*args: str, cwd: Path) -> str:
    result = run(*args, cwd=cwd)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    assert result.stderr == "" or result.stderr.startswith("("), result.stderr
    return result.stdout


def field(output: str, name: str) -> str:
    return next(line.split()[1] for line in output.splitlines() if line.split()[:1] == [name])


def serve_and_sync(tmp_path: Path) -> str:
    """``hyperdb serve alice`` in the background, ``hyperdb sync bob`` with it, the server
    stopped: what sync said, up to the byte counts."""
    server, address = start_serving("alice", tmp_path)
    try:
        synced = ok("sync", "bob", address, cwd=tmp_path)
        # the peer named by the writer key it proved: alice, an owner
        alice_key = field(ok("info", "alice", cwd=tmp_path), "writer")
        assert synced.startswith(f"synced with {address} (peer {alice_key[:16]}, owner): ")
        return synced.split(" (")[1]
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        if server.stdout is not None:
            server.stdout.close()


def test_a_whole_session(tmp_path: Path) -> None:
    created = ok("init", "alice", cwd=tmp_path)
    key, alice_writer = field(created, "database"), field(created, "writer")
    assert key == alice_writer and "(authorized)" in created
    joined = ok("init", "bob", "--key", key, cwd=tmp_path)
    bob_writer = field(joined, "writer")
    assert "not authorized yet" in joined
    assert ok("authorize", "alice", bob_writer, cwd=tmp_path).startswith(f"authorized {bob_writer}")
    first = serve_and_sync(tmp_path)  # bob learns of its grant
    assert first.endswith(": 2 blocks received, 1 sent"), first

    # concurrent writes: neither has seen the other's
    ok("put", "alice", "doc/title", "Hello", cwd=tmp_path)
    ok("put", "alice", "doc/body", "first draft", cwd=tmp_path)
    ok("put", "bob", "doc/title", "Hi", cwd=tmp_path)
    before = ok("version", "alice", cwd=tmp_path).strip()
    synced = serve_and_sync(tmp_path)
    assert synced.endswith(": 2 blocks received, 1 sent"), synced

    got = ok("get", "alice", "doc/title", cwd=tmp_path).splitlines()
    assert got[0] == "doc/title: 2 concurrent values (a conflict)"
    assert sorted(line.split("  ")[0] for line in got[1:]) == [
        'doc/title = "Hello"',
        'doc/title = "Hi"',
    ]
    conflicts = ok("conflicts", "alice", cwd=tmp_path).splitlines()
    assert conflicts[0] == "doc/title: 2 concurrent values"
    assert {line.split()[0] for line in conflicts[1:3]} == {alice_writer[:8], bob_writer[:8]}

    history = ok("history", "alice", cwd=tmp_path).splitlines()
    assert len(history) == 4  # newest first; the grant came before everything else
    assert history[-1] == f"{alice_writer[:8]} #1{' ' * 6}authorize {bob_writer[:16]}"
    assert f'{bob_writer[:8]} #1{" " * 6}put doc/title = "Hi"' in history
    drawn = ok("history", "alice", "--graph", cwd=tmp_path).splitlines()
    stars = [line for line in drawn if "*" in line]
    assert len(stars) == 4
    assert any("doc/title" in line and bob_writer[:8] in line for line in stars)
    assert set("".join(line.split(" ")[0] for line in drawn)) <= set("*|/\\_")

    diff = ok("diff", "alice", before, cwd=tmp_path).splitlines()
    a, b = alice_writer[:8], bob_writer[:8]
    values = sorted([f'"Hello" ({a} #2)', f'"Hi" ({b} #1)'], key=lambda v: v[v.index("(") :])
    assert diff == [f'~ doc/title: "Hello" ({a} #2) -> ' + " | ".join(values)]

    blame = ok("blame", "alice", "doc", cwd=tmp_path).splitlines()
    assert blame[0] == f'doc/body  "first draft" ({alice_writer[:8]} #3)'
    dot = ok("graph", "alice", cwd=tmp_path)
    assert dot.startswith("digraph") and dot.count("->") == 3  # both writers saw the grant
    graphml = tmp_path / "history.graphml"
    wrote = ok("graph", "alice", "--format", "graphml", "-o", str(graphml), cwd=tmp_path)
    assert wrote.startswith(f"wrote {graphml}: 4 writes") and graphml.read_text().startswith(
        "<?xml"
    )

    writers = ok("writers", "alice", "--json", cwd=tmp_path)
    assert [w["key"] for w in json.loads(writers)["writers"]] == [alice_writer, bob_writer]
    verified = ok("verify", "alice", cwd=tmp_path)
    assert verified.startswith("checked 2 feed(s), 2 intact") and verified.endswith("ok\n")
