"""The resource monitor: what runs where, per node and per tenant, from the jobs' allocations."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from kqi.errors import NotFound
from kqi.jobs import lifecycle as jobs
from kqi.models import Job, JobPart, Node


def _container(job: Job, part: JobPart) -> dict[str, Any]:
    return {"job_id": job.id, "kind": job.kind, "name": job.name, "tenant": job.tenant.name, "user": job.user.username,
            "status": job.status.value, "rank": part.rank, "cpu": job.cpu_milli / 1000,
            "memory_gb": round(job.memory_mib / 1024, 3), "gpu": job.gpu_milli / 1000,
            "gpu_indices": list(part.gpu_indices or []), "started_at": jobs.as_dict(job)["started_at"],
            "halt_requested": job.halt_requested}


def snapshot(session: Session) -> dict[str, Any]:
    active = list(session.scalars(
        select(Job).where(Job.status.in_(jobs.ACTIVE)).order_by(Job.id)
        .options(selectinload(Job.parts), selectinload(Job.tenant), selectinload(Job.user))))
    by_node: dict[int, list[dict]] = {}
    tenants: dict[str, dict[str, Any]] = {}
    for job in active:
        for part in job.parts:
            by_node.setdefault(part.node_id, []).append(_container(job, part))
        held = tenants.setdefault(job.tenant.name, {"tenant": job.tenant.name, "jobs": 0, "containers": 0,
                                                    "cpu": 0.0, "memory_gb": 0.0, "gpu": 0.0})
        held["jobs"] += 1
        held["containers"] += len(job.parts)
        held["cpu"] += job.cpu_milli / 1000 * len(job.parts)
        held["memory_gb"] = round(held["memory_gb"] + job.memory_mib / 1024 * len(job.parts), 3)
        held["gpu"] += job.gpu_milli / 1000 * len(job.parts)
    nodes = []
    for node in session.scalars(select(Node).order_by(Node.name)):
        containers = by_node.get(node.id, [])
        nodes.append({"id": node.id, "name": node.name, "schedulable": node.schedulable,
                      "capacity": {"cpu": node.cpu_milli / 1000, "memory_gb": round(node.memory_mib / 1024, 3),
                                   "gpu": node.gpu_count},
                      "used": {"cpu": sum(c["cpu"] for c in containers),
                               "memory_gb": round(sum(c["memory_gb"] for c in containers), 3),
                               "gpu": sum(c["gpu"] for c in containers)},
                      "containers": containers})
    return {"nodes": nodes, "tenants": sorted(tenants.values(), key=lambda t: t["tenant"])}


def kill(session: Session, job_id: int) -> Job:
    """An administrator stops any tenant's job, through the same halt path as its owner's."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound("job")
    return jobs.halt(session, job)
