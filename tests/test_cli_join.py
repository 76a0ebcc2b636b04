"""``hyperdb join`` as a user runs it: two replicas in two processes, one told where the other
is (``--peer``), stay in sync live; a write through the control socket of one reaches the
other; bad options are usage errors. (LAN discovery across processes: ``test_join_lan.py``;
the swarm's rules: ``test_swarm.py``.)"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.cli_process import hyperdb_command, run

pytestmark = pytest.mark.integration


def start_joining(name: str, cwd: Path, *options: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [*hyperdb_command(), "join", name, "--host", "127.0.0.1", "--quiet", *options],
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.startswith("joined "), first
    return process, int(first.split(" on port ")[1].split()[0])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: object, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)


def test_two_joined_replicas_stay_in_sync_and_writes_go_through_the_joining_process(
    tmp_path: Path,
) -> None:
    """Mutation caught: join serving without answering the control socket (the put beside it
    then fails with in_use)."""
    assert run("init", "a", cwd=tmp_path).returncode == 0
    key = run("info", "a", "--json", cwd=tmp_path).stdout.split('"database": "')[1][:64]
    assert run("init", "b", "--key", key, cwd=tmp_path).returncode == 0
    b_key = run("info", "b", "--json", cwd=tmp_path).stdout.split('"writer": "')[1][:64]
    assert run("authorize", "a", b_key, cwd=tmp_path).returncode == 0
    a_port, b_port = free_port(), free_port()
    # each is told where the other is: both dial, and one session per pair is kept
    a, _ = start_joining("a", tmp_path, "--port", str(a_port), "--peer", f"127.0.0.1:{b_port}")
    b, _ = start_joining("b", tmp_path, "--port", str(b_port), "--peer", f"127.0.0.1:{a_port}")
    try:
        put = run("put", "a", "greeting", "hello", cwd=tmp_path)  # through a's joining process
        assert put.returncode == 0, put.stderr

        def arrived() -> bool:
            got = run("get", "b", "greeting", cwd=tmp_path)
            return got.returncode == 0 and "hello" in got.stdout

        wait_for(arrived)
        put = run("put", "b", "reply", "hi", cwd=tmp_path)  # b was authorized by a's grant
        assert put.returncode == 0, put.stderr
        wait_for(lambda: "hi" in run("get", "a", "reply", cwd=tmp_path).stdout)
    finally:
        for process in (a, b):
            process.send_signal(signal.SIGINT)
        for process in (a, b):
            out, _ = process.communicate(timeout=20)
            assert process.returncode == 0
            assert "left the swarm" in out


def test_join_needs_a_way_to_find_peers(tmp_path: Path) -> None:
    assert run("init", "a", cwd=tmp_path).returncode == 0
    nothing = run("join", "a", cwd=tmp_path)
    assert nothing.returncode == 1 and "--lan" in nothing.stderr
    lonely = run("join", "a", "--dht", cwd=tmp_path)
    assert lonely.returncode == 1 and "--bootstrap" in lonely.stderr
    stray = run("join", "a", "--bootstrap", "127.0.0.1:9", cwd=tmp_path)
    assert stray.returncode == 1 and "--dht" in stray.stderr
