"""Queue order: strict submit order for the baselines, priority + aging + fair share for kqi.

Fair share is dynamic within a pass: each job the pass places is charged to its tenant, so a
tenant that just got GPUs yields the next turn to a tenant that used less.
"""
from __future__ import annotations

import heapq
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


def backfill_key(job: JobRequest, now: float) -> tuple[int, float]:
    """Order of the jobs behind a reservation in kqi: explicit priority, then response ratio."""
    return (-job.priority, -response_ratio(job, now))


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
