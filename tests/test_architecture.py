"""The house rules of the code, checked: imports point one way (the rooms of the README's
"Development" section, lowest first), each third-party library lives behind exactly one module,
and no module, class or function outgrows its budget."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "spoolq"

# The packages that are the layers, lowest first: a package imports only packages of a lower rank
# (cli is the top; nothing but __main__ imports it). Inside a package, modules import each other
# freely, but never in a circle. Reading a spool never imports the write side.
RANK = {
    "format": 0, "system": 1, "store": 2, "reading": 3, "moves": 4, "spool": 5,
    "pending": 6, "fsck": 6, "running": 7, "web": 8, "cli": 9, "__main__": 10, "__init__": 10,
}
THIRD_PARTY_HOME = {"click": "cli", "watchdog": "system.watch", "flask": "web", "cronsim": "running.cron",
                    "filelock": "system.locks"}
BUDGET = {"module": 400, "class": 300, "function": 50}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: pathlib.Path) -> set[str]:
    """Every module it imports, at the top or inside a function: 'spoolq.x' or a top-level name."""
    package = list(path.relative_to(PACKAGE).parent.parts)  # where a relative import starts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from ..x import y
                base = package[: len(package) - (node.level - 1)]
                if node.module:
                    found.add("spoolq." + ".".join([*base, node.module]))
                else:
                    found.update("spoolq." + ".".join([*base, alias.name]) for alias in node.names)
            elif node.module:
                found.add(node.module.split(".")[0])
    return found


def modules() -> dict[str, set[str]]:
    return {module_name(path): imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def package_of(module: str) -> str:
    return module.split(".")[0]


def test_every_package_has_a_rank():
    assert {package_of(m) for m in modules()} == set(RANK)


def test_every_package_says_what_it_owns_and_may_import():
    for name in RANK:
        init = PACKAGE / name / "__init__.py"
        if init.exists():
            doc = ast.get_docstring(ast.parse(init.read_text())) or ""
            assert len(doc.split()) > 15, f"{name}/__init__.py does not say what it owns"


def test_no_module_imports_in_a_circle():
    graph = {name: {d[len("spoolq."):] for d in deps if d.startswith("spoolq.")} for name, deps in modules().items()}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join([*path, name])
        if name in done:
            return
        for dep in graph.get(name, ()):
            if dep in graph:
                visit(dep, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_imports_point_one_way():
    wrong = [f"{name} imports {dep}" for name, deps in modules().items() for dep in deps
             if dep.startswith("spoolq.") and package_of(dep[len("spoolq."):]) != package_of(name)
             and RANK[package_of(dep[len("spoolq."):])] >= RANK[package_of(name)]
             and name not in ("__init__", "__main__")]
    assert wrong == []


def test_reading_a_spool_never_imports_the_write_side():
    deps = modules()["reading.views"] | modules()["reading.counts"] | modules()["reading.stats"]
    assert not {"spoolq.moves.transitions", "spoolq.moves.recovery", "spoolq.spool"} & deps


@pytest.mark.slow
def test_each_third_party_library_has_one_home():
    for library, home in THIRD_PARTY_HOME.items():
        users = sorted(name for name, deps in modules().items() if library in deps)
        assert users and all(u == home or u.startswith(home + ".") for u in users), \
            f"{library} is imported by {users}"


def test_every_module_says_what_it_owns():
    for path in PACKAGE.rglob("*.py"):
        if path.stem != "__main__":
            assert ast.get_docstring(ast.parse(path.read_text())), f"{path.name} has no docstring"


def test_modules_classes_and_functions_keep_to_their_budgets():
    over = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > BUDGET["module"]:
            over.append(f"{module_name(path)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            kind = ("class" if isinstance(node, ast.ClassDef) else
                    "function" if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None)
            if kind:
                size = node.end_lineno - node.lineno + 1
                if size > BUDGET[kind]:
                    over.append(f"{module_name(path)}.{node.name}: {kind} of {size} lines")
    assert over == []


def test_every_command_is_found_where_the_lazy_group_looks():
    """Commands load on first use: the map must name every command's module, and only those."""
    import importlib

    from spoolq.cli import base

    for module in set(base.COMMAND_MODULES.values()):
        importlib.import_module(f"spoolq.cli.{module}")
    defined = {name for name, command in base.main.commands.items()}
    assert defined == set(base.COMMAND_MODULES) | {"init"}
    for name, module in base.COMMAND_MODULES.items():
        assert base.main.commands[name].callback.__module__ == f"spoolq.cli.{module}"


def test_one_enqueue_loads_only_what_it_needs(tmp_path):
    """An enqueue (what a cron line or a shell loop pays for every job) does not load click, the
    commands, the owners and views (only a marker left by a dead creator needs them), recovery or
    the transitions; one that click must parse loads the enqueue command and not the others."""
    import subprocess
    import sys

    probe = ("import sys; sys.argv = ['spoolq', '--spool', *sys.argv[1:]]\n"
             "from spoolq.cli import run\n"
             "try:\n    run()\n"
             "finally:\n    print(' '.join(sorted(m for m in sys.modules if m.startswith(('spoolq', 'click')))),"
             " file=sys.stderr)\n")
    never = {"spoolq.store.owners", "spoolq.reading.views", "spoolq.moves.recovery", "spoolq.moves.transitions",
             "spoolq.cli.admin", "spoolq.cli.reading", "spoolq.cli.workers"}
    spool = str(tmp_path / "s")
    for args, plain in ((["enqueue", "--cmd", "true"], False), (["enqueue", "--cmd", "true"], True),
                        (["enqueue", "--cmd", "true", "--queue", "q", "--priority", "3", "--id", "x1"], True),
                        (["enqueue", "--cmd", "true", "--delay", "10"], False)):
        done = subprocess.run([sys.executable, "-c", probe, spool, *args], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        loaded = set(done.stderr.split()[-1:] and done.stderr.splitlines()[-1].split())
        assert "spoolq.moves.enqueue" in loaded and not loaded & never, args
        assert ("click" not in loaded) == plain, args  # the first creates the spool: click says so


# A state is named as State.X (format/states.py), never spelled out: these are the words that
# happen to be a state's name and mean something else.
NOT_A_STATE = {("cli.live", "done")}  # the progress line's "done" once nothing is left


def test_no_module_spells_a_state_out():
    from spoolq.format.states import STATES

    spelled = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        tree = ast.parse(path.read_text())
        docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        spelled += [f"{name}:{node.lineno} {node.value!r}" for node in ast.walk(tree)
                    if isinstance(node, ast.Constant) and node.value in STATES and id(node) not in docstrings
                    and name != "format.states" and (name, node.value) not in NOT_A_STATE]
    assert spelled == []


# Every move of a job into done/ or dead/ is moves.finishing's, which judges the jobs waiting for
# it (Dependencies.wake_waiters_of): the one place a finish cannot forget to. dependencies.py
# defines the waking, and its sweep of after/ (recovery's catch-up after a crash) calls it.
# Quarantine's rename into dead/+<qid> (store/quarantine.py, through Quarantine.file) moves no job.
FINISHING = "moves.finishing"
WAKING = {"moves.finishing", "moves.dependencies"}
RENAMES = {"move", "move_no_replace", "rename", "replace", "renames", "move_in"}


def _into_a_finished_dir(call: ast.Call) -> bool:
    """Does a rename's argument name done/ or dead/, or a state directory chosen at run time
    (layout.dir(moving.state): it may be either)?"""
    for node in ast.walk(ast.Module(body=[ast.Expr(arg) for arg in call.args], type_ignores=[])):
        if isinstance(node, ast.Attribute) and node.attr in ("done", "dead", "DONE", "DEAD", "FINISHED") or \
                isinstance(node, ast.Name) and node.id == "FINISHED":
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "dir" \
                and node.args:
            arg = node.args[0]
            fixed = isinstance(arg, ast.Constant) and arg.value not in ("done", "dead") or \
                isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name) and arg.value.id == "State"
            if not fixed:
                return True
    return False


def test_every_finish_goes_through_finishing():
    renames, wakes = {}, []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            called = getattr(node.func, "attr", getattr(node.func, "id", None)) if isinstance(node, ast.Call) else None
            if called in RENAMES and _into_a_finished_dir(node):
                renames.setdefault(name, []).append(node.lineno)
            if isinstance(node, ast.Attribute) and node.attr == "wake_waiters_of" and name not in WAKING:
                wakes.append(f"{name}:{node.lineno}")
    assert renames.pop(FINISHING, None), "the check no longer sees finishing.py's own renames"
    assert renames == {}, f"renames into done/ or dead/ outside {FINISHING}"
    assert wakes == [], f"waiters woken outside {FINISHING}"


def test_contributing_names_the_file_of_every_test_subject():
    """CONTRIBUTING.md's table says which file holds which subject: a new test file is named there."""
    text = (PACKAGE.parent / "CONTRIBUTING.md").read_text()
    files = sorted(p.name for p in (PACKAGE.parent / "tests").glob("test_*.py"))
    assert [name for name in files if f"`{name}`" not in text] == []
