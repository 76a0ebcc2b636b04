"""History inspection on networkx: the causal graph of a database's writes and the questions
auditors ask of it.

This module owns everything that treats a database's history as a graph, and it is the only
module of hyperdb that imports networkx. Every function takes a *view*: a :class:`Database` or a
:class:`Snapshot` (anything with the read API of :class:`View`).

- :func:`causal_graph` builds a ``networkx.DiGraph`` with one node per write (authorization
  entries included) and an edge ``u -> v`` when ``u`` happened directly before ``v`` (the
  transitive reduction of the happened-before order, or all clock edges with ``reduced=False``).
- :func:`relation` compares two writes; :func:`version_nodes` lists the writes of a version.
- :func:`conflicts` finds keys with concurrent current values, with the versions they all saw;
  :func:`blame` says who wrote the current value of each key.
- :func:`to_dot`, :func:`write_graphml`, :func:`render_png` export the graph; :func:`draw` draws it
  in the terminal like ``git log --graph``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, runtime_checkable

import networkx as nx  # type: ignore[import-untyped]

from hyperdb.errors import HyperDBError, InvalidArgument, NotFound
from hyperdb.model.node import Node
from hyperdb.model.version import parse_version
from hyperdb.tools.text import json_text, printable

__all__ = [
    "Blame",
    "Conflict",
    "View",
    "blame",
    "causal_graph",
    "conflicts",
    "draw",
    "node_id",
    "relation",
    "render_png",
    "to_dot",
    "version_nodes",
    "write_graphml",
]

_Nodes = list[Node]
VALUE_WIDTH = 60
PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
)


class View(Protocol):
    """The read API the functions of this module use (``Database`` and ``Snapshot`` have it)."""

    def history(self, *, reverse: bool = ...) -> Iterator[Node]: ...
    def heads(self) -> _Nodes: ...
    def version(self) -> bytes: ...
    def list(self, prefix: str = ...) -> Iterator[tuple[str, Any]]: ...
    def key_history(self, key: str) -> Iterator[_Nodes]: ...


@runtime_checkable
class _CheckoutView(Protocol):
    def checkout(self, version: bytes | str) -> View: ...


def node_id(node: Node) -> str:
    """The graph id of a write: ``"<writer hex>/<seq>"``."""
    return f"{node.writer.hex()}/{node.seq}"


def _kind(node: Node) -> str:
    if node.kind == "revoke":
        return "revoke"
    if node.key == "" or node.authorizes:
        return "authorize"
    return "del" if node.deleted else "put"


def _short_value(node: Node) -> str:
    """The value for a label: text as a JSON string (hidden characters escaped), other bytes as
    hex, cut to :data:`VALUE_WIDTH` characters."""
    if node.deleted or _kind(node) in ("authorize", "revoke"):
        return ""
    value = node.value
    if isinstance(value, bytes):
        try:
            text = json_text(json.dumps(value.decode("utf-8"), ensure_ascii=False))
        except UnicodeDecodeError:
            text = "0x" + value.hex()
    else:
        text = json_text(json.dumps(value, ensure_ascii=False, default=repr))
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 3] + "..."


def _predecessors(node: Node, index: dict[tuple[bytes, int], Node], reduced: bool) -> _Nodes:
    """The writes ``node`` saw last of each writer; with ``reduced`` only those no other of them
    had seen (the direct predecessors), the writer's own previous write first."""
    candidates: _Nodes = []
    own = index.get((node.writer, node.seq - 1)) if node.seq > 1 else None
    if own is not None:
        candidates.append(own)
    for writer in sorted(node.clock):
        seq = node.clock[writer] - 1
        if writer != node.writer and seq >= 1 and (found := index.get((writer, seq))) is not None:
            candidates.append(found)
    if not reduced:
        return candidates
    return [
        u
        for u in candidates
        if not any(p is not u and p.clock.get(u.writer, 0) > u.seq for p in candidates)
    ]


def causal_graph(view: View, *, reduced: bool = True) -> nx.DiGraph:
    """The DAG of the writes ``view`` has seen, as a ``networkx.DiGraph`` (see the module doc).

    Graph nodes are :func:`node_id` strings, added in history order, with the attributes
    ``writer`` (hex), ``seq``, ``key``, ``kind`` (``put``/``del``/``authorize``/``revoke``),
    ``deleted``, ``value`` (a short repr, ``""`` for deletions, grants and revocations),
    ``authorizes`` (comma separated hex: the keys a grant names or a revocation revokes) and
    ``rank`` (the clock total). Graph attributes: ``version`` (hex) and ``reduced``. Costs
    O(writes x writers^2), no transitive reduction pass.
    """
    nodes = list(view.history())
    index = {(node.writer, node.seq): node for node in nodes}
    graph = nx.DiGraph(version=view.version().hex(), reduced=reduced)
    for node in nodes:
        graph.add_node(
            node_id(node),
            writer=node.writer.hex(),
            seq=node.seq,
            key=node.key,
            kind=_kind(node),
            deleted=bool(node.deleted),
            value=_short_value(node),
            authorizes=",".join(key.hex() for key in node.authorizes or node.revokes),
            rank=sum(node.clock.values()),
        )
    for node in nodes:
        target = node_id(node)
        for pred in _predecessors(node, index, reduced):
            graph.add_edge(node_id(pred), target)
    return graph


def relation(a: Node, b: Node) -> str:
    """``"same"``, ``"before"`` (``a`` happened before ``b``), ``"after"`` or ``"concurrent"``."""
    if a.writer == b.writer and a.seq == b.seq:
        return "same"
    if b.clock.get(a.writer, 0) > a.seq:
        return "before"
    if a.clock.get(b.writer, 0) > b.seq:
        return "after"
    return "concurrent"


def version_nodes(view: View, version: bytes | str) -> _Nodes:
    """The writes ``version`` contains, in topological (history) order: the history of
    ``checkout(version)``. On a view without ``checkout`` (a snapshot), its history filtered to
    the causal past of the version's heads, which must be in the view."""
    if isinstance(view, _CheckoutView):
        return list(view.checkout(version).history())
    wanted = set(parse_version(version))
    nodes = list(view.history())
    heads = [node for node in nodes if (node.writer, node.seq) in wanted]
    if len(heads) != len(wanted):
        raise InvalidArgument("invalid version: this view has not seen all of its heads")
    return [n for n in nodes if any(h.clock.get(n.writer, 0) > n.seq for h in heads)]


@dataclass(frozen=True)
class Conflict:
    """A key with concurrent current values: ``nodes`` (deletions included when concurrent with
    a put) and ``base``, the versions of the key every one of them had seen (``[]`` if none)."""

    key: str
    nodes: _Nodes
    base: _Nodes


@dataclass(frozen=True)
class Blame:
    """The current nodes of ``key`` and so who wrote its value."""

    key: str
    nodes: _Nodes

    @property
    def writers(self) -> list[bytes]:
        """The sorted unique writer keys of ``nodes``."""
        return sorted({node.writer for node in self.nodes})


def _sorted_entries(view: View, prefix: str) -> list[tuple[str, _Nodes]]:
    entries = [(key, list(nodes)) for key, nodes in view.list(prefix)]
    entries.sort(key=lambda item: item[0].encode("utf-8"))
    return entries


def conflicts(view: View, prefix: str = "") -> Iterator[Conflict]:
    """Every key under ``prefix`` with more than one current node, in key order."""
    for key, nodes in _sorted_entries(view, prefix):
        if len(nodes) > 1:
            groups = view.key_history(key)
            next(groups, None)
            yield Conflict(key, nodes, list(next(groups, [])))


def blame(view: View, prefix: str = "") -> Iterator[Blame]:
    """Every key under ``prefix`` with its current nodes (their writers), in key order."""
    for key, nodes in _sorted_entries(view, prefix):
        yield Blame(key, nodes)


# --- export ---------------------------------------------------------------------------------------


def _sorted_ids(graph: nx.DiGraph) -> list[str]:
    """Graph node ids in history order (clock total, writer, seq)."""
    data = graph.nodes
    return sorted(graph, key=lambda n: (data[n]["rank"], data[n]["writer"], data[n]["seq"]))


def _quote(text: str) -> str:
    """A DOT quoted string (``\\n`` sequences in ``text`` are kept as line breaks)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _node_label(attrs: dict[str, Any]) -> str:
    if attrs["kind"] in ("authorize", "revoke"):
        targets = " ".join(key[:8] for key in str(attrs["authorizes"]).split(",") if key)
        first = f"{attrs['kind']} {targets}..."
    else:
        first = printable(str(attrs["key"]), backslash=False)
    return f"{first}\n{str(attrs['writer'])[:8]} #{attrs['seq']}"


def to_dot(graph: nx.DiGraph, *, name: str = "hyperdb") -> str:
    """Graphviz DOT text for a :func:`causal_graph`: one box per write labelled with its key,
    writer and seq, a color per writer, deletions dashed. Deterministic."""
    ids = _sorted_ids(graph)
    writers = sorted({str(graph.nodes[n]["writer"]) for n in ids})
    colors = {writer: PALETTE[i % len(PALETTE)] for i, writer in enumerate(writers)}
    lines = [f"digraph {_quote(name)} {{", "  node [shape=box, style=rounded];"]
    for n in ids:
        attrs = graph.nodes[n]
        style = "rounded,dashed" if attrs["deleted"] else "rounded"
        lines.append(
            f"  {_quote(n)} [label={_quote(_node_label(attrs))}, "
            f'color="{colors[str(attrs["writer"])]}", style="{style}"];'
        )
    position = {n: i for i, n in enumerate(ids)}
    for n in ids:
        for pred in sorted(graph.predecessors(n), key=position.__getitem__):
            lines.append(f"  {_quote(pred)} -> {_quote(n)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _xml_unsafe(char: str) -> bool:
    """A character XML 1.0 cannot hold (most C0 controls, surrogates, U+FFFE, U+FFFF), or a
    carriage return, which an XML parser would read back as a newline."""
    code = ord(char)
    return (code < 0x20 and char not in "\t\n") or 0xD800 <= code <= 0xDFFF or code >= 0xFFFE


def write_graphml(graph: nx.DiGraph, path: str | os.PathLike[str] | BinaryIO) -> None:
    """Write ``graph`` as GraphML to a path or a binary file (read it back with
    ``networkx.read_graphml``).

    Attributes are written exactly, except a text that holds a character XML cannot hold (a
    control character other than tab and newline, such as the ESC of a hostile key): that text
    is written as :func:`_printable` shows it, so the file stays well-formed XML."""
    if any(
        isinstance(value, str) and any(map(_xml_unsafe, value))
        for _, attrs in graph.nodes(data=True)
        for value in attrs.values()
    ):
        graph = graph.copy()
        for _, attrs in graph.nodes(data=True):
            for name, value in attrs.items():
                if isinstance(value, str) and any(map(_xml_unsafe, value)):
                    attrs[name] = printable(value)
    nx.write_graphml(graph, path)


def render_png(graph: nx.DiGraph, path: str | os.PathLike[str]) -> None:
    """Render ``graph`` to a PNG file with Graphviz ``dot``."""
    dot = shutil.which("dot")
    if dot is None:
        raise NotFound(
            "Graphviz `dot` is not installed: install graphviz, or export --format dot|graphml"
        )
    try:
        result = subprocess.run(
            [dot, "-Tpng", "-o", os.fspath(path)],
            input=to_dot(graph).encode("utf-8"),
            capture_output=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HyperDBError("Graphviz `dot` did not finish within 60 seconds") from None
    except OSError as exc:
        raise HyperDBError(f"Graphviz `dot` could not run: {exc}") from exc
    if result.returncode != 0:
        stderr = result.stderr.decode("utf-8", "replace").strip()
        raise HyperDBError(f"Graphviz `dot` failed (exit {result.returncode}): {stderr}")


# --- drawing in the terminal ----------------------------------------------------------------------


def _line_label(attrs: dict[str, Any]) -> str:
    head = f"{str(attrs['writer'])[:8]} #{attrs['seq']}"
    if attrs["kind"] in ("authorize", "revoke"):
        targets = ",".join(key[:8] for key in str(attrs["authorizes"]).split(",") if key)
        return f"{head} {attrs['kind']} {targets}"
    text = f"{head} {attrs['kind']} {printable(str(attrs['key']))} {attrs['value']}"
    return text.rstrip()


def _art(cells: Iterable[tuple[int, str]]) -> str:
    chars: dict[int, str] = dict(cells)
    if not chars:
        return ""
    return "".join(chars.get(i, " ") for i in range(max(chars) + 1))


def draw(view_or_graph: View | nx.DiGraph, *, reverse: bool = True) -> list[str]:
    """The causal graph drawn like ``git log --graph``: one line per write (newest first unless
    ``reverse=False``), lane art then ``writer #seq kind key value``. Two writers that wrote
    concurrently, then a write that saw both::

        *   dd50bc0c #3 put y b'3'
        |\\
        | * 28ea9e34 #1 put x b'2'
        * | dd50bc0c #2 put x b'1'
        |/
        * dd50bc0c #1 authorize 28ea9e34

    ``*`` is a write, ``|`` a lane going on, ``\\`` a branch to a predecessor, ``/`` and ``_``
    lanes joining; a write that saw three or more concurrent writes is drawn ``*__`` above its
    branches. Accepts a view or a :func:`causal_graph` (reduced or not)."""
    graph = view_or_graph if isinstance(view_or_graph, nx.DiGraph) else causal_graph(view_or_graph)
    is_reduced = graph.graph.get("reduced", True) is not False
    reduced = graph if is_reduced else nx.transitive_reduction(graph)
    data = graph.nodes

    def parents_of(child: str) -> list[str]:
        """Direct predecessors, the writer's own previous write first (it keeps the lane)."""
        own = data[child]["writer"]
        return sorted(
            reduced.predecessors(child),
            key=lambda p: (data[p]["writer"] != own, data[p]["writer"], data[p]["seq"]),
        )

    order = _sorted_ids(graph)
    if reverse:
        order.reverse()
    else:
        reduced = reduced.reverse(copy=False)  # oldest first: draw successors as the "parents"
    lanes: list[str] = []
    lines: list[str] = []
    for node in order:
        parents = parents_of(node)
        if node in lanes:
            col = lanes.index(node)
        else:
            lanes.append(node)
            col = len(lanes) - 1
        right = len(lanes) - col - 1
        extra = max(len(parents) - 2, 0)
        # make room on the right for the extra branches of a write with 3+ predecessors
        for step in range(extra if right else 0):
            cells = [(2 * i, "|") for i in range(col + 1)]
            cells += [(2 * (m + step) + 1, "\\") for m in range(col + 1, len(lanes))]
            lines.append(_art(cells))
        row = [(2 * i, "|") for i in range(col)] + [(2 * col, "*")]
        row += [(2 * col + i, "_") for i in range(1, 2 * extra + 1)]
        row += [(2 * (m + extra), "|") for m in range(col + 1, len(lanes))]
        after: list[tuple[int, str]] = []
        if not parents and right:
            after = [(2 * i, "|") for i in range(col)]
            after += [(2 * m - 1, "/") for m in range(col + 1, len(lanes))]
        elif len(parents) >= 2:
            after = [(2 * i, "|") for i in range(col + 1)]
            after += [(2 * col + 2 * i - 1, "\\") for i in range(1, len(parents))]
            after += [(2 * (m + extra) + 1, "\\") for m in range(col + 1, len(lanes))]
        art, below = _art(row), _art(after)
        width = len(below) + 1 if len(parents) >= 2 else 0  # a merge: "*   label", as git
        lines.append(f"{art.ljust(width)} {_line_label(data[node])}")
        if below:
            lines.append(below)
        lanes[col : col + 1] = parents
        lines.extend(_collapse(lanes))
    return lines


def _collapse(lanes: list[str]) -> list[str]:
    """Join lanes waiting for the same write, one line per join (rightmost first), in place."""
    lines: list[str] = []
    while True:
        dups = [j for j in range(len(lanes)) if lanes[j] in lanes[:j]]
        if not dups:
            return lines
        j = dups[-1]
        i = max(k for k in range(j) if lanes[k] == lanes[j])
        cells = [(2 * k, "|") for k in range(j)]
        cells += [(2 * k - 1, "_") for k in range(i + 1, j)] + [(2 * j - 1, "/")]
        cells += [(2 * m - 1, "/") for m in range(j + 1, len(lanes))]
        lines.append(_art(cells))
        del lanes[j]
