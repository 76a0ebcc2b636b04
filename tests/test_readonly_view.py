"""A read-only view beside a writing process: its ``get`` reads the index while the store is
still at the view's moment, and the tries of its heads once another process wrote; either way
it answers as of the moment it was opened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import hyperdb

WRITE = (
    "import hyperdb, sys\n"
    "db = hyperdb.open(sys.argv[1], value_encoding='utf-8')\n"
    "db.put('a', 'changed'); db.delete('b'); db.put('c', 'new')\n"
    "db.close()\n"
)


@pytest.mark.integration
def test_a_view_answers_as_of_its_moment_before_and_after_another_process_writes(
    tmp_path: Path,
) -> None:
    """Mutation caught: the heads check left out, so the view read the index of the newer
    moment (``a`` answered "changed")."""
    path = tmp_path / "db"
    db = hyperdb.open(path, value_encoding="utf-8")
    db.batch([{"key": key, "value": f"{key} first"} for key in ("a", "b")])
    db.close()
    view = hyperdb.open(path, readonly=True)
    before = {key: [n.value for n in view.get(key)] for key in ("a", "b", "c")}
    assert before == {"a": ["a first"], "b": ["b first"], "c": []}
    assert view.get("a") == view.snapshot().get("a")  # the index and the tries agree
    subprocess.run([sys.executable, "-c", WRITE, str(path)], check=True, timeout=60)
    after = {key: [n.value for n in view.get(key)] for key in ("a", "b", "c")}
    assert after == before
    view.close()
    fresh = hyperdb.open(path, readonly=True)
    assert [n.value for n in fresh.get("a")] == ["changed"] and fresh.get("b") == []
    fresh.close()
