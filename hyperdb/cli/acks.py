"""Command-line subcommands that say who holds what: ``acks`` (which other replicas hold a
version, from their signed receipts and writers' own nodes, optionally waiting for N of them)
and ``peers`` (every other replica known: role, last seen, what it holds and lacks). They open
the database read-only, so they run beside a process serving it, and mirror ``Database.acks``,
``wait_acked`` and ``peers`` (``spec/receipts.md`` section 6).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from hyperdb.api.acks import Ack, PeerStatus
from hyperdb.api.database import Database
from hyperdb.cli.common import add_json, add_path, open_existing, print_json
from hyperdb.errors import AckTimeout, InvalidArgument

EXIT_OK = 0
POLL_INTERVAL = 0.25


def add_commands(commands: Any) -> None:
    acks = commands.add_parser(
        "acks",
        help="which other replicas hold this replica's version (from their signed receipts)",
        description="List the other replicas known to hold VERSION (default: this replica's "
        "current version): from the signed receipts peers send after they commit what they "
        "received (forwarded by any peer, a seeder too) and from writers' own latest nodes. "
        "Counted by default: replicas with a role here whose receipt was fsynced. --wait N "
        "waits until N of them hold it (reading what a serving process stores each second).",
    )
    add_path(acks)
    acks.add_argument("--version", help="a version (hex) instead of the current one")
    acks.add_argument("--wait", type=int, metavar="N", help="wait until N replicas hold it")
    acks.add_argument(
        "--timeout", type=float, default=60.0, help="seconds --wait waits (default 60)"
    )
    acks.add_argument("--any-key", action="store_true", help="count replicas with no role here too")
    acks.add_argument("--not-durable", action="store_true", help="count receipts not fsynced too")
    add_json(acks)
    acks.set_defaults(run=run_acks)

    peers = commands.add_parser(
        "peers",
        help="every other replica known: role, last seen, what it holds and lacks",
        description="List every other replica this one knows (by a session, a receipt, or as "
        "a writer): its role here, when and where it was last met, whether it holds the "
        "current version, and the feeds where it lacks blocks this replica has applied.",
    )
    add_path(peers)
    add_json(peers)
    peers.set_defaults(run=run_peers)


def run_acks(args: argparse.Namespace) -> int:
    if args.wait is not None and args.wait < 1:
        raise InvalidArgument("--wait needs a positive number of replicas")
    if not args.timeout > 0:
        raise InvalidArgument("--timeout is a positive number of seconds")
    options: dict[str, Any] = {"durable": not args.not_durable}
    if args.any_key:
        options["roles"] = None
    deadline = time.monotonic() + args.timeout
    while True:
        with open_existing(args.path, readonly=True) as db:
            version = bytes.fromhex(args.version) if args.version else db.version()
            acks = db.acks(version, **options)
            known = len(db.peers())
            if args.wait is None or len(acks) >= args.wait:
                _show(db, acks, version, known, args.json)
                return EXIT_OK
            if time.monotonic() >= deadline:
                _show(db, acks, version, known, args.json)
                raise AckTimeout(
                    f"{len(acks)} of the {args.wait} replicas waited for hold the version after "
                    f"{args.timeout:g} s",
                    acks=acks,
                )
        time.sleep(POLL_INTERVAL)


def _show(db: Database, acks: dict[bytes, Ack], version: bytes, known: int, json: bool) -> None:
    if json:
        print_json(
            {
                "version": version.hex(),
                "replicas": known,
                "acks": [_ack_json(ack) for ack in acks.values()],
            }
        )
        return
    now = time.time()
    for ack in acks.values():
        age = "" if ack.received is None else f", {now - ack.received:.0f} s ago"
        durable = "durable" if ack.durable else "not durable"
        print(f"{ack.key.hex()}  {ack.role or 'no role'}  {durable}, from its {ack.source}{age}")
    print(
        f"{len(acks)} of {known} known replica(s) hold {version.hex()[:32] or 'the empty version'}"
    )


def _ack_json(ack: Ack) -> dict[str, Any]:
    return {
        "key": ack.key.hex(),
        "role": ack.role,
        "durable": ack.durable,
        "source": ack.source,
        "counter": ack.counter,
        "received": ack.received,
        "lengths": {feed.hex(): length for feed, length in sorted(ack.lengths.items())},
    }


def run_peers(args: argparse.Namespace) -> int:
    with open_existing(args.path, readonly=True) as db:
        statuses = db.peers()
        if args.json:
            print_json([_peer_json(status) for status in statuses])
            return EXIT_OK
        now = time.time()
        for status in statuses:
            seen = (
                "never met"
                if status.last_seen is None
                else (f"met {now - status.last_seen:.0f} s ago at {status.address}")
            )
            holds = "holds the current version" if status.current else "behind"
            lacks = sum(ours - theirs for theirs, ours in status.lacks.values())
            missing = f", lacks {lacks} block(s)" if lacks else ""
            print(f"{status.key.hex()}  {status.role or 'no role'}  {seen}; {holds}{missing}")
        if not statuses:
            print("no other replica known yet")
    return EXIT_OK


def _peer_json(status: PeerStatus) -> dict[str, Any]:
    return {
        "key": status.key.hex(),
        "role": status.role,
        "last_seen": status.last_seen,
        "address": status.address,
        "durable": status.durable,
        "counter": status.counter,
        "source": status.source,
        "current": status.current,
        "holds": {feed.hex(): n for feed, n in sorted(status.holds.items())},
        "lacks": {feed.hex(): list(pair) for feed, pair in sorted(status.lacks.items())},
    }
