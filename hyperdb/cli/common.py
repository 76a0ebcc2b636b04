"""What the subcommands share: opening a database, reading at a version, and printing nodes and
values for people (one line each) or for scripts (``--json``)."""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import hyperdb
from hyperdb.api.database import Database
from hyperdb.api.directory import STORE_FILE, secret_key_files
from hyperdb.api.snapshot import Snapshot
from hyperdb.errors import InvalidArgument, NotFound, StorageInUse
from hyperdb.model.node import Node

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


# --- text for people ------------------------------------------------------------------------------

# Characters a terminal acts on instead of showing (C0/C1 controls, DEL, format characters such as
# the bidirectional overrides, line and paragraph separators, surrogates, private use, unassigned).
_HIDDEN_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
_MARKS = frozenset(("Mn", "Mc", "Me"))


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _hidden(char: str, marks: bool) -> bool:
    """Whether ``char`` is shown escaped: a terminal would act on it instead of showing it, it
    is a space other than the ASCII space, or (``marks``: the text is not NFC) a combining
    mark."""
    category = unicodedata.category(char)
    return (
        category in _HIDDEN_CATEGORIES
        or (category == "Zs" and char != " ")
        or (marks and category in _MARKS)
    )


def _plain(text: str) -> bool:
    """Nothing in ``text`` needs escaping (the fast path of the functions below)."""
    return text.isprintable() and (text.isascii() or unicodedata.is_normalized("NFC", text))


def printable(text: str) -> str:
    """``text`` safe to print on a terminal, and telling apart what looks alike.

    Control and format characters (an escape sequence that would drive the terminal, a
    right-to-left override) and spaces other than the ASCII space are shown as ``\\xNN``,
    ``\\uNNNN`` or ``\\UNNNNNNNN``, and a backslash as ``\\\\``, so the shown text maps back to
    exactly one string. A string that is not in Unicode NFC also shows its combining marks
    escaped, so the NFC and NFD spellings of a key (which are different keys) look different.
    Plain text is returned unchanged. Only output for people goes through this: JSON output
    stays exact.
    """
    if _plain(text) and "\\" not in text:
        return text
    marks = not unicodedata.is_normalized("NFC", text)
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif _hidden(char, marks):
            out.append(_escape(char))
        else:
            out.append(char)
    return "".join(out)


def printable_message(text: str) -> str:
    """A message (an error's text) safe to print: what :func:`printable` escapes is escaped,
    but a backslash is kept, so the parts of the message that already went through
    :func:`printable` (a key it quotes) are not escaped twice."""
    if _plain(text):
        return text
    marks = not unicodedata.is_normalized("NFC", text)
    return "".join(_escape(char) if _hidden(char, marks) else char for char in text)


def _json_text(dumped: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with every character :func:`printable`
    would escape written as a JSON ``\\uNNNN`` escape (a surrogate pair beyond U+FFFF): still
    JSON that reads back to the same data, safe on a terminal, and NFC and NFD text told apart.
    Such characters only occur inside JSON strings, where the escapes are valid."""
    if _plain(dumped):
        return dumped
    marks = not unicodedata.is_normalized("NFC", dumped)
    out = []
    for char in dumped:
        if not _hidden(char, marks):
            out.append(char)
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            code = ord(char) - 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
    return "".join(out)


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
        quoted = _json_text(json.dumps(text, ensure_ascii=False))
        if len(quoted) > MAX_SHOWN:
            return quoted[: MAX_SHOWN - 4] + '..." ' + f"({len(value)} bytes)"
        return quoted
    return _json_text(json.dumps(value, ensure_ascii=False))[:MAX_SHOWN]


def json_value(value: Any) -> Any:
    """A value in JSON: UTF-8 text as a string, other bytes as ``{"hex": ...}``."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"hex": value.hex()}
    return value


def who(node: Node) -> str:
    return f"{node.writer.hex()[:8]} #{node.seq}"


def describe_write(node: Node) -> str:
    """``put key = value`` / ``del key`` / ``authorize abcd1234...``, escaped for people."""
    if node.authorizes:
        return "authorize " + ", ".join(key.hex()[:16] for key in node.authorizes)
    if node.deleted:
        return f"del {printable(node.key)}"
    return f"put {printable(node.key)} = {show_value(node.value)}"


def node_json(node: Node) -> dict[str, Any]:
    data: dict[str, Any] = {
        "key": node.key,
        "value": json_value(node.value),
        "deleted": node.deleted,
        "writer": node.writer.hex(),
        "seq": node.seq,
        "clock": {writer.hex(): length for writer, length in sorted(node.clock.items())},
    }
    if node.authorizes:
        data["authorizes"] = [key.hex() for key in node.authorizes]
    return data


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
