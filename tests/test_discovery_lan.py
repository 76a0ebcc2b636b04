"""LAN discovery (``hyperdb.discovery.lan``, ``spec/discovery.md``): the topic and the TXT record
against the vectors, recomputed here without the implementation; argument checks; and, on a
private LAN of network namespaces (``tests/helpers/netns.py``: every mDNS packet stays inside
it), announcing and looking up between hosts, other topics, malformed records and a flood.

The network tests are skipped, with the reason, where namespaces cannot be made (not root, no
``ip``). Each runs its zeroconf in child processes inside the namespaces.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from hyperdb.discovery import base
from hyperdb.discovery.lan import (
    MAX_TXT_SIZE,
    SERVICE_TYPE,
    LanDiscovery,
    decode_txt,
    encode_txt,
    instance_name,
    topic_tag,
)
from hyperdb.errors import InvalidArgument
from tests.helpers import lan_peer, netns

ROOT = Path(__file__).resolve().parents[1]
VECTORS = json.loads((ROOT / "spec/vectors/discovery.json").read_text())
TOPIC = bytes.fromhex(VECTORS["topics"][0]["topic"])
OTHER = bytes.fromhex(VECTORS["topics"][1]["topic"])


def txt(*strings: bytes) -> bytes:
    """TXT record data written out by hand: each string after its length byte."""
    return b"".join(bytes([len(s)]) + s for s in strings)


# --- the topic and the record, against the vectors ---------------------------------------------


def test_topic_vectors_recomputed_with_hashlib() -> None:
    """Mutation caught: the topic keyed by "hyperdb discovery topic v2" in base.py."""
    assert VECTORS["topic_domain"] == "hyperdb discovery topic v1"
    assert len(VECTORS["topics"]) == 2
    for vector in VECTORS["topics"]:
        key = bytes.fromhex(vector["database_key"])
        discovery_key = hashlib.blake2b(b"hyperdb discovery v1", key=key, digest_size=32).digest()
        assert discovery_key.hex() == vector["discovery_key"]
        topic = hashlib.blake2b(discovery_key, key=b"hyperdb discovery topic v1", digest_size=32)
        assert topic.hexdigest() == vector["topic"]
        assert base.topic_of(discovery_key).hex() == vector["topic"]
        assert vector["topic"] != vector["discovery_key"]


def test_txt_record_vectors_written_by_hand() -> None:
    """The announced record is exactly ``v=1`` then ``t=<hex>``. Mutation caught: the strings
    in the other order in encode_txt."""
    assert VECTORS["service_type"] == SERVICE_TYPE == "_hyperdb._tcp.local."
    for vector in VECTORS["txt"]:
        topic = bytes.fromhex(vector["topic"])
        expected = txt(b"v=1", b"t=" + topic.hex().encode())
        assert vector["txt"] == expected.hex()
        assert encode_txt(topic) == expected
        assert len(expected) < 255
        assert decode_txt(expected) == topic


def test_decode_vectors() -> None:
    """Every record of the vectors gets the verdict written there. Mutations caught, one at a time
    in decode_txt: accepting upper-case hex ("topic in upper-case hex"); the last occurrence of a
    key winning ("a key twice"); no check for truncation ("a last string cut short after a whole
    record"); no size bound ("longer than 1300 bytes")."""
    by_why = {vector["why"]: vector for vector in VECTORS["decode"]}
    assert len(by_why) == len(VECTORS["decode"]) >= 17
    for vector in VECTORS["decode"]:
        expected = bytes.fromhex(vector["topic"]) if vector["topic"] else None
        assert decode_txt(bytes.fromhex(vector["txt"])) == expected, vector["why"]
    assert by_why["a key twice: the first counts"]["topic"] == OTHER.hex()
    assert len(bytes.fromhex(by_why["longer than 1300 bytes"]["txt"])) > MAX_TXT_SIZE
    accepted = {vector["why"] for vector in VECTORS["decode"] if vector["topic"]}
    assert accepted == {
        "the record announcing the topic",
        "keys in another case",
        "unknown keys and a boolean attribute beside",
        "a key twice: the first counts",
    }


def test_decode_never_raises_on_random_bytes() -> None:
    """Whatever arrives, decode_txt answers a topic or None."""
    seed = hashlib.sha256(b"lan fuzz").digest()
    for i in range(3000):
        seed = hashlib.sha256(seed + i.to_bytes(4, "big")).digest()
        data = (seed * 48)[: seed[0] * 5]
        result = decode_txt(data)
        assert result is None or len(result) == 32
    for cut in range(len(encode_txt(TOPIC))):
        assert decode_txt(encode_txt(TOPIC)[:cut]) is None


def test_arguments_are_checked() -> None:
    """Checked at the call, before any socket is opened (none is: the object is never started)."""
    with pytest.raises(InvalidArgument):
        encode_txt(b"short")
    for interfaces in ("10.0.0.1", ["not an address"], ["::1"], [], [7]):
        with pytest.raises(InvalidArgument):
            LanDiscovery(interfaces=interfaces)  # type: ignore[arg-type]
    discovery = LanDiscovery(interfaces=["10.0.0.1"])

    async def calls() -> None:
        for topic, port in ((TOPIC[:31], 1), (TOPIC, 0), (TOPIC, 65536), (TOPIC, True)):
            with pytest.raises(InvalidArgument):
                await discovery.announce(topic, port)
        with pytest.raises(InvalidArgument):
            await discovery.unannounce(b"x")
        for timeout in (0, -1, 61, "1"):
            with pytest.raises(InvalidArgument):
                discovery.lookup(TOPIC, timeout=timeout)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            discovery.lookup(TOPIC + b"x")
        await discovery.close()
        await discovery.close()
        with pytest.raises(InvalidArgument):
            discovery.lookup(TOPIC)
        with pytest.raises(InvalidArgument):
            await discovery.announce(TOPIC, 1)

    asyncio.run(calls())


# --- on a private LAN ---------------------------------------------------------------------------


@pytest.fixture
def private_lan() -> None:
    """Skips the test, with the reason, where network namespaces cannot be made."""
    possible, why = netns.can_make_namespaces()
    if not possible:
        pytest.skip(why)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_hosts_find_each_other_within_two_seconds(private_lan: None) -> None:
    """Two hosts on one LAN announce the same topic; a third looks it up and gets both ports
    within 2 s, from the announcers' LAN addresses; an announcer looking up its own topic gets
    the other host and not itself. Mutation caught: not filtering own instance names in
    on_change (host 0 then found itself as well)."""
    topic = TOPIC.hex()
    with netns.lan(3) as net:
        first = net.start(1, lan_peer.announce, [topic, OTHER.hex()], 4001, 30)
        netns.read_line(first, "ready", 15)
        result = net.call(2, lan_peer.lookup, topic, 2.0, timeout=30)
        assert [(h, p) for h, p, _ in result["found"]] == [(net.hosts[1].address, 4001)]
        assert result["found"][0][2] < 2.0
        assert result["took"] < 3.0
        found = net.call(0, lan_peer.announce_then_lookup, topic, 4000, 2.0, timeout=30)
        assert found == [[net.hosts[1].address, 4001]]
        net.stop(first)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_another_topic_finds_nothing_and_unannounced_services_go(private_lan: None) -> None:
    """A lookup for a topic nobody announces ends empty after its timeout; once the announcer
    closes (sending goodbyes) a fresh lookup of its topic finds nothing. Mutation caught: decode
    ignoring the topic (matching any hyperdb record): the other topic found host 0."""
    nobody = hashlib.blake2b(b"nobody", digest_size=32).hexdigest()
    with netns.lan(2) as net:
        announcer = net.start(0, lan_peer.announce, [TOPIC.hex()], 4100, 30)
        netns.read_line(announcer, "ready", 15)
        result = net.call(1, lan_peer.lookup, nobody, 1.0, timeout=30)
        assert result["found"] == [] and 0.9 < result["took"] < 2.5
        assert net.call(1, lan_peer.lookup, TOPIC.hex(), 1.0, timeout=30)["found"]
        out, _ = net.stop(announcer)
        assert netns.result_of(out) == "done"
        assert net.call(1, lan_peer.lookup, TOPIC.hex(), 1.0, timeout=30)["found"] == []


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_malformed_records_are_ignored(private_lan: None) -> None:
    """A peer registering records through zeroconf directly, most of them malformed (each TXT
    record of the decode vectors that names no topic, a wrong port) and two well-formed ones:
    the lookup yields exactly the well-formed ones and does not fail. Mutation caught: the port
    check removed from addresses_of (port 0 was yielded)."""
    records = [[v["txt"], 5000 + i] for i, v in enumerate(VECTORS["decode"]) if not v["topic"]]
    records += [
        [encode_txt(TOPIC).hex(), 0],  # an absurd port
        [encode_txt(TOPIC).hex(), 6001],
        [txt(b"V=1", b"T=" + TOPIC.hex().encode()).hex(), 6002],
    ]
    with netns.lan(2) as net:
        address = net.hosts[0].address
        peer = net.start(0, lan_peer.raw_services, address, records, 30, topic_tag(TOPIC))
        netns.read_line(peer, "ready", 20)
        result = net.call(1, lan_peer.lookup, TOPIC.hex(), 2.0, timeout=30)
        assert sorted((h, p) for h, p, _ in result["found"]) == [(address, 6001), (address, 6002)]
        net.stop(peer)


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_flood_is_cut_at_max_results(private_lan: None) -> None:
    """One peer announces the topic under 100 services (ports 7000-7099): a lookup yields
    MAX_RESULTS addresses, each once, and ends there. Mutation caught: the bound removed from
    _lookup's loop (all 100 yielded)."""
    records = [[encode_txt(TOPIC).hex(), 7000 + i] for i in range(100)]
    with netns.lan(2) as net:
        address = net.hosts[0].address
        peer = net.start(0, lan_peer.raw_services, address, records, 60, topic_tag(TOPIC))
        netns.read_line(peer, "ready", 40)
        result = net.call(1, lan_peer.lookup, TOPIC.hex(), 5.0, timeout=40)
        found = [(h, p) for h, p, _ in result["found"]]
        assert len(found) == base.MAX_RESULTS == len(set(found))
        assert all(h == address and 7000 <= p < 7100 for h, p in found)
        assert result["took"] < 5.0  # ended at the bound, not at the timeout
        net.stop(peer)


@pytest.mark.integration
def test_the_private_lan_is_removed_afterwards(private_lan: None) -> None:
    """Everything the helper creates is gone once the block ends, even when it ends in an
    error. Mutation caught: skipping the deletion of the switch namespace."""
    names: list[str] = []
    with pytest.raises(RuntimeError), netns.lan(3) as net:
        names = list(net.namespaces)
        assert {host.namespace for host in net.hosts} < set(names)
        raise RuntimeError("the test fails")
    assert len(set(names)) == 4
    left = set(Path("/run/netns").iterdir()) if Path("/run/netns").exists() else set()
    assert not {path.name for path in left} & set(names)


def test_instance_names_start_with_the_topics_tag() -> None:
    """A lookup resolves only the names of its own topic (§2.1): the tag is the topic's first
    8 bytes in hex, the rest random, drawn afresh."""
    name = instance_name(TOPIC)
    assert len(name) == 32 and name[:16] == topic_tag(TOPIC) == TOPIC[:8].hex()
    assert instance_name(TOPIC)[16:] != name[16:]
