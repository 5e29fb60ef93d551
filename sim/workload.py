"""A generated multi-GPU workload in the trace schema (see sim/traces/README.md).

The public openb trace is almost all one-GPU tasks; this generator adds the mix that makes
placement hard: jobs asking 1, 2, 4 or 8 whole GPUs with heavy-tailed run times. It is seeded
(numpy's PCG64 via default_rng), so `--seed 7 --jobs 1500` always writes the same rows.

    python -m sim.workload --seed 7 --jobs 1500 --out multi_gpu.csv
"""
from __future__ import annotations

import argparse
import csv
import sys

import numpy as np

COLUMNS = ("job_id", "submit_time_s", "start_time_s", "end_time_s", "duration_s", "num_gpu", "gpu_milli",
           "cpu_milli", "memory_mib", "qos", "final_phase")
GPU_COUNTS = (1, 2, 4, 8)
GPU_WEIGHTS = (0.45, 0.20, 0.20, 0.15)
MEDIAN_DURATION_S = 1800.0  # lognormal run time: median 30 min, sigma 1.5 (mean about 1.5 h)
DURATION_SIGMA = 1.5
MAX_DURATION_S = 3 * 86400.0
CLUSTER_GPUS = 32  # arrivals are paced for 4 nodes x 8 GPUs ...
OFFERED_LOAD = 0.9  # ... at 90% of their GPU-seconds on average, so bursts build a queue
CPU_MILLI_PER_GPU = 10_000
MEMORY_MIB_PER_GPU = 48 * 1024


def generate(seed: int = 7, jobs: int = 1500, load: float = OFFERED_LOAD) -> list[dict[str, str]]:
    """`jobs` rows; arrivals paced so that they offer `load` x CLUSTER_GPUS GPUs on average."""
    rng = np.random.default_rng(seed)
    gpus = rng.choice(GPU_COUNTS, size=jobs, p=GPU_WEIGHTS)
    durations = np.minimum(MAX_DURATION_S,
                           np.maximum(1.0, rng.lognormal(np.log(MEDIAN_DURATION_S), DURATION_SIGMA, jobs))).round()
    mean_gpu_seconds = float(np.mean(gpus * durations))
    gaps = rng.exponential(mean_gpu_seconds / (CLUSTER_GPUS * load), size=jobs)
    submits = np.concatenate(([0.0], np.cumsum(gaps[1:]))).round()
    cpu_scale = rng.uniform(0.5, 1.0, size=jobs)
    rows = []
    for i in range(jobs):
        n = int(gpus[i])
        rows.append({
            "job_id": f"gen-{seed}-{i:05d}", "submit_time_s": f"{submits[i]:.0f}", "start_time_s": "",
            "end_time_s": "", "duration_s": f"{durations[i]:.0f}", "num_gpu": str(n),
            "gpu_milli": "1000",
            "cpu_milli": str(int(n * CPU_MILLI_PER_GPU * cpu_scale[i]) // 100 * 100),
            "memory_mib": str(n * MEMORY_MIB_PER_GPU), "qos": "BE", "final_phase": "Succeeded"})
    return rows


def write_csv(rows: list[dict[str, str]], out) -> None:
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sim.workload", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--load", type=float, default=OFFERED_LOAD, help="offered load on 32 GPUs (default 0.9)")
    parser.add_argument("--out", help="CSV path (default: stdout)")
    args = parser.parse_args(argv)
    rows = generate(args.seed, args.jobs, args.load)
    if args.out:
        with open(args.out, "w", newline="") as out:
            write_csv(rows, out)
    else:
        write_csv(rows, sys.stdout)


if __name__ == "__main__":
    main()
