"""Finding peers on the local network: DNS-SD over multicast DNS through ``zeroconf``.

Owns the LAN record format (``spec/discovery.md`` §2): one service of type
``_hyperdb._tcp.local.`` per announced topic, under an instance name that starts with the topic's
first 8 bytes in hex and goes on at random (a lookup resolves only those), whose TXT record
carries ``v=1`` and ``t=`` the topic in hex, whose SRV record carries the port and whose A records
carry this host's IPv4 addresses; :func:`encode_txt` and :func:`decode_txt` build and read the
TXT bytes. :class:`LanDiscovery` announces and looks up through one ``AsyncZeroconf``, started on
first use. Records from the network are hints, checked for form only: a malformed one is dropped
and logged at debug level, and whoever connects to an address found still runs the capability
check. This is the one module of hyperdb that imports ``zeroconf`` (and ``ifaddr``, which
``zeroconf`` uses and names as the way to list a host's addresses).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import ifaddr
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from hyperdb.discovery.base import MAX_RESULTS, TOPIC_SIZE, Address, check_port, check_topic
from hyperdb.errors import InvalidArgument

log = logging.getLogger(__name__)

SERVICE_TYPE = "_hyperdb._tcp.local."
VERSION = b"1"
MAX_TXT_SIZE = 1300
"""A TXT record longer than this (in bytes, as received) is dropped unread."""
MAX_NAMES = 8 * MAX_RESULTS
"""A lookup resolves at most this many service names (a flood of names is cut here)."""
TAG_BYTES = 8
"""How much of the topic starts each instance name (16 hex digits)."""
RESOLVE_TIMEOUT_MS = 1000
DEFAULT_TIMEOUT = 1.5


def topic_tag(topic: bytes) -> str:
    """The start of the instance names announcing ``topic``: its first 8 bytes in hex."""
    return topic[:TAG_BYTES].hex()


def instance_name(topic: bytes) -> str:
    """A new instance name for ``topic``: its tag and 8 random bytes, in lowercase hex, so that
    a lookup resolves only the instances of its own topic."""
    return topic_tag(topic) + os.urandom(8).hex()


def encode_txt(topic: bytes) -> bytes:
    """The TXT record data announcing ``topic``: the strings ``v=1`` and ``t=<64 hex digits>``,
    each after its length byte (RFC 6763 §6)."""
    check_topic(topic)
    strings = [b"v=" + VERSION, b"t=" + topic.hex().encode()]
    return b"".join(bytes([len(s)]) + s for s in strings)


def decode_txt(data: bytes) -> bytes | None:
    """The topic a TXT record data announces, or None where it is not a version-1 hyperdb record
    (``spec/discovery.md`` §2.3): too long, truncated, no ``v=1``, or no ``t`` of exactly 64
    lowercase hex digits. Keys are matched without regard to case; of a key given twice the first
    counts; other keys are ignored."""
    if not isinstance(data, bytes) or len(data) > MAX_TXT_SIZE:
        return None
    pairs: dict[bytes, bytes | None] = {}
    at = 0
    while at < len(data):
        size = data[at]
        string = data[at + 1 : at + 1 + size]
        if len(string) != size:
            return None  # truncated
        at += 1 + size
        key, equals, value = string.partition(b"=")
        pairs.setdefault(key.lower(), value if equals else None)
    if pairs.get(b"v") != VERSION:
        return None
    text = pairs.get(b"t")
    if text is None or len(text) != 2 * TOPIC_SIZE or text.strip(b"0123456789abcdef"):
        return None
    return bytes.fromhex(text.decode("ascii"))


def usable_address(text: str) -> bool:
    """Whether ``text``, an address read from an A record, is one a peer could be reached at:
    IPv4, and not unspecified, multicast or broadcast."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return (
        address.version == 4
        and not address.is_unspecified
        and not address.is_multicast
        and address != ipaddress.IPv4Address("255.255.255.255")
    )


def host_addresses() -> list[str]:
    """This host's IPv4 addresses, loopback left out unless it is all there is."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if ip.is_IPv4 and isinstance(ip.ip, str) and ip.ip not in found:
                found.append(ip.ip)
    outside = [a for a in found if not ipaddress.ip_address(a).is_loopback]
    return outside or found


def check_interfaces(interfaces: object) -> list[str] | None:
    if interfaces is None:
        return None
    if isinstance(interfaces, str | bytes) or not isinstance(interfaces, Iterable):
        raise InvalidArgument("interfaces is a list of IPv4 addresses, or None for all")
    checked = []
    for item in interfaces:
        try:
            valid = isinstance(item, str) and ipaddress.ip_address(item).version == 4
        except ValueError:
            valid = False
        if not valid:
            raise InvalidArgument(f"not an IPv4 address of this host: {item!r}")
        checked.append(item)
    if not checked:
        raise InvalidArgument("interfaces is a non-empty list of IPv4 addresses, or None")
    return checked


def check_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 60:
        raise InvalidArgument(f"a lookup timeout is from 0 to 60 seconds, not {timeout!r}")
    return float(timeout)


class LanDiscovery:
    """Announces and looks up topics on the local network by mDNS (``spec/discovery.md`` §2).

    ``interfaces``: the IPv4 addresses of this host to use (announced, and where queries go),
    or None for every interface. Sockets are opened on first use, inside the running event loop.
    A lookup never yields this object's own announcements (it knows their instance names); it
    does yield another :class:`LanDiscovery`'s on the same host, which ``join`` drops when the
    peer turns out to be itself."""

    name = "lan"

    def __init__(self, *, interfaces: Sequence[str] | None = None) -> None:
        self._interfaces = check_interfaces(interfaces)
        self._zeroconf: AsyncZeroconf | None = None
        self._services: dict[bytes, AsyncServiceInfo] = {}
        self._own_names: set[str] = set()
        self._host = f"hyperdb-{os.urandom(6).hex()}.local."
        self._closed = False

    def _started(self) -> AsyncZeroconf:
        if self._closed:
            raise InvalidArgument("this LanDiscovery is closed")
        if self._zeroconf is None:
            if self._interfaces is None:
                self._zeroconf = AsyncZeroconf(ip_version=IPVersion.V4Only)
            else:
                self._zeroconf = AsyncZeroconf(
                    interfaces=list(self._interfaces), ip_version=IPVersion.V4Only
                )
        return self._zeroconf

    async def announce(self, topic: bytes, port: int) -> None:
        """Registers a service for ``topic`` on ``port`` (replacing this object's earlier one for
        the topic); zeroconf answers queries for it until :meth:`unannounce` or :meth:`close`."""
        check_topic(topic)
        check_port(port)
        zc = self._started()
        if topic in self._services:
            await self.unannounce(topic)
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{instance_name(topic)}.{SERVICE_TYPE}",
            port=port,
            properties=encode_txt(topic),
            server=self._host,
            parsed_addresses=self._interfaces or host_addresses(),
        )
        self._own_names.add(info.name.lower())
        self._services[topic] = info
        await zc.async_register_service(info)

    async def unannounce(self, topic: bytes) -> None:
        check_topic(topic)
        info = self._services.pop(topic, None)
        if info is not None and self._zeroconf is not None:
            await self._zeroconf.async_unregister_service(info)

    def lookup(self, topic: bytes, *, timeout: float = DEFAULT_TIMEOUT) -> AsyncIterator[Address]:
        """The addresses of services announcing ``topic`` that answer within ``timeout`` seconds,
        each once, at most :data:`MAX_RESULTS`; yielded as they are found. Arguments are checked
        here, before the first address is asked for."""
        check_topic(topic)
        timeout = check_timeout(timeout)
        if self._closed:
            raise InvalidArgument("this LanDiscovery is closed")
        return self._lookup(topic, timeout)

    async def _lookup(self, topic: bytes, timeout: float) -> AsyncIterator[Address]:
        zc = self._started()
        deadline = time.monotonic() + timeout
        found: asyncio.Queue[list[Address]] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()
        seen_names: set[str] = set()
        tag = topic_tag(topic)

        async def resolve(name: str) -> None:
            found.put_nowait(await self._resolve(zc, name, topic, deadline))

        def on_change(
            zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            key = name.lower()
            if state_change is ServiceStateChange.Removed or key in seen_names:
                return
            if key in self._own_names or not key.startswith(tag):
                return  # its own, or another topic's (the name says; the TXT record decides)
            if len(seen_names) >= MAX_NAMES:
                log.debug("lan lookup: more than %d service names, %r left out", MAX_NAMES, name)
                return
            seen_names.add(key)
            task = asyncio.ensure_future(resolve(name))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        browser = AsyncServiceBrowser(zc.zeroconf, SERVICE_TYPE, handlers=[on_change])
        yielded: set[Address] = set()
        try:
            while len(yielded) < MAX_RESULTS:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    addresses = await asyncio.wait_for(found.get(), left)
                except TimeoutError:
                    break
                for address in addresses:
                    if address not in yielded and len(yielded) < MAX_RESULTS:
                        yielded.add(address)
                        yield address
        finally:
            await browser.async_cancel()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _resolve(
        self, zc: AsyncZeroconf, name: str, topic: bytes, deadline: float
    ) -> list[Address]:
        """The addresses of service ``name`` if it is a well-formed record for ``topic``."""
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        wait_ms = min(RESOLVE_TIMEOUT_MS, max(0.0, deadline - time.monotonic()) * 1000)
        try:
            complete = info.load_from_cache(zc.zeroconf) or (
                wait_ms > 0 and await info.async_request(zc.zeroconf, wait_ms)
            )
        except Exception as error:  # a record zeroconf itself cannot read
            log.debug("lan lookup: %r could not be resolved: %r", name, error)
            return []
        if not complete:
            log.debug("lan lookup: %r did not resolve in time", name)
            return []
        return self.addresses_of(info, name, topic)

    @staticmethod
    def addresses_of(info: Any, name: str, topic: bytes) -> list[Address]:
        text = info.text
        if not isinstance(text, bytes) or decode_txt(text) is None:
            log.debug("lan lookup: %r has a malformed TXT record %r", name, text)
            return []
        if decode_txt(text) != topic:
            return []
        port = info.port
        if not isinstance(port, int) or not 1 <= port <= 65535:
            log.debug("lan lookup: %r has an unusable port %r", name, port)
            return []
        addresses = [a for a in info.parsed_addresses(IPVersion.V4Only) if usable_address(a)]
        if not addresses:
            log.debug("lan lookup: %r has no usable address", name)
        return [(address, port) for address in addresses[:MAX_RESULTS]]

    async def close(self) -> None:
        """Unregisters every service (sending goodbyes) and closes the sockets. Idempotent."""
        if self._closed:
            return
        self._closed = True
        zc, self._zeroconf = self._zeroconf, None
        self._services.clear()
        if zc is not None:
            await zc.async_close()
