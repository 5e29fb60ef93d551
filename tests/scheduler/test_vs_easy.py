"""kqi against EASY backfill in the simulator: the case that lost, a generated sweep, the openb trace."""
from __future__ import annotations

import csv
import itertools

from sim.replay import DEFAULT_TRACE, make_nodes, read_rows, simulate
from sim.workload import generate

# Four rows of generated workload seed 6998 (40 jobs, load 1.1), on one node of 8 GPUs, 128
# cores, 768 GiB, limits 1.5 x duration. Tenants come from the job ids: 29 and 31 are tenant-2,
# 33 and 39 tenant-0. Before the head guard (plan._guard_head) kqi gave 8-GPU job 31's
# reservation away to the later 1-GPU job 33 of the less-used tenant, then preferred 33 again on
# the empty node, idling 7 GPUs for 8,126 s: kqi 16,334.8 s mean JCT / 46,081 s makespan against
# EASY's 13,671.0 / 38,306 (+19% / +20%). Now kqi makes EASY's decisions here.
LOST = [
    ("gen-6998-00029", 8375, 478, 1, 8200, 49152),
    ("gen-6998-00031", 8470, 4544, 8, 44600, 393216),
    ("gen-6998-00033", 8502, 8126, 1, 9100, 49152),
    ("gen-6998-00039", 10423, 33284, 1, 8300, 49152),
]


def rows(literal):
    return [{"job_id": name, "submit_time_s": str(submit), "start_time_s": "", "end_time_s": "",
             "duration_s": str(duration), "num_gpu": str(gpus), "gpu_milli": "1000", "cpu_milli": str(cpu),
             "memory_mib": str(memory), "qos": "BE", "final_phase": "Succeeded"}
            for name, submit, duration, gpus, cpu, memory in literal]


def versus_easy(jobs, nodes):
    kqi, easy = simulate(jobs, nodes, "kqi"), simulate(jobs, nodes, "backfill")
    assert kqi.completed == easy.completed == len(jobs) - kqi.unplaceable
    return kqi, easy


def test_the_case_that_lost_to_easy():
    kqi, easy = versus_easy(read_rows(rows(LOST), 1.5), make_nodes(1, 8, 128, 768))
    assert (easy.avg_jct_s, easy.makespan_s) == (13_671.0, 38_306.0)
    assert kqi.avg_jct_s <= easy.avg_jct_s and kqi.makespan_s <= easy.makespan_s


# Generated workloads (sim/workload.py): seeds 1-6 x offered load 0.5, 0.9, 1.2 of 32 GPUs, 150
# jobs each, on 4 nodes of 8 GPUs, 96 cores, 512 GiB, limits 2 x duration. kqi is at or below EASY
# in both mean JCT and makespan on 15 of the 18; the other three are listed with what kqi measured
# (kqi / EASY). In all three the job that ends last is a long one submitted while a queue stood,
# and kqi's backfill order (highest response ratio first, behind the reservations) let later,
# shorter jobs start before it: 2,633 to 3,160 s later than EASY, which starts in submit order.
# That order is kqi's on purpose (it is most of its mean JCT gain, and
# test_kqi_starts_the_makespan_setting_long_job_first_behind_the_reservations requires a later
# short job to go before a long one that has waited less than half the backlog); a rule that never
# starts such a job later than EASY would contradict that test.
SWEEP = list(itertools.product(range(1, 7), (0.5, 0.9, 1.2)))
KNOWN_LOSSES = {  # (seed, load): (mean JCT ratio, makespan ratio), at most
    (2, 0.9): (1.0069, 1.0192),
    (2, 1.2): (0.9595, 1.0170),
    (3, 1.2): (0.9096, 1.0292),
}


def test_generated_sweep_against_easy():
    nodes = make_nodes(4, 8, 96, 512)
    jct_ratios = []
    for seed, load in SWEEP:
        kqi, easy = versus_easy(read_rows(generate(seed, 150, load), 2.0), nodes)
        jct, span = kqi.avg_jct_s / easy.avg_jct_s, kqi.makespan_s / easy.makespan_s
        jct_ratios.append(jct)
        bound = KNOWN_LOSSES.get((seed, load), (1.0, 1.0))
        assert jct <= bound[0] and span <= bound[1], (seed, load, jct, span)
    assert sum(jct_ratios) / len(jct_ratios) < 0.97  # 0.959: kqi's mean JCT is 4% below EASY's on average


def test_openb_trace_five_nodes():
    # sim/traces/openb_first2000.csv on 5 nodes of 8 GPUs, 96 cores, 512 GiB, limits 2 x duration.
    with open(DEFAULT_TRACE, newline="") as f:
        jobs = read_rows(csv.DictReader(f), 2.0)
    kqi, easy = versus_easy(jobs, make_nodes(5, 8, 96, 512))
    assert kqi.unplaceable == easy.unplaceable == 1  # a 120-core task on 96-core nodes
    assert kqi.avg_jct_s <= easy.avg_jct_s and kqi.makespan_s <= easy.makespan_s
