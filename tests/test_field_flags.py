"""The flags of `enqueue` that set job fields, held to format/job.py's field table (FIELDS) both
ways, and the click-free plain enqueue (cli/quick.py) held to the click command's flags."""

from __future__ import annotations

import json

from spoolq.cli import enqueue as enqueue_cli, quick
from spoolq.format import job as job_mod


def _option(flag: str):
    return next(p for p in enqueue_cli.enqueue.params if flag in getattr(p, "opts", ()))


def test_every_field_a_caller_may_set_has_a_flag_or_is_json_only():
    flagged = [field for field, _option in enqueue_cli.FIELD_FLAGS]
    given = {f.name for f in job_mod.FIELDS if f.given}
    assert len(flagged) == len(set(flagged)) and not set(flagged) & set(enqueue_cli.JSON_ONLY)
    assert set(flagged) | set(enqueue_cli.JSON_ONLY) == given


def test_each_field_flag_is_a_parameter_of_the_command_named_as_its_field():
    names = {p.name for p in enqueue_cli.enqueue.params}
    for field, _option in enqueue_cli.FIELD_FLAGS:
        assert field in names


def test_the_quick_path_knows_only_flags_the_click_command_has_for_the_same_field():
    for flag, field in quick.VALUED.items():
        if flag == "--cmd":
            assert field == "command" and _option("--cmd").name == "cmd"
        else:
            assert _option(flag).name == field


def test_every_field_flag_reaches_the_job(spool, cli):
    job = cli.json("enqueue", "--id", "f1", "--max-retries", "2", "--priority", "3", "--timeout", "9",
                   "--delay", "1h", "--shell", "--queue", "q", "--cmd", "true")
    seen = {"id": "f1", "max_retries": 2, "priority": 3, "timeout": 9.0, "shell": True, "queue": "q"}
    assert {k: job.get(k) for k in seen} == seen and job.get("run_at")
    out = cli("enqueue", "--id", "f2", "--after", "f1, f1x", "--cmd", "true")
    assert out.exit_code != 0 and "f1x" in out.output  # --after is split on commas and each id judged
    cli("enqueue", "--id", "f3", "--after", " f1", "--run-at", "4102444800", "--cmd", "true")
    shown = cli.json("show", "f3")
    assert shown["after"] == ["f1"] and shown["run_at"].startswith("2100-01-01")
