"""The scheduler loop, the one impure part of the scheduler: read, plan, apply, act, watch.

It runs in the server process under APScheduler. A submit calls wake() so a job starts at once;
the interval is only the fallback that also watches running containers.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask
from kqi import job_runner
from kqi.extensions import db
from kqi.models import Node
from kqi.nodes import NodeDriver, driver_for
from kqi.scheduler import snapshot
from kqi.scheduler.plan import plan

log = logging.getLogger(__name__)
TICK_JOB = "kqi-scheduler-tick"


class SchedulerService:
    def __init__(self, app: Flask):
        self.app = app
        settings = app.config["KQI"]
        self.interval_s = float(settings["scheduler_interval_s"])
        self.timeout_s = int(settings["docker_timeout_s"])
        self.stop_grace_s = int(settings["stop_grace_s"])
        self._drivers: dict[str, NodeDriver] = {}
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one tick at a time, whoever calls it
        self._scheduler: BackgroundScheduler | None = None

    # -- reaching nodes

    def driver(self, node: Node) -> NodeDriver:
        driver = self._drivers.get(node.url)
        if driver is None:
            driver = self._drivers[node.url] = driver_for(node.url, timeout_s=self.timeout_s)
        return driver

    def run_context(self) -> job_runner.RunContext:
        return job_runner.RunContext(instance=self.app.instance_path, site=self.app.config["KQI_SITE"],
                                     driver=self.driver, stop_grace_s=self.stop_grace_s)

    # -- the loop

    def start(self) -> None:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self._scheduler = BackgroundScheduler(timezone=timezone.utc)
        self._scheduler.add_job(self._run, "interval", seconds=self.interval_s, id=TICK_JOB, max_instances=1,
                                coalesce=True, next_run_time=datetime.now(timezone.utc))
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        for driver in self._drivers.values():
            driver.close()
        self._drivers.clear()

    def wake(self) -> None:
        """Run a tick now (or right after the one in progress)."""
        self._wake.set()
        if self._lock.locked():
            return  # the tick in progress sees the flag and runs once more
        if self._scheduler is not None:
            try:
                self._scheduler.modify_job(TICK_JOB, next_run_time=datetime.now(timezone.utc))
            except Exception:  # the scheduler is shutting down; nothing left to wake
                log.debug("wake ignored", exc_info=True)

    def _run(self) -> None:
        while True:
            self._wake.clear()
            self.tick()
            if not self._wake.is_set():
                return

    def tick(self) -> None:
        with self._lock, self.app.app_context():
            try:
                self._start_placed()
                if self._watch():
                    self._start_placed()  # what ended freed room for the queue
            except Exception:
                log.exception("scheduler tick failed")
                db.session.rollback()
            finally:
                db.session.remove()

    def _start_placed(self) -> None:
        """Plan the queue, write the plan, start what it placed (and any start left by a crash)."""
        session = db.session
        snap = snapshot.read(session, now=time.time())
        result = plan(snap.state)
        snapshot.apply(session, snap, result)
        session.commit()
        ctx = self.run_context()
        for job in job_runner.jobs_starting(session):
            job_runner.start(session, ctx, job)

    def _watch(self) -> int:
        return job_runner.watch(db.session, self.run_context())

