"""Network namespaces for tests whose traffic must stay off the host's interfaces (mDNS, a DHT).

:func:`can_make_namespaces` says whether this machine lets a test make them (root, ``ip``,
``unshare``, veth and bridge links) and if not why, for ``pytest.skip``. :func:`lan` makes a
private LAN: one namespace per host, loopback up, each host's ``lan0`` (an address
``10.A.B.n/24``, multicast routed to it) joined to the others by a bridge in a namespace of its
own; nothing is created in the host's namespace, and everything is deleted on the way out, the
processes started in it first. Processes run in a host with :meth:`Lan.run` and
:meth:`Lan.spawn` (``ip netns exec``); :meth:`Lan.call` and :meth:`Lan.start` run an importable
Python function there (arguments and result as JSON). :func:`run_isolated` runs one command in a
new namespace with only loopback (``unshare -n``). Names are unique per test run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SETUP_TIMEOUT = 10.0
RESULT_MARK = "result "


def ip(*args: str) -> None:
    """``ip ARGS``; RuntimeError with its message when it fails."""
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=SETUP_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def unique_prefix() -> str:
    return f"hdb{os.getpid() % 100000}{secrets.token_hex(2)}"


@functools.cache
def can_make_namespaces() -> tuple[bool, str]:
    """Whether network namespaces (with veth pairs and a bridge) can be made here, and why not."""
    if os.geteuid() != 0:
        return False, "network namespaces need root (run as root, as .ci/run does)"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return False, f"no {tool!r} command (iproute2 / util-linux)"
    probe = unique_prefix()
    made: list[str] = []
    try:
        for suffix in ("a", "b"):
            ip("netns", "add", probe + suffix)
            made.append(probe + suffix)
        ip("-n", probe + "a", "link", "add", "br0", "type", "bridge")
        ip(
            "-n",
            probe + "a",
            "link",
            "add",
            "p0",
            "type",
            "veth",
            "peer",
            "lan0",
            "netns",
            probe + "b",
        )
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        return False, f"cannot make a network namespace here: {error}"
    finally:
        for name in made:
            with contextlib.suppress(RuntimeError, OSError, subprocess.SubprocessError):
                ip("netns", "del", name)
    return True, ""


def run_isolated(
    argv: Sequence[str], *, timeout: float, **options: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a new network namespace that has only loopback (up), and wait for it."""
    script = 'ip link set lo up && exec "$@"'
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", script, "sh", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **options,
    )


def python_call(function: Callable[..., Any], args: Sequence[Any]) -> list[str]:
    """The command line running ``function(*args)`` (an importable, module-level function; a
    coroutine function is run in its own loop) in a fresh interpreter, printing its result as
    one JSON line after :data:`RESULT_MARK`."""
    code = (
        "import asyncio, importlib, inspect, json, sys\n"
        "module, name, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])\n"
        "function = getattr(importlib.import_module(module), name)\n"
        "result = function(*args)\n"
        "if inspect.iscoroutine(result):\n"
        "    result = asyncio.run(result)\n"
        f"print({RESULT_MARK!r} + json.dumps(result), flush=True)\n"
    )
    return [
        sys.executable,
        "-c",
        code,
        function.__module__,
        function.__qualname__,
        json.dumps(args),
    ]


def result_of(stdout: str) -> Any:
    """The JSON result a :func:`python_call` printed."""
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_MARK)]
    if not lines:
        raise AssertionError(f"no result printed; stdout was:\n{stdout}")
    return json.loads(lines[-1][len(RESULT_MARK) :])


@dataclass
class Host:
    namespace: str
    address: str
    """Its IPv4 address on the LAN (on ``lan0``); ``127.0.0.1`` for a lone host."""


@dataclass
class Lan:
    """Hosts joined by one bridge, each in its own network namespace."""

    hosts: list[Host]
    namespaces: list[str]
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def command(self, host: int, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[host].namespace, *argv]

    def run(
        self, host: int, argv: Sequence[str], *, timeout: float, **options: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on ``host`` and wait (at most ``timeout`` seconds) for it."""
        return subprocess.run(
            self.command(host, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=ROOT,
            **options,
        )

    def spawn(self, host: int, argv: Sequence[str], **options: Any) -> subprocess.Popen[str]:
        """Start ``argv`` on ``host`` (stdin, stdout piped; stopped when the LAN is taken down)."""
        process = subprocess.Popen(
            self.command(host, argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            **options,
        )
        self.processes.append(process)
        return process

    def call(self, host: int, function: Callable[..., Any], *args: Any, timeout: float) -> Any:
        """``function(*args)`` run on ``host`` in a child interpreter; its JSON result."""
        done = self.run(host, python_call(function, args), timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"{function.__qualname__} failed on host {host}:\n{done.stderr}")
        return result_of(done.stdout)

    def start(self, host: int, function: Callable[..., Any], *args: Any) -> subprocess.Popen[str]:
        """``function(*args)`` started on ``host`` in a child interpreter, not waited for."""
        return self.spawn(host, python_call(function, args))

    def stop(self, process: subprocess.Popen[str], timeout: float = 5.0) -> tuple[str, str]:
        """Close ``process``'s stdin, wait for it (killed after ``timeout``); its output."""
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        return out, err


def read_line(process: subprocess.Popen[str], expected: str, timeout: float) -> str:
    """The first line ``process`` prints that starts with ``expected``, read within ``timeout``
    seconds (AssertionError otherwise, with what it printed)."""
    assert process.stdout is not None
    seen: list[str] = []
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                break
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith(expected):
                return line.rstrip("\n")
    raise AssertionError(f"no line {expected!r} in {timeout} s; printed: {''.join(seen)!r}")


@contextlib.contextmanager
def lan(hosts: int) -> Iterator[Lan]:
    """A private LAN of ``hosts`` namespaces (1 to 50) joined by a bridge; a lone host gets
    loopback only. Skips nothing itself: check :func:`can_make_namespaces` first."""
    if not 1 <= hosts <= 50:
        raise ValueError("a test LAN has 1 to 50 hosts")
    prefix = unique_prefix()
    net = f"10.{secrets.randbelow(254) + 1}.{secrets.randbelow(254) + 1}"
    made: list[str] = []
    network = Lan([], made)
    try:
        names = [f"{prefix}h{i}" for i in range(hosts)]
        for name in names:
            ip("netns", "add", name)
            made.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        if hosts == 1:
            network.hosts.append(Host(names[0], "127.0.0.1"))
        else:
            switch = f"{prefix}sw"
            ip("netns", "add", switch)
            made.append(switch)
            ip("-n", switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
            ip("-n", switch, "link", "set", "br0", "up")
            for i, name in enumerate(names):
                port = f"p{i}"
                ip("-n", switch, "link", "add", port, "type", "veth", "peer", "lan0", "netns", name)
                ip("-n", switch, "link", "set", port, "master", "br0", "up")
                address = f"{net}.{i + 1}"
                ip("-n", name, "addr", "add", f"{address}/24", "dev", "lan0")
                ip("-n", name, "link", "set", "lan0", "up")
                ip("-n", name, "route", "add", "224.0.0.0/4", "dev", "lan0")
                network.hosts.append(Host(name, address))
        yield network
    finally:
        for process in network.processes:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                process.communicate(timeout=5)
        for name in reversed(made):
            with contextlib.suppress(RuntimeError, OSError, subprocess.SubprocessError):
                ip("netns", "del", name)
