"""The package's import graph has no cycle, so every module can be imported on its own.

Imports are read from the source with ``ast``, top-level and inside functions alike: a
deferred import that closes a cycle is still a cycle in the design. Imports under
``if TYPE_CHECKING:`` are left out: they name types for annotations and never run."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import cronmetrics

ROOT = Path(cronmetrics.__file__).resolve().parent
MODULES = sorted(
    ".".join(("cronmetrics", *p.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
    for p in ROOT.rglob("*.py")
)


def imports_of(module: str) -> set[str]:
    parts = module.split(".")
    path = ROOT.joinpath(*parts[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If)
        and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found.update(n for n in names if n in MODULES and n != module)
    # a package's __init__ is not an edge: importing cronmetrics.web.app imports cronmetrics.web
    return {n for n in found if not (ROOT.joinpath(*n.split(".")[1:]) / "__init__.py").exists()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_import_graph_of_the_package_has_no_cycle() -> None:
    graph = {module: imports_of(module) for module in MODULES}
    assert sum(map(len, graph.values())) > 50  # the walk does see the imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", [m for m in MODULES if m != "cronmetrics.__main__"])
def test_every_module_imports_on_its_own(module: str) -> None:
    importlib.import_module(module)
