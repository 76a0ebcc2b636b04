"""Project-level checks: README's commands match CI, ruff and mypy --strict are clean, and the
layering rules hold (trie imports nothing from hyperdb; each third-party library in one module)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", text, flags=re.S)


def test_readme_gives_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    blocks = shell_blocks((ROOT / "README.md").read_text())
    assert len(blocks) == 2
    demo, tests = blocks
    assert "hyperdb demo" in demo and "pytest" in tests
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert tests.strip() in ci_lines


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return found


@pytest.mark.integration
def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_mypy_strict_is_clean() -> None:
    result = subprocess.run([tool("mypy")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_trie_is_pure() -> None:
    for path in (ROOT / "trie").rglob("*.py"):
        imported = imports_of(path)
        assert "hyperdb" not in imported, path
        assert not imported & {"lmdb", "nacl", "cbor2", "networkx", "socket", "asyncio"}, path


@pytest.mark.parametrize(
    ("library", "homes"),
    [
        ("nacl", ["hyperdb/primitives/crypto.py"]),
        ("cbor2", ["hyperdb/primitives/cbor.py"]),
        ("lmdb", ["hyperdb/storage/lmdb.py"]),
        ("noise", ["hyperdb/replication/secure.py"]),
        ("sqlite3", ["hyperdb/tools/mirror.py"]),
        # sockets: the replication transport, and the command line's local control socket (a
        # Unix socket beside a served database, no part of the replication protocol)
        ("socket", ["hyperdb/cli/control.py", "hyperdb/replication/net.py"]),
        ("networkx", ["hyperdb/tools/inspect.py"]),
        ("zeroconf", ["hyperdb/discovery/lan.py"]),
        ("ifaddr", ["hyperdb/discovery/lan.py"]),
        ("kademlia", ["hyperdb/discovery/dht.py"]),
    ],
)
def test_each_third_party_library_is_imported_in_one_module(library: str, homes: list[str]) -> None:
    users = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "hyperdb").rglob("*.py")
        if library in imports_of(p)
    )
    assert users == homes


@pytest.mark.integration
def test_readme_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    for number, code in enumerate(blocks):
        namespace: dict[str, object] = {"print": lambda *args, **kwargs: None}
        exec(compile(code, f"README.md python block {number}", "exec"), namespace)


def test_the_protocol_layers_are_sans_io() -> None:
    for name in ("connection.py", "wire.py", "secure.py", "session.py"):
        imported = imports_of(ROOT / "hyperdb" / "replication" / name)
        assert not imported & {"asyncio", "socket", "selectors", "threading"}, name
