"""No import circle among facedeblur's packages (issue #18).

The imports are read from the source of the installed package (an AST walk, nothing is imported), so the test sees
what runs and what does not run alike. What counts:

* **Every import statement**: at module level, inside functions (a deferred import that closes a circle is still a
  circle: the two parts cannot be understood or changed apart), and under ``if TYPE_CHECKING:``.
* ``from P import name`` is an import of the module ``P.name`` when that is a module, else of ``P``.
* Importing ``facedeblur.x.y`` runs ``facedeblur/__init__.py`` and ``facedeblur/x/__init__.py`` first; those
  implicit parent imports are not counted (everything would depend on the top-level package otherwise).

Two graphs must be free of cycles:

1. **Packages**: the top-level ``facedeblur`` package (its ``__init__``) and each of its direct children
   (``facedeblur.models``, ``facedeblur.weights``, ``facedeblur.cards``, ``facedeblur.cli``, ...); a module belongs
   to the child it is under. An edge A -> B is any import, from a module of A, of a module of B.
2. **Modules**, leaving out package ``__init__`` files: an ``__init__`` re-exports its package's modules and loads
   its plugin files (``facedeblur.models._ensure_loaded``), so edges to and from it would make every package a
   circle; they do count in graph 1. This graph catches circles inside one package (e.g. two benchmark modules
   sharing private helpers).
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import facedeblur

ROOT = Path(facedeblur.__file__).resolve().parent


def modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``), for every ``.py`` file under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def imports_of(name: str, path: Path, is_pkg: bool, known: dict[str, tuple[Path, bool]]) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement of the module, resolved against the ``known`` modules;
    imports of other distributions are dropped."""
    top = name.split(".")[0]
    package = name if is_pkg else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []

    def resolve(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for target in targets:
            if target == top or target.startswith(top + "."):
                resolved = resolve(target)
                if resolved is not None and resolved != name:
                    found.append((resolved, node.lineno))
    return found


def graphs(root: Path) -> tuple[dict[str, dict[str, list[str]]], dict[str, dict[str, list[str]]]]:
    """(package graph, module graph without ``__init__`` files); each edge carries the ``file:line`` of its imports."""
    known = modules(root)
    top = root.name

    def package_of(mod: str) -> str:
        parts = mod.split(".")
        return ".".join(parts[:2]) if len(parts) > 1 else top

    pkg: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    mod: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name, (path, is_pkg) in known.items():
        for target, line in imports_of(name, path, is_pkg, known):
            where = f"{path.relative_to(root.parent)}:{line} ({name} -> {target})"
            a, b = package_of(name), package_of(target)
            if a != b:
                pkg[a][b].append(where)
            if not is_pkg and not known[target][1]:
                mod[name][target].append(where)
    return pkg, mod


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def describe(graph: dict[str, dict[str, list[str]]], comps: list[list[str]]) -> str:
    lines = []
    for comp in comps:
        lines.append("circle: " + " <-> ".join(comp))
        for a in comp:
            for b, where in graph.get(a, {}).items():
                if b in comp:
                    lines += [f"    {w}" for w in where[:3]]
    return "\n".join(lines)


def test_no_import_circle_among_packages() -> None:
    pkg, _ = graphs(ROOT)
    assert {"facedeblur.models", "facedeblur.weights", "facedeblur.restore", "facedeblur.faces"} <= set(pkg)
    comps = cycles(pkg)
    assert not comps, describe(pkg, comps)


def test_no_import_circle_among_modules() -> None:
    _, mod = graphs(ROOT)
    comps = cycles(mod)
    assert not comps, describe(mod, comps)


def test_the_three_circles_of_issue_18_stay_broken() -> None:
    """The layering that broke them: the weights code reads the registry (never the reverse), the Deblurrer calls
    the face pipeline (which takes a restore callable and never imports facedeblur.restore), and the benchmark report
    and runner share helpers through benchmark.common."""
    pkg, mod = graphs(ROOT)
    assert "facedeblur.models" in pkg["facedeblur.weights"] and "facedeblur.weights" not in pkg["facedeblur.models"]
    assert "facedeblur.faces" in pkg["facedeblur.restore"] and "facedeblur.restore" not in pkg["facedeblur.faces"]
    assert "facedeblur.benchmark.report" in mod["facedeblur.benchmark.runner"]
    assert "facedeblur.benchmark.runner" not in mod["facedeblur.benchmark.report"]
    for low in ("facedeblur.cards", "facedeblur.errors", "facedeblur._version", "facedeblur.hubfiles"):
        assert set(pkg.get(low, {})) <= {"facedeblur.errors"}, (low, dict(pkg[low]))


def test_the_checker_finds_circles(tmp_path: Path) -> None:
    """The walk sees module-level, function-level, relative and TYPE_CHECKING imports (so the tests above can fail)."""
    root = tmp_path / "pkgx"
    files = {
        "__init__.py": "from .a import thing\n",
        "a/__init__.py": "",
        "a/one.py": "def f():\n    from ..b import two  # deferred\n",
        "b/__init__.py": "",
        "b/two.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkgx.c.three import X\n",
        "c/__init__.py": "",
        "c/three.py": "import pkgx.a.one\nimport os\n",
        "d.py": "from . import a\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    pkg, mod = graphs(root)
    assert cycles(pkg) == [["pkgx.a", "pkgx.b", "pkgx.c"]]
    assert cycles(mod) == [["pkgx.a.one", "pkgx.b.two", "pkgx.c.three"]]
    assert "pkgx.a" in pkg["pkgx.d"] and "pkgx.a" in pkg["pkgx"]
    (root / "c/three.py").write_text("import os\n")
    pkg, mod = graphs(root)
    assert cycles(pkg) == [] and cycles(mod) == []
