"""The import structure of ``hyperdb`` and ``trie``, read from the source with ``ast``: no import
cycle, no layer importing a higher one (:data:`LAYERS`), and no private name (``_x``) taken from
another module unless that module is itself private (its file name starts with ``_``).

Every import counts, including those inside functions. ``from package import name`` counts as an
import of ``package.name`` when that is a module, else of ``package``.

Mutations tried: ``hyperdb.model.version`` importing ``hyperdb.api.checks`` (caught: a lower
layer importing a higher one); ``hyperdb.model.index`` importing ``hyperdb.model.trie_reads``
(caught: a cycle); ``hyperdb.model.reader`` using ``record._parse_simple`` (caught: a private
name of a public module).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The layers, lowest first: a module may import modules of its own layer or of lower ones.
LAYERS: list[tuple[str, ...]] = [
    ("trie",),  # the pure hash trie: imports nothing of hyperdb
    ("hyperdb.errors", "hyperdb.primitives"),  # exceptions; cryptography and CBOR
    ("hyperdb.storage",),  # transactions over LMDB or memory
    ("hyperdb.feed",),  # the signed append-only feed
    ("hyperdb.model",),  # records, nodes, state, index, reads, the write path, the port
    ("hyperdb.replication", "hyperdb.discovery"),  # wire, channel, session, TCP; finding peers
    ("hyperdb.tools",),  # fsck, inspect
    ("hyperdb.api",),  # Database, Snapshot, argument checks, watch
    ("hyperdb",),  # the package's front door (hyperdb/__init__.py)
    ("hyperdb.cli",),  # the command line, a client of the front door
    ("hyperdb.__main__",),
]


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    names: tuple[str, ...]  # names taken from ``imported`` (``from m import a, b``)
    line: int


def module_files() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in ("hyperdb", "trie"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    found = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.append(Import(name, alias.name, (), node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] not in ("hyperdb", "trie"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    found.append(Import(name, sub, (), node.lineno))
                else:
                    found.append(Import(name, base, (alias.name,), node.lineno))
    return found


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for number, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = number, len(prefix)
    assert best >= 0, f"{module} is in no layer: add it to LAYERS"
    return best


def all_imports() -> list[Import]:
    modules = module_files()
    return [item for name, path in modules.items() for item in imports_of(name, path, modules)]


def test_every_module_is_in_a_layer() -> None:
    for module in module_files():
        layer_of(module)


def test_no_module_imports_a_higher_layer() -> None:
    wrong = [
        f"{item.importer} (layer {layer_of(item.importer)}) imports {item.imported} "
        f"(layer {layer_of(item.imported)}), line {item.line}"
        for item in all_imports()
        if layer_of(item.imported) > layer_of(item.importer)
    ]
    assert not wrong, "\n".join(wrong)


def test_there_is_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for item in all_imports():
        if item.imported != item.importer:
            graph.setdefault(item.importer, set()).add(item.imported)
    # a package's __init__ importing its own modules is how it re-exports: not a cycle of layers
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for other in sorted(graph.get(module, ())):
            if state.get(other) == 1:
                cycles.append([*path[path.index(other) :], other])
            elif other not in state:
                visit(other)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_name_is_taken_from_a_public_module() -> None:
    modules = module_files()
    wrong = []
    for item in all_imports():
        module_is_private = any(_is_private(part) for part in item.imported.split("."))
        if module_is_private:
            continue
        for name in item.names:
            if _is_private(name):
                wrong.append(f"{item.importer} takes {name} from {item.imported}, line {item.line}")
    # ``module._name`` through an imported module counts too
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        bound: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        bound[alias.asname or alias.name.split(".")[0]] = alias.name
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    if sub in modules:
                        bound[alias.asname or alias.name] = sub
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in bound
                and _is_private(node.attr)
                and not any(_is_private(p) for p in bound[node.value.id].split("."))
                and bound[node.value.id] != name
            ):
                wrong.append(f"{name} uses {bound[node.value.id]}.{node.attr}, line {node.lineno}")
    assert not wrong, "\n".join(wrong)


def test_the_layers_are_what_the_tree_shows() -> None:
    """Each package named in :data:`LAYERS` is a directory (or module) of the tree, and each
    subpackage of ``hyperdb`` is named: ``ls hyperdb/`` shows the layers."""
    for prefixes in LAYERS:
        for prefix in prefixes:
            parts = prefix.split(".")
            path = ROOT.joinpath(*parts)
            assert path.is_dir() or path.with_suffix(".py").exists(), prefix
    named = {prefix for prefixes in LAYERS for prefix in prefixes}
    for child in (ROOT / "hyperdb").iterdir():
        if child.is_dir() and (child / "__init__.py").exists():
            assert f"hyperdb.{child.name}" in named, child.name
