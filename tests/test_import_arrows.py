"""The architecture's import arrows, read from the source (every import, lazy ones included).

    foundation (iee_deploy.errors, iee_deploy.io)  <-  runtime  <-  profiler  <-  iee_deploy (the rest)
    solvers (pure optimisation: no torch)          <-  iee_deploy

`targets` is data (YAML files). Foundation modules import nothing of the project but each other, so every layer
may use them; a layer imports only from layers below it, and no module imports itself round a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("solvers", "runtime", "profiler", "iee_deploy", "targets")
FOUNDATION = {"iee_deploy.errors", "iee_deploy.io"}
ALLOWED = {  # layer -> layers it may import
    "foundation": set(),
    "solvers": {"foundation"},
    "runtime": {"foundation"},
    "profiler": {"foundation", "runtime"},
    "iee_deploy": {"foundation", "runtime", "profiler", "solvers", "targets"},
    "targets": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    if module in FOUNDATION:
        return "foundation"
    return module.split(".")[0]


def imports_of(path: Path, module: str) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import in `path`, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        found += [(name, id(node) in top_level) for name in names]
    return found


def project_graph() -> tuple[nx.DiGraph, dict[str, set[str]]]:
    """Module-level import graph of the project's modules, and every module's imports (lazy ones too)."""
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph, everything = nx.DiGraph(), {}
    for module, path in modules.items():
        graph.add_node(module)
        everything[module] = set()
        for name, at_top in imports_of(path, module):
            target = next((m for m in (name, name.rpartition(".")[0]) if m in modules), None)
            root = name.split(".")[0]
            everything[module].add(target or root)
            if target and target != module and at_top:
                graph.add_edge(module, target)
    return graph, everything


GRAPH, IMPORTS = project_graph()


@pytest.mark.parametrize("module", sorted(IMPORTS))
def test_imports_follow_the_layers(module):
    mine = layer(module)
    for name in IMPORTS[module]:
        theirs = layer(name)
        if theirs in ALLOWED and theirs != mine:
            assert theirs in ALLOWED[mine], f"{module} ({mine}) imports {name} ({theirs})"


def test_the_named_arrows():
    """The arrows the architecture is most likely to lose, spelled out."""
    profiler = {n for m, names in IMPORTS.items() if m.startswith("profiler") for n in names}
    assert not any(n.startswith("iee_deploy") and n not in FOUNDATION for n in profiler), sorted(profiler)
    assert not any(n.startswith(("iee_deploy.deploy", "iee_deploy.models", "iee_deploy.graph")) for n in profiler)
    runtime = {n for m, names in IMPORTS.items() if m.startswith("runtime") for n in names}
    assert not any(n.startswith(("profiler", "iee_deploy")) and n not in FOUNDATION for n in runtime)
    solvers = {n for m, names in IMPORTS.items() if m.startswith("solvers") for n in names}
    assert "torch" not in solvers
    for module in FOUNDATION | {"iee_deploy"}:
        # foundation modules may use each other (io raises errors), nothing else of the project
        assert not any(layer(n) in ALLOWED and n not in FOUNDATION for n in IMPORTS[module]), (module, IMPORTS[module])


def test_no_import_cycles():
    cycles = list(nx.simple_cycles(GRAPH))
    assert not cycles, cycles[:3]
    layers = nx.DiGraph((layer(a), layer(b)) for a, b in GRAPH.edges if layer(a) != layer(b))
    assert nx.is_directed_acyclic_graph(layers), list(nx.simple_cycles(layers))


def test_a_profiler_import_is_light():
    """Importing the ONNX Runtime backend does not drag in the deploy layer, datasets or models."""
    import subprocess
    import sys

    code = ("import sys, profiler.measurer, runtime.backends.ort; "
            "bad = [m for m in sys.modules if m.startswith(('iee_deploy.deploy', 'iee_deploy.data', 'iee_deploy.models', "
            "'sklearn'))]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
