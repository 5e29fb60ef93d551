"""The placement core imports nothing impure: no web, database, Docker, clock or randomness."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = ("plan.py", "fit.py", "order.py", "model.py", "reasons.py")
ALLOWED = {"__future__", "collections", "collections.abc", "dataclasses", "heapq", "math", "typing", "kqi.scheduler.fit",
           "kqi.scheduler.model", "kqi.scheduler.order", "kqi.resources"}
FORBIDDEN_NAMES = {"now", "utcnow", "today", "time", "perf_counter", "monotonic", "random", "getenv"}


@pytest.mark.parametrize("filename", CORE)
def test_core_module_imports_only_pure_modules(filename):
    tree = ast.parse((Path(__file__).parents[2] / "kqi" / "scheduler" / filename).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported <= ALLOWED, imported - ALLOWED
    calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert not calls & FORBIDDEN_NAMES


def test_the_resources_value_the_core_may_use_is_pure_too():
    tree = ast.parse((Path(__file__).parents[2] / "kqi" / "resources.py").read_text())
    imported = {alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= ALLOWED - {"kqi.scheduler.fit", "kqi.scheduler.model", "kqi.scheduler.order"}, imported


def test_the_product_package_never_imports_dev_only_libraries():
    """numpy and matplotlib are test/benchmark dependencies (requirements-dev.txt): only sim/ uses them."""
    offenders = []
    for path in sorted((Path(__file__).parents[2] / "kqi").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in {"numpy", "matplotlib", "sim"}]
    assert not offenders
