"""A plain command runs without a shell, and nobody can tell: every command line, run directly
where spoolq would, prints, exits and fails exactly as `/bin/sh -c` makes it."""

import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import examples
from spoolq.system import direct_exec, runner

pytestmark = pytest.mark.skipif(not direct_exec.shell_is_dash(), reason="the direct path is held to dash's behaviour")


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """A cwd holding a script without `#!`, a non-executable file, a script whose interpreter is
    missing, and a PATH whose first entry shadows nothing and holds a non-executable `cat`."""
    root = tmp_path_factory.mktemp("direct")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    work = root / "work"
    work.mkdir()

    def make(path, text, mode):
        path.write_text(text)
        path.chmod(mode)

    make(work / "noshebang", "echo from a script without a shebang: $#\n", 0o755)
    make(work / "noexec", "echo never\n", 0o644)
    make(work / "badinterp", "#!/nonexistent/interpreter\necho never\n", 0o755)
    make(bin_dir / "cat", "#!/bin/sh\necho never\n", 0o644)  # found first, not executable: skipped
    make(bin_dir / "args", "#!/bin/sh\nprintf '<%s>' \"$@\"; echo; echo \"pwd=$PWD\"\n", 0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PWD": "/stale/elsewhere", "A-B": "not a name",
           "HOME": str(root), "LC_ALL": "C", "SPOOLQ_JOB_ID": "x1"}
    return work, env


def run(command: str, cwd, env, *, shell: bool) -> tuple[int, list[str]]:
    read_end, write_end = os.pipe()
    try:
        pid = runner.spawn(command, cwd=str(cwd), env=env, out_fd=write_end, shell=shell)
    finally:
        os.close(write_end)
    chunks = []
    while data := os.read(read_end, 65536):
        chunks.append(data)
    os.close(read_end)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    # Sorted lines: dash hands on the environment in its own order, which no program may rely on.
    return code, sorted(b"".join(chunks).decode("utf-8", "replace").splitlines())


FIRST = ["true", "false", "echo", "printf", "env", "ls", "cat", "args", "nosuch", "./noshebang",
         "./noexec", "./badinterp", "/bin/echo", "kill", "pwd", "test", "cd", "exit", "A=1", "~",
         "[", "!", "{", "if", "command", "basename", "printenv", "sleep", "uname", "./", "/"]
REST = ["a", "b c", "--help", "--version", "-n", "-e", "x\\ty", "$HOME", "${PWD}", "'q q'", '"d"',
        "*", "?", "[ab]", "~/x", "a~b", "a=b", "#c", "a#b", ";", "||", "&&", ">/dev/null",
        "2>&1", "<", "(x)", "{x}", "`true`", "$(true)", "\\", "é", "a\xa0b", "\r", "0", "PWD",
        "SPOOLQ_JOB_ID", "A-B", "%", "^", "-", "--", "/", "."]
# No `|` or `&`: two processes writing at once interleave their messages differently each run
# (dash writes one in several pieces); `words()` is shown to leave both to the shell below.
SEPARATORS = [" ", "  ", "\t", " \t "]


@st.composite
def command_lines(draw):
    words = [draw(st.sampled_from(FIRST))] + draw(st.lists(st.sampled_from(REST), max_size=4))
    seps = draw(st.lists(st.sampled_from(SEPARATORS), min_size=len(words) + 1, max_size=len(words) + 1))
    line = seps[0] if draw(st.booleans()) else ""
    for word, sep in zip(words, seps[1:]):
        line += word + sep
    return line if draw(st.booleans()) else line.rstrip(" \t")


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command_lines())
@pytest.mark.slow
def test_a_command_behaves_as_under_sh_c(rig, command):
    work, env = rig
    assert run(command, work, env, shell=False) == run(command, work, env, shell=True)


@pytest.mark.parametrize("command, argv", [
    ("true", ["true"]),
    ("sleep 0", ["sleep", "0"]),
    ("  ls\t-l   /tmp ", ["ls", "-l", "/tmp"]),
    ("/bin/echo a,b c=d", ["/bin/echo", "a,b", "c=d"]),
    ("grep -c x% file^", ["grep", "-c", "x%", "file^"]),
    ("echo hi", None),            # a builtin: dash's echo is not /bin/echo
    ("true --version", None),     # coreutils' true would print its version
    ("A=1 env", None),            # an assignment
    ("ls ~", None),               # a tilde expansion
    ("ls a~b", ["ls", "a~b"]),    # not at a word's start: literal
    ("ls *.py", None),
    ("echo $HOME", None),
    ("a\nb", None),
    ("a\rb", None),
    ("ls a\xa0b", ["ls", "a\xa0b"]),  # dash splits on space and tab only
    ("if", None),
    ("exec ls", None),
    ("cmd # note", None),
    ("a | b", None),
    ("a & b", None),
])
def test_which_commands_run_directly(command, argv):
    assert direct_exec.words(command) == argv


def test_a_plain_command_is_spawned_without_the_shell():
    env = {"PATH": "/usr/bin:/bin"}
    out = os.open(os.devnull, os.O_WRONLY)
    try:
        pid = runner._spawn_direct("sleep 0", env, out)
        assert pid is not None and os.waitpid(pid, 0)[1] == 0
        assert runner._spawn_direct("./missing", env, out) is None  # the shell says "not found"
        assert runner._spawn_direct("sleep 0 | cat", env, out) is None
    finally:
        os.close(out)


def test_shell_true_never_tries_the_direct_path(tmp_path, monkeypatch):
    def refuse(command):
        raise AssertionError(f"{command!r} was looked at for a direct run")
    monkeypatch.setattr(direct_exec, "words", refuse)
    assert run("true", tmp_path, {"PATH": "/usr/bin:/bin"}, shell=True) == (0, [])


def test_the_job_field_shell_is_kept_and_given_by_enqueue_shell(spool, cli):
    assert cli("enqueue", "--shell", "--id", "s1", "--cmd", "true").exit_code == 0
    assert cli("enqueue", "--id", "s2", "--cmd", "true").exit_code == 0
    assert spool.find("s1").job.shell is True
    assert spool.find("s2").job.shell is False
    with open(spool.find("s2").path, "rb") as f:
        assert b'"shell"' not in f.read()  # written only when set: older readers see no change
    assert cli("enqueue", '{"command": "true", "shell": "yes"}').exit_code == 2


def test_a_job_runs_with_sigpipe_at_its_default(tmp_path):
    """Python ignores SIGPIPE; a job must not inherit that: `yes | head -1` ends quietly."""
    code, lines = run("yes | head -1", tmp_path, {"PATH": "/usr/bin:/bin"}, shell=False)
    assert (code, lines) == (0, ["y"])  # no "yes: standard output: Broken pipe"
    code, lines = run("grep SigIgn /proc/self/status", tmp_path, {"PATH": "/usr/bin:/bin"}, shell=False)
    ignored = int(lines[0].split()[1], 16)
    assert not ignored & (1 << (13 - 1)) and not ignored & (1 << (25 - 1))  # SIGPIPE, SIGXFSZ


def test_dash_default_path_is_used_when_path_is_unset(tmp_path):
    assert run("uname -s", tmp_path, {}, shell=False) == run("uname -s", tmp_path, {}, shell=True)
    assert direct_exec.find("uname", {}) is not None


def test_a_file_we_may_not_execute_is_not_chosen(tmp_path):
    d = tmp_path / "bin"
    d.mkdir()
    (d / "tool").write_text("#!/bin/sh\n")
    (d / "tool").chmod(0o644)
    assert direct_exec.find("tool", {"PATH": str(d)}) is None
    (d / "tool").chmod(0o755)
    assert direct_exec.find("tool", {"PATH": str(d)}) == f"{d}/tool"
    (d / "sub").mkdir()
    (d / "sub").chmod(0o755)
    assert direct_exec.find("sub", {"PATH": str(d)}) is None  # a directory is never a program
