"""The shape of the test suite: shared code lives in ``tests/helpers``, no test module imports
another, and every test that starts a process or opens a real socket is marked ``integration``,
so ``pytest -m "not integration"`` is a quick loop over everything else.

The rule for the mark, read from the source with :mod:`ast` (nothing is imported or run): a test
needs it when the code it reaches mentions one of :data:`TRIGGERS`. The code a test reaches is its
own body, the functions, classes and fixtures of its module (and of ``conftest.py``) that it names
or takes as parameters, and the functions and classes of ``tests/helpers`` and ``benchmarks`` that
any of those names, followed to the end. A name is read through the module's imports
(``from hyperdb.replication import net`` makes ``net.serve`` ``hyperdb.replication.net.serve``;
``from tests.helpers.cli_process import run`` makes ``run`` a helper followed into its body, which
calls ``subprocess.run``). hyperdb itself is not followed: its functions that start processes or
serve and sync over TCP are named in :data:`TRIGGERS`. A test is marked when
``@pytest.mark.integration`` decorates it or its class, or the ``pytestmark`` of its module or class
holds that mark. What the reading cannot see: code run through ``exec`` (README's examples), and
``hyperdb.cli.main`` called in process with a command that serves or syncs; mark those by hand.

Mutations it caught, each tried by hand: removing ``pytest.mark.integration`` from the module
``pytestmark`` of ``test_cli_net.py`` (every test of the module reported, with the helper or the
``net`` call it reaches); removing the mark of ``test_inspect.py::test_to_dot_parses_with_graphviz``
(reported: ``subprocess.run``); ``from tests.test_cli import run`` in ``test_cli_data.py`` (reported
as a test module imported by another), and ``from tests.conftest import dump`` in ``test_feed.py``
likewise; a ``tests/util.py`` beside the tests (reported: helpers live in tests/helpers).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
HELPERS = TESTS / "helpers"

TRIGGERS = (
    "subprocess",
    "socket",
    "asyncio.start_server",
    "asyncio.open_connection",
    "asyncio.create_subprocess_exec",
    "asyncio.create_subprocess_shell",
    "hyperdb.replication.net.serve",
    "hyperdb.replication.net.serve_in_background",
    "hyperdb.replication.net.sync",
    "hyperdb.replication.net.sync_blocking",
    "hyperdb.replication.net.keep_synced",
    "hyperdb.tools.inspect.render_png",
    "hyperdb.cli.demo.run_demo",
)
"""What a test may only reach with the mark: the standard modules that start processes or open
sockets, and the hyperdb functions that do (TCP serving and syncing, Graphviz, the demo)."""
ALIASES = {"hyperdb.net": "hyperdb.replication.net", "hyperdb.inspect": "hyperdb.tools.inspect"}
"""hyperdb's lazy short names, read as the modules they stand for."""
MARK = "pytest.mark.integration"
AWAITING_THE_MARK: frozenset[str] = frozenset()
"""Modules being rewritten while the mark came in: their tests get it with that work, and each
module leaves this set then (the test below fails for a module listed here that no longer needs
it)."""

Def = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    imports: dict[str, str]
    defs: dict[str, Def]


def load(path: Path, name: str) -> Module:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    imports: dict[str, str] = {}
    for node in ast.walk(tree):  # function-level imports count too
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    imports[alias.asname] = alias.name
                else:
                    head = alias.name.split(".")[0]
                    imports[head] = head
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                imports[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    defs = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    return Module(name, path, tree, imports, defs)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def suite_files() -> list[Path]:
    return sorted(TESTS.glob("test_*.py"))


def modules() -> dict[str, Module]:
    paths = [*suite_files(), TESTS / "conftest.py"]
    paths += sorted(HELPERS.glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    return {name: load(path, name) for path in paths for name in [module_name(path)]}


MODULES = modules()


def chain(node: ast.expr) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]``; None for anything but names and attributes."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def mentions(node: ast.AST, module: Module) -> Iterator[str]:
    """Every dotted name in ``node`` (annotations aside), read through ``module``'s imports."""
    stack: list[ast.AST] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Name | ast.Attribute):
            parts = chain(item)
            if parts is not None:
                head, rest = parts[0], parts[1:]
                if head in module.imports:
                    full = ".".join([module.imports[head], *rest])
                elif head in module.defs:
                    full = ".".join([module.name, *parts])
                else:
                    full = ""
                for short, long in ALIASES.items():
                    if full == short or full.startswith(short + "."):
                        full = long + full[len(short) :]
                if full:
                    yield full
        for field, value in ast.iter_fields(item):
            if field in ("annotation", "returns"):
                continue
            children = value if isinstance(value, list) else [value]
            stack.extend(child for child in children if isinstance(child, ast.AST))


def trigger(name: str) -> str | None:
    return next((t for t in TRIGGERS if name == t or name.startswith(t + ".")), None)


def definition(name: str) -> tuple[Module, Def] | None:
    """The function or class of an analysed module that a dotted name names."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the longest module name first
        module = MODULES.get(".".join(parts[:cut]))
        if module is not None:
            found = module.defs.get(parts[cut])
            return (module, found) if found is not None else None
    return None


def fixtures(node: Def, module: Module) -> Iterator[tuple[Module, Def]]:
    """The fixtures a test or fixture of a test module (or conftest) takes as parameters."""
    in_tests = module.name.startswith("tests.test_") or module.name == "tests.conftest"
    if isinstance(node, ast.ClassDef) or not in_tests:
        return
    conftest = MODULES["tests.conftest"]
    for arg in node.args.args + node.args.kwonlyargs:
        for home in (module, conftest):
            if arg.arg in home.defs:
                yield home, home.defs[arg.arg]
                break


def reaches(test: Def, module: Module) -> list[str] | None:
    """How the test reaches a trigger (the names followed, then the trigger), or None."""
    seen: set[tuple[str, str]] = set()
    queue: list[tuple[Module, Def, list[str]]] = [(module, test, [])]
    while queue:
        home, node, path = queue.pop(0)
        for arrived, fixture in fixtures(node, home):
            queue.append((arrived, fixture, [*path, f"fixture {fixture.name}"]))
        for name in mentions(node, home):
            if trigger(name):
                return [*path, name]
            found = definition(name)
            if found is not None and (found[0].name, found[1].name) not in seen:
                seen.add((found[0].name, found[1].name))
                queue.append((found[0], found[1], [*path, name]))
    return None


def marked(nodes: list[ast.AST], module: Module) -> bool:
    """Whether the mark decorates one of ``nodes`` or is in a ``pytestmark`` in its body."""
    for node in nodes:
        decorators = getattr(node, "decorator_list", [])
        if any(MARK in mentions(decorator, module) for decorator in decorators):
            return True
        for statement in getattr(node, "body", []):
            if (
                isinstance(statement, ast.Assign)
                and any(getattr(t, "id", None) == "pytestmark" for t in statement.targets)
                and MARK in mentions(statement.value, module)
            ):
                return True
    return False


@dataclass(frozen=True)
class Item:
    module: Module
    owners: tuple[ast.AST, ...]  # the module, the class if any, the function
    node: Def

    @property
    def id(self) -> str:
        names = [getattr(owner, "name", None) for owner in self.owners[1:]]
        return "::".join([self.module.path.name, *(name for name in names if name)])


def suite_tests() -> Iterator[Item]:
    for path in suite_files():
        module = MODULES[module_name(path)]
        for node in module.tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name.startswith("test_"):
                    yield Item(module, (module.tree, node), node)
            elif isinstance(node, ast.ClassDef):  # a Test class, or a base class its tests are in
                for method in node.body:
                    is_function = isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef)
                    if is_function and method.name.startswith("test_"):
                        yield Item(module, (module.tree, node, method), method)


def needing_the_mark() -> dict[str, list[str]]:
    """Every test that reaches a trigger without the mark, with how it reaches it."""
    missing = {}
    for test in suite_tests():
        how = reaches(test.node, test.module)
        if how is not None and not marked(list(test.owners), test.module):
            missing[test.id] = how
    return missing


def test_every_test_that_starts_a_process_or_opens_a_socket_is_marked_integration() -> None:
    missing = needing_the_mark()
    awaited = {test.split("::")[0] for test in missing} & AWAITING_THE_MARK
    assert awaited == AWAITING_THE_MARK, (
        f"remove from AWAITING_THE_MARK: {AWAITING_THE_MARK - awaited}"
    )
    missing = {test: how for test, how in missing.items() if test.split("::")[0] not in awaited}
    assert not missing, (
        "needs @pytest.mark.integration (or the module's pytestmark):\n"
        + "\n".join(f"  {test}: {' -> '.join(how)}" for test, how in sorted(missing.items()))
    )


def test_the_rule_sees_through_helpers_fixtures_and_imports() -> None:
    """The reading itself, on tests whose way to a trigger is known (so that a reading broken into
    seeing nothing cannot pass the test above)."""
    found = {test.id: reaches(test.node, test.module) for test in suite_tests()}
    through_a_helper = found[
        "test_cli_writers.py::test_roles_scopes_revocation_rotation_and_revert"
    ]
    assert through_a_helper is not None and "tests.helpers.cli_process.run" in through_a_helper
    through_fixtures = found["test_oracle.py::test_scenario"]
    assert through_fixtures is not None
    assert through_fixtures[:2] == ["fixture reference_outputs", "fixture reference"]
    through_benchmarks = found["test_benchmarks.py::test_network_benchmark_runs"]
    assert through_benchmarks is not None and through_benchmarks[0] == "benchmarks.bench_net.main"
    assert found["test_storage.py::TestLMDBStorage::test_map_grown_by_another_process"] is not None
    assert found["test_cli_help.py::test_every_command_prints_its_usage_and_description"] is None
    assert found["test_oracle.py::test_the_judges"] is None
    assert found["test_trie_model.py::test_long_random_history"] is None


def test_helpers_live_in_tests_helpers() -> None:
    """Beside the tests only test modules and conftest.py; tests/helpers is a package, and each of
    its modules says in a docstring what it holds."""
    loose = [
        path.name
        for path in TESTS.glob("*.py")
        if not path.name.startswith("test_") and path.name != "conftest.py"
    ]
    assert not loose, f"move these into tests/helpers: {loose}"
    assert (HELPERS / "__init__.py").is_file()
    for path in sorted(HELPERS.glob("*.py")):
        assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), path.name


def test_no_test_module_is_imported_as_a_library() -> None:
    """No module of the tests imports a test module or conftest.py: what two test modules share is
    in tests/helpers."""
    offenders = [
        f"{module.path.name} imports {target}"
        for module in MODULES.values()
        if module.name.startswith("tests.")
        for target in module.imports.values()
        if any(part.startswith("test_") or part == "conftest" for part in target.split(".")[:2])
    ]
    assert not offenders, offenders
