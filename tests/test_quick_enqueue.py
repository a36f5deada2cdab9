"""One plain `spoolq enqueue` (cli/quick.py): what it loads, and that what replaced the modules it
no longer loads (the JSON codec, the names checked by str methods, the signal calls) says
exactly what they said."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import examples
from spoolq.format import job, json_codec, layout

# Python's modules a plain enqueue never loads: each costs a share of `python -c pass` that the
# whole call cannot afford (docs/performance.md, "One CLI call").
NEVER = ("typing", "re", "json", "json.decoder", "json.encoder", "json.scanner", "shlex", "contextlib", "signal",
         "enum", "functools", "collections", "types", "operator", "reprlib", "keyword", "dataclasses", "warnings",
         "datetime", "ctypes", "threading", "subprocess", "click")

PROBE = ("import sys; sys.argv = ['spoolq', *sys.argv[1:]]\n"
         "from spoolq.cli import run\n"
         "try:\n    run()\n"
         "finally:\n    print(' '.join(sorted(sys.modules)), file=sys.stderr)\n")


@pytest.mark.parametrize("args", [
    ["enqueue", "--cmd", "true"],
    ["enqueue", "--queue", "q", "--priority", "3", "--max-retries", "2", "--id", "x1", "--shell", "--cmd", "true"],
    ["enqueue", "echo 'hi there'"],
])
def test_a_plain_enqueue_loads_none_of_the_costly_modules(tmp_path, args):
    spool = str(tmp_path / "s")
    subprocess.run([sys.executable, "-m", "spoolq", "--spool", spool, "init"], check=True, capture_output=True)
    done = subprocess.run([sys.executable, "-c", PROBE, "--spool", spool, *args], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stderr.splitlines()[-1].split())
    assert "spoolq.moves.enqueue" in loaded  # the same path as the click command and the library
    assert sorted(loaded.intersection(NEVER)) == []
    assert len(done.stdout.split()) == 1  # its id, and the job is there
    listed = subprocess.run([sys.executable, "-m", "spoolq", "--spool", spool, "status", "--json"],
                            capture_output=True, text=True, check=True)
    assert json.loads(listed.stdout)["pending"] == 1


def test_a_signal_during_a_plain_enqueue_still_unwinds():
    """The handlers installed without the signal module's enums raise Terminated, as before; an
    ignored SIGHUP (nohup) stays ignored."""
    code = ("import os, sys\n"
            "from spoolq.cli import quick\n"
            "quick.unwind_on_termination()\n"
            "try:\n    os.kill(os.getpid(), int(sys.argv[1]))\n"
            "except quick.Terminated as e:\n    print('terminated', int(e.signum))\n"
            "else:\n    print('alive')\n")
    def as_by_default() -> None:  # whatever this run inherited (a suite started under nohup ignores SIGHUP)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    for signum in (15, 1):
        done = subprocess.run([sys.executable, "-c", code, str(signum)], capture_output=True, text=True, timeout=60,
                              preexec_fn=as_by_default)
        assert done.stdout.split() == ["terminated", str(signum)], done.stderr
    ignored = subprocess.run(["sh", "-c", 'trap "" HUP; exec "$0" -c "$1" 1', sys.executable, code],
                             capture_output=True, text=True, timeout=60)
    assert ignored.stdout.split() == ["alive"], ignored.stderr


def test_state_stays_one_real_enum_for_every_reader():
    """Made on first use (one enqueue's path names states by their plain strings), yet one class,
    an enum, its members equal to those strings."""
    import enum
    import pickle

    import spoolq
    from spoolq.format import states
    from spoolq.format.states import FINISHED, NOT_STARTED, State

    assert issubclass(State, enum.StrEnum) and State is states.State is spoolq.State
    assert [member.value for member in State] == list(states.STATES) == [states.PENDING, states.SCHEDULED,
                                                                         states.WAITING, states.PROCESSING,
                                                                         states.DONE, states.DEAD]
    assert State.DONE == states.DONE and hash(State.DONE) == hash(states.DONE) and State(states.DEAD) is State.DEAD
    assert FINISHED == (State.DONE, State.DEAD) and NOT_STARTED == (State.PENDING, State.SCHEDULED)
    assert pickle.loads(pickle.dumps(State.WAITING)) is State.WAITING and f"{State.WAITING}/x" == "waiting/x"


# ---- the JSON codec against the json package --------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=25)


def outcome(call, *args, **kw):
    """What a call returns (as its repr: NaN is not equal to itself), or its error's type and text."""
    try:
        return "=", repr(call(*args, **kw))
    except (ValueError, TypeError, RecursionError, UnicodeDecodeError) as e:
        return type(e).__name__, str(e)


@settings(max_examples=examples(400), deadline=None)
@given(json_values, st.booleans(), st.booleans(), st.booleans())
def test_dumps_writes_what_json_dumps_writes(value, ensure_ascii, allow_nan, compact):
    separators = (",", ":") if compact else (", ", ": ")
    assert outcome(json_codec.dumps, value, ensure_ascii=ensure_ascii, allow_nan=allow_nan, compact=compact) == \
        outcome(json.dumps, value, ensure_ascii=ensure_ascii, allow_nan=allow_nan, separators=separators)


@pytest.mark.parametrize("value", [{1, 2}, {"a": object()}, b"x", [1, {"x": 2.5 + 1j}], {(1, 2): 3},
                                   {1: 2, 2.5: 3, True: 4, None: 5}, float("nan"), "\ud800", "\u2028é\x00"])
def test_dumps_refuses_and_converts_as_json_dumps_does(value):
    for ensure_ascii in (True, False):
        assert outcome(json_codec.dumps, value, ensure_ascii=ensure_ascii, allow_nan=False) == \
            outcome(json.dumps, value, ensure_ascii=ensure_ascii, allow_nan=False)


def test_dumps_refuses_a_circle_as_json_dumps_does():
    circle: list = []
    circle.append(circle)
    assert outcome(json_codec.dumps, circle) == outcome(json.dumps, circle)


def reject(name):
    raise ValueError(f"{name} is not allowed")


TEXTS = ["", " ", "{}", " {\"a\": [1, 2.5e3, -0, true, false, null]} \n", "[1,", "{} x", "\ufeff{}", "NaN",
         "[-Infinity, Infinity]", "1e400", "\"\\ud800\"", "\"a\nb\"", "[" * 100 + "]" * 100, "01", "{\"a\" 1}",
         "\t\r\n[1]\r", "[1]\x0c", "\"\\u00e9\"", "12345678901234567890123", "{\"a\":1,\"a\":2}"]


@settings(max_examples=examples(400), deadline=None)
@given(st.one_of(st.sampled_from(TEXTS), st.text(max_size=30), json_values.map(json.dumps),
                 json_values.map(lambda v: " " + json.dumps(v, indent=1) + "\n ")))
def test_loads_reads_what_json_loads_reads(text):
    assert outcome(json_codec.loads, text) == outcome(json.loads, text)
    rejecting = json_codec.Decoder(parse_constant=reject)
    assert outcome(rejecting.loads, text) == outcome(json.loads, text, parse_constant=reject)
    for encoding in ("utf-8", "utf-16", "utf-32", "utf-8-sig", "utf-16-le"):
        data = text.encode(encoding, "surrogatepass")
        assert outcome(json_codec.loads, data) == outcome(json.loads, data), encoding


@pytest.mark.parametrize("data", [b"\xff\xfe", b"\xe9", b"[1]\xe9", b"\x00", b"", b"\xef\xbb\xbf[1]",
                                  b"\"\xed\xa0\x80\"", bytearray(b"[2]"), 17, None])
def test_loads_of_bytes_and_others_is_json_loads(data):
    assert outcome(json_codec.loads, data) == outcome(json.loads, data)


# ---- names checked with str methods instead of regular expressions ---------------------------

names = st.one_of(st.text(max_size=140), st.text(alphabet=job.NAME_CHARS + "é/ \n%", max_size=140),
                  st.sampled_from(["", ".", ".a", "a.", "a" * 64, "a" * 65, "a" * 128, "a" * 129, "a\n", "-", "\u0130",
                                   "K", "a-b_c.d", "a b", "é", "٣"]))


@settings(max_examples=examples(600), deadline=None)
@given(names)
def test_ids_and_queues_are_accepted_as_the_regular_expressions_accepted_them(name):
    for check, longest in ((job.valid_id, 128), (job.valid_queue, 64)):
        before = not name.startswith(".") and re.fullmatch(rf"[A-Za-z0-9_.\-]{{1,{longest}}}", name) is not None
        assert check(name) == before


@settings(max_examples=examples(300), deadline=None)
@given(names)
def test_names_made_safe_as_the_regular_expressions_made_them(text):
    assert layout.safe_host(text) == (re.sub(r"[^A-Za-z0-9_-]", "_", text)[:64] or "host")
    assert layout.owner_token(text, 7).rsplit("-", 2)[0] == (re.sub(r"[^A-Za-z0-9_.]", "_", text)[:64] or "host")
    quarantined = layout.quarantine_id(text + ".json")
    assert quarantined.rsplit(".", 1)[0] == "+" + (re.sub(r"[^A-Za-z0-9_.\-]", "_", text)[:80].lstrip(".") or "file")


@settings(max_examples=examples(300), deadline=None)
@given(st.one_of(st.floats(), st.integers(), st.booleans(), st.none(), st.text(max_size=3),
                 st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e308, -0.0, 5e-324])))
def test_a_finite_number_is_judged_as_math_isfinite_judged_it(value):
    from spoolq.format.json_values import is_number

    before = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        (isinstance(value, int) or math.isfinite(value))
    assert is_number(value) == before


def test_not_a_number_is_refused_in_a_job_as_before():
    with pytest.raises(job.InvalidJob, match="NaN is not allowed"):
        job.parse_json_object('{"command": "true", "x": NaN}')
    with pytest.raises(job.InvalidJob, match=r"not valid JSON: Expecting ',' delimiter at line 1 column 7"):
        job.parse_json_object('[1, 2 3]')
    assert math.isnan(json_codec.loads("NaN"))
