"""The web dashboard (`spoolq web`, the optional extra spoolq[web]): Flask's only home.

Every page reads the spool itself (no database, no state of its own beyond caches), so several
dashboards on several hosts show the same truth. Each page has a JSON twin under /api/, and the
pages refresh their live parts by fetching themselves again (static/live.js). Jinja's
autoescaping covers every template: a job's command, output and error are untrusted text.
Actions are POSTs carrying the session's CSRF token, refused with --read-only. Who may ask
at all (the Host check, --token and its session) is access.py's.
"""

from __future__ import annotations

import codecs
import hmac
import re
import secrets
import socket
import threading
import time
from typing import Any

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, session, url_for

from ..store import output
from ..reading.counts import Counts
from ..format.errors import JobNotFound, SpoolError
from ..format.job import iso, valid_id, valid_queue
from ..format.states import STATES, State
from ..running.metrics import Totals, exposition
from ..spool import Spool
from ..reading.stats import Recent, Series, collect, human_seconds
from . import access, charts
from .access import Bound

PAGE = 50
SEARCH_LIMIT = 5000  # files read at most to search commands in one listing
LOG_CHUNK = 256 * 1024
DAY = 86400.0


class Board:
    """What the dashboard holds between requests: the spool and the caches of what it read."""

    def __init__(self, spool: Spool, *, read_only: bool):
        self.spool = spool
        self.read_only = read_only
        self.lock = threading.Lock()  # the caches are shared by the server's threads
        self.recent = Recent(DAY, time.time())
        self.totals = Totals()

    def overview(self) -> dict[str, Any]:
        spool, now = self.spool, time.time()
        with self.lock:
            self.recent.update(spool.layout.dir("events"), now)
            census = spool.views.census(now)
            hour = collect(self.recent.between(now - 3600, now), census.ready_since, since=now - 3600, until=now)
            day = Series.over(self.recent.between(now - DAY, now), now - DAY, now, 48)
        running = [_running(view, now) for view in spool.list_jobs(state=State.PROCESSING)]
        workers = [{"host": w.host, "pid": w.pid, "worker": w.owner, "job": w.job,
                    "heartbeat_age": round(max(0.0, now - w.heartbeat), 1) if w.heartbeat else None,
                    "queues": _names(w.extra.get("queues"))}
                   for w in sorted(spool.workers(role="worker"), key=lambda w: (w.host, w.pid))]
        paused = spool.paused()
        queues = {q: c.to_dict() for q, c in census.queues.items()}
        for name in sorted(paused - {"*"} - set(queues)):  # paused and empty: shown, so it can be resumed
            queues[name] = Counts().to_dict()
        return {"now": iso(now), "counts": census.totals.to_dict(), "queues": queues, "paused": sorted(paused),
                "hour": hour.to_dict(), "day": {"series": day.to_dict(), "finished": sum(day.finished),
                                                "failed_attempts": sum(day.failed)},
                "running": running, "workers": workers, "_charts": (hour.series, day)}

    def jobs(self, state: str, page: int, query: str) -> dict[str, Any]:
        """One page of a state's jobs, in `list`'s order; `query` matches ids (from the names
        alone) or commands (reading at most SEARCH_LIMIT files)."""
        views = self.spool.views
        first, rows, matched, scanned = page * PAGE, [], 0, 0
        for place in views.places(state):
            wanted = first <= matched < first + PAGE
            if query and query not in place.job_id:
                if scanned >= SEARCH_LIMIT:
                    continue
                scanned += 1
                view = views.view_at(place)
                if view is None or view.job is None or query not in view.job.command:
                    continue
            elif not wanted:
                matched += 1  # counted from its name alone: only the page's files are read
                continue
            else:
                view = views.view_at(place)
                if view is None:
                    continue  # moved on since the listing
            if first <= matched < first + PAGE:
                rows.append(view.to_dict())
            matched += 1
        return {"state": state, "page": page, "page_size": PAGE, "query": query, "total": matched,
                "jobs": rows, "pages": max(1, -(-matched // PAGE)),
                "search_limit_reached": scanned >= SEARCH_LIMIT}

    def job(self, job_id: str) -> dict[str, Any]:
        view = self.spool.find(job_id)
        d = view.to_dict()
        log_path = self.spool.output_path(view.id)
        d["attempt_marks"] = [mark._asdict() | {"started": iso(mark.started)} for mark in output.attempts(log_path)]
        return d


def _names(value: Any) -> list[str] | None:
    """A registration's queue list as a list of strings (the file is anyone's in the group)."""
    return [str(v) for v in value] if isinstance(value, list) else None


def _running(view: Any, now: float) -> dict[str, Any]:
    started = view.last_attempt.started
    return {"id": view.id, "command": view.job.command if view.job else None, "worker": view.owner,
            "host": view.last_attempt.host, "elapsed": round(now - started, 1) if started else None}


def create_app(spool: Spool, *, read_only: bool = False, token: str | None = None,
               bound: Bound = Bound("127.0.0.1", "127.0.0.1", 8765)) -> Flask:
    app = Flask(__name__)
    app.secret_key = secrets.token_bytes(32)  # this process's: its CSRF tokens and sessions
    board = Board(spool, read_only=read_only)
    app.extensions["spoolq"] = board
    access.guard(app, token, bound)
    _pages(app, board)
    _api(app, board)
    _actions(app, board)
    return app


def _pages(app: Flask, board: Board) -> None:
    """Every page, and its JSON twin under /api/."""
    spool = board.spool

    @app.context_processor
    def shared() -> dict[str, Any]:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(24)
        return {"csrf": session["csrf"], "read_only": board.read_only, "states": STATES,
                "spool_root": spool.root, "human": human_seconds}

    @app.errorhandler(SpoolError)
    def spool_error(e: SpoolError) -> tuple[str, int]:
        return render_template("error.html", message=str(e)), 404 if isinstance(e, JobNotFound) else 409

    @app.get("/")
    def overview() -> str:
        data = board.overview()
        hour, day = data.pop("_charts")
        return render_template("overview.html", d=data, hour_chart=charts.bars(hour, "last hour, per minute"),
                               day_chart=charts.bars(day, "last day, per 30 minutes"))

    @app.get("/jobs/<state>")
    def jobs(state: str) -> str:
        return render_template("jobs.html", d=board.jobs(_state(state), _page(), _query()))

    @app.get("/job/<job_id>")
    def job(job_id: str) -> str:
        return render_template("job.html", d=board.job(_job_id(job_id)))

    @app.get("/job/<job_id>/log")
    def job_log(job_id: str) -> Response:
        return _log_from(spool.output_path(spool.find(_job_id(job_id)).id), request.args.get("offset", "0"))



def _api(app: Flask, board: Board) -> None:
    """The pages' JSON twins, and /metrics (the same exposition as `spoolq metrics`)."""

    @app.get("/api/overview")
    def api_overview() -> Response:
        data = board.overview()
        data.pop("_charts")
        return jsonify(data)

    @app.get("/api/jobs/<state>")
    def api_jobs(state: str) -> Response:
        return jsonify(board.jobs(_state(state), _page(), _query()))

    @app.get("/api/job/<job_id>")
    def api_job(job_id: str) -> Response:
        return jsonify(board.job(_job_id(job_id)))

    @app.get("/metrics")
    def metrics() -> Response:
        with board.lock:
            text = exposition(board.spool, board.totals)
        return Response(text, 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def _actions(app: Flask, board: Board) -> None:
    """The POSTs: each checks the form's CSRF token against the session's, none with --read-only."""
    spool = board.spool

    def check_post() -> None:
        if board.read_only:
            abort(403)
        given = request.form.get("csrf", "")
        if not given or not hmac.compare_digest(given.encode(), str(session.get("csrf", "")).encode()):
            abort(400, "a stale or missing form token: reload the page")

    @app.post("/job/<job_id>/<action>")
    def act_on_job(job_id: str, action: str) -> Response:
        check_post()
        job_id = _job_id(job_id)
        return redirect(url_for("job", job_id=job_id, said=_act(spool, action, job_id)), 303)

    def pause_or_resume(verb: Any) -> Response:
        check_post()
        queue = request.form.get("queue") or None
        if queue is not None and not valid_queue(queue):
            abort(400)
        verb(queue)
        return redirect(url_for("overview"), 303)

    app.add_url_rule("/pause", "pause", lambda: pause_or_resume(spool.pause), methods=["POST"])
    app.add_url_rule("/resume", "resume", lambda: pause_or_resume(spool.resume), methods=["POST"])


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


def _log_from(path: str, offset_text: str) -> Response:
    """The job's log from `offset` (at most LOG_CHUNK), and in X-Log-Offset where to ask next: a
    character cut by the chunk's end is left for the next request, not shown broken."""
    offset = _number(offset_text)
    data = b""
    f = output.open_log(path)  # never through a symlink, never waiting on a fifo
    if f is not None:
        with f:
            size = f.seek(0, 2)
            if offset > size:
                offset = 0  # purged and begun again
            f.seek(offset)
            data = f.read(LOG_CHUNK)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = decoder.decode(data, final=False)
    used = len(data) - len(decoder.getstate()[0])
    return Response(text, 200, {"Content-Type": "text/plain; charset=utf-8", "X-Log-Offset": str(offset + used)})


def _number(text: str, at_most: int = 10**15) -> int:
    """A query's count (digits 0-9 only: '²' is a digit to str.isdigit), 0 when it is not one."""
    return min(int(text), at_most) if re.fullmatch(r"[0-9]{1,18}", text) else 0


def _state(state: str) -> str:
    if state not in STATES:
        abort(404)
    return state


def _job_id(job_id: str) -> str:
    if not valid_id(job_id.removeprefix("+")):
        abort(404)
    return job_id


def _page() -> int:
    return _number(request.args.get("page", "0"), 10**6)


def _query() -> str:
    return request.args.get("q", "")[:200]


def make(spool: Spool, host: str, port: int, *, read_only: bool, token: str | None) -> tuple[Any, Bound]:
    """A server for the dashboard, listening (threads: a slow page does not hold up the others),
    and where: the address `host` reached decides whether it is on the loopback. The caller runs
    serve_forever. OSError if it cannot listen there (bound here, not by the server, which would
    print its own lines and exit)."""
    from werkzeug.serving import make_server

    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
        bound = Bound(host, listener.getsockname()[0], port)
        app = create_app(spool, read_only=read_only, token=token, bound=bound)
        return make_server(host, port, app, threaded=True, request_handler=access.AccessLog,
                           fd=listener.fileno()), bound  # the server takes a duplicate of the socket
