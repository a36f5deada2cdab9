"""The job record: validation, the JSON form, the id grammar and the pending-name format."""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import string

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import examples
from spools import REPO
from spoolq import InvalidJob, Spool
from spoolq.format import job as job_mod
from spoolq.format import layout as L
from spoolq.format import retry
from spoolq.format.json_values import MAX_EPOCH
from spoolq.format.job import KNOWN, from_dict, from_json, parse_json_object

NOW = 1_700_000_000.0
ID_CHARS = string.ascii_letters + string.digits + "._-"

# ---- strategies ------------------------------------------------------------------------------

no_nul_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
job_ids = st.text(ID_CHARS, min_size=1, max_size=128).filter(lambda s: not s.startswith("."))
commands = no_nul_text.filter(lambda s: s.strip() != "")
env_keys = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00="), min_size=1,
                   max_size=20)
epochs = st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False, allow_infinity=False)
far_epochs = st.floats(min_value=0, max_value=MAX_EPOCH)  # anything the validator accepts
json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63)
                | st.floats(allow_nan=False, allow_infinity=False) | no_nul_text)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(no_nul_text, inner, max_size=3), max_leaves=10)
extra_fields = st.dictionaries(no_nul_text.filter(lambda k: k not in KNOWN), json_values, max_size=3)


@st.composite
def job_specs(draw) -> dict:
    """Valid job objects as a user or another program might write them."""
    spec: dict = {"command": draw(commands)}
    spec.update(draw(extra_fields))
    optional = {
        "id": job_ids,
        "max_retries": st.integers(0, 1000),
        "priority": st.integers(-999_999_999, 999_999_999),
        "timeout": st.floats(min_value=0.001, max_value=86400 * 365),
        "cwd": no_nul_text.filter(bool),
        "env": st.dictionaries(env_keys, no_nul_text, max_size=4),
        "attempts": st.integers(0, 1001),
        "exit_code": st.none() | st.integers(-255, 255),
        "last_error": st.none() | no_nul_text,
        "created_at": epochs,
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            spec[key] = draw(strategy)
    when = draw(st.sampled_from(["none", "delay", "run_at_epoch", "run_at_iso"]))
    if when == "delay":
        spec["delay"] = draw(st.floats(min_value=0, max_value=86400 * 365))
    elif when == "run_at_epoch":
        spec["run_at"] = draw(far_epochs)
    elif when == "run_at_iso":
        spec["run_at"] = job_mod.iso(draw(far_epochs))
    return spec


# ---- the JSON form ---------------------------------------------------------------------------


@settings(max_examples=examples(300), deadline=None)
@given(job_specs())
def test_json_round_trip(spec):
    job = from_dict(spec, now=NOW, default_max_retries=3, seq=123)
    job.id = job.id or "generated"  # Spool.make_job gives one; the record itself needs it
    data = job.to_json()
    assert data.endswith(b"\n") and b"\n" not in data[:-1], "one JSON object on one line"
    obj = json.loads(data)
    # Unknown fields are kept exactly as given.
    for key, value in spec.items():
        if key not in KNOWN:
            assert obj[key] == value
    again = from_json(data, now=NOW + 1000, default_max_retries=7)
    # What spoolq owns survives the trip (times to the millisecond the format stores).
    for name in ("id", "command", "max_retries", "priority", "timeout", "cwd", "env", "attempts",
                 "exit_code", "last_error", "seq", "extra"):
        assert getattr(again, name) == getattr(job, name), name
    for name in ("run_at", "created_at"):
        a, b = getattr(job, name), getattr(again, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert abs(a - b) < 0.0011, name
    # After one trip the bytes are a fixed point.
    assert from_json(data, now=NOW, default_max_retries=0).to_json() == data
    # A stored job never takes the reader's defaults: max_retries was fixed when it was written.
    assert obj["max_retries"] == spec.get("max_retries", 3)


@settings(max_examples=examples(200), deadline=None)
@given(job_specs())
def test_stored_times_are_iso_8601_utc(spec):
    obj = json.loads(from_dict({"id": "j", **spec}, now=NOW, default_max_retries=3).to_json())
    for key in ("created_at", "updated_at", "run_at"):
        value = obj[key]
        if value is None:
            assert key == "run_at"
            continue
        assert isinstance(value, str) and value.endswith("Z"), value
        from datetime import datetime
        assert datetime.fromisoformat(value).utcoffset().total_seconds() == 0


def test_defaults_and_delay():
    job = from_dict({"command": "true", "delay": 30}, now=NOW, default_max_retries=5)
    assert job.max_retries == 5 and job.priority == 0 and job.attempts == 0
    assert job.run_at == NOW + 30
    assert json.loads(job.to_json())["run_at"] == job_mod.iso(NOW + 30)
    assert from_dict({"command": "true", "delay": 0}, now=NOW, default_max_retries=5).run_at is None
    assert from_dict({"command": "true", "run_at": "2023-11-14T22:13:20Z"}, now=NOW,
                     default_max_retries=0).run_at == NOW
    # Naive ISO means UTC; an offset is honoured; epoch seconds work too.
    assert from_dict({"command": "x", "run_at": "2023-11-14T22:13:20"}, now=0, default_max_retries=0).run_at == NOW
    assert from_dict({"command": "x", "run_at": "2023-11-15T00:13:20+02:00"}, now=0,
                     default_max_retries=0).run_at == NOW
    assert from_dict({"command": "x", "run_at": NOW}, now=0, default_max_retries=0).run_at == NOW


# ---- the id grammar --------------------------------------------------------------------------


def _oracle(s: object) -> bool:
    return (isinstance(s, str) and 1 <= len(s) <= 128 and all(c in ID_CHARS for c in s)
            and not s.startswith("."))


@settings(max_examples=examples(500), deadline=None)
@given(st.text(ID_CHARS + "/\\ \n\t\x00+~@:*é", max_size=140) | job_ids)
def test_id_grammar(candidate):
    assert job_mod.valid_id(candidate) == _oracle(candidate)
    if _oracle(candidate):
        assert from_dict({"command": "x", "id": candidate}, now=NOW, default_max_retries=0).id == candidate
    else:
        with pytest.raises(InvalidJob):
            from_dict({"command": "x", "id": candidate}, now=NOW, default_max_retries=0)


@pytest.mark.parametrize("good", ["a", "A.b_c-d", "0", "x" * 128, "a..b", "-", "_"])
def test_valid_ids(good):
    assert job_mod.valid_id(good)


@pytest.mark.parametrize("bad", ["", ".", ".a", "..", "a/b", "../x", "a b", "x" * 129, "a\n", "é", "a+b",
                                 "a@b", "+q", 5, None, ["a"]])
def test_invalid_ids(bad):
    assert not job_mod.valid_id(bad)
    with pytest.raises(InvalidJob):
        job_mod.check_id(bad)


# ---- every ill-typed field is refused -----------------------------------------------------------

ILL_TYPED = [
    {},
    {"command": None},
    {"command": 5},
    {"command": ["echo", "hi"]},
    {"command": ""},
    {"command": "   "},
    {"command": "echo \x00"},
    {"command": "x" * (128 * 1024)},
    {"id": 5},
    {"id": ""},
    {"id": ".hidden"},
    {"id": "a/b"},
    {"id": "x" * 129},
    {"id": True},
    {"max_retries": "3"},
    {"max_retries": 1.5},
    {"max_retries": 2.0},
    {"max_retries": True},
    {"max_retries": -1},
    {"max_retries": 1001},
    {"max_retries": [1]},
    {"priority": "high"},
    {"priority": 1.5},
    {"priority": False},
    {"priority": 10**9},
    {"priority": -(10**9)},
    {"timeout": "10"},
    {"timeout": 0},
    {"timeout": -1},
    {"timeout": True},
    {"timeout": 10**12},
    {"timeout": {}},
    {"delay": -1},
    {"delay": "5"},
    {"delay": True},
    {"delay": 10**12},
    {"run_at": "tomorrow"},
    {"run_at": "2024-13-01T00:00:00"},
    {"run_at": True},
    {"run_at": [2024]},
    {"run_at": -5},
    {"run_at": "3001-01-01T00:00:00Z"},
    {"run_at": "2300-01-01T00:00:00Z"},  # past 2286 the due time no longer fits a pending name
    {"run_at": 10_000_000_000},
    {"run_at": 10**15},
    {"run_at": NOW, "delay": 5},
    {"cwd": 5},
    {"cwd": ""},
    {"cwd": "/tmp\x00x"},
    {"cwd": ["/tmp"]},
    {"env": "A=1"},
    {"env": ["A=1"]},
    {"env": {"A": 1}},
    {"env": {"A": None}},
    {"env": {"A": True}},
    {"env": {"": "x"}},
    {"env": {"A=B": "x"}},
    {"env": {"A": "x\x00"}},
    {"attempts": -1},
    {"attempts": "1"},
    {"exit_code": "0"},
    {"exit_code": 1.5},
    {"exit_code": True},
    {"last_error": 5},
    {"last_error": ["x"]},
    {"seq": -1},
    {"seq": "1"},
    {"seq": 10**19},
    {"created_at": "yesterday"},
    {"updated_at": True},
    # Lone surrogates: a JSON "\ud800" escape, or argv bytes that are not UTF-8. Not storable as UTF-8.
    {"command": "echo \ud800"},
    {"cwd": "/tmp/\udcff"},
    {"env": {"A": "\ud800"}},
    {"env": {"\ud800": "x"}},
    {"last_error": "\udfff"},
    {"note": "\ud800"},
    {"note": ["\ud800"]},
    {"queue": 5}, {"queue": ""}, {"queue": ".hidden"}, {"queue": "a%b"}, {"queue": "q" * 65},
    {"after": "a"}, {"after": [1]}, {"after": ["a", "a"]}, {"after": [".x"]}, {"after": ["a"] * 1001},
    {"id": "me", "after": ["me"]},
]


@pytest.mark.parametrize("fields", ILL_TYPED, ids=lambda f: json.dumps(f)[:50])
def test_ill_typed_field_is_refused(fields, tmp_path):
    spec = dict(fields) if fields == {} or "command" in fields else {"command": "echo ok", **fields}
    with pytest.raises(InvalidJob):
        from_dict(spec, now=NOW, default_max_retries=3)
    # The JSON path refuses it too (when it is expressible as JSON) ...
    with pytest.raises(InvalidJob):
        from_json(json.dumps(spec), now=NOW, default_max_retries=3)
    # ... and so does the spool, before writing anything.
    spool = Spool(tmp_path / "s")
    with pytest.raises(InvalidJob):
        spool.enqueue(spec)
    assert spool.counts().to_dict() == {"pending": 0, "scheduled": 0, "waiting": 0, "processing": 0, "done": 0,
                                        "dead": 0, "quarantined": 0, "workers": 0}
    assert all(os.listdir(tmp_path / "s" / d) == [] for d in ("ids", "tmp", "pending"))


@pytest.mark.parametrize("text", [
    "", " ", "[]", "[1]", '"command"', "5", "null", "true", "{", '{"command": "x",}', "{'command': 'x'}",
    '{"command": NaN}', '{"command": "x", "timeout": Infinity}', "[" * 100_000, b"\xff\xfe{}",
    '{"command": "x"} {"command": "y"}', "1" * 5000,
])
def test_unparseable_objects_are_refused(text):
    with pytest.raises(InvalidJob) as e:
        parse_json_object(text if isinstance(text, bytes) else text.encode())
    assert "\n" not in str(e.value), "the reason is one line"


json_texts = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=8).map(json.dumps)


@settings(max_examples=examples(400), deadline=None)
@given(st.tuples(st.sampled_from(["", " ", "\ufeff"]), st.text(max_size=40) | json_texts).map("".join))
def test_job_text_is_read_as_json_loads_reads_it(text):
    """The decoder made once answers as json.loads does: the same object, or the same refusal."""
    try:
        expected = json.loads(text, parse_constant=job_mod._reject_constant)
    except ValueError as e:
        with pytest.raises(InvalidJob) as got:
            parse_json_object(text.encode("utf-8", "surrogatepass"))
        if isinstance(e, json.JSONDecodeError):
            assert e.msg in str(got.value)
        return
    if not isinstance(expected, dict) or job_mod._too_deep(expected):
        return
    assert parse_json_object(text.encode("utf-8", "surrogatepass")) == expected


def test_oversized_object_is_refused():
    with pytest.raises(InvalidJob):
        parse_json_object(b'{"command": "x", "pad": "' + b"a" * job_mod.MAX_JOB_BYTES + b'"}')


@settings(max_examples=examples(300), deadline=None)
@given(st.dictionaries(st.sampled_from(list(KNOWN) + ["other"]), json_values, max_size=6))
def test_arbitrary_objects_are_accepted_or_refused_cleanly(obj):
    """Anything decodable from JSON either becomes a job or raises InvalidJob: never another error."""
    try:
        job = from_dict(obj, now=NOW, default_max_retries=3)
    except InvalidJob:
        return
    assert from_json(job.to_json(), now=NOW, default_max_retries=3).command == job.command


# ---- the pending name ------------------------------------------------------------------------


@settings(max_examples=examples(300), deadline=None)
@given(job_ids, st.integers(-999_999_999, 999_999_999), st.integers(0, 10**19 - 1),
       st.none() | st.floats(min_value=0.001, max_value=MAX_EPOCH))
def test_pending_name_round_trip(job_id, priority, seq, due):
    name = L.pending_name(job_id, priority, seq, due)
    parsed = L.parse_pending(name)
    assert parsed is not None, name
    assert (parsed.job_id, parsed.rank, parsed.seq) == (job_id, L.PRIORITY_BASE - priority, seq)
    assert parsed.due_ms == (int(due * 1000) if due else 0)
    assert not L.is_dropin(name)
    assert len(name.encode()) <= 255


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.tuples(st.integers(-999_999_999, 999_999_999), st.integers(0, 10**19 - 1)),
                min_size=2, max_size=20, unique_by=lambda t: t[1]))
def test_ready_names_sort_in_run_order(jobs):
    """Higher priority first, then lower sequence number (enqueue order)."""
    names = [L.pending_name(f"j{seq}", prio, seq, None) for prio, seq in jobs]
    expected = [L.pending_name(f"j{seq}", prio, seq, None) for prio, seq in sorted(jobs, key=lambda t: (-t[0], t[1]))]
    assert sorted(names) == expected


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=job_specs())
def test_every_accepted_job_can_be_claimed(spec, tmp_path_factory):
    """What enqueue accepts, a worker can read back: never quarantined as malformed."""
    spool = Spool(tmp_path_factory.mktemp("s"))
    spec.pop("id", None)
    job = spool.enqueue(spec)
    [name] = [n for n in spool.views.pending_entries()]
    assert L.parse_pending(name) is not None and L.parse_pending(name).job_id == job.id
    owner = spool.owners.register("worker")
    claimed = spool.transitions.claim(name, owner)
    assert claimed is not None, "accepted job was quarantined on claim"
    assert claimed.job.command == spec["command"]
    assert claimed.job.running_attempt == 1, "a new job starts with no attempts, whatever its input said"


def test_non_json_extra_values_are_refused_by_the_api(tmp_path):
    """The Python API can pass values JSON cannot carry; they must be refused, not stored unreadable."""
    spool = Spool(tmp_path / "s")
    for bad in (math.nan, math.inf, {1, 2}, object()):
        with pytest.raises(InvalidJob):
            spool.enqueue({"command": "true", "note": bad})
    assert spool.views.pending_entries() == []


# ---- the retry policy ------------------------------------------------------------------------


@settings(max_examples=examples(300), deadline=None)
@given(st.integers(1, 2000), st.floats(0, 3600), st.floats(0, 86400 * 30))
def test_backoff_is_base_to_the_n_capped(n, base, cap):
    try:
        expected = min(base ** n, cap)
    except OverflowError:
        expected = cap
    assert retry.backoff(n, base, cap) == expected


@settings(max_examples=examples(300), deadline=None)
@given(st.integers(1, 1001), st.integers(0, 1000), st.booleans())
def test_decide_runs_a_job_at_most_1_plus_max_retries_times(attempts, max_retries, ok):
    d = retry.decide(ok=ok, attempts=attempts, max_retries=max_retries, now=NOW, base=2, cap=60)
    if ok:
        assert d.state == "done"
    elif attempts >= max_retries + 1:
        assert d.state == "dead", "after the last attempt it is dead"
    else:
        assert d.state == "pending" and d.run_at == NOW + min(2 ** attempts, 60)


@pytest.mark.parametrize("field", ["delay", "timeout", "run_at"])
@pytest.mark.parametrize("huge", [10**400, -(10**400)])
def test_integers_too_big_for_a_float_are_out_of_range_not_a_crash(field, huge):
    with pytest.raises(InvalidJob, match=f"{field}: .* is out of range"):
        from_dict({"command": "true", field: huge}, now=NOW, default_max_retries=3)


# ---- the field table (job.FIELDS) is the one list of a job's fields --------------------------------------

ROOT = pathlib.Path(REPO)


class Reads(dict):
    """A job object that remembers which keys were looked up."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


def test_validation_reads_every_field_of_the_table_and_no_other():
    d = Reads(command="true")
    from_dict(d, now=1e9, default_max_retries=3)
    assert d.read == {f.name for f in job_mod.FIELDS}


def test_a_job_has_an_attribute_for_every_stored_field_of_the_table():
    import inspect

    stored = [f.name for f in job_mod.FIELDS if f.stored]
    assert job_mod.Job.SLOTS == (*stored, "extra")
    assert set(inspect.signature(job_mod.Job).parameters) == set(job_mod.Job.SLOTS)


def test_a_file_holds_the_stored_fields_in_the_tables_order():
    full = {"id": "j1", "command": "true", "priority": 5, "max_retries": 2, "timeout": 3.0,
            "run_at": "2030-01-01T00:00:00.000Z", "cwd": "/tmp", "env": {"A": "b"},
            "created_at": "2029-01-01T00:00:00.000Z", "updated_at": "2029-01-02T00:00:00.000Z", "attempts": 1,
            "exit_code": 3, "last_error": "no", "seq": 7, "keep_children": True, "shell": True, "queue": "q",
            "after": ["j0"]}
    written = from_dict(full, now=1e9, default_max_retries=3).to_dict()
    assert list(written) == [f.name for f in job_mod.FIELDS if f.stored] and written == full
    plain = from_dict({"command": "true"}, now=1e9, default_max_retries=3).to_dict()
    assert list(plain) == [f.name for f in job_mod.FIELDS if f.stored and f.unset is job_mod.ALWAYS]


def _backticked(text: str, marks: str = "``") -> set[str]:
    return set(re.findall(re.escape(marks) + r"([a-z_]+)" + re.escape(marks), text))


def test_the_format_specification_lists_every_field_of_the_table():
    spec = L.__doc__.split("A job is one UTF-8 JSON object in one file.", 1)[1].split("Unknown fields are kept.")[0]
    assert _backticked(spec) == set(KNOWN)


def test_the_cli_reference_lists_every_field_a_caller_may_give():
    text = (ROOT / "docs" / "cli.md").read_text()
    table = text.split("## Job fields", 1)[1].split("\n\n", 2)[1]
    names = {name for row in table.splitlines()[2:] for name in _backticked(row.split("|")[1], "`")}
    assert names == {f.name for f in job_mod.FIELDS if f.given}
