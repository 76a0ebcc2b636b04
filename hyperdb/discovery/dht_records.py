"""What the DHT stores and says about peers, without the network: the checks every field from
another node passes, the bounded store of announcements a node keeps, the write tokens that tie
an announcement to the address it came from, and the spacing of lookups.

Nothing here imports ``kademlia`` or touches a socket; :mod:`hyperdb.discovery.dht` carries these
over the DHT (``spec/discovery.md`` §3 says which message holds what). Every function that reads
something another node sent returns ``None`` or drops the entry on anything unexpected (a wrong
type, a bad IP text, a port out of range, too many items) and says why, never raises: a node
answering garbage costs one log line and its answer, nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from hyperdb.discovery.base import MAX_RESULTS, TOPIC_SIZE, Address

NODE_ID_SIZE = 20
"""Kademlia node ids (and the keys they are compared with) are 160 bits."""

PEERS_PER_TOPIC = MAX_RESULTS
"""A node keeps at most this many announced addresses per topic, and an answer carries at most
this many."""
PEERS_PER_IP = 8
"""Of one topic's addresses, at most this many share one IP address (one host cannot fill a
topic by announcing many ports)."""
TOPICS_PER_NODE = 1024
"""A node keeps announcements for at most this many topics at once."""
ANNOUNCE_TTL = 20 * 60.0
"""Seconds an announcement is kept without being refreshed."""
REFRESH_INTERVAL = 5 * 60.0
"""Seconds between an announcer's refreshes (well under :data:`ANNOUNCE_TTL`)."""
TOKEN_SIZE = 16
TOKEN_ROTATION = 5 * 60.0
"""Seconds a token secret is current; tokens of the current and the previous secret are
accepted, so a token lives between 5 and 10 minutes."""
MAX_IP_TEXT = 45
"""The longest IP address text (an IPv6 address with an embedded IPv4 one)."""


def dht_key(topic: bytes) -> bytes:
    """The 160-bit DHT key a topic is stored under: its first 20 bytes (a topic is already a
    hash, :func:`hyperdb.discovery.base.topic_of`)."""
    return topic[:NODE_ID_SIZE]


def node_id(value: object) -> bytes | None:
    """``value`` if it is a 20-byte node id (or key), else ``None``."""
    if isinstance(value, bytes) and len(value) == NODE_ID_SIZE:
        return value
    return None


def topic(value: object) -> bytes | None:
    """``value`` if it is a 32-byte topic, else ``None``."""
    if isinstance(value, bytes) and len(value) == TOPIC_SIZE:
        return value
    return None


def ip_text(value: object) -> str | None:
    """``value`` as a normalised IP address text if it is the text of a unicast address (IPv4 or
    IPv6; not unspecified, multicast or broadcast), else ``None``."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_IP_TEXT:
        return None
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if ip.is_unspecified or ip.is_multicast or str(ip) == "255.255.255.255":
        return None
    return str(ip)


def port(value: object) -> int | None:
    """``value`` if it is a port number 1..65535 (an int, not a bool), else ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    return None


def address(value: object) -> Address | None:
    """``value`` as an :data:`Address` if it is a pair ``[ip text, port]``, else ``None``."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    host, number = ip_text(value[0]), port(value[1])
    if host is None or number is None:
        return None
    return (host, number)


Contact = tuple[bytes, str, int]
"""A DHT node as the find_node answer carries it: node id, IP text, UDP port."""


T = TypeVar("T")


@dataclass
class Decoded(Generic[T]):
    """What was kept of an answer, and what was wrong with the rest (empty when nothing was)."""

    items: list[T] = field(default_factory=list)
    token: bytes | None = None
    problems: list[str] = field(default_factory=list)
    garbage: bool = False
    """The answer as a whole was not of the expected form: the node is treated as silent."""


def decode_contacts(answer: object, limit: int) -> Decoded[Contact]:
    """A find_node answer: a list of at most ``limit`` contacts ``[id, ip, port]``. Longer lists
    are cut to ``limit``, malformed entries dropped; not a list, or a non-empty list of which
    nothing is valid, is garbage."""
    out: Decoded[Contact] = Decoded()
    if not isinstance(answer, (list, tuple)):
        out.garbage = True
        out.problems.append(f"find_node answer is a {type(answer).__name__}, not a list")
        return out
    if len(answer) > limit:
        out.problems.append(f"find_node answer has {len(answer)} contacts, kept {limit}")
    kept: list[Contact] = []
    dropped = 0
    for entry in answer[:limit]:
        contact = _contact(entry)
        if contact is None:
            dropped += 1
        else:
            kept.append(contact)
    if dropped:
        out.problems.append(f"find_node answer had {dropped} malformed contacts")
    out.garbage = bool(answer) and not kept
    out.items = kept
    return out


def _contact(entry: object) -> Contact | None:
    if not isinstance(entry, (list, tuple)) or len(entry) != 3:
        return None
    ident, host, number = node_id(entry[0]), ip_text(entry[1]), port(entry[2])
    if ident is None or host is None or number is None:
        return None
    return (ident, host, number)


def encode_peers(peers: list[Address], token: bytes) -> dict[str, object]:
    """A get_peers answer: ``{"peers": [[ip, port], ...], "token": token}``."""
    return {"peers": [[host, number] for host, number in peers[:PEERS_PER_TOPIC]], "token": token}


def decode_peers(answer: object) -> Decoded[Address]:
    """A get_peers answer (:func:`encode_peers`): at most :data:`PEERS_PER_TOPIC` distinct
    addresses (more are cut, malformed ones dropped) and the token, if it is one. Not a map with
    a list of peers is garbage."""
    out: Decoded[Address] = Decoded()
    if not isinstance(answer, dict) or not isinstance(answer.get("peers"), (list, tuple)):
        out.garbage = True
        out.problems.append("get_peers answer is not a map with a list of peers")
        return out
    listed = answer["peers"]
    if len(listed) > PEERS_PER_TOPIC:
        out.problems.append(f"get_peers answer has {len(listed)} peers, kept {PEERS_PER_TOPIC}")
    kept: list[Address] = []
    dropped = 0
    for entry in listed[:PEERS_PER_TOPIC]:
        found = address(entry)
        if found is None:
            dropped += 1
        elif found not in kept:
            kept.append(found)
    if dropped:
        out.problems.append(f"get_peers answer had {dropped} malformed peers")
    token = answer.get("token")
    if isinstance(token, bytes) and len(token) == TOKEN_SIZE:
        out.token = token
    else:
        out.problems.append("get_peers answer has no valid token")
    out.items = kept
    return out


class TopicStore:
    """The announcements a node keeps: topic -> {address: expiry}, bounded per topic
    (:data:`PEERS_PER_TOPIC`, :data:`PEERS_PER_IP`) and in topics (:data:`TOPICS_PER_NODE`).
    A full topic or store refuses new entries (after dropping expired ones) rather than evicting
    the ones it has: an announcer cannot push others out. Times are passed in (seconds,
    monotonic)."""

    def __init__(
        self,
        *,
        ttl: float = ANNOUNCE_TTL,
        per_topic: int = PEERS_PER_TOPIC,
        per_ip: int = PEERS_PER_IP,
        topics: int = TOPICS_PER_NODE,
    ) -> None:
        self.ttl = ttl
        self.per_topic = per_topic
        self.per_ip = per_ip
        self.max_topics = topics
        self._topics: dict[bytes, dict[Address, float]] = {}

    def add(self, topic: bytes, peer: Address, now: float) -> bool:
        """Keep (or refresh) ``peer`` for ``topic`` until ``now + ttl``; ``False`` when a bound
        refuses it."""
        peers = self._topics.get(topic)
        if peers is None:
            if len(self._topics) >= self.max_topics:
                self.expire(now)
            if len(self._topics) >= self.max_topics:
                return False
            peers = self._topics[topic] = {}
        if peer not in peers:
            _drop_expired(peers, now)
            same_ip = sum(1 for host, _ in peers if host == peer[0])
            if len(peers) >= self.per_topic or same_ip >= self.per_ip:
                if not peers:
                    del self._topics[topic]
                return False
        peers[peer] = now + self.ttl
        return True

    def peers(self, topic: bytes, now: float) -> list[Address]:
        """The unexpired addresses kept for ``topic``, the most recently refreshed first."""
        peers = self._topics.get(topic, {})
        live = [(expiry, peer) for peer, expiry in peers.items() if expiry > now]
        return [peer for _, peer in sorted(live, reverse=True)][: self.per_topic]

    def expire(self, now: float) -> None:
        """Drop every expired announcement, and topics left empty."""
        for name in list(self._topics):
            _drop_expired(self._topics[name], now)
            if not self._topics[name]:
                del self._topics[name]

    def __len__(self) -> int:
        """The number of topics kept."""
        return len(self._topics)


def _drop_expired(peers: dict[Address, float], now: float) -> None:
    for peer in [peer for peer, expiry in peers.items() if expiry <= now]:
        del peers[peer]


class Tokens:
    """Write tokens: a node hands ``token(ip)`` to whoever asks get_peers from ``ip`` and takes an
    announcement from ``ip`` only with a token it handed out there in the last one or two
    rotations, so an announcement cannot name an address its sender does not receive at."""

    def __init__(self, *, rotation: float = TOKEN_ROTATION, now: float = 0.0) -> None:
        self.rotation = rotation
        self._secrets = [os.urandom(32), os.urandom(32)]  # current, previous
        self._rotated = now

    def _rotate(self, now: float) -> None:
        if now - self._rotated >= 2 * self.rotation:
            self._secrets = [os.urandom(32), os.urandom(32)]
            self._rotated = now
        elif now - self._rotated >= self.rotation:
            self._secrets = [os.urandom(32), self._secrets[0]]
            self._rotated = now

    def token(self, ip: str, now: float) -> bytes:
        self._rotate(now)
        return _mac(self._secrets[0], ip)

    def valid(self, ip: str, token: object, now: float) -> bool:
        self._rotate(now)
        return isinstance(token, bytes) and any(
            hmac.compare_digest(token, _mac(secret, ip)) for secret in self._secrets
        )


def _mac(secret: bytes, ip: str) -> bytes:
    return hashlib.blake2b(ip.encode(), key=secret, digest_size=TOKEN_SIZE).digest()


class Spacing:
    """Lookups of one topic at least ``interval`` seconds apart: :meth:`wait` says how long the
    next one must wait, and counts it as started then."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[bytes, float] = {}

    def wait(self, key: bytes, now: float) -> float:
        last = self._last.get(key)
        delay = 0.0 if last is None else max(0.0, last + self.interval - now)
        self._last[key] = now + delay
        if len(self._last) > TOPICS_PER_NODE:
            oldest = min(self._last, key=self._last.__getitem__)
            del self._last[oldest]
        return delay
