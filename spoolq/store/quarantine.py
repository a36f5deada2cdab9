"""Quarantine: a file that must never run moves to ``dead/+<qid>.json`` with its bytes unchanged,
and ``quarantine/<qid>.json`` records why. Never deleted, never run; ``show``, ``dlq list`` and
fsck read the reason from here."""

from __future__ import annotations

import json
import os

from ..format import job, layout
from ..system import fsio
from .store import Store

MISSING_REASON = "quarantined (reason record missing)"


class Quarantine:
    def __init__(self, store: Store):
        self.store = store
        self.layout = store.layout

    def put(self, path: str, source_name: str, reason: str, now: float) -> str:
        """Move `path` to dead/ as a quarantined file and record why; returns its qid. If the
        file moved on meanwhile (another worker took it), nothing is recorded."""
        while True:
            qid = layout.quarantine_id(source_name)
            if os.path.lexists(self.layout.reason_file(qid)):
                continue
            self.write_record(qid, reason, source_name, now)
            try:
                moved = fsio.move_no_replace(path, self.file(qid), shared_source=True)
            except FileExistsError:  # another quarantined file has this qid: never replace it
                fsio.unlink_quietly(self.layout.reason_file(qid))
                continue
            if not moved:
                fsio.unlink_quietly(self.layout.reason_file(qid))
                return qid
            fsio.fsync_dir(self.layout.dead)
            return qid

    def write_record(self, qid: str, reason: str, source_name: str | None, now: float) -> None:
        record = {"id": qid, "reason": reason, "source": source_name, "quarantined_at": job.iso(now)}
        self.store.publish(self.layout.reason_file(qid), json.dumps(record, ensure_ascii=True).encode())

    def file(self, qid: str) -> str:
        return os.path.join(self.layout.dead, layout.job_file(qid))

    def exists(self, qid: str) -> bool:
        return os.path.lexists(self.file(qid))

    def record(self, qid: str) -> dict[str, object] | None:
        """The reason record, if it is there and readable."""
        try:
            data, _ = fsio.read_regular(self.layout.reason_file(qid), job.MAX_JOB_BYTES)
            record = json.loads(data)
        except (OSError, ValueError, RecursionError):
            return None
        return record if isinstance(record, dict) else None

    def reason(self, qid: str) -> str:
        record = self.record(qid)
        if record is None or not isinstance(record.get("reason"), str):
            return MISSING_REASON
        return str(record["reason"])
