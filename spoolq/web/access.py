"""Who may use the dashboard: where it listens (loopback or not, however the address is spelled),
the Host a request names (DNS rebinding), the --token and the session it buys, and what the
access log keeps of a request (never its query, where a token may be).

A token (posted by the form a browser without a session is shown, or given once as `?token=`) is
checked in constant time and exchanged for a session: a cookie signed with this process's secret
that holds no token, so neither the cookie nor what a browser sends to another port of the same
host (cookies are not kept apart by port) reveals the token, and every session ends with the
process or after SESSION_LIFETIME. A request that fails gets an answer and no cookie. A wrong
token is answered after WRONG_TOKEN_PAUSE, one at a time however many arrive at once (beyond
WRONG_TOKENS_WAITING in line, 429 at once to any token): a few guesses a second at most, where a right token
is never kept waiting.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask, Response, current_app, redirect, request, session
from werkzeug.serving import WSGIRequestHandler

SESSION_LIFETIME = timedelta(hours=12)
LOGIN = "/login"  # where the token form posts (--token only)
LOGGED_IN = "in"  # the session's mark of a token given; the token itself is never in it
LOOPBACK_NAMES = frozenset({"localhost"})  # a name browsers take for loopback without asking DNS
WRONG_TOKEN_PAUSE = 0.5  # seconds before a wrong token is answered, one answer at a time
WRONG_TOKENS_WAITING = 8  # wrong tokens in line at most: more at once are answered 429 at once (a thread each)


@dataclass(frozen=True)
class Bound:
    """Where the dashboard listens: the name it was given (--bind), the address that reached."""

    name: str
    address: str
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback(self.address)

    @property
    def everywhere(self) -> bool:
        """Bound to every address of the host (0.0.0.0, ::)."""
        ip = _address(self.address)
        return ip is not None and ip.is_unspecified


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_loopback(text: str) -> bool:
    """Whether `text` is an address literal of the loopback, in any spelling that names one:
    127.0.0.0/8, ::1, and IPv4-mapped ::ffff:127.x.y.z (not loopback to Python 3.11's ipaddress)."""
    ip = _address(text)
    if ip is None:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


HOST = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+))(?::[0-9]{1,5})?")


def names_loopback(host: str, bound: Bound) -> bool:
    """Whether a request's Host names this dashboard on the loopback: a loopback address literal,
    `localhost`, or the name it was bound by (any case, one trailing dot, any port). A name an
    attacker's DNS can rebind to 127.0.0.1 is none of these; anything not host[:port] is refused."""
    m = HOST.fullmatch(host)
    if m is None:
        return False
    if m[1]:
        return is_loopback(m[1])
    name = m[2].lower().removesuffix(".")
    return is_loopback(name) or name in LOOPBACK_NAMES or name == bound.name.lower().removesuffix(".")


def guard(app: Flask, token: str | None, bound: Bound) -> None:
    """--token on every request (a session, or Authorization: Bearer for scripts), and the Host
    check: on whenever the dashboard listens on the loopback with no token, so a page elsewhere
    whose name is rebound to it gets nothing. Headers that keep a page from being framed, from
    running others' scripts, from naming itself to another site (Referer) and from being kept
    in a cache."""
    app.config.update(SESSION_COOKIE_NAME=f"spoolq_{bound.port}",  # two dashboards on a host keep theirs
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_HTTPONLY=True,
                      PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME, SESSION_REFRESH_EACH_REQUEST=False)
    check_host = token is None and bound.loopback
    tokens = WrongTokens(token or "")  # used only with a token

    @app.before_request
    def admit() -> Response | None:
        if check_host and not names_loopback(request.host, bound):
            return _plain("this dashboard answers only to the names of this host's loopback", 421)
        if not token:
            return None
        if request.method in ("GET", "HEAD") and "token" in request.args:
            then = _here_without_token()
            return tokens.check(request.args["token"], then) or _log_in(then)
        if request.method == "POST" and request.path == LOGIN:
            then = _local(request.form.get("next", ""))
            return tokens.check(request.form.get("token", ""), then) or _log_in(then)
        if session.get(LOGGED_IN) is True:
            return None
        then = _here_without_token() if request.method == "GET" else "/"
        bearer = _bearer()
        return tokens.check(bearer, then) if bearer else _refuse("a token is needed (--token)", then)

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                    "script-src 'self'; frame-ancestors 'none'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        # A page shows a spool's jobs, commands and output: kept in no cache, on disk or between
        # (static files say their own: revalidated, never secret). Every answer of this module
        # (a refusal, a log-in's redirect) gets it here too.
        response.headers.setdefault("Cache-Control", "no-store")
        return response


class WrongTokens:
    """The answer to a token given: none to the right one; to a wrong one, after WRONG_TOKEN_PAUSE,
    one at a time, at most WRONG_TOKENS_WAITING in line."""

    def __init__(self, token: str) -> None:
        self._token = token
        self._turn = threading.Lock()  # held through each wrong token's pause: guesses wait in line
        self._line = threading.BoundedSemaphore(WRONG_TOKENS_WAITING)

    def check(self, given: str, then: str) -> Response | None:
        """None if `given` is the token, else the answer to a wrong one. A full line is answered
        429 before the token is compared, right or wrong: a 429 that only a wrong token got would
        tell it at once, and guesses would go as fast as the server answers."""
        # RACE: many guesses at once, each in a thread of its own: they take the turn one after
        # another, so the pauses add up; a right token never takes it. Those beyond the line's
        # length are turned away at once: a flood of guesses holds no more threads than that.
        if not self._line.acquire(blocking=False):
            return _plain("too many wrong tokens at once: try again later", 429)
        try:
            if _same(given, self._token):
                return None
            with self._turn:
                time.sleep(WRONG_TOKEN_PAUSE)
        finally:
            self._line.release()
        return _refuse("that token is not this dashboard's (--token)", then)


def _log_in(then: str) -> Response:
    """The right token (`?token=`, or the form's POST) exchanged for a session, and a redirect to
    `then`: the same page without it, out of the address bar, the history and every later request."""
    session.clear()  # a new session, and with it a new form token
    session[LOGGED_IN] = True
    session.permanent = True  # the cookie's lifetime: SESSION_LIFETIME, not the browser's
    return redirect(then, 303)


def _refuse(why: str, then: str) -> Response:
    """401: to a browser, a page with a form that asks for the token (rendered with no session,
    no spool and no form token); to anything else, one line that says how to send it."""
    if request.accept_mimetypes.best_match(["text/plain", "text/html"]) == "text/html":
        page = current_app.jinja_env.get_template("login.html").render(message=why, next=then)
        return Response(page, 401, {"Content-Type": "text/html; charset=utf-8"})
    return _plain(f"{why}: open a page once with ?token=…, or send Authorization: Bearer …", 401)


def _local(target: str) -> str:
    """`target` if it is a path on this server, else /: a log-in never sends a browser elsewhere
    (not //host, not /\\host, no tab or newline a browser would drop, only printable ASCII)."""
    return target if re.fullmatch(r"/(?![/\\])[!-\[\]-~]*", target) else "/"


def _here_without_token() -> str:
    """This request's path and query without `token`; never `//host`, so it stays on this server."""
    rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
    path = urllib.parse.quote("/" + request.path.lstrip("/\\"))
    return path + ("?" + urllib.parse.urlencode(rest) if rest else "")


def _bearer() -> str:
    """The token of `Authorization: Bearer T` (the scheme's name in any case, as HTTP has it). A
    header's bytes reach us one character a byte (WSGI's Latin-1): bytes that are UTF-8 (`curl
    -H`, a shell script) are read as UTF-8, as the form and `?token=` are; others as they were
    sent, in Latin-1 (Python's urllib, http.client and requests encode a header so), so a token
    beyond ASCII matches however it is given."""
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""
    try:
        return credentials.strip().encode("latin-1").decode("utf-8")
    except UnicodeError:  # not UTF-8 (or not a WSGI header string): taken as it is
        return credentials.strip()


def _same(given: str, token: str) -> bool:
    """Compared in constant time, whatever the lengths (digests of equal size)."""
    if not given:
        return False
    digest = [hashlib.sha256(t.encode("utf-8", "surrogateescape")).digest() for t in (given, token)]
    return hmac.compare_digest(digest[0], digest[1])


def _plain(text: str, status: int) -> Response:
    return Response(text + "\n", status, {"Content-Type": "text/plain; charset=utf-8"})


QUERY = re.compile(r"\?[^\s\"']*")


class AccessLog(WSGIRequestHandler):
    """Werkzeug's request handler, whose log lines (requests and errors alike, on stderr and so in
    the journal) keep each path and drop its query: a `?token=` is a secret."""

    def log(self, type: str, message: str, *args: Any) -> None:
        super().log(type, "%s", QUERY.sub("", message % args if args else message))
