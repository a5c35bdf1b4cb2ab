"""No import circle between segloop's modules (what import-linter's layer contracts do not see
inside one layer): read every module's ``import`` statements with ``ast`` and look for
strongly connected components of the import graph.

Module-level imports must form no circle at all. Imports inside functions (lazy, to keep
start-up light) may not add circles beyond the ones listed in LAZY_CIRCLES with a reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: circles through imports inside functions that are known, and why they are left for now
LAZY_CIRCLES: dict[frozenset[str], str] = {
    frozenset({"segloop.io.dicom2d", "segloop.io.image2d"}):
        "image2d dispatches to dicom2d, which builds image2d's Image2D (2D images, issue 11)",
    frozenset({"segloop.cli.segment", "segloop.cli.segment2d"}):
        "segment dispatches 2D inputs to segment2d, which reuses segment's option parser",
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted((SRC / "segloop").rglob("*.py")):
        rel = p.relative_to(SRC).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, mods: dict[str, Path], top_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_only else list(ast.walk(tree))
    found: set[str] = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            found.update(a.name for a in n.names)
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                up = pkg.split(".")[: len(pkg.split(".")) - n.level + 1]
                base = ".".join(up + ([n.module] if n.module else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                         for a in n.names)
    out = set()
    for t in found:
        while t not in mods and "." in t:
            t = t.rpartition(".")[0]
        # a package's __init__ importing its own submodules is how packages export names
        if t in mods and t != name and not t.startswith(name + "."):
            out.add(t)
    return out


def _circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[frozenset[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.add(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(frozenset(comp))
    return out


def test_module_level_imports_form_no_circle() -> None:
    mods = _modules()
    graph = {m: _imports(m, p, mods, top_only=True) for m, p in mods.items()}
    assert sum(map(len, graph.values())) > 300  # the graph was read, not empty
    assert _circles(graph) == []


def test_lazy_imports_add_no_new_circle() -> None:
    mods = _modules()
    graph = {m: _imports(m, p, mods, top_only=False) for m, p in mods.items()}
    new = [sorted(c) for c in _circles(graph) if c not in LAZY_CIRCLES]
    assert new == [], f"import circles through lazy imports: {new}"


def test_the_circle_finder_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        frozenset({"a", "b", "c"})]
