"""What benchmarks that run parts of themselves in other processes share: the command line of a
child running one function of a benchmark module, reading the line a child prints when it is
ready or done (bounded in time), and this process's memory as ``/proc/self/status`` gives it."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def child(module: str, function: str, *args: Any) -> list[str]:
    """The command line running ``function(*args)`` of ``benchmarks.<module>`` in a fresh
    interpreter (the arguments passed as JSON)."""
    code = (
        "import json, sys\n"
        f"from benchmarks import {module} as b\n"
        f"b.{function}(*json.loads(sys.argv[1]))\n"
    )
    return [sys.executable, "-c", code, json.dumps(args)]


def read_line(process: subprocess.Popen[str], expected: str, timeout: float, log: Path) -> str:
    """The rest of the first line ``process`` prints that starts with ``expected``; an error
    with the end of its ``log`` (its stderr) if none comes within ``timeout`` seconds."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0 and selector.select(left):
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith(expected):
                return line[len(expected) :].strip()
    said = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"no {expected.strip()!r} line within {timeout:.0f} s:\n{said}")


def proc_status(field: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` in MiB (None: no such file or field)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
