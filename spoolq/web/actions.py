"""The dashboard's POSTs: each checks the form's CSRF token against the session's, and none is
done with --read-only. One job's retry, requeue, cancel or delete; a pause or resume; a bulk
action on a list (bulk.py), which first asks for a confirmation that says what it will touch."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Flask, Response, abort, redirect, render_template, request, session, url_for

from ..format.errors import SpoolError
from ..format.job import valid_id, valid_queue
from ..spool import Spool
from . import bulk
from .board import Board, Filter, Walk


def routes(app: Flask, board: Board) -> None:
    spool = board.spool

    @app.post("/job/<job_id>/<action>")
    def act_on_job(job_id: str, action: str) -> Response:
        check_post(board)
        job_id = job_id if valid_id(job_id.removeprefix("+")) else abort(404)
        if action == "delete":
            if request.form.get("sure") != "yes":
                abort(400, "a delete needs its box ticked: it cannot be undone")
            state = spool.find(job_id).state
            why = spool.purge_ids([job_id])[job_id]
            if why:
                raise SpoolError(why)
            return redirect(url_for("jobs", state=state, said=f"deleted {job_id}"), 303)
        return redirect(url_for("job", job_id=job_id, said=_act(spool, action, job_id)), 303)

    @app.post("/bulk/<state>")
    def bulk_action(state: str) -> Response | str:
        check_post(board)
        action = request.form.get("action", "")
        if action not in bulk.ACTIONS.get(state, {}):
            abort(404)
        chosen = Filter(state, request.form.get("q", "")[:200], _queue(request.form.get("queue", "")))
        selected = [i for i in request.form.getlist("id") if valid_id(i.removeprefix("+"))]
        everything = request.form.get("scope") == "all"
        if not everything and not selected:
            return redirect(_back(chosen, "nothing selected: tick the jobs first, or act on all of them"), 303)
        if request.form.get("confirmed") != "yes":
            count = board.jobs(chosen, 0)["total"] if everything else len(selected)
            return render_template("confirm.html", action=action, state=state, chosen=chosen, count=count,
                                   everything=everything, selected=selected)
        ids = (place.job_id for place, _ in Walk(spool.views, chosen)) if everything else selected
        return redirect(_back(chosen, bulk.run(spool, action, ids).said()), 303)

    def pause_or_resume(verb: Any) -> Response:
        check_post(board)
        queue = request.form.get("queue") or None
        if queue is not None and not valid_queue(queue):
            abort(400)
        verb(queue)
        return redirect(url_for("overview"), 303)

    app.add_url_rule("/pause", "pause", lambda: pause_or_resume(spool.pause), methods=["POST"])
    app.add_url_rule("/resume", "resume", lambda: pause_or_resume(spool.resume), methods=["POST"])


def check_post(board: Board) -> None:
    if board.read_only:
        abort(403, "this dashboard is read-only (--read-only)")
    given = request.form.get("csrf", "")
    if not given or not hmac.compare_digest(given.encode(), str(session.get("csrf", "")).encode()):
        abort(400, "a stale or missing form token: reload the page")


def _queue(text: str) -> str:
    return text if not text or valid_queue(text) else abort(400, f"{text[:60]!r} is not a queue name")


def _back(chosen: Filter, said: str) -> str:
    """The list the action was on, saying what it did."""
    return url_for("jobs", state=chosen.state, said=said,
                   **{k: v for k, v in (("q", chosen.query), ("queue", chosen.queue)) if v})


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
