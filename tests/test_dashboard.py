"""The dashboard in-process (Flask's test client) against hostile files and requests: odd
registrations, planted symlinks and fifos, foreign Host headers, odd page numbers and tokens.
(A real server and browser: tests/test_web.py.)"""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import spoolq
from spoolq import Spool
from spools import hostile_line, plant

flask = pytest.importorskip("flask")
from spoolq.web import create_app  # noqa: E402
from spoolq.web.access import Bound  # noqa: E402


# ---- observing review: the dashboard -------------------------------------------------------------


def client(spool: Spool, **kw):
    app = create_app(spool, **kw)
    app.testing = True
    return app.test_client()


def foreign_worker(spool: Spool, **extra) -> None:
    """A registration as another host's worker would leave it (anyone in the group can write one)."""
    spool.enqueue({"command": "true"})  # the spool's directories exist
    record = {"owner": "other-1-abc", "host": "other", "pid": 1, "role": "worker", **extra}
    with open(spool.layout.worker_file("other-1-abc"), "w") as f:
        json.dump(record, f)


# 3. A registration whose "queues" is not a list takes the whole overview page down (500).
@pytest.mark.review("observing 3")
def test_overview_survives_a_registration_with_odd_queues(spool):
    foreign_worker(spool, queues=5)
    c = client(spool)
    assert c.get("/api/overview").status_code == 200
    assert c.get("/").status_code == 200


def plant_in_output(spool, tmp_path, plant) -> None:
    """Job j, and at its log's path `plant(secret, path)`: a file of the dashboard user's."""
    secret = tmp_path / "secret"
    secret.write_text("the dashboard user's private key\n")
    spool.enqueue({"command": "true", "id": "j"})
    path = spool.output_path("j")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    plant(secret, path)


# 4. A job's log is opened following symlinks: a group member who links output/<id>.log to a
#    file of the dashboard's user has the dashboard serve that file to anyone who can reach it.
@pytest.mark.review("observing 4")
def test_dashboard_log_does_not_follow_a_symlink_planted_in_output(spool, tmp_path):
    plant_in_output(spool, tmp_path, os.symlink)
    r = client(spool).get("/job/j/log")
    assert "private key" not in r.get_data(as_text=True)


# 4b. The same by a hard link (where fs.protected_hardlinks is 0, anyone may link a file they
#     cannot read): root's dashboard of a service user's spool served root's file.
def test_a_log_that_is_a_hard_link_is_not_served_nor_printed(spool, tmp_path, run):
    plant_in_output(spool, tmp_path, os.link)
    assert "private key" not in client(spool).get("/job/j/log").get_data(as_text=True)
    assert "private key" not in client(spool).get("/api/job/j").get_data(as_text=True)
    shown = run("logs", "j")
    assert "private key" not in shown.stdout + shown.stderr
    assert "private key" not in run("show", "j", "--json").stdout


# 5. A fifo planted as output/<id>.log hangs the job page (and its log) for ever: open() blocks.
@pytest.mark.review("observing 5")
def test_job_page_does_not_hang_on_a_fifo_in_output(spool):
    import threading

    spool.enqueue({"command": "true", "id": "j"})
    path = spool.output_path("j")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mkfifo(path)
    c = client(spool)
    got = []
    t = threading.Thread(target=lambda: got.append(c.get("/api/job/j").status_code), daemon=True)
    t.start()
    t.join(3)
    hung = t.is_alive()
    if hung:  # let it go
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(5)
    assert not hung, "GET /api/job/j still blocked after 3 s"


# 6. No Host check: with the default bind (127.0.0.1, no --token), a page on another origin that
#    DNS-rebinds its own name to 127.0.0.1 is same-origin with the dashboard: it reads the CSRF
#    token from a page and posts actions (here: pauses the whole spool).
@pytest.mark.review("observing 6")
def test_dashboard_refuses_a_foreign_host_header(spool):
    spool.enqueue({"command": "true"})
    c = client(spool)
    base = "http://rebind.attacker.example:8765"
    assert c.get("/", base_url=base).status_code == 421 and c.get("/api/overview", base_url=base).status_code == 421
    assert c.post("/pause", data={"csrf": "x"}, base_url=base).status_code == 421
    assert "*" not in spool.paused()
    for name in ("http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765"):
        assert c.get("/", base_url=name).status_code == 200
    elsewhere = client(spool, token="t", bound=Bound("0.0.0.0", "0.0.0.0", 8765))  # any name: the token decides
    assert elsewhere.get("/", headers={"Authorization": "Bearer t"}, base_url=base).status_code == 200


# 11. str.isdigit() is true for digits int() refuses ('²', and any string past Python's 4300-digit
#     limit): ?page= and ?offset= then raise ValueError, a 500 instead of page 0 / offset 0.
@pytest.mark.review("observing 11")
@pytest.mark.parametrize("url", ["/jobs/done?page=%C2%B2", "/api/jobs/done?page=" + "9" * 5000,
                                 "/job/j/log?offset=%C2%B2", "/job/j/log?offset=" + "9" * 5000])
def test_odd_page_and_offset_values_are_not_a_server_error(spool, url):
    spool.enqueue({"command": "true", "id": "j"})
    app = create_app(spool)
    r = app.test_client().get(url)  # not in testing mode: what a browser gets
    assert r.status_code < 500, r.status_code


# 15. The log is served in byte chunks decoded with errors="replace": a character split by a
#     chunk's end (LOG_CHUNK, or a job mid-write when the page polls) shows as two U+FFFD, and
#     the offset has moved past it, so the page never shows it right.
@pytest.mark.review("observing 15")
def test_followed_log_does_not_mangle_a_character_split_by_a_chunk(spool):
    from spoolq import web

    spool.enqueue({"command": "true", "id": "j"})
    path = spool.output_path("j")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"a" * (web.LOG_CHUNK - 1) + "é\n".encode())
    c = client(spool)
    text, offset = "", 0
    for _ in range(3):
        r = c.get(f"/job/j/log?offset={offset}")
        text += r.get_data(as_text=True)
        offset = int(r.headers["X-Log-Offset"])
    assert "\ufffd" not in text and text.endswith("é\n")


def test_a_non_ascii_form_token_is_refused_not_a_server_error(spool):
    spool.enqueue({"command": "true"})
    r = create_app(spool).test_client().post("/pause", data={"csrf": "é"})
    assert r.status_code == 400, r.status_code


def test_a_bind_port_of_superscript_digits_is_refused_without_a_traceback(spool, spool_dir):
    spool.init()
    result = spoolq(spool_dir, "web", "--bind", "127.0.0.1:²", timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-300:]


def test_dashboard_metrics_recover_once_a_hostile_line_is_gone(spool):
    spool.enqueue({"command": "true"})
    path = plant(spool, "evil.0.jsonl", hostile_line('"\\ud800"', time.time() - 5))
    c = create_app(spool).test_client()
    c.get("/metrics")
    os.unlink(path)
    assert c.get("/metrics").status_code == 200  # the dashboard's Totals keep the bad name for good



# ---- a done list kept open: each file's finish time read once ------------------------------------


def test_a_done_list_refreshed_again_and_again_follows_every_change(spool, tmp_path):
    """The dashboard keeps done/'s order between refreshes (an lstat of each of 100,000 files was
    most of a refresh's 0.6 s). What it shows must still be what a fresh look shows: a job that
    finishes, one that is purged, and one whose file is replaced under the same name (a requeue
    that finishes again) each change the list at the next refresh."""
    from spoolq.web.board import DashboardState, Filter

    board = DashboardState(spool, read_only=True)

    def shown() -> list[str]:
        return [row["id"] for row in board.jobs(Filter("done"), 0)["jobs"]]

    def fresh() -> list[str]:
        return [v.id for v in Spool(spool.root).list_jobs(state="done")][::-1][:50]

    def run(*ids: str) -> None:
        for job_id in ids:
            spool.enqueue({"id": job_id, "command": "true"})
        assert spoolq(spool.root, "worker", "start", "--burst", "-q").returncode == 0

    run("a", "b", "c")
    assert shown() == fresh() == ["c", "b", "a"]
    run("d")
    assert shown() == fresh() == ["d", "c", "b", "a"]
    assert spoolq(spool.root, "purge", "b").returncode == 0
    assert shown() == fresh() == ["d", "c", "a"]
    assert spoolq(spool.root, "requeue", "a").returncode == 0  # a's file is written anew: another inode
    run()
    assert shown() == fresh() == ["a", "d", "c"]
