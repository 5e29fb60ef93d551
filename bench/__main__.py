"""Benchmarks that print figures: `python -m bench [NAME ...]` (default: all of them).

    start-latency   submit -> Running through kqi against bare docker create + start
    plan-speed      one planning pass of the scheduler core for growing queues and clusters
    load            200 API clients submitting and polling jobs (SQLite and PostgreSQL)
    node-loss       a node's dockerd killed mid-job: time until Offline and its jobs ended
    restart-recovery  the server killed (kill -9) with 20 jobs running: time until all are collected
    soak            500 short jobs on 3 engines, one killed and restarted midway: lost, double-started
    core            the execution core: six scenarios (a halt, a dataset, a frozen node, a burst, a 5 GB
                    log) through a real server on two engines, each against bare docker create + start
"""
from __future__ import annotations

import importlib
import sys

BENCHES = {"start-latency": "bench.start_latency", "plan-speed": "bench.plan_speed", "load": "bench.load",
           "node-loss": "bench.nodes:node_loss_main", "restart-recovery": "bench.nodes:restart_recovery_main",
           "soak": "bench.nodes:soak_main", "core": "bench.core"}


def _bench(name: str):
    """The bench's entry point: "module" (its main) or "module:function"."""
    module, _, function = BENCHES[name].partition(":")
    return getattr(importlib.import_module(module), function or "main")


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv and argv[0] in BENCHES:
        return _bench(argv[0])(argv[1:])
    if argv:
        print(f"unknown benchmark {argv[0]!r}; choose from {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    for name in BENCHES:
        print(f"== {name}", flush=True)
        status = _bench(name)([])
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
