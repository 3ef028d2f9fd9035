"""The import rules that lint-imports cannot see: imports by name at run time.

lint-imports (``make lint``, contracts in pyproject.toml) checks the static imports:
``skiff.api`` < ``skiff.client`` < ``services.*``, no service imports another, ``skiff``
never imports ``services``. An ``importlib.import_module("services....")`` would slip
past it, so the source is read here: ``skiff`` imports nothing by name, and a service
imports by name only its own modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DYNAMIC = {"import_module", "__import__", "spec_from_file_location", "spec_from_loader"}


def _sources(package: str) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted((REPO / package).rglob("*.py")):
        if not path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            yield path, ast.parse(path.read_text(), str(path))


def dynamic_imports(tree: ast.Module) -> list[ast.Call]:
    """The calls that import a module by name (pure)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in DYNAMIC:
                found.append(node)
    return found


def foreign_module_names(tree: ast.Module, service: str) -> list[str]:
    """String constants naming a module of another service (pure): what a by-name import
    in ``services.<service>`` would be reaching for."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            parts = node.value.split(":")[0].split(".")
            if len(parts) >= 2 and parts[0] == "services" and parts[1] != service:
                names.append(node.value)
    return names


def test_skiff_imports_nothing_by_name():
    found = [f"{path.relative_to(REPO)}:{call.lineno}"
             for path, tree in _sources("skiff") for call in dynamic_imports(tree)]
    assert found == [], "skiff imports by name (lint-imports cannot check these): " + \
        ", ".join(found)


def test_a_service_imports_by_name_only_its_own_modules():
    wrong = []
    for path, tree in _sources("services"):
        if not dynamic_imports(tree):
            continue
        service = path.relative_to(REPO / "services").parts[0]
        wrong += [f"{path.relative_to(REPO)}: {name}"
                  for name in foreign_module_names(tree, service)]
    assert wrong == [], "a service imports another by name: " + ", ".join(wrong)


def test_the_checks_see_what_they_look_for():
    tree = ast.parse("import importlib\n"
                     "m = importlib.import_module('services.kubelet.labels')\n"
                     "n = __import__('json')\n"
                     "TABLE = {'x': 'services.apiserver.cacher:Cacher', 'y': 'services.dns'}\n")
    assert [c.lineno for c in dynamic_imports(tree)] == [2, 3]
    assert foreign_module_names(tree, "dns") == ["services.kubelet.labels",
                                                 "services.apiserver.cacher:Cacher"]
