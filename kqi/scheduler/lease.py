"""Many server processes, one scheduler: with PostgreSQL only the holder of the `scheduler` lease
ticks. The holder renews the lease every tick; when it dies, the lease expires and the next process
to tick takes it over (within `scheduler_lease_s`). Expiry is measured on the database's clock, so
the processes' clocks do not matter. SQLite means one process: the lease is not used.
"""
from __future__ import annotations

import os
import secrets
import socket
import time

from sqlalchemy import text
from sqlalchemy.orm import Session

NAME = "scheduler"
_NOW = "timezone('utc', now())"
_TAKE = text(f"""
    UPDATE leases SET holder = :me, expires_at = {_NOW} + make_interval(secs => :ttl)
    WHERE name = :name AND (holder = :me OR expires_at < {_NOW})
""")
_CREATE = text(f"""
    INSERT INTO leases (name, holder, expires_at) VALUES (:name, :me, {_NOW} + make_interval(secs => :ttl))
    ON CONFLICT (name) DO NOTHING
""")
_RELEASE = text(f"UPDATE leases SET expires_at = {_NOW} WHERE name = :name AND holder = :me")


class SchedulerLease:
    def __init__(self, ttl_s: float):
        self.ttl_s = float(ttl_s)
        self.holder = f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.held = False
        # True when the last hold() renewed the lease before it could have expired: no other process
        # can have scheduled since the hold before it (what a tick kept from then is still true).
        self.unbroken = False
        self._expires_by = float("-inf")  # monotonic: the lease expires no later than this

    @staticmethod
    def _shared(session: Session) -> bool:
        return session.get_bind().dialect.name == "postgresql"

    def hold(self, session: Session) -> bool:
        """Take or renew the lease; True while this process may schedule. Commits."""
        if not self._shared(session):
            self.unbroken = True
            self._expires_by = float("inf")  # one process: nobody else can take it
            return True
        asked_at = time.monotonic()  # the database stamps its expiry after this: it lasts at least ttl from here
        params = {"me": self.holder, "ttl": self.ttl_s, "name": NAME}
        taken = session.execute(_TAKE, params).rowcount == 1 or session.execute(_CREATE, params).rowcount == 1
        session.commit()
        self.unbroken = taken and self.held and asked_at < self._expires_by
        self.held = taken
        self._expires_by = asked_at + self.ttl_s if taken else float("-inf")
        return taken

    def current(self) -> bool:
        """Whether the lease taken by the last hold() is certainly still this process's (no
        database round trip: work handed out by a tick checks it before it begins)."""
        return time.monotonic() < self._expires_by

    def release(self, session: Session) -> None:
        """Let another process take over at once (a clean shutdown)."""
        if self.held and self._shared(session):
            session.execute(_RELEASE, {"me": self.holder, "name": NAME})
            session.commit()
        self.held = False
        self._expires_by = float("-inf")
