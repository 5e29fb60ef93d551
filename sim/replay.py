"""Replay a trace through `plan()` in simulated time and compare policies.

    python -m sim [--trace FILE] --nodes 4 --gpus-per-node 8 --cpu-per-node 96 \
        --memory-gb-per-node 512 --policy all [--limit-factor 2] [--json] [--png FILE]
    python -m sim --generate multi-gpu --seed 7 --jobs 1500 ...

Without --trace or --generate it replays sim/traces/openb_first2000.csv (schema: sim/traces/README.md).

Discrete events: the clock jumps from one submission or job end to the next, and plan() runs
once per distinct event time with everything that happened at that time applied first. A job
runs for its traced duration, cut at its time limit (duration x --limit-factor, as a user's
estimate that is too long). The trace has no user column, so each job goes to one of
TENANTS tenants by a CRC-32 of its job_id (stable across runs and machines); their decayed usage
(GPU-seconds, half-life USAGE_HALF_LIFE_S) feeds fair share as the server's would. Jobs that no
node can ever hold are reported as `unplaceable` and left out of the statistics.
"""
from __future__ import annotations

import argparse
import csv
import heapq
import json
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kqi.scheduler.model import (
    WHOLE_GPU,
    ClusterState,
    GpuView,
    JobRequest,
    NodeView,
    RunningJob,
)
from kqi.scheduler.plan import POLICIES, plan
from sim.workload import generate

TRACES = Path(__file__).resolve().parent / "traces"
DEFAULT_TRACE = TRACES / "openb_first2000.csv"
TENANTS = 3
USAGE_HALF_LIFE_S = 86400.0
GENERATORS = {"multi-gpu": generate}


@dataclass(frozen=True)
class TraceJob:
    request: JobRequest
    duration_s: float


@dataclass
class Result:
    policy: str
    jobs: int
    completed: int = 0
    unplaceable: int = 0
    avg_jct_s: float = 0.0
    p50_jct_s: float = 0.0
    p99_jct_s: float = 0.0
    avg_wait_s: float = 0.0
    p99_wait_s: float = 0.0
    max_wait_s: float = 0.0
    makespan_s: float = 0.0
    gpu_utilization: float = 0.0
    plan_calls: int = 0
    decisions: int = 0
    decisions_per_s: float = 0.0
    timeline: list[tuple[float, int, float]] = field(default_factory=list, repr=False)  # t, queued, gpu use


def tenant_of(name: str) -> str:
    return f"tenant-{zlib.crc32(name.encode()) % TENANTS}"


def read_rows(rows, limit_factor: float) -> list[TraceJob]:
    """Trace rows -> jobs; rows without a duration never ran and are skipped."""
    jobs = []
    for number, row in enumerate(rows):
        if not row["duration_s"]:
            continue
        gpus = int(row["num_gpu"])
        gpu_milli = int(row["gpu_milli"]) if gpus == 1 else gpus * WHOLE_GPU
        duration = float(row["duration_s"])
        jobs.append(TraceJob(JobRequest(
            job_id=number, tenant=tenant_of(row["job_id"]), submit_time=float(row["submit_time_s"]),
            cpu_milli=int(row["cpu_milli"]), memory_mib=int(row["memory_mib"]), gpu_milli=gpu_milli,
            time_limit_s=duration * limit_factor), duration))
    return jobs


def make_nodes(count: int, gpus: int, cores: int, memory_gb: int) -> tuple[NodeView, ...]:
    return tuple(NodeView(f"node-{i:03d}", cores * 1000, memory_gb * 1024, tuple(GpuView(g) for g in range(gpus)))
                 for i in range(count))


def simulate(jobs: list[TraceJob], nodes: tuple[NodeView, ...], policy: str) -> Result:
    submissions = sorted(jobs, key=lambda j: (j.request.submit_time, j.request.job_id))
    by_id = {j.request.job_id: j for j in jobs}
    result = Result(policy, len(jobs))
    queue: dict[int, JobRequest] = {}
    running: dict[int, RunningJob] = {}
    ends: list[tuple[float, int]] = []
    started: dict[int, float] = {}
    finished: dict[int, float] = {}
    usage: dict[str, float] = {}
    gpu_rate: dict[str, float] = {}  # tenant -> GPUs held now
    total_gpus = sum(len(n.gpus) for n in nodes) or 1
    gpu_seconds = 0.0
    plan_wall = 0.0
    next_sub = 0
    now = submissions[0].request.submit_time if submissions else 0.0
    first = now
    while next_sub < len(submissions) or ends:
        t = min(submissions[next_sub].request.submit_time if next_sub < len(submissions) else math.inf,
                ends[0][0] if ends else math.inf)
        gpu_seconds += sum(gpu_rate.values()) * (t - now)
        _decay(usage, gpu_rate, t - now)
        now = t
        while ends and ends[0][0] == now:
            _, job_id = heapq.heappop(ends)
            job = running.pop(job_id)
            finished[job_id] = now
            gpu_rate[job.tenant] -= sum(p.gpu_milli for p in job.parts) / WHOLE_GPU
        while next_sub < len(submissions) and submissions[next_sub].request.submit_time == now:
            queue[submissions[next_sub].request.job_id] = submissions[next_sub].request
            next_sub += 1
        state = ClusterState(now, nodes, tuple(running.values()), tuple(queue.values()), usage=dict(usage))
        clock = time.perf_counter()
        decided = plan(state, policy)
        plan_wall += time.perf_counter() - clock
        result.plan_calls += 1
        result.decisions += len(queue)
        for placement in decided.placements:
            request = queue.pop(placement.job_id)
            running[request.job_id] = RunningJob(request.job_id, request.tenant, placement.parts, now,
                                                 request.time_limit_s)
            started[request.job_id] = now
            run_for = min(by_id[request.job_id].duration_s, request.time_limit_s)
            heapq.heappush(ends, (now + run_for, request.job_id))
            gpu_rate[request.tenant] = gpu_rate.get(request.tenant, 0.0) + request.gpu_milli * request.nodes / WHOLE_GPU
        result.timeline.append((now, len(queue), sum(gpu_rate.values()) / total_gpus))
    result.unplaceable = len(queue)  # nothing runs and nothing arrives, yet these still wait
    _summarise(result, jobs, started, finished, first, gpu_seconds / total_gpus, plan_wall)
    return result


def _decay(usage: dict[str, float], gpu_rate: dict[str, float], dt: float) -> None:
    """Exponentially decayed GPU-seconds: u' = -k u + gpus, integrated exactly over dt."""
    k = math.log(2) / USAGE_HALF_LIFE_S
    keep = math.exp(-k * dt)
    for tenant in set(usage) | set(gpu_rate):
        usage[tenant] = usage.get(tenant, 0.0) * keep + gpu_rate.get(tenant, 0.0) * (1 - keep) / k


def _summarise(result: Result, jobs, started, finished, first: float, busy_gpu_s: float, plan_wall: float) -> None:
    done = [j.request for j in jobs if j.request.job_id in finished]
    result.completed = len(done)
    if done:
        jct = np.array([finished[j.job_id] - j.submit_time for j in done])
        wait = np.array([started[j.job_id] - j.submit_time for j in done])
        result.avg_jct_s = float(jct.mean())
        result.p50_jct_s = float(np.percentile(jct, 50))
        result.p99_jct_s = float(np.percentile(jct, 99))
        result.avg_wait_s = float(wait.mean())
        result.p99_wait_s = float(np.percentile(wait, 99))
        result.max_wait_s = float(wait.max())
        result.makespan_s = max(finished.values()) - first
        result.gpu_utilization = busy_gpu_s / result.makespan_s if result.makespan_s else 0.0
    result.decisions_per_s = result.decisions / plan_wall if plan_wall else 0.0


SUMMARY = ("policy", "jobs", "completed", "unplaceable", "avg_jct_s", "p50_jct_s", "p99_jct_s", "avg_wait_s",
           "p99_wait_s", "max_wait_s", "makespan_s", "gpu_utilization", "plan_calls", "decisions_per_s")


def summary(result: Result) -> dict:
    return {name: getattr(result, name) for name in SUMMARY}


def print_table(results: list[Result]) -> None:
    print(" ".join(f"{name:>15}" for name in SUMMARY))
    for r in results:
        cells = [f"{v:15.3f}" if isinstance(v, float) else f"{v!s:>15}" for v in summary(r).values()]
        print(" ".join(cells))


def draw(results: list[Result], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (queue_ax, gpu_ax) = plt.subplots(2, 1, sharex=True, figsize=(11, 7))
    for r in results:
        t = [(point[0] - r.timeline[0][0]) / 86400 for point in r.timeline]
        queue_ax.step(t, [point[1] for point in r.timeline], where="post", label=r.policy, linewidth=0.8)
        gpu_ax.step(t, [point[2] for point in r.timeline], where="post", label=r.policy, linewidth=0.8)
    queue_ax.set_ylabel("queued jobs")
    gpu_ax.set_ylabel("GPU utilisation")
    gpu_ax.set_xlabel("simulated time (days)")
    queue_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(prog="python -m sim", description="Replay a job trace through kqi's planner.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--trace", help="CSV in the schema of sim/traces/README.md (default: "
                        "sim/traces/openb_first2000.csv)")
    source.add_argument("--generate", choices=sorted(GENERATORS), help="use a generated workload instead")
    parser.add_argument("--seed", type=int, default=7, help="generator seed")
    parser.add_argument("--jobs", type=int, default=1500, help="generator job count")
    parser.add_argument("--load", type=float, default=0.9, help="generator offered load on 32 GPUs")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--cpu-per-node", type=int, default=96, help="cores")
    parser.add_argument("--memory-gb-per-node", type=int, default=512, help="GiB")
    parser.add_argument("--policy", default="all", choices=[*POLICIES, "all"])
    parser.add_argument("--limit-factor", type=float, default=2.0, help="time limit = duration x this")
    parser.add_argument("--json", action="store_true", help="one JSON object per policy per line")
    parser.add_argument("--png", help="draw queue length and GPU utilisation over time here")
    args = parser.parse_args(argv)
    if not args.generate:
        with open(args.trace or DEFAULT_TRACE, newline="") as f:
            jobs = read_rows(csv.DictReader(f), args.limit_factor)
    else:
        jobs = read_rows(GENERATORS[args.generate](args.seed, args.jobs, args.load), args.limit_factor)
    nodes = make_nodes(args.nodes, args.gpus_per_node, args.cpu_per_node, args.memory_gb_per_node)
    policies = list(POLICIES) if args.policy == "all" else [args.policy]
    results = [simulate(jobs, nodes, policy) for policy in policies]
    if args.json:
        for r in results:
            print(json.dumps(summary(r)))
    else:
        print_table(results)
    if args.png:
        draw(results, args.png)
    return results


if __name__ == "__main__":
    main()
