"""The installed ``hyperdb`` command, run in a subprocess (the console script beside the
interpreter, else the one on ``PATH``, else ``python -m hyperdb``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def hyperdb_command() -> list[str]:
    script = Path(sys.executable).parent / "hyperdb"
    if script.exists():
        return [str(script)]
    found = shutil.which("hyperdb")
    return [found] if found else [sys.executable, "-m", "hyperdb"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``hyperdb ARGS...`` in ``cwd``, its output captured as text (two minutes at most)."""
    return subprocess.run(
        [*hyperdb_command(), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def start_serving(name: str, cwd: Path) -> tuple[subprocess.Popen[str], str]:
    """``hyperdb serve NAME --port 0 --quiet`` in the background, in ``cwd``: the process and
    the address it serves on (``host:port``), read from its first line. The caller stops it."""
    server = subprocess.Popen(
        [*hyperdb_command(), "serve", name, "--port", "0", "--quiet"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    return server, server.stdout.readline().split()[-4]
