"""Between the database and the pure core: read a ClusterState, apply a Plan.

Apply re-checks every placement against current rows and guards each with a compare-and-set on
the job's status and the unique index on whole GPUs, so a stale plan can never double-book.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from kqi.cluster import registry as node_registry
from kqi.jobs import lifecycle as jobs
from kqi.models import GpuAllocation, Job, JobPart, JobStatus, Node, Tenant
from kqi.resources import Resources
from kqi.scheduler import placement as kind_placement
from kqi.scheduler import reasons as reason_codes
from kqi.scheduler.model import (
    WHOLE_GPU,
    AllocatedPart,
    ClusterState,
    GpuView,
    JobRequest,
    NodeView,
    Pending,
    Plan,
    Quota,
    Reason,
    RunningJob,
)
from kqi.scheduler.order import CORES_PER_GPU_EQUIVALENT


def _epoch(moment: datetime | None) -> float:
    return moment.replace(tzinfo=UTC).timestamp() if moment else 0.0


# A queued job's position and reasons as stored; reasons None: the stored words are not those of the
# stored codes (a row from before the codes, or words since changed), so the next apply rewrites both.
Seen = tuple[int | None, tuple[Reason, ...] | None]


@dataclass(frozen=True)
class Snapshot:
    state: ClusterState
    node_ids: dict[str, int]  # NodeView.name -> Node.id
    pending_seen: dict[int, Seen]  # what queued jobs show now (QueueCache.seen)


class QueueCache:
    """The queue as the scheduling process keeps it between ticks.

    A queued job's request never changes while it waits, and only the scheduler writes its position
    and reasons, so a tick reads the ids of the queued jobs and the rows of the new ones: reading
    15,000 rows (and decoding 15,000 lists of reasons) every tick was most of a tick's time. apply()
    keeps `seen` equal to what it wrote; whoever holds a cache clears it when a tick fails (its
    writes were rolled back) or when another process may have written (the lease changed hands)."""

    def __init__(self) -> None:
        self.requests: dict[int, JobRequest] = {}
        self.seen: dict[int, Seen] = {}  # position and reasons in the database

    def clear(self) -> None:
        self.requests.clear()
        self.seen.clear()


# Fair share looks at what each tenant used recently: GPU-seconds, halved every day.
USAGE_HALF_LIFE_S = 24 * 3600.0
USAGE_WINDOW_S = 7 * 24 * 3600.0


def decayed_usage(spans: list[tuple[str, float, float, float]], now: float) -> dict[str, float]:
    """Sum of GPU-equivalents x seconds per tenant, each second weighted by 2^(-age / half-life).

    `spans` holds (tenant, gpu equivalents, start, end) with times in epoch seconds."""
    rate = math.log(2) / USAGE_HALF_LIFE_S
    usage: dict[str, float] = {}
    for tenant, gpus, start, end in spans:
        end = min(end, now)
        if end <= start:
            continue
        # integral of e^(-rate (now - t)) dt over [start, end]
        weight = (math.exp(-rate * (now - end)) - math.exp(-rate * (now - start))) / rate
        usage[tenant] = usage.get(tenant, 0.0) + gpus * weight
    return usage


_QUEUED_IDS = select(Job.id).where(Job.status == JobStatus.QUEUED).order_by(Job.id)
_QUEUED_FROM = (
    select(Job.id, Job.tenant_id, Job.created_at, Job.cpu_milli, Job.memory_mib, Job.gpu_milli, Job.partition,
           Job.priority, Job.time_limit_s, Job.nodes, Job.queue_position, Job.pending_reasons,
           Job.pending_reason_codes, Job.kind)
    .where(Job.status == JobStatus.QUEUED, Job.id >= bindparam("first_id")).order_by(Job.id)
)


def _stored_reasons(codes: list | None, words: list | None) -> tuple[Reason, ...] | None:
    """The stored codes as Reasons, or None when the stored words are not theirs."""
    try:
        reasons = reason_codes.from_json(codes)
        if kind_placement.words(reasons) == tuple(words or ()):
            return reasons
    except (KeyError, AttributeError, TypeError):  # codes no longer known, or not as written
        pass
    return None


def _read_queue(session: Session, queue: QueueCache, tenant_names: dict[int, str]) -> list[int]:
    """Bring `queue` up to date with the database; the ids of the queued jobs, in id order."""
    ids = session.scalars(_QUEUED_IDS).all()
    new = [job_id for job_id in ids if job_id not in queue.requests]
    if new:  # mostly the newest jobs; a requeued job (an old id) makes this one read longer
        # One pass of plain rows, unpacking each as a tuple: ORM objects and a Row's attribute
        # access cost several times more than the rest here.
        for (job_id, tenant_id, created_at, cpu_milli, memory_mib, gpu_milli, partition, priority, time_limit_s, gang,
             queue_position, pending_reasons, pending_reason_codes, kind) in session.execute(
                _QUEUED_FROM, {"first_id": new[0]}):
            if job_id in queue.requests:
                continue
            queue.requests[job_id] = JobRequest(
                job_id=job_id, tenant=tenant_names[tenant_id], submit_time=_epoch(created_at), cpu_milli=cpu_milli,
                memory_mib=memory_mib, gpu_milli=gpu_milli, partition=partition or None, priority=priority,
                time_limit_s=time_limit_s, nodes=gang, needs=kind_placement.needs(kind))
            queue.seen[job_id] = (queue_position, _stored_reasons(pending_reason_codes, pending_reasons))
    for job_id in queue.requests.keys() - set(ids):  # left the queue: started, halted, deleted
        del queue.requests[job_id]
        queue.seen.pop(job_id, None)
    return [job_id for job_id in ids if job_id in queue.requests]


def _usage_spans(session: Session, tenant_names: dict[int, str], now: float):
    since = datetime.fromtimestamp(now - USAGE_WINDOW_S, UTC).replace(tzinfo=None)
    rows = session.execute(
        select(Job.tenant_id, Job.gpu_milli, Job.cpu_milli, Job.nodes, Job.started_at, Job.completed_at)
        .where(Job.started_at.is_not(None), or_(Job.completed_at.is_(None), Job.completed_at >= since))
    )
    for tenant_id, gpu_milli, cpu_milli, nodes, started, completed in rows:
        held = Resources(cpu_milli=cpu_milli, gpu_milli=gpu_milli)
        gpus = held.gpus if gpu_milli else held.cores / CORES_PER_GPU_EQUIVALENT
        yield tenant_names[tenant_id], gpus * nodes, _epoch(started), _epoch(completed) if completed else now


def read(session: Session, now: float, queue: QueueCache | None = None) -> Snapshot:
    """The cluster now; `queue`: what the previous tick kept of the queue (None: read it whole)."""
    queue = QueueCache() if queue is None else queue
    nodes = list(session.scalars(select(Node).order_by(Node.name)))
    gpus = node_registry.gpus_of(session)
    views = tuple(
        NodeView(
            name=node.name,
            cpu_milli=node.cpu_milli,
            memory_mib=node.memory_mib,
            gpus=tuple(GpuView(index=g.gpu_index, model=g.model, busy=g.busy) for g in gpus.get(node.id, ())),
            labels=frozenset(node_registry.labels(node, gpus.get(node.id, []))),
            schedulable=node.schedulable,
            tenants=None if node.tenants is None else frozenset(node.tenants),
            features=kind_placement.node_features(node),
        )
        for node in nodes
    )
    node_names = {node.id: node.name for node in nodes}
    tenants = list(session.scalars(select(Tenant)))
    tenant_names = {tenant.id: tenant.name for tenant in tenants}
    quotas = {tenant.name: Quota(**tenant.quota) for tenant in tenants if any(v is not None for v in tenant.quota.values())}
    gpus_of: dict[tuple[int, int], list[int]] = {}
    for job_id, node_id, index in session.execute(
            select(GpuAllocation.job_id, GpuAllocation.node_id, GpuAllocation.gpu_index).order_by(GpuAllocation.gpu_index)):
        gpus_of.setdefault((job_id, node_id), []).append(index)
    running = tuple(
        RunningJob(
            job_id=job.id,
            tenant=tenant_names[job.tenant_id],
            parts=tuple(AllocatedPart(node=node_names[part.node_id], cpu_milli=job.cpu_milli, memory_mib=job.memory_mib,
                                      gpu_indices=tuple(gpus_of.get((job.id, part.node_id), ())), gpu_milli=job.gpu_milli)
                        for part in job.parts if part.node_id in node_names),
            started_at=_epoch(job.started_at or job.created_at),
            time_limit_s=job.time_limit_s,
            priority=job.priority,
        )
        for job in session.scalars(select(Job).where(Job.status.in_(jobs.ACTIVE)).options(selectinload(Job.parts)))
    )
    queue_ids = _read_queue(session, queue, tenant_names)
    usage = decayed_usage(list(_usage_spans(session, tenant_names, now)), now)
    state = ClusterState(now=now, nodes=views, running=running, queue=tuple(queue.requests[i] for i in queue_ids),
                         quotas=quotas, usage=usage)
    return Snapshot(state=state, node_ids={node.name: node.id for node in nodes}, pending_seen=queue.seen)


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


def _apply_one(session: Session, snapshot: Snapshot, placement) -> bool:
    """Write one placement if it still holds against current rows (all its parts or none)."""
    node_ids = [snapshot.node_ids[part.node] for part in placement.parts]
    for node_id, part in zip(node_ids, placement.parts):
        node = session.get(Node, node_id)
        if node is None or not node.schedulable or not _gpus_fit(session, node_id, part):
            return False
    if not jobs.transition(session, placement.job_id, JobStatus.QUEUED, JobStatus.STARTING, queue_position=None,
                           pending_reasons=[], pending_reason_codes=[]):
        return False
    for rank, (node_id, part) in enumerate(zip(node_ids, placement.parts)):
        session.add(JobPart(job_id=placement.job_id, rank=rank, node_id=node_id, gpu_indices=list(part.gpu_indices)))
        per_index = part.gpu_milli // len(part.gpu_indices) if part.gpu_indices else 0
        session.add_all(GpuAllocation(job_id=placement.job_id, node_id=node_id, gpu_index=index, milli=per_index)
                        for index in part.gpu_indices)
    session.flush()
    return True


def apply(session: Session, snapshot: Snapshot, plan: Plan, moves_at_once: int | None = None) -> list[int]:
    """Write the plan; return the ids of jobs now Starting. The caller commits.

    A job that only moved in the queue (one ahead of it started, or a more urgent one came) keeps
    its stored position when there are more than `moves_at_once` such moves (None: no limit): every
    job behind a start moves, and writing each move would rewrite a long queue every tick. The
    caller writes them all now and then; a new job's first position and new reasons go at once.
    What it writes goes into `snapshot.pending_seen` (the QueueCache's) too."""
    started = []
    for placement in plan.placements:
        savepoint = session.begin_nested()
        try:
            written = _apply_one(session, snapshot, placement)
        except IntegrityError:  # the unique index caught a whole GPU already held
            written = False
        if written:
            savepoint.commit()
            started.append(placement.job_id)
        else:
            savepoint.rollback()
    changed: list[Pending] = []
    moves: list[Pending] = []
    for pending in plan.pending:
        seen = snapshot.pending_seen.get(pending.job_id)
        if seen == (pending.position, pending.reasons):
            continue
        (moves if seen is not None and seen[0] is not None and seen[1] == pending.reasons else changed).append(pending)
    if moves_at_once is None or len(moves) <= moves_at_once:
        changed += moves
    if changed:  # one executemany: a job starting shifts the position of every job behind it
        stored: dict[tuple[Reason, ...], dict[str, list]] = {}  # most waiting jobs share their reasons
        for reasons in {p.reasons for p in changed}:
            stored[reasons] = {"reasons": list(kind_placement.words(reasons)), "codes": reason_codes.to_json(reasons)}
        table = Job.__table__
        session.execute(
            table.update().where(table.c.id == bindparam("pending_id"), table.c.status == JobStatus.QUEUED)
            .values(queue_position=bindparam("position"), pending_reasons=bindparam("reasons"),
                    pending_reason_codes=bindparam("codes")),
            [{"pending_id": p.job_id, "position": p.position, **stored[p.reasons]} for p in changed],
        )
        snapshot.pending_seen.update((p.job_id, (p.position, p.reasons)) for p in changed)
    return started
