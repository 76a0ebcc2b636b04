"""Damaged ``data.mdb`` files, at random: every command answers or fails cleanly, and ``verify``
sees every change.

A database of two writers is built once; then 240 cases (a fixed seed) each damage a copy of its
``data.mdb`` (cut it short, zero a run of bytes, or flip bits; a quarter of them aimed at the two
header pages) and run ``ls``, ``get``, ``history``, ``writers``, ``info``, ``verify`` and a
``put`` on it (``tests/helpers/store_fuzz.py``, a worker process fed the cases one by one). The
rules:

- no command ends the process with a signal (a SIGBUS from a file cut short was the bug) or lets
  an exception other than hyperdb's escape (a traceback);
- a failing command says so on one line, ``hyperdb: error: ... [code]``, with a documented exit;
- whenever a read answers differently from the undamaged database, or fails, ``verify`` exits 5.

Mutations tried: without the length check of ``storage/lmdb_file.py`` the truncation cases die
with SIGBUS (caught as a signal); with ``verify`` opening the store writable again, an emptied
file became a new database and verify said ok (caught by the last rule).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import hyperdb
from tests.helpers.store_fuzz import PREFIX, READS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CASES = 240
SEED = 2126
ERROR_LINE = "hyperdb: error: "
EXITS = {0, 1, 5}  # ok, an error the message explains, damage found by verify
ROOT = Path(__file__).resolve().parent.parent


def build(path: Path) -> None:
    """Two writers, puts, a delete and a conflict, on LMDB."""
    with (
        hyperdb.open(path, value_encoding="utf-8") as first,
        hyperdb.open(memory=True, key=first.key, value_encoding="utf-8") as second,
    ):
        for i in range(40):
            first.put(f"fuzz/k{i}", f"value {i} " * 8)
        first.authorize(second.local_key)
        hyperdb.replicate(first, second)
        for i in range(0, 40, 3):
            second.put(f"fuzz/k{i}", f"second {i}")
        first.put("fuzz/k3", "concurrent")
        first.delete("fuzz/k5")
        hyperdb.replicate(first, second)


def make_cases(size: int) -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    cases = []
    for number in range(CASES):
        kind = ("truncate", "zero", "flip")[number % 3]
        header = number % 4 == 0  # aim at the two header pages
        offset = rng.randrange(2 * 4096 if header else size)
        if kind == "truncate" and rng.random() < 0.3:
            offset -= offset % 4096  # a whole number of pages
        cases.append(
            {
                "case": number,
                "kind": kind,
                "offset": offset,
                "size": rng.choice((1, 2, 8, 64, 512)),
                "bits": [1 << rng.randrange(8) for _ in range(4)],
            }
        )
    return cases


def run_cases(base: Path, work: Path, cases: list[dict[str, Any]]) -> dict[int, Any]:
    """Every case's results, or ``{"signal": n}`` for a case that killed the worker."""
    results: dict[int, Any] = {}
    pending = list(cases)
    deadline = time.monotonic() + 800
    while pending and time.monotonic() < deadline:
        worker = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.store_fuzz", str(base), str(work)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        out, _ = worker.communicate("".join(json.dumps(c) + "\n" for c in pending), timeout=800)
        started = None
        for line in out.splitlines():
            if not line.startswith(PREFIX):
                continue
            message = json.loads(line[len(PREFIX) :])
            if "start" in message:
                started = message["start"]
            else:
                results[message["case"]] = message["results"]
                started = None
        if worker.returncode != 0 and started is not None:
            results[started] = {"signal": -worker.returncode}
        pending = [c for c in pending if c["case"] not in results]
        if worker.returncode == 0:
            break
    return results


def test_damaged_store_files(tmp_path: Path) -> None:
    base = tmp_path / "base"
    build(base)
    work = tmp_path / "work"
    undamaged = run_cases(base, work, [{"case": -1, "kind": "zero", "offset": 0, "size": 0}])
    expected = undamaged[-1]
    assert all(r["code"] == 0 for r in expected.values()), expected
    cases = make_cases((base / "data.mdb").stat().st_size)
    results = run_cases(base, work, cases)
    assert sorted(results) == [c["case"] for c in cases]

    problems = []
    kinds: dict[str, int] = {}
    for case in cases:
        result = results[case["case"]]
        if "signal" in result:
            problems.append((case, f"killed by signal {result['signal']}"))
            continue
        for name, got in result.items():
            if got["code"] is None:
                problems.append((case, f"{name}: traceback\n{got['err']}"))
            elif got["code"] not in EXITS:
                problems.append((case, f"{name}: exit {got['code']}: {got['err']}"))
            elif (
                got["code"] != 0
                and not (got["err"].startswith(ERROR_LINE) and got["err"].count("\n") == 1)
                and name != "verify"
            ):
                problems.append((case, f"{name}: unclear failure {got['err']!r}"))
        differs = [
            name
            for name in READS
            if name != "info"
            and (result[name]["code"] != 0 or result[name]["out"] != expected[name]["out"])
        ]
        verdict = result["verify"]["code"]
        if differs and verdict != 5:
            problems.append((case, f"reads {differs} changed but verify exited {verdict}"))
        outcome = "damaged" if verdict == 5 else "unchanged" if not differs else "?"
        kinds[outcome] = kinds.get(outcome, 0) + 1
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(
        f"{c}: {p.strip().splitlines()[0]} ... {p.strip().splitlines()[-1]}" for c, p in problems
    )
    assert kinds.get("damaged", 0) >= CASES // 4, kinds  # most damage is found, not missed
    shutil.rmtree(work, ignore_errors=True)
