"""The dashboard: what a user sees first after login, as figures (the page and GET /api/v1/dashboard
show the same ones).

- Mine: my running, queued and recent jobs of every kind in the current tenant, and my GPU-hours
  this week (Monday 00:00 UTC on): ended jobs from their usage records (the part of each inside
  the week), plus the running jobs' time so far.
- My tenant: its quota against what its active jobs hold, and how many of its jobs wait.
- The cluster: each node's GPUs in use, the queue, and GPU utilisation and queue length over time
  from the samples the scheduler loop records (kqi/cluster/samples.py).
Counts of the cluster are of every tenant; nothing names another tenant's job."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, selectinload

from kqi import charts
from kqi import validation as v
from kqi.accounts.auth import Principal
from kqi.cluster import registry as node_registry
from kqi.cluster import samples as cluster_samples
from kqi.jobs.lifecycle import ACTIVE
from kqi.models import Job, JobPart, JobStatus, Tenant
from kqi.models.admin import UsageRecord
from kqi.resources import Resources, limits_as_api

LISTED = 20  # running or queued jobs of mine shown (the totals count them all)
RECENT = 10  # ended jobs of mine shown
DEFAULT_HOURS, MAX_HOURS = 24, 24 * 31
RESOURCES = (("cpu", "CPU", "cores"), ("memory_gb", "Memory", "GB"), ("gpu", "GPU", "GPUs"))


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") + "Z" if moment else None


def parse_hours(args: Mapping[str, Any]) -> int:
    """How far back the series reaches: `hours`, 1 to 744 (31 days), default 24."""
    return v.number(args, "hours", minimum=1, maximum=MAX_HOURS, integer=True, default=DEFAULT_HOURS)


def week_start(now: datetime) -> datetime:
    """Monday 00:00 (UTC, naive as stored) of the week `now` is in."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=now.weekday())


# -- mine

def _job_dict(job: Job) -> dict[str, Any]:
    return {"id": job.id, "kind": job.kind, "name": job.name, "status": job.status.value,
            "reason": job.reason or None, "node": job.node.name if job.node else None,
            "gpu": (job.resources * job.nodes).gpus, "queue_position": job.queue_position,
            "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
            "completed_at": _iso(job.completed_at)}


def my_jobs(session: Session, who: Principal) -> dict[str, Any]:
    """My jobs in the current tenant: running (and starting), queued, recently ended."""
    mine = select(Job).where(Job.tenant_id == who.tenant.id, Job.user_id == who.user.id)
    eager = selectinload(Job.parts).joinedload(JobPart.node)
    counts = dict(session.execute(
        select(Job.status, func.count()).where(Job.tenant_id == who.tenant.id, Job.user_id == who.user.id,
                                               Job.status.in_((JobStatus.QUEUED, *ACTIVE)))
        .group_by(Job.status)).all())
    running = session.scalars(mine.where(Job.status.in_(ACTIVE)).options(eager).order_by(Job.id.desc()).limit(LISTED))
    # In submission order (each shows its queue position): the index walk stops after LISTED rows,
    # where sorting by position would read every queued job of mine first.
    queued = session.scalars(mine.where(Job.status == JobStatus.QUEUED).options(eager).order_by(Job.id).limit(LISTED))
    recent = session.scalars(mine.where(Job.status.not_in((JobStatus.QUEUED, *ACTIVE))).options(eager)
                             .order_by(Job.completed_at.desc(), Job.id.desc()).limit(RECENT))
    return {"running": [_job_dict(j) for j in running], "queued": [_job_dict(j) for j in queued],
            "recent": [_job_dict(j) for j in recent],
            "running_total": sum(counts.get(s, 0) for s in ACTIVE), "queued_total": counts.get(JobStatus.QUEUED, 0)}


def gpu_hours_this_week(session: Session, who: Principal, now: datetime) -> dict[str, Any]:
    """My GPU-hours since Monday: `ended` from the usage records (a job that began before Monday
    counts for its part after it), `running` for the active jobs' time so far."""
    since = week_start(now)
    ended = 0.0
    for started, ended_at, gpu_hours in session.execute(
            select(UsageRecord.started_at, UsageRecord.ended_at, UsageRecord.gpu_hours)
            .where(UsageRecord.tenant_id == who.tenant.id, UsageRecord.user_id == who.user.id,
                   UsageRecord.ended_at > since, UsageRecord.gpu_hours > 0)):
        span = (ended_at - started).total_seconds()
        ended += gpu_hours * ((ended_at - max(started, since)).total_seconds() / span if span > 0 else 1.0)
    running = 0.0
    for gpu_milli, parts, started in session.execute(
            select(Job.gpu_milli, Job.nodes, Job.started_at)
            .where(Job.tenant_id == who.tenant.id, Job.user_id == who.user.id, Job.status.in_(ACTIVE),
                   Job.started_at.is_not(None), Job.gpu_milli > 0)):
        held = Resources(gpu_milli=gpu_milli) * (parts or 1)
        running += held.gpus * max(0.0, (now - max(started, since)).total_seconds()) / 3600
    return {"since": _iso(since), "ended": round(ended, 3), "running": round(running, 3),
            "total": round(ended + running, 3)}


# -- my tenant

def tenant_use(session: Session, tenant: Tenant) -> dict[str, Any]:
    """The tenant's quota (None: unlimited) against what its active jobs hold, every part of a gang
    job counted; and its jobs queued and running."""
    active = Job.status.in_(ACTIVE)

    def held(column):
        return func.coalesce(func.sum(case((active, column * Job.nodes), else_=0)), 0)

    cpu, memory, gpu, queued, running = session.execute(
        select(held(Job.cpu_milli), held(Job.memory_mib), held(Job.gpu_milli),
               func.count(case((Job.status == JobStatus.QUEUED, 1))), func.count(case((active, 1))))
        .where(Job.tenant_id == tenant.id, Job.status.in_((JobStatus.QUEUED, *ACTIVE)))).one()

    used = Resources(cpu, memory, gpu).as_api()
    quota = limits_as_api(tenant.quota)
    return {"name": tenant.name, "display_name": tenant.display_name or tenant.name,
            "queued": queued, "running": running,
            **{name: {"used": used[name], "quota": quota[name]} for name in ("cpu", "memory_gb", "gpu")}}


# -- the cluster

def cluster(session: Session) -> dict[str, Any]:
    now = cluster_samples.measure(session)
    nodes = [{"id": n["id"], "name": n["name"], "state": n["state"], "labels": n["labels"],
              "gpus": {"total": n["gpus"]["total"], "used": n["gpus"]["used"]},
              "cpu": {"total": n["cpu"]["total"], "used": n["cpu"]["used"]},
              "memory_gb": {"total": n["memory_gb"]["total"], "used": n["memory_gb"]["used"]}}
             for n in node_registry.listing(session)]
    return {"nodes": nodes, "queued": now["queued"], "running": now["running"],
            "gpus": {"total": now["gpu_total"], "allocated": Resources(gpu_milli=now["gpu_allocated_milli"]).gpus,
                     "utilisation_pct": cluster_samples.utilisation_pct(now["gpu_allocated_milli"], now["gpu_total"])}}


def history(session: Session, now: datetime, hours: int = DEFAULT_HOURS) -> dict[str, Any]:
    """The cluster samples of the last `hours`."""
    since = now - timedelta(hours=hours)
    samples = cluster_samples.series(session, since, now)
    return {"since": since, "until": now, "samples": samples}


def history_dict(found: dict[str, Any]) -> dict[str, Any]:
    return {"since": _iso(found["since"]), "until": _iso(found["until"]),
            "points": [cluster_samples.as_dict(s) for s in found["samples"]]}


def history_charts(samples: list, since: datetime, until: datetime, interval_s: float) -> dict[str, str]:
    """GPU utilisation (%) and queue length over time, as SVG. No sample for three intervals
    (the scheduler was not running) breaks the line."""
    gap = timedelta(seconds=3 * interval_s)
    gpu = [(s.at, cluster_samples.utilisation_pct(s.gpu_allocated_milli, s.gpu_total)) for s in samples]
    queue = [(s.at, float(s.queued)) for s in samples]
    return {"gpu": charts.line_chart(gpu, since, until, "GPU utilisation, percent of all GPUs allocated",
                                     y_max=100, unit="%", gap=gap, width=560, height=180),
            "queue": charts.line_chart(queue, since, until, "Jobs in the queue", gap=gap, counts=True, color="#c77c24",
                                       width=560, height=180)}


def summary(session: Session, who: Principal, now: datetime, hours: int = DEFAULT_HOURS) -> dict[str, Any]:
    """Every figure of the dashboard, as the API answers it."""
    return {"user": who.user.username, "tenant": who.tenant.name, "jobs": my_jobs(session, who),
            "gpu_hours_week": gpu_hours_this_week(session, who, now), "tenant_use": tenant_use(session, who.tenant),
            "cluster": cluster(session), "history": history_dict(history(session, now, hours))}
