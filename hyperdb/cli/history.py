"""Command-line subcommands for auditing: ``history`` (``--graph`` draws the causal DAG as
``git log --graph`` does; ``history PATH KEY`` lists the versions of one key), ``graph``
(export it as DOT, GraphML, JSON or PNG), ``blame`` (who wrote each key's current values) and
``conflicts`` (the concurrent writes behind each conflict). Built on
:mod:`hyperdb.tools.inspect`."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from hyperdb.cli.common import (
    add_at,
    add_path,
    describe_write,
    node_json,
    open_existing,
    print_json,
    printable,
    values_line,
    view,
    who,
)
from hyperdb.errors import InvalidArgument
from hyperdb.tools import inspect

EXIT_OK = 0


def add_commands(commands: Any) -> None:
    history = commands.add_parser(
        "history",
        help="list every write, newest first (--graph: draw the causal graph; KEY: one key's "
        "versions)",
        description="Print every write this replica holds (authorizations included) in a "
        "topological order, newest first: a write is listed before everything it had seen. "
        "--graph draws the causal graph beside it, as `git log --graph` does: lanes split where "
        "writers wrote concurrently and join where a write had seen both sides. With KEY, print "
        "the versions of that key instead, newest first: each line the values that were current "
        "together (several: a conflict; <deleted> for a deletion).",
    )
    add_path(history)
    history.add_argument("key", nargs="?", help="list the versions of this key only")
    history.add_argument("--graph", action="store_true", help="draw the causal graph")
    history.add_argument("--reverse", action="store_true", help="oldest first")
    history.add_argument("--limit", type=int, help="at most this many writes")
    add_at(history)
    history.set_defaults(run=run_history)

    graph = commands.add_parser(
        "graph",
        help="export the causal graph of all writes (DOT, GraphML or PNG)",
        description="Write the causal graph (one node per write with its writer, seq, key and "
        "kind; an edge from each write to the writes that directly saw it) as Graphviz DOT, "
        'GraphML, JSON ({"version", "reduced", "nodes": [{"id", ...}], "edges": '
        "[[from, to], ...]}), or a PNG drawn by Graphviz (`dot` must be installed for png).",
    )
    add_path(graph)
    graph.add_argument("--format", choices=("dot", "graphml", "png", "json"), default="dot")
    graph.add_argument("--json", action="store_true", help="the same as --format json")
    graph.add_argument(
        "-o", "--output", help="file to write (default: standard output; required for png)"
    )
    graph.add_argument(
        "--all-edges",
        action="store_true",
        help="keep edges implied by others (default: the transitive reduction)",
    )
    graph.add_argument("--at", metavar="VERSION", help="the graph as of VERSION")
    graph.set_defaults(run=run_graph)

    blame = commands.add_parser(
        "blame",
        help="show who wrote the current values of each key",
        description="For each key under PREFIX, in key order: its current values and the "
        "writer and seq of each.",
    )
    add_path(blame)
    blame.add_argument("prefix", nargs="?", default="")
    add_at(blame)
    blame.set_defaults(run=run_blame)

    conflicts = commands.add_parser(
        "conflicts",
        help="show the keys with concurrent values and the writes that made them",
        description="For each key under PREFIX with more than one current value: the "
        "concurrent writes, and the earlier version(s) of the key all of them had seen.",
    )
    add_path(conflicts)
    conflicts.add_argument("prefix", nargs="?", default="")
    add_at(conflicts)
    conflicts.set_defaults(run=run_conflicts)


def _limit(value: int | None) -> int | None:
    if value is not None and value < 0:
        raise InvalidArgument("--limit must not be negative")
    return value


def run_history(args: argparse.Namespace) -> int:
    limit = _limit(args.limit)
    if args.key is not None and args.graph:
        raise InvalidArgument("--graph draws every write; give it without KEY")
    with open_existing(args.path, readonly=True) as db:
        source = view(db, args)
        if args.key is not None:
            return _key_history(source, args.key, args, limit)
        if args.graph:
            if args.json:
                raise InvalidArgument("--graph draws for people; use --json without it")
            lines = inspect.draw(source, reverse=not args.reverse)  # escapes keys and values
            for line in lines if limit is None else lines[:limit]:
                print(line)
            return EXIT_OK
        writes = source.history(reverse=not args.reverse)
        for node in itertools.islice(writes, limit):
            if args.json:
                print_json(node_json(node))
            else:
                print(f"{who(node):<16} {describe_write(node)}")
    return EXIT_OK


def _key_history(source: Any, key: str, args: argparse.Namespace, limit: int | None) -> int:
    versions = list(source.key_history(key))
    if args.reverse:
        versions.reverse()
    for nodes in versions[:limit]:
        if args.json:
            print_json({"key": key, "values": [node_json(n) for n in nodes]})
        else:
            print(values_line(nodes))
    if not versions and not args.json:
        print(f'(no versions of "{printable(key)}")', file=sys.stderr)
    return EXIT_OK


def run_graph(args: argparse.Namespace) -> int:
    if args.json:
        if args.format not in ("dot", "json"):
            raise InvalidArgument("--json is --format json; give one format")
        args.format = "json"
    if args.format == "png" and args.output is None:
        raise InvalidArgument("--format png needs --output FILE")
    with open_existing(args.path, readonly=True) as db:
        graph = inspect.causal_graph(view(db, args), reduced=not args.all_edges)
    if args.format == "dot":
        text = inspect.to_dot(graph)
        if args.output is None:
            sys.stdout.write(text)
        else:
            Path(args.output).write_text(text, encoding="utf-8")
    elif args.format == "json":
        text = json.dumps(graph_json(graph), ensure_ascii=False) + "\n"
        if args.output is None:
            sys.stdout.write(text)
        else:
            Path(args.output).write_text(text, encoding="utf-8")
    elif args.format == "graphml":
        if args.output is None:
            inspect.write_graphml(graph, sys.stdout.buffer)
        else:
            inspect.write_graphml(graph, args.output)
    else:
        inspect.render_png(graph, args.output)
    if args.output is not None:
        print(
            f"wrote {args.output}: {graph.number_of_nodes()} writes, "
            f"{graph.number_of_edges()} edges ({args.format})"
        )
    return EXIT_OK


def graph_json(graph: Any) -> dict[str, Any]:
    """A causal graph (``inspect.causal_graph``) in JSON: its attributes, its nodes with theirs
    (in history order), and its edges as ``[from, to]`` pairs."""
    return {
        **graph.graph,
        "nodes": [{"id": name, **attrs} for name, attrs in graph.nodes(data=True)],
        "edges": [[a, b] for a, b in graph.edges()],
    }


def run_blame(args: argparse.Namespace) -> int:
    with open_existing(args.path, readonly=True) as db:
        for entry in inspect.blame(view(db, args), args.prefix):
            if args.json:
                print_json({"key": entry.key, "values": [node_json(n) for n in entry.nodes]})
            else:
                print(f"{printable(entry.key)}  {values_line(entry.nodes)}")
    return EXIT_OK


def run_conflicts(args: argparse.Namespace) -> int:
    found = 0
    with open_existing(args.path, readonly=True) as db:
        for conflict in inspect.conflicts(view(db, args), args.prefix):
            found += 1
            if args.json:
                print_json(
                    {
                        "key": conflict.key,
                        "values": [node_json(n) for n in conflict.nodes],
                        "base": [node_json(n) for n in conflict.base],
                    }
                )
                continue
            print(f"{printable(conflict.key)}: {len(conflict.nodes)} concurrent values")
            for node in conflict.nodes:
                print(f"  {who(node):<16} {describe_write(node)}")
            if conflict.base:
                print(f"  all had seen: {values_line(conflict.base)}")
    if not found and not args.json:
        print("(no conflicts)", file=sys.stderr)
    return EXIT_OK


__all__ = ["add_commands"]
