"""The judge: whether an owner (a worker or supervisor, by its registration), or any process a
spool file names, is gone. Recovery, `worker list`, clean-up, fsck and the id take-over all ask
it, and nothing else decides. A registration is judged by the lease it was written under."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from . import config
from ..format import layout
from ..system import liveness

if TYPE_CHECKING:
    from .store import Store


class Registration(NamedTuple):
    owner: str
    record: dict[str, Any]  # {} when the file is unreadable
    heartbeat: float  # mtime of the registration, on the file system's clock

    def lease_ends(self, lease: float) -> float:
        """When its lease runs out, on the file system's clock: the lease it was written under,
        or `lease` if it names none."""
        return self.heartbeat + (registered_lease(self.record) or lease)


def registered_lease(record: dict[str, Any]) -> float | None:
    """The lease a registration was written under (its owner beats under it), if it says one."""
    lease = record.get("lease")
    return float(lease) if config.KEYS["lease_timeout"].check(lease) else None


def beat_interval(lease: float) -> float:
    """How often an owner beating under `lease` touches its registration: well inside the lease,
    at most 5 s."""
    return max(0.2, min(lease / 4, 5.0))


class OwnerJudge:
    """Says why an owner is gone, None while it lives. On this machine its pid decides: a dead
    pid means gone at once, and a live one is never lease-expired (a busy or stopped worker is
    still there, and would run its job twice). On any other host no heartbeat within the lease
    means gone, measured on the file system's clock (read once, when first needed): the lease its
    registration was written under, not the one configured now (a lease just lowered would take
    owners still beating at the old rhythm); `lease` only for a registration that names none."""

    def __init__(self, store: Store, lease: float):
        self.store = store
        self.lease = lease
        self.here = layout.host_name()
        self._fs_now: float | None = None

    def why_gone(self, reg: Registration) -> str | None:
        record = reg.record
        if self.is_local(record.get("host"), record.get("boot"), record.get("pidns")):
            return self.why_process_gone(record.get("host"), record.get("pid"), start=record.get("start"),
                                         boot=record.get("boot"), pidns=record.get("pidns"))
        if self._fs_now is None:
            self._fs_now = self.store.fs_clock()
        if self._fs_now > reg.lease_ends(self.lease):
            return f"no heartbeat from {record.get('host', '?')} for {self._fs_now - reg.heartbeat:.0f}s"
        return None

    def why_process_gone(self, host: object, pid: object, *, start: object = None,
                         boot: object = None, pidns: object = None) -> str | None:
        """A process named by host and pid: gone if it was on this machine, in this boot, and
        its pid (with its start time, when known) no longer runs. A process elsewhere cannot be
        probed from here: None (fail closed)."""
        if not self.is_local(host, boot, pidns):
            return None
        if liveness.alive(pid, start):
            return None
        return f"pid {pid} is gone"

    def is_local(self, host: object, boot: object = None, pidns: object = None) -> bool:
        """Was this process on this machine, in this boot, in our pid namespace? Only then does
        its pid mean anything here; elsewhere (a host with the same name, a container sharing
        this host's name, or before a reboot) only its lease counts."""
        if host != self.here:
            return False
        if pidns is not None and pidns != liveness.pid_namespace():
            return False
        return boot is None or boot == liveness.boot_id()
