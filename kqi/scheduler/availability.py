"""What a tenant can use right now, and whether a job it is about to submit would start at once.

The estimate asks the scheduler itself: it reads the same snapshot the loop reads, adds the
hypothetical job to the queue as the newest job, and runs the same pure plan(). Nothing about
placement is decided here, so the answer is what the next tick would do with the cluster as it is.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

from sqlalchemy.orm import Session

from kqi import validation as v
from kqi.accounts.auth import Principal
from kqi.jobs import lifecycle as jobs
from kqi.resources import ZERO, Resources, gb, limits_as_api
from kqi.scheduler import placement, snapshot
from kqi.scheduler import reasons as reason_codes
from kqi.scheduler.fit import NodeFree
from kqi.scheduler.model import ClusterState, JobRequest
from kqi.scheduler.plan import plan

# No stored job has id 0: the hypothetical job's placement or pending entry is found by it.
ESTIMATE_ID = 0
# parse_submission requires these; an estimate is about resources, so stand-ins fill what the
# caller left out (anything the caller did send is still validated as for a submit).
STAND_INS = {"name": "estimate", "image": "estimate", "command": "true", "cpu": 1, "memory_gb": 1}
GB_DIGITS_SHOWN = 2  # the panel shows memory to two decimals


def _open_to(view, tenant: str) -> bool:
    return view.tenants is None or tenant in view.tenants


def overview(state: ClusterState, tenant: str) -> dict[str, Any]:
    """Partitions and free capacity of the nodes `tenant` may use, and its quota and use."""
    free = {view.name: NodeFree.of(view) for view in state.nodes if _open_to(view, tenant)}
    used = ZERO
    for job in state.running:
        for part in job.parts:
            if part.node in free:
                free[part.node].take(part)
            if job.tenant == tenant:
                used += Resources.of(part)
    nodes = []
    for view in state.nodes:
        if view.name not in free:
            continue
        node = free[view.name]
        left, total = Resources(node.cpu_milli, node.memory_mib), Resources(view.cpu_milli, view.memory_mib)
        nodes.append({
            "node": view.name, "schedulable": view.schedulable, "partitions": sorted(view.labels),
            "cpu_free": left.cores, "cpu_total": total.cores,
            "memory_free_gb": gb(left.memory_mib, GB_DIGITS_SHOWN), "memory_total_gb": gb(total.memory_mib, GB_DIGITS_SHOWN),
            "gpus_free": node.whole_free, "gpus_total": len(view.gpus),
            "gpu_share_free": Resources(gpu_milli=node.max_gpu_free).gpus,
        })
    quota = state.quotas.get(tenant)
    return {
        "partitions": sorted({label for view in state.nodes if view.name in free for label in view.labels}),
        "free": nodes,
        "quota": {**limits_as_api(dataclasses.asdict(quota) if quota else {}, GB_DIGITS_SHOWN),
                  "used": used.as_api(GB_DIGITS_SHOWN)},
    }


def request_for(principal: Principal, body: Any, now: float) -> JobRequest:
    """The job a submission body would queue, as the scheduler sees it (validated as a submit)."""
    fields = jobs.parse_submission({**STAND_INS, **v.require_object(body)})
    return JobRequest(job_id=ESTIMATE_ID, tenant=principal.tenant.name, submit_time=now,
                      cpu_milli=fields["cpu_milli"], memory_mib=fields["memory_mib"], gpu_milli=fields["gpu_milli"],
                      partition=fields["partition"] or None, priority=fields["priority"],
                      time_limit_s=fields["time_limit_s"], nodes=fields["nodes"])


def estimate_in(state: ClusterState, request: JobRequest) -> dict[str, Any]:
    """Run the plan with `request` queued last: where it would start now, or why it would wait."""
    result = plan(dataclasses.replace(state, queue=state.queue + (request,)))
    placed = next((p for p in result.placements if p.job_id == request.job_id), None)
    if placed is not None:
        return {"starts_now": True, "node": placed.parts[0].node, "nodes": [p.node for p in placed.parts],
                "gpu_indices": list(placed.parts[0].gpu_indices), "queue_position": None, "reasons": [],
                "reason_codes": []}
    pending = next(p for p in result.pending if p.job_id == request.job_id)
    return {"starts_now": False, "node": None, "nodes": [], "gpu_indices": [], "queue_position": pending.position,
            "reasons": list(placement.words(pending.reasons)), "reason_codes": reason_codes.to_json(pending.reasons)}


def read_state(session: Session, now: float | None = None) -> ClusterState:
    return snapshot.read(session, now=time.time() if now is None else now).state


def estimate(session: Session, principal: Principal, body: Any, now: float | None = None) -> dict[str, Any]:
    """The availability of the caller's tenant and the estimate for the job `body` describes."""
    now = time.time() if now is None else now
    request = request_for(principal, body, now)  # a bad body is refused before the snapshot is read
    state = read_state(session, now)
    return {**estimate_in(state, request), **overview(state, principal.tenant.name)}
