"""What a request names, checked before anything uses it: a job id (404 for one no job can
have), a queue (400 for a name no queue can have), and the address of a job list."""

from __future__ import annotations

from flask import abort, url_for

from ..format.job import valid_id, valid_queue


def job_id(text: str) -> str:
    """A job's id as a page's path names it (a quarantined file's with its "+")."""
    if not valid_id(text.removeprefix("+")):
        abort(404)
    return text


def queue(text: str) -> str:
    """A queue a form or a query names ("" for every queue)."""
    if text and not valid_queue(text):
        abort(400, f"{text[:60]!r} is not a queue name")
    return text


def list_url(state: str, page: int | str | None = None, q: str = "", queue: str = "") -> str:
    """A list's address with only the parameters that say something."""
    given = {"page": page, "q": q, "queue": queue}
    return url_for("jobs", state=state, **{k: v for k, v in given.items() if v not in (None, "", 0)})
