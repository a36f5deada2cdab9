"""The words dash gives a meaning of its own, for the two places that must know them: a command
run without the shell (direct_exec.py) and a program's words quoted for it (cli/quick.py). No
imports: the plain enqueue's path loads this."""

# dash's reserved words and builtins (`type NAME` says "shell builtin" or "reserved word").
RESERVED_WORDS = frozenset("! case do done elif else esac fi for if in then until while { }".split())
SHELL_WORDS = RESERVED_WORDS | frozenset(
    ". : break continue eval exec exit export local readonly return set shift times trap unset "  # special
    "[ alias bg cd chdir command echo false fg getopts hash jobs kill printf pwd read test true "
    "type ulimit umask unalias wait".split())
