"""Short constructors for the planner's frozen inputs, so test tables stay readable."""
from __future__ import annotations

from kqi.scheduler.model import (
    AllocatedPart,
    ClusterState,
    GpuView,
    JobRequest,
    NodeView,
    RunningJob,
)

GIB = 1024


def node(name: str, cpu: int = 32, memory_gib: int = 256, gpus: int = 8, *, groups: int = 1,
         busy: tuple[int, ...] = (), labels: tuple[str, ...] = (), schedulable: bool = True,
         tenants: tuple[str, ...] | None = None, features: tuple[str, ...] = ()) -> NodeView:
    """A node with `cpu` cores and `gpus` GPUs split evenly into `groups` topology groups."""
    per_group = max(1, gpus // groups)
    return NodeView(name, cpu * 1000, memory_gib * GIB,
                    tuple(GpuView(i, group=i // per_group, busy=i in busy) for i in range(gpus)),
                    frozenset(labels), schedulable, None if tenants is None else frozenset(tenants), frozenset(features))


def job(job_id: int, *, gpu: int = 0, cpu: int = 1, memory_gib: int = 1, tenant: str = "t",
        submit: float | None = None, priority: int = 0, limit: float | None = None, nodes: int = 1,
        partition: str | None = None, needs: tuple[str, ...] = ()) -> JobRequest:
    """A queued job; submit time defaults to its id so ids give the submit order."""
    return JobRequest(job_id, tenant, float(job_id) if submit is None else submit, cpu * 1000, memory_gib * GIB,
                      gpu, partition, priority, limit, nodes, frozenset(needs))


def running(job_id: int, *parts: AllocatedPart, tenant: str = "t", started: float = 0.0,
            limit: float | None = None) -> RunningJob:
    return RunningJob(job_id, tenant, tuple(parts), started, limit)


def part(node_name: str, gpus: tuple[int, ...] = (), gpu: int | None = None, cpu: int = 1,
         memory_gib: int = 1) -> AllocatedPart:
    """A running part; gpu defaults to whole GPUs on `gpus`."""
    return AllocatedPart(node_name, cpu * 1000, memory_gib * GIB, gpus, 1000 * len(gpus) if gpu is None else gpu)


def state(nodes, queue=(), running_jobs=(), now: float = 1000.0, **kw) -> ClusterState:
    return ClusterState(now, tuple(nodes), tuple(running_jobs), tuple(queue), **kw)
