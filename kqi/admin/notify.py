"""Job-end notifications, per user choice: a Slack-compatible webhook ({"text": ...}) and e-mail.

Ending a job queues one row per chosen channel in the same transaction (an outbox); the scheduler
loop hands delivery to a background thread, so a slow receiver never holds up scheduling, and every
send has a short timeout. A failed send is retried on later ticks, MAX_ATTEMPTS times at most.
"""
from __future__ import annotations

import logging
import re
import smtplib
import threading
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from kqi import validation as v
from kqi.admin import site_settings
from kqi.crypto import SecretBox
from kqi.errors import ServiceError
from kqi.extensions import AppContext
from kqi.models import Job, User
from kqi.models.admin import Notification, NotificationPreference

log = logging.getLogger(__name__)
SEND_TIMEOUT_S = 5
MAX_ATTEMPTS = 3
BATCH = 50  # per delivery pass, so one pass stays short
EMAIL = re.compile(r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9.-]{1,190}$")


# -- preferences

def preferences(session: Session, user: User) -> dict[str, Any]:
    """What the user chose; the webhook URL itself is never shown again (it is a credential)."""
    pref = session.get(NotificationPreference, user.id)
    return {"webhook": bool(pref and pref.webhook_sealed), "email": (pref.email or None) if pref else None}


def _webhook_url(body: dict) -> str:
    url = v.text(body, "webhook_url", max_len=2048)
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise ServiceError("webhook_url must be an http(s) URL without user:password@", field="webhook_url")
    return url


def set_preferences(session: Session, box: SecretBox, user: User, body: Any) -> dict[str, Any]:
    """{"webhook_url": URL or null, "email": address or null}: null or "" turns a channel off;
    an absent key leaves it as it is."""
    body = v.require_object(body)
    v.reject_unknown(body, ("webhook_url", "email"))
    updates = {}
    if "webhook_url" in body:
        url = _webhook_url(body)
        updates["webhook_sealed"] = box.seal(url) if url else ""
    if "email" in body:
        updates["email"] = v.text(body, "email", max_len=254, pattern=EMAIL, rule="an e-mail address")
    pref = session.get(NotificationPreference, user.id)
    if pref is None:
        pref = NotificationPreference(user_id=user.id, webhook_sealed="", email="")
        session.add(pref)
    for column, value in updates.items():
        setattr(pref, column, value)
    session.flush()
    return preferences(session, user)


# -- the outbox

def queue_job_end(session: Session, job_id: int) -> None:
    """Called in the transaction that ends the job."""
    job = session.execute(select(Job.user_id, Job.kind, Job.name, Job.status, Job.reason).where(Job.id == job_id)).one()
    pref = session.get(NotificationPreference, job.user_id)
    if pref is None:
        return
    text = f"kqi: {job.kind} {job.name} (#{job_id}) ended: {job.status.value}" + (f" ({job.reason})" if job.reason else "")
    for channel, chosen in (("webhook", pref.webhook_sealed), ("email", pref.email)):
        if chosen:
            session.add(Notification(job_id=job_id, user_id=job.user_id, channel=channel, text=text))


def _send(session: Session, box: SecretBox, note: Notification, settings: dict[str, Any]) -> None:
    pref = session.get(NotificationPreference, note.user_id)
    if note.channel == "webhook":
        if not (pref and pref.webhook_sealed):
            return  # turned off since: nothing to send
        response = requests.post(box.unseal(pref.webhook_sealed), json={"text": note.text}, timeout=SEND_TIMEOUT_S,
                                 allow_redirects=False)
        if response.status_code >= 300:
            raise OSError(f"webhook answered {response.status_code}")
        return
    if not (pref and pref.email):
        return
    if not settings["smtp_host"]:
        raise OSError("no SMTP relay is set (site settings: smtp_host)")
    message = EmailMessage()
    message["From"] = settings["smtp_from"]
    message["To"] = pref.email
    message["Subject"] = note.text.splitlines()[0][:200]
    message.set_content(note.text)
    with smtplib.SMTP(settings["smtp_host"], settings["smtp_port"], timeout=SEND_TIMEOUT_S) as smtp:
        smtp.send_message(message)


def deliver_pending(session: Session, box: SecretBox) -> int:
    """Send what waits in the outbox (one batch); return how many were sent."""
    settings = site_settings.current(session)
    pending = list(session.scalars(select(Notification).where(Notification.sent.is_(False),
                                                              Notification.attempts < MAX_ATTEMPTS)
                                   .order_by(Notification.id).limit(BATCH)))
    sent = 0
    for note in pending:
        note.attempts += 1
        try:
            _send(session, box, note, settings)
        except (OSError, requests.RequestException, smtplib.SMTPException) as exc:
            # The message says why without the URL, which is a credential.
            note.last_error = type(exc).__name__ + (f": {exc}" if not isinstance(exc, requests.RequestException) else "")
            log.warning("notification %s (%s) failed: %s", note.id, note.channel, note.last_error)
        else:
            note.sent = True
            sent += 1
        session.commit()
    return sent


class Notifier:
    """Runs deliver_pending on one background thread, in the app's context; kick() never waits for it."""

    def __init__(self, app_context: AppContext, box: SecretBox):
        self.app_context, self.box = app_context, box
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kqi-notify")
        self._busy = threading.Lock()

    def kick(self) -> None:
        if self._busy.acquire(blocking=False):
            try:
                self._pool.submit(self._deliver)
            except RuntimeError:  # shut down: the app is stopping
                self._busy.release()

    def _deliver(self) -> None:
        from kqi.extensions import db

        try:
            with self.app_context():
                try:
                    deliver_pending(db.session, self.box)
                except Exception:
                    log.exception("notification delivery failed")
                    db.session.rollback()
                finally:
                    db.session.remove()
        finally:
            self._busy.release()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
