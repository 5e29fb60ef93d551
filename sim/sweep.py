"""Compare one policy with EASY backfill over many workloads: the worst ratios and every loss.

    python -m sim.sweep --trace-nodes 2 3 4 5 6 8 --limit-factors 1 1.5 2 3 \
        --seeds 1-20 --loads 0.5 0.9 1.2 --gen-nodes 2 4 6 --jobs 300 [--workers 2]

Each case runs both policies through the simulator and reports kqi / backfill for the mean JCT and
the makespan (1.0 = equal; above 1 kqi loses). Cases: the repository's trace at each node count
and limit factor, and the generator at each seed x load x node count x limit factor, on each
node shape (default 8 GPUs, 96 cores, 512 GiB).
"""
from __future__ import annotations

import argparse
import csv
import itertools
from concurrent.futures import ProcessPoolExecutor

from sim.replay import DEFAULT_TRACE, make_nodes, read_rows, simulate
from sim.workload import generate


def run_case(case: tuple) -> tuple:
    kind, arg, nodes, limit_factor, policy, shape = case
    if kind == "trace":
        with open(arg, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        seed, jobs, load = arg
        rows = generate(seed, jobs, load)
    jobs = read_rows(rows, limit_factor)
    cluster = make_nodes(nodes, *shape)
    out = []
    for name in (policy, "backfill"):
        r = simulate(jobs, cluster, name)
        out.append((r.avg_jct_s, r.makespan_s))
    (jct, span), (ejct, espan) = out
    return case, jct / ejct if ejct else 1.0, span / espan if espan else 1.0, out


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(text)]


def main(argv: list[str] | None = None) -> list[tuple]:
    parser = argparse.ArgumentParser(prog="python -m sim.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="kqi")
    parser.add_argument("--trace", default=str(DEFAULT_TRACE))
    parser.add_argument("--trace-nodes", type=int, nargs="*", default=[2, 3, 4, 5, 6, 8])
    parser.add_argument("--limit-factors", type=float, nargs="*", default=[2.0])
    parser.add_argument("--seeds", nargs="*", default=["1-10"], help="numbers or ranges like 1-20")
    parser.add_argument("--loads", type=float, nargs="*", default=[0.5, 0.9])
    parser.add_argument("--gen-nodes", type=int, nargs="*", default=[4])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--shapes", nargs="*", default=["8x96x512"],
                        help="node shapes as GPUSxCORESxGiB (default 8x96x512)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--all", action="store_true", help="print every case, not only losses")
    args = parser.parse_args(argv)
    seeds = [s for text in args.seeds for s in _seeds(text)]
    shapes = [tuple(int(x) for x in text.split("x")) for text in args.shapes]
    cases = [("trace", args.trace, n, f, args.policy, shape)
             for shape, n, f in itertools.product(shapes, args.trace_nodes, args.limit_factors)]
    cases += [("gen", (s, args.jobs, load), n, f, args.policy, shape)
              for shape, s, load, n, f in itertools.product(shapes, seeds, args.loads, args.gen_nodes, args.limit_factors)]
    results, losses = [], []
    pool = ProcessPoolExecutor(args.workers) if args.workers > 1 else None
    try:
        for result in (pool.map(run_case, cases) if pool else map(run_case, cases)):
            case, jct, span, out = result
            results.append(result)
            lost = jct > 1 + 1e-12 or span > 1 + 1e-12
            if lost:
                losses.append(result)
            if lost or args.all:
                where = case[1] if case[0] == "gen" else ""
                print(f"{'LOSS' if lost else 'ok  '} {case[0]} {where} nodes={case[2]}x{'x'.join(map(str, case[5]))} "
                      f"limit={case[3]:g}: avg JCT {jct:.5f} makespan {span:.5f}  "
                      f"{case[4]} {out[0][0]:.1f} / {out[0][1]:.0f}, backfill {out[1][0]:.1f} / {out[1][1]:.0f}", flush=True)
    finally:
        if pool:
            pool.shutdown()
    worst_jct = max(results, key=lambda r: r[1])
    worst_span = max(results, key=lambda r: r[2])
    print(f"{len(results)} cases, {len(losses)} where {args.policy} loses to backfill; "
          f"worst avg JCT ratio {worst_jct[1]:.5f} ({worst_jct[0][1:4]}, {worst_jct[0][5]}), "
          f"worst makespan ratio {worst_span[2]:.5f} ({worst_span[0][1:4]}, {worst_span[0][5]})")
    return results


if __name__ == "__main__":
    main()
