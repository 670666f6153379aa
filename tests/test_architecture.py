"""The import graph of the kolors package: no cycles, the layering rule of docs/architecture.md, a torch-free
foundation, and no two modules sharing a name. Every import counts, function-level ones included; only
``if TYPE_CHECKING:`` blocks (annotations) are left out."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "kolors"

# docs/architecture.md: a module imports from its own package and the layers below it.
LAYERS = [
    {"errors", "defaults", "devices", "schedulers", "images", "request", "metadata", "files", "signals", "version",
     "arguments", "libraries"},
    {"models", "loading", "performance", "annotators"},
    {"diffusion"},
    {"adapters"},
    {"pipelines"},
    {"cli", "server", "comfyui", "data", "evaluation", "training", "recipe", "embedded", "__init__", "__main__"},
]
FOUNDATION = LAYERS[0]
HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py")}


def imports(path: Path, name: str, known: set[str] | None = None, top_level_only: bool = False) -> set[str]:
    """The modules ``path`` imports (absolute names), at any depth or only at module level. ``from a import b``
    counts as importing ``a.b`` when that is one of the ``known`` modules, else ``a``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # annotations only: `if TYPE_CHECKING:` blocks import nothing at run time
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            for alias in node.names:
                found.add(f"{stem}.{alias.name}" if known and f"{stem}.{alias.name}" in known else stem)
    return found


def kolors_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {m for m in imports(path, name, set(known)) if m in known and m != name}
            for name, path in known.items()}


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module}: its package '{top}' has no place in the layering rule (docs/architecture.md)")


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports from a higher layer than the importer's (same-package imports are free)."""
    return sorted(f"{module} -> {other}" for module, imported in graph.items() for other in imported
                  if module.split(".")[:2] != other.split(".")[:2] and layer_of(other) > layer_of(module))


def test_no_import_cycles():
    assert find_cycles(kolors_graph()) == []


def test_layering_rule():
    assert upward_imports(kolors_graph()) == []


def test_the_checks_catch_a_cycle_and_an_upward_import():
    graph = {"kolors.pipelines.pipeline": {"kolors.adapters.lora", "kolors.cli.main"},
             "kolors.adapters.lora": {"kolors.pipelines.pipeline"}, "kolors.cli.main": set()}
    assert find_cycles(graph) == [["kolors.adapters.lora", "kolors.pipelines.pipeline"]]
    assert upward_imports(graph) == ["kolors.adapters.lora -> kolors.pipelines.pipeline",
                                     "kolors.pipelines.pipeline -> kolors.cli.main"]


def test_foundation_modules_import_no_torch_at_module_level():
    heavy = []
    for name, path in modules().items():
        if name.split(".")[1:2] and name.split(".")[1] in FOUNDATION:
            for imported in imports(path, name, top_level_only=True):
                if imported.split(".")[0] in HEAVY:
                    heavy.append(f"{name} imports {imported}")
    assert heavy == []


def test_module_names_are_unique():
    by_name = defaultdict(list)
    for path in SRC.rglob("*.py"):
        if path.stem not in ("__init__", "__main__"):
            by_name[path.stem].append(str(path.relative_to(SRC)))
    assert {k: v for k, v in by_name.items() if len(v) > 1} == {}
