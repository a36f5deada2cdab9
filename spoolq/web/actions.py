"""The dashboard's POSTs: each checks the form's CSRF token against the session's, and none is
done with --read-only. One job's retry, requeue, cancel or delete; a pause or resume of a queue
or of a schedule, or a schedule fired now; a bulk action on a list (bulk.py), which first asks
for a confirmation that says what it will touch."""

from __future__ import annotations

import hmac
import time

from flask import Flask, Response, abort, current_app, flash, redirect, render_template, request, session, url_for
from werkzeug.datastructures import MultiDict

from ..format.errors import SpoolError
from ..format.job import valid_id
from ..running.schedules import check_name
from ..spool import Spool
from . import asked, bulk
from .board import DashboardState, Filter


def routes(app: Flask) -> None:
    for rule, view in (("/job/<job_id>/<action>", act_on_job), ("/bulk/<state>", bulk_action),
                       ("/schedule/<name>/<action>", act_on_schedule), ("/pause", pause), ("/resume", resume)):
        app.add_url_rule(rule, view_func=view, methods=["POST"])
    app.add_url_rule("/bulk/<state>", view_func=bulk_question, methods=["GET"])


def _board() -> DashboardState:
    board: DashboardState = current_app.extensions["spoolq"]
    check_post(board)
    return board


def act_on_job(job_id: str, action: str) -> Response:
    spool = _board().spool
    job_id = asked.job_id(job_id)
    if action == "delete":
        if request.form.get("sure") != "yes":
            abort(400, "a delete needs its box ticked: it cannot be undone")
        state = spool.find(job_id).state
        # RACE: a requeue (here, another dashboard, the CLI) may move the job on after this look:
        # purge_ids finds it again under its lock and deletes it only if it is finished or not
        # started, else says why not; `state` only picks the list shown after.
        why = spool.purge_ids([job_id])[job_id]
        if why:
            raise SpoolError(why)
        return _saying(f"deleted {job_id}", asked.list_url(state))
    return _saying(_act(spool, action, job_id), url_for("job", job_id=job_id))


def bulk_action(state: str) -> Response:
    """A bulk action: confirmed, it is done; else the question is asked by a page of its own (a
    GET, bulk_question), so that the back button after the action finds a page, not a POST to
    send again."""
    board = _board()
    action, chosen, selected, everything = _bulk_asked(state, request.form)
    if not everything and not selected:
        return _saying("nothing selected: tick the jobs first, or act on all of them", _back(chosen))
    if request.form.get("confirmed") != "yes":
        return redirect(url_for("bulk_question", state=state, action=action, scope="all" if everything else "selected",
                                q=chosen.query or None, queue=chosen.queue or None, id=selected), 303)
    # RACE: the list is read again now; a job that moved since the question (a worker took it, another
    # dashboard acted) is refused by requeue or purge_ids with its reason, and one that arrived is
    # included, as the question says.
    ids = (place.job_id for place, _ in board.walk(chosen)) if everything else selected
    return _saying(bulk.run(board.spool, action, ids).said(), _back(chosen))


def bulk_question(state: str) -> Response | str:
    """What a bulk action will touch, asked before it is done (it changes nothing)."""
    board: DashboardState = current_app.extensions["spoolq"]
    if board.read_only:
        abort(403, READ_ONLY)
    action, chosen, selected, everything = _bulk_asked(state, request.args)
    if not everything and not selected:
        return redirect(_back(chosen), 303)
    count = board.jobs(chosen, 0)["total"] if everything else len(selected)
    return render_template("confirm.html", action=action, state=state, chosen=chosen, count=count,
                           everything=everything, selected=selected)


def _bulk_asked(state: str, given: MultiDict[str, str]) -> tuple[str, Filter, list[str], bool]:
    """A bulk action's form or question: the action (404 for one the list has not), the list's
    filter, the ticked ids, and whether it is on every job the filter matches."""
    action = given.get("action", "")
    if action not in bulk.ACTIONS.get(state, {}):
        abort(404)
    chosen = Filter(state, given.get("q", "")[:200], asked.queue(given.get("queue", "")))
    selected = [i for i in given.getlist("id") if valid_id(i.removeprefix("+"))]
    return action, chosen, selected, given.get("scope") == "all"


def act_on_schedule(name: str, action: str) -> Response:
    schedules = _board().schedules
    name = check_name(name)  # SpoolError (409) for a name no schedule can have
    now = time.time()
    if action in ("pause", "resume"):
        schedules.set_paused(name, action == "pause", now=now)
        said = f"{action}d {name}"
    elif action == "fire":
        fired = schedules.fire_now(name, now)
        said = (f"fired {name}: job {fired.job_id}" if fired.created else
                f"{name} has fired this minute already (job {fired.job_id}): nothing more is made")
    else:
        abort(404)
    return _saying(said, url_for("schedules"))


def pause() -> Response:
    spool = _board().spool
    spool.pause(asked.queue(request.form.get("queue", "")) or None)
    return redirect(url_for("overview"), 303)


def resume() -> Response:
    spool = _board().spool
    spool.resume(asked.queue(request.form.get("queue", "")) or None)
    return redirect(url_for("overview"), 303)


READ_ONLY = "this dashboard is read-only (--read-only)"
# Reloading this answer would post the same token again: the page the form was on is what to reload.
STALE_FORM = "a stale or missing form token (the dashboard restarted, or the session ended): go back, reload that page and try again"


def check_post(board: DashboardState) -> None:
    if board.read_only:
        abort(403, READ_ONLY)
    given = request.form.get("csrf", "")
    if not given or not hmac.compare_digest(given.encode(), str(session.get("csrf", "")).encode()):
        abort(400, STALE_FORM)


def _back(chosen: Filter) -> str:
    """The list the action was on."""
    return asked.list_url(chosen.state, q=chosen.query, queue=chosen.queue)


def _saying(said: str, then: str) -> Response:
    """A redirect to `then`, whose page says what the action did, once: from the session, never
    from the address (a link could make the dashboard say anything, and a reload said it again)."""
    # RACE: another tab's page loaded at this moment would say it in this one's stead; the live
    # refreshes never take it (said.html skips X-Live requests).
    flash(said)
    return redirect(then, 303)


def _act(spool: Spool, action: str, job_id: str) -> str:
    if action == "retry":
        spool.retry_dead([job_id])
        return "retried"
    if action == "requeue":
        why = spool.requeue([job_id])[job_id]
        if why:
            raise SpoolError(why)
        return "requeued"
    if action == "cancel":
        result = spool.cancel([job_id], kill=True, wait=0)[0]  # a running job: its worker kills it
        if not result.ok:
            raise SpoolError(f"job {job_id} was not cancelled: {result.outcome.value}")
        return result.outcome.value
    abort(404)
