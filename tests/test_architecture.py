"""The tree's shape, read with ``ast``: no import circle between modules or packages, short classes
and functions, and a method (``prompt_core``) and data layer that know nothing of Prefect or MLflow."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("prompt_core", "data", "tasks", "flows")  # each may import only those before it
MAX_CLASS_LINES = 150
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, Path]:
    return {(pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"): f
            for pkg in PACKAGES for f in sorted((ROOT / pkg).glob("*.py"))}


def imported(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, at its top or inside a function, that is one of ours."""
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return found


def graph() -> dict[str, set[str]]:
    ours = modules()
    return {name: {m for m in imported(name, path) if m in ours and m != name} for name, path in ours.items()}


def test_no_module_imports_itself_round_a_circle():
    edges, circles = graph(), []

    def visit(name: str, path: list[str], done: set[str]) -> None:
        if name in path:
            circles.append(path[path.index(name):] + [name])
            return
        if name in done:
            return
        done.add(name)
        for other in sorted(edges[name]):
            visit(other, path + [name], done)

    done: set[str] = set()
    for name in sorted(edges):
        visit(name, [], done)
    assert circles == []


def test_packages_import_only_the_layers_below_them():
    upward = sorted((a, b) for a, deps in graph().items() for b in deps
                    if PACKAGES.index(b.split(".")[0]) > PACKAGES.index(a.split(".")[0]))
    assert upward == []


def test_the_method_and_the_data_layer_import_neither_prefect_nor_mlflow():
    offenders = sorted((name, m) for name, path in modules().items() if name.split(".")[0] in ("prompt_core", "data")
                       for m in imported(name, path) if m.split(".")[0] in ("prefect", "mlflow"))
    assert offenders == []


def test_classes_and_functions_are_short():
    """Outside bench/ and tests/: no class over 150 lines, no function over 60."""
    too_long = []
    for path in sorted(p for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            limit = (MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else
                     MAX_FUNCTION_LINES if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None)
            if limit and node.end_lineno - node.lineno + 1 > limit:
                too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
                                f"({node.end_lineno - node.lineno + 1} lines)")
    assert too_long == []
