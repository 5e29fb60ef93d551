"""Hypothesis properties of plan() on random small clusters, checked by independent arithmetic."""
from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kqi.scheduler.model import (
    CODES,
    WHOLE_GPU,
    ClusterState,
    GpuView,
    JobRequest,
    NodeView,
    Quota,
    RunningJob,
)
from kqi.scheduler.plan import POLICIES, plan
from kqi.scheduler.reasons import render

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TENANTS = ("a", "b", "c")


@st.composite
def nodes(draw):
    count = draw(st.integers(1, 4))
    out = []
    for i in range(count):
        gpus = draw(st.sampled_from((0, 2, 4, 8)))
        groups = draw(st.sampled_from((1, 2)))
        busy = draw(st.sets(st.integers(0, max(0, gpus - 1)), max_size=2)) if gpus else set()
        out.append(NodeView(
            f"n{i}", draw(st.sampled_from((4000, 16000, 32000))), draw(st.sampled_from((8192, 65536))),
            tuple(GpuView(g, group=g * groups // gpus, busy=g in busy) for g in range(gpus)),
            frozenset(draw(st.sets(st.sampled_from(("p1", "p2")), max_size=1))),
            draw(st.booleans()) or draw(st.booleans()),
            draw(st.one_of(st.none(), st.frozensets(st.sampled_from(TENANTS), min_size=1))),
            draw(st.frozensets(st.sampled_from(("f1", "f2"))))))
    return tuple(out)


@st.composite
def jobs(draw, first_id, count, now):
    out = []
    for job_id in range(first_id, first_id + count):
        gpu = draw(st.sampled_from((0, 0, 250, 500, 700, 1000, 1000, 2000, 4000, 8000)))
        out.append(JobRequest(
            job_id, draw(st.sampled_from(TENANTS)), draw(st.floats(0, now)), draw(st.sampled_from((500, 2000, 8000))),
            draw(st.sampled_from((1024, 4096, 16384))), gpu, draw(st.sampled_from((None, None, "p1", "p3"))),
            draw(st.integers(0, 2)), draw(st.sampled_from((None, 50.0, 200.0, 1000.0))),
            draw(st.sampled_from((1, 1, 1, 2))),
            draw(st.sampled_from((frozenset(), frozenset(), frozenset(), frozenset({"f1"}), frozenset({"f1", "f2"}))))))
    return tuple(out)


@st.composite
def states(draw):
    """A cluster whose running jobs were themselves placed by plan(), so they are consistent."""
    now = 1000.0
    cluster = draw(nodes())
    earlier = draw(jobs(1, draw(st.integers(0, 12)), now))
    seed = plan(ClusterState(0.0, cluster, (), earlier), draw(st.sampled_from(sorted(POLICIES))))
    by_id = {j.job_id: j for j in earlier}
    running = tuple(RunningJob(p.job_id, by_id[p.job_id].tenant, p.parts, draw(st.floats(0, now)),
                               by_id[p.job_id].time_limit_s) for p in seed.placements)
    queue = draw(jobs(100, draw(st.integers(0, 15)), now))
    quotas = {t: Quota(gpu_milli=draw(st.sampled_from((None, 2000, 8000)))) for t in TENANTS}
    usage = {t: draw(st.floats(0, 1e6)) for t in TENANTS}
    return ClusterState(now, cluster, running, queue, quotas, usage)


def held(state, placements, until=None):
    """node -> [cpu, memory, {gpu index: [milli of each part]}] for running jobs and placements;
    with `until`, only what is still running at that time (by time limits)."""
    use = {n.name: [0, 0, {}] for n in state.nodes}
    jobs = [(r.parts, None if r.time_limit_s is None else r.started_at + r.time_limit_s) for r in state.running]
    limits = {j.job_id: j.time_limit_s for j in state.queue}
    jobs += [(p.parts, None if limits[p.job_id] is None else state.now + limits[p.job_id]) for p in placements]
    for parts, end in jobs:
        if until is not None and end is not None and max(end, state.now) <= until:
            continue
        for part in parts:
            u = use[part.node]
            u[0] += part.cpu_milli
            u[1] += part.memory_mib
            for i in part.gpu_indices:
                u[2].setdefault(i, []).append(part.gpu_milli // len(part.gpu_indices))
    return use


@SETTINGS
@given(states(), st.sampled_from(sorted(POLICIES)))
def test_resources_never_over_allocated(state, policy):
    result = plan(state, policy)
    views = {n.name: n for n in state.nodes}
    queue = {j.job_id: j for j in state.queue}
    for name, (cpu, memory, gpus) in held(state, result.placements).items():
        assert cpu <= views[name].cpu_milli and memory <= views[name].memory_mib
        for shares in gpus.values():
            assert sum(shares) <= WHOLE_GPU  # shares of one GPU add up to at most one GPU
    running_gpus = {(p.node, i) for r in state.running for p in r.parts for i in p.gpu_indices}
    for placement in result.placements:
        job = queue[placement.job_id]
        assert len(placement.parts) == job.nodes  # gang: every part or none
        assert len({p.node for p in placement.parts}) == job.nodes
        for part in placement.parts:
            view = views[part.node]
            assert view.schedulable and (view.tenants is None or job.tenant in view.tenants)
            assert job.partition is None or job.partition in view.labels
            assert job.needs <= view.features
            assert (part.cpu_milli, part.memory_mib, part.gpu_milli) == (job.cpu_milli, job.memory_mib, job.gpu_milli)
            busy = {g.index for g in view.gpus if g.busy}
            assert not busy & set(part.gpu_indices)
            if job.gpu_milli >= WHOLE_GPU:  # whole GPUs: nothing else, running or placed, on them
                assert len(part.gpu_indices) == job.gpu_milli // WHOLE_GPU
                assert not {(part.node, i) for i in part.gpu_indices} & running_gpus
                others = [p for q in result.placements if q is not placement for p in q.parts
                          if p.node == part.node and set(p.gpu_indices) & set(part.gpu_indices)]
                assert not others
            elif job.gpu_milli:
                assert len(part.gpu_indices) == 1


@SETTINGS
@given(states(), st.sampled_from(sorted(POLICIES)))
def test_every_job_accounted_once_with_positions(state, policy):
    result = plan(state, policy)
    placed = [p.job_id for p in result.placements]
    pending = [p.job_id for p in result.pending]
    assert sorted(placed + pending) == sorted(j.job_id for j in state.queue)
    assert all(p.reasons for p in result.pending)
    for reason in (r for p in result.pending for r in p.reasons):  # each code with its params, in words
        assert tuple(name for name, _ in reason.params) == CODES[reason.code], reason
        assert render(reason)
    positions = [p.position for p in result.pending]
    assert len(set(positions)) == len(positions) and all(1 <= p <= len(state.queue) for p in positions)


@SETTINGS
@given(states(), st.sampled_from(sorted(POLICIES)))
def test_quotas_hold(state, policy):
    result = plan(state, policy)
    tenant_of = {j.job_id: j.tenant for j in state.queue}
    for tenant, quota in state.quotas.items():
        if quota.gpu_milli is None:
            continue
        before = sum(p.gpu_milli for r in state.running if r.tenant == tenant for p in r.parts)
        added = sum(p.gpu_milli for q in result.placements if tenant_of[q.job_id] == tenant for p in q.parts)
        assert added == 0 or before + added <= quota.gpu_milli


@SETTINGS
@given(states(), st.sampled_from(sorted(POLICIES)), st.randoms(use_true_random=False))
def test_deterministic_under_input_order(state, policy, rnd: random.Random):
    first = plan(state, policy)
    assert plan(state, policy) == first
    shuffled = [list(state.nodes), list(state.running), list(state.queue)]
    for items in shuffled:
        rnd.shuffle(items)
    permuted = ClusterState(state.now, tuple(shuffled[0]), tuple(shuffled[1]), tuple(shuffled[2]),
                            state.quotas, state.usage)
    assert plan(permuted, policy) == first


@settings(SETTINGS, max_examples=150)  # about one state in six yields a finite reservation
@given(states(), st.sampled_from(("kqi", "backfill")))
def test_backfill_never_delays_the_reservation(state, policy):
    """Run every job to its time limit: at the reserved time the reserved job fits on its nodes."""
    result = plan(state, policy)
    if policy == "backfill":
        assert len(result.reservations) <= 1  # textbook EASY
    queue = {j.job_id: j for j in state.queue}
    for reservation in result.reservations:
        job = queue[reservation.job_id]
        assert len(reservation.nodes) == job.nodes
        use = held(state, result.placements, until=reservation.start_at)
        # Other reservations (kqi keeps two) still running then on the same node must fit too.
        others = [(queue[o.job_id], set(o.nodes)) for o in result.reservations if o is not reservation
                  and o.start_at <= reservation.start_at
                  < o.start_at + (queue[o.job_id].time_limit_s if queue[o.job_id].time_limit_s is not None
                                  else float("inf"))]
        for name in reservation.nodes:
            view = next(n for n in state.nodes if n.name == name)
            cpu, memory, gpus = use[name]
            here = [o for o, nodes in others if name in nodes]
            cpu += sum(o.cpu_milli for o in here)
            memory += sum(o.memory_mib for o in here)
            assert cpu + job.cpu_milli <= view.cpu_milli and memory + job.memory_mib <= view.memory_mib
            free = [WHOLE_GPU - sum(gpus.get(g.index, [])) for g in view.gpus if not g.busy]
            whole_held = sum(o.gpu_milli // WHOLE_GPU for o in here if o.gpu_milli >= WHOLE_GPU)
            if job.gpu_milli >= WHOLE_GPU:
                assert sum(1 for f in free if f == WHOLE_GPU) - whole_held >= job.gpu_milli // WHOLE_GPU
            elif job.gpu_milli and not any(0 < o.gpu_milli < WHOLE_GPU for o in here):
                assert max(free) >= job.gpu_milli
