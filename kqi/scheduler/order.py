"""Queue order: strict submit order for the baselines, priority + aging + fair share for kqi.

Fair share is dynamic within a pass: each job the pass places is charged to its tenant, so a
tenant that just got GPUs yields the next turn to a tenant that used less.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Mapping

from kqi.scheduler.model import WHOLE_GPU, JobRequest

# Aging: effective priority = priority + whole hours waited. Any job therefore overtakes a job
# one priority level above it after waiting one hour longer, so nothing starves. Integer steps
# keep ties (and hence the fair-share and submit-time tie breaks) meaningful.
AGING_STEP_S = 3600.0

# Usage is measured in GPU-seconds. CPU-only jobs are charged as if every 16 cores were a GPU
# (a typical 8-GPU node has 128 cores), and a job without a time limit as if it ran an hour.
CORES_PER_GPU_EQUIVALENT = 16
DEFAULT_CHARGE_S = 3600.0


def submit_key(job: JobRequest) -> tuple[float, int]:
    return (job.submit_time, job.job_id)


def effective_priority(job: JobRequest, now: float) -> int:
    return job.priority + int(max(0.0, now - job.submit_time) // AGING_STEP_S)


def response_ratio(job: JobRequest, now: float) -> float:
    """(wait + time limit) / time limit: short jobs rise fast, long ones still rise as they wait.
    A job without a limit gets 1, the lowest: it can never end before a reservation anyway."""
    if job.time_limit_s is None:
        return 1.0
    return (max(0.0, now - job.submit_time) + job.time_limit_s) / max(job.time_limit_s, 1.0)


def backlog_seconds(queue, nodes) -> float:
    """How long the queue would keep the whole cluster busy if every job ran to its time limit:
    for cpu, memory and GPUs, the sum of (per-part request x parts x time limit) over the queued
    jobs with a limit, divided by the cluster's capacity; the largest of the three (the
    bottleneck resource). O(queue + nodes)."""
    capacity = [0, 0, 0]
    for node in nodes:
        capacity[0] += node.cpu_milli
        capacity[1] += node.memory_mib
        capacity[2] += WHOLE_GPU * sum(1 for g in node.gpus if not g.busy)
    work = [0.0, 0.0, 0.0]
    for job in queue:
        if job.time_limit_s is not None:
            seconds = job.time_limit_s * job.nodes
            work[0] += job.cpu_milli * seconds
            work[1] += job.memory_mib * seconds
            work[2] += job.gpu_milli * seconds
    return max((w / c for w, c in zip(work, capacity) if c), default=0.0)


def long_first(job: JobRequest, now: float, backlog: float, length_factor: float, wait_factor: float) -> bool:
    """A job that sets the makespan: its limit is at least `length_factor` x the backlog (it would
    still run long after the rest of the queue is done, so every second it waits is a second
    added to the last end), and it has waited at least `wait_factor` x the backlog (so the short
    jobs of a burst are not all pushed back by a long job that just arrived)."""
    return (job.time_limit_s is not None and job.time_limit_s >= length_factor * backlog
            and now - job.submit_time >= wait_factor * backlog)


def backfill_key(job: JobRequest, now: float, backlog: float = math.inf, length_factor: float = math.inf,
                 wait_factor: float = 0.0) -> tuple[int, int, float, float]:
    """Order of the jobs behind the reservations in kqi: explicit priority; then jobs that set
    the makespan (long_first), longest first; then highest response ratio."""
    first = long_first(job, now, backlog, length_factor, wait_factor)
    return (-job.priority, 0 if first else 1, -job.time_limit_s if first else 0.0, -response_ratio(job, now))


def charge(job: JobRequest) -> float:
    """The usage (GPU-seconds) one job adds to its tenant once placed."""
    if job.gpu_milli:
        gpus = job.gpu_milli / WHOLE_GPU
    else:
        gpus = job.cpu_milli / 1000 / CORES_PER_GPU_EQUIVALENT
    seconds = job.time_limit_s if job.time_limit_s is not None else DEFAULT_CHARGE_S
    return gpus * job.nodes * seconds


class StrictOrder:
    """Submit time, then job id; placements do not change it."""

    def __init__(self, queue: tuple[JobRequest, ...]):
        self._jobs = sorted(queue, key=submit_key)

    def __iter__(self) -> Iterator[JobRequest]:
        return iter(self._jobs)

    def placed(self, job: JobRequest) -> None:
        pass


class PriorityOrder:
    """Highest effective priority (priority + aging), then submit time, then job id: kqi's order
    without fair share. With equal priorities it is submit order, as EASY's."""

    def __init__(self, queue: tuple[JobRequest, ...], now: float):
        self._jobs = sorted(queue, key=lambda j: (-effective_priority(j, now), j.submit_time, j.job_id))

    def __iter__(self) -> Iterator[JobRequest]:
        return iter(self._jobs)

    def placed(self, job: JobRequest) -> None:
        pass


class FairShareOrder:
    """Highest effective priority, then least-used tenant, then submit time, then job id.

    One heap entry per tenant (its best job); only the tenant just served is re-keyed, so a pass
    over q jobs of t tenants costs O(q log q) for sorting plus O(q log t).
    """

    def __init__(self, queue: tuple[JobRequest, ...], usage: Mapping[str, float], now: float):
        self._now = now
        self._usage = dict(usage)
        per_tenant: dict[str, list[JobRequest]] = {}
        for job in sorted(queue, key=lambda j: (-effective_priority(j, now), j.submit_time, j.job_id)):
            per_tenant.setdefault(job.tenant, []).append(job)
        self._lists = {tenant: iter(jobs) for tenant, jobs in per_tenant.items()}
        self._heap: list[tuple[int, float, float, int, str, JobRequest]] = []
        for tenant in sorted(self._lists):
            self._push(tenant)

    def _push(self, tenant: str) -> None:
        job = next(self._lists[tenant], None)
        if job is not None:
            heapq.heappush(self._heap, (-effective_priority(job, self._now), self._usage.get(tenant, 0.0),
                                        job.submit_time, job.job_id, tenant, job))

    def __iter__(self) -> Iterator[JobRequest]:
        while self._heap:
            tenant, job = heapq.heappop(self._heap)[4:]
            yield job  # the caller calls placed() before asking for the next job
            self._push(tenant)

    def placed(self, job: JobRequest) -> None:
        self._usage[job.tenant] = self._usage.get(job.tenant, 0.0) + charge(job)
