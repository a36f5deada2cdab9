"""A Python developer's day with the API (docs/python.md): what a program that hands jobs in
from a web app meets, from type hints to the errors it catches by type."""

from __future__ import annotations

import ast
import configparser
import os

import pytest

import spoolq
from spools import REPO
from spoolq import Spool


# ---- type hints -------------------------------------------------------------------------------

def _bound_under_type_checking(path: str) -> set[str]:
    """The names a module binds inside its `if TYPE_CHECKING:` blocks (what mypy sees)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for inner in node.body:
                if isinstance(inner, ast.ImportFrom):
                    names |= {alias.asname or alias.name for alias in inner.names}
                elif isinstance(inner, ast.ClassDef):
                    names.add(inner.name)
                elif isinstance(inner, ast.AnnAssign) and isinstance(inner.target, ast.Name):
                    names.add(inner.target.id)
    return names


def test_a_type_checker_sees_every_public_name_as_what_it_is():
    """`from spoolq import Spool` went through the package's lazy __getattr__, so mypy --strict
    typed every name as `object` ("Spool is not valid as a type", "object not callable") and,
    with no py.typed marker, skipped the package altogether."""
    package = os.path.join(REPO, "spoolq")
    assert os.path.exists(os.path.join(package, "py.typed"))
    setup = configparser.ConfigParser()
    setup.read(os.path.join(REPO, "setup.cfg"))
    assert "py.typed" in setup["options.package_data"]["spoolq"]  # shipped in the wheel, not only here
    assert set(spoolq.__all__) - {"__version__"} <= _bound_under_type_checking(os.path.join(package, "__init__.py"))
    states = os.path.join(package, "format", "states.py")
    assert {"State", "FINISHED", "NOT_STARTED"} <= _bound_under_type_checking(states)
    for node in ast.walk(ast.parse(open(states).read())):
        if isinstance(node, ast.ClassDef) and node.name == "State":  # the same members as the made one
            members = [stmt.targets[0].id.lower() for stmt in node.body if isinstance(stmt, ast.Assign)]
            assert members == [state.value for state in spoolq.State]
