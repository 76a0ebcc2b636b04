"""Who holds what, for a database: the reads behind ``Database.acks``, ``wait_acked`` and
``peers`` (``spec/receipts.md`` §6), over the database's state, its receipt book and its nodes.
:mod:`hyperdb.api.acks` holds the pure counting; this module gathers what it counts.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import Iterable
from typing import Protocol

from hyperdb.api import acks as acks_module
from hyperdb.api.checks import check_public_key
from hyperdb.errors import AckTimeout, InvalidArgument
from hyperdb.feed import ForkEvidence
from hyperdb.model.context import DatabaseContext
from hyperdb.model.identity import ROLE_NAMES
from hyperdb.model.node import Node
from hyperdb.model.reader import NodeReader
from hyperdb.model.replica import StoreReplica
from hyperdb.model.state import State
from hyperdb.model.version import parse_version


class _Database(Protocol):
    """What is read of the database itself: its version and its forks."""

    def version(self) -> bytes: ...

    def forks(self) -> builtins.list[ForkEvidence]: ...


class Holders:
    """The acknowledgement reads of one open database."""

    def __init__(
        self,
        context: DatabaseContext,
        reader: NodeReader,
        port: StoreReplica,
        key: bytes,
        local_key: bytes,
        database: _Database,
    ) -> None:
        self._context = context
        self._reader = reader
        self.replication_port = port
        self.key = key
        self.local_key = local_key
        self._database = database

    def version(self) -> bytes:
        return self._database.version()

    def forks(self) -> builtins.list[ForkEvidence]:
        return self._database.forks()

    def _open_state(self) -> State:
        self._context.check_open()
        return self._context.state

    def acks(
        self,
        version: bytes | str | Node | None = None,
        *,
        roles: Iterable[str] | None = acks_module.DEFAULT_ROLES,
        durable: bool = True,
        keys: Iterable[bytes] | None = None,
    ) -> dict[bytes, acks_module.Ack]:
        """The other replicas known to hold ``version`` (a version, a node, or None: this
        replica's current version), by writer key: from their signed receipts (gossiped through
        any peer) and writers' own latest nodes (``spec/receipts.md`` §6). Counted: keys whose
        role here is in ``roles`` (None: any key), receipts ``durable`` (fsynced) unless False,
        and only ``keys`` if given. This replica itself is never counted."""
        state = self._open_state()
        heads = self._heads_of(version)
        chosen = acks_module.check_roles(roles)
        if not isinstance(durable, bool):
            raise InvalidArgument("durable must be a boolean")
        candidates = self._other_keys(state) if keys is None else self._given_keys(keys)
        return acks_module.acknowledgements(
            candidates,
            self.replication_port.receipt_book.record,
            self._node_lengths,
            self._role_name,
            self._fork_caps(),
            heads,
            roles=chosen,
            durable=durable,
        )

    async def wait_acked(
        self,
        target: bytes | str | Node | None = None,
        n: int = 2,
        *,
        timeout: float | None = None,
        roles: Iterable[str] | None = acks_module.DEFAULT_ROLES,
        durable: bool = True,
        keys: Iterable[bytes] | None = None,
    ) -> dict[bytes, acks_module.Ack]:
        """Wait until ``n`` other replicas hold ``target`` (a node, a version, None: the current
        version when called), as :meth:`acks` counts them; returns their acknowledgements.
        Raises :class:`~hyperdb.errors.AckTimeout` after ``timeout`` seconds (None: no limit),
        with ``.acks`` holding what was reached. Woken by every receipt stored and every change,
        never by polling."""
        if type(n) is not int or n < 1:
            raise InvalidArgument(f"n must be a positive integer, got {n!r}")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise InvalidArgument(f"timeout must be a positive number of seconds, got {timeout!r}")
        version = self.version() if target is None else target
        wanted_keys = None if keys is None else list(keys)
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake(*_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(woken.set)

        port = self.replication_port
        book = port.receipt_book
        book.add_listener(wake)  # every receipt stored, whoever signed it
        port.add_change_listener(wake)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                woken.clear()
                reached = self.acks(version, roles=roles, durable=durable, keys=wanted_keys)
                if len(reached) >= n:
                    return reached
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise AckTimeout(
                        f"{len(reached)} of the {n} acknowledgements wanted arrived in {timeout} s",
                        acks=reached,
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), remaining)
        finally:
            book.remove_listener(wake)
            port.remove_change_listener(wake)

    def peers(self) -> builtins.list[acks_module.PeerStatus]:
        """Every other replica this one knows (by receipt, by a session, or as a writer): its
        role, when and where it was last met, what it holds, what it lacks of what this replica
        has applied, and whether it holds the current version."""
        state = self._open_state()
        book = self.replication_port.receipt_book
        keys = {key for key in book if key != self.local_key} | set(self._other_keys(state))
        applied = {state.feeds[fid].key: length for fid, length in state.applied.items() if length}
        return acks_module.peer_statuses(
            keys,
            book.record,
            self._node_lengths,
            self._role_name,
            self._fork_caps(),
            applied,
            self._heads_of(None),
        )

    def _heads_of(self, version: bytes | str | Node | None) -> builtins.list[tuple[bytes, int]]:
        if version is None:
            version = self.version()
        if isinstance(version, Node):
            return [(version.writer, version.seq)]
        if not isinstance(version, bytes | str):
            raise InvalidArgument("a version is bytes or hex text (or a Node, or None)")
        return parse_version(version)

    def _other_keys(self, state: State) -> builtins.list[bytes]:
        """Keys that may hold something: the database key, every key a grant names, every
        signer of a receipt held; this replica's own aside."""
        book = self.replication_port.receipt_book
        keys = {self.key, *state.ids, *book}
        keys.discard(self.local_key)
        return sorted(keys)

    def _given_keys(self, keys: Iterable[bytes]) -> builtins.list[bytes]:
        chosen = []
        for key in keys:
            check_public_key(key, "a replica's key")
            if key != self.local_key:
                chosen.append(key)
        return chosen

    def _role_name(self, key: bytes) -> str | None:
        number = self.replication_port.role_of(key)
        return ROLE_NAMES[number] if number else None

    def _node_lengths(self, key: bytes) -> dict[bytes, int] | None:
        """A writer's latest node held here, as what it had applied (its clock)."""
        state = self._context.state
        feed_id = state.ids.get(key)
        if feed_id is None:
            return None
        length = state.applied.get(feed_id, 0)
        if length < 2:  # the header alone: no node yet
            return None
        with self._context.storage.read() as tx:
            node = self._reader.public(state, self._reader.load(tx, (feed_id, length - 1)))
        return dict(node.clock)

    def _fork_caps(self) -> dict[bytes, int]:
        """Per forked writer, the blocks both of its histories are shown to share."""
        return {evidence.feed: evidence.check().agreed for evidence in self.forks()}


__all__ = ["Holders"]
