"""The reference oracle for the differential test (``tests/test_oracle.py``): where it is, how it is
installed, how scenarios are generated and how the reference runs them.

The oracle is a folder (``HYPERDB_ORACLE``, else ``<repo>/../shared/oracle``) holding ``run.js``,
which executes a JSON scenario against the reference hyperdb 3.5.0 on Node, its lock file, the
scenario generator ``gen.py`` and hand-written scenarios (its ``README.md`` is the contract). The
folder is never written to: its files are copied into ``<repo>/.cache/oracle/`` (git-ignored) and
``npm ci`` installs the pinned reference there, once. Reference outputs are cached there too, one
file per scenario named by the SHA-256 of the scenario's canonical JSON, so only the first run of a
fresh clone pays for Node. A change to any oracle file or to the Node version empties the cache.

Everything that is missing (the folder, ``node``, ``npm``, a working install) raises
:class:`OracleUnavailable` with a reason meant for a pytest skip message.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "oracle"
RESULTS = CACHE / "results"
ORACLE_FILES = ("package.json", "package-lock.json", "run.js", "model.js", "gen.py", "hashpath.py")
ORACLE_FOLDERS = ("scenarios", "expected")
ROOT_KEY_SUBSTITUTE = "_root"
"""Writes to the root key (``""``, ``"/"``) become writes to this key on both sides: hyperdb
refuses the root key (``InvalidKey``), the reference writes it (see ``spec/deviations.md``)."""
RUN_TIMEOUT = 300.0
"""Seconds one ``node run.js`` may take (run.js itself gives up on a step after 15 s)."""
STACK_LINE = re.compile(r"^(npm error)?\s+at ")
NPM_TIMEOUT = 300.0
"""Seconds ``npm ci`` may take (under pytest's per-test timeout of 600 s)."""

Scenario = dict[str, Any]
Output = dict[str, Any]


class OracleUnavailable(Exception):
    """The reference cannot be used here; the message says why (a pytest skip reason)."""


# --- the oracle folder ---------------------------------------------------------------------------


def oracle_dir() -> Path:
    """The oracle folder: ``$HYPERDB_ORACLE`` or ``<repo>/../shared/oracle``."""
    configured = os.environ.get("HYPERDB_ORACLE")
    folder = Path(configured) if configured else ROOT.parent / "shared" / "oracle"
    how = "from HYPERDB_ORACLE" if configured else "the default; HYPERDB_ORACLE is unset"
    if not folder.is_dir():
        missing = "it does not exist"
    else:
        names = [name for name in (*ORACLE_FILES, *ORACLE_FOLDERS) if not (folder / name).exists()]
        missing = f"it lacks {', '.join(names)}" if names else ""
    if missing:
        raise OracleUnavailable(
            f"no reference oracle at {folder} ({how}): {missing}; set HYPERDB_ORACLE to the "
            "oracle folder (run.js, gen.py, package-lock.json, scenarios/, expected/)"
        )
    return folder


def hand_written(folder: Path) -> list[tuple[str, Scenario]]:
    """The oracle's hand-written scenarios, ``(name without .json, scenario)``, by name."""
    out = []
    for path in sorted((folder / "scenarios").glob("*.json")):
        out.append((path.stem, json.loads(path.read_text(encoding="utf-8"))))
    return out


def expected_output(folder: Path, name: str) -> Output | None:
    """The reference output recorded in the oracle folder for a hand-written scenario."""
    path = folder / "expected" / f"{name}.json"
    if not path.exists():
        return None
    result: Output = json.loads(path.read_text(encoding="utf-8"))
    return result


def gen_flags(*, edge: bool = False, steps: int | None = None, writers: int | None = None) -> str:
    """The ``gen.py`` options for these settings (``""`` for its defaults)."""
    flags = " --edge" if edge else ""
    flags += f" --steps {steps}" if steps is not None else ""
    return flags + (f" --writers {writers}" if writers is not None else "")


def generate(
    folder: Path,
    first_seed: int,
    count: int,
    *,
    edge: bool = False,
    steps: int | None = None,
    writers: int | None = None,
) -> list[Scenario]:
    """``count`` scenarios from ``gen.py`` (stdlib Python, deterministic), seeds ``first_seed``
    onwards, exactly as ``gen.py --seed S`` with :func:`gen_flags` prints them one by one."""
    if count <= 0:
        return []
    command = [sys.executable, str(folder / "gen.py"), "--seed", str(first_seed)]
    command += ["--count", str(count), *gen_flags(edge=edge, steps=steps, writers=writers).split()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise OracleUnavailable(f"gen.py failed ({done.returncode}): {done.stderr[-2000:]}")
    scenarios = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    if len(scenarios) != count:
        raise OracleUnavailable(f"gen.py printed {len(scenarios)} scenarios, not {count}")
    return scenarios


# --- scenario forms ---------------------------------------------------------------------------


def normalize_key(key: str) -> str:
    """hyperdb's key normalization (leading, trailing and repeated slashes dropped), written out
    here independently of the implementation."""
    return "/".join(part for part in key.split("/") if part)


def _each_key_field(scenario: Scenario) -> Iterator[dict[str, Any]]:
    for step in scenario.get("steps", []):
        yield step
        if step.get("op") == "batch":
            yield from step.get("ops", [])


def without_root_writes(scenario: Scenario) -> Scenario:
    """The scenario with every write of the root key (``put``/``del``/batch item of a key that
    normalizes to ``""``) turned into the same write of :data:`ROOT_KEY_SUBSTITUTE`. Step indices,
    sequence numbers and which instances hold data stay as they were."""
    out = copy.deepcopy(scenario)
    for step in out.get("steps", []):
        writes = step.get("ops", []) if step.get("op") == "batch" else [step]
        for write in writes:
            is_write = write is not step or step.get("op") in ("put", "del")
            key = write.get("key")
            if is_write and isinstance(key, str) and normalize_key(key) == "":
                write["key"] = ROOT_KEY_SUBSTITUTE
    return out


def with_normalized_keys(scenario: Scenario) -> Scenario:
    """The scenario with every key and prefix fully normalized: what the reference runs, so that
    its answers are those for the keys hyperdb actually stores (the reference keeps ``a/``,
    ``a//b`` and ``a`` apart and lists ``foo/`` without ``foo``)."""
    out = copy.deepcopy(scenario)
    for item in _each_key_field(out):
        for field in ("key", "prefix"):
            if isinstance(item.get(field), str):
                item[field] = normalize_key(item[field])
    return out


def scenario_hash(scenario: Scenario) -> str:
    """SHA-256 of the scenario's canonical JSON: the name of its cached reference output."""
    text = json.dumps(scenario, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- the installed reference --------------------------------------------------------------------


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise OracleUnavailable(
            f"{name} is not on PATH: the differential test runs the reference hyperdb 3.5.0 on "
            "Node.js (20 was used) installed with npm"
        )
    return found


def _fingerprint(folder: Path, node: str) -> str:
    digest = hashlib.sha256()
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=60)
    digest.update(version.stdout.strip().encode())
    for name in ORACLE_FILES:
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    for sub in ORACLE_FOLDERS:
        for path in sorted((folder / sub).glob("*")):
            digest.update(f"{sub}/{path.name}".encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Reference:
    """The reference installed in ``.cache/oracle/``: runs scenarios, caching every output."""

    def __init__(self, node: str, cache: Path = CACHE) -> None:
        self.node = node
        self.cache = cache
        self.results = cache / "results"

    @classmethod
    def install(cls, folder: Path) -> Reference:
        """Copy the oracle into ``.cache/oracle/`` and ``npm ci`` there, unless the copy there
        is already installed from identical files with the same Node (then this is instant)."""
        node = _tool("node")
        npm = _tool("npm")
        stamp = _fingerprint(folder, node)
        with _install_lock():
            stamp_file = CACHE / "installed"
            if stamp_file.exists() and stamp_file.read_text() == stamp:
                return cls(node)
            stamp_file.unlink(missing_ok=True)
            for name in (*ORACLE_FOLDERS, "results", "node_modules"):
                shutil.rmtree(CACHE / name, ignore_errors=True)
            for name in ORACLE_FILES:  # copyfile: the copies are writable, whatever the source
                shutil.copyfile(folder / name, CACHE / name)
            for sub in ORACLE_FOLDERS:
                (CACHE / sub).mkdir()
                for path in sorted((folder / sub).glob("*")):
                    shutil.copyfile(path, CACHE / sub / path.name)
            command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"]
            try:
                done = subprocess.run(
                    command, cwd=CACHE, capture_output=True, text=True, timeout=NPM_TIMEOUT
                )
            except subprocess.TimeoutExpired as exc:
                raise OracleUnavailable(
                    f"`npm ci` in {CACHE} did not finish in {NPM_TIMEOUT:.0f} s"
                ) from exc
            if done.returncode != 0:
                log = CACHE / "npm-ci.log"
                log.write_text(done.stdout + done.stderr)
                said = (done.stdout + done.stderr).strip().splitlines()
                said = [line for line in said if not STACK_LINE.match(line)]
                tail = "\n".join(said[-12:])
                raise OracleUnavailable(
                    f"`npm ci` in {CACHE} failed (exit {done.returncode}; the reference is "
                    f"installed from the npm registry once; full log in {log}). npm said:\n{tail}"
                )
            (CACHE / "results").mkdir(exist_ok=True)
            stamp_file.write_text(stamp)
        return cls(node)

    def cached(self, scenario: Scenario) -> Output | None:
        path = self.results / f"{scenario_hash(scenario)}.json"
        if not path.exists():
            return None
        output: Output = json.loads(path.read_text(encoding="utf-8"))
        return output

    def run(self, scenario: Scenario) -> Output:
        """The reference's output for ``scenario`` (cached). A crash or timeout comes back as
        ``{"fatal": ...}`` and is not cached."""
        output = self.cached(scenario)
        if output is not None:
            return output
        text = json.dumps(scenario, ensure_ascii=False)
        try:
            done = subprocess.run(
                [self.node, "run.js"],
                cwd=self.cache,
                input=text.encode("utf-8"),
                capture_output=True,
                timeout=RUN_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            return {"fatal": f"node run.js did not finish in {RUN_TIMEOUT:.0f} s"}
        try:
            output = json.loads(done.stdout.decode("utf-8"))
        except ValueError:
            stderr = done.stderr.decode("utf-8", "replace")[-2000:]
            return {"fatal": f"node run.js exited {done.returncode} without JSON: {stderr}"}
        if not isinstance(output, dict):
            return {"fatal": f"node run.js printed {output!r}"}
        if "results" in output and not {"fatal", "aborted", "invalid"} & set(output):
            path = self.results / f"{scenario_hash(scenario)}.json"
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(output), encoding="utf-8")
            os.replace(partial, path)
        return output

    def run_all(self, scenarios: Iterable[Scenario], jobs: int | None = None) -> int:
        """Run every scenario whose output is not cached yet, ``jobs`` node processes at a time
        (see :class:`Prefetch`), and wait for them. Returns how many ran."""
        with Prefetch(self, scenarios, jobs) as prefetch:
            return prefetch.wait()


def default_jobs() -> int:
    """Node processes run at a time: ``$HYPERDB_ORACLE_JOBS``, else the number of CPUs (each
    reference run keeps one core busy; more processes than cores gain nothing)."""
    return max(1, int(os.environ.get("HYPERDB_ORACLE_JOBS") or os.cpu_count() or 2))


class Prefetch:
    """Runs the reference on scenarios not cached yet, in the background, in order, ``jobs`` at a
    time. :meth:`run` waits only for the scenario asked for, so tests start comparing while the
    rest is still running and no single test waits for all of them."""

    def __init__(
        self, reference: Reference, scenarios: Iterable[Scenario], jobs: int | None = None
    ) -> None:
        self.reference = reference
        self._pool = ThreadPoolExecutor(max_workers=jobs or default_jobs())
        self._futures: dict[str, Future[Output]] = {}
        for scenario in scenarios:
            name = scenario_hash(scenario)
            if name not in self._futures and reference.cached(scenario) is None:
                self._futures[name] = self._pool.submit(reference.run, scenario)

    def run(self, scenario: Scenario) -> Output:
        future = self._futures.get(scenario_hash(scenario))
        return future.result() if future is not None else self.reference.run(scenario)

    def wait(self) -> int:
        """Wait for every scenario; how many were run."""
        for future in self._futures.values():
            future.result()
        return len(self._futures)

    def close(self) -> None:
        """Cancel what has not started; wait for the node processes running now."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def hashpath_module(folder: Path) -> Any:
    """The oracle's ``hashpath.py`` (stdlib SipHash and hash order), loaded from its folder: an
    order check that shares no code with the implementation."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("oracle_hashpath", folder / "hashpath.py")
    if spec is None or spec.loader is None:
        raise OracleUnavailable(f"cannot load {folder / 'hashpath.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# timing: python -m tests.helpers.oracle_reference [first_seed count [--edge]]
if __name__ == "__main__":
    import time

    here = oracle_dir()
    first, count = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (0, 300)
    started = time.monotonic()
    reference = Reference.install(here)
    installed = time.monotonic()
    batch = [
        with_normalized_keys(without_root_writes(s))
        for s in generate(here, first, count, edge="--edge" in sys.argv)
    ]
    ran = reference.run_all(batch)
    done_at = time.monotonic()
    print(
        f"install {installed - started:.1f} s; {ran} of {len(batch)} scenarios run by the "
        f"reference in {done_at - installed:.1f} s"
    )
