"""The facts the docs state in tables and lists, held to the one place in the code that holds the
same set: config keys and their defaults, every `--json` listing's fields, the commands and
their options, the environment of a job and of a hook, the exit statuses. (The ```sh blocks are
run by test_recipes.py; the job fields table is held to FIELDS by test_job.py.)"""

from __future__ import annotations

import json
import pathlib
import re

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


def table(page: str, heading: str) -> list[list[str]]:
    """The rows (without header and rule) of the first table after `heading` in docs/`page`."""
    text = (ROOT / page).read_text().split(heading + "\n", 1)[1]
    rows = [line for line in text.split("\n|", 1)[1].split("\n\n", 1)[0].splitlines()]
    return [cells("|" + row if not row.startswith("|") else row) for row in rows[2:]]


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
