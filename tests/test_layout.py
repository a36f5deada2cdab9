"""The on-disk names: every path a Layout gives is the one os.path.join would, for any root."""

import os
import pathlib
import re

import pytest

from spoolq.format.layout import Layout


@pytest.mark.parametrize("root", ["/srv/spool", "/", "relative/spool", "/srv/spool/", "//srv//x/../spool"])
def test_layout_paths_are_the_joined_paths(root):
    lay, base = Layout(root), os.path.abspath(root)
    assert lay.root == base
    expected = {
        lay.pending: ("pending",), lay.processing: ("processing",), lay.done: ("done",),
        lay.dead: ("dead",), lay.tmp: ("tmp",), lay.config: ("config.json",),
        lay.dir("ids"): ("ids",), lay.owned("host-1-abc"): ("processing", "host-1-abc"),
        lay.id_marker("j1"): ("ids", "j1"), lay.output("j1"): ("output", "j1.log"),
        lay.worker_file("w"): ("workers", "w.json"), lay.reason_file("q"): ("quarantine", "q.json"),
        lay.lock("config"): ("locks", "config.flock"), lay.stop_file: ("control", "stop"),
        lay.worker_log("h"): ("log", "worker-h.log"),
    }
    for path, parts in expected.items():
        assert path == os.path.join(base, *parts)


def test_a_layout_is_read_only():
    lay = Layout("/srv/spool")
    with pytest.raises(AttributeError):
        lay.root = "/elsewhere"
    assert lay == Layout("/srv/spool/") and hash(lay) == hash(Layout("/srv/spool"))


def test_every_state_but_scheduled_is_a_directory_of_its_name():
    from spoolq.format import layout
    from spoolq.format.states import State

    assert set(layout.STATE_DIRS) == set(State) - {State.SCHEDULED}
    assert all(f"S/{state}/" in layout.__doc__ for state in layout.STATE_DIRS)


def test_every_reader_lists_the_states_of_one_table():
    import spoolq
    from spoolq.cli import reading
    from spoolq.format import states
    from spoolq.running import metrics

    assert spoolq.STATES is metrics.STATES is reading.STATES is states.STATES
    assert states.STATES == tuple(states.State) == ("pending", "scheduled", "waiting", "processing", "done", "dead")


def _records(text: str) -> set[frozenset[str]]:
    """The JSON records a text describes, {"a", "b", ...}, each as the set of its field names."""
    found = (frozenset(re.findall(r'"(\w+)"', inner)) for inner in re.findall(r"\{([^{}]*)\}", text))
    return {names for names in found if names}


def test_the_format_page_names_only_what_the_specification_names():
    """docs/format.md shows the layout in short; layout.py's docstring is the specification."""
    from spoolq.format import layout

    spec = layout.__doc__
    tree = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "format.md").read_text().split("```")[1]
    spec_dirs = set(re.findall(r"S/([a-z_.]+)", spec))
    assert set(re.findall(r"^  ([a-z_]+)/", tree, re.M)) <= spec_dirs
    assert [name for name in spec_dirs if (name if "." in name else f"{name}/") not in tree] == []
    assert _records(tree) <= _records(spec)
    temp_names = r"\.<pid>[^\s`]*\.tmp"
    assert set(re.findall(temp_names, tree)) <= set(re.findall(temp_names, spec)) != set()
    assert set(re.findall(r"P+\.S+\.D+@<id>", tree)) == set(re.findall(r"P+\.S+\.D+@<id>", spec)) != set()
