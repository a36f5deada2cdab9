"""Every shell recipe of the documentation runs, as written, against a scratch spool: none may
hang, fail, or let a file name reach a shell.

What is run:

- every fenced block whose language is ``sh`` in README.md and in every ``docs/**/*.md`` (files
  added there later are picked up), with ``/bin/sh -e`` in a scratch directory, and must exit 0
  (or what its directive says) within RECIPE_TIMEOUT seconds;
- every fenced block whose language is ``python``, with the tested interpreter (``python -c``),
  in the same world, and must exit 0 within RECIPE_TIMEOUT seconds;
- every line of a ``crontab`` block, the way cron runs it: its command (after the five time
  fields or an ``@`` word, ``\\%`` read as ``%``) with ``/bin/sh -c``, cron's ``PATH``
  (/usr/bin:/bin) and no ``SPOOLQ_DIR``, twice, and both runs must exit 0 (a cron entry must be
  idempotent, and run without a venv on its PATH). The spool a line names by ``--spool`` exists
  (the operator's).

A block that is not meant to run (output, a unit file, a diagram, a line for another shell)
takes another fence language: ``text``, ``console``, ``ini``, ``crontab``.

The world a block sees:

- ``SPOOLQ_DIR`` is an initialised scratch spool; ``HOME`` a scratch directory; the working
  directory another;
- an absolute path under one of MAPPED_ROOTS (``/var``, ``/srv``, ``/data``, ``/incoming`` ...)
  is taken under the scratch root, as written (the parent directory of each exists); a crontab
  line whose program is such a path ending in ``/spoolq`` finds the tested spoolq there;
- ``PATH`` starts with stand-ins for the programs recipes name (STAND_INS: ``ffmpeg``,
  ``backup.sh``, ``sudo``, ``systemctl`` ...), each of which records its arguments and exits 0,
  then the tested spoolq, then the system's;
- detached workers a block leaves running are stopped after it.

A block may carry one directive, a comment line ``# recipe-test: KEY=VALUE ...``:

- ``files=GLOB[,GLOB]``: before the block, in the (mapped) directory of each glob, a file with a
  plain name and one whose name holds quotes, spaces, a newline, ``$(...)`` and backquotes, with
  the glob's suffix. After it, once the spool has no job left to run, each file must have reached
  a stand-in whole, as one argument, and no command hidden in a name may have run;
- ``flaky=NAME[,NAME]``: those stand-ins fail the first attempt of a job (``SPOOLQ_ATTEMPT`` 1),
  so the block's jobs are retried;
- ``stand-ins=NAME[,NAME]``: more stand-ins than STAND_INS;
- ``exit=N``: the status the block must end with.
"""

from __future__ import annotations

import glob
import os
import pathlib
import re
import signal
import subprocess
import sys

import pytest

from conftest import required_tool
import spools

REPO = pathlib.Path(spools.REPO)
RECIPE_TIMEOUT = 120
MAPPED_ROOTS = ("var", "srv", "data", "incoming", "opt", "mnt", "backups", "src", "etc", "home", "usr/local")
STAND_INS = ("ffmpeg", "backup.sh", "import-csv", "render.sh", "assemble.sh", "publish.sh", "pg_dump", "make",
             "curl", "mail", "node_exporter", "sudo", "systemctl", "journalctl")
HOSTILE = "a'; touch PWNED; echo ' $(touch PWNED) `touch PWNED` \"; touch PWNED; \"\nsecond line "
CRON_PATH = "/usr/bin:/bin"
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
DIRECTIVE = re.compile(r"^\s*#\s*recipe-test:(.*)$", re.M)
MAPPED = re.compile(r"(?<![\w./~$-])/(?:" + "|".join(MAPPED_ROOTS) + r")(?=/|\b)(?:/[\w.@%+-]*)*")

STAND_IN = r"""#!/bin/sh
# A stand-in for {name}: its arguments, NUL-separated, one file per call.
printf '%s\0' "$@" > "$(mktemp "$RECIPE_CALLS/{name}.XXXXXX")"
case " $RECIPE_FLAKY " in *" {name} "*) [ "${{SPOOLQ_ATTEMPT:-}}" = 1 ] && exit 3;; esac
exit 0
"""


def documents() -> list[pathlib.Path]:
    return [REPO / "README.md", *sorted(REPO.glob("docs/**/*.md"))]


def blocks(path: pathlib.Path) -> list[tuple[int, str, str]]:
    """(line, language, text) of every fenced block of a Markdown file."""
    found, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, language, start = len(m.group(1)), m.group(2), i + 1
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            i += 1
        found.append((start, language, "\n".join(line[indent:] for line in lines[start:i]) + "\n"))
        i += 1
    return found


def recipes(language: str) -> list:
    return [pytest.param(text, id=f"{path.relative_to(REPO)}:{line}")
            for path in documents() for line, lang, text in blocks(path) if lang == language]


def directive(text: str) -> dict[str, str]:
    found = DIRECTIVE.findall(text)
    assert len(found) <= 1, "one `# recipe-test:` line a block"
    return dict(word.split("=", 1) for word in found[0].split()) if found else {}


def listed(value: str | None) -> list[str]:
    return [v for v in (value or "").split(",") if v]


class Scratch:
    """The world a recipe runs in (see the module docstring)."""

    def __init__(self, root: pathlib.Path, settings: dict[str, str]):
        self.root = root
        self.calls = root / "calls"
        self.bin = root / "bin"
        self.work = root / "work"
        self.spool = root / "spool"
        for d in (self.calls, self.bin, self.work, root / "home"):
            d.mkdir(parents=True)
        for name in (*STAND_INS, *listed(settings.get("stand-ins"))):
            write_executable(self.bin / name, STAND_IN.format(name=name))
        self.spoolq = os.path.join(os.path.dirname(sys.executable), "spoolq")
        assert os.access(self.spoolq, os.X_OK), f"no spoolq beside {sys.executable}"
        self.env = {"PATH": f"{self.bin}:{os.path.dirname(self.spoolq)}:{os.environ['PATH']}",
                    "HOME": str(root / "home"), "LANG": "C.UTF-8", "SPOOLQ_DIR": str(self.spool),
                    "RECIPE_CALLS": str(self.calls), "RECIPE_FLAKY": " ".join(listed(settings.get("flaky")))}
        self.inputs = [self.make_input(pattern) for pattern in listed(settings.get("files"))]
        subprocess.run([self.spoolq, "init"], env=self.env, check=True, capture_output=True, timeout=60)

    def map(self, text: str) -> str:
        """The block with its absolute paths under the scratch root, their parents made."""
        def moved(m: re.Match) -> str:
            path = f"{self.root}{m.group(0)}"
            os.makedirs(os.path.dirname(path.rstrip("/")), exist_ok=True)
            return path
        return MAPPED.sub(moved, text)

    def make_input(self, pattern: str) -> list[str]:
        directory, name = os.path.split(self.map(pattern))
        os.makedirs(directory, exist_ok=True)
        suffix = name[name.rfind("*") + 1:]
        made = [os.path.join(directory, "plain" + suffix), os.path.join(directory, HOSTILE + suffix)]
        for path in made:
            pathlib.Path(path).write_bytes(b"x\n")
        return made

    def run(self, argv: list[str], env: dict[str, str], timeout: float = RECIPE_TIMEOUT) -> tuple[int, str]:
        """Its status and output; a hang fails the test, saying what it printed."""
        proc = subprocess.Popen(argv, cwd=self.work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"the recipe hung: still running after {timeout}s; its output:\n{out}")
        return proc.returncode, out

    def spools(self) -> list[str]:
        return sorted(os.path.dirname(p) for p in glob.glob(f"{self.root}/**/workers", recursive=True)
                      if os.path.isdir(os.path.join(os.path.dirname(p), "pending")))

    def spoolq_at(self, spool: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        return subprocess.run([self.spoolq, "--spool", spool, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def drain(self) -> None:
        """Every spool the block used runs what it holds to the end (the workers it started)."""
        for spool in self.spools():
            if self.spoolq_at(spool, "worker", "list", "--json").stdout.strip() not in ("", "[]"):
                r = self.spoolq_at(spool, "wait", "--timeout", "60")
                assert r.returncode in (0, 1), f"{spool}: jobs left unfinished: {r.stderr}"

    def stop_workers(self) -> None:
        for spool in self.spools():
            self.spoolq_at(spool, "worker", "stop", "--now", "--wait", "--timeout", "30")

    def arguments(self) -> list[str]:
        """Every argument any stand-in was given."""
        return [arg for call in self.calls.iterdir() for arg in call.read_text().split("\0")]


def write_executable(path: pathlib.Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def tools_needed(text: str) -> None:
    """The one tool recipes use that a minimal system may lack: skipped without it, failed in CI."""
    if re.search(r"\bjq\b", text):
        required_tool("jq", "SPOOLQ_REQUIRE_JQ", "jq")


@pytest.mark.parametrize("text", recipes("sh"))
@pytest.mark.slow
def test_shell_recipe_runs(tmp_path, text):
    tools_needed(text)
    settings = directive(text)
    scratch = Scratch(tmp_path, settings)
    try:
        status, out = scratch.run(["/bin/sh", "-ec", scratch.map(text)], scratch.env)
        assert status == int(settings.get("exit", 0)), f"exit {status}; its output:\n{out}"
        if scratch.inputs:
            scratch.drain()
    finally:
        scratch.stop_workers()
    pwned = [p for p in glob.glob(f"{tmp_path}/**/PWNED*", recursive=True)]
    assert not pwned, f"a command hidden in a file name ran: {pwned}"
    given = scratch.arguments()
    for made in scratch.inputs:
        for path in made:
            assert path in given, f"{path!r} never reached a command whole; the stand-ins got {given!r}"


@pytest.mark.parametrize("text", recipes("python"))
@pytest.mark.slow
def test_python_recipe_runs(tmp_path, text):
    scratch = Scratch(tmp_path, directive(text))
    try:
        status, out = scratch.run([sys.executable, "-c", scratch.map(text)], scratch.env)
        assert status == 0, f"exit {status}; its output:\n{out}"
    finally:
        scratch.stop_workers()


@pytest.mark.parametrize("text", recipes("crontab"))
def test_crontab_line_is_idempotent_on_crons_path(tmp_path, text):
    tools_needed(text)
    scratch = Scratch(tmp_path, directive(text))
    env = {k: v for k, v in scratch.env.items() if k != "SPOOLQ_DIR"} | {"PATH": CRON_PATH, "SHELL": "/bin/sh"}
    lines = [line for line in scratch.map(text).splitlines()
             if line.strip() and not line.lstrip().startswith("#") and not re.match(r"\s*\w+=", line)]
    assert lines, "a crontab block with no entry"
    for line in lines:
        command = cron_command(line)
        program = command.split()[0]
        for spool in re.findall(r"--spool[= ](\S+)", command):
            assert scratch.spoolq_at(spool, "init").returncode == 0
        if program.startswith(str(tmp_path)) and program.endswith("/spoolq"):
            os.makedirs(os.path.dirname(program), exist_ok=True)
            os.symlink(scratch.spoolq, program)
        for run in (1, 2):
            status, out = scratch.run(["/bin/sh", "-c", command], env)
            assert status == 0, f"run {run} of {command!r} exited {status}: {out}"


def cron_command(line: str) -> str:
    """The command of a crontab line, as cron hands it to the shell (`\\%` is a `%`; a bare `%`
    would end the command, which no recipe means)."""
    fields = line.split(None, 1 if line.startswith("@") else 5)
    command = fields[-1]
    assert not re.search(r"(?<!\\)%", command), f"an unescaped % in a crontab line: {line!r}"
    return command.replace("\\%", "%")


def test_documents_have_recipes():
    """The extraction itself: the README's recipes are found (a changed fence would silence them)."""
    assert len(recipes("sh")) >= 5 and recipes("crontab") and len(recipes("python")) >= 2
