"""The resource monitor: what runs where, per node and per tenant, from the jobs' allocations."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from kqi.errors import Conflict, NotFound
from kqi.jobs import lifecycle as jobs
from kqi.models import Job, JobPart, JobStatus, Node
from kqi.resources import ZERO, Resources

FORCE_ENDED = "force-ended by an administrator"


def _container(job: Job, part: JobPart) -> dict[str, Any]:
    return {"job_id": job.id, "kind": job.kind, "name": job.name, "tenant": job.tenant.name, "user": job.user.username,
            "status": job.status.value, "rank": part.rank, **job.resources.as_api(),
            "gpu_indices": list(part.gpu_indices or []), "started_at": jobs.as_dict(job)["started_at"],
            "halt_requested": job.halt_requested}


def snapshot(session: Session) -> dict[str, Any]:
    active = list(session.scalars(
        select(Job).where(Job.status.in_(jobs.ACTIVE)).order_by(Job.id)
        .options(selectinload(Job.parts), selectinload(Job.tenant), selectinload(Job.user))))
    by_node: dict[int, list[dict]] = {}
    node_used: dict[int, Resources] = {}
    tenants: dict[str, dict[str, Any]] = {}
    tenant_held: dict[str, Resources] = {}
    for job in active:
        for part in job.parts:
            by_node.setdefault(part.node_id, []).append(_container(job, part))
            node_used[part.node_id] = node_used.get(part.node_id, ZERO) + job.resources
        held = tenants.setdefault(job.tenant.name, {"tenant": job.tenant.name, "jobs": 0, "containers": 0})
        held["jobs"] += 1
        held["containers"] += len(job.parts)
        tenant_held[job.tenant.name] = tenant_held.get(job.tenant.name, ZERO) + job.resources * len(job.parts)
    nodes = []
    for node in session.scalars(select(Node).order_by(Node.name)):
        nodes.append({"id": node.id, "name": node.name, "schedulable": node.schedulable,
                      "capacity": {**node.capacity.as_api(), "gpu": node.gpu_count},
                      "used": node_used.get(node.id, ZERO).as_api(),
                      "containers": by_node.get(node.id, [])})
    return {"nodes": nodes, "tenants": [{**tenants[name], **tenant_held[name].as_api()} for name in sorted(tenants)]}


def _job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound("job")
    return job


def kill(session: Session, job_id: int) -> Job:
    """An administrator stops any tenant's job, through the same halt path as its owner's."""
    return jobs.halt(session, _job(session, job_id))


def force_end(session: Session, job_id: int) -> Job:
    """An administrator ends any tenant's job at once, whatever its containers or its node do:
    Killed, its GPUs and other resources released in the same transaction. Nothing of it is
    collected; its containers, now those of an ended job, are removed by the loop's watch when
    their node answers, and a start or an end in flight for it finds it ended and changes nothing."""
    job = _job(session, job_id)
    while not job.status.finished:  # a status that moved meanwhile only moves on: compare-and-set again
        if jobs.transition(session, job.id, job.status, JobStatus.KILLED, reason=FORCE_ENDED):
            session.refresh(job)
            return job
        session.refresh(job)
    raise Conflict(f"job {job.id} has already ended ({job.status.value})")
