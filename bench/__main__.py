"""Benchmarks that print figures: `python -m bench [NAME ...]` (default: all of them).

    start-latency   submit -> Running through kqi against bare docker create + start
    plan-speed      one planning pass of the scheduler core for growing queues and clusters
"""
from __future__ import annotations

import importlib
import sys

BENCHES = {"start-latency": "bench.start_latency", "plan-speed": "bench.plan_speed"}


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv and argv[0] in BENCHES:
        return importlib.import_module(BENCHES[argv[0]]).main(argv[1:])
    if argv:
        print(f"unknown benchmark {argv[0]!r}; choose from {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    for name, module in BENCHES.items():
        print(f"== {name}", flush=True)
        status = importlib.import_module(module).main([])
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
