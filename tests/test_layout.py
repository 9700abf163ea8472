"""The layout's rules (ARCHITECTURE.md, issue 20), checked on the source: one room per
concern stays small, and route modules stay thin adapters that do not lean on each other."""

from __future__ import annotations

import ast
import subprocess

import pytest
from support import ROOT

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 40


def application_modules() -> list[str]:
    """The service's own Python files (tests, migrations, benchmarks and docs excluded)."""
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    skipped = ("tests/", "migrations/", "bench/", "docs/")
    return [path for path in tracked.stdout.split() if not path.startswith(skipped)]


def parsed(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text(), filename=path)


def is_route_module(path: str) -> bool:
    """A module under routes/ that declares a blueprint or registers routes itself."""
    if not path.startswith("routes/") or path == "routes/__init__.py":
        return False
    source = (ROOT / path).read_text()
    return "APIBlueprint(" in source or ".add_url_rule(" in source or "@app." in source


def test_there_are_modules_to_check():
    modules = application_modules()
    assert "services/chat.py" in modules and "routes/chat.py" in modules
    assert sum(is_route_module(path) for path in modules) >= 6


@pytest.mark.parametrize("path", application_modules())
def test_no_application_module_is_over_450_lines(path):
    assert len((ROOT / path).read_text().splitlines()) <= MAX_MODULE_LINES


@pytest.mark.parametrize("path", application_modules())
def test_no_function_is_over_40_lines(path):
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(parsed(path))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long


@pytest.mark.parametrize("path", [path for path in application_modules() if is_route_module(path)])
def test_no_route_module_imports_another(path):
    route_modules = {p.removesuffix(".py").replace("/", ".") for p in application_modules() if is_route_module(p)}
    imported = set()
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not (imported & route_modules) - {path.removesuffix(".py").replace("/", ".")}
