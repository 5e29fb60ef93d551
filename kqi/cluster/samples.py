"""Samples of the cluster's load (GPUs allocated of all GPUs, jobs queued and running), recorded by
the scheduler loop at a fixed interval and pruned after a retention, for the dashboard's chart.

Recording is cheap by design, as it runs inside a scheduler tick: one aggregate query, one insert,
one delete on the indexed time column."""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, func, select
from sqlalchemy.orm import Session

from kqi.jobs.lifecycle import ACTIVE
from kqi.models import GpuAllocation, Job, JobStatus, Node, utcnow
from kqi.models.dashboard import ClusterSample
from kqi.resources import Resources

FIELDS = ("at", "gpu_total", "gpu_allocated_milli", "queued", "running")


def measure(session: Session) -> dict[str, int]:
    """The cluster now, in one query: GPUs of every registered node, GPU share held by active jobs
    (1000 per whole GPU), jobs queued and jobs starting or running, of every tenant."""
    def count(*where):
        return select(func.count()).select_from(Job).where(*where).scalar_subquery()

    row = session.execute(select(
        select(func.coalesce(func.sum(Node.gpu_count), 0)).scalar_subquery(),
        select(func.coalesce(func.sum(GpuAllocation.milli), 0)).scalar_subquery(),
        count(Job.status == JobStatus.QUEUED),
        count(Job.status.in_(ACTIVE)),
    )).one()
    return {"gpu_total": int(row[0]), "gpu_allocated_milli": int(row[1]), "queued": int(row[2]), "running": int(row[3])}


def record(session: Session, at: datetime | None = None) -> ClusterSample:
    sample = ClusterSample(at=at or utcnow(), **measure(session))
    session.add(sample)
    session.flush()
    return sample


def prune(session: Session, before: datetime) -> int:
    """Delete the samples taken before `before`; how many went."""
    return session.execute(delete(ClusterSample).where(ClusterSample.at < before)).rowcount or 0


def series(session: Session, since: datetime, until: datetime | None = None) -> list[Row]:
    """The samples from `since` (to `until`), oldest first: column rows with a sample's attributes
    (a day is 1,440 of them at the default interval; rows load several times faster than objects)."""
    query = select(*(ClusterSample.__table__.c[name] for name in FIELDS)).where(ClusterSample.at >= since)
    if until is not None:
        query = query.where(ClusterSample.at <= until)
    return list(session.execute(query.order_by(ClusterSample.at, ClusterSample.id)))


def utilisation_pct(gpu_allocated_milli: int, gpu_total: int) -> float | None:
    """Allocated GPUs of all GPUs, in percent; None without GPUs (nothing to use)."""
    return round(gpu_allocated_milli / 10 / gpu_total, 1) if gpu_total else None


def as_dict(sample: ClusterSample | Row) -> dict[str, Any]:
    return {"at": sample.at.isoformat(timespec="seconds") + "Z", "gpu_total": sample.gpu_total,
            "gpu_allocated": Resources(gpu_milli=sample.gpu_allocated_milli).gpus,
            "utilisation_pct": utilisation_pct(sample.gpu_allocated_milli, sample.gpu_total),
            "queued": sample.queued, "running": sample.running}


class Recorder:
    """Held by the scheduler loop: records a sample when one is due, and prunes the old ones.

    The interval is kept in memory (a monotonic clock): no query is spent asking when the last
    sample was taken. A new process (or a new lease holder) records at its first tick."""

    def __init__(self, interval_s: float, retention_days: float, clock: Callable[[], float] = time.monotonic):
        self.interval_s = float(interval_s)
        self.retention = timedelta(days=float(retention_days))
        self._clock = clock
        self._next = float("-inf")

    def record_if_due(self, session: Session) -> ClusterSample | None:
        """A new sample (the caller commits), or None when the last one is recent enough."""
        now = self._clock()
        if now < self._next:
            return None
        self._next = now + self.interval_s
        sample = record(session)
        prune(session, sample.at - self.retention)
        return sample
