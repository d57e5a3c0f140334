"""drllm's module graph, read from the source with ``ast``, is acyclic.

Every ``import`` and ``from ... import`` counts, at module level or inside a function (a
function-level import may defer a heavy dependency, never hide a cycle); only imports under
``if TYPE_CHECKING:`` are left out, since they never run. Importing ``a.b.c`` first runs the
``__init__`` of ``a`` and ``a.b``, so an import of a submodule is also an edge to each package
above it, except the packages the importing module itself lives in (Python has already started
those, and a package's ``__init__`` importing its own submodules is the usual re-export).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "drllm"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = module.split(".")[: None if is_package else -1]
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*parts, base] if base else parts)
        return [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return []


def import_graph() -> dict[str, dict[str, int]]:
    """``{module: {imported drllm module: line}}``."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            for target in _targets(node, module, path.name == "__init__.py"):
                found = resolve(target) if target.startswith("drllm") else None
                if found is None:
                    continue
                parts = found.split(".")
                for depth in range(1, len(parts) + 1):
                    dep = ".".join(parts[:depth])
                    if dep != module and dep in modules and not module.startswith(dep + "."):
                        graph[module].setdefault(dep, node.lineno)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of ``graph``, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_module_graph_is_acyclic() -> None:
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(
        f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])
    ) + f" -> {cycle[-1]}"


def test_the_graph_sees_function_level_imports_and_parent_packages() -> None:
    graph = import_graph()
    assert "drllm.models.loading" in graph["drllm.distributed.executor_evaluator"]
    assert "drllm.search" in graph["drllm.distributed.prior_plan"]
    # drllm.jobs.search imports drllm.distributed.config, which runs drllm.distributed's __init__
    assert "drllm.distributed" in graph["drllm.jobs.search"]
    assert "drllm" not in graph["drllm.jobs.search"]


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}}) is None
