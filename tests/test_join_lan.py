"""Three replicas in separate processes, each on its own host of a private LAN (network
namespaces, ``tests/helpers/netns.py``), find each other through LAN discovery alone and converge:
no address is given to any of them.

Skipped, with the reason, where network namespaces cannot be made.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import hyperdb
from tests.helpers import lan_replica, netns

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
def test_three_replicas_on_a_lan_find_each_other_and_converge(tmp_path: Path) -> None:
    """The owner authorizes the two others beforehand (in this process, with no network); then
    each runs in its own namespace, joins with ``[LanDiscovery()]``, writes one key once its
    grant has reached it, and reports when it holds all three."""
    possible, why = netns.can_make_namespaces()
    if not possible:
        pytest.skip(why)
    paths = [tmp_path / f"replica{i}" for i in range(3)]
    owner = hyperdb.open(paths[0], value_encoding="utf-8")
    others = [hyperdb.open(path, key=owner.key, value_encoding="utf-8") for path in paths[1:]]
    for other in others:
        owner.authorize(other.local_key)
    for db in [owner, *others]:
        db.close()
    with netns.lan(3) as net:
        started = time.monotonic()
        processes = [
            net.start(i, lan_replica.replica, str(path), f"r{i}", 3, 60)
            for i, path in enumerate(paths)
        ]
        for process in processes:
            netns.read_line(process, "complete", 60)
        took = time.monotonic() - started
        results = [netns.result_of(net.stop(process)[0]) for process in processes]
    assert results == [["from/r0", "from/r1", "from/r2"]] * 3, results
    assert took < 60
