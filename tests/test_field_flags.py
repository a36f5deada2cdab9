"""The flags of `enqueue` that set job fields, held to format/job.py's field table (FIELDS) both
ways, and the click-free plain enqueue (cli/quick.py) held to the click command's flags and to
click's own parse of every line it takes."""

from __future__ import annotations

import json
import os

import click
from hypothesis import event, given, settings, strategies as st

from conftest import examples
from spoolq.cli import enqueue as enqueue_cli, main, quick
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


# ---- the quick path against click's own parse of the same words ---------------------------------

_PLAIN = st.text(alphabet="ab =$;'\"{", min_size=1, max_size=6).map(lambda w: w.replace("{", "a", 1))
_ODD = st.text(alphabet="ab -{[=\t'\"$;~", max_size=6)  # a leading '-', '{', '~', blank: the quick path may not take it
_VALUE = st.one_of(_PLAIN, st.sampled_from(["7", "007", "1001", "0"]), _ODD)
_ANY = st.one_of(  # words in any order: most such lines are left to click
    st.tuples(st.sampled_from(sorted(quick.VALUED)), _VALUE),
    st.just(("--shell",)),
    st.tuples(_PLAIN),  # the command itself
    st.tuples(_ODD),  # a word for click to judge
    st.tuples(st.sampled_from(["--queue=q", "--cmd=true", "--", "-h", "--json", "--delay", "--if-absent"])),
)


@st.composite
def _well_formed(draw) -> list[tuple[str, ...]]:
    """A command and some of the quick path's options, each once, in any order: most such lines
    are taken."""
    flags = draw(st.lists(st.sampled_from(sorted(set(quick.VALUED) - {"--cmd"})), unique=True, max_size=4))
    numbers = st.sampled_from(["7", "007", "1000", "1001", "0", "99999999999"])
    good = {"--priority": numbers, "--max-retries": numbers}
    words = [(flag, draw(_ODD if draw(st.integers(0, 9)) == 0 else good.get(flag, _PLAIN))) for flag in flags]
    words += [("--shell",)] * draw(st.booleans())
    words.append(("--cmd", draw(_PLAIN)) if draw(st.booleans()) else (draw(_PLAIN),))
    return draw(st.permutations(words))


SPOOL_ENV = "/srv/spool"


def _click_fields(argv: list[str]) -> tuple[str, dict[str, object]] | None:
    """(spool directory, job fields) as the click command parses `argv` (SPOOLQ_DIR set to
    SPOOL_ENV), its callback replaced by one that keeps what it is given; None if click refuses
    the line, or it is a form the quick path never takes."""
    got: list[dict[str, object]] = []
    real, enqueue_cli.enqueue.callback = enqueue_cli.enqueue.callback, lambda **params: got.append(params)
    old = os.environ.get("SPOOLQ_DIR")
    os.environ["SPOOLQ_DIR"] = SPOOL_ENV
    try:
        with main.make_context("spoolq", list(argv)) as ctx:
            main.invoke(ctx)
    except (click.exceptions.Exit, click.ClickException):
        return None
    finally:
        enqueue_cli.enqueue.callback = real
        os.environ.pop("SPOOLQ_DIR") if old is None else os.environ.__setitem__("SPOOLQ_DIR", old)
    if not got:
        return None  # another command
    params = got[0]
    if len(params["job"]) > 1:
        return None  # refused: JOB is one argument
    job = params["job"][0] if params["job"] else None
    forms = [v for v in (job, params["cmd"], params["file_path"], params["batch"]) if v is not None]
    if len(forms) != 1 or job is not None and job.lstrip().startswith(("{", "[", "\ufeff")):
        return None
    return ctx.obj.path, {"command": forms[0], **enqueue_cli._flag_values(params)}


@settings(max_examples=examples(600), deadline=None)
@given(spool=st.one_of(st.none(), _PLAIN, _ODD), options=st.one_of(_well_formed(), st.lists(_ANY, max_size=5)))
def test_what_the_quick_path_takes_click_parses_to_the_same_job(spool, options):
    """Every command line the click-free path takes, click takes too, to the same spool and the
    same fields (a line it does not take goes to click whole, so its refusals need no twin)."""
    argv = (["--spool", spool] if spool is not None else []) + ["enqueue"] + [w for o in options for w in o]
    taken = quick.plain_enqueue(argv, {"SPOOLQ_DIR": SPOOL_ENV})
    event("taken by the quick path" if taken is not None else "left to click")
    if taken is not None:
        assert _click_fields(argv) == taken, argv
