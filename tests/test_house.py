"""The house rules, checked from the source: no import cycle inside ``prime_retriever``, no import of
``training`` from the runtime outside ``prime_retriever/cli/``, no oversized module, a small public API.

The import graph is built with ``ast`` (function-level imports included, ``if TYPE_CHECKING:`` blocks
left out, since they never run), so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import prime_retriever

PACKAGE = Path(prime_retriever.__file__).resolve().parent
MAX_LINES = 550
MAX_PUBLIC_NAMES = 25


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path, name: str | None = None) -> set[str]:
    """Every module ``path`` (the module ``name``) imports when it runs: ``a`` and, for ``from a import b``,
    ``a.b`` too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                type_only.update(id(n) for n in ast.walk(sub))
    name = _module_name(path) if name is None else name
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        # a module's edge into its own package's __init__ (the re-exports) is not a dependency we judge
        graph[mod] = {
            t for t in _runtime_imports(path)
            if t in files and t != mod and not (files[t].name == "__init__.py" and mod.startswith(t + "."))
        }
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, todo = work[-1]
            if todo:
                w = todo.pop()
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, sorted(graph[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp: list[str] = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_a_lazy_import_counts_and_a_type_checking_one_does_not(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from x import only_for_types\n"
        "def f():\n    from y import lazy\n"
    )
    imports = _runtime_imports(src, "m")
    assert "y.lazy" in imports and "x" not in imports and "x.only_for_types" not in imports


def test_no_import_cycle_in_the_runtime() -> None:
    assert _cycles(_graph()) == []


def test_the_runtime_imports_training_only_from_its_cli() -> None:
    offenders = sorted(
        _module_name(p) for p in PACKAGE.rglob("*.py")
        if not _module_name(p).startswith("prime_retriever.cli")
        and any(i == "training" or i.startswith("training.") for i in _runtime_imports(p))
    )
    assert offenders == []


def test_no_module_is_oversized() -> None:
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert {f: n for f, n in sizes.items() if n > MAX_LINES} == {}


def test_the_public_api_is_small_and_importable() -> None:
    names = prime_retriever.__all__
    assert len(names) <= MAX_PUBLIC_NAMES
    assert all(hasattr(prime_retriever, n) for n in names)
