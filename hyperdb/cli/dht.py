"""The ``dht-node`` command: run one node of the DHT that replicas find each other through.

``hyperdb dht-node [--host H] [--port P] [--bootstrap HOST:PORT ...]`` listens on UDP ``H:P``
(by default every interface, port :data:`~hyperdb.discovery.dht.DEFAULT_PORT`), joins the DHT
through the bootstrap nodes given (none: it is the first node, others bootstrap from it), routes
and keeps announcements (:mod:`hyperdb.discovery.dht`) until Ctrl-C or SIGTERM, and prints a
status line every ``--status`` seconds. Warnings (nodes answering garbage or flooding) go to
stderr with the time; the library's own lines about silent nodes are left out. It holds no
database and reads nothing it keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from hyperdb.cli.peers import run_until_signalled
from hyperdb.discovery.dht import DEFAULT_PORT, DhtNode, parse_address, quiet_library_logs

EXIT_OK = 0


def add_commands(commands: Any) -> None:
    node = commands.add_parser(
        "dht-node",
        help="run a DHT node for finding peers across the internet (`join --dht --bootstrap`)",
        description="Listen on UDP HOST:PORT as a node of hyperdb's DHT: route lookups and keep "
        "the addresses replicas announce for their databases' topics (never a key: a topic "
        "tells nothing that lets anyone read). With --bootstrap, join an existing DHT through "
        "those nodes; without, start one for others to bootstrap from. Runs until Ctrl-C.",
    )
    node.add_argument("--host", default="0.0.0.0", help="the address to listen on (0.0.0.0)")
    node.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"the UDP port ({DEFAULT_PORT})"
    )
    node.add_argument(
        "--bootstrap",
        nargs="+",
        action="extend",
        default=[],
        metavar="HOST:PORT",
        help="a node of the DHT to join through (several, or repeat the option)",
    )
    node.add_argument(
        "--status",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="print the contacts and topics known every SECONDS (60; 0: never)",
    )
    node.set_defaults(run=run_dht_node)


def run_dht_node(args: argparse.Namespace) -> int:
    bootstrap = [parse_address(text) for text in args.bootstrap]
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    quiet_library_logs()
    node = DhtNode(host=args.host, port=args.port, bootstrap=bootstrap)
    run_until_signalled(_serve(node, args.status))
    print("stopped", flush=True)
    return EXIT_OK


async def _serve(node: DhtNode, status: float) -> None:
    try:
        await node.start()
        host, port = node.address
        print(
            f"dht node {node.id.hex()[:16]} listening on UDP {host}:{port}, "
            f"{node.contacts()} contacts",
            flush=True,
        )
        while True:
            await asyncio.sleep(status if status > 0 else 3600.0)
            if status > 0:
                print(f"{node.contacts()} contacts, {node.topics()} topics kept", flush=True)
    finally:
        await node.close()
