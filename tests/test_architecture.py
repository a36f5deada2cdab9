"""The house rules of the code, checked: imports point one way, and each third-party library
lives behind exactly one module."""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "spoolq"

# Lower ranks never import higher ones (cli is the top; nothing but __main__ imports it).
RANK = {
    "errors": 0, "job": 1, "layout": 2,
    "fsio": 3, "retry": 3, "liveness": 3, "runner": 3, "watch": 3, "index": 3, "config": 4,
    "output": 4,
    "spool": 5, "fsck": 6, "worker": 6, "supervisor": 7, "cli": 8, "__main__": 9, "__init__": 9,
}
THIRD_PARTY_HOME = {"click": "cli", "watchdog": "watch", "filelock": "config"}


def imports(module: pathlib.Path) -> set[str]:
    """Every module it imports, at the top or inside a function: 'spoolq.x' or a top-level name."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .x import y
                if node.module:
                    found.add(f"spoolq.{node.module}")
                else:
                    found.update(f"spoolq.{alias.name}" for alias in node.names)
            elif node.module:
                found.add(node.module.split(".")[0])
    return found


def modules() -> dict[str, set[str]]:
    return {path.stem: imports(path) for path in sorted(PACKAGE.glob("*.py"))}


def test_every_module_has_a_rank():
    assert set(modules()) == set(RANK)


def test_imports_point_one_way():
    wrong = [f"{name} imports {dep}" for name, deps in modules().items() for dep in deps
             if dep.startswith("spoolq.") and RANK[dep.split(".")[1]] >= RANK[name]
             and name not in ("__init__", "__main__")]
    assert wrong == []


def test_each_third_party_library_has_one_home():
    for library, home in THIRD_PARTY_HOME.items():
        users = sorted(name for name, deps in modules().items() if library in deps)
        assert users == [home], f"{library} is imported by {users}"


def test_every_module_says_what_it_owns():
    for path in PACKAGE.glob("*.py"):
        if path.stem != "__main__":
            assert ast.get_docstring(ast.parse(path.read_text())), f"{path.name} has no docstring"
