"""Time one planning pass: queues of 100, 1,000 and 10,000 jobs over 10, 50 and 200 nodes.

    python -m bench.plan_speed [--policy kqi] [--repeat 3]

Each cluster has 8-GPU nodes (96 cores, 512 GiB) already running a seeded mix of jobs until about
half the GPUs are used, so a pass both places jobs and explains why the rest wait; the queue is a
seeded mix of GPU shares, 1/2/4/8-GPU jobs, CPU-only jobs and 2-node gangs from 5 tenants, with
and without time limits. `decisions/s` is queued jobs considered per second of the pass; `growth`
is the time over the time for a queue 10x shorter on the same nodes (linear scaling gives 10).
"""
from __future__ import annotations

import argparse
import random
import time

from kqi.scheduler.model import ClusterState, GpuView, JobRequest, NodeView, RunningJob
from kqi.scheduler.plan import POLICIES, plan

QUEUES = (100, 1_000, 10_000)
NODES = (10, 50, 200)
GPU_MIX = (0, 250, 500, 1000, 1000, 1000, 2000, 4000, 8000)


def make_jobs(rng: random.Random, first_id: int, count: int, now: float) -> list[JobRequest]:
    jobs = []
    for job_id in range(first_id, first_id + count):
        gpu = rng.choice(GPU_MIX)
        gpus = max(1, gpu // 1000)
        jobs.append(JobRequest(
            job_id=job_id, tenant=f"tenant-{rng.randrange(5)}", submit_time=now - rng.uniform(0, 86400),
            cpu_milli=(gpus * rng.choice((4, 8, 12)) if gpu else rng.choice((2, 8, 16))) * 1000,
            memory_mib=gpus * rng.choice((16, 32, 64)) * 1024, gpu_milli=gpu,
            time_limit_s=rng.choice((None, 600.0, 3600.0, 86400.0)), nodes=2 if rng.random() < 0.03 else 1))
    return jobs


def make_state(queue_size: int, node_count: int, seed: int = 7) -> ClusterState:
    rng = random.Random(seed)
    now = 1_000_000.0
    nodes = tuple(NodeView(f"node-{i:03d}", 96_000, 512 * 1024, tuple(GpuView(g, group=g // 4) for g in range(8)))
                  for i in range(node_count))
    # Fill the cluster to about half its GPUs with jobs placed by the planner itself.
    seed_jobs = make_jobs(rng, 1, node_count * 3, now)
    filled = plan(ClusterState(now, nodes, (), tuple(seed_jobs)), "kqi")
    tenant = {j.job_id: j.tenant for j in seed_jobs}
    running = tuple(RunningJob(p.job_id, tenant[p.job_id], p.parts, now - rng.uniform(0, 3600),
                               rng.choice((None, 7200.0))) for p in filled.placements)
    queue = tuple(make_jobs(rng, 10_000_000, queue_size, now))
    return ClusterState(now, nodes, running, queue)


def time_pass(state: ClusterState, policy: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        plan(state, policy)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="kqi", choices=sorted(POLICIES))
    parser.add_argument("--repeat", type=int, default=3, help="best of this many passes")
    args = parser.parse_args(argv)
    print(f"policy {args.policy}, best of {args.repeat}")
    print(f"{'queue':>7} {'nodes':>6} {'seconds':>9} {'decisions/s':>12} {'growth':>7}")
    for nodes in NODES:
        previous = None
        for queue in QUEUES:
            seconds = time_pass(make_state(queue, nodes), args.policy, args.repeat)
            growth = f"{seconds / previous:7.1f}" if previous else f"{'':>7}"
            print(f"{queue:>7} {nodes:>6} {seconds:9.4f} {queue / seconds:12.0f} {growth}")
            previous = seconds


if __name__ == "__main__":
    main()
