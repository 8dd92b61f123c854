"""The package's import graph has no circle, and its layers point one way: the query path (serve/) never
imports the build path (build/), and neither the shared core nor the build imports the query path."""

from __future__ import annotations

import ast

from tests.helpers import ROOT

PACKAGE = ROOT / "recommender"


def imports() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in it, TYPE_CHECKING imports included)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                named = [f"{target}.{alias.name}" for alias in node.names]
                candidates = ([target] if node.module else []) + named
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {c for c in candidates if c in modules and c != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    order, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in order:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], order[target])
        if low[node] == order[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in order:
            visit(node)
    return found


def test_the_package_has_no_import_circle():
    assert circles(imports()) == []


def test_the_layers_point_one_way():
    graph = imports()
    core = [m for m in graph if not m.startswith(("recommender.serve", "recommender.build"))]
    core = [m for m in core if m not in ("recommender", "recommender.evaluation", "recommender.text_evaluation")]
    wrong = [
        (m, t)
        for m, targets in graph.items()
        for t in targets
        if (m.startswith("recommender.serve") and t.startswith("recommender.build"))
        or (m.startswith("recommender.build") and t.startswith("recommender.serve"))
        or (m in core and t.startswith(("recommender.serve", "recommender.build")))
    ]
    assert wrong == []


def test_the_check_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
