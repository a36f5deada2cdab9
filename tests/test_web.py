"""The web dashboard (`spoolq web`): a real server process, its pages, JSON and actions over HTTP,
and a real headless Chromium clicking through it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterator

import pytest

from conftest import SPOOLQ, wait_for
from spoolq import Spool
from spoolq.running.worker import Worker
from test_cli import quarantine
from test_observing import ctrl_c_works, parse_exposition, promtool_check

pytest.importorskip("flask", reason="the dashboard needs the web extra (the test extra installs it)")


def burst(spool: Spool) -> None:
    assert Worker(spool, burst=True, log=lambda _m: None).run() == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dashboard:
    """`spoolq web` as a real process on a free local port."""

    def __init__(self, spool: Spool, *args: str, bind: str | None = None, env: dict | None = None):
        self.bind = bind or f"127.0.0.1:{free_port()}"
        host, port = self.bind.rsplit(":", 1)
        self.port = int(port)
        self.address = connect_address(host.strip("[]"))
        self.url = f"http://[{self.address}]:{self.port}" if ":" in self.address else f"http://{self.address}:{self.port}"
        self.proc = subprocess.Popen([*SPOOLQ, "--spool", spool.root, "web", "--bind", self.bind, *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env={**os.environ, **(env or {})}, start_new_session=True,
                                     preexec_fn=ctrl_c_works)
        wait_for(self._answers, 20, "the dashboard to answer")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"spoolq web exited: {self.proc.stderr.read().decode()}")
        try:
            with socket.create_connection((self.address, self.port), timeout=1):
                return True
        except OSError:
            return False

    def get(self, path: str, headers: dict | None = None, opener=None) -> tuple[int, str, dict]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with (opener or urllib.request.build_opener()).open(request, timeout=30) as r:
                return r.status, r.read().decode(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), dict(e.headers)

    def post(self, path: str, form: dict, headers: dict | None = None, opener=None) -> int:
        data = urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {}, method="POST")
        opener = opener or urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(request, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def stop(self) -> str:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            _, err = self.proc.communicate()
        return err.decode(errors="replace")


def connect_address(host: str) -> str:
    """The address a client reaches a dashboard bound to `host` at (its loopback, if bound to all)."""
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a 303 is the answer itself
        return None


@pytest.fixture
def dashboard(spool) -> Iterator:
    started: list[Dashboard] = []

    def start(*args: str, **kwargs) -> Dashboard:
        d = Dashboard(spool, *args, **kwargs)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def a_spool_with_history(spool: Spool) -> dict[str, str]:
    spool.set_config("backoff_base", 0)
    ok = spool.enqueue({"command": "echo fine", "id": "ok-1"})
    dead = spool.enqueue({"command": "echo 'it broke' >&2; exit 2", "id": "broke-1", "max_retries": 1,
                          "queue": "mail"})
    burst(spool)
    later = spool.enqueue({"command": "true", "id": "later-1", "delay": 3600})
    return {"ok": ok.id, "dead": dead.id, "later": later.id}


# ---- over HTTP -------------------------------------------------------------------------------

def test_every_page_has_its_json_and_shows_what_the_spool_holds(spool, dashboard):
    ids = a_spool_with_history(spool)
    d = dashboard()
    status, html, headers = d.get("/")
    assert status == 200 and "text/html" in headers["Content-Type"] and "<svg" in html
    overview = json.loads(d.get("/api/overview")[1])
    assert overview["counts"] == {**spool.counts().to_dict()}
    assert overview["queues"]["mail"]["dead"] == 1 and overview["hour"]["total"]["done"] == 1
    assert overview["hour"]["total"]["failed_attempts"] == 2 and overview["day"]["series"]["bucket_seconds"] == 1800
    status, html, _ = d.get("/jobs/dead")
    assert status == 200 and ids["dead"] in html
    listed = json.loads(d.get("/api/jobs/dead")[1])
    assert [j["id"] for j in listed["jobs"]] == [ids["dead"]] and listed["total"] == 1
    assert [j["id"] for j in json.loads(d.get("/api/jobs/scheduled")[1])["jobs"]] == [ids["later"]]
    job = json.loads(d.get(f"/api/job/{ids['dead']}")[1])
    assert job["state"] == "dead" and [a["status"] for a in job["attempt_marks"]] == ["exit status 2"] * 2
    status, log, headers = d.get(f"/job/{ids['dead']}/log")
    assert "it broke" in log and int(headers["X-Log-Offset"]) == len(log.encode())
    assert d.get(f"/job/{ids['dead']}/log?offset={headers['X-Log-Offset']}")[1] == ""
    status, text, headers = d.get("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    promtool_check(text)
    assert parse_exposition(text)['spoolq_jobs{state="dead",queue="mail"}'] == 1
    assert d.get("/jobs/nonsense")[0] == 404 and d.get("/job/no-such-job")[0] == 404
    assert d.get("/job/..%2F..%2Fetc")[0] == 404


def test_a_jobs_command_and_output_are_shown_as_text_never_as_markup(spool, dashboard):
    evil = "<script>window.pwned=1</script><img src=x onerror=alert(1)>"
    job = spool.enqueue({"command": f"echo '{evil}'; exit 1", "max_retries": 0, "id": "evil"})
    burst(spool)
    d = dashboard()
    for path in ("/jobs/dead", f"/job/{job.id}", f"/jobs/dead?q={urllib.parse.quote(evil)}"):
        status, html, headers = d.get(path)
        assert status == 200 and "<script>window.pwned" not in html and "<img src=x" not in html
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in html
        assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert d.get(f"/job/{job.id}/log")[2]["Content-Type"].startswith("text/plain")


def test_lists_are_paged_and_searched_by_id_and_command(spool, dashboard):
    spool.enqueue_many([{"command": f"echo number-{i}", "id": f"n{i:03d}"} for i in range(120)])
    spool.enqueue({"command": "echo needle", "id": "other"})
    d = dashboard()
    pages = [json.loads(d.get(f"/api/jobs/pending?page={p}")[1]) for p in range(3)]
    assert [len(p["jobs"]) for p in pages] == [50, 50, 21] and pages[0]["pages"] == 3
    assert [j["id"] for p in pages for j in p["jobs"]] == [v.id for v in spool.list_jobs("pending")]
    assert [j["id"] for j in json.loads(d.get("/api/jobs/pending?q=n11")[1])["jobs"]] == [f"n11{i}" for i in range(10)]
    found = json.loads(d.get("/api/jobs/pending?q=needle")[1])
    assert [j["id"] for j in found["jobs"]] == ["other"] and found["total"] == 1
    assert 'id="next"' in d.get("/jobs/pending")[1] and 'id="next"' not in d.get("/jobs/pending?page=2")[1]


def test_actions_need_the_forms_token_and_are_refused_read_only(spool, dashboard):
    ids = a_spool_with_history(spool)
    d = dashboard()
    assert d.post(f"/job/{ids['dead']}/retry", {}) == 400  # no CSRF token: a page elsewhere cannot do this
    assert d.post(f"/job/{ids['dead']}/retry", {"csrf": "guessed"}) == 400
    assert d.post("/pause", {}) == 400
    assert spool.find(ids["dead"]).state == "dead" and not spool.paused()
    ro = dashboard("--read-only")
    status, html, _ = ro.get(f"/job/{ids['dead']}")
    assert status == 200 and 'id="retry"' not in html and "pause all" not in ro.get("/")[1]
    assert ro.post(f"/job/{ids['dead']}/retry", {"csrf": "x"}) == 403
    assert spool.find(ids["dead"]).state == "dead"


def csrf_of(d: Dashboard, opener, path: str = "/") -> str:
    return re.search(r'name="csrf" value="([^"]+)"', d.get(path, opener=opener)[1])[1]


def dead_jobs(spool: Spool, n: int, queue: str | None = None, prefix: str = "d") -> list[str]:
    spool.enqueue_many([{"command": "exit 3", "max_retries": 0, "id": f"{prefix}{i:04d}",
                         **({"queue": queue} if queue else {})} for i in range(n)])
    burst(spool)
    return [f"{prefix}{i:04d}" for i in range(n)]


def ids_of(listing: dict) -> list[str]:
    return [j["id"] for j in listing["jobs"]]


def test_done_and_dead_lists_show_the_newest_first_and_jump_to_either_end(spool, dashboard):
    for i in range(60):  # one at a time, so that each finishes after the one before (or with it: then by id)
        spool.enqueue({"command": "true", "id": f"j{i:03d}"})
        burst(spool)
    d = dashboard()
    first, last = (json.loads(d.get(f"/api/jobs/done?page={p}")[1]) for p in ("0", "last"))
    assert ids_of(first)[0] == "j059" and ids_of(last)[-1] == "j000" and last["page"] == 1
    assert first["order"] == "newest first"
    page = d.get("/jobs/done")[1]
    assert 'href="/jobs/done?page=last" id="last"' in page
    assert ">oldest »<" in page and 'id="first"' in d.get("/jobs/done?page=last")[1]
    spool.enqueue_many([{"command": "true", "id": f"p{i}", "priority": i} for i in range(3)])
    assert ids_of(json.loads(d.get("/api/jobs/pending")[1])) == [v.id for v in spool.list_jobs("pending")]


def test_lists_filter_by_queue_and_the_queue_table_links_to_them(spool, dashboard):
    dead_jobs(spool, 3, "mail", "m")
    dead_jobs(spool, 2, None, "x")
    spool.enqueue_many([{"command": "true", "id": f"r{i}", "queue": "reports"} for i in range(2)])
    spool.enqueue({"command": "true", "id": "plain"})
    d = dashboard()
    assert ids_of(json.loads(d.get("/api/jobs/dead?queue=mail")[1])) == ["m0002", "m0001", "m0000"]
    assert ids_of(json.loads(d.get("/api/jobs/pending?queue=reports")[1])) == ["r0", "r1"]
    assert ids_of(json.loads(d.get("/api/jobs/dead?queue=mail&q=m0001")[1])) == ["m0001"]
    assert d.get("/api/jobs/dead?queue=../x")[0] == 400
    overview = d.get("/")[1]
    assert 'href="/jobs/dead?queue=mail">3<' in overview and 'href="/jobs/pending?queue=reports">2<' in overview


@pytest.mark.slow
def test_bulk_actions_ask_first_then_act_on_thousands_in_one_request_and_say_what_they_did(spool, dashboard):
    ids = dead_jobs(spool, 1500)
    d = dashboard()
    opener, _ = cookie_jar()
    csrf = csrf_of(d, opener, "/jobs/dead")
    everything = {"csrf": csrf, "action": "retry", "scope": "all"}
    assert d.post("/bulk/dead", {**everything, "csrf": "guessed"}, opener=opener) == 400
    status, question = post_redirect(d, "/bulk/dead", everything, opener)  # asked by a page of its own
    status, page, _ = d.get(question, opener=opener)
    assert status == 200 and "retry 1500 dead jobs?" in page and spool.counts().dead == 1500  # asked, not done
    status, location = post_redirect(d, "/bulk/dead", {**everything, "confirmed": "yes"}, opener)
    assert status == 303 and location.endswith("/jobs/dead")  # what it did is said by the page, once
    assert spool.counts().pending == 1500 and spool.counts().dead == 0
    assert "retried 1500 jobs" in d.get(location, opener=opener)[1]
    burst(spool)
    picked = {"csrf": csrf, "action": "delete", "scope": "selected", "id": ids[:2], "confirmed": "yes"}
    status, location = post_redirect(d, "/bulk/dead", picked, opener)
    assert "deleted 2 jobs" in d.get(location, opener=opener)[1] and spool.counts().dead == 1498
    assert {"d0000", "d0001"}.isdisjoint(v.id for v in spool.list_jobs("dead", limit=5000))
    ro = dashboard("--read-only")
    assert ro.post("/bulk/dead", {**everything, "confirmed": "yes"}) == 403
    assert 'id="bulk"' not in ro.get("/jobs/dead")[1] and spool.counts().dead == 1498


def post_page(d: Dashboard, path: str, form: dict, opener) -> tuple[int, str, dict]:
    data = urllib.parse.urlencode(form, doseq=True).encode()
    request = urllib.request.Request(d.url + path, data=data, method="POST")
    try:
        with opener.open(request, timeout=60) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def post_redirect(d: Dashboard, path: str, form: dict, opener) -> tuple[int, str]:
    status, _, headers = post_page(d, path, form, opener)
    return status, headers.get("Location", "")


def test_a_bulk_action_stops_at_its_budget_and_says_there_is_more(spool):
    from spoolq.web import bulk

    ids = dead_jobs(spool, bulk.BATCH + 5)
    quarantine(spool, "junk.json", b"not json")
    dead = [v.id for v in spool.list_jobs("dead")]
    outcome = bulk.run(spool, "retry", iter(dead), budget=0)
    assert outcome.done == bulk.BATCH and outcome.left and "press again" in outcome.said()
    assert (spool.counts().dead, spool.counts().quarantined) == (5, 1)
    outcome = bulk.run(spool, "retry", (v.id for v in spool.list_jobs("dead")))
    assert (outcome.done, outcome.skipped, outcome.left) == (5, 1, False)
    assert outcome.said() == "retried 5 jobs; 1 quarantined file skipped (they cannot run: delete them)"
    assert spool.counts().pending == len(ids)


def test_every_job_waiting_for_a_dead_one_is_counted_without_reading_job_files(spool, dashboard):
    """From the after/ edges: 250 waiters of a dead job and 50 of a live one (the overview read
    the first 200 waiting job files, and said at most 200)."""
    dead = spool.enqueue({"command": "true", "id": "dep"})
    spool.enqueue({"command": "true", "id": "live"})
    spool.enqueue_many([{"command": "true", "after": ["dep"]} for _ in range(250)] +
                       [{"command": "true", "after": ["live"]} for _ in range(50)])
    os.rename(spool.find(dead.id).path, os.path.join(spool.layout.dead, "dep.json"))  # died, waiters not judged
    said = [b["text"] for b in json.loads(dashboard().get("/api/overview")[1])["blockers"]]
    assert "250 waiting jobs wait for a dead job (they go dead at the next recovery sweep; fsck says which)" in said, said


def test_what_blocks_progress_is_said_first(spool, dashboard):
    spool.enqueue_many([{"command": "true", "queue": "mail"}, {"command": "true", "queue": "reports"}])
    spool.pause("reports")
    spool.slots.set_limit("mail", 1)
    assert spool.slots.take("mail", "someone-else") is not None
    dep = spool.enqueue({"command": "true", "id": "dep"})
    spool.enqueue({"command": "true", "id": "waiter", "after": ["dep"]})
    os.rename(spool.find(dep.id).path, os.path.join(spool.layout.dead, "dep.json"))  # died, waiter not judged
    d = dashboard()
    said = [b["text"] for b in json.loads(d.get("/api/overview")[1])["blockers"]]
    assert said == ["no worker is running: 2 ready jobs wait", "queue mail is at its concurrency limit (1 running): "
                    "1 ready job waits", "queue reports is paused: 1 ready job waits",
                    "1 waiting job waits for a dead job (they go dead at the next recovery sweep; fsck says which)"]
    page = d.get("/")[1]
    assert page.index('id="blockers"') < page.index('class="counts"') and 'class="count alarm"' in page
    assert "queue reports is paused: none of its jobs starts" in d.get("/jobs/pending?queue=reports")[1]
    assert json.loads(d.get("/api/jobs/pending")[1])["blocked"] == "no worker is running: no job starts"


def test_a_quarantined_file_offers_what_can_work(spool, dashboard):
    qid = quarantine(spool, "junk.json", b"{not json \xff")
    d = dashboard()
    opener, _ = cookie_jar()
    status, page, _ = d.get(f"/job/{qid}", opener=opener)
    assert status == 200 and 'id="retry"' not in page and 'id="requeue"' not in page and 'id="delete"' in page
    assert "{not json \\xff" in page and "cannot be" in page and "retried or requeued" in page
    csrf = csrf_of(d, opener, f"/job/{qid}")
    assert d.post(f"/job/{qid}/delete", {"csrf": csrf}, opener=opener) == 400  # the box not ticked
    assert spool.quarantine.exists(qid)
    assert d.post(f"/job/{qid}/delete", {"csrf": csrf, "sure": "yes"}, opener=opener) == 303
    assert not spool.quarantine.exists(qid) and spool.counts().dead == 0


def test_an_unknown_address_is_answered_in_the_dashboards_own_style(spool, dashboard):
    spool.init()
    d = dashboard()
    status, page, headers = d.get("/no-such-page")
    assert status == 404 and 'id="nav-dead"' in page and 'id="error"' in page and "text/html" in headers["Content-Type"]
    status, body, headers = d.get("/api/no-such-thing")
    assert status == 404 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": "no such address here (the overview's JSON is /api/overview; "
                                         "docs/operating.md lists the rest)", "status": 404}
    assert json.loads(d.get("/api/job/no-such-job")[1])["error"] == "no job 'no-such-job'"
    assert d.get("/pause")[0] == 405 and 'id="error"' in d.get("/pause")[1]


def test_the_dead_counts_of_the_cards_and_the_queue_table_agree(spool, dashboard):
    dead_jobs(spool, 2, "mail")
    quarantine(spool, "junk.json", b"not json")
    d = dashboard()
    overview = json.loads(d.get("/api/overview")[1])
    rows = [*overview["queues"].values(), overview["no_queue"]]
    assert overview["counts"]["dead"] == 2 == sum(row["dead"] for row in rows)  # a quarantined file is no job
    assert overview["counts"]["quarantined"] == 1 and 'id="count-quarantined"' in d.get("/")[1]


def test_the_charts_label_their_axes_and_tell_each_buckets_counts_on_hover(spool, dashboard):
    a_spool_with_history(spool)
    d = dashboard()
    charts = re.findall(r'<svg class="chart".*?</svg>', d.get("/")[1], re.S)
    assert len(charts) == 2
    for svg in charts:  # readable without colour: the legend names the bars by their shape
        assert "time (UTC)</text>" in svg and ">jobs</text>" in svg and "failed attempts (narrow)" in svg
    hovers = re.findall(r"<title>\d\d:\d\d–\d\d:\d\d UTC: (\d+) finished, (\d+) failed attempts?</title>", charts[0])
    assert len(hovers) == 60  # finished: the done job and the dead one; failed: a retry and the last
    assert sum(int(f) for f, _ in hovers) == 2 and sum(int(a) for _, a in hovers) == 2
    from spoolq.web.charts import nice_top

    assert [nice_top(v) for v in (0, 1, 3, 7, 11, 150, 4000)] == [1, 1, 5, 10, 20, 200, 5000]


def cookie_jar() -> tuple:
    """An opener that keeps cookies as a browser does (for a host, whatever its port) and shows
    a redirect as the answer itself."""
    import http.cookiejar

    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect), jar


def test_a_token_guards_every_request(spool, dashboard):
    spool.init()
    d = dashboard(env={"SPOOLQ_WEB_TOKEN": "s3cret"})
    for path in ("/", "/api/overview", "/metrics", "/static/live.js", "/no-such-page"):
        assert d.get(path)[0] == 401
    assert d.get("/api/overview", {"Authorization": "Bearer s3cret"})[0] == 200
    assert d.get("/api/overview", {"Authorization": "bearer s3cret"})[0] == 200  # a scheme's name has no case
    assert d.get("/metrics", {"Authorization": "Bearer s3cre"})[0] == 401
    assert d.get("/metrics", {"Authorization": "Basic s3cret"})[0] == 401
    assert d.get("/metrics", {"Cookie": "spoolq_token=s3cret"})[0] == 401  # the token is never a cookie


def test_a_token_beyond_ascii_is_taken_from_a_bearer_header_as_from_the_form(spool, dashboard):
    token = "pässwörd-ü"
    spool.init()
    d = dashboard(env={"SPOOLQ_WEB_TOKEN": token})
    as_sent = f"Bearer {token}".encode("utf-8").decode("latin-1")  # the header's UTF-8 bytes, as curl sends them
    assert d.get("/api/overview", {"Authorization": as_sent})[0] == 200
    assert d.get("/api/overview", {"Authorization": "Bearer pässwörd-u"})[0] == 401
    opener, _ = cookie_jar()
    assert d.get("/?token=" + urllib.parse.quote(token), opener=opener)[0] in (302, 303)  # logged in, sent on
    assert d.get("/api/overview", opener=opener)[0] == 200


def test_no_page_of_a_spool_is_kept_in_a_cache(spool, dashboard):
    """Pages, the API, /metrics, errors and refusals say no-store (a browser's disk cache, a proxy
    between); a static file, which holds nothing of the spool, is revalidated instead."""
    a_spool_with_history(spool)
    d = dashboard(env={"SPOOLQ_WEB_TOKEN": "s3cret"})
    bearer = {"Authorization": "Bearer s3cret"}
    for path in ("/", "/jobs/dead", "/api/overview", "/metrics", "/no-such-page"):
        assert d.get(path, bearer)[2]["Cache-Control"] == "no-store", path
    assert d.get("/", {})[2]["Cache-Control"] == "no-store"  # the refusal too
    assert d.get("/static/live.js", bearer)[2]["Cache-Control"] != "no-store"


def test_wrong_tokens_are_answered_one_at_a_time_and_a_right_one_at_once(spool, dashboard):
    """Guessing: four wrong tokens sent at once (a bearer, a ?token=, a form's POST) are answered
    WRONG_TOKEN_PAUSE apart, so guesses cannot outrun a few a second however many are sent; a
    right token sent meanwhile is not kept in their line."""
    import threading
    from spoolq.web.access import WRONG_TOKEN_PAUSE
    spool.init()
    d = dashboard(env={"SPOOLQ_WEB_TOKEN": "s3cret"})
    wrong = [lambda: d.get("/api/overview", {"Authorization": "Bearer guess1"}),
             lambda: d.get("/api/overview", {"Authorization": "Bearer guess2"}),
             lambda: d.get("/?token=guess3"),
             lambda: (d.post("/login", {"token": "guess4", "next": "/"}),)]
    statuses: list[int] = []
    began = time.monotonic()
    guesses = [threading.Thread(target=lambda ask=ask: statuses.append(ask()[0])) for ask in wrong]
    for guess in guesses:
        guess.start()
    right_began = time.monotonic()
    assert d.get("/api/overview", {"Authorization": "Bearer s3cret"})[0] == 200
    right_took = time.monotonic() - right_began
    for guess in guesses:
        guess.join(30)
    assert sorted(statuses) == [401] * 4
    assert time.monotonic() - began >= 4 * WRONG_TOKEN_PAUSE  # in line, not side by side
    assert right_took < 2 * WRONG_TOKEN_PAUSE, right_took  # not behind the four


@pytest.mark.slow  # seconds of waiting: the full suite's
def test_a_flood_of_wrong_tokens_is_turned_away_beyond_a_short_line(spool, dashboard):
    """Forty wrong tokens at once: no more than WRONG_TOKENS_WAITING (and the one that may have
    left the line meanwhile) wait their turn, each a thread of the server; the rest are answered
    429 at once. A right token still gets in."""
    import threading
    from spoolq.web.access import WRONG_TOKENS_WAITING
    spool.init()
    d = dashboard(env={"SPOOLQ_WEB_TOKEN": "s3cret"})
    statuses: list[int] = []
    guesses = [threading.Thread(target=lambda i=i: statuses.append(
        d.get("/api/overview", {"Authorization": f"Bearer guess{i}"})[0])) for i in range(40)]
    for guess in guesses:
        guess.start()
    for guess in guesses:
        guess.join(60)
    assert len(statuses) == 40 and set(statuses) <= {401, 429}
    # The line lets one more in every WRONG_TOKEN_PAUSE while the forty arrive: on a loaded
    # machine that may take seconds, so the bound is loose; without a line none would be 429.
    assert WRONG_TOKENS_WAITING <= statuses.count(401) <= 20 and statuses.count(429) >= 20, statuses
    assert d.get("/api/overview", {"Authorization": "Bearer s3cret"})[0] == 200


@pytest.mark.slow  # seconds of waiting: the full suite's
def test_a_full_line_of_guesses_turns_the_right_token_away_too(spool, dashboard):
    """While guesses keep the line full, a 429 must not depend on the token: if only a wrong one
    got it (and a right one got in), each guess would be told at once, as fast as the server
    answers. A session is never in the line; once the flood ends the right token gets in."""
    import threading
    spool.init()
    d = dashboard(env={"SPOOLQ_WEB_TOKEN": "s3cret"})
    stop = threading.Event()

    def guess(i: int) -> None:
        while not stop.is_set():
            d.get("/api/overview", {"Authorization": f"Bearer guess{i}"})

    flood = [threading.Thread(target=guess, args=(i,)) for i in range(16)]
    for thread in flood:
        thread.start()
    try:
        wait_for(lambda: d.get("/api/overview", {"Authorization": "Bearer probe"})[0] == 429, timeout=30)
        rights = [d.get("/api/overview", {"Authorization": "Bearer s3cret"})[0] for _ in range(5)]
    finally:
        stop.set()
        for thread in flood:
            thread.join(60)
    assert set(rights) <= {200, 429} and rights.count(429) >= 3, rights
    wait_for(lambda: d.get("/api/overview", {"Authorization": "Bearer s3cret"})[0] == 200, timeout=30)


@pytest.mark.parametrize("guess", ["guess", "", "s3cre", "s3cret ", "s3cret&token=s3cret"])
def test_a_wrong_token_gets_nothing_that_lets_it_in(spool, dashboard, guess):
    """A failed request's answer carries no cookie: sending back whatever it got is still refused."""
    spool.init()
    d = dashboard(env={"SPOOLQ_WEB_TOKEN": "s3cret"})
    opener, jar = cookie_jar()
    for path in (f"/?token={urllib.parse.quote(guess)}", f"/api/overview?token={urllib.parse.quote(guess)}"):
        status, body, headers = d.get(path, opener=opener)
        assert status == 401 and "Set-Cookie" not in headers and "s3cret" not in body
    assert list(jar) == []
    assert d.get("/", opener=opener)[0] == 401 and d.get("/api/overview", opener=opener)[0] == 401


def flask_session(value: str) -> bytes:
    """What a Flask session cookie holds, decoded (it is signed, not encrypted: anyone can read it)."""
    import base64
    import zlib

    compressed = value.startswith(".")
    payload = value.lstrip(".").split(".")[0]
    data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return zlib.decompress(data) if compressed else data


def test_a_token_is_exchanged_once_for_a_session_that_holds_no_token(spool, dashboard):
    ids = a_spool_with_history(spool)
    d = dashboard(env={"SPOOLQ_WEB_TOKEN": "s3cret"})
    opener, jar = cookie_jar()
    status, _, headers = d.get("/jobs/dead?q=broke&token=s3cret", opener=opener)
    assert status == 303 and headers["Location"] == "/jobs/dead?q=broke"  # out of the address bar at once
    assert headers["Cache-Control"] == "no-store"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"spoolq_{d.port}=") and "; HttpOnly" in cookie and "; SameSite=Strict" in cookie
    assert "; Path=/" in cookie and "Domain" not in cookie and "Expires=" in cookie
    [session] = list(jar)
    assert "s3cret" not in session.value and b"s3cret" not in flask_session(session.value)
    assert 11 * 3600 < session.expires - __import__("time").time() <= 12 * 3600
    status, html, headers = d.get("/jobs/dead?q=broke", opener=opener)
    assert status == 200 and ids["dead"] in html and headers["Referrer-Policy"] == "no-referrer"
    assert d.get("/api/overview", opener=opener)[0] == 200 and d.get("/metrics", opener=opener)[0] == 200
    assert d.get("//evil.example/?token=s3cret", opener=opener)[2]["Location"] == "/evil.example/"
    d.stop()  # a session ends with its dashboard: the same token, the same port, a new process
    again = dashboard(env={"SPOOLQ_WEB_TOKEN": "s3cret"}, bind=d.bind)
    assert again.get("/", opener=opener)[0] == 401


HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}  # as a browser asks


def log_in(d: Dashboard, form: dict, opener) -> tuple[int, str | None]:
    """POST /login: its status, and where it sends the browser."""
    request = urllib.request.Request(d.url + "/login", data=urllib.parse.urlencode(form).encode(), method="POST")
    try:
        with opener.open(request, timeout=30) as r:
            return r.status, r.headers.get("Location")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Location")


def test_a_browser_is_asked_for_the_token_by_a_form_that_keeps_it_out_of_every_url(spool, dashboard):
    a_spool_with_history(spool)
    d = dashboard(env={"SPOOLQ_WEB_TOKEN": "s3cret"})
    opener, jar = cookie_jar()
    status, page, headers = d.get("/jobs/dead?q=broke", HTML, opener=opener)
    assert status == 401 and 'type="password" name="token"' in page and 'value="/jobs/dead?q=broke"' in page
    assert "Set-Cookie" not in headers and spool.root not in page and "csrf" not in page
    assert d.get("/jobs/dead", opener=opener)[1].startswith("a token is needed")  # a script gets one line
    assert log_in(d, {"token": "s3cre", "next": "/jobs/dead"}, opener) == (401, None) and list(jar) == []
    assert log_in(d, {"token": "s3cret", "next": "/jobs/dead?q=broke"}, opener) == (303, "/jobs/dead?q=broke")
    assert d.get("/jobs/dead?q=broke", opener=opener)[0] == 200


@pytest.mark.parametrize("target", ["//evil.example/", "/\\evil.example", "https://evil.example/", "/\t/evil.example",
                                    "javascript:alert(1)", "", "/jobs/dead\r\nSet-Cookie: x=1", "/jobs/é"])
def test_a_log_in_never_sends_the_browser_elsewhere(spool, dashboard, target):
    spool.init()
    d = dashboard(env={"SPOOLQ_WEB_TOKEN": "s3cret"})
    assert log_in(d, {"token": "s3cret", "next": target}, cookie_jar()[0]) == (303, "/")


def test_a_session_can_act_and_read_only_still_refuses(spool, dashboard):
    ids = a_spool_with_history(spool)
    opener, _ = cookie_jar()
    ro = dashboard("--read-only", env={"SPOOLQ_WEB_TOKEN": "s3cret"})
    assert ro.get("/?token=s3cret", opener=opener)[0] == 303
    assert ro.post(f"/job/{ids['dead']}/retry", {"csrf": "x"}, opener=opener) == 403
    assert spool.find(ids["dead"]).state == "dead"
    d = dashboard(env={"SPOOLQ_WEB_TOKEN": "s3cret"})
    assert d.get("/?token=s3cret", opener=opener)[0] == 303
    html = d.get(f"/job/{ids['dead']}", opener=opener)[1]
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)[1]
    assert d.post(f"/job/{ids['dead']}/retry", {"csrf": "x"}, opener=opener) == 400
    assert d.post(f"/job/{ids['dead']}/retry", {"csrf": csrf}) == 401  # the form's token alone lets nothing in
    assert d.post(f"/job/{ids['dead']}/retry", {"csrf": csrf}, opener=opener) == 303
    assert spool.find(ids["dead"]).state == "pending"


@pytest.mark.slow
def test_two_dashboards_on_one_host_keep_their_own_cookies(spool, dashboard):
    """A browser sends a host's cookies to every port of it: each dashboard's cookie has its own name."""
    ids = a_spool_with_history(spool)
    opener, _ = cookie_jar()
    a, b = dashboard(env={"SPOOLQ_WEB_TOKEN": "token-a"}), dashboard(env={"SPOOLQ_WEB_TOKEN": "token-b"})
    assert a.get("/?token=token-a", opener=opener)[0] == 303 and b.get("/?token=token-b", opener=opener)[0] == 303
    assert a.get("/", opener=opener)[0] == 200 and b.get("/", opener=opener)[0] == 200
    plain_a, plain_b = dashboard(), dashboard()  # no token: each keeps its own form token
    form_a = re.search(r'name="csrf" value="([^"]+)"', plain_a.get(f"/job/{ids['dead']}", opener=opener)[1])[1]
    assert plain_b.get("/", opener=opener)[0] == 200
    assert plain_a.post(f"/job/{ids['dead']}/retry", {"csrf": form_a}, opener=opener) == 303


def test_no_token_reaches_the_access_log(spool, dashboard):
    spool.init()
    d = dashboard(env={"SPOOLQ_WEB_TOKEN": "s3cret"})
    opener, _ = cookie_jar()
    assert d.get("/?token=s3cret", opener=opener)[0] == 303
    assert d.get("/api/overview?token=s3cret&x=1", opener=cookie_jar()[0])[0] == 303
    assert d.get("/?token=wrong")[0] == 401
    assert d.get("/metrics", {"Authorization": "Bearer s3cret"})[0] == 200
    with socket.create_connection((d.address, d.port), timeout=10) as s:  # a request line http.server refuses
        s.sendall(b"GET /?token=s3cret junk HTTP/1.1\r\n\r\n")
        assert wait_for(lambda: b"400" in s.recv(4096), 10, "the refusal")
    err = re.sub(r"\x1b\[[0-9;]*m", "", d.stop())  # werkzeug colours its lines
    assert "s3cret" not in err and "?" not in err
    assert '"GET / HTTP/1.1" 303' in err and '"GET /api/overview HTTP/1.1" 303' in err and "/metrics" in err


def loopback_host_name() -> str:
    """This host's own name when it resolves to the loopback (Debian's 127.0.1.1), else localhost."""
    name = socket.gethostname()
    try:
        address = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)[0][4][0]
    except OSError:
        return "localhost"
    return name if address.startswith("127.") else "localhost"


LOOPBACK_BINDS = ["127.0.0.1", "127.0.0.2", "127.1", "127.0.1.1", "[::1]", "[::ffff:127.0.0.1]", "localhost",
                  loopback_host_name()]


@pytest.mark.parametrize("host, loopback", [*((h, True) for h in LOOPBACK_BINDS), ("0.0.0.0", False), ("[::]", False)])
def test_the_rebinding_guard_and_the_warning_follow_the_address_not_its_spelling(spool, host, loopback):
    """Bound to any loopback address, however spelled, with no token: a request naming another
    host (a page whose name an attacker rebinds to it) is refused, and no warning. Bound beyond the
    loopback: a warning that says where, and no Host check (the names it is reached by are unknown)."""
    spool.init()
    d = Dashboard(spool, bind=f"{host}:{free_port()}")
    try:
        rebound = d.get("/api/overview", {"Host": f"rebind.attacker.example:{d.port}"})
        assert rebound[0] == (421 if loopback else 200)
        assert d.post("/pause", {"csrf": "x"}, {"Host": "rebind.attacker.example"}) == (421 if loopback else 400)
        assert d.get("/api/overview")[0] == 200  # by its address
        if not host.startswith("["):
            assert d.get("/api/overview", {"Host": f"{host}:{d.port}"})[0] == 200  # by the name it was bound by
    finally:
        err = d.stop()
    assert ("Warning" in err) == (not loopback)
    if not loopback:
        assert f"Warning: serving {spool.root} on {host.strip('[]')} (every address of this host)" in err
        assert "to anyone who can reach it, with no --token" in err
    assert not spool.paused()


def test_binding_beyond_the_loopback_with_a_token_does_not_warn(spool):
    spool.init()
    quiet = Dashboard(spool, "--token", "t", bind=f"0.0.0.0:{free_port()}")
    assert "Warning" not in quiet.stop()


@pytest.mark.parametrize("host, answered", [
    ("127.0.0.1:8765", True), ("127.0.0.2:8765", True), ("LOCALHOST:8765", True), ("localhost.", True),
    ("[::1]:8765", True), ("[::ffff:127.0.0.1]:8765", True), ("[::FFFF:7F00:1]", True), ("my-box:8765", True),
    ("rebind.attacker.example", False), ("rebind.attacker.example:8765", False), ("REBIND.attacker.example.", False),
    ("127.0.0.1.attacker.example", False), ("localhost.attacker.example:8765", False),
    ("attacker.example@127.0.0.1", False), ("127.0.0.1:8765@attacker.example", False),
    ("[::1].attacker.example", False), ("[fe80::1]:8765", False), ("0.0.0.0:8765", False), ("2130706433", False),
    ("127.0.0.1:8765:81", False), ("", False)])
def test_the_host_check_has_no_spelling_that_lets_a_foreign_name_in(spool, host, answered):
    from spoolq.web import create_app
    from spoolq.web.access import Bound

    spool.init()
    app = create_app(spool, bound=Bound("my-box", "127.0.1.1", 8765))
    app.testing = True
    status = app.test_client().get("/api/overview", headers={"Host": host}).status_code
    assert status == (200 if answered else 421)


@pytest.mark.parametrize("bind", ["nonsense", "127.0.0.1:0", "127.0.0.1:99999", ":80", "127.0.0.1:http"])
def test_a_bind_that_is_not_host_port_is_refused(spool, bind):
    spool.init()
    result = subprocess.run([*SPOOLQ, "--spool", spool.root, "web", "--bind", bind], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "--bind" in result.stderr and "Traceback" not in result.stderr


def test_a_port_in_use_is_one_line(spool):
    spool.init()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = subprocess.run([*SPOOLQ, "--spool", spool.root, "web", "--bind", f"127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "cannot listen" in result.stderr and "Traceback" not in result.stderr


# ---- in a real browser -----------------------------------------------------------------------

@pytest.fixture
def browser(tmp_path) -> Iterator:
    """Headless Chromium driven by selenium (Debian's chromium and chromium-driver; .ci/run
    installs them). Skipped without them, unless SPOOLQ_REQUIRE_BROWSER=1 (CI)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        if os.environ.get("SPOOLQ_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium and chromedriver are required here (SPOOLQ_REQUIRE_BROWSER=1)")
        pytest.skip("the browser tests need Debian's chromium and chromium-driver (.ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    b = webdriver.Chrome(service=Service(driver), options=options)
    b.implicitly_wait(0)
    try:
        yield b
    finally:
        b.quit()


def until(browser, predicate, timeout: float = 20, what: str = "the page") -> object:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # A live part is swapped for its new version every 2 s: an element found just before is stale.
    return WebDriverWait(browser, timeout, poll_frequency=0.05,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(
        lambda b: predicate(b), f"waited for {what}")


def by_id(browser, element_id: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id)


@pytest.mark.slow
def test_click_from_the_overview_to_a_dead_job_and_retry_it(spool, dashboard, browser, tmp_path):
    ids = a_spool_with_history(spool)
    d = dashboard()
    browser.get(d.url + "/")
    assert by_id(browser, "count-dead").text.split()[0] == "1"
    by_id(browser, "count-dead").click()
    until(browser, lambda b: b.current_url.endswith("/jobs/dead"), what="the dead list")
    from selenium.webdriver.common.by import By

    links = browser.find_elements(By.CSS_SELECTOR, "a.job-link")
    assert [a.text for a in links] == [ids["dead"]]
    links[0].click()
    until(browser, lambda b: by_id(b, "job-id").text == ids["dead"], what="the job page")
    assert by_id(browser, "job-state").text == "dead" and "it broke" in until(
        browser, lambda b: by_id(b, "log").text, what="the log")
    by_id(browser, "retry").click()
    until(browser, lambda b: b.find_elements(By.ID, "said") and by_id(b, "said").text == "retried", what="retried")
    assert until(browser, lambda b: by_id(b, "job-state").text) == "pending"
    assert spool.find(ids["dead"]).state == "pending"
    browser.save_screenshot(str(tmp_path / "job-page.png"))
    assert (tmp_path / "job-page.png").stat().st_size > 1000


@pytest.mark.slow
def test_a_job_page_follows_the_job_without_reloading(spool, dashboard, browser, workers, tmp_path):
    gate = tmp_path / "gate"
    job = spool.enqueue({"command": f"echo started; while [ ! -e {gate} ]; do sleep 0.01; done; echo finished"})
    d = dashboard()
    browser.get(f"{d.url}/job/{job.id}")
    assert by_id(browser, "job-state").text == "pending"
    browser.execute_script("window.sameLoad = 'yes'")  # gone if the page were loaded again
    workers(1)
    until(browser, lambda b: by_id(b, "job-state").text == "processing", what="processing")
    until(browser, lambda b: "started" in by_id(b, "log").text, what="the first output")
    gate.touch()
    until(browser, lambda b: by_id(b, "job-state").text == "done", what="done")
    until(browser, lambda b: "finished" in by_id(b, "log").text, what="the last output")
    assert browser.execute_script("return window.sameLoad") == "yes"
    assert until(browser, lambda b: by_id(b, "log").text).count("started") == 1  # followed, never twice


@pytest.mark.slow
def test_the_overview_counts_move_as_jobs_finish_and_a_screenshot_is_made(spool, dashboard, browser, workers,
                                                                         tmp_path):
    a_spool_with_history(spool)
    d = dashboard()
    browser.get(d.url + "/")
    before = int(by_id(browser, "count-done").text.split()[0])
    gate = tmp_path / "gate"
    spool.enqueue({"command": f"while [ ! -e {gate} ]; do sleep 0.01; done", "id": "slow-report",
                   "queue": "reports"})
    spool.enqueue_many([{"command": "true", "queue": q} for q in ("default", "mail", "reports") for _ in range(5)])
    workers(2)
    until(browser, lambda b: "slow-report" in by_id(b, "running").text, what="the running job")
    until(browser, lambda b: int(by_id(b, "count-done").text.split()[0]) == before + 15, what="the done count")
    shoot(browser, tmp_path, "screenshot.png")  # the README's picture of the overview
    gate.touch()
    until(browser, lambda b: "no job running" in by_id(b, "running").text, what="nothing running")


@pytest.mark.slow
def test_a_browser_gives_the_token_once_and_keeps_a_session(spool, dashboard, browser):
    ids = a_spool_with_history(spool)
    d = dashboard(env={"SPOOLQ_WEB_TOKEN": "s3cret"})
    browser.get(f"{d.url}/job/{ids['dead']}?token=s3cret")
    until(browser, lambda b: by_id(b, "job-id").text == ids["dead"], what="the job page")
    assert browser.current_url == f"{d.url}/job/{ids['dead']}"  # not in the address bar, nor the history
    [cookie] = browser.get_cookies()
    assert cookie["name"] == f"spoolq_{d.port}" and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "s3cret" not in cookie["value"]
    refreshed = browser.execute_script("return document.body.dataset.refreshed || ''")
    until(browser, lambda b: b.execute_script("return document.body.dataset.refreshed || ''") != refreshed,
          what="a live refresh with the session alone")
    by_id(browser, "retry").click()
    from selenium.webdriver.common.by import By

    until(browser, lambda b: b.find_elements(By.ID, "said") and by_id(b, "said").text == "retried", what="retried")
    assert spool.find(ids["dead"]).state == "pending"
    browser.delete_all_cookies()
    browser.get(f"{d.url}/jobs/dead")
    by_id(browser, "token").send_keys("s3cret")
    by_id(browser, "log-in").click()
    until(browser, lambda b: b.current_url == f"{d.url}/jobs/dead" and b.find_elements(By.ID, "nav-dead"),
          what="the dead list, after the form")
    assert "s3cret" not in browser.current_url and browser.get_cookies()[0]["name"] == f"spoolq_{d.port}"


def shoot(browser, tmp_path, name: str) -> None:
    """A PNG of the page; with SPOOLQ_SCREENSHOTS=DIR also DIR/name (the README's pictures)."""
    shot = tmp_path / name
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("SPOOLQ_SCREENSHOTS")
    if target:
        shutil.copyfile(shot, os.path.join(target, name))


def test_a_bulk_action_on_the_dead_list_is_ticked_asked_and_said_and_a_screenshot_is_made(spool, dashboard, browser, tmp_path):
    from selenium.webdriver.common.by import By

    spool.enqueue_many([{"command": f"deliver-webhook --order {1000 + i}", "id": f"hook-{i}", "max_retries": 0,
                         "queue": "hooks" if i % 3 else "mail"} for i in range(8)])
    burst(spool)
    qid = quarantine(spool, "junk.json", b"not json")
    d = dashboard()
    browser.set_window_size(1100, 700)
    browser.get(d.url + "/jobs/dead")
    for job_id in ("hook-1", "hook-2"):
        browser.find_element(By.CSS_SELECTOR, f'input.pick[value="{job_id}"]').click()
    refreshed = browser.execute_script("return document.body.dataset.refreshed || ''")
    until(browser, lambda b: b.execute_script("return document.body.dataset.refreshed || ''") != refreshed,
          what="a live refresh")
    ticked = [box.get_attribute("value") for box in browser.find_elements(By.CSS_SELECTOR, "input.pick:checked")]
    assert ticked == ["hook-2", "hook-1"]  # kept across the refresh; newest first
    by_id(browser, "bulk-retry").click()
    until(browser, lambda b: "retry 2 dead jobs?" in by_id(b, "confirm-what").find_element(By.XPATH, "..").text,
          what="the question")
    assert (spool.counts().dead, spool.counts().quarantined) == (8, 1)  # asked, nothing done yet
    by_id(browser, "confirm").click()
    until(browser, lambda b: b.find_elements(By.ID, "said") and by_id(b, "said").text == "retried 2 jobs",
          what="what it did")
    assert {spool.find(i).state for i in ("hook-1", "hook-2")} == {"pending"} and (spool.counts().dead, spool.counts().quarantined) == (6, 1)
    shoot(browser, tmp_path, "screenshot-dead.png")
    by_id(browser, "scope-all").click()
    by_id(browser, "bulk-delete").click()
    until(browser, lambda b: b.find_elements(By.ID, "confirm"), what="the question")
    assert "7 now" in by_id(browser, "confirm-what").text and "gone for good" in by_id(browser, "confirm-what").text
    by_id(browser, "confirm").click()
    until(browser, lambda b: b.find_elements(By.ID, "said") and by_id(b, "said").text == "deleted 7 jobs",
          what="what it did")
    assert spool.counts().dead == 0 and not spool.quarantine.exists(qid)
    assert spool.counts().pending == 2


def test_a_narrow_window_clips_nothing(spool, dashboard, browser):
    a_spool_with_history(spool)
    dead_jobs(spool, 3, "a-queue-with-a-long-name")
    d = dashboard()
    browser.set_window_size(390, 844)  # a phone
    for path in ("/", "/jobs/dead", "/job/broke-1"):
        browser.get(d.url + path)
        wide, room = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert wide <= room, f"{path} is {wide} px wide in a window of {room}"
        assert by_id(browser, "nav-dead").is_displayed()


def two_schedules(spool: Spool) -> str:
    """"minutely" with its latest slot fired (its job pending), "nightly" never fired; the first's job id."""
    import time

    from spoolq.running.schedules import Schedule, Schedules

    spool.init()
    schedules, t, now = Schedules(spool), time.time() - 600, time.time()
    schedules.add(Schedule("minutely", "* * * * *", {"command": "true"}, created_at=t, active_from=t))
    # From now: made ten minutes ago, it was owed its 03:00 slot when the test ran at 03:00-03:10 Berlin time.
    schedules.add(Schedule("nightly", "0 3 * * *", {"command": "echo report"}, tz="Europe/Berlin", created_at=now,
                           active_from=now))
    [fired] = [f for f in schedules.fire_due(time.time()) if f.created]
    return fired.job_id


def test_the_schedules_page_links_the_last_job_and_pauses_resumes_and_fires(spool, dashboard, browser):
    from selenium.webdriver.common.by import By

    from spoolq.running.schedules import Schedules

    last = two_schedules(spool)
    d = dashboard()
    browser.get(d.url + "/")
    by_id(browser, "nav-schedules").click()
    row = until(browser, lambda b: by_id(b, "schedule-nightly"), what="the schedules")
    assert "0 3 * * *" in row.text and "Europe/Berlin" in row.text
    assert by_id(browser, "schedule-minutely").find_element(By.LINK_TEXT, last) and "pending" in by_id(
        browser, "schedule-minutely").text
    by_id(browser, "pause-nightly").click()
    until(browser, lambda b: b.find_elements(By.ID, "said") and by_id(b, "said").text == "paused nightly",
          what="paused")
    assert Schedules(spool).get("nightly").paused and "paused" in by_id(browser, "schedule-nightly").text
    by_id(browser, "resume-nightly").click()
    until(browser, lambda b: b.find_elements(By.ID, "said") and by_id(b, "said").text == "resumed nightly",
          what="resumed")
    assert not Schedules(spool).get("nightly").paused
    by_id(browser, "fire-nightly").click()
    said = until(browser, lambda b: b.find_elements(By.ID, "said") and by_id(b, "said").text, what="fired")
    job_id = re.fullmatch(r"fired nightly: job (nightly\.\d{8}T\d{4}Z)", said)[1]
    assert spool.find(job_id).job.command == "echo report"
    assert by_id(browser, "schedule-minutely").find_element(By.LINK_TEXT, last)  # the other one untouched


def test_schedule_actions_need_the_forms_token_and_are_refused_read_only(spool, dashboard):
    two_schedules(spool)
    d = dashboard()
    assert d.post("/schedule/nightly/fire", {}) == 400 and d.post("/schedule/nightly/pause", {"csrf": "x"}) == 400
    opener, _ = cookie_jar()
    assert d.post("/schedule/no-such/pause", {"csrf": csrf_of(d, opener, "/schedules")}, opener=opener) == 404
    ro = dashboard("--read-only")
    assert ro.post("/schedule/nightly/fire", {"csrf": "x"}) == 403 and 'id="fire-nightly"' not in ro.get("/schedules")[1]
    rows = json.loads(ro.get("/api/schedules")[1])
    assert [(r["name"], r["paused"], r["last_state"]) for r in rows] == [("minutely", False, "pending"),
                                                                        ("nightly", False, None)]
    assert len(spool.list_jobs()) == 1
