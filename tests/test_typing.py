"""The public API's types help their users: mypy checks what a batch's ``put`` is given and
knows what ``batch(ops)`` returns. (Mutation caught: ``batch`` typed ``-> Any`` again, as it
was, lets both mistakes below through.)"""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = """
import hyperdb
db = hyperdb.open(memory=True)
with db.batch() as b:
    b.put("a", b"x")
    b.put(1, b"x")
nodes = db.batch([{"key": "a", "value": b"1"}])
nodes.append(3)
"""


def test_mypy_checks_a_batch(tmp_path: Path) -> None:
    path = tmp_path / "snippet.py"
    path.write_text(SNIPPET)
    out, _, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(path)]
    )
    assert status == 1, out
    assert 'Argument 1 to "put" of "Batch" has incompatible type "int"' in out
    assert 'Argument 1 to "append" of "list" has incompatible type "int"' in out
    assert out.count("error:") == 2, out
