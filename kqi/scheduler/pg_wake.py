"""Waking the lease holder from another server process on PostgreSQL (LISTEN/NOTIFY).

With several `serve` processes on one database (several hosts), only the holder of the scheduler
lease plans. A submit that reaches another process wakes that process's loop, which finds it does
not hold the lease; it then sends NOTIFY, and the holder, which LISTENs, ticks at once instead of at
its fallback interval. (Web workers of one `serve` reach their own scheduling process with a
datagram: kqi/web_workers.py.)
"""
from __future__ import annotations

import logging
import threading

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
CHANNEL = "kqi_scheduler_wake"
RECONNECT_S = 5.0


def notify(session: Session) -> None:
    """Wake the lease holder (delivered when this commits; commits)."""
    session.execute(text(f"NOTIFY {CHANNEL}"))
    session.commit()


class Listener:
    """A thread with its own connection that calls on_wake() for each NOTIFY, reconnecting after a
    database restart."""

    def __init__(self, database_url: str, on_wake):
        # SQLAlchemy's URL names the driver ("postgresql+psycopg://"); libpq wants the plain scheme.
        self._conninfo = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_wake = on_wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kqi-pg-wake", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):  # the timeout lets stop() end it
                            self._on_wake()
            except psycopg.Error as exc:
                log.warning("scheduler wake listener: %s; again in %.0f s", type(exc).__name__, RECONNECT_S)
                self._stop.wait(RECONNECT_S)
