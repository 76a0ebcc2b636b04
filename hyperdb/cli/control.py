"""The control socket: how command-line writes reach a database that another hyperdb process holds.

A directory is open for writing in one process at a time, so while ``hyperdb serve PATH`` (or
``sync --live``) runs, ``put``, ``del``, ``resolve`` and the commands that govern writers on
``PATH`` cannot open it. That process listens instead on a Unix domain socket beside the
database, ``PATH/control.sock``, created with permission 0600 (a umask during ``bind``, so it is
never wider, then ``chmod`` again) and removed when it stops; a socket file left by a process
that was killed is found stale (nothing answers) and replaced by the next one. Only the user who
owns the database can connect, and what they send is what they could do by opening the database
themselves.

The protocol is JSON lines: one request, one response. A write is ``{"op": "put"|"del"|
"resolve", "key": ..., "value": {"form": "text"|"json"|"bytes", "data": BASE64}, "resolver":
...}``, or a change of who writes (``authorize`` with ``writer``, ``role``, ``prefixes``;
``revoke`` with ``writer``; ``rotate`` with ``old`` and ``new``; ``revert`` with ``writer`` and
``seq``; keys in hex), an attachment (``attach`` with ``key``, ``value`` and ``file``: the
absolute path of a file the serving process reads, as the same user, into a blob) or a
reclamation (``gc`` with ``retention``: seconds or null; its answer adds ``"report"``); its answer
is ``{"ok": true, "nodes": [NODE...], "value_encoding": ...}``
or ``{"ok": false, "code": CODE, "message": ...}``, and the client raises the error class with
that code, so the command prints the same line and exits with the same code as a direct write.
``{"op": "changes", "since": HEX|null, "prefix": ..., "live": bool}`` answers ``{"ok": true,
...}`` and then one ``{"change_set": ...}`` line per transaction (``ChangeSet.to_json()``) until
the client closes (``live``), or up to the current version followed by ``{"end": true}``.

A request line is at most :data:`MAX_REQUEST` bytes (a value of the largest size a node holds, in
base64, and room for the rest); a line too long, not JSON, or not a valid request gets an error
response, and the server goes on serving.

Both sides of a write run :func:`execute`, so a forwarded write does exactly what a direct one
does. The server side runs on the serving process's event loop; the database calls run in a
worker thread (``asyncio.to_thread``), so replication is never held up by them.

Paths: a Unix socket address holds at most 107 bytes. A longer socket path is reached through the
directory's file descriptor (``/proc/self/fd/N/control.sock``, Linux); where that is not possible
the server and the client say so.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from hyperdb.api.database import Database
from hyperdb.errors import HyperDBError, InvalidArgument, StorageError, StorageInUse
from hyperdb.feed.blob_tree import BlobRef
from hyperdb.model import record
from hyperdb.model.node import Node, node_json

_log = logging.getLogger("hyperdb")

SOCKET_NAME = "control.sock"
MAX_ADDRESS = 107  # bytes of a Unix socket path (sun_path is 108, with its terminating NUL)
MAX_REQUEST = (record.MAX_VALUE_BYTES * 4) // 3 + 8 + 64 * 1024
"""The longest request line: a base64 value of the largest size a node holds, and 64 KiB more for
the key (escaped) and the other fields."""
MAX_RESPONSE = 8 * MAX_REQUEST  # a node's value in JSON may be escaped (six bytes per character)
GOVERNANCE_OPS = ("authorize", "revoke", "rotate", "revert")
BLOB_OPS = ("attach", "gc")
WRITE_OPS = ("put", "del", "resolve", *GOVERNANCE_OPS, *BLOB_OPS)
VALUE_FORMS = ("text", "json", "bytes")
REQUEST_TIMEOUT = 300.0  # seconds a client waits for the answer to a write


def socket_path(path: str | os.PathLike[str]) -> Path:
    """Where the control socket of the database in ``path`` is."""
    return Path(path) / SOCKET_NAME


@contextmanager
def _address(where: Path) -> Iterator[str]:
    """An address for ``bind``/``connect`` naming the socket file ``where``: its absolute path when
    that fits, else the path through a descriptor of its directory (open while the block runs)."""
    full = os.path.abspath(where)
    if len(os.fsencode(full)) <= MAX_ADDRESS:
        yield full
        return
    try:
        fd = os.open(os.path.dirname(full), os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise StorageError(f"cannot reach the directory of {full}: {exc.strerror}") from None
    try:
        short = f"/proc/self/fd/{fd}/{os.path.basename(full)}"
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            raise StorageError(
                f"the control socket path {full} is longer than {MAX_ADDRESS} bytes and this "
                "system cannot reach it through /proc: use a shorter database path"
            )
        yield short
    finally:
        os.close(fd)


# --- what a write does, on either side -----------------------------------------------------------


def value_spec(form: str, data: bytes) -> dict[str, str]:
    """A value as the command line was given it, for :func:`execute` (and the socket)."""
    return {"form": form, "data": base64.b64encode(data).decode("ascii")}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_json(data: bytes) -> Any:
    """JSON text -> its value; :class:`InvalidArgument` saying why when it is not JSON."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise InvalidArgument("the value is not UTF-8 text, so it is not JSON") from None
    except RecursionError:
        raise InvalidArgument("the value is not JSON hyperdb stores: nested too deeply") from None
    except ValueError as exc:
        raise InvalidArgument(f"the value is not JSON: {exc}") from None


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument("the value is not UTF-8 text, which this database stores") from None


def stored_value(encoding: str, form: str, data: bytes) -> Any:
    """The value to store for what the command line was given, in a database of ``encoding``.

    ``text`` (a VALUE argument): its bytes in a binary database, the string in a utf-8 or json one
    (a JSON string there). ``json`` (``--json``): the parsed value in a json database, its compact
    JSON text elsewhere (as bytes in a binary one). ``bytes`` (``--file``): the bytes in a binary
    database, the text in a utf-8 one, the parsed JSON in a json one."""
    if form == "json" or (form == "bytes" and encoding == "json"):
        value = parse_json(data)
        if encoding == "json":
            return value
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (ValueError, RecursionError) as exc:
            raise InvalidArgument(f"the value cannot be stored as JSON: {exc}") from None
        return text if encoding == "utf-8" else text.encode("utf-8")
    if encoding == "binary":
        return data
    return _text(data)


def _check_value(value: object) -> None:
    if (
        not isinstance(value, dict)
        or value.get("form") not in VALUE_FORMS
        or not isinstance(value.get("data"), str)
    ):
        raise InvalidArgument('a value is {"form": "text"|"json"|"bytes", "data": BASE64}')
    try:
        base64.b64decode(value["data"], validate=True)
    except ValueError:
        raise InvalidArgument("a value's data is base64") from None


def _check_writer(request: dict[str, Any], field: str) -> None:
    text = request.get(field)
    if not isinstance(text, str) or len(text) != 64:
        raise InvalidArgument(f"{field} is a writer key in hex (64 characters)")
    try:
        bytes.fromhex(text)
    except ValueError:
        raise InvalidArgument(f"{field} is a writer key in hex (64 characters)") from None


def check_request(request: object) -> dict[str, Any]:
    """A write request checked for form (what the database checks, it checks itself)."""
    if not isinstance(request, dict):
        raise InvalidArgument("a request is a JSON object")
    op = request.get("op")
    if op not in WRITE_OPS:
        raise InvalidArgument(f"unknown request {op!r}: one of {', '.join(WRITE_OPS)}, changes")
    if op in GOVERNANCE_OPS:
        for field in ("old", "new") if op == "rotate" else ("writer",):
            _check_writer(request, field)
        prefixes = request.get("prefixes")
        if op == "authorize" and not (
            isinstance(request.get("role"), str)
            and (
                prefixes is None
                or (isinstance(prefixes, list) and all(isinstance(p, str) for p in prefixes))
            )
        ):
            raise InvalidArgument("an authorization names a role and a list of prefixes or null")
        seq = request.get("seq")
        if op == "revert" and (type(seq) is not int or seq < 1):
            raise InvalidArgument("a revert names the first seq to revert, 1 or more")
        return request
    if op == "gc":
        retention = request.get("retention")
        if retention is not None and (
            isinstance(retention, bool) or not isinstance(retention, int | float) or retention < 0
        ):
            raise InvalidArgument("a gc names its retention in seconds (0 or more), or null")
        return request
    if op == "attach":
        file = request.get("file")
        if not isinstance(file, str) or not os.path.isabs(file):
            raise InvalidArgument("an attach names the absolute path of the file to attach")
    if not isinstance(request.get("key"), str):
        raise InvalidArgument("a request names its key as a string")
    value = request.get("value")
    if value is not None:
        _check_value(value)
    elif op in ("put", "attach"):
        raise InvalidArgument(f"a{'n' if op == 'attach' else ''} {op} has a value")
    resolver = request.get("resolver")
    if resolver is not None and not isinstance(resolver, str):
        raise InvalidArgument("a resolver is named by a string")
    if op == "resolve" and value is None and resolver is None:
        raise InvalidArgument("give the merged VALUE or a --resolver that computes it")
    return request


def execute(db: Database, request: dict[str, Any]) -> list[Node]:
    """Do the write ``request`` asks for (checked by :func:`check_request`) on ``db``: the nodes
    written (one, except for ``rotate`` and ``revert``)."""
    op = request["op"]
    if op in GOVERNANCE_OPS:
        return _govern(db, request)
    if op == "gc":
        return []  # its report: gc_report
    key = request["key"]
    spec = request.get("value")
    value = (
        None
        if spec is None
        else stored_value(db.value_encoding, spec["form"], base64.b64decode(spec["data"]))
    )
    if op == "put":
        return [db.put(key, value)]
    if op == "attach":
        return [db.put(key, value, blobs=[db.put_blob(request["file"])])]
    if op == "del":
        return [db.delete(key)]
    conflict = db.get(key)
    if spec is None:
        return [db.resolve(key, conflict=conflict, resolver=request.get("resolver"))]
    return [db.resolve(key, value, conflict, resolver=request.get("resolver"))]


def gc_report(db: Database, request: dict[str, Any]) -> dict[str, int]:
    """Run the ``gc`` ``request`` asks for on ``db``: its report as JSON."""
    report = db.gc(retention=request.get("retention"))
    return {"removed": report.removed, "bytes_freed": report.bytes_freed, "waiting": report.waiting}


def _govern(db: Database, request: dict[str, Any]) -> list[Node]:
    op = request["op"]
    if op == "rotate":
        return list(db.rotate(bytes.fromhex(request["old"]), bytes.fromhex(request["new"])))
    writer = bytes.fromhex(request["writer"])
    if op == "authorize":
        return [db.authorize(writer, role=request["role"], prefixes=request.get("prefixes"))]
    if op == "revoke":
        return [db.revoke(writer)]
    return list(db.revert(writer, request["seq"]))


# --- the client side ------------------------------------------------------------------------------


def error_from(code: object, message: object) -> HyperDBError:
    """The error a response names, as the class with that code (so exit codes match)."""
    text = str(message)
    found: type[HyperDBError] = HyperDBError
    pending: list[type[HyperDBError]] = [HyperDBError]
    while pending:
        cls = pending.pop()
        if cls.code == code:
            found = cls
            break
        pending.extend(cls.__subclasses__())
    exc: HyperDBError
    try:
        exc = found(text)
    except TypeError:  # a class that needs more than a message
        exc = found.__new__(found)
        Exception.__init__(exc, text)
    if found is HyperDBError and isinstance(code, str):
        exc.code = code
    return exc


def node_from_json(data: dict[str, Any], encoding: str) -> Node:
    """A node back from :func:`~hyperdb.model.node.node_json`, its value as ``encoding`` reads it
    (in a binary database, text comes back as its bytes)."""
    value = data.get("value")
    if encoding == "binary":
        if isinstance(value, str):
            value = value.encode("utf-8")
        elif isinstance(value, dict) and set(value) == {"hex"}:
            value = bytes.fromhex(value["hex"])
    return Node(
        key=data["key"],
        value=value,
        deleted=data["deleted"],
        writer=bytes.fromhex(data["writer"]),
        seq=data["seq"],
        clock={bytes.fromhex(k): v for k, v in data.get("clock", {}).items()},
        authorizes=tuple(bytes.fromhex(k) for k in data.get("authorizes", ())),
        kind=data.get("kind", "entry"),
        role=data.get("role"),
        prefixes=None if data.get("prefixes") is None else tuple(data["prefixes"]),
        revokes=tuple(bytes.fromhex(k) for k in data.get("revokes", ())),
        blobs=tuple(BlobRef(bytes.fromhex(b["id"]), b["size"]) for b in data.get("blobs", ())),
    )


def connect(path: str | os.PathLike[str], *, timeout: float | None = 5.0) -> socket.socket | None:
    """A connection to the control socket of the database in ``path``, or ``None`` when no process
    answers there (no socket, or a stale one)."""
    where = socket_path(path)
    if not where.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        with _address(where) as address:
            sock.connect(address)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except OSError as exc:
        sock.close()
        raise StorageError(f"cannot reach the process serving {path}: {exc.strerror}") from None
    return sock


class Connection:
    """One client connection: send requests, read JSON lines."""

    def __init__(self, sock: socket.socket, path: str) -> None:
        self._sock = sock
        self._path = path
        self._file = sock.makefile("rb")

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, ensure_ascii=False).encode("utf-8") + b"\n"
        self._sock.sendall(line)

    def receive(self) -> dict[str, Any] | None:
        """The next line, or ``None`` when the server closed the connection."""
        line = self._file.readline(MAX_RESPONSE + 1)
        if not line:
            return None
        if not line.endswith(b"\n"):
            raise StorageError(f"the process serving {self._path} sent a line cut short")
        try:
            answer = json.loads(line)
        except (ValueError, RecursionError):
            answer = None
        if not isinstance(answer, dict):
            raise StorageError(f"the process serving {self._path} sent {answer!r}")
        if answer.get("ok") is False:
            raise error_from(answer.get("code"), answer.get("message"))
        return answer

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)


def open_connection(path: str) -> Connection | None:
    sock = connect(path)
    return None if sock is None else Connection(sock, path)


def forward(path: str, request: dict[str, Any]) -> tuple[list[Node], str] | None:
    """Send the write ``request`` to the process serving ``path``: the nodes it wrote and the
    database's value encoding, ``None`` when no process answers there, or the error the write
    raised there."""
    answer = forward_answer(path, request)
    if answer is None:
        return None
    encoding = str(answer.get("value_encoding", "binary"))
    return [node_from_json(node, encoding) for node in answer["nodes"]], encoding


def forward_answer(path: str, request: dict[str, Any]) -> dict[str, Any] | None:
    """:func:`forward`'s answer as the serving process sent it (``None``: no process)."""
    connection = open_connection(path)
    if connection is None:
        return None
    with connection:
        connection.settimeout(REQUEST_TIMEOUT)
        try:
            connection.send(request)
            answer = connection.receive()
        except TimeoutError:
            raise StorageError(
                f"the process serving {path} did not answer in {REQUEST_TIMEOUT:g} s"
            ) from None
        except (ConnectionError, OSError) as exc:
            if isinstance(exc, HyperDBError):
                raise
            raise StorageError(f"the process serving {path} went away: {exc}") from None
    if answer is None:
        raise StorageError(f"the process serving {path} closed the connection without answering")
    return answer


def write(path: str, request: dict[str, Any], open_database: Callable[[], Database]) -> list[Node]:
    """Do a write command: on the database opened by ``open_database()`` when this process can
    open it, else through the process that holds it (its control socket); the nodes written.
    When neither works, the error of the open (``in_use``: open in another process) stands."""
    check_request(request)
    try:
        db = open_database()
    except StorageInUse:
        forwarded = forward(path, request)
        if forwarded is None:
            raise
        return forwarded[0]
    with db:
        return execute(db, request)


# --- the server side ------------------------------------------------------------------------------


def _clear_stale(where: Path) -> None:
    """Remove a socket file nothing answers on; refuse a live one or a file that is no socket."""
    try:
        mode = os.lstat(where).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StorageError(f"{where} exists and is not a socket: move it away to serve here")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(2.0)
        with _address(where) as address:
            probe.connect(address)
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # stale: left by a process that ended without removing it
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise StorageError(f"cannot check {where}: {exc.strerror}") from None
    else:
        raise StorageInUse(f"another process already answers on {where}")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(where)


def bind(where: Path) -> socket.socket:
    """A listening Unix socket at ``where``, permission 0600 from its creation. (The umask is the
    process's: a file another thread creates in the same instant gets at most 0600 too.)"""
    _clear_stale(where)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _address(where) as address:
            previous = os.umask(0o177)
            try:
                sock.bind(address)
            finally:
                os.umask(previous)
        os.chmod(where, 0o600)
        sock.listen(16)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode("utf-8") + b"\n"


def _failure(exc: HyperDBError) -> dict[str, Any]:
    return {"ok": False, "code": exc.code, "message": str(exc)}


class ControlServer:
    """Answers the control socket of ``db`` on the running event loop."""

    def __init__(self, db: Database, path: str | os.PathLike[str]) -> None:
        self.db = db
        self.path = socket_path(path)
        self._server: asyncio.AbstractServer | None = None
        self._identity: tuple[int, int] | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        sock = bind(self.path)
        info = os.stat(self.path)
        self._identity = (info.st_dev, info.st_ino)
        self._server = await asyncio.start_unix_server(self._session, sock=sock, limit=MAX_REQUEST)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._sessions):
                task.cancel()
            await asyncio.gather(*self._sessions, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(OSError):  # only the file this server made
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self._identity:
                os.unlink(self.path)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._sessions.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    too_long = InvalidArgument(f"a request is at most {MAX_REQUEST} bytes")
                    writer.write(_line(_failure(too_long)))
                    await writer.drain()
                    break
                if not line:
                    break
                if not line.endswith(b"\n"):
                    break  # the client went away in the middle of a line
                try:
                    request = json.loads(line)
                except (ValueError, RecursionError):
                    writer.write(_line(_failure(InvalidArgument("a request is one JSON line"))))
                    await writer.drain()
                    continue
                if isinstance(request, dict) and request.get("op") == "changes":
                    await self._changes(request, reader, writer)
                    break
                writer.write(_line(await self._answer(request)))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except asyncio.CancelledError:
            pass  # the server is stopping
        finally:
            if task is not None:
                self._sessions.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, request: object) -> dict[str, Any]:
        report = None
        try:
            checked = check_request(request)
            if checked["op"] == "gc":
                report = await asyncio.to_thread(gc_report, self.db, checked)
            nodes = await asyncio.to_thread(execute, self.db, checked)
        except HyperDBError as exc:
            return _failure(exc)
        except Exception as exc:  # a bug must not end the server: say it, and go on
            _log.exception("control request failed")
            return {"ok": False, "code": "internal_error", "message": f"internal error: {exc!r}"}
        answer = {
            "ok": True,
            "nodes": [node_json(node) for node in nodes],
            "value_encoding": self.db.value_encoding,
        }
        if report is not None:
            answer["report"] = report
        return answer

    async def _changes(
        self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        since, prefix, live = request.get("since"), request.get("prefix", ""), request.get("live")
        try:
            if since is not None and not isinstance(since, str):
                raise InvalidArgument("since is a version in hex, or null")
            if not isinstance(prefix, str) or not isinstance(live, bool):
                raise InvalidArgument("a changes request has a prefix string and live true|false")
            stream = self.db.changes(since, prefix=prefix, live=live)
        except HyperDBError as exc:
            writer.write(_line(_failure(exc)))
            await writer.drain()
            return
        writer.write(_line({"ok": True, "value_encoding": self.db.value_encoding}))
        await writer.drain()

        async def relay() -> None:
            async for change_set in stream:
                writer.write(_line({"change_set": change_set.to_json()}))
                await writer.drain()
            writer.write(_line({"end": True}))
            await writer.drain()

        relaying = asyncio.ensure_future(relay())
        closing = asyncio.ensure_future(reader.read())  # EOF: the client went away
        try:
            await asyncio.wait({relaying, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relaying, closing):
                task.cancel()
            await asyncio.gather(relaying, closing, return_exceptions=True)
            stream.close()
        if relaying.done() and not relaying.cancelled() and relaying.exception() is not None:
            error = relaying.exception()
            if isinstance(error, HyperDBError):
                with contextlib.suppress(ConnectionError):
                    writer.write(_line(_failure(error)))
                    await writer.drain()


@asynccontextmanager
async def serving(db: Database, path: str | os.PathLike[str]) -> AsyncIterator[ControlServer]:
    """Answer the control socket of ``db`` (in directory ``path``) while the block runs."""
    server = ControlServer(db, path)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


__all__ = [
    "MAX_REQUEST",
    "SOCKET_NAME",
    "Connection",
    "ControlServer",
    "bind",
    "check_request",
    "connect",
    "error_from",
    "execute",
    "forward",
    "node_from_json",
    "open_connection",
    "parse_json",
    "serving",
    "socket_path",
    "stored_value",
    "value_spec",
    "write",
]
