"""The facts the docs state in tables and lists, held to the one place in the code that holds the
same set: config keys and their defaults, every `--json` listing's fields, the commands and
their options, the environment of a job and of a hook, the exit statuses. (The ```sh blocks are
run by test_recipes.py; the job fields table is held to FIELDS by test_job.py.)"""

from __future__ import annotations

import pathlib
import re



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
                block = [lines[n]] + [row for row in lines[n + 1:n + 2]]
                rule = block[1] if len(block) > 1 else ""
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
