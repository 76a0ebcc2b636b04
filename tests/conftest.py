"""Shared fixtures: a storage of each kind; the hypothesis profiles. Shared functions live in
``tests/helpers``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from hyperdb.feed.feed import FEED_TABLES
from hyperdb.storage import LMDBStorage, MemoryStorage, Storage
from tests.helpers.feed_replica import FeedReplica

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(params=["memory", "lmdb"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    store: Storage
    if request.param == "memory":
        store = MemoryStorage(FEED_TABLES)
    else:
        store = LMDBStorage(tmp_path / "db", FEED_TABLES, durable=False)
    with store:
        yield store


@pytest.fixture
def replicas() -> Iterator[Callable[..., FeedReplica]]:
    """Makes feed-only replicas (``make(key=None, **options)``), closed after the test."""
    made: list[FeedReplica] = []

    def make(key: bytes | None = None, **options: Any) -> FeedReplica:
        replica = FeedReplica(key, **options)
        made.append(replica)
        return replica

    yield make
    for replica in made:
        replica.close()
