"""Who may use the dashboard: where it listens (loopback or not, however the address is spelled),
the Host a request names (DNS rebinding), and the --token.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from dataclasses import dataclass

from flask import Flask, Response, request

LOOPBACK_NAMES = frozenset({"localhost"})  # a name browsers take for loopback without asking DNS


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
    """--token on every request, and the Host check: on whenever the dashboard listens on the
    loopback with no token, so a page elsewhere whose name is rebound to it gets nothing."""
    app.config.update(SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_HTTPONLY=True)
    check_host = token is None and bound.loopback

    @app.before_request
    def admit() -> Response | None:
        if check_host and not names_loopback(request.host, bound):
            return _plain("this dashboard answers only to the names of this host's loopback", 421)
        if not token:
            return None
        bearer = request.headers.get("Authorization", "")
        given = [bearer[len("Bearer "):].strip() if bearer.startswith("Bearer ") else "",
                 request.args.get("token", ""), request.cookies.get("spoolq_token", "")]
        if not any(hmac.compare_digest(g.encode(), token.encode()) for g in given if g):
            return _plain("a token is needed (--token): ?token=… once, or Authorization: Bearer …", 401)
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        if token and request.args.get("token"):
            response.set_cookie("spoolq_token", token, httponly=True, samesite="Strict")
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                    "script-src 'self'; frame-ancestors 'none'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response


def _plain(text: str, status: int) -> Response:
    return Response(text + "\n", status, {"Content-Type": "text/plain; charset=utf-8"})
