"""Finding peers across the internet: a Kademlia DHT (the ``kademlia`` library, asyncio over UDP)
with a set of peers per topic on top, which the library alone does not have (it stores one value
per key).

Two messages are added to the library's ping and find_node (``spec/discovery.md`` §3):
``get_peers(id, topic)`` answers the addresses a node keeps for a topic and a write token for the
asker's IP; ``announce(id, topic, port, token)`` asks it to keep ``(sender's IP, port)`` for the
topic. The IP is always the UDP source address the node sees, never one the message claims, and
the token proves the sender receives at that IP. Announcements are kept on the k nodes closest to
the topic, bounded and expiring (:mod:`hyperdb.discovery.dht_records`); announcers refresh them.
The library's ``store`` and ``find_value`` are refused: nodes keep nothing but announcements.

Everything another node sends is checked before use (:mod:`hyperdb.discovery.dht_records`):
a node that answers garbage is treated as silent and dropped from the routing table, a node that
floods is cut at the bounds, each time with a warning on this module's logger; every crawl is
bounded in queries and in time, every request by the reply timeout, and incoming datagrams by
size and by a rate per source. Addresses found are hints: the capability check on connection
refuses a peer without the database key.

This is the only module that imports ``kademlia``; its untyped calls stay inside
:class:`_TopicProtocol` and :class:`DhtNode`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from kademlia.crawling import NodeSpiderCrawl  # type: ignore[import-untyped]
from kademlia.node import Node  # type: ignore[import-untyped]
from kademlia.protocol import KademliaProtocol  # type: ignore[import-untyped]
from kademlia.storage import ForgetfulStorage  # type: ignore[import-untyped]

from hyperdb.discovery import dht_records as records
from hyperdb.discovery.base import MAX_RESULTS, Address, check_port, check_topic
from hyperdb.errors import InvalidArgument, NetworkError

log = logging.getLogger(__name__)

DEFAULT_PORT = 49737
"""The UDP port ``hyperdb dht-node`` listens on unless told otherwise."""
MAX_DATAGRAM = 16384
"""Incoming datagrams longer than this are dropped unread."""
PER_NODE = MAX_RESULTS // 4
"""A lookup takes at most this many new addresses from any one node's answer, so a node that
floods cannot fill a round by itself (honest nodes closest to a topic hold the same set)."""
SOURCES = 4096
"""Rate allowances are kept for at most this many source addresses."""


@dataclass(frozen=True)
class DhtOptions:
    """How a node takes part in the DHT. The defaults suit the internet; tests shorten times."""

    ksize: int = 20
    """k: announcements go to (and lookups ask) the k nodes closest to a topic."""
    alpha: int = 3
    """Requests a crawl keeps in flight."""
    reply_timeout: float = 5.0
    """Seconds to wait for a node's answer."""
    crawl_timeout: float = 15.0
    """Seconds a crawl for the closest nodes may take in all."""
    crawl_queries: int = 60
    """find_node requests a crawl may send in all."""
    ttl: float = records.ANNOUNCE_TTL
    refresh: float = records.REFRESH_INTERVAL
    """Seconds between an announcer's refreshes of each topic."""
    early_refresh: tuple[float, ...] = (5.0, 15.0, 45.0)
    """Seconds after an announcement when it is made again before the regular refreshes: a
    node that joined while its routing table was still thin may have announced to nodes that
    are not the closest, and each round's crawl knows the DHT better."""
    lookup_interval: float = 1.0
    """Lookups of one topic start at least this many seconds apart."""
    routing_refresh: float = 15 * 60.0
    """Seconds between refreshes of the routing table (and expiry of announcements kept)."""
    requests_per_second: float = 50.0
    request_burst: float = 200.0
    """Incoming datagrams per source address: this rate, bursts up to this many."""


def parse_address(text: str) -> Address:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as an :data:`Address`; the host may be a name,
    resolved when the node starts."""
    host, sep, number = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not number.isdigit():
        raise InvalidArgument(f"an address is HOST:PORT, not {text!r}")
    return (host, check_port(int(number)))


class _TopicProtocol(KademliaProtocol):  # type: ignore[misc]
    """The library's protocol with get_peers and announce added, every answer checked, and
    store/find_value refused."""

    def __init__(self, node: Any, options: DhtOptions) -> None:
        super().__init__(node, ForgetfulStorage(), options.ksize)
        self._wait_timeout = options.reply_timeout  # rpcudp's wait for each reply
        self.options = options
        self.topics = records.TopicStore(ttl=options.ttl)
        self.tokens = records.Tokens(now=time.monotonic())
        self.allowance: dict[tuple[str, int], tuple[float, float]] = {}
        self.problems = 0
        self.dropped = 0

    # -- incoming --------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) > MAX_DATAGRAM or not self._allow((str(addr[0]), int(addr[1]))):
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning(
                    "DHT: dropped %d datagrams (too long or too many), from %s",
                    self.dropped,
                    addr[0],
                )
            return
        super().datagram_received(data, addr)

    def _allow(self, source: tuple[str, int]) -> bool:
        now = time.monotonic()
        allowance, at = self.allowance.pop(source, (self.options.request_burst, now))
        allowance = min(
            self.options.request_burst, allowance + (now - at) * self.options.requests_per_second
        )
        if len(self.allowance) >= SOURCES:
            self.allowance.pop(next(iter(self.allowance)))
        self.allowance[source] = (allowance - 1, now)
        return allowance >= 1

    def _sender(self, sender: Any, nodeid: object) -> Any:
        ident, host = records.node_id(nodeid), records.ip_text(sender[0])
        if ident is None or host is None:
            log.debug("DHT: request from %s with a malformed node id, ignored", sender[0])
            return None
        source = Node(ident, host, int(sender[1]))
        self.welcome_if_new(source)
        return source

    def rpc_ping(self, sender: Any, *args: object) -> object:
        if len(args) != 1 or self._sender(sender, args[0]) is None:
            return None
        return self.source_node.id

    def rpc_find_node(self, sender: Any, *args: object) -> object:
        if len(args) != 2 or records.node_id(args[1]) is None:
            return None
        source = self._sender(sender, args[0])
        if source is None:
            return None
        neighbors = self.router.find_neighbors(Node(args[1]), exclude=source)
        return [[n.id, n.ip, n.port] for n in neighbors]

    def rpc_find_value(self, sender: Any, *args: object) -> object:
        return self.rpc_find_node(sender, *args)  # never a value: nodes keep none

    def rpc_store(self, sender: Any, *args: object) -> object:
        return False

    def rpc_get_peers(self, sender: Any, *args: object) -> object:
        if len(args) != 2 or records.topic(args[1]) is None:
            return None
        source = self._sender(sender, args[0])
        if source is None:
            return None
        now = time.monotonic()
        peers = self.topics.peers(args[1], now)  # type: ignore[arg-type]
        return records.encode_peers(peers, self.tokens.token(source.ip, now))

    def rpc_announce(self, sender: Any, *args: object) -> object:
        if len(args) != 4:
            return False
        topic, number = records.topic(args[1]), records.port(args[2])
        source = self._sender(sender, args[0])
        if topic is None or number is None or source is None:
            return False
        now = time.monotonic()
        if not self.tokens.valid(source.ip, args[3], now):
            log.debug("DHT: announce from %s with a wrong token, refused", source.ip)
            return False
        return self.topics.add(topic, (source.ip, number), now)

    # -- outgoing --------------------------------------------------------------------------

    async def request(self, address: Address, name: str, *args: object) -> tuple[bool, object]:
        """Call ``name`` on the node at ``address``: (answered, answer)."""
        call = getattr(self, name)  # rpcudp makes any unknown attribute a remote call
        try:
            future = call(address, *args)
        except Exception as error:
            log.debug("DHT: cannot send %s to %s: %s", name, address, error)
            return (False, None)
        ok, answer = await asyncio.shield(future)  # cancelling a crawl leaves rpcudp's own timer
        return (bool(ok), answer)

    def note(self, node: Any, problems: list[str]) -> None:
        for problem in problems:
            self.problems += 1
            log.warning("DHT node %s:%s: %s", node.ip, node.port, problem)

    async def call_find_node(self, node_to_ask: Any, node_to_find: Any) -> tuple[bool, object]:
        address = (node_to_ask.ip, node_to_ask.port)
        ok, answer = await self.request(address, "find_node", self.source_node.id, node_to_find.id)
        if ok:
            decoded = records.decode_contacts(answer, self.options.ksize)
            self.note(node_to_ask, decoded.problems)
            ok = not decoded.garbage
            answer = [list(contact) for contact in decoded.items] if ok else None
        result: tuple[bool, object] = self.handle_call_response((ok, answer), node_to_ask)
        return result

    async def call_ping(self, node_to_ask: Any) -> tuple[bool, object]:
        ok, answer = await self.request(
            (node_to_ask.ip, node_to_ask.port), "ping", self.source_node.id
        )
        if ok and answer != node_to_ask.id:
            self.note(node_to_ask, ["ping answer is not its node id"])
            ok = False
        result: tuple[bool, object] = self.handle_call_response((ok, answer), node_to_ask)
        return result

    async def peers_of(self, node: Any, topic: bytes) -> records.Decoded[Address]:
        ok, answer = await self.request(
            (node.ip, node.port), "get_peers", self.source_node.id, topic
        )
        if not ok:
            return records.Decoded(garbage=True)
        decoded = records.decode_peers(answer)
        self.note(node, decoded.problems)
        if decoded.garbage:
            self.router.remove_contact(node)
        return decoded


class _Budget:
    """What a crawl asks through: at most ``queries`` find_node requests, then silence."""

    def __init__(self, protocol: _TopicProtocol, queries: int) -> None:
        self.protocol = protocol
        self.left = queries

    async def call_find_node(self, node_to_ask: Any, node_to_find: Any) -> tuple[bool, object]:
        if self.left <= 0:
            return (False, None)
        self.left -= 1
        return await self.protocol.call_find_node(node_to_ask, node_to_find)


class DhtNode:
    """One node of the DHT on a UDP socket: routes, keeps announcements for the topics close to
    its id, and announces and looks up topics itself. ``hyperdb dht-node`` runs one alone;
    :class:`DhtDiscovery` runs one for a replica. Call :meth:`start` first, :meth:`close` last."""

    def __init__(
        self,
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        bootstrap: Sequence[Address] = (),
        options: DhtOptions | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.bootstrap_addresses = list(bootstrap)
        self.options = options or DhtOptions()
        self.id = os.urandom(records.NODE_ID_SIZE)
        self._protocol: _TopicProtocol | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._maintenance: asyncio.Task[None] | None = None

    @property
    def protocol(self) -> _TopicProtocol:
        if self._protocol is None:
            raise NetworkError("the DHT node is not started")
        return self._protocol

    @property
    def address(self) -> Address:
        """The UDP address the node listens on."""
        if self._transport is None:
            raise NetworkError("the DHT node is not started")
        bound = self._transport.get_extra_info("sockname")
        return (str(bound[0]), int(bound[1]))

    def contacts(self) -> int:
        """Nodes in the routing table."""
        return sum(len(bucket) for bucket in self.protocol.router.buckets)

    def known(self) -> list[Address]:
        """The addresses of the nodes in the routing table."""
        return [(n.ip, n.port) for b in self.protocol.router.buckets for n in b.get_nodes()]

    def topics(self) -> int:
        """Topics this node keeps announcements for."""
        return len(self.protocol.topics)

    def problems(self) -> int:
        """Malformed or oversized answers met so far (each logged)."""
        return self.protocol.problems

    async def start(self) -> None:
        """Listen on UDP ``host:port`` and join the DHT through the bootstrap nodes (none
        answering is not an error: a first node has nobody to ask, and later rounds try again)."""
        if self._transport is not None:
            return
        loop = asyncio.get_running_loop()
        node = Node(self.id)
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _TopicProtocol(node, self.options), local_addr=(self.host, self.port)
            )
        except OSError as error:
            raise NetworkError(f"cannot listen on UDP {self.host}:{self.port}: {error}") from error
        self._transport, self._protocol = transport, protocol
        await self.bootstrap()
        self._maintenance = asyncio.ensure_future(self._maintain())

    async def bootstrap(self) -> int:
        """Ask the bootstrap nodes, then crawl for this node's own id; the contacts known after."""
        loop = asyncio.get_running_loop()
        family = self._transport.get_extra_info("socket").family if self._transport else 0
        found = []
        for host, number in self.bootstrap_addresses:
            try:
                infos = await loop.getaddrinfo(host, number, family=family)
            except OSError as error:
                log.warning("DHT: bootstrap node %s:%d not found: %s", host, number, error)
                continue
            address = (str(infos[0][4][0]), int(infos[0][4][1]))
            ok, answer = await self.protocol.request(address, "ping", self.id)
            ident = records.node_id(answer) if ok else None
            if ident is None:
                log.warning("DHT: bootstrap node %s:%d did not answer", host, number)
                continue
            found.append(Node(ident, address[0], address[1]))
        if found:
            await self._crawl(Node(self.id), found)
        return self.contacts()

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.options.routing_refresh)
            self.protocol.topics.expire(time.monotonic())
            if not self.contacts():
                await self.bootstrap()
            for ident in self.protocol.get_refresh_ids()[:8]:
                await self.closest(ident)

    async def _crawl(self, target: Any, start: list[Any]) -> list[Any]:
        budget = _Budget(self.protocol, self.options.crawl_queries)
        spider = NodeSpiderCrawl(budget, target, start, self.options.ksize, self.options.alpha)
        try:
            found = await asyncio.wait_for(spider.find(), self.options.crawl_timeout)
        except TimeoutError:
            log.warning("DHT: a crawl took over %.0f s, stopped", self.options.crawl_timeout)
            found = list(spider.nearest)
        return list(found)

    async def closest(self, key: bytes) -> list[Any]:
        """The (at most k) nodes closest to ``key`` that the DHT knows, by a bounded crawl."""
        target = Node(key)
        start = self.protocol.router.find_neighbors(target, self.options.alpha)
        if not start and self.bootstrap_addresses:
            await self.bootstrap()
            start = self.protocol.router.find_neighbors(target, self.options.alpha)
        if not start:
            return []
        return (await self._crawl(target, start))[: self.options.ksize]

    async def announce_once(self, topic: bytes, port: int) -> int:
        """Announce ``port`` for ``topic`` on the k closest nodes; how many took it."""
        nodes = await self.closest(records.dht_key(topic))

        async def one(node: Any) -> bool:
            decoded = await self.protocol.peers_of(node, topic)
            if decoded.token is None:
                return False
            ok, answer = await self.protocol.request(
                (node.ip, node.port), "announce", self.id, topic, port, decoded.token
            )
            return ok and answer is True

        taken = sum(await asyncio.gather(*(one(node) for node in nodes)))
        log.info("DHT: announced a topic on %d of %d nodes", taken, len(nodes))
        return taken

    async def lookup_once(self, topic: bytes) -> AsyncIterator[Address]:
        """The addresses the k closest nodes (and this one) keep for ``topic``, each once, at most
        :data:`MAX_RESULTS` in all and :data:`PER_NODE` new ones from each node, as their answers
        come."""
        found: set[Address] = set()
        for peer in self.protocol.topics.peers(topic, time.monotonic()):
            if len(found) < MAX_RESULTS and peer not in found:
                found.add(peer)
                yield peer
        nodes = await self.closest(records.dht_key(topic))
        tasks = [asyncio.ensure_future(self.protocol.peers_of(node, topic)) for node in nodes]
        try:
            for answer in asyncio.as_completed(tasks, timeout=2 * self.options.reply_timeout):
                try:
                    decoded = await answer
                except TimeoutError:
                    break
                fresh = [peer for peer in decoded.items if peer not in found]
                for peer in fresh[: min(PER_NODE, MAX_RESULTS - len(found))]:
                    found.add(peer)
                    yield peer
                if len(found) >= MAX_RESULTS:
                    break
        finally:
            for task in tasks:
                task.cancel()

    async def close(self) -> None:
        """Stop the node and release its socket. Idempotent."""
        if self._maintenance is not None:
            self._maintenance.cancel()
            self._maintenance = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class DhtDiscovery:
    """:class:`~hyperdb.discovery.base.Discovery` through the DHT. It starts on first use
    (:meth:`announce` or :meth:`lookup`), or by an explicit ``await start()``: its own
    :class:`DhtNode` listens on UDP ``host:port`` (0: any free port) and joins through
    ``bootstrap``. :meth:`announce` returns once the first round is done (bounded by the crawl
    and reply timeouts) and refreshes every ``options.refresh`` seconds until :meth:`unannounce`;
    nodes forget an announcement ``options.ttl`` seconds after its last refresh (there is no
    withdrawal message). A lookup round asks the k closest nodes and yields at most
    :data:`MAX_RESULTS` addresses; rounds of one topic start ``options.lookup_interval`` apart."""

    name = "dht"

    def __init__(
        self,
        *,
        bootstrap: list[Address],
        host: str = "0.0.0.0",
        port: int = 0,
        options: DhtOptions | None = None,
    ) -> None:
        self.node = DhtNode(host=host, port=port, bootstrap=bootstrap, options=options)
        self._announcing: dict[bytes, asyncio.Task[None]] = {}
        self._spacing = records.Spacing(self.node.options.lookup_interval)
        self._started = False
        self._closed = False

    async def start(self) -> None:
        """Listen and join the DHT (done by the first announce or lookup otherwise)."""
        if self._closed:
            raise NetworkError("the DHT discovery is closed")
        if not self._started:
            self._started = True
            await self.node.start()

    async def announce(self, topic: bytes, port: int) -> None:
        check_topic(topic)
        check_port(port)
        await self.start()
        await self.unannounce(topic)
        await self.node.announce_once(topic, port)
        self._announcing[topic] = asyncio.ensure_future(self._refresh(topic, port))

    async def _refresh(self, topic: bytes, port: int) -> None:
        options = self.node.options
        delays = [min(d, options.refresh) for d in options.early_refresh]
        while True:
            await asyncio.sleep(delays.pop(0) if delays else options.refresh)
            try:
                await self.node.announce_once(topic, port)
            except Exception:  # a round that fails is tried again at the next refresh
                log.exception("DHT: refreshing an announcement failed")

    async def unannounce(self, topic: bytes) -> None:
        task = self._announcing.pop(topic, None)
        if task is not None:
            task.cancel()

    async def lookup(self, topic: bytes) -> AsyncIterator[Address]:
        check_topic(topic)
        await self.start()
        delay = self._spacing.wait(topic, time.monotonic())
        if delay:
            await asyncio.sleep(delay)
        async for peer in self.node.lookup_once(topic):
            yield peer

    async def close(self) -> None:
        self._closed = True
        for topic in list(self._announcing):
            await self.unannounce(topic)
        await self.node.close()


def quiet_library_logs() -> None:
    """Silence the ``kademlia`` and ``rpcudp`` loggers for a command line: they log a line for
    every node that does not answer, where this module names the problems worth a line."""
    for name in ("kademlia", "rpcudp"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
