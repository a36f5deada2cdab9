"""Commands run without a shell: a job's `command` that `/bin/sh -c` would only split into words
and run is started directly, as GNU make does for a recipe line with no shell syntax. It saves
the shell's own start (about half a millisecond of CPU for `sleep 0`) and behaves the same:

- only a command with no character the shell gives a meaning to (quotes, `$`, backquote,
  backslash, globs, redirections, pipes, `;`, `&`, parentheses, braces, `#`, a newline or other
  control character, `~` at a word's start, `=` in the first word) whose first word is not one
  of the shell's reserved words or builtins (`true` and `false` alone excepted: they print
  nothing and exit the same either way) is a candidate;
- its words are what the shell would split it into (spaces and tabs); argv[0] is the first word
  as written; the program is found on the job's PATH as dash finds it (its default path when
  PATH is unset; a regular file we may execute; a name with a `/` is used as it is);
- its environment is what dash would pass on: the same variables, without names dash cannot
  import, with PWD set as dash sets it;
- anything else, and any failure to start (not found, not executable, no `#!` line, a missing
  interpreter), goes to `/bin/sh -c` instead, so every error message, exit status (127, 126)
  and fallback (a script without `#!`) is the shell's own.

Equivalence is held against dash, Debian's /bin/sh; with another /bin/sh (bash exports SHLVL and
`_`) every command goes to the shell. A job with `"shell": true` always does.
"""

from __future__ import annotations

import functools
import os
import stat

from .shell_words import SHELL_WORDS

# Characters that make a command line need the shell. Tab is a separator; other control
# characters are rare enough to leave to the shell rather than reason about.
SHELL_CHARS = frozenset("'\"$`\\*?[]#<>|;&(){}\n!") | frozenset(chr(c) for c in range(32) if c != 9) | {"\x7f"}
SAME_ALONE = frozenset({"true", "false"})  # builtin or program: no output, the same exit status
DASH_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def words(command: str) -> list[str] | None:
    """The argv `/bin/sh -c command` would run, when it would do nothing more; else None."""
    if not SHELL_CHARS.isdisjoint(command):
        return None
    argv = [w for w in command.replace("\t", " ").split(" ") if w]  # not str.split(): dash splits on these two only
    if not argv or "=" in argv[0] or any(w.startswith("~") for w in argv):
        return None
    if argv[0] in SHELL_WORDS and not (argv[0] in SAME_ALONE and len(argv) == 1):
        return None
    return argv


@functools.cache
def shell_is_dash(shell: str = "/bin/sh") -> bool:
    return os.path.basename(os.path.realpath(shell)) == "dash"


def find(word: str, env: dict[str, str]) -> str | None:
    """The file dash would execute for `word`, relative to the current directory; None when it
    would find none (the shell then says so, in its own words)."""
    if "/" in word:
        return word
    search = env.get("PATH", DASH_DEFAULT_PATH)
    if "%" in search:
        return None  # dash's %builtin / %func path entries: leave them to dash
    for entry in search.split(":"):
        candidate = f"{entry or '.'}/{word}"
        if not os.access(candidate, os.X_OK):  # first: a miss costs no exception (a third of the search)
            continue
        try:
            if stat.S_ISREG(os.stat(candidate).st_mode):
                return candidate
        except OSError:
            continue
    return None


def environment(env: dict[str, str], here: str | None = None) -> dict[str, str] | None:
    """The environment dash passes to what it runs from the current directory: only names it can
    import, PWD kept when it names this directory, else set to it. None: leave it to the shell.
    `here`: the absolute path the caller just stepped into, which a PWD of that very spelling
    names with no look (a job enqueued where its worker was started: three system calls a job)."""
    # ASCII identifiers are exactly dash's names ([A-Za-z_][A-Za-z0-9_]*), tested in C.
    out = {k: v for k, v in env.items() if k.isascii() and k.isidentifier()}
    pwd = out.get("PWD")
    if pwd is not None and pwd == here and pwd.startswith("/"):
        return out
    if pwd is None or not pwd.startswith("/") or not _same_file(pwd, "."):
        try:
            out["PWD"] = os.getcwd()
        except OSError:
            return None  # a deleted directory: what dash does then is its business
    return out


def _same_file(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
