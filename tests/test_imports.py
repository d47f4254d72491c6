"""The package's seams: its import graph, read from the source with ``ast`` (module level *and* inside functions).

* no cycle anywhere in ``ldm3d`` (an import inside a function still runs, so it counts);
* ``ldm3d.client`` reaches the servers' wire contract through ``ldm3d.wire``, never ``ldm3d.servers``;
* ``ldm3d.repository`` (reading layout, configs, manifests) never reaches torch-side code (``ldm3d.export``,
  the torch runtime, torch, diffusers, transformers).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ldm3d

ROOT = Path(ldm3d.__file__).resolve().parent
TORCH_SIDE = ("torch", "diffusers", "transformers", "ldm3d.export", "ldm3d.runtime.torch_runtime")


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between ``ldm3d`` modules, every imported module name outside the package), per module.

    Importing ``a.b.c`` from outside ``a.b`` runs ``a/b/__init__`` first, so that is an edge too; ``from pkg import
    sub`` is an edge to the submodule ``pkg.sub`` (and to ``pkg`` only for names that are not submodules).
    """
    mods = _modules()
    graph, external = {}, {}
    for name, (path, is_pkg) in mods.items():
        package = name if is_pkg else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods]
                targets.update(subs)
                if len(subs) < len(node.names):
                    targets.add(mod)
        edges, outside = set(), set()
        for t in targets:
            if not _within(t, "ldm3d"):
                outside.add(t)
                continue
            while t not in mods:
                t = t.rpartition(".")[0]
            parts = t.split(".")
            for i in range(1, len(parts) + 1):
                ancestor = ".".join(parts[:i])
                if ancestor in mods and not _within(name, ancestor):
                    edges.add(ancestor)
            if t != name:
                edges.add(t)
        graph[name], external[name] = edges, outside
    return graph, external


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        stack.pop()
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [m for m in graph if _within(m, start)]
    while todo:
        v = todo.pop()
        if v not in seen:
            seen.add(v)
            todo.extend(graph[v])
    return seen


def test_no_import_cycle_counting_imports_inside_functions():
    graph, _ = import_graph()
    assert "ldm3d.servers.app" in graph and graph["ldm3d.client"], "the graph was not read"
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_client_imports_nothing_from_the_servers():
    graph, _ = import_graph()
    reached = _reach(graph, "ldm3d.client")
    assert "ldm3d.wire.tensors" in reached
    assert not [m for m in reached if _within(m, "ldm3d.servers")]


def test_repository_read_side_imports_no_torch_side_code():
    graph, external = import_graph()
    reached = _reach(graph, "ldm3d.repository")
    names = reached | {e for m in reached for e in external[m]}
    assert not sorted(n for n in names if any(_within(n, t) for t in TORCH_SIDE))
    # and at run time: reading a repository loads neither torch nor the export code
    code = "import sys, ldm3d.repository, ldm3d.pipeline.spec; print(sorted(m for m in sys.modules if m in " \
           "('torch', 'diffusers', 'transformers', 'ldm3d.export')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_graph_sees_imports_inside_functions():
    """The reader counts a function-level import (what hid the old repository ↔ runtime cycle)."""
    graph, _ = import_graph()
    assert "ldm3d.export" in graph["ldm3d.cli.models"]  # imported inside run_export only
