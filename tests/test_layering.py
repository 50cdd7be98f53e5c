"""The package's import graph keeps its layers: features → data → model (reference, ops, backends) → trading
→ train → live, with the command-line and demo modules on top. Trading sits below training because the
trainer chooses each fold's decision threshold with the backtest; trading reads a checkpoint's metadata only
through the structural type ``trading.model_meta.ModelMeta``. A module may import from its own layer or
a lower one, never a higher one, and no two modules may import each other, directly or round a loop.

Imports inside functions count (a lazy import is still a dependency); imports under ``if TYPE_CHECKING:``
count for the layers (a type named from a higher layer is a design dependency too) but not for cycles (they
never run, so they cannot make an import loop)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "convnext_fast"
ROOT = Path(__file__).resolve().parents[1] / "python"
LAYERS = ("base", "features", "data", "model", "trading", "train", "live", "app")
# Modules outside the layer their folder implies, and why.
PLACED = {
    "convnext_fast": "app",  # the public face: re-exports from every layer
    "convnext_fast.errors": "base",
    "convnext_fast.checks": "base",
    "convnext_fast.variants": "base",
    "convnext_fast.cli": "app",
    "convnext_fast.demo": "app",
    "convnext_fast.demo_universe": "app",
    "convnext_fast.demo_summary": "app",
    # Hyper-parameter search scores trained folds by backtest: an application of train and trading.
    "convnext_fast.train.tune": "app",
    # Batch prediction loads a checkpoint and decides through trading: the train layer's reader.
    "convnext_fast.prediction": "train",
    # `convnext-fast bench`: builds a live engine from the command line's options.
    "convnext_fast.live.bench": "app",
}
FOLDER_LAYER = {
    "features": "features",
    "data": "data",
    "train": "train",
    "trading": "trading",
    "live": "live",
}


def layer_of(module: str) -> str:
    if module in PLACED:
        return PLACED[module]
    last = module.rsplit(".", 1)[-1]
    if last in ("__main__", "cli") or last.endswith("_cli") or module.startswith(f"{PACKAGE}.cli."):
        return "app"  # command lines (each area's options and run(), the cli/ package, python -m)
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in FOLDER_LAYER:
        return FOLDER_LAYER[parts[1]]
    return "model"  # reference, model, ops, backends, _ext, inference, gpu_session


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in (ROOT / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    inside = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING":
            inside |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return inside


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """``(every import, run-time imports)`` as module → the package modules it imports."""
    modules = _modules()
    extension = f"{PACKAGE}._C"  # the compiled kernels: a leaf of the model layer

    def target(name: str) -> str | None:
        while name not in modules and name != extension and "." in name:
            name = name.rsplit(".", 1)[0]
        return name if name in modules or name == extension else None

    every, runtime = {}, {}
    for module, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        type_only = _type_checking_nodes(tree)
        every[module], runtime[module] = set(), set()
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")[: None if is_package else -1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                elif (node.module or "").split(".")[0] == PACKAGE:
                    source = node.module
                else:
                    continue
                names = [f"{source}.{a.name}" for a in node.names]  # a submodule, or a name in ``source``
            for name in names:
                found = target(name)
                if found is not None and found != module:
                    every[module].add(found)
                    if id(node) not in type_only:
                        runtime[module].add(found)
    return every, runtime


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    rank = {name: i for i, name in enumerate(LAYERS)}
    return sorted(
        f"{m} ({layer_of(m)}) imports {t} ({layer_of(t)})"
        for m, targets in graph.items()
        for t in targets
        if rank[layer_of(t)] > rank[layer_of(m)]
    )


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_no_module_imports_from_a_higher_layer(graph):
    every, _ = graph
    assert len(every) > 50, "the graph should cover the whole package"
    assert upward_imports(every) == []


def test_the_import_graph_has_no_cycles(graph):
    _, runtime = graph
    assert cycles(runtime) == []


def test_the_checks_catch_what_they_look_for():
    """The detectors themselves: an upward edge and a three-module loop are found."""
    assert upward_imports(
        {"convnext_fast.data.x": {"convnext_fast.trading.y"}, "convnext_fast.trading.y": set()}
    )
    loop = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(loop) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
