"""What a peer sends first in version 2, for tests that drive a Connection by hand: its hello,
then an anonymous identify (a replica proving no writer key)."""

from __future__ import annotations

from hyperdb.replication.messages_v2 import Identify
from hyperdb.replication.wire import Hello, encode_frame


def greeting(discovery_key: bytes, *, features: int = 0) -> bytes:
    """The frames of a version-2 hello and an anonymous identify."""
    return encode_frame(Hello(discovery_key, features=features)) + encode_frame(Identify(0))
