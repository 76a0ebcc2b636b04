"""``hyperdb seed --lan`` announces every database it serves on the LAN: 50 databases served on
one port by one process on one host of a private LAN (network namespaces,
``tests/helpers/netns.py``), each reached by ``join`` from another host that is given no
address. Skipped, with the reason, where network namespaces cannot be made."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import hyperdb
from tests.helpers import lan_replica, netns
from tests.helpers.cli_process import hyperdb_command

pytestmark = pytest.mark.integration
DATABASES = 50


@pytest.mark.timeout(180)
def test_fifty_seeded_databases_are_each_found_and_reached_by_join(tmp_path: Path) -> None:
    """Mutation caught: the seeder announcing only its first database (the joins of the 49
    others never find a peer)."""
    possible, why = netns.can_make_namespaces()
    if not possible:
        pytest.skip(why)
    keys, paths = [], []
    for i in range(DATABASES):  # an owner writes k, its seeder replica receives it, in memory
        owner = hyperdb.open(memory=True, value_encoding="utf-8")
        owner.put("k", f"value {i}")
        path = tmp_path / f"seed{i}"
        seeder = hyperdb.open(path, key=owner.key, value_encoding="utf-8", durable=False)
        owner.authorize(seeder.local_key, role="seeder")
        hyperdb.replicate(owner, seeder)
        keys.append(owner.key.hex())
        paths.append(str(path))
        seeder.close()
        owner.close()
    with netns.lan(2) as lan:
        seed = lan.spawn(0, [*hyperdb_command(), "seed", *paths, "--lan", "--port", "0", "--quiet"])
        netns.read_line(seed, "seeding ", 60)
        started = time.monotonic()
        values = lan.call(1, lan_replica.join_each, keys, 90, timeout=120)
        took = time.monotonic() - started
        lan.stop(seed)
    assert values == [f"value {i}" for i in range(DATABASES)]
    assert took < 120
