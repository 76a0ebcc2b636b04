"""Runs an oracle scenario (``../shared/oracle/README.md``, "Scenario format") through this
implementation and answers in the oracle's result format ("Result format", "Normalisation").

Each writer of the scenario is one in-memory database: ``writers[0]`` creates it, every other one
is a replica opened from its key with a writer of its own. Writer keys become writer names (the
creator's ``local_key`` is the database key), node tuples are ``[writer, seq, value, deleted]``
sorted by ``(writer, seq)`` inside a group, heads and versions are sorted pairs; list, history,
key history and diff keep our stream order.

Besides the result of each step, :class:`Step` carries ``facts``: what only our side can tell and
the comparison rules of ``tests/test_oracle.py`` need (clock order of the history, the causal key
history and diff computed from all nodes, the clocks of all nodes, what ``get`` says about listed
keys). The adapter calls
the public API only; an operation the implementation lacks fails here (``AttributeError``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import hyperdb
from hyperdb.errors import HyperDBError

Result = dict[str, Any]
NodeTuple = list[Any]


@dataclass
class Step:
    """One executed step: its result in the oracle's format and the facts behind it."""

    result: Result
    facts: dict[str, Any] = field(default_factory=dict)


def seen(later: Any, earlier: Any) -> bool:
    """Whether node ``later`` had seen node ``earlier`` when it was written (its clock counts
    ``earlier``'s feed past ``earlier.seq``). A node has seen itself."""
    return int(later.clock.get(earlier.writer, 0)) > int(earlier.seq)


def order_violations(nodes: Sequence[Any]) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, where ``nodes[i]`` had seen ``nodes[j]``: empty exactly
    when the sequence is a topological order of the causal graph (oldest first)."""
    out = []
    for i, earlier in enumerate(nodes):
        for j in range(i + 1, len(nodes)):
            later = nodes[j]
            if (later.writer, later.seq) != (earlier.writer, earlier.seq) and seen(earlier, later):
                out.append((i, j))
    return out


def maximal(nodes: Iterable[Any]) -> list[Any]:
    """The nodes no other node of ``nodes`` has seen."""
    pool = list(nodes)
    return [
        node
        for node in pool
        if not any(
            (other.writer, other.seq) != (node.writer, node.seq) and seen(other, node)
            for other in pool
        )
    ]


def causal_key_history(all_nodes: Sequence[Any], key: str) -> list[list[Any]]:
    """The key history of the causal model: the current nodes of ``key`` (deletions included)
    first, then each group the nodes of ``key`` that are maximal among those in the causal past
    of the previous group, until there are none."""
    pool = [node for node in all_nodes if node.key == key]
    groups = []
    group = maximal(pool)
    while group:
        groups.append(group)
        members = {(g.writer, g.seq) for g in group}
        past = [
            node
            for node in pool
            if (node.writer, node.seq) not in members and any(seen(g, node) for g in group)
        ]
        group = maximal(past)
    return groups


class Adapter:
    """The scenario's databases and the versions its ``version`` steps recorded."""

    def __init__(self, names: Sequence[str], stack: contextlib.ExitStack) -> None:
        if not names:
            raise ValueError("a scenario has at least one writer")
        self.stack = stack
        self.dbs: dict[str, Any] = {}
        self.names: dict[bytes, str] = {}
        self.versions: dict[int, bytes] = {}
        first = stack.enter_context(hyperdb.open(memory=True, value_encoding="utf-8"))
        self.dbs[names[0]] = first
        for name in names[1:]:
            self.dbs[name] = stack.enter_context(
                hyperdb.open(memory=True, key=first.key, value_encoding="utf-8")
            )
        for name, db in self.dbs.items():
            self.names[db.local_key] = name
        assert first.local_key == first.key

    # --- formatting ---------------------------------------------------------------------------

    def name(self, writer: bytes) -> str:
        return self.names.get(writer, "?" + writer.hex()[:8])

    def node(self, node: Any) -> NodeTuple:
        value = None if node.deleted else node.value
        return [self.name(node.writer), node.seq, value, bool(node.deleted)]

    def nodes(self, nodes: Iterable[Any]) -> list[NodeTuple]:
        return sorted((self.node(n) for n in nodes), key=lambda t: (t[0], t[1]))

    def side(self, nodes: Sequence[Any] | None) -> list[NodeTuple] | None:
        return self.nodes(nodes) if nodes else None

    def pairs(self, nodes: Iterable[Any]) -> list[list[Any]]:
        return sorted(([self.name(n.writer), n.seq] for n in nodes), key=lambda p: (p[0], p[1]))

    # --- steps --------------------------------------------------------------------------------

    def view(self, db: Any, step: Result, result: Result) -> Any:
        """What a read step reads: the database, or its checkout of ``version_step``."""
        if "version_step" not in step:
            return db
        result["version_step"] = step["version_step"]
        return self.checkout(db, step["version_step"])

    def checkout(self, db: Any, version_step: int) -> Any:
        snapshot = db.checkout(self.versions[version_step])
        if hasattr(snapshot, "close"):
            self.stack.callback(snapshot.close)
        return snapshot

    def run(self, index: int, step: Result) -> Step:
        op = step["op"]
        result: Result = {"step": index, "op": op}
        if "w" in step:
            result["w"] = step["w"]
        out = Step(result)
        try:
            getattr(self, "op_" + op)(step, out)
        except HyperDBError as exc:  # a refusal is an answer; anything else fails the test
            for name in list(result):
                if name not in ("step", "op", "w", "key", "prefix", "target", "version_step"):
                    del result[name]
            result["error"] = f"{type(exc).__name__}: {exc}"
        return out

    def op_put(self, step: Result, out: Step) -> None:
        out.result["seq"] = self.dbs[step["w"]].put(step["key"], step.get("value")).seq

    def op_del(self, step: Result, out: Step) -> None:
        out.result["seq"] = self.dbs[step["w"]].delete(step["key"]).seq

    def op_batch(self, step: Result, out: Step) -> None:
        ops = []
        for item in step["ops"]:
            op = {"type": item["type"], "key": item["key"]}
            if item["type"] == "put":
                op["value"] = item.get("value")
            ops.append(op)
        out.result["seqs"] = [node.seq for node in self.dbs[step["w"]].batch(ops)]

    def op_authorize(self, step: Result, out: Step) -> None:
        out.result["target"] = step["target"]
        target = self.dbs[step["target"]].local_key
        out.result["seq"] = self.dbs[step["w"]].authorize(target, role="owner").seq

    def op_authorized(self, step: Result, out: Step) -> None:
        out.result["target"] = step["target"]
        target = self.dbs[step["target"]].local_key
        out.result["authorized"] = self.dbs[step["w"]].is_authorized(target)

    def op_sync(self, step: Result, out: Step) -> None:
        out.result["a"], out.result["b"] = step["a"], step["b"]
        hyperdb.replicate(self.dbs[step["a"]], self.dbs[step["b"]])

    def op_get(self, step: Result, out: Step) -> None:
        out.result["key"] = step["key"]
        target = self.view(self.dbs[step["w"]], step, out.result)
        out.result["nodes"] = self.nodes(target.get(step["key"]))

    op_checkout_get = op_get

    def op_list(self, step: Result, out: Step) -> None:
        prefix = step.get("prefix", "")
        out.result["prefix"] = prefix
        options = {}
        for name in ("recursive", "reverse", "gt"):
            if name in step:
                out.result[name] = bool(step[name])
                if step[name] != (name == "recursive"):  # only options that differ from default
                    options[name] = bool(step[name])
        target = self.view(self.dbs[step["w"]], step, out.result)
        entries = list(target.list(prefix, **options))
        out.result["entries"] = [[key, self.nodes(nodes)] for key, nodes in entries]
        if not step.get("recursive", True):
            out.facts["get"] = [[key, self.nodes(target.get(key))] for key, _ in entries]
            forward = {"gt": True} if step.get("gt") else {}
            out.facts["forward"] = [key for key, _ in target.list(prefix, **forward)]

    def op_history(self, step: Result, out: Step) -> None:
        reverse = bool(step.get("reverse", False))
        if "reverse" in step:
            out.result["reverse"] = reverse
        target = self.view(self.dbs[step["w"]], step, out.result)
        nodes = list(target.history(reverse=True) if reverse else target.history())
        out.result["entries"] = [
            [self.name(n.writer), n.seq, n.key, None if n.deleted else n.value, bool(n.deleted)]
            for n in nodes
        ]
        feeds: list[str] = []  # not compared: the reference's feed-index order is internal
        for entry in out.result["entries"]:
            if entry[0] not in feeds:
                feeds.append(entry[0])
        out.result["feeds"] = feeds
        oldest_first = nodes[::-1] if reverse else nodes
        out.facts["order_violations"] = [
            (self.node(oldest_first[i]), self.node(oldest_first[j]))
            for i, j in order_violations(oldest_first)
        ]

    def op_key_history(self, step: Result, out: Step) -> None:
        out.result["key"] = step["key"]
        target = self.view(self.dbs[step["w"]], step, out.result)
        out.result["entries"] = [self.nodes(group) for group in target.key_history(step["key"])]
        everything = list(target.history())
        key = normalize(step["key"])
        out.facts["model"] = [self.nodes(g) for g in causal_key_history(everything, key)]

    def op_heads(self, step: Result, out: Step) -> None:
        target = self.view(self.dbs[step["w"]], step, out.result)
        out.result["heads"] = self.pairs(target.heads())

    def op_version(self, step: Result, out: Step) -> None:
        db = self.dbs[step["w"]]
        version = db.version()
        self.versions[out.result["step"]] = version
        out.result["version"] = sorted(
            ([self.name(writer), seq] for writer, seq in decode_version(version)),
            key=lambda p: (p[0], p[1]),
        )
        out.facts["heads"] = self.pairs(db.heads())
        out.facts["checkout_heads"] = self.pairs(self.checkout(db, out.result["step"]).heads())

    def op_diff(self, step: Result, out: Step) -> None:
        prefix = step.get("prefix", "")
        out.result["prefix"] = prefix
        db = self.dbs[step["w"]]
        since = step.get("from_version_step")
        version = None
        then = None
        if since is not None:
            out.result["from_version_step"] = since
            version = self.versions[since]
            then = self.checkout(db, since)
        changes = list(db.diff(version, prefix))
        out.result["changes"] = [[key, self.side(now), self.side(old)] for key, now, old in changes]
        # the causal answer from get on both sides, over every key either side lists
        keys = [key for key, _ in db.list(prefix)]
        if then is not None:
            keys += [key for key, _ in then.list(prefix)]
        expected = {}
        for key in keys:
            now_nodes = self.side(db.get(key))
            old_nodes = self.side(then.get(key)) if then is not None else None
            if now_nodes != old_nodes:
                expected[key] = [now_nodes, old_nodes]
        out.facts["changed"] = expected
        out.facts["clocks"] = {  # of every node this replica holds, to tell stale nodes apart
            f"{self.name(node.writer)}:{node.seq}": {
                self.name(writer): count for writer, count in node.clock.items()
            }
            for node in db.history()
        }


def decode_version(version: bytes) -> list[tuple[bytes, int]]:
    """The heads a version names (``spec/node.md`` section 6, the reference's layout): for each,
    a 32-byte writer key and the seq as an unsigned LEB128 varint."""
    out = []
    at = 0
    while at < len(version):
        writer, at = version[at : at + 32], at + 32
        if len(writer) != 32:
            raise ValueError(f"version ends inside a writer key: {version.hex()}")
        seq = shift = 0
        while True:
            if at >= len(version):
                raise ValueError(f"version ends inside a varint: {version.hex()}")
            byte = version[at]
            at += 1
            seq |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        out.append((writer, seq))
    return out


def normalize(key: str) -> str:
    return "/".join(part for part in key.split("/") if part)


def without_ungranted_writes(scenario: dict[str, Any]) -> dict[str, Any]:
    """``scenario`` with every step this implementation refuses for want of a grant (a write or
    an authorization by a writer that holds none in its own view: ``PermissionDenied``, which
    writes nothing) replaced by that writer asking whether it is authorized (``spec/deviations.md``
    D10). The reference writes such entries and keeps them local; the two runs then hold the same
    nodes, and the replaced steps still compare (both answer ``False``)."""
    results = run_scenario(scenario)
    refused = [
        index
        for index, step in enumerate(results)
        if str(step.result.get("error", "")).startswith("PermissionDenied")
    ]
    if not refused:
        return scenario
    steps = list(scenario["steps"])
    for index in refused:
        writer = steps[index]["w"]
        steps[index] = {"op": "authorized", "w": writer, "target": writer}
    return {**scenario, "steps": steps}


def run_scenario(scenario: dict[str, Any]) -> list[Step]:
    """Every step of ``scenario`` run through this implementation, in order."""
    with contextlib.ExitStack() as stack:
        adapter = Adapter(scenario["writers"], stack)
        return [adapter.run(i, step) for i, step in enumerate(scenario.get("steps", []))]
