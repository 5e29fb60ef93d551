"""Per-node fit, GPU choice and score, table-driven with the arithmetic in comments."""
from __future__ import annotations

import pytest

from kqi.scheduler.fit import (
    INSUFFICIENT_CPU,
    INSUFFICIENT_GPU_SHARE,
    INSUFFICIENT_GPUS,
    INSUFFICIENT_MEMORY,
    INVALID_GPU_REQUEST,
    NodeFree,
    pick_gpus,
    reasons_unfit,
    score,
)
from tests.scheduler.builders import job, node, part


def free(view, *parts):
    n = NodeFree.of(view)
    for p in parts:
        n.take(p)
    return n


@pytest.mark.parametrize("name, node_free, req, expected", [
    # 32 cores, 256 GiB, 8 GPUs idle: 8 GPUs + 32 cores fit exactly.
    ("exact fit", free(node("a")), job(1, gpu=8000, cpu=32, memory_gib=256), []),
    # 33 cores > 32, 257 GiB > 256, 9 GPUs > 8: every reason is kept, not just the first.
    ("all short", free(node("a")), job(1, gpu=9000, cpu=33, memory_gib=257),
     [INSUFFICIENT_CPU, INSUFFICIENT_MEMORY, INSUFFICIENT_GPUS]),
    # busy GPUs 0-5 are never usable: 2 whole GPUs left, 3 asked.
    ("busy gpus", free(node("a", busy=(0, 1, 2, 3, 4, 5))), job(1, gpu=3000), [INSUFFICIENT_GPUS]),
    # GPU 0 holds 700 of 1000 and the rest are busy: 300 free, a 400 share does not fit ...
    ("share too big", free(node("a", busy=tuple(range(1, 8))), part("a", (0,), gpu=700)), job(1, gpu=400),
     [INSUFFICIENT_GPU_SHARE]),
    # ... but a 300 share does (700 + 300 = 1000).
    ("share fills gpu", free(node("a", busy=tuple(range(1, 8))), part("a", (0,), gpu=700)), job(1, gpu=300), []),
    # 1 whole GPU on a node whose only usable GPU holds a share: partly used GPUs are not whole.
    ("whole on shared", free(node("a", busy=tuple(range(1, 8))), part("a", (0,), gpu=100)), job(1, gpu=1000),
     [INSUFFICIENT_GPUS]),
    ("1500 is invalid", free(node("a")), job(1, gpu=1500), [INVALID_GPU_REQUEST]),
    ("cpu-only on gpu-less node", free(node("c", gpus=0)), job(1, cpu=4), []),
])
def test_reasons_unfit(name, node_free, req, expected):
    assert reasons_unfit(node_free, req) == expected


@pytest.mark.parametrize("name, node_free, gpu_milli, smart, expected", [
    # first fit: lowest indices, whatever they leave behind
    ("first fit whole", free(node("a"), part("a", (1,))), 2000, False, (0, 2)),
    ("first fit share", free(node("a"), part("a", (3,), gpu=500)), 250, False, (0,)),
    # best fit share: GPU 3 has 500 free, the least that still holds 250 -> it shares GPU 3.
    ("best fit share", free(node("a"), part("a", (3,), gpu=500)), 250, True, (3,)),
    # among shared GPUs the fuller one: GPU 2 has 300 free, GPU 5 has 600 free.
    ("fullest shared gpu", free(node("a"), part("a", (2,), gpu=700), part("a", (5,), gpu=400)), 300, True, (2,)),
    # groups {0-3} and {4-7}; 0 and 1 are used, so group 0 has 2 free (2, 3) and group 1 has 4.
    # A 2-GPU part takes the tighter group 0 and keeps 4-7 whole for a 4-GPU job.
    ("tightest group", free(node("a", groups=2), part("a", (0, 1))), 2000, True, (2, 3)),
    # one group of 8 with 2 used (index 2 and 5): free runs [0,1], [3,4], [6,7]; a 2-GPU part takes
    # the first shortest run that holds it, [0,1].
    ("tightest run", free(node("a"), part("a", (2,)), part("a", (5,))), 2000, True, (0, 1)),
    # free runs [0,1,2] and [4,5,6,7] (3 used): a 3-GPU part takes [0,1,2], the 4-run stays whole.
    ("keep 4-block", free(node("a"), part("a", (3,))), 3000, True, (0, 1, 2)),
    # 4 groups of 2: group 0 fully used, groups 1..3 have 2 free each; 3 GPUs span groups,
    # taken from the smallest groups first (ties by group number): 2,3 then 4.
    ("span groups", free(node("a", groups=4), part("a", (0, 1))), 3000, True, (2, 3, 4)),
])
def test_pick_gpus(name, node_free, gpu_milli, smart, expected):
    assert pick_gpus(node_free, gpu_milli, smart) == expected


def test_score_prefers_fuller_gpus_then_cpu():
    # node a: 6 of 8 GPUs used; node b: idle. One more GPU: a ends at 7/8 used, b at 1/8.
    busy = free(node("a"), part("a", (0, 1, 2, 3, 4, 5)))
    idle = free(node("b"))
    req = job(1, gpu=1000)
    assert score(busy, req, (6,), end=0.0) > score(idle, req, (0,), end=0.0)
    # a share: leftover on the chosen GPU comes first (a GPU with 250 free -> 0 left beats 1000 free).
    shared = free(node("c"), part("c", (0,), gpu=750))
    share = job(2, gpu=250)
    assert score(shared, share, (0,), end=0.0) > score(busy, share, (6,), end=0.0)


def test_score_groups_jobs_that_end_together():
    # Both nodes hold 4 GPUs; a's jobs run until t=5000, b's until t=100. A job ending at 4000
    # extends a's drain time by 0 s and b's by 3900 s -> a, so b can drain early for a big job.
    a = free(node("a"), part("a", (0, 1, 2, 3)))
    a.drain_at = 5000.0
    b = free(node("b"), part("b", (0, 1, 2, 3)))
    b.drain_at = 100.0
    req = job(1, gpu=1000)
    assert score(a, req, (4,), end=4000.0) > score(b, req, (4,), end=4000.0)


def test_take_refuses_over_allocation():
    n = free(node("a", cpu=2))
    with pytest.raises(ValueError, match="over-allocated"):
        n.take(part("a", cpu=3))
