"""Command-line subcommands that write and read keys: ``put``, ``get``, ``del``, ``ls``,
``range``, ``heads``, ``version``, ``diff`` and ``verify``.

Values given on the command line are stored as their bytes in a binary database, as text in a
utf-8 or json one (a JSON string there); ``put --json`` stores the JSON value VALUE is (its compact
text outside a json database), and ``--file`` a file's bytes (``hyperdb.cli.control.stored_value``).
``put`` and ``del`` on a database another hyperdb process holds (``serve``, ``sync --live``) go
through that process's control socket (:mod:`hyperdb.cli.control`): same output, same errors.
Values are shown as quoted text when they are UTF-8, else as hex. Keys and values are
shown through :func:`~hyperdb.cli.common.printable` and
:func:`~hyperdb.cli.common.show_value`, so what a writer stored cannot drive the reader's
terminal; ``--json`` output holds them exactly. Read commands take
``--at VERSION`` (read a past version) and ``--json`` (one JSON document, or one per line for
listings).
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

from hyperdb.api.directory import check_store
from hyperdb.cli import control
from hyperdb.cli.common import (
    add_at,
    add_json,
    add_path,
    describe_write,
    node_json,
    open_existing,
    print_json,
    print_json_lines,
    printable,
    printable_message,
    show_value,
    values_line,
    view,
    who,
)
from hyperdb.errors import CorruptionError, InvalidArgument, InvalidKey, NotFound
from hyperdb.feed import ForkEvidence, SignedTree

EXIT_OK = 0
EXIT_DAMAGED = 5


def add_commands(commands: Any) -> None:
    put = commands.add_parser(
        "put",
        help="write a value",
        description="Write VALUE or the bytes of --file under KEY. VALUE is stored as text (its "
        "bytes in a binary database, a JSON string in a json one); with --json it is parsed as "
        "JSON and stored as that value (as its compact JSON text outside a json database). When "
        "another hyperdb process holds the database (`serve`, `sync --live`), the write goes "
        "through it (its control socket beside the database).",
    )
    add_path(put)
    put.add_argument("key", help="a /-separated key, e.g. users/alice")
    put.add_argument("value", nargs="?", help="the value (text, or JSON with --json)")
    put.add_argument("--file", help="store this file's bytes instead of VALUE")
    put.add_argument("--json", action="store_true", help="VALUE (or the file) is JSON")
    put.set_defaults(run=run_put)

    get = commands.add_parser(
        "get",
        help="read every current value of a key, with the writer and seq of each",
        description="Print every current value of KEY: one normally, several when concurrent "
        "writers disagree (a conflict), each with the writer and seq that wrote it. Exit code 1 "
        "when the key has no value.",
    )
    add_path(get)
    get.add_argument("key")
    add_at(get)
    get.set_defaults(run=run_get)

    delete = commands.add_parser(
        "del",
        help="delete a key",
        description="Delete KEY (through the process holding the database, if one does).",
    )
    add_path(delete)
    delete.add_argument("key")
    delete.set_defaults(run=run_del)

    ls = commands.add_parser(
        "ls",
        help="list the keys under a prefix, sorted, with their values",
        description="List the keys under PREFIX (a path: `users` lists users/...) in key order "
        "with their current values. --no-recursive lists only what is directly under PREFIX.",
    )
    add_path(ls)
    ls.add_argument("prefix", nargs="?", default="", help="a key prefix (default: everything)")
    ls.add_argument(
        "--no-recursive", action="store_true", help="only the level directly under PREFIX"
    )
    add_at(ls)
    ls.set_defaults(run=run_ls)

    ranged = commands.add_parser(
        "range",
        help="scan keys in sorted order between bounds",
        description="Print the keys between the bounds in key order (bytewise UTF-8), with "
        "their values.",
    )
    add_path(ranged)
    for bound in ("gt", "gte", "lt", "lte"):
        ranged.add_argument(f"--{bound}", metavar="KEY")
    ranged.add_argument("--reverse", action="store_true", help="largest key first")
    ranged.add_argument("--limit", type=int, help="at most this many keys")
    add_at(ranged)
    ranged.set_defaults(run=run_range)

    heads = commands.add_parser(
        "heads",
        help="show the latest write of each writer that no other write has seen",
        description="Print the heads: the writes that name the current version.",
    )
    add_path(heads)
    add_at(heads)
    heads.set_defaults(run=run_heads)

    version = commands.add_parser(
        "version",
        help="print the current version (to read it later with --at, or to diff against)",
        description="Print the version: hex bytes naming the heads (spec/node.md section 6).",
    )
    add_path(version)
    add_json(version)
    version.set_defaults(run=run_version)

    diff = commands.add_parser(
        "diff",
        help="show the keys whose values differ between two versions",
        description="Show what changed from VERSION to NEW (default: now): + added, - removed, "
        "~ changed. VERSION may be `empty` for the empty database.",
    )
    add_path(diff)
    diff.add_argument("version", metavar="VERSION")
    diff.add_argument("new", metavar="NEW", nargs="?", help="the later version (default: now)")
    diff.add_argument("--prefix", default="", help="only keys under this prefix")
    add_json(diff)
    diff.set_defaults(run=run_diff)

    verify = commands.add_parser(
        "verify",
        help="check every block, tree node, signature and the derived index (fsck)",
        description="Re-check the whole store without trusting it: every feed's blocks "
        "against its Merkle tree, every stored tree node, every writer's signature, every "
        f"record, and the derived index against the tries. Exit code {EXIT_DAMAGED} and a "
        "report naming each damaged feed and block when anything is wrong.",
    )
    add_path(verify)
    add_json(verify)
    verify.set_defaults(run=run_verify)


# --- writing --------------------------------------------------------------------------------------


def given_value(value: str | None, file: str | None, as_json: bool) -> dict[str, str]:
    """VALUE or --file as a value for :func:`hyperdb.cli.control.execute` (JSON checked now, so a
    bad one is refused before anything is opened)."""
    if (value is None) == (file is None):
        raise InvalidArgument("give either VALUE or --file")
    if file is not None:
        try:
            data = Path(file).read_bytes()
        except OSError as exc:
            raise InvalidArgument(f"cannot read {file}: {exc.strerror}") from None
        form = "bytes"
    else:
        assert value is not None
        data = os.fsencode(value)  # the exact bytes given, even when they are not UTF-8
        form = "text"
    if as_json:
        control.parse_json(data)
        form = "json"
    return control.value_spec(form, data)


def run_put(args: argparse.Namespace) -> int:
    request = {
        "op": "put",
        "key": args.key,
        "value": given_value(args.value, args.file, args.json),
    }
    (node,) = control.write(args.path, request, partial(open_existing, args.path))
    print(f"put {printable(node.key)} ({who(node)})")
    return EXIT_OK


def run_del(args: argparse.Namespace) -> int:
    (node,) = control.write(
        args.path, {"op": "del", "key": args.key}, partial(open_existing, args.path)
    )
    print(f"deleted {printable(node.key)} ({who(node)})")
    return EXIT_OK


# --- reading --------------------------------------------------------------------------------------


def run_get(args: argparse.Namespace) -> int:
    if not args.key.strip("/"):  # normalizes to the root key "" (spec/trie.md 1.1)
        raise InvalidKey(
            f'"{printable(args.key)}" is the empty key: it names the root of every path and '
            "never has a value (a key is a /-separated path such as users/alice)"
        )
    with open_existing(args.path, readonly=True) as db:
        nodes = view(db, args).get(args.key)
        if args.json:
            print_json({"key": args.key, "values": [node_json(n) for n in nodes]})
            return EXIT_OK if nodes else 1
        if not nodes:
            raise NotFound(f'no value for key "{printable(args.key)}"')
        if len(nodes) > 1:
            print(f"{printable(nodes[0].key)}: {len(nodes)} concurrent values (a conflict)")
        for node in nodes:
            print(f"{printable(node.key)} = {show_value(node.value)}  ({who(node)})")
    return EXIT_OK


def _listing(args: argparse.Namespace, entries: Any) -> int:
    count = 0
    for key, nodes in entries:
        count += 1
        if args.json:
            print_json({"key": key, "values": [node_json(n) for n in nodes]})
        else:
            print(f"{printable(key)} = {values_line(nodes)}")
    if not args.json and count == 0:
        print("(no keys)", file=sys.stderr)
    return EXIT_OK


def run_ls(args: argparse.Namespace) -> int:
    with open_existing(args.path, readonly=True) as db:
        source = view(db, args)
        entries = sorted(
            source.list(args.prefix, recursive=not args.no_recursive),
            key=lambda item: item[0].encode("utf-8"),
        )
        return _listing(args, entries)


def run_range(args: argparse.Namespace) -> int:
    with open_existing(args.path, readonly=True) as db:
        source = view(db, args)
        entries = source.range(
            gt=args.gt,
            gte=args.gte,
            lt=args.lt,
            lte=args.lte,
            reverse=args.reverse,
            limit=args.limit,
        )
        return _listing(args, entries)


def run_heads(args: argparse.Namespace) -> int:
    with open_existing(args.path, readonly=True) as db:
        heads = view(db, args).heads()
        if args.json:
            print_json([node_json(n) for n in heads])
        for node in [] if args.json else heads:
            print(f"{who(node)}  {describe_write(node)}")
    return EXIT_OK


def run_version(args: argparse.Namespace) -> int:
    with open_existing(args.path, readonly=True) as db:
        version = db.version().hex()
        if args.json:
            print_json({"version": version, "heads": len(db.heads())})
        else:
            print(version)
    return EXIT_OK


def run_diff(args: argparse.Namespace) -> int:
    with open_existing(args.path, readonly=True) as db:
        then = None if args.version == "empty" else args.version
        later = db if args.new is None else db.checkout(args.new)
        changes = list(later.diff(then, args.prefix))
        if args.json:
            print_json_lines(
                {
                    "key": key,
                    "now": [node_json(n) for n in now],
                    "then": [node_json(n) for n in before],
                }
                for key, now, before in changes
            )
            return EXIT_OK
        for key, now, before in sorted(changes, key=lambda change: change[0].encode("utf-8")):
            if not before:
                print(f"+ {printable(key)} = {values_line(now)}")
            elif not now:
                print(f"- {printable(key)} (was {values_line(before)})")
            else:
                print(f"~ {printable(key)}: {values_line(before)} -> {values_line(now)}")
        if not changes:
            print("(no differences)", file=sys.stderr)
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    """Check the store without writing to it (a read-only open works beside a server). A store
    too damaged to open is reported like any other damage: exit 5."""
    try:
        check_store(args.path)  # the file's structure, before anything reads it
        db = open_existing(args.path, readonly=True)
    except CorruptionError as exc:
        return _report_unopenable(args, exc)
    with db:
        report = db.verify()
    if args.json:
        print_json(
            {
                "ok": report.ok,
                "feeds": report.feeds,
                "blocks": report.blocks,
                "tree_nodes": report.tree_nodes,
                "records": report.records,
                "keys": report.keys,
                "blobs": report.blobs,
                "damage": [
                    {
                        "kind": d.kind,
                        "message": d.message,
                        "feed": d.feed.hex() if d.feed else None,
                        "seqs": list(d.seqs),
                        "key": d.key,
                    }
                    for d in report.damage
                ],
                "forks": [fork_json(fork) for fork in report.forks],
            }
        )
    else:
        intact = report.feeds - len({d.feed for d in report.damage if d.kind == "feed"})
        print(
            f"checked {report.feeds} feed(s), {intact} intact ({report.blocks} blocks, "
            f"{report.tree_nodes} tree nodes and their signatures), {report.records} records "
            f"decoded, {report.keys} key(s) of the index checked against the tries"
            + (f", {report.blobs} blob(s) checked" if report.blobs else "")
        )
        for damage in report.damage:
            where = f" feed {damage.feed.hex()}" if damage.feed else ""
            seqs = f" seq {' or '.join(map(str, damage.seqs))}" if damage.seqs else ""
            print(f"DAMAGED{where}{seqs}: {printable_message(damage.message)}")
        for fork in report.forks:
            print(f"FORKED writer {fork.feed.hex()}: {printable_message(fork.describe())}")
        frozen = f" ({len(report.forks)} forked writer(s), frozen)" if report.forks else ""
        print(f"ok{frozen}" if report.ok else f"{len(report.damage)} problem(s) found{frozen}")
    return EXIT_OK if report.ok else EXIT_DAMAGED


def fork_json(fork: ForkEvidence) -> dict[str, Any]:
    """A fork's evidence for scripts: the writer, where the histories part, both signed trees."""
    check = fork.check()

    def tree(signed: SignedTree | None) -> dict[str, Any] | None:
        if signed is None:
            return None
        return {"length": signed.length, "signature": signed.signature.hex()}

    return {
        "writer": fork.feed.hex(),
        "blocks": list(fork.blocks) if fork.blocks is not None else None,
        "node": check.node,
        "proven": check.proven,
        "reason": check.reason,
        "ours": tree(fork.ours),
        "theirs": tree(fork.theirs),
        "description": fork.describe(),
    }


def _report_unopenable(args: argparse.Namespace, exc: CorruptionError) -> int:
    message = str(exc)
    if args.json:
        damage: dict[str, Any] = {"kind": "store", "message": message, "feed": None}
        damage.update(seqs=[], key=None)
        counts = dict.fromkeys(("feeds", "blocks", "tree_nodes", "records", "keys", "blobs"), 0)
        print_json({"ok": False, **counts, "damage": [damage]})
    else:
        print(f"DAMAGED store: {printable_message(message)}")
        print("the store cannot be opened: 1 problem found")
    return EXIT_DAMAGED


__all__ = ["EXIT_DAMAGED", "add_commands", "given_value"]
