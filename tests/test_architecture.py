"""The house rules of the code, checked: imports point one way (the rooms of the README's
"Development" section, lowest first), each third-party library lives behind exactly one module,
and no module, class or function outgrows its budget."""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "spoolq"

# Lower ranks never import higher ones or their equals (cli is the top; nothing but __main__
# imports it). Reading a spool (views) never imports the write side (transitions, recovery).
RANK = {
    "errors": 0, "modes": 0.5, "durations": 0.5, "job": 1, "layout": 2, "ours": 2.5, "direct": 2, "sharedlisting": 2, "shares": 2, "notify": 2,
    "fsio": 3, "stamped": 3.5, "retry": 3, "liveness": 3, "runner": 3.5, "watch": 3.5, "index": 3, "filesystem": 3,
    "locks": 4, "output": 4, "shards": 4, "events": 4,
    "config": 5, "trust": 5, "access": 5.5, "stats": 5, "worklog": 5,
    "store": 6,
    "quarantine": 7, "dropins": 7, "maildir": 7, "owners": 7, "ids": 7, "fired": 7, "pause": 7, "slots": 7, "census": 7.5,
    "views": 8, "takes": 8,
    "finished": 9, "deps": 9,
    "publish": 10, "cancel": 10,
    "transitions": 11,
    "recovery": 12,
    "spool": 13,
    "fsck.report": 14, "fsck.jobs": 15, "fsck.waiting": 15.5, "fsck.housekeeping": 16, "fsck": 17,
    "heartbeat": 14, "attempt": 14, "admission": 14, "rescans": 14, "metrics": 14, "schedules": 14, "retention": 14, "hooks": 14, "duties": 14.5, "queues": 14.5, "worker": 15, "supervisor": 16,
    "web.charts": 16, "web.access": 16, "web": 17,
    "cli.base": 18, "cli.live": 18.5, "cli.complete": 18.5, "cli.enqueue": 19, "cli.reading": 19, "cli.workers": 19, "cli.admin": 19,
    "cli.steering": 19, "cli.observing": 19, "cli.dashboard": 19,
    "cli.scheduling": 19,
    "cli": 20, "__main__": 21, "__init__": 21,
}
THIRD_PARTY_HOME = {"click": "cli", "watchdog": "watch", "flask": "web", "cronsim": "schedules", "filelock": "locks"}
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


def test_every_module_has_a_rank():
    assert set(modules()) == set(RANK)


def test_imports_point_one_way():
    wrong = [f"{name} imports {dep}" for name, deps in modules().items() for dep in deps
             if dep.startswith("spoolq.") and RANK[dep[len("spoolq."):]] >= RANK[name]
             and name not in ("__init__", "__main__")]
    assert wrong == []


def test_reading_a_spool_never_imports_the_write_side():
    deps = modules()["views"]
    assert not {"spoolq.transitions", "spoolq.recovery", "spoolq.spool"} & deps


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
    """An enqueue (what a cron line or a shell loop pays for every job) does not load the other
    commands, the owners and views (only a marker left by a dead creator needs them), recovery or
    the transitions."""
    import subprocess
    import sys

    probe = ("import sys; sys.argv = ['spoolq', '--spool', sys.argv[1], 'enqueue', '--cmd', 'true']\n"
             "from spoolq.cli import main\n"
             "try:\n    main.main(prog_name='spoolq', standalone_mode=False)\n"
             "finally:\n    print(' '.join(sorted(m for m in sys.modules if m.startswith('spoolq'))), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "s")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stderr.split())
    assert "spoolq.publish" in loaded
    assert not loaded & {"spoolq.owners", "spoolq.views", "spoolq.recovery", "spoolq.transitions",
                         "spoolq.cli.admin", "spoolq.cli.reading", "spoolq.cli.workers"}
