"""The web dashboard (`spoolq web`, the optional extra spoolq[web]): Flask's only home.

Every page reads the spool itself (no database, no state of its own beyond caches), so several
dashboards on several hosts show the same truth. Each page has a JSON twin under /api/, and the
pages refresh their live parts by fetching themselves again (static/live.js). Jinja's
autoescaping covers every template: a job's command, output and error are untrusted text.
What the pages read is board.py's, what holds jobs up blockers.py's; the actions (POSTs
carrying the session's CSRF token, refused with --read-only) are actions.py's, the bulk ones
bulk.py's. Who may ask at all (the Host check, --token and its session) is access.py's; what a
request names (a job id, a queue) is checked by asked.py's. An error is answered in the
dashboard's own style: a page, or JSON under /api/.
"""

from __future__ import annotations

import codecs
import re
import secrets
import socket
from typing import Any

from flask import Flask, Response, abort, jsonify, render_template, request, session
from werkzeug.exceptions import HTTPException

from ..store import output
from ..format.errors import JobNotFound, SpoolError
from ..format.states import STATES
from ..running.metrics import exposition
from ..spool import Spool
from ..reading.stats import human_seconds
from . import access, actions, asked, bulk, charts
from .access import Bound
from .board import DashboardState, Filter

LOG_CHUNK = 256 * 1024


def create_app(spool: Spool, *, read_only: bool = False, token: str | None = None,
               bound: Bound = Bound("127.0.0.1", "127.0.0.1", 8765)) -> Flask:
    app = Flask(__name__)
    app.secret_key = secrets.token_bytes(32)  # this process's: its CSRF tokens and sessions
    board = DashboardState(spool, read_only=read_only)
    app.extensions["spoolq"] = board
    access.guard(app, token, bound)
    _pages(app, board)
    _api(app, board)
    _errors(app)
    actions.routes(app)
    return app


def _pages(app: Flask, board: DashboardState) -> None:
    """Every page, and its JSON twin under /api/."""
    spool = board.spool

    @app.context_processor
    def shared() -> dict[str, Any]:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(24)
        return {"csrf": session["csrf"], "read_only": board.read_only, "states": STATES,
                "spool_root": spool.root, "human": human_seconds, "list_url": asked.list_url,
                "bulk_actions": bulk.ACTIONS}

    @app.get("/")
    def overview() -> str:
        data = board.overview()
        hour, day = data.pop("_charts")
        return render_template("overview.html", d=data, hour_chart=charts.bars(hour, "last hour, per minute"),
                               day_chart=charts.bars(day, "last day, per 30 minutes"))

    @app.get("/jobs/<state>")
    def jobs(state: str) -> str:
        return render_template("jobs.html", d=board.jobs(_filter(state), _page()))

    @app.get("/schedules")
    def schedules() -> str:
        return render_template("schedules.html", rows=board.schedule_rows())

    @app.get("/job/<job_id>")
    def job(job_id: str) -> str:
        return render_template("job.html", d=board.job(asked.job_id(job_id)))

    @app.get("/job/<job_id>/log")
    def job_log(job_id: str) -> Response:
        return _log_from(spool.output_path(spool.find(asked.job_id(job_id)).id), request.args.get("offset", "0"),
                         spool.store.uid)


def _errors(app: Flask) -> None:
    """Every error in the dashboard's own style: a page for a browser, JSON under /api/."""

    def answer(message: str, status: int) -> tuple[Any, int]:
        if request.path.startswith("/api/"):
            return jsonify({"error": message, "status": status}), status
        return render_template("error.html", message=message, status=status), status

    @app.errorhandler(SpoolError)
    def spool_error(e: SpoolError) -> tuple[Any, int]:
        return answer(str(e), 404 if isinstance(e, JobNotFound) else 409)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> tuple[Any, int]:
        default = type(e).description  # Flask's own words, which speak of a server, not of spoolq
        said = e.description if e.description != default else None
        status = e.code or 500
        if status == 404 and not said and request.path.startswith("/api/"):
            said = "no such address here (the overview's JSON is /api/overview; docs/operating.md lists the rest)"
        return answer(said or OUR_WORDS.get(status, e.name), status)


OUR_WORDS = {404: "no such page here (the overview is /)",
             405: "this address does not take that method (actions are POSTs from the pages' buttons)"}


def _api(app: Flask, board: DashboardState) -> None:
    """The pages' JSON twins, and /metrics (the same exposition as `spoolq metrics`)."""

    @app.get("/api/overview")
    def api_overview() -> Response:
        data = board.overview()
        data.pop("_charts")
        return jsonify(data)

    @app.get("/api/jobs/<state>")
    def api_jobs(state: str) -> Response:
        return jsonify(board.jobs(_filter(state), _page()))

    @app.get("/api/schedules")
    def api_schedules() -> Response:
        return jsonify(board.schedule_rows())

    @app.get("/api/job/<job_id>")
    def api_job(job_id: str) -> Response:
        return jsonify(board.job(asked.job_id(job_id)))

    @app.get("/metrics")
    def metrics() -> Response:
        with board.lock:
            text = exposition(board.spool, board.totals)
        return Response(text, 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def _log_from(path: str, offset_text: str, owner: int) -> Response:
    """The job's log from `offset` (at most LOG_CHUNK), and in X-Log-Offset where to ask next: a
    character cut by the chunk's end is left for the next request, not shown broken. X-Log-More
    says whether the log held more than this chunk (the page asks again at once)."""
    offset = _number(offset_text)
    data, size = b"", 0
    f = output.open_log(path, owner=owner)  # never through a symlink, never waiting on a fifo
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
    more = "1" if offset + len(data) < size else "0"
    return Response(text, 200, {"Content-Type": "text/plain; charset=utf-8", "X-Log-Offset": str(offset + used),
                                "X-Log-More": more})


def _number(text: str, at_most: int = 10**15) -> int:
    """A query's count (digits 0-9 only: '²' is a digit to str.isdigit), 0 when it is not one."""
    return min(int(text), at_most) if re.fullmatch(r"[0-9]{1,18}", text) else 0


def _state(state: str) -> str:
    if state not in STATES:
        abort(404)
    return state


def _page() -> int | None:
    """The page asked for, from 0; None for the last one (`page=last`)."""
    text = request.args.get("page", "0")
    return None if text == "last" else _number(text, 10**6)


def _filter(state: str) -> Filter:
    return Filter(_state(state), request.args.get("q", "")[:200], asked.queue(request.args.get("queue", "")))


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
