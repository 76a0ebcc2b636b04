"""A node's context read from its base chain alone, as spec/node.md 2.3 describes, with nothing
of hyperdb: records decoded by cbor2, the procedure written from the spec's text. The tests
compare it with what the implementation derived incrementally, from whole feeds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cbor2


@dataclass
class ChainReader:
    """Reads the records of one feed through ``block(seq) -> bytes``, remembering which seqs it
    read."""

    block: Callable[[int], bytes]
    read: set[int] = field(default_factory=set)

    def record(self, seq: int) -> dict[str, Any]:
        self.read.add(seq)
        obj = cbor2.loads(self.block(seq))
        assert isinstance(obj, dict)
        return obj

    def context(self, seq: int) -> tuple[dict[bytes, int], list[bytes]]:
        """The full clock (other feeds, by writer key) and the feeds list of node ``seq``."""
        node = self.record(seq)
        if not is_context_node(node):
            return self.context(node.get("p", 1))
        ordinal = node.get("q", 1)
        if ordinal & (ordinal - 1):
            clock, feeds = self.context(node["b"])
        else:
            clock, feeds = {}, []
        feeds = feeds + node.get("f", [])
        clock = dict(clock)
        for number, length in node.get("c", {}).items():
            clock[feeds[number]] = length
        return clock, feeds

    def ordinal(self, seq: int) -> int:
        """The ordinal of the context node that gives node ``seq`` its context."""
        node = self.record(seq)
        if not is_context_node(node):
            node = self.record(node.get("p", 1))
        ordinal: int = node.get("q", 1)
        return ordinal


def is_context_node(node: dict[str, Any]) -> bool:
    """A context node carries q, or (the first node, ordinal 1) f."""
    return "q" in node or "f" in node
