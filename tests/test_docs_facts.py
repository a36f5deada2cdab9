"""The facts the docs state in tables and lists, held to the one place in the code that holds the
same set: config keys and their defaults, every `--json` listing's fields, the commands and
their options, the environment of a job and of a hook, the exit statuses. (The ```sh blocks are
run by test_recipes.py; the job fields table is held to FIELDS by test_job.py.)"""

from __future__ import annotations

import json
import os
import pathlib
import re
import time

import click
import pytest

from spoolq import Spool
from spoolq.cli.base import main
from spoolq.moves.transitions import Adopted
from spoolq.store import config

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(page: pathlib.Path) -> list[str]:
    """The page's lines outside its fenced blocks (a block's own lines become blank)."""
    lines, fenced = [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            line = ""
        lines.append("" if fenced else line)
    return lines


def cells(line: str) -> list[str]:
    """A table row's cells (an escaped `\\|` inside a cell is part of it)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def table(page: str, after: str) -> list[list[str]]:
    """The rows (without header and rule) of the first table after the line `after` of `page`."""
    text = ("\n" + (ROOT / page).read_text()).split("\n" + after + "\n", 1)[1]
    rows = ("|" + text.split("\n|", 1)[1]).split("\n\n", 1)[0].splitlines()
    return [cells(row) for row in rows[2:]]


def test_every_table_of_the_docs_is_one_table_with_a_header_and_a_rule():
    """A row cut off from its table by a blank line is shown as a paragraph of pipes (the
    commands table of cli.md lost its second half, `show` to `cancel`, that way)."""
    broken = []
    for page in PAGES:
        lines = prose(page)
        for n, line in enumerate(lines):
            if line.startswith("|") and (n == 0 or not lines[n - 1].startswith("|")):
                rule = lines[n + 1] if n + 1 < len(lines) else ""
                if not re.fullmatch(r"\|( *:?-{3,}:? *\|)+", rule):
                    broken.append(f"{page.name}:{n + 1}: {line[:60]}")
                    continue
                width = len(cells(line))
                for m in range(n + 2, len(lines)):
                    if not lines[m].startswith("|"):
                        break
                    if len(cells(lines[m])) != width:
                        broken.append(f"{page.name}:{m + 1}: {len(cells(lines[m]))} cells, not {width}")
    assert broken == []


# ---- configuration ----------------------------------------------------------------------------


def _documented_settings() -> tuple[dict[str, str], set[str]]:
    """cli.md's Configuration table: each key's default as written, and the keys it gives in
    seconds ("A key in seconds takes any duration")."""
    defaults, in_seconds, previous = {}, set(), False
    for key_cell, default, meaning in table("docs/cli.md", "## Configuration"):
        seconds = bool(re.match(r"seconds\b", meaning) or ", seconds" in meaning
                       or (meaning.startswith("the same") and previous))
        for key in re.findall(r"`(\w+)`", key_cell):
            defaults[key] = default.strip("`")
            if seconds:
                in_seconds.add(key)
        previous = seconds
    return defaults, in_seconds


def _takes_a_duration(key: str) -> bool:
    try:
        return config.KEYS[key].parse("1m") == 60
    except ValueError:
        return False


def test_the_configuration_table_is_every_key_with_its_default():
    defaults, _ = _documented_settings()
    assert set(defaults) == set(config.KEYS)
    assert {k: json.loads(v) for k, v in defaults.items()} == {k: s.default for k, s in config.KEYS.items()}


def test_every_key_the_table_gives_in_seconds_takes_a_duration():
    """`config set pending_shards 1h` was refused ("not a valid value"): the key, seconds of
    arrivals per shard, was read as a plain integer."""
    _, in_seconds = _documented_settings()
    assert in_seconds == {key for key in config.KEYS if _takes_a_duration(key)}



# ---- what each --json listing gives -------------------------------------------------------------


def documented(command: str) -> set[str]:
    """The names cli.md's commands table gives in `command`'s rows (its fields among them)."""
    rows = [row for row in table("docs/cli.md", "# The spoolq command line")
            if re.match(rf"`{command}[ `]", row[0]) or re.search(rf" / `{command}[ `]", row[0])]
    assert rows, f"no row of cli.md's commands table for {command}"
    spans = [span for row in rows for span in re.findall(r"`([^`]+)`", " ".join(row))]
    return {name for span in spans for name in (re.findall(r'"(\w+)"', span) or re.findall(r"^(\w+)$", span))}


def keys(cli, *args: str, status: int = 0) -> set[str]:
    """The fields of what `spoolq ARGS --json` prints: an object's, or every object's of a list."""
    result = cli(*args, "--json")
    assert result.exit_code == status, result.output
    value = json.loads(result.stdout)
    return set().union(*map(set, value)) if isinstance(value, list) else set(value)


def claimed(spool: Spool, spec: dict):
    job = spool.enqueue(spec)
    owner = spool.owners.register("worker")
    claim = spool.transitions.claim(os.path.basename(spool.find(job.id).path), owner)
    assert claim is not None
    return claim


@pytest.fixture
def lived_in(spool: Spool) -> Spool:
    """A spool with a job of every state, a quarantined file and a file that is no job."""
    spool.enqueue({"command": "true", "id": "ready", "shell": True, "keep_children": True, "queue": "mail"})
    spool.enqueue({"command": "true", "id": "later", "delay": 3600})
    spool.enqueue({"command": "true", "id": "waits", "after": ["later"]})
    claimed(spool, {"command": "true", "id": "runs"})
    spool.transitions.finish(claimed(spool, {"command": "true", "id": "ok"}), ok=True, exit_code=0, error=None)
    spool.transitions.finish(claimed(spool, {"command": "false", "id": "failed", "max_retries": 0}),
                             ok=False, exit_code=1, error="exit status 1")
    spool.set_config("drop_grace", 0)
    with open(os.path.join(spool.layout.pending, "bad.json"), "w") as f:
        f.write("{}")
    assert spool.transitions.adopt("bad.json", spool.owners.register("worker"),
                                   now=time.time() + 1).outcome is Adopted.QUARANTINED
    with open(os.path.join(spool.layout.pending, "notes.txt"), "w") as f:
        f.write("never a job")
    return spool


def test_status_names_every_count_it_gives(lived_in, cli):
    """`never_picked_up` (files in pending/ that are no job) was in no row of cli.md."""
    assert keys(cli, "status") <= documented("status")


def test_queue_list_names_every_field_it_gives(lived_in, cli):
    """`waiting`, a queue's jobs waiting for others, was in no row of cli.md."""
    assert keys(cli, "queue", "list") <= documented("queue list")


def test_stats_names_every_figure_it_gives(lived_in, cli):
    """`lost_attempts` (attempts whose worker lost the job) was in no row of cli.md."""
    figures = json.loads(cli("stats", "--json").stdout)["total"]
    assert set(figures) <= documented("stats")


def test_show_names_every_field_it_gives_of_a_job_in_any_state(lived_in, cli):
    """`after`, `keep_children` and `shell` (when given), `worker` (while it runs) and a
    quarantined file's `quarantined` were in no row of cli.md."""
    ids = [view.id for view in lived_in.list_jobs()]
    assert len(ids) == 7 and sum(1 for i in ids if i.startswith("+")) == 1
    shown = set().union(*(keys(cli, "show", job_id) for job_id in ids))
    assert shown <= documented("show")


def test_the_listings_of_workers_schedules_and_actions_name_every_field_they_give(lived_in, cli):
    assert keys(cli, "worker", "list") <= documented("worker list")
    assert cli("schedule", "add", "nightly", "15 2 * * *", "--tz", "UTC", "--cmd", "true").exit_code == 0
    assert keys(cli, "schedule", "list") <= documented("schedule list")
    assert keys(cli, "schedule", "show", "nightly") <= documented("schedule show")
    assert keys(cli, "cancel", "later", "nothing", status=1) <= documented("cancel")
    assert keys(cli, "requeue", "ok", "nothing", status=1) <= documented("requeue")
    assert keys(cli, "dlq", "retry", "failed") <= documented("dlq retry")
    assert keys(cli, "pause") <= documented("pause")
    assert keys(cli, "purge", "--state", "done") <= documented("purge")


# ---- commands and options -----------------------------------------------------------------------


def commands(group: click.Group = main, path: tuple[str, ...] = ()) -> dict[str, click.Command]:
    """Every command the CLI has, by its words (`worker start`)."""
    found = {}
    for name in group.list_commands(click.Context(group)):
        command = group.get_command(click.Context(group), name)
        if isinstance(command, click.Group):
            found.update(commands(command, (*path, name)))
        else:
            found[" ".join((*path, name))] = command
    return found


def options(command: click.Command) -> list[list[str]]:
    return [[*p.opts, *p.secondary_opts] for p in command.params
            if isinstance(p, click.Option) and p.name != "help"]


def test_the_reference_gives_every_command_and_its_every_option():
    """`spoolq --version` was in no page of the docs."""
    rows = table("docs/cli.md", "# The spoolq command line")
    missing = []
    for words, command in commands().items():
        synopsis = " ".join(row[0] for row in rows if re.match(rf"`{words}[ `]", row[0])
                            or re.search(rf" / `{words}[ `]", row[0]))
        if not synopsis:
            missing.append(words)
        missing += [f"{words} {spelled[0]}" for spelled in options(command)
                    if not any(re.search(rf"{o}\b", synopsis) for o in spelled)]
    intro = (ROOT / "docs" / "cli.md").read_text().split("| command | what it does |")[0]
    missing += [spelled[0] for spelled in options(main) if not any(o in intro for o in spelled)]
    assert missing == []


def test_list_says_it_lists_every_state_in_its_order():
    """`list --help` (and the summary of `spoolq --help`) left out `waiting`, which it lists."""
    from spoolq.format.states import STATES

    said = commands()["list"].help.split(".")[0]
    assert re.findall("|".join(STATES), said) == list(STATES)


def test_a_bad_value_of_a_setting_is_answered_with_what_the_setting_does(cli):
    """The answer to a bad `group_access` said it gave the group "read/write access": the group
    may read the spool and drop jobs into pending/, nothing more (cli.md, the trust model); and
    a bad `max_output_bytes` said the cap was per job and truncated the log, where it is per
    attempt and keeps the log's end."""
    said = cli("config", "set", "group_access", "maybe").output
    assert "read it and drop jobs into pending/" in said and "read/write" not in said
    said = cli("config", "set", "max_output_bytes", "lots").output
    assert "per attempt" in said and "its end" in said


def test_contributing_gives_every_test_file_by_its_subject():
    """CONTRIBUTING.md's table of subjects names each test file once it exists, and none that is
    gone (test files are regrouped by subject: the table moves with them)."""
    text = (ROOT / "CONTRIBUTING.md").read_text().split("\n## Tests\n", 1)[1]
    named = set(re.findall(r"`(test_\w+\.py)`", text))
    assert named == {path.name for path in (ROOT / "tests").glob("test_*.py")}


# ---- what a job and a hook see; exit statuses ---------------------------------------------------


def _named_variables(text: str) -> set[str]:
    return set(re.findall(r"\b(SPOOLQ_[A-Z_]+)\b", text))


def test_the_variables_a_job_and_a_hook_see_are_those_the_docs_give(tmp_path):
    """What a job and a hook find in their environment, as a real worker gives it (started with no
    SPOOLQ_ variable of its own), against cli.md's and operating.md's lists."""
    import subprocess

    from conftest import SPOOLQ

    spool = Spool(str(tmp_path / "spool"))
    job_env, hook_env = tmp_path / "job-env", tmp_path / "hook-env"
    spool.set_config("on_done", f"env > {hook_env}")
    spool.enqueue({"id": "seen", "command": f"env > {job_env}", "shell": True})
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLQ_")}
    worker = subprocess.run([*SPOOLQ, "--spool", spool.root, "worker", "start", "--burst", "-q"], env=clean,
                            capture_output=True, text=True, timeout=60)
    assert worker.returncode == 0, worker.stderr

    def seen(path: pathlib.Path) -> set[str]:
        return {line.split("=", 1)[0] for line in path.read_text().splitlines() if line.startswith("SPOOLQ_")}

    job_text = (ROOT / "docs" / "cli.md").read_text().split("The command also sees", 1)[1].split("\n\n")[0]
    assert _named_variables(job_text) == seen(job_env)
    hook_text = (ROOT / "docs" / "operating.md").read_text().split("**Hooks.**", 1)[1].split("\n\n")[0]
    assert _named_variables(hook_text) == seen(hook_env)


def test_the_exit_status_table_gives_every_status_an_error_has():
    from spoolq.format import errors

    def family(cls: type) -> list[type]:
        return [cls, *(c for sub in cls.__subclasses__() for c in family(sub))]

    codes = {int(code) for row in table("docs/cli.md", "## Exit status") for code in re.findall(r"\d+", row[0])}
    assert {cls.exit_code for cls in family(errors.SpoolError)} | {0} <= codes


# ---- python.md --------------------------------------------------------------------------------


def test_a_spool_that_is_not_there_is_said_by_every_reading_call(tmp_path):
    """python.md: `Spool(path, create=False)` of a wrong path "gets NoSpool from its first
    call". `paused()`, `concurrency()`, `workers()` and `stats()` answered it with nothing
    paused, no limit, no worker and no attempt: a dashboard of a mistyped path showed an idle
    spool."""
    from spoolq import NoSpool

    spool = Spool(str(tmp_path / "mistyped"), create=False)
    for call in (spool.paused, spool.concurrency, spool.workers, lambda: spool.stats(3600),
                 spool.counts, spool.list_jobs, lambda: spool.find("x")):
        with pytest.raises(NoSpool):
            call()
    assert not os.path.exists(tmp_path / "mistyped")


CHANGES = {"retry_dead": lambda s: s.retry_dead(), "purge": lambda s: s.purge("done"),
           "purge_ids": lambda s: s.purge_ids(["x"]), "requeue": lambda s: s.requeue(["x"]),
           "cancel": lambda s: s.cancel(["x"]), "pause": lambda s: s.pause(), "resume": lambda s: s.resume(),
           "request_stop": lambda s: s.request_stop(), "set_config": lambda s: s.set_config("max_retries", 2),
           "set_concurrency": lambda s: s.set_concurrency("q", 2)}


@pytest.mark.parametrize("call", CHANGES)
def test_a_spool_that_is_not_there_is_neither_made_nor_answered_by_a_change(tmp_path, call):
    """python.md: `Spool(path, create=False)` "makes nothing" and gets NoSpool. A change took a
    lock first, and the lock made the path and its `locks/` (a spool's root at a mistyped path);
    then retry_dead() answered [] and requeue "no job 'x'", the others an error about a file."""
    from spoolq import NoSpool

    spool = Spool(str(tmp_path / "mistyped"), create=False)
    with pytest.raises(NoSpool):
        CHANGES[call](spool)
    assert not os.path.exists(tmp_path / "mistyped")
