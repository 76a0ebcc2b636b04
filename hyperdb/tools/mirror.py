"""The SQLite mirror: a database's current entries kept in a SQLite file, for SQL queries.

This is the only module that imports :mod:`sqlite3` (the standard library's). A :class:`Mirror`
is one SQLite file that follows one database; :func:`mirror` feeds it from ``db.changes``.

**Exactly once.** The mirror stores its checkpoint, the version of the database it mirrors, in
the same SQLite transaction as the rows a change set wrote. A change set applies only if its
``since`` is the stored checkpoint; one whose ``version`` is the checkpoint was applied already
and is skipped (``apply`` returns ``False``: a stream resumed, or a set delivered twice); any
other is refused with :class:`~hyperdb.errors.InvalidArgument`, and nothing is written. A crash
at any point leaves the rows and the checkpoint of the last committed transaction, so resuming
with ``db.changes(since=mirror.checkpoint)`` applies every later change once. Each transaction
starts with ``BEGIN IMMEDIATE`` and reads the checkpoint inside it: two processes feeding one
file cannot both apply a set.

**Durability.** The file is in WAL mode with ``synchronous=NORMAL``: a commit survives the
process dying at any point; after an OS crash or power loss the last commits may be lost, rows
and checkpoint together (the file stays consistent, and resuming applies them again). The mirror
holds nothing the database does not, so it trades that durability for speed.

**Schema.**

``entries``, one row per key that has current nodes (``db.get(key)`` is not empty; a key whose
nodes after a change are ``[]`` is deleted from the table):

* ``key`` TEXT PRIMARY KEY, the key as the database normalizes it;
* ``value``, the value ``get_one`` chooses (of the current nodes, the one whose writer had seen
  the most, ties broken by the larger writer key: :func:`hyperdb.api.snapshot.resolve`'s rule):
  JSON text in a ``json`` database (so ``json_extract(value, '$.title')`` works) and in one with
  a custom codec (its decoded values in JSON), TEXT in a ``utf-8`` one, a BLOB in a ``binary``
  one; NULL when the chosen node is a deletion (or a node stored without a value);
* ``deleted`` INTEGER, 1 when the chosen node is a deletion (a deletion concurrent with a put,
  which ``get`` returns beside the put; ``get_one`` then answers ``None``), else 0;
* ``writer`` TEXT, the chosen node's writer key in hex, and ``seq`` INTEGER, its position in
  that writer's feed;
* ``conflict`` INTEGER, 1 when the key has several current nodes (concurrent writes), else 0;
* ``nodes`` TEXT, with a conflict a JSON array of every current node in ``get``'s order, each
  ``{"value": ..., "deleted": ..., "writer": hex, "seq": n}`` (values as
  :func:`hyperdb.model.node.json_value` gives them); NULL without one;
* ``version`` TEXT, the version (hex) of the change set that last wrote the row.

``mirror_state(name TEXT PRIMARY KEY, value TEXT)``: ``database`` (the database key in hex: a file
mirrors one database and refuses change sets for another), ``encoding`` (the value encoding the
``value`` column follows), ``checkpoint`` (the version in hex, ``""`` for the empty database),
``sets`` and ``changes`` (counts of the change sets and key changes applied).

``mirror_log`` (only in a file created with ``log=True``; it keeps it): one row per change set
applied, ``n INTEGER PRIMARY KEY, since TEXT, version TEXT UNIQUE, keys INTEGER, merged INTEGER``;
the applied sets form one chain from ``""`` to the checkpoint, each set once.

A change set is given as the :class:`~hyperdb.api.changes.ChangeSet` an in-process stream yields
or as its ``to_json()`` dict (what a served database streams to another process); both give the
same rows.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from hyperdb.errors import Closed, EncodingMismatch, InvalidArgument, StorageError
from hyperdb.model.node import Node, json_value

ENCODINGS = ("binary", "utf-8", "json")
BUSY_TIMEOUT = 30.0
"""Seconds a transaction waits for another connection's write (a second mirror process)."""
CATCH_UP_SETS = 500
"""Catching up, change sets applied per SQLite transaction (at most)."""
CATCH_UP_CHANGES = 20_000
"""Catching up, key changes applied per SQLite transaction (about: whole sets)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    value,
    deleted INTEGER NOT NULL,
    writer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    conflict INTEGER NOT NULL,
    nodes TEXT,
    version TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mirror_state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS mirror_log (
    n INTEGER PRIMARY KEY,
    since TEXT NOT NULL,
    version TEXT NOT NULL UNIQUE,
    keys INTEGER NOT NULL,
    merged INTEGER NOT NULL
);
"""
_UPSERT = (
    "INSERT INTO entries (key, value, deleted, writer, seq, conflict, nodes, version) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
    "deleted = excluded.deleted, writer = excluded.writer, seq = excluded.seq, "
    "conflict = excluded.conflict, nodes = excluded.nodes, version = excluded.version"
)

Row = tuple[str, Any, int, str, int, int, str | None, str]
"""One ``entries`` row: key, value, deleted, writer, seq, conflict, nodes, version."""


class ChangeLike(Protocol):
    """What the mirror reads of a change (``hyperdb.api.changes.Change``)."""

    @property
    def key(self) -> str: ...

    @property
    def after(self) -> list[Node]: ...


class ChangeSetLike(Protocol):
    """What the mirror reads of a change set (``hyperdb.api.changes.ChangeSet``)."""

    @property
    def version(self) -> bytes: ...

    @property
    def since(self) -> bytes: ...

    @property
    def merged(self) -> bool: ...

    @property
    def changes(self) -> Sequence[ChangeLike]: ...


class Readable(Protocol):
    """A database or a snapshot: what :func:`rows_of` lists."""

    def list(self, prefix: str = "") -> Iterator[tuple[str, list[Node]]]: ...


class ChangeSource(Protocol):
    """A database: what :func:`mirror` reads."""

    key: bytes

    @property
    def value_encoding(self) -> str: ...

    def changes(self, since: bytes | str | None = None, *, live: bool = False) -> Any: ...


@dataclass(frozen=True)
class MirrorStats:
    """What one :func:`mirror` run did: change sets and key changes applied, sets skipped as
    applied before, the checkpoint it left, and the seconds it took."""

    sets: int
    changes: int
    skipped: int
    checkpoint: bytes
    seconds: float


# --- rows from nodes ------------------------------------------------------------------------------

# A current node, the same from a Node and from its JSON form: (JSON value, deleted, writer
# hex, seq, clock total). Writer keys in lowercase hex of equal length order as the bytes do.
_Current = tuple[Any, bool, str, int, int]


def _from_node(node: Node) -> _Current:
    return (node.value, node.deleted, node.writer.hex(), node.seq, sum(node.clock.values()))


def _from_json(node: Mapping[str, Any]) -> _Current:
    try:
        clock = node["clock"]
        return (
            node["value"],
            bool(node["deleted"]),
            str(node["writer"]),
            int(node["seq"]),
            sum(int(length) for length in clock.values()),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidArgument(f"a node in a change set's JSON form is malformed: {exc}") from None


def _column(value: Any, encoding: str) -> Any:
    """A value (a node's, or its JSON form's) as the ``value`` column stores it."""
    if encoding not in ("binary", "utf-8"):  # json, or a custom codec: the value as JSON
        return json.dumps(json_value(value), ensure_ascii=False, separators=(",", ":"))
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):  # utf-8 text; under binary, the JSON form of UTF-8 bytes
        return value if encoding == "utf-8" else value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {"hex"}:  # the JSON form of other bytes
        try:
            return bytes.fromhex(value["hex"])
        except (TypeError, ValueError):
            pass
    raise InvalidArgument(f"a {encoding} database's value cannot be {type(value).__name__}")


def _row(key: str, current: Sequence[_Current], encoding: str, version: str) -> Row:
    value, deleted, writer, seq, _ = max(current, key=lambda c: (c[4], c[2]))
    nodes = None
    if len(current) > 1:
        nodes = json.dumps(
            [
                {"value": json_value(v), "deleted": d, "writer": w, "seq": s}
                for v, d, w, s, _ in current
            ],
            ensure_ascii=False,
            separators=(",", ":"),
        )
    column = None if deleted else _column(value, encoding)
    return (key, column, int(deleted), writer, seq, int(len(current) > 1), nodes, version)


def rows_of(view: Readable, encoding: str, version: bytes | str = b"") -> Iterator[Row]:
    """The ``entries`` rows for every key of ``view`` (a database or a snapshot), in its
    listing order, each with ``version`` (hex) as the version that wrote it: what a mirror of
    ``view`` holds, for checking one (compare with ``Mirror.rows`` leaving out the version)."""
    hexed = version if isinstance(version, str) else version.hex()
    for key, nodes in view.list(""):
        if nodes:
            yield _row(key, [_from_node(node) for node in nodes], encoding, hexed)


# --- the mirror -----------------------------------------------------------------------------------


class Mirror:
    """One SQLite file mirroring one database (see the module docstring for its tables).

    ``Mirror(path, database=key, encoding=name)`` opens or creates the file; ``database`` (bytes
    or hex) and ``encoding`` are recorded the first time and checked afterwards: a file that
    mirrors another database raises :class:`~hyperdb.errors.InvalidArgument`, another encoding
    :class:`~hyperdb.errors.EncodingMismatch`, and nothing is changed. Without them, an
    existing mirror opens as it is (to read its checkpoint) and a new one cannot apply until
    :meth:`bind` names them. ``log=True`` adds ``mirror_log`` (kept from then on). One thread at
    a time; close it (or use ``with``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        database: bytes | str | None = None,
        encoding: str | None = None,
        log: bool = False,
    ) -> None:
        self.path = Path(path)
        try:
            connection = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the mirror {self.path}: {exc}") from None
        self._connection = connection
        self._log = log
        try:
            _set_wal(connection)
            connection.execute("PRAGMA synchronous=NORMAL")
            with self._transaction():
                for statement in (_SCHEMA + (_LOG_SCHEMA if log else "")).split(";"):
                    if statement.strip():  # one at a time: executescript would commit first
                        connection.execute(statement)
        except sqlite3.OperationalError as exc:  # locked for longer than the timeout, or I/O
            connection.close()
            raise StorageError(f"cannot open the mirror {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise InvalidArgument(
                f"{self.path} is not a SQLite file a mirror can use: {exc}"
            ) from None
        except BaseException:
            connection.close()
            raise
        self._log = log or bool(
            self._execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'mirror_log'"
            )
        )
        state = self._state()
        self._database = state.get("database")
        self._encoding = state.get("encoding")
        if database is not None or encoding is not None:
            try:
                self.bind(database, encoding)
            except BaseException:
                connection.close()
                raise

    # --- identity and state -----------------------------------------------------------------------

    def bind(self, database: bytes | str | None, encoding: str | None) -> None:
        """Record (first time) or check the database key and value encoding this file mirrors."""
        key = database.hex() if isinstance(database, bytes) else database
        if key is not None and (len(key) != 64 or not _is_hex(key)):
            raise InvalidArgument(f"a database key is 64 hexadecimal characters, got {key!r}")
        if encoding is not None and (not isinstance(encoding, str) or not encoding):
            raise InvalidArgument(f"an encoding is a codec's name, not {encoding!r}")
        if key is not None and self._database not in (None, key):
            raise InvalidArgument(
                f"{self.path} mirrors database {self._database}, not {key}: mirror each database "
                "into its own file"
            )
        if encoding is not None and self._encoding not in (None, encoding):
            raise EncodingMismatch(
                f"{self.path} holds the values of a {self._encoding} database, and this one is "
                f"{encoding}: mirror it into a new file",
                stored=self._encoding,
                given=encoding,
            )
        with self._transaction():
            state = self._state()
            if key is not None and "database" not in state:
                self._set("database", key)
            if encoding is not None and "encoding" not in state:
                self._set("encoding", encoding)
            if "checkpoint" not in state:
                for name, value in (("checkpoint", ""), ("sets", "0"), ("changes", "0")):
                    self._set(name, value)
        self._database = key or self._database
        self._encoding = encoding or self._encoding

    @property
    def database(self) -> bytes | None:
        """The key of the database this file mirrors (``None`` until bound)."""
        return None if self._database is None else bytes.fromhex(self._database)

    @property
    def encoding(self) -> str | None:
        return self._encoding

    @property
    def checkpoint(self) -> bytes:
        """The version of the database the rows show (``b""``: the empty database)."""
        return bytes.fromhex(self._state().get("checkpoint", ""))

    def counts(self) -> tuple[int, int]:
        """``(change sets, key changes)`` applied to this file so far, over every run."""
        state = self._state()
        return int(state.get("sets", "0")), int(state.get("changes", "0"))

    def rows(self) -> list[Row]:
        """Every ``entries`` row, sorted by key."""
        return [tuple(row) for row in self._execute("SELECT * FROM entries ORDER BY key")]

    def log(self) -> list[tuple[int, str, str, int, int]]:
        """``mirror_log``'s rows in order (``[]`` without ``log=True``)."""
        if not self._log:
            return []
        return list(self._execute("SELECT * FROM mirror_log ORDER BY n"))

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only SQL query on this file (for tests and tools; applications
        open the file with their own SQLite connection)."""
        return list(self._execute(sql, parameters))

    # --- applying ---------------------------------------------------------------------------------

    def apply(self, change_set: ChangeSetLike | dict[str, Any]) -> bool:
        """Apply one change set (or its ``to_json()`` dict) in one SQLite transaction with the
        new checkpoint. ``False`` when its ``version`` is the checkpoint (applied before:
        nothing is written); :class:`~hyperdb.errors.InvalidArgument` when its ``since`` is not
        the checkpoint (a gap, or another history: nothing is written)."""
        return self.apply_many([change_set])[0] == 1

    def apply_many(
        self, change_sets: Iterable[ChangeSetLike | dict[str, Any]]
    ) -> tuple[int, int, int]:
        """Apply consecutive change sets in ONE SQLite transaction (faster when catching up),
        each as :meth:`apply` would; ``(sets applied, key changes applied, sets skipped)``. A key
        changed by several of them is written once, as the last left it. An error leaves the
        file as it was before the call."""
        self._check_bound()
        encoding = self._encoding
        assert encoding is not None
        applied = changed = skipped = 0
        final: dict[str, Row | None] = {}  # each key's last row in the group (None: deleted)
        logged: list[tuple[str, str, int, int]] = []
        with self._transaction():
            state = self._state()
            checkpoint = state["checkpoint"]
            for change_set in change_sets:
                since, version, merged, items = _parts(change_set, encoding)
                if since != checkpoint:
                    if version == checkpoint:
                        skipped += 1
                        continue
                    raise InvalidArgument(
                        f"a change set from version {since[:24] or '(empty)'}... does not follow "
                        f"this mirror's checkpoint {checkpoint[:24] or '(empty)'}...: resume "
                        "with db.changes(since=mirror.checkpoint)"
                    )
                for key, current in items:
                    final[key] = _row(key, current, encoding, version) if current else None
                if self._log:
                    logged.append((since, version, len(items), int(merged)))
                checkpoint = version
                applied += 1
                changed += len(items)
            if applied:
                connection = self._connection
                upserts = [row for row in final.values() if row is not None]
                if upserts:
                    connection.executemany(_UPSERT, upserts)
                deletes = [(key,) for key, row in final.items() if row is None]
                if deletes:
                    connection.executemany("DELETE FROM entries WHERE key = ?", deletes)
                if logged:
                    connection.executemany(
                        "INSERT INTO mirror_log (since, version, keys, merged) VALUES (?, ?, ?, ?)",
                        logged,
                    )
                self._set("checkpoint", checkpoint)
                self._set("sets", str(int(state["sets"]) + applied))
                self._set("changes", str(int(state["changes"]) + changed))
        return applied, changed, skipped

    # --- closing ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the SQLite connection. Idempotent."""
        self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<hyperdb.tools.mirror.Mirror {self.path}>"

    # --- internals --------------------------------------------------------------------------------

    def _check_bound(self) -> None:
        if self._database is None or self._encoding is None:
            raise InvalidArgument(
                f"{self.path} does not say which database it mirrors yet: open it with "
                "Mirror(path, database=db.key, encoding=db.value_encoding)"
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        connection = self._connection
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.ProgrammingError as exc:
            raise Closed(f"the mirror {self.path} is closed") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"the mirror {self.path}: {exc}") from None
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise
        try:
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise StorageError(f"the mirror {self.path}: {exc}") from None

    def _execute(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._connection.execute(sql, parameters).fetchall()
        except sqlite3.ProgrammingError as exc:
            if "closed" in str(exc):
                raise Closed(f"the mirror {self.path} is closed") from exc
            raise InvalidArgument(f"the query failed: {exc}") from None
        except sqlite3.Error as exc:
            raise InvalidArgument(f"the query failed: {exc}") from None

    def _state(self) -> dict[str, str]:
        return dict(self._execute("SELECT name, value FROM mirror_state"))

    def _set(self, name: str, value: str) -> None:
        self._connection.execute(
            "INSERT OR REPLACE INTO mirror_state (name, value) VALUES (?, ?)", (name, value)
        )


def _set_wal(connection: sqlite3.Connection) -> None:
    """Put the file in WAL mode. Two connections switching a new file at once can get "database
    is locked" at once, without SQLite's busy wait: try again until :data:`BUSY_TIMEOUT`."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return text == text.lower()


def _parts(
    change_set: ChangeSetLike | dict[str, Any], encoding: str
) -> tuple[str, str, bool, list[tuple[str, list[_Current]]]]:
    """``(since hex, version hex, merged, [(key, current nodes after)])`` of either form."""
    if isinstance(change_set, dict):
        try:
            since, version = str(change_set["since"]), str(change_set["version"])
            items = [
                (str(change["key"]), [_from_json(node) for node in change["after"]])
                for change in change_set["changes"]
            ]
            return since, version, bool(change_set.get("merged", False)), items
        except (KeyError, TypeError) as exc:
            raise InvalidArgument(f"a change set's JSON form is malformed: {exc}") from None
    items = [
        (change.key, [_from_node(node) for node in change.after]) for change in change_set.changes
    ]
    return change_set.since.hex(), change_set.version.hex(), change_set.merged, items


# --- following a database -------------------------------------------------------------------------


def feed(
    target: Mirror,
    change_sets: Iterable[ChangeSetLike | dict[str, Any]],
    *,
    group: bool = True,
    stop: threading.Event | None = None,
) -> tuple[int, int, int]:
    """Apply ``change_sets`` in order: grouped up to :data:`CATCH_UP_SETS` sets or about
    :data:`CATCH_UP_CHANGES` key changes per SQLite transaction when ``group`` (a stream that
    ends: catching up), else each in its own as it comes (a live stream, whose next set may be
    a while away). Stops early when ``stop`` is set. ``(applied, changes, skipped)``."""
    applied = changed = skipped = 0
    pending: list[ChangeSetLike | dict[str, Any]] = []
    size = 0

    def flush() -> None:
        nonlocal applied, changed, skipped, size
        if pending:
            a, c, s = target.apply_many(pending)
            applied, changed, skipped = applied + a, changed + c, skipped + s
            pending.clear()
            size = 0

    for change_set in change_sets:
        pending.append(change_set)
        size += _count(change_set)
        if not group or len(pending) >= CATCH_UP_SETS or size >= CATCH_UP_CHANGES:
            flush()
        if stop is not None and stop.is_set():
            break
    flush()
    return applied, changed, skipped


def mirror(
    db: ChangeSource,
    path: str | Path,
    *,
    live: bool = False,
    stop: threading.Event | None = None,
    log: bool = False,
) -> MirrorStats:
    """Bring the mirror in ``path`` (created if missing) up to ``db``'s current version, from
    its stored checkpoint (``db.changes(since=checkpoint)``). With ``live=True`` it then
    follows every new transaction, each committed into SQLite as it comes, until ``stop`` (a
    :class:`threading.Event`, set from another thread) is set or ``db`` closes. Safe to kill
    at any point: the next run resumes from what the file says it holds."""
    started = time.perf_counter()
    with Mirror(path, database=db.key, encoding=db.value_encoding, log=log) as target:
        applied, changed, skipped = feed(target, db.changes(target.checkpoint), stop=stop)
        if live and not (stop is not None and stop.is_set()):
            stream = db.changes(target.checkpoint, live=True)
            watcher = None
            if stop is not None:  # the live stream blocks: close it from another thread
                watcher = threading.Thread(
                    target=_close_on, args=(stop, stream), name="hyperdb-mirror-stop", daemon=True
                )
                watcher.start()
            try:
                more = feed(target, stream, group=False, stop=stop)
            except Closed:
                more = (0, 0, 0)
            finally:
                stream.close()
                if stop is not None:
                    stop.set()  # ends the watcher thread if the stream ended first
                if watcher is not None:
                    watcher.join()
            applied, changed, skipped = applied + more[0], changed + more[1], skipped + more[2]
        return MirrorStats(
            applied, changed, skipped, target.checkpoint, time.perf_counter() - started
        )


def _close_on(stop: threading.Event, stream: Any) -> None:
    stop.wait()
    stream.close()


def _count(change_set: ChangeSetLike | dict[str, Any]) -> int:
    changes = change_set["changes"] if isinstance(change_set, dict) else change_set.changes
    return len(changes) if type(changes) is list else 1
