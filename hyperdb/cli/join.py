"""``hyperdb join PATH [--lan] [--dht] [--bootstrap HOST:PORT ...] [--peer HOST:PORT ...]``: join
a database's swarm and stay in it, with a live status line.

It serves the database on every interface, announces it on the LAN (mDNS) and/or in the DHT,
looks its peers up, and keeps one live session with each replica found
(``hyperdb.replication.net.join``); writes from other commands go through its control socket,
as with ``serve``. Ctrl-C or SIGTERM leaves the swarm.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from typing import Any, TextIO

from hyperdb.api.database import Database
from hyperdb.cli.common import add_path, open_existing, parse_peer
from hyperdb.cli.peers import run_until_signalled, with_control
from hyperdb.discovery.base import Discovery, KnownPeers
from hyperdb.errors import InvalidArgument
from hyperdb.replication import net
from hyperdb.replication.peers import PeerInfo
from hyperdb.tools.text import printable

EXIT_OK = 0
STATUS_INTERVAL = 1.0


def add_commands(commands: Any) -> None:
    join = commands.add_parser(
        "join",
        help="find the database's peers (LAN, DHT) and stay in sync with all of them",
        description="Serve the database, announce it on the local network (--lan, mDNS) and/or "
        "in a DHT (--dht, through --bootstrap nodes), look its peers up, and keep one live, "
        "encrypted session with each replica found, reconnecting as they come and go. Peers "
        "are never trusted: one that does not hold the database key fails the capability check "
        "and is dropped. --peer adds addresses you know. Ctrl-C leaves.",
    )
    add_path(join)
    add_discovery_options(join)
    join.add_argument(
        "--peer", action="append", default=[], metavar="HOST:PORT", help="a peer you know"
    )
    join.add_argument("--host", default="0.0.0.0", help="address to serve on (default: all)")
    join.add_argument("--port", type=int, default=0, help="port to serve on (default: any free)")
    join.add_argument("--max-peers", type=int, default=8, help="peers at the most (default 8)")
    join.add_argument("--quiet", action="store_true", help="no status line, events only")
    join.set_defaults(run=run_join)


def add_discovery_options(parser: argparse.ArgumentParser) -> None:
    """``--lan``, ``--dht`` and ``--bootstrap HOST:PORT ...`` (for ``join`` and ``seed``)."""
    parser.add_argument("--lan", action="store_true", help="announce and look up on the LAN")
    parser.add_argument("--dht", action="store_true", help="announce and look up in the DHT")
    parser.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a DHT node to start from (repeat for several; `hyperdb dht-node` runs one)",
    )


def discoveries(args: argparse.Namespace, *, required: bool = True) -> list[Discovery]:
    """The discoveries the options ask for (``--peer`` where the command has it); a usage error
    when there are none and ``required``."""
    found: list[Discovery] = []
    peers = getattr(args, "peer", [])
    if peers:
        found.append(KnownPeers([parse_peer(text) for text in peers]))
    if args.lan:
        from hyperdb.discovery.lan import LanDiscovery

        found.append(LanDiscovery())
    if args.dht:
        if not args.bootstrap:
            raise InvalidArgument("--dht needs at least one --bootstrap HOST:PORT")
        from hyperdb.discovery.dht import DhtDiscovery, quiet_library_logs

        quiet_library_logs()
        found.append(DhtDiscovery(bootstrap=[parse_peer(text) for text in args.bootstrap]))
    elif args.bootstrap:
        raise InvalidArgument("--bootstrap goes with --dht")
    if not found and required:
        raise InvalidArgument("say how to find peers: --lan, --dht --bootstrap HOST:PORT, --peer")
    return found


def run_join(args: argparse.Namespace) -> int:
    found = discoveries(args)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    with open_existing(args.path) as db:
        status = Status(sys.stdout, db, not args.quiet and sys.stdout.isatty())
        run_until_signalled(_join(db, args, found, status))
        status.finish()
    return EXIT_OK


async def _join(
    db: Database, args: argparse.Namespace, found: list[Discovery], status: Status
) -> None:
    swarm = await net.join(
        db, found, host=args.host, port=args.port, max_peers=args.max_peers, on_event=status.event
    )
    status.say(
        f"joined {db.key.hex()} on port {swarm.port} "
        f"({', '.join(d.name for d in found)}; Ctrl-C to leave)"
    )
    try:
        await with_control(db, args.path, status.run(swarm))
    finally:
        await swarm.close()
        for discovery in found:
            await discovery.close()


class Status:
    """What ``join`` prints: a line per event (found, connected, lost, refused) and, on a
    terminal, a status line redrawn every second."""

    def __init__(self, out: TextIO, db: Database, live: bool) -> None:
        self._out = out
        self._db = db
        self._live = live
        self._drawn = False
        self.found = 0

    def say(self, line: str) -> None:
        self._clear()
        print(printable(line), file=self._out, flush=True)

    def event(self, kind: str, detail: object) -> None:
        if kind == "connected" and isinstance(detail, PeerInfo):
            self.say(f"connected  {detail.describe()}")
            return
        if kind not in ("found", "lost", "refused") or not isinstance(detail, tuple):
            return
        first, second = detail
        if kind == "found":
            self.found += 1
            self.say(f"found      {_address(second)} ({first})")
        else:
            self.say(f"{kind:<10} {_address(first)}: {second}")

    async def run(self, swarm: Any) -> None:
        """Redraw the status line until cancelled."""
        while True:
            if self._live:
                self._clear()
                self._out.write(
                    f"\r{len(swarm.peers)} peer(s) connected, {self.found} found, "
                    f"version {self._db.version().hex()[:16]}, {time.strftime('%H:%M:%S')}"
                )
                self._out.flush()
                self._drawn = True
            await asyncio.sleep(STATUS_INTERVAL)

    def finish(self) -> None:
        self._clear()
        print("left the swarm", file=self._out, flush=True)

    def _clear(self) -> None:
        if self._drawn:
            self._out.write("\r\x1b[K")
            self._drawn = False


def _address(address: object) -> str:
    if isinstance(address, tuple) and len(address) == 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


__all__ = ["add_commands", "add_discovery_options", "discoveries"]
