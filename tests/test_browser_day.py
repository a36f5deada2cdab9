"""An operator's day in the dashboard, as someone used to Sidekiq's and RQ's: a real server and a
real headless Chromium (test_web.py's), and in-process where no browser is needed. Each test
pins a problem that day found: the page it broke, and what the operator saw."""

from __future__ import annotations

import time

import pytest

from spoolq import Spool
from test_web import a_spool_with_history, browser, burst, by_id, dashboard, dead_jobs, until  # noqa: F401

flask = pytest.importorskip("flask", reason="the dashboard needs the web extra (the test extra installs it)")


def refreshed(browser) -> str:
    return browser.execute_script("return document.body.dataset.refreshed || ''")


def after_a_refresh(browser, what: str = "a live refresh") -> None:
    before = refreshed(browser)
    until(browser, lambda b: refreshed(b) != before, what=what)


def restarted(dashboard, d, *args: str, **kwargs):
    """The dashboard stopped and started again on its port (an upgrade, a service restart): a new
    process, a new secret, every session it gave void."""
    d.stop()
    return dashboard(*args, bind=d.bind, **kwargs)


# A page whose live refresh fails (the dashboard stopped, restarted and asks for the token again,
# a session that ended) went on showing its numbers as if live: the refresh gave up in silence.
def test_a_page_that_cannot_refresh_says_so_and_how_to_go_on(spool, dashboard, browser):
    a_spool_with_history(spool)
    d = dashboard(env={"SPOOLQ_WEB_TOKEN": "s3cret"})
    browser.get(d.url + "/?token=s3cret")
    after_a_refresh(browser)
    assert not browser.find_elements("id", "stale")
    d = restarted(dashboard, d, env={"SPOOLQ_WEB_TOKEN": "s3cret"})
    note = until(browser, lambda b: b.find_elements("id", "stale") and by_id(b, "stale").text, timeout=10,
                 what="a line saying the page is stale")
    assert "not refreshed since" in note and "token" in note and "reload" in note, note
    d.stop()
    note = until(browser, lambda b: "does not answer" in by_id(b, "stale").text and by_id(b, "stale").text,
                 timeout=10, what="the line for a dashboard that is gone")
    d = dashboard(env={"SPOOLQ_WEB_TOKEN": "s3cret"}, bind=d.bind)
    browser.get(d.url + "/?token=s3cret")
    after_a_refresh(browser)
    assert not browser.find_elements("id", "stale")


# A job's page left open in one tab while the job was deleted in another (or purged by keep_done)
# said only "the dashboard answered 404".
def test_a_page_whose_job_is_gone_says_so_in_the_dashboards_words(spool, dashboard, browser):
    dead_jobs(spool, 1)
    d = dashboard()
    browser.get(d.url + "/job/d0000")
    after_a_refresh(browser)
    assert spool.purge_ids(["d0000"]) == {"d0000": None}
    note = until(browser, lambda b: b.find_elements("id", "stale") and by_id(b, "stale").text, timeout=10,
                 what="a line saying the page is stale")
    assert note.endswith("no job 'd0000'"), note


# After a restart of the dashboard the page refreshed itself with a new session, but the bulk
# form (outside the live parts) kept the old form token: ticking jobs and pressing retry got
# "a stale or missing form token: reload the page", and reloading that page posted it again.
def test_a_bulk_action_still_works_on_a_page_left_open_across_a_restart(spool, dashboard, browser):
    dead_jobs(spool, 2)
    d = dashboard()
    browser.get(d.url + "/jobs/dead")
    d = restarted(dashboard, d)
    after_a_refresh(browser, "a refresh from the new dashboard")
    browser.find_element("css selector", 'input.pick[value="d0001"]').click()
    by_id(browser, "bulk-retry").click()
    until(browser, lambda b: b.find_elements("id", "confirm") or b.find_elements("id", "error"), what="an answer")
    assert browser.find_elements("id", "confirm"), by_id(browser, "error").text
    by_id(browser, "confirm").click()
    until(browser, lambda b: b.find_elements("id", "said") and by_id(b, "said").text == "retried 1 job", what="retried")
    assert spool.find("d0001").state == "pending" and spool.find("d0000").state == "dead"


def test_a_stale_form_token_says_to_go_back_not_to_reload_the_post(spool):
    """Reloading the page a refused POST answered posts the same stale token again."""
    c = client(spool)
    spool.enqueue({"command": "true", "id": "j"})
    r = c.post("/job/j/cancel", data={"csrf": "from-an-old-session"})
    assert r.status_code == 400 and b"go back" in r.data and b"reload the page" not in r.data


# The back button after a bulk action landed on Chromium's "Confirm Form Resubmission": the
# question was the answer to a POST, which a reload would have sent again.
def test_the_back_button_after_a_bulk_action_finds_the_question_again(spool, dashboard, browser):
    dead_jobs(spool, 3)
    d = dashboard()
    browser.get(d.url + "/jobs/dead")
    browser.find_element("css selector", 'input.pick[value="d0001"]').click()
    by_id(browser, "bulk-retry").click()
    until(browser, lambda b: b.find_elements("id", "confirm"), what="the question")
    by_id(browser, "confirm").click()
    until(browser, lambda b: b.find_elements("id", "said") and by_id(b, "said").text == "retried 1 job", what="retried")
    browser.back()
    until(browser, lambda b: b.find_elements("id", "confirm-what") or "Resubmission" in b.page_source, what="a page")
    assert "The 1 selected: d0001" in by_id(browser, "confirm-what").text
    browser.refresh()
    assert "The 1 selected: d0001" in by_id(browser, "confirm-what").text
    assert spool.find("d0001").state == "pending" and spool.counts().dead == 2  # asked again, nothing done


# A job that wrote 3 MB: its page showed the log 256 KiB every 2 s, the end after some 25 s.
def test_a_long_log_is_shown_whole_at_once(spool, dashboard, browser, workers):
    job = spool.enqueue({"command": "head -c 3000000 /dev/zero | tr '\\0' a | fold -w 100; echo THE-END"})
    workers(1)
    from conftest import wait_for

    wait_for(lambda: spool.find(job.id).state == "done", 30, "the job")
    d = dashboard()
    browser.get(f"{d.url}/job/{job.id}")
    tail = "return document.getElementById('log').textContent.slice(-200)"
    until(browser, lambda b: "THE-END" in b.execute_script(tail), timeout=8, what="the log's end")
    text = browser.execute_script("return document.getElementById('log').textContent")
    assert text.count("THE-END") == 1 and text.count("a" * 100 + "\n") == 29_999  # each chunk once


# The dead list of a long queue name, or a search for a long text, was wider than a phone.
def test_a_long_queue_name_or_search_fits_a_phone(spool, dashboard, browser):
    long_queue = "q" * 60
    dead_jobs(spool, 2, long_queue)
    d = dashboard()
    browser.set_window_size(390, 844)
    for path in (f"/jobs/dead?queue={long_queue}", "/jobs/dead?q=" + "z" * 150, f"/jobs/pending?queue={long_queue}"):
        browser.get(d.url + path)
        wide, room = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert wide <= room, f"{path[:40]}… is {wide} px wide in a window of {room}"


# The bulk form's "all N dead" kept the count the page was loaded with while the list below it
# refreshed: "all 1 dead" above a list of 3.
def test_the_count_a_bulk_action_offers_follows_the_list(spool, dashboard, browser):
    dead_jobs(spool, 1)
    d = dashboard()
    browser.get(d.url + "/jobs/dead")
    assert "all 1 dead" in by_id(browser, "scope-all").find_element("xpath", "..").text
    dead_jobs(spool, 3, prefix="later")
    until(browser, lambda b: by_id(b, "live-jobs").text.startswith("4 jobs"), what="the list of 4")
    until(browser, lambda b: "all 4 dead" in by_id(b, "scope-all").find_element("xpath", "..").text, timeout=5,
          what="the bulk form's count")


# Every open tab refreshed its page every 2 s, in the background too: at 100,000 done jobs a
# list costs the server some 0.6 s a refresh, so a few forgotten tabs kept a core busy.
def test_a_tab_in_the_background_asks_nothing_until_it_is_shown_again(spool, dashboard, browser):
    import re

    dead_jobs(spool, 1)
    d = dashboard()
    browser.get(d.url + "/jobs/dead")
    after_a_refresh(browser)
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")  # about:blank in front: the list's tab is hidden
    d.get("/api/overview")  # marks the access log: hidden from here
    time.sleep(5)  # the window watched: two refreshes and a half, before
    d.get("/api/schedules")  # ... to here
    browser.switch_to.window(first)
    dead_jobs(spool, 1, prefix="later")
    until(browser, lambda b: by_id(b, "live-jobs").text.startswith("2 jobs"), timeout=5, what="a refresh once shown")
    log = re.sub(r"\x1b\[[0-9;]*m", "", d.stop())
    hidden = log[log.index("GET /api/overview"):log.index("GET /api/schedules")]
    assert hidden.count("GET /jobs/dead") == 0, hidden


# ---- in-process --------------------------------------------------------------------------------

def client(spool: Spool, **kw):
    from spoolq.web import create_app

    app = create_app(spool, **kw)
    app.testing = True
    return app.test_client()


def finished_jobs(spool: Spool, n: int, state: str, queues: tuple[str, ...]) -> None:
    """n jobs of `queues` in turn, moved into done/ or dead/ as a worker leaves them (n processes
    would take minutes)."""
    import os

    from spoolq.format import layout

    spool.enqueue_many([{"command": "exit 3", "id": f"f{i:05d}", "queue": queues[i % len(queues)]} for i in range(n)])
    shards = spool.store.shards
    for entry in shards.entries():
        os.rename(shards.path(entry), os.path.join(spool.layout.dir(state), layout.parse_pending(entry).job_id + ".json"))


def csrf_in(page: str) -> str:
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


# "Retry all" on the dead list of one queue (the overview's link from its dead count) retried the
# jobs of the queue among the first 5,000 files read, said it had retried them all, and the list
# counted those alone: 2,500 of a queue the overview said had 3,000 dead.
def test_every_dead_job_of_a_queue_is_listed_and_retried_beyond_the_files_a_search_reads(spool):
    from spoolq.web.board import SEARCH_LIMIT

    n = SEARCH_LIMIT + 1000
    finished_jobs(spool, n, "dead", ("hooks", "mail"))
    c = client(spool)
    listing = c.get("/api/jobs/dead?queue=mail").get_json()
    assert (listing["total"], listing["search_limit_reached"]) == (n // 2, False)
    form = {"csrf": csrf_in(c.get("/jobs/dead?queue=mail").text), "action": "retry", "scope": "all", "queue": "mail"}
    assert f"retry {n // 2} dead jobs?" in c.post("/bulk/dead", data=form, follow_redirects=True).text
    for _ in range(5):  # 2,000 to 5,000 a press: pressed again while it says so
        r = c.post("/bulk/dead", data={**form, "confirmed": "yes"})
        if "press again" not in c.get(r.headers["Location"]).text:
            break
    queues = spool.views.census().queues
    assert (queues["mail"].dead, queues["mail"].pending, queues["hooks"].dead) == (0, n // 2, n // 2)


# What an action did was said from the address (`?said=`): a link could make the dashboard say
# anything ("deleted 5000 jobs: run … to restore them"), and a reload said it again.
def test_what_an_action_did_is_said_once_and_never_from_the_address(spool):
    dead_jobs(spool, 1)
    c = client(spool)
    assert "restore" not in c.get("/jobs/dead?said=deleted+5000+jobs:+run+curl+x|sh+to+restore").text
    r = c.post("/job/d0000/retry", data={"csrf": csrf_in(c.get("/job/d0000").text)})
    assert r.status_code == 303 and "said" not in r.headers["Location"]
    assert 'id="said">retried<' in c.get(r.headers["Location"]).text
    assert 'id="said"' not in c.get(r.headers["Location"]).text  # a reload says it no more
