"""Command-line subcommands that govern who writes: ``authorize`` (a role and key prefixes),
``revoke``, ``rotate``, ``revert`` and ``writers`` (roles, scopes, who granted each, cut-offs,
and what the rules hold back here). They mirror ``Database.authorize``, ``revoke``, ``rotate``,
``revert``, ``writers_info`` and ``violations`` (``spec/node.md`` section 5.3).
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

from hyperdb.api.database import Database
from hyperdb.cli import control
from hyperdb.cli.common import add_json, add_path, open_existing, parse_key, print_json, printable
from hyperdb.errors import InvalidArgument
from hyperdb.model.node import Node

EXIT_OK = 0


def add_commands(commands: Any) -> None:
    authorize = commands.add_parser(
        "authorize",
        help="grant another replica's writer key a role (writer, owner or seeder)",
        description="Append a grant of ROLE to WRITER (a 64-character hex key, as `hyperdb "
        "init` or `hyperdb info` prints it) to this replica's feed: a writer writes, an owner "
        "also grants and revokes, a seeder serves and writes nothing. A writer may be limited to "
        "key prefixes (--prefix, repeated: a prefix P covers P and every key under P/). Only an "
        "owner grants. The new writer learns of it when it syncs.",
    )
    add_path(authorize)
    authorize.add_argument("writer", help="the writer key (hex) to grant")
    authorize.add_argument(
        "--role", choices=("writer", "owner", "seeder"), default="writer", help="default: writer"
    )
    authorize.add_argument(
        "--prefix",
        action="append",
        dest="prefixes",
        metavar="P",
        help="limit a writer to keys under P (repeat for several; default: the whole database)",
    )
    authorize.set_defaults(run=run_authorize)

    revoke = commands.add_parser(
        "revoke",
        help="revoke a writer: nothing it writes after what was seen of it counts anywhere",
        description="Append a revocation of WRITER. Its nodes this replica has seen, and those "
        "another writer had seen before learning of the revocation, stay; everything later (and "
        "whatever built on it) is not applied on any replica (what it writes later is stored "
        "where it arrives, verified, and applied nowhere). Only an owner revokes; the "
        "database's first writer cannot be revoked.",
    )
    add_path(revoke)
    revoke.add_argument("writer", help="the writer key (hex) to revoke")
    revoke.set_defaults(run=run_revoke)

    rotate = commands.add_parser(
        "rotate",
        help="replace a writer's key: revoke OLD and grant NEW its role, in one append",
        description="Revoke OLD and grant NEW the same role and prefixes in one atomic append "
        "(a lost device, or a restored copy whose feed forked: open a new replica, then rotate "
        "to its writer key from an owner's replica).",
    )
    add_path(rotate)
    rotate.add_argument("old", help="the writer key (hex) to retire")
    rotate.add_argument("new", help="the writer key (hex) taking over")
    rotate.set_defaults(run=run_rotate)

    revert = commands.add_parser(
        "revert",
        help="restore every key a writer changed from SEQ on to the value before it",
        description="For every key whose current value was written by WRITER at SEQ or later, "
        "write (as ordinary signed writes, in one batch) the newest value from outside that "
        "window: a compromise repaired in the open, history kept.",
    )
    add_path(revert)
    revert.add_argument("writer", help="the writer key (hex) whose writes to revert")
    revert.add_argument("seq", type=int, help="the first seq of its feed to revert")
    revert.set_defaults(run=run_revert)

    writers = commands.add_parser(
        "writers",
        help="list the writers: roles, scopes, who granted each, cut-offs, feed lengths",
        description="Print every writer known here: its role and key prefixes, the owners that "
        "granted it, whether it was revoked (and its cut-off), how many blocks of its feed this "
        "replica holds and has applied, and what the rules hold back (writes out of scope or "
        "without a grant, writes past a cut-off, forks) with the nodes that show it.",
    )
    add_path(writers)
    add_json(writers)
    writers.set_defaults(run=run_writers)


def _write(args: argparse.Namespace, request: dict[str, Any]) -> list[Node]:
    """The change, made here or through the process holding the database (its control socket,
    :mod:`hyperdb.cli.control`): the nodes written."""
    return control.write(args.path, request, partial(open_existing, args.path))


def run_authorize(args: argparse.Namespace) -> int:
    writer = parse_key(args.writer)
    request = {"op": "authorize", "writer": writer.hex(), "role": args.role}
    (node,) = _write(args, {**request, "prefixes": args.prefixes})
    scope = "" if node.prefixes is None else " under " + ", ".join(map(printable, node.prefixes))
    print(
        f"authorized {writer.hex()} as {node.role}{scope} "
        f"(seq {node.seq} of writer {node.writer.hex()[:16]})"
    )
    return EXIT_OK


def run_revoke(args: argparse.Namespace) -> int:
    writer = parse_key(args.writer)
    (node,) = _write(args, {"op": "revoke", "writer": writer.hex()})
    seen = node.clock.get(writer, 0)
    print(
        f"revoked {writer.hex()} (seq {node.seq} of writer {node.writer.hex()[:16]}); "
        f"its first {max(seen - 1, 0)} write(s) seen here stay"
    )
    return EXIT_OK


def run_rotate(args: argparse.Namespace) -> int:
    old, new = parse_key(args.old), parse_key(args.new)
    revocation, grant = _write(args, {"op": "rotate", "old": old.hex(), "new": new.hex()})
    print(
        f"rotated {old.hex()[:16]} -> {new.hex()} as {grant.role} (seqs "
        f"{revocation.seq}-{grant.seq} of writer {grant.writer.hex()[:16]})"
    )
    return EXIT_OK


def run_revert(args: argparse.Namespace) -> int:
    writer = parse_key(args.writer)
    if args.seq < 1:
        raise InvalidArgument("SEQ is a seq of the writer's feed, 1 or more")
    nodes = _write(args, {"op": "revert", "writer": writer.hex(), "seq": args.seq})
    for node in nodes:
        what = "deleted" if node.deleted else "restored"
        print(f"{what} {printable(node.key)}")
    print(f"{len(nodes)} key(s) reverted from seq {args.seq} of {writer.hex()[:16]}")
    return EXIT_OK


def run_writers(args: argparse.Namespace) -> int:
    with open_existing(args.path, readonly=True) as db:
        infos = db.writers_info()
        violations = db.violations()
        if args.json:
            print_json(
                {
                    "writers": [
                        {**info.as_json(), "local": info.key == db.local_key} for info in infos
                    ],
                    "violations": [violation.as_json() for violation in violations],
                }
            )
            return EXIT_OK
        for info in infos:
            print(_writer_line(db, info))
        for violation in violations:
            evidence = ", ".join(f"{n.writer.hex()[:8]} #{n.seq}" for n in violation.evidence)
            shown = f" (evidence: {evidence})" if evidence else ""
            print(
                printable(
                    f"held back  {violation.writer.hex()[:16]} {violation.kind}: "
                    f"{violation.detail}{shown}"
                )
            )
    return EXIT_OK


def _writer_line(db: Database, info: Any) -> str:
    role = info.role or "no role"
    if info.prefixes is not None:
        role += " under " + ", ".join(map(printable, info.prefixes))
    if info.key == db.key:
        origin = "created the database"
    elif info.granted_by:
        origin = "granted by " + ", ".join(key.hex()[:8] for key in info.granted_by)
    else:
        origin = "no grant in effect"
    parts = [f"{info.key.hex()}  {info.length:>8} blocks  {role}, {origin}"]
    if info.applied != info.length:
        parts.append(f"{info.applied} applied")
    if info.revoked:
        parts.append(f"REVOKED by {info.revoked_by.hex()[:8]} from seq {info.cutoff}")
    if info.key == db.local_key:
        parts.append("(this replica)")
    if info.forked:
        parts.append("FORKED: frozen (hyperdb verify shows the evidence)")
    return "  ".join(parts)
