"""The reference runner: the harness's workloads on the original HyperDB 3.5.0 under Node.

The reference is the one the differential tests use, installed from the oracle's lock file into
``.cache/oracle/`` (``tests.helpers.oracle_reference``; ``npm ci --ignore-scripts``, so libsodium is
the pure-JavaScript build, about ten times slower at signing than the native one: it weighs on the
reference's single puts). ``benchmarks/reference/workloads.js`` runs the same operations, key shapes
and sizes as ``benchmarks.workloads``, on disk (random-access-file; the reference never fsyncs), and
prints one JSON line per result; ``benchmarks/reference/replication.js`` does the same for
replication over loopback TCP, many writers (each count in a child process killed after a timeout,
reported as such) and the feed alone. Run alone: ``python -m benchmarks.reference``; ``python -m
benchmarks.reference --build-native`` installs a copy with native libsodium (built from source),
which every later run then uses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness import Row, row

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve().parent / "reference" / "workloads.js"
REPLICATION_SCRIPT = Path(__file__).resolve().parent / "reference" / "replication.js"
WORKLOADS = ("load", "put", "batch", "get", "list", "history", "diff", "checkout-get")
REPLICATION_WORKLOADS = ("replicate", "writers", "feed-append", "feed-verify")
TIMEOUT = 1800.0
_described = "HyperDB 3.5.0 on Node"


NATIVE = ROOT / ".cache" / "reference-native"


def _native_works(folder: Path) -> bool:
    if not (folder / "node_modules" / "sodium-native").is_dir():
        return False
    done = subprocess.run(
        ["node", "-e", "require('sodium-native')"],
        cwd=folder,
        capture_output=True,
        timeout=60,
    )
    return done.returncode == 0


def _install() -> Path:
    """The installed reference's folder: the one with native libsodium when it was built
    (:func:`build_native`), else the oracle's install (pure-JavaScript libsodium), installed on
    first use."""
    if (NATIVE / "node_modules" / "hyperdb").is_dir() and _native_works(NATIVE):
        return NATIVE
    sys.path.insert(0, str(ROOT))
    from tests.helpers.oracle_reference import Reference, oracle_dir

    Reference.install(oracle_dir())
    return ROOT / ".cache" / "oracle"


def build_native() -> str:
    """Install the reference again, from the oracle's lock file, into ``.cache/reference-native``
    with ``sodium-native@2`` built from source (it needs Debian's libtool, autoconf and automake:
    installed with apt-get when missing and allowed). Returns what happened."""
    sys.path.insert(0, str(ROOT))
    from tests.helpers.oracle_reference import oracle_dir

    NATIVE.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(oracle_dir() / name, NATIVE / name)
    if shutil.which("autoconf") is None or shutil.which("libtoolize") is None:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "libtool", "autoconf", "automake"],
            capture_output=True,
            timeout=600,
        )
    steps = (
        ["npm", "ci", "--no-audit", "--no-fund"],
        ["npm", "install", "--no-audit", "--no-fund", "--no-save", "sodium-native@2"],
    )
    for command in steps:
        done = subprocess.run(command, cwd=NATIVE, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}"
    return "native libsodium built" if _native_works(NATIVE) else "sodium-native does not load"


def available() -> str | None:
    """None if the reference can run here, else why not."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "Node.js and npm are not installed"
    try:
        folder = _install()
    except Exception as exc:  # OracleUnavailable and anything the install meets
        return f"the reference could not be installed: {exc}".splitlines()[0]
    if not (folder / "node_modules" / "hyperdb").is_dir():
        return f"no hyperdb in {folder / 'node_modules'}"
    return None


def describe() -> str:
    return _described


def run(names: list[str], *, sizes: list[int], repeat: int = 3, quick: bool = False) -> list[Row]:
    """The reference's rows for the database workloads among ``names`` at ``sizes``."""
    wanted = [name for name in names if name in WORKLOADS]
    if not wanted or not sizes:
        return []
    config = {"workloads": wanted, "sizes": sizes, "repeat": repeat, "quick": quick}
    return _node(SCRIPT, config, TIMEOUT)


def run_replication(
    names: list[str],
    *,
    entries: int = 10_000,
    writers: list[int] | None = None,
    blocks: int = 2_000,
    repeat: int = 3,
    timeout: float = 120.0,
) -> list[Row]:
    """The reference's rows for the replication workloads among ``names``: a cold replica of
    ``entries`` entries over loopback TCP, ``writers`` (counts) converging in a full mesh, the
    feed appending and verifying ``blocks``. A writer count that does not converge within
    ``timeout`` seconds gives a row marked ``timeout`` (its time is at least that)."""
    wanted = [name for name in names if name in REPLICATION_WORKLOADS]
    if not wanted:
        return []
    config = {
        "workloads": wanted,
        "entries": entries,
        "writers": writers or [],
        "blocks": blocks,
        "repeat": repeat,
        "timeout": timeout,
    }
    budget = TIMEOUT + timeout * (len(writers or []) + 1)
    return _node(REPLICATION_SCRIPT, config, budget)


def failed(workload: str, size: int, unit: str, error: str) -> Row:
    """The row of a reference run that failed (``error`` says how): no figures."""
    return {"workload": workload, "size": size, "impl": "reference", "unit": unit, "error": error}


def _node(script: Path, config: dict[str, Any], timeout: float) -> list[Row]:
    """Run a reference script with ``config`` and turn its JSON lines into rows."""
    global _described
    folder = _install()
    env = {**os.environ, "NODE_PATH": str(folder / "node_modules")}
    done = subprocess.run(
        ["node", str(script), json.dumps(config)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the reference runner failed: {done.stderr.strip()[-2000:]}")
    rows: list[Row] = []
    for line in done.stdout.splitlines():
        data: dict[str, Any] = json.loads(line)
        if "sodium" in data:
            _described = f"HyperDB 3.5.0 on Node {data['node']}, {data['sodium']} libsodium"
            continue
        if not data["reps"] and "error" in data:  # failed: a row saying so, for the table
            rows.append(failed(data["workload"], data["size"], data["unit"], data["error"]))
            continue
        if not data["reps"] and "timeout" in data:  # did not finish: at least the timeout
            found = row(
                data["workload"], data["size"], data["unit"], [data["timeout"]], "reference"
            )
            found["timeout"] = True
            rows.append(found)
            continue
        rows.append(row(data["workload"], data["size"], data["unit"], data["reps"], "reference"))
    return rows


def main(argv: list[str] | None = None) -> int:
    from benchmarks import harness

    args = sys.argv[1:] if argv is None else argv
    if "--build-native" in args:
        print(build_native())
        return 0
    quick = "--quick" in args
    reason = available()
    if reason is not None:
        print(f"reference skipped: {reason}")
        return 0
    rows = run(list(WORKLOADS), sizes=[1_000] if quick else [10_000], repeat=1 if quick else 3)
    rows += run_replication(
        list(REPLICATION_WORKLOADS),
        entries=1_000 if quick else 10_000,
        writers=[3] if quick else [5, 20],
        blocks=500 if quick else 2_000,
        repeat=1 if quick else 3,
    )
    print(describe())
    for r in rows:
        print(
            f"{r['workload']:<14} {r['size']:>8,}  "
            f"{harness.fmt(r['median'], r['unit'])} {r['unit']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
