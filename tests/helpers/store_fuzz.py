"""A worker that damages copies of a database's ``data.mdb`` and runs the command line on each.

Run as ``python -m tests.helpers.store_fuzz BASE WORK`` with one case per line of JSON on stdin
(``{"case": n, "kind": "truncate" | "zero" | "flip", "offset": o, "size": s, "bits": [...]}``);
for each case it copies the database directory ``BASE`` into ``WORK``, damages the copy's
``data.mdb``, runs the commands of :func:`commands` through ``hyperdb.cli.main`` in this process,
and prints one line (:data:`PREFIX` and JSON): the case number and, per command, its exit code,
its output and its error output, or the traceback of an exception that escaped the command
line. A case that kills the process (a signal) prints nothing after its ``start`` line, so the
parent knows which it was.
``python -m tests.helpers.store_fuzz BASE`` with no cases prints the undamaged answers.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

from hyperdb.cli import main

READS = ("ls", "get", "history", "writers", "info")
PREFIX = "@@store-fuzz "  # the worker's own lines; anything else on its output is not parsed


def commands(db: str) -> list[tuple[str, list[str]]]:
    """The commands run on every damaged copy: the reads first, then verify, then a write."""
    return [
        ("ls", ["ls", db, "--json"]),
        ("get", ["get", db, "fuzz/k7", "--json"]),
        ("history", ["history", db, "--json"]),
        ("writers", ["writers", db, "--json"]),
        ("info", ["info", db]),
        ("verify", ["verify", db]),
        ("put", ["put", db, "fuzz/after", "written"]),
    ]


def run_command(argv: list[str]) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except BaseException:  # what the test looks for: anything escaping the command line
        return {"code": None, "out": out.getvalue(), "err": traceback.format_exc()}
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}


def damage(path: Path, case: dict[str, Any]) -> None:
    kind, offset = case["kind"], case["offset"]
    with path.open("r+b") as file:
        if kind == "truncate":
            file.truncate(offset)
            return
        file.seek(offset)
        data = bytearray(file.read(case["size"]))
        for i in range(len(data)):
            data[i] = 0 if kind == "zero" else data[i] ^ case["bits"][i % len(case["bits"])]
        file.seek(offset)
        file.write(data)


def answers(db: str) -> dict[str, Any]:
    return {name: run_command(argv) for name, argv in commands(db)}


def report(message: dict[str, Any]) -> None:
    print(PREFIX + json.dumps(message), file=sys.__stdout__, flush=True)


def worker(base: Path, work: Path) -> None:
    for line in sys.stdin:
        case = json.loads(line)
        report({"start": case["case"]})
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, work)
        damage(work / "data.mdb", case)
        report({"case": case["case"], "results": answers(str(work))})


if __name__ == "__main__":
    if len(sys.argv) == 2:
        print(json.dumps(answers(sys.argv[1])))
    else:
        worker(Path(sys.argv[1]), Path(sys.argv[2]))
