"""Between the database and the pure core: read a ClusterState, apply a Plan.

Apply re-checks every placement against current rows and guards each with a compare-and-set on
the job's status and the unique index on whole GPUs, so a stale plan can never double-book.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kqi import jobs
from kqi.models import GpuAllocation, Job, JobStatus, Node, Tenant
from kqi.scheduler.model import (
    WHOLE_GPU,
    AllocatedPart,
    ClusterState,
    GpuView,
    JobRequest,
    NodeView,
    Plan,
    RunningJob,
)


def _epoch(moment: datetime | None) -> float:
    return moment.replace(tzinfo=timezone.utc).timestamp() if moment else 0.0


@dataclass(frozen=True)
class Snapshot:
    state: ClusterState
    node_ids: dict[str, int]  # NodeView.name -> Node.id
    pending_seen: dict[int, tuple[int | None, tuple[str, ...]]]  # what queued jobs show now


def read(session: Session, now: float) -> Snapshot:
    nodes = list(session.scalars(select(Node).order_by(Node.name)))
    views = tuple(
        NodeView(
            name=node.name,
            cpu_milli=node.cpu_milli,
            memory_mib=node.memory_mib,
            gpus=tuple(GpuView(index=i) for i in range(node.gpu_count)),
            labels=frozenset({node.partition} if node.partition else ()),
            schedulable=node.schedulable,
        )
        for node in nodes
    )
    node_names = {node.id: node.name for node in nodes}
    tenant_names = dict(session.execute(select(Tenant.id, Tenant.name)).all())
    gpus_of: dict[int, list[int]] = {}
    for job_id, index in session.execute(select(GpuAllocation.job_id, GpuAllocation.gpu_index).order_by(GpuAllocation.gpu_index)):
        gpus_of.setdefault(job_id, []).append(index)
    running = tuple(
        RunningJob(
            job_id=job.id,
            tenant=tenant_names[job.tenant_id],
            parts=(AllocatedPart(node=node_names[job.node_id], cpu_milli=job.cpu_milli, memory_mib=job.memory_mib,
                                 gpu_indices=tuple(gpus_of.get(job.id, ())), gpu_milli=job.gpu_milli),),
            started_at=_epoch(job.started_at or job.created_at),
            time_limit_s=job.time_limit_s,
            priority=job.priority,
        )
        for job in session.scalars(select(Job).where(Job.status.in_([JobStatus.STARTING, JobStatus.RUNNING])))
        if job.node_id in node_names
    )
    queued = list(session.scalars(select(Job).where(Job.status == JobStatus.QUEUED).order_by(Job.id)))
    queue = tuple(
        JobRequest(
            job_id=job.id,
            tenant=tenant_names[job.tenant_id],
            submit_time=_epoch(job.created_at),
            cpu_milli=job.cpu_milli,
            memory_mib=job.memory_mib,
            gpu_milli=job.gpu_milli,
            partition=job.partition or None,
            priority=job.priority,
            time_limit_s=job.time_limit_s,
        )
        for job in queued
    )
    state = ClusterState(now=now, nodes=views, running=running, queue=queue)
    pending_seen = {job.id: (job.queue_position, tuple(job.pending_reasons or ())) for job in queued}
    return Snapshot(state=state, node_ids={node.name: node.id for node in nodes}, pending_seen=pending_seen)


def _gpus_fit(session: Session, node_id: int, part: AllocatedPart) -> bool:
    """The placement's GPUs are still free enough on the current rows (shares add up to <= 1)."""
    if not part.gpu_indices:
        return True
    per_index = part.gpu_milli // len(part.gpu_indices)
    held = dict(
        session.execute(
            select(GpuAllocation.gpu_index, func.sum(GpuAllocation.milli))
            .where(GpuAllocation.node_id == node_id, GpuAllocation.gpu_index.in_(part.gpu_indices))
            .group_by(GpuAllocation.gpu_index)
        ).all()
    )
    return all(held.get(index, 0) + per_index <= WHOLE_GPU for index in part.gpu_indices)


def apply(session: Session, snapshot: Snapshot, plan: Plan) -> list[int]:
    """Write the plan; return the ids of jobs now Starting. The caller commits."""
    started = []
    for placement in plan.placements:
        part = placement.parts[0]  # single-node jobs; gang jobs arrive with multi-node submit
        node_id = snapshot.node_ids[part.node]
        node = session.get(Node, node_id)
        if node is None or not node.schedulable:
            continue
        savepoint = session.begin_nested()
        try:
            if not _gpus_fit(session, node_id, part):
                savepoint.rollback()
                continue
            if not jobs.transition(session, placement.job_id, JobStatus.QUEUED, JobStatus.STARTING, node_id=node_id,
                                   gpu_indices=list(part.gpu_indices), queue_position=None, pending_reasons=[]):
                savepoint.rollback()
                continue
            per_index = part.gpu_milli // len(part.gpu_indices) if part.gpu_indices else 0
            session.add_all(GpuAllocation(job_id=placement.job_id, node_id=node_id, gpu_index=index, milli=per_index)
                            for index in part.gpu_indices)
            session.flush()
            savepoint.commit()
            started.append(placement.job_id)
        except IntegrityError:
            savepoint.rollback()
    for pending in plan.pending:
        shown = (pending.position, tuple(pending.reasons))
        if snapshot.pending_seen.get(pending.job_id) != shown:
            session.execute(
                Job.__table__.update().where(Job.id == pending.job_id, Job.status == JobStatus.QUEUED)
                .values(queue_position=pending.position, pending_reasons=list(pending.reasons))
            )
    return started
