"""What every way of finding peers shares: the topic a database is announced under, the
:class:`Discovery` protocol the LAN and DHT implementations follow, and the bounds on what a
lookup may yield (``spec/protocol.md`` §7).

The topic is BLAKE2b-256 of the database's discovery key, keyed by a domain string: publishing
it tells an observer (on the LAN, in the DHT) nothing that lets it read the database, nor the
discovery key that replication sessions carry, so announcements and sessions are not linked by
a shared name. Addresses found are hints: whoever connects to one runs the capability check,
which a peer without the database key fails before anything is exchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Protocol

from hyperdb.errors import InvalidArgument
from hyperdb.primitives import crypto

Address = tuple[str, int]
"""A peer's host (an IP address, as text) and TCP port."""

TOPIC_DOMAIN = b"hyperdb discovery topic v1"
TOPIC_SIZE = 32
MAX_RESULTS = 64
"""A lookup yields at most this many addresses per round (a flooding peer is cut here)."""


def topic_of(discovery_key: bytes) -> bytes:
    """The 32-byte topic a database whose discovery key is ``discovery_key`` is announced
    under."""
    if not isinstance(discovery_key, bytes) or len(discovery_key) != crypto.PUBLIC_KEY_SIZE:
        raise InvalidArgument("a discovery key is 32 bytes")
    return crypto.blake2b(discovery_key, key=TOPIC_DOMAIN, digest_size=TOPIC_SIZE)


def check_topic(topic: object) -> bytes:
    """``topic`` checked: 32 bytes (:class:`InvalidArgument` otherwise)."""
    if not isinstance(topic, bytes) or len(topic) != TOPIC_SIZE:
        raise InvalidArgument(f"a topic is {TOPIC_SIZE} bytes (topic_of(db.discovery_key))")
    return topic


def check_port(port: object) -> int:
    """``port`` checked: a TCP port, 1 to 65535 (:class:`InvalidArgument` otherwise)."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise InvalidArgument(f"a port is a number from 1 to 65535, not {port!r}")
    return port


class Discovery(Protocol):
    """A way of finding peers. Implementations: ``hyperdb.discovery.lan.LanDiscovery``,
    ``hyperdb.discovery.dht.DhtDiscovery``."""

    name: str
    """Short name for events and status lines: ``"lan"``, ``"dht"``."""

    async def announce(self, topic: bytes, port: int) -> None:
        """Say that this host serves ``topic`` on TCP ``port``, and keep saying it (refreshed as
        the implementation needs) until :meth:`unannounce` or :meth:`close`."""

    async def unannounce(self, topic: bytes) -> None:
        """Stop announcing ``topic``."""

    def lookup(self, topic: bytes) -> AsyncIterator[Address]:
        """The addresses announced for ``topic`` that this finds now, at most
        :data:`MAX_RESULTS`, each once; ends when this round of looking is done."""

    async def close(self) -> None:
        """Stop announcing and looking; release sockets. Idempotent."""


class KnownPeers:
    """Discovery by addresses given by hand (a bootstrap list, a peer on a VPN): ``lookup``
    yields them (at most :data:`MAX_RESULTS`); ``announce`` tells no one."""

    name = "known"

    def __init__(self, addresses: Iterable[Address]) -> None:
        checked: list[Address] = []
        for address in addresses:
            if not (isinstance(address, tuple) and len(address) == 2):
                raise InvalidArgument(f"an address is (host, port), not {address!r}")
            host, port = address
            if not isinstance(host, str) or not host:
                raise InvalidArgument(f"a host is a non-empty string, not {host!r}")
            checked.append((host, check_port(port)))
        self.addresses = checked[:MAX_RESULTS]

    async def announce(self, topic: bytes, port: int) -> None:
        check_topic(topic)
        check_port(port)

    async def unannounce(self, topic: bytes) -> None:
        check_topic(topic)

    async def lookup(self, topic: bytes) -> AsyncIterator[Address]:
        check_topic(topic)
        for address in self.addresses:
            yield address

    async def close(self) -> None:
        return None
