"""The service manager's notification protocol (sd_notify): a datagram to $NOTIFY_SOCKET, so
that under systemd (Type=notify) `systemctl start` returns once the workers run. Written here
rather than taken from a library: it is one sendto, and a dependency for it would be a fourth
for the core."""

from __future__ import annotations

import os


def sd_notify(state: str) -> bool:
    """Send `state` ("READY=1", "STOPPING=1", "STATUS=...") if a service manager listens; True if sent."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "@/":
        return False
    import socket  # only under a service manager: a tenth of a burst's imports otherwise

    target = "\0" + address[1:] if address[0] == "@" else address  # '@': the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode(errors="replace"), socket.MSG_DONTWAIT, target)  # never blocks its caller
    except OSError:
        return False
    return True
