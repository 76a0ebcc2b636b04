"""Durability: a child process writes and reports every put that returned; the parent kills it with
SIGKILL at random moments. Every reported put must be there after reopening, and the feed and
the index must verify."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hyperdb

CHILD = r"""
import sys
import hyperdb
path, start = sys.argv[1], int(sys.argv[2])
with hyperdb.open(path) as db:
    i = start
    while True:
        if i % 7 == 6:
            db.batch([{"key": f"k/{i}", "value": b"v%d" % i},
                      {"key": f"k/{i}/b", "value": b"b%d" % i}])
        else:
            db.put(f"k/{i}", b"v%d" % i)
        print(i, flush=True)
        i += 1
"""


pytestmark = pytest.mark.integration


def test_sigkill_loses_no_acknowledged_write(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    rng = random.Random(20261122)
    acknowledged: list[int] = []
    for _ in range(20):
        start = acknowledged[-1] + 1 if acknowledged else 0
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, path, str(start)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        )
        assert child.stdout is not None
        deadline = time.monotonic() + rng.uniform(0.05, 0.4)
        first = child.stdout.readline()  # wait until it is writing
        assert first, "the child process did not start writing"
        acknowledged.append(int(first))
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acknowledged.append(int(line))
        child.send_signal(signal.SIGKILL)
        # lines already written to the pipe were acknowledged before the kill
        acknowledged.extend(int(line) for line in child.stdout.read().split())
        child.wait(timeout=30)
        child.stdout.close()
        with hyperdb.open(path) as db:
            for i in acknowledged[-50:] + acknowledged[:5]:
                assert [n.value for n in db.get(f"k/{i}")] == [b"v%d" % i], i
            db._local.verify()
    with hyperdb.open(path) as db:
        present = {key for key, _ in db.range(gte="k/", lt="k0")}
        assert {f"k/{i}" for i in acknowledged} <= present
        for key, nodes in db.range():
            assert db.snapshot().get(key) == nodes
    assert len(acknowledged) > 40
