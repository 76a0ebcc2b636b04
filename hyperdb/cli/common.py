"""What the subcommands share: opening a database, reading at a version, and printing nodes and
values for people (one line each) or for scripts (``--json``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import hyperdb
from hyperdb.api.database import Database
from hyperdb.api.directory import STORE_FILE, secret_key_files
from hyperdb.api.snapshot import Snapshot
from hyperdb.errors import InvalidArgument, NotFound, StorageInUse
from hyperdb.model.node import Node, json_value, node_json
from hyperdb.tools.text import json_text, printable, printable_message

MAX_SHOWN = 60  # characters of a value shown on a line


def open_existing(path: str, *, readonly: bool = False) -> Database:
    """Open the database in ``path``, refusing to create one by accident. Read commands open it
    read-only, which works while another process (a server, a live sync) has it open."""
    if not (Path(path) / STORE_FILE).exists() and not secret_key_files(path):
        raise NotFound(f"no database in {path} (create one with `hyperdb init {path}`)")
    try:
        return hyperdb.open(path, readonly=readonly)
    except StorageInUse:
        raise StorageInUse(
            f"{path} is open in another process (a `hyperdb serve` or `sync --live`?): write "
            "through that process or a replica that syncs with it, or stop it first"
        ) from None


def add_path(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="database directory")


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def add_at(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--at", metavar="VERSION", help="read the database as of VERSION (hex, from `version`)"
    )
    add_json(parser)


def view(db: Database, args: argparse.Namespace) -> Database | Snapshot:
    """The database, or its checkout at ``--at``."""
    at = getattr(args, "at", None)
    return db if at is None else db.checkout(at)


def parse_key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise InvalidArgument(f"a key is 64 hexadecimal characters, got {text!r}")
    return key


def parse_peer(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6 addresses) -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidArgument(f"a peer is HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


# --- values and nodes -----------------------------------------------------------------------------


def show_value(value: Any) -> str:
    """A value on one line, for people: UTF-8 text as a JSON string (every character a terminal
    would act on, and the combining marks of non-NFC text, as ``\\u`` escapes), other bytes as
    hex; long ones cut."""
    if value is None:
        return "<deleted>"
    if isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            shown = "0x" + value[: MAX_SHOWN // 2].hex()
            return shown + (f"... ({len(value)} bytes)" if len(value) > MAX_SHOWN // 2 else "")
        quoted = json_text(json.dumps(text, ensure_ascii=False))
        if len(quoted) > MAX_SHOWN:
            return quoted[: MAX_SHOWN - 4] + '..." ' + f"({len(value)} bytes)"
        return quoted
    return json_text(json.dumps(value, ensure_ascii=False))[:MAX_SHOWN]


def who(node: Node) -> str:
    return f"{node.writer.hex()[:8]} #{node.seq}"


def describe_write(node: Node) -> str:
    """``put key = value`` / ``del key`` / ``authorize abcd1234...`` (with the role and prefixes
    of a grant other than a writer's for the whole database) / ``revoke abcd1234...``, escaped
    for people."""
    if node.kind == "revoke":
        return "revoke " + ", ".join(key.hex()[:16] for key in node.revokes)
    if node.kind == "grant":
        text = "authorize " + ", ".join(key.hex()[:16] for key in node.authorizes)
        if node.role not in (None, "writer"):
            text += f" as {node.role}"
        if node.prefixes is not None:
            text += " under " + ", ".join(printable(prefix) for prefix in node.prefixes)
        return text
    if node.deleted:
        return f"del {printable(node.key)}"
    return f"put {printable(node.key)} = {show_value(node.value)}"


def values_line(nodes: Sequence[Node]) -> str:
    """Every current value of a key, with who wrote it; several mean a conflict (escaped for
    people)."""
    parts = [f"{show_value(n.value)} ({who(n)})" for n in nodes]
    return " | ".join(parts)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


def print_json_lines(items: Iterable[Any]) -> None:
    for item in items:
        print_json(item)


__all__ = [
    "add_at",
    "add_json",
    "add_path",
    "describe_write",
    "json_value",
    "node_json",
    "open_existing",
    "parse_key",
    "parse_peer",
    "print_json",
    "printable",
    "printable_message",
    "show_value",
    "values_line",
    "view",
    "who",
]
