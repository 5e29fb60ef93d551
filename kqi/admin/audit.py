"""The audit log: who did what, when, from where, and how it ended.

Every state-changing request (API and pages) is recorded by the views' after-request hooks from
the route's name and path alone: never a request body, a query string or a header, so no
password, token or webhook URL can reach the log. Failed logins are recorded too, and what
tenant managers and administrators change on others' behalf."""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from kqi import validation as v
from kqi.errors import ServiceError
from kqi.extensions import AppContext
from kqi.models import utcnow
from kqi.models.admin import AuditEvent

log = logging.getLogger(__name__)

FILTERS = ("username", "tenant", "action", "since", "until")
EXTENSION = "kqi_audit"  # where the app factory keeps the app's AuditBuffer (app.extensions)


class AuditBuffer:
    """Audit rows wait here for at most `delay_s` and are written together, in one transaction: under
    load one commit per request for the log alone would halve what the server can take. Reading the
    log writes what waits first, so it is always complete for its reader; a crash loses at most the
    last `delay_s` of it. The timer's thread writes in the app's context (`app_context`)."""

    def __init__(self, app_context: AppContext, delay_s: float = 0.5):
        self.app_context = app_context
        self.delay_s = delay_s
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        # Held from taking the rows to their commit: a reader's write() waits for rows another thread
        # has taken but not yet committed, so its read that follows sees them.
        self._writing = threading.Lock()
        self._timer: threading.Timer | None = None

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._rows.append(row)
            if self._timer is None:
                self._timer = threading.Timer(self.delay_s, self._write_later)
                self._timer.daemon = True
                self._timer.start()

    def write(self, session: Session) -> None:
        """Write what waits, now (the caller's session; committed here)."""
        with self._writing:
            with self._lock:
                rows, self._rows = self._rows, []
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            if not rows:
                return
            try:
                session.execute(insert(AuditEvent), rows)
                session.commit()
            except Exception:
                session.rollback()
                with self._lock:  # kept for the next try, in order
                    self._rows[:0] = rows
                raise

    def _write_later(self) -> None:
        from kqi.extensions import db

        with self.app_context():
            try:
                self.write(db.session)
            except Exception:
                log.exception("could not write the audit log; will retry with the next event")
            finally:
                db.session.remove()


    def close(self) -> None:
        """Write what waits now and stop the timer: the server is stopping."""
        with self._lock:
            pending = bool(self._rows) or self._timer is not None
        if pending:
            self._write_later()


def record(buffer: AuditBuffer, *, username: str, tenant: str, action: str, target: str, status: int, ip: str) -> None:
    """Log one event (written within AuditBuffer.delay_s)."""
    buffer.add(
        {"at": utcnow(), "username": username[:64], "tenant": tenant[:64], "action": action[:64],
         "target": target[:512], "status": status, "ip": ip[:64]})


def _moment(args: Mapping[str, Any], field: str) -> datetime | None:
    value = args.get(field)
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).removesuffix("Z"))
    except ValueError:
        raise ServiceError(f"{field} must be a date or time (ISO 8601)", field=field) from None


def page(session: Session, buffer: AuditBuffer, args: Mapping[str, Any], page_no: int, per_page: int,
         tenant: str | None = None) -> tuple[list[AuditEvent], int]:
    """Newest first; username and tenant match exactly, action by substring, since/until bound `at`
    (a bare date as until covers that whole day). `tenant` forces one tenant (a manager's view)."""
    query = select(AuditEvent)
    for field in ("username", "tenant"):
        value = v.text(args, field, max_len=64)
        if value:
            query = query.where(getattr(AuditEvent, field) == value)
    if tenant is not None:
        query = query.where(AuditEvent.tenant == tenant)
    action = v.text(args, "action", max_len=64)
    if action:
        query = query.where(AuditEvent.action.contains(action, autoescape=True))
    since, until = _moment(args, "since"), _moment(args, "until")
    if since:
        query = query.where(AuditEvent.at >= since)
    if until:
        bare_date = len(str(args.get("until"))) == 10
        query = query.where(AuditEvent.at < until + timedelta(days=1)) if bare_date else query.where(AuditEvent.at <= until)
    buffer.write(session)  # what waits first: the log is complete for its reader
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(query.order_by(AuditEvent.id.desc()).offset((page_no - 1) * per_page).limit(per_page))
    return list(rows), total


def as_dict(event: AuditEvent) -> dict[str, Any]:
    return {"id": event.id, "at": event.at.isoformat(timespec="seconds") + "Z", "username": event.username or None,
            "tenant": event.tenant or None, "action": event.action, "target": event.target, "status": event.status,
            "ip": event.ip or None}
