"""One planning pass: which queued jobs start now, on which nodes and GPUs, and why the rest wait.

`plan(state, policy)` is a pure function of its frozen input: no clock, no randomness, no I/O.
Nodes are visited in name order and every sort ends on a name or job id, so the same state (in
any input order) gives the same plan.

Backfill is EASY-style: the first job in queue order that cannot start for lack of capacity gets
the earliest time its parts fit, computed from the time limits of running jobs and of jobs placed
earlier in this pass. Later jobs start only if they end (by their own time limit) before that
time, or if the reserved nodes still hold the reserved job's parts at that time with them added.
The `backfill` baseline keeps exactly one reservation (textbook EASY). kqi keeps two: the second
blocked job in kqi order is reserved too, at the earliest time it fits with the first reserved
job held on its nodes from now until that job's own end (start + time limit), and backfill must
delay neither. Two, not one per job (conservative backfill), keeps the pass linear in the queue.

Behind the reservations the baseline tries the remaining jobs in submit order; kqi tries them by
explicit priority, then jobs that set the makespan (time limit >= 1.5 x the queue's backlog, after
waiting >= 0.5 x the backlog; longest first), then highest response ratio (order.backfill_key).
Who gets the reservations is still decided by the full kqi order, so fair share and aging bound
every job's wait (docs/scheduler.md has the measurements).

Head guard (_guard_head): when a kqi pass leaves jobs pending, the queue is also planned in
priority-then-submit order, and that plan is used if the fair-share one starts less now or pushes
back its first blocked job (EASY's head), so fair share cannot take a reservation away.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace

from kqi.scheduler.fit import (
    NodeFree,
    make_part,
    pick_gpus,
    reasons_unfit,
    score,
    valid_gpu_request,
)
from kqi.scheduler.model import (
    BLOCKED_BEHIND,
    DELAYS_RESERVATION,
    GANG_SHORT,
    INVALID_GANG_SIZE,
    INVALID_GPU_REQUEST,
    NO_NODES,
    NODE_FEATURE_MISSING,
    NODE_UNSCHEDULABLE,
    PARTITION_EMPTY,
    PER_NODE_ORDER,
    QUOTA,
    RESERVED,
    TENANT_NOT_ALLOWED,
    WHOLE_GPU,
    AllocatedPart,
    ClusterState,
    JobRequest,
    Pending,
    Placement,
    Plan,
    Reason,
    Reservation,
    RunningJob,
)
from kqi.scheduler.order import (
    FairShareOrder,
    PriorityOrder,
    StrictOrder,
    backfill_key,
    backlog_seconds,
)


@dataclass(frozen=True)
class Policy:
    fair_share: bool  # kqi order (priority, aging, fair share) instead of submit order
    node_choice: str  # "pack" (MostAllocated score), "first" (by name) or "spread" (least allocated)
    smart_gpus: bool  # best-fit shares and topology-aware blocks instead of lowest indices
    backfill: bool  # False: stop at the first job that cannot start
    response_ratio_backfill: bool = False  # behind a reservation: highest response ratio first
    reservations: int = 1  # how many blocked jobs (in queue order) get a reservation
    # Behind the reservations, a job whose time limit is at least long_first[0] x the queue's
    # backlog and that has waited at least long_first[1] x the backlog is tried first, longest
    # first (order.backfill_key). None: never.
    long_first: tuple[float, float] | None = None
    # With fair share: plan in priority order (order.PriorityOrder) instead whenever the fair-share
    # plan would push back the first job that cannot start in that order (see _guard_head).
    head_guard: bool = False


POLICIES = {
    "kqi": Policy(fair_share=True, node_choice="pack", smart_gpus=True, backfill=True, response_ratio_backfill=True,
                  reservations=2, long_first=(1.5, 0.5), head_guard=True),
    "fifo": Policy(fair_share=False, node_choice="first", smart_gpus=False, backfill=False),
    "spread": Policy(fair_share=False, node_choice="spread", smart_gpus=False, backfill=False),
    "backfill": Policy(fair_share=False, node_choice="first", smart_gpus=False, backfill=True),
}


def plan(state: ClusterState, policy: str = "kqi") -> Plan:
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    chosen = POLICIES[policy]
    result = _Pass(state, chosen).run()
    if chosen.head_guard and chosen.fair_share and result.pending:
        return _guard_head(state, chosen, result)
    return result


def _guard_head(state: ClusterState, policy: Policy, fair: Plan) -> Plan:
    """The fair-share plan, unless it costs EASY's guarantees; then the plan in priority order.

    The priority-order plan walks the queue by order.PriorityOrder (priority + aging, then submit
    time: EASY's order when priorities are equal) with the rest of kqi unchanged (node choice, two
    reservations, backfill order). Its first blocked job, the head, is reserved at time T. The
    fair-share plan is used unless
    * it pushes the head's earliest start past T: it starts a job (typically a newly arrived job
      of a less-used tenant that EASY would only have backfilled) that holds what the head needs
      past T, so the head loses its reservation and, for a wide job, the GPUs it was waiting for
      idle meanwhile; or
    * it starts less now than the priority-order plan (fit.dominant share, summed): it picks a job
      of a less-used tenant that leaves idle what an older job would have used, e.g. a 1-GPU job
      before an 8-GPU job on an empty node.
    So fair share decides whenever it only changes who uses the capacity, not how much is used.
    """
    ordered_pass = _Pass(state, policy)
    ordered = ordered_pass.run(PriorityOrder(state.queue, state.now))
    if ordered.placements == fair.placements:
        return fair
    if _started(state, ordered) > _started(state, fair) * (1 + 1e-9) + 1e-12:
        return ordered
    if not ordered_pass.reservations:
        return fair
    head = ordered_pass.reservations[0]
    if head.start_at == math.inf or any(p.job_id == head.job.job_id for p in fair.placements):
        return fair
    return ordered if _earliest_start(state, policy, fair, head.job) > head.start_at else fair


def _started(state: ClusterState, result: Plan) -> float:
    """How much of the cluster a plan starts now: per part, its largest fraction of the cluster's
    cpu, memory or GPUs (dominant share), summed."""
    cpu = sum(n.cpu_milli for n in state.nodes) or 1
    memory = sum(n.memory_mib for n in state.nodes) or 1
    gpus = WHOLE_GPU * sum(1 for n in state.nodes for g in n.gpus if not g.busy) or 1
    return sum(max(part.cpu_milli / cpu, part.memory_mib / memory, part.gpu_milli / gpus)
               for placement in result.placements for part in placement.parts)


def _earliest_start(state: ClusterState, policy: Policy, result: Plan, job: JobRequest) -> float:
    """When `job` could start at the earliest after `result`'s placements, all running to their
    time limits (reservations of `result` ignored; math.inf when never known)."""
    limits = {j.job_id: (j.tenant, j.time_limit_s) for j in state.queue}
    placed = tuple(RunningJob(p.job_id, limits[p.job_id][0], p.parts, state.now, limits[p.job_id][1])
                   for p in result.placements)
    alone = _Pass(ClusterState(state.now, state.nodes, state.running + placed, (job,)),
                  replace(policy, reservations=1, head_guard=False))
    if alone.run().placements:
        return state.now
    return alone.reservations[0].start_at if alone.reservations else math.inf


_RANK = {code: rank for rank, code in enumerate(PER_NODE_ORDER)}


def _shape(job: JobRequest, group: int) -> tuple:
    """What decides whether a job fits: jobs with equal shapes fit or fail together."""
    return (job.cpu_milli, job.memory_mib, job.gpu_milli, job.nodes, group)


@dataclass
class _Reservation:
    job: JobRequest
    start_at: float  # math.inf when a needed running job has no time limit
    shadows: dict[str, NodeFree]  # reserved node -> its free capacity at start_at, in rank order
    holds: dict[str, list[AllocatedPart]]  # reserved node -> parts of other reservations still there


class _Pass:
    """The mutable scratch state of one plan() call."""

    def __init__(self, state: ClusterState, policy: Policy):
        self.state = state
        self.policy = policy
        self.views = sorted(state.nodes, key=lambda v: v.name)
        self.idle = {v.name: NodeFree.of(v) for v in self.views}
        self.free = {name: node.copy() for name, node in self.idle.items()}
        self.in_use: dict[str, list[int]] = {}  # tenant -> [cpu, memory, gpu] held, for quotas
        self.ends: list[tuple[float, int, tuple[AllocatedPart, ...]]] = []
        for job in state.running:
            end = job.started_at + job.time_limit_s if job.time_limit_s is not None else math.inf
            self._occupy(job.parts, max(end, state.now))
            self._hold(job.tenant, job.parts)
            self.ends.append((max(end, state.now), job.job_id, job.parts))
        self.placements: list[Placement] = []
        self.pending: list[Pending] = []
        self.reservations: list[_Reservation] = []
        self.blocked_by: int | None = None  # strict policies: the job everything waits behind
        self.generation = 0  # placements so far; a cached failure from an older one may be stale
        self.failed: dict[tuple, tuple[int, list[Reason]]] = {}
        self.eligibility: dict[tuple, tuple[list[NodeFree], list[Reason], int]] = {}
        self.groups: dict[tuple, int] = {}  # (eligible names, static reasons) -> a small number
        self.never: dict[tuple, list[Reason]] = {}
        self.counted: dict[tuple, Reason] = {}  # (code, nodes, when_idle) -> its one Reason in this pass

    def run(self, order=None) -> Plan:
        state = self.state
        if order is None:
            order = (FairShareOrder(state.queue, state.usage, state.now) if self.policy.fair_share
                     else StrictOrder(state.queue))
        ranked = enumerate(order, 1)
        for position, job in ranked:
            self._decide(position, job, order)
            if len(self.reservations) >= self.policy.reservations and self.policy.response_ratio_backfill:
                break
        now = state.now
        # kqi fills the holes around the reservations highest response ratio first, except that
        # jobs longer than the backlog that have waited long enough go first, longest first.
        backlog = (backlog_seconds(state.queue, self.views) if self.policy.long_first is not None
                   else math.inf)
        long_first = self.policy.long_first or (math.inf, 0.0)
        for position, job in sorted(ranked, key=lambda pj: backfill_key(pj[1], now, backlog, *long_first) + (pj[0],)):
            self._decide(position, job, order)
        reservations = tuple(Reservation(r.job.job_id, r.start_at, tuple(r.shadows))
                             for r in self.reservations if r.start_at < math.inf)
        return Plan(tuple(self.placements), reservations, tuple(sorted(self.pending, key=lambda p: p.position)))

    def _decide(self, position: int, job: JobRequest, order) -> None:
        reasons = self._consider(job)
        if reasons:
            self.pending.append(Pending(job.job_id, position, tuple(reasons)))
        else:
            order.placed(job)

    def _consider(self, job: JobRequest) -> list[Reason]:
        """Place `job` now, or return why it waits (never empty when it waits)."""
        if self.blocked_by is not None:
            return [Reason.of(BLOCKED_BEHIND, job=self.blocked_by)]
        reasons = self._quota_reasons(job)
        if reasons:
            return reasons
        eligible, static, group = self._eligible(job)
        shape = _shape(job, group)
        reasons = self._never_fits(job, shape, eligible, static)
        if reasons:
            return reasons
        guarded = tuple(r for r in self.reservations if not self._ends_before(job, r))
        key = shape + tuple(id(r) for r in guarded)
        cached = self.failed.get(key)
        if cached and cached[0] == self.generation:
            if self.policy.backfill and len(self.reservations) < self.policy.reservations:
                return cached[1] + [self._reserve(job, eligible)]
            return cached[1]
        parts, reasons = self._try_place(job, eligible, guarded)
        if parts:
            self._commit(job, parts)
            return []
        reasons = static + reasons
        self.failed[key] = (self.generation, reasons)
        if not self.policy.backfill:
            self.blocked_by = job.job_id
        elif len(self.reservations) < self.policy.reservations:
            return reasons + [self._reserve(job, eligible)]
        return reasons

    def _aggregate(self, counts: Counter, when_idle: bool | None = None) -> list[Reason]:
        """Per-node reason codes counted over nodes, the most common first (ties in PER_NODE_ORDER).
        Built once per pass each: most waiting jobs wait for the same few."""
        reasons = []
        for code, n in sorted(counts.items(), key=lambda cn: (-cn[1], _RANK[cn[0]])):
            reason = self.counted.get((code, n, when_idle))
            if reason is None:  # params in name order, as Reason.of would sort them
                params = (("nodes", n),) if when_idle is None else (("nodes", n), ("when_idle", when_idle))
                reason = self.counted[code, n, when_idle] = Reason(code, params)
            reasons.append(reason)
        return reasons

    def _hold(self, tenant: str, parts: tuple[AllocatedPart, ...]) -> None:
        held = self.in_use.setdefault(tenant, [0, 0, 0])
        for part in parts:
            held[0] += part.cpu_milli
            held[1] += part.memory_mib
            held[2] += part.gpu_milli

    def _quota_reasons(self, job: JobRequest) -> list[Reason]:
        quota = self.state.quotas.get(job.tenant)
        if quota is None:
            return []
        held = self.in_use.get(job.tenant, [0, 0, 0])
        reasons = []
        for resource, limit, used, asked in (("cpu_milli", quota.cpu_milli, held[0], job.cpu_milli),
                                             ("memory_mib", quota.memory_mib, held[1], job.memory_mib),
                                             ("gpu_milli", quota.gpu_milli, held[2], job.gpu_milli)):
            asked *= job.nodes
            if limit is not None and used + asked > limit:
                reasons.append(Reason.of(QUOTA, resource=resource, used=used, limit=limit, asked=asked))
        return reasons

    def _eligible(self, job: JobRequest) -> tuple[list[NodeFree], list[Reason], int]:
        """Nodes open to the job's partition, needs and tenant, reasons about the others, and a
        number shared by all (partition, needs, tenant) that see the same nodes for the same reasons.
        A node without a feature the job needs is as far from it as a node of another partition."""
        key = (job.partition, job.needs, job.tenant)
        if key not in self.eligibility:
            in_partition = [v for v in self.views if job.partition is None or job.partition in v.labels]
            views = [v for v in in_partition if job.needs <= v.features] if job.needs else in_partition
            counts: Counter = Counter()
            nodes = []
            for view in views:
                if not view.schedulable:
                    counts[NODE_UNSCHEDULABLE] += 1
                elif view.tenants is not None and job.tenant not in view.tenants:
                    counts[TENANT_NOT_ALLOWED] += 1
                else:
                    nodes.append(self.free[view.name])
            static = self._aggregate(counts)
            if not views:
                static = self._no_nodes(job, in_partition)
            group = self.groups.setdefault((tuple(n.name for n in nodes), tuple(static)), len(self.groups))
            self.eligibility[key] = (nodes, static, group)
        return self.eligibility[key]

    @staticmethod
    def _no_nodes(job: JobRequest, in_partition: list) -> list[Reason]:
        """Why no node is eligible: the features no node of the partition has (all the job needs
        when each is on some node but none has them all), else an empty partition."""
        if job.needs:
            missing = sorted(f for f in job.needs if not any(f in v.features for v in in_partition))
            return [Reason.of(NODE_FEATURE_MISSING, feature=f, partition=job.partition)
                    for f in missing or sorted(job.needs)]
        return [Reason.of(PARTITION_EMPTY, partition=job.partition) if job.partition else Reason(NO_NODES)]

    def _never_fits(self, job: JobRequest, key: tuple, eligible: list[NodeFree],
                    static: list[Reason]) -> list[Reason]:
        """Reasons the job cannot start even on idle nodes; such jobs block nobody."""
        if key not in self.never:
            if not valid_gpu_request(job.gpu_milli):
                self.never[key] = [Reason.of(INVALID_GPU_REQUEST, gpu_milli=job.gpu_milli)]
            elif job.nodes < 1:
                self.never[key] = [Reason.of(INVALID_GANG_SIZE, parts=job.nodes)]
            else:
                counts: Counter = Counter()
                hosts = 0
                for node in eligible:
                    reasons = reasons_unfit(self.idle[node.name], job)
                    for reason in reasons:
                        counts[reason] += 1
                    hosts += not reasons
                reasons = []
                if hosts < job.nodes:
                    reasons = static + self._aggregate(counts, when_idle=True)
                    if job.nodes > 1:
                        reasons.append(Reason.of(GANG_SHORT, parts=job.nodes, nodes=hosts, when_idle=True))
                self.never[key] = reasons
        return self.never[key]

    def _ends_before(self, job: JobRequest, reservation: _Reservation) -> bool:
        return (job.time_limit_s is not None
                and self.state.now + job.time_limit_s <= reservation.start_at)

    def _try_place(self, job: JobRequest, eligible: list[NodeFree], guarded: tuple):
        """(parts, None) when the job fits now, else (None, reasons)."""
        counts: Counter = Counter()
        waiting_for = None
        fits: list[tuple[NodeFree, tuple[int, ...]]] = []
        first_fit = self.policy.node_choice == "first"
        for node in eligible:
            reasons = reasons_unfit(node, job)
            if reasons:
                for reason in reasons:
                    counts[reason] += 1
                continue
            gpus = pick_gpus(node, job.gpu_milli, self.policy.smart_gpus)
            blocker = next((r for r in guarded if not self._leaves_room(node, job, gpus, r)), None)
            if blocker is not None:
                counts[DELAYS_RESERVATION] += 1
                waiting_for = waiting_for or blocker
                continue
            fits.append((node, gpus))
            if first_fit and len(fits) == job.nodes:
                break
        if len(fits) >= job.nodes:
            return tuple(make_part(node, job, gpus) for node, gpus in self._choose(job, fits)), None
        waiting = counts.pop(DELAYS_RESERVATION, 0)
        reasons = self._aggregate(counts, when_idle=False)
        if waiting:
            reasons.append(Reason.of(DELAYS_RESERVATION, job=waiting_for.job.job_id, nodes=waiting))
        if fits:
            reasons.append(Reason.of(GANG_SHORT, parts=job.nodes, nodes=len(fits), when_idle=False))
        return None, reasons

    def _choose(self, job: JobRequest, fits: list[tuple[NodeFree, tuple[int, ...]]]):
        """The `job.nodes` best fitting nodes, best first (the gang master goes to the best)."""
        if self.policy.node_choice == "pack":
            fits = sorted(fits, key=lambda f: tuple(-s for s in score(f[0], job, f[1], self._end(job))) + (f[0].name,))
        elif self.policy.node_choice == "spread":
            fits = sorted(fits, key=lambda f: (f[0].allocated_fraction(), f[0].name))
        return fits[:job.nodes]

    def _leaves_room(self, node: NodeFree, job: JobRequest, gpus: tuple[int, ...],
                    reservation: _Reservation) -> bool:
        """Whether the reserved job's part still fits on `node` at its start if `job` runs past it."""
        shadow = reservation.shadows.get(node.name)
        if shadow is None:
            return True
        part = make_part(node, job, gpus)
        held = reservation.holds.get(node.name)
        if held:
            shadow = shadow.copy()
            shadow.take(part)
            return _take_held(shadow, held) and not reasons_unfit(shadow, reservation.job)
        shadow.take(part)
        room = not reasons_unfit(shadow, reservation.job)
        shadow.take(part, -1)
        return room

    def _occupy(self, parts: tuple[AllocatedPart, ...], end: float) -> None:
        for part in parts:
            node = self.free.get(part.node)
            if node is not None:  # a part on a node that left the cluster frees nothing
                node.take(part)
                node.drain_at = max(node.drain_at, end)

    def _end(self, job: JobRequest) -> float:
        return self.state.now + job.time_limit_s if job.time_limit_s is not None else math.inf

    def _commit(self, job: JobRequest, parts: tuple[AllocatedPart, ...]) -> None:
        self._occupy(parts, self._end(job))
        self._hold(job.tenant, parts)
        self.placements.append(Placement(job.job_id, parts))
        self.generation += 1
        self.ends.append((self._end(job), job.job_id, parts))
        for r in self.reservations:
            if not self._ends_before(job, r):
                for part in parts:
                    if part.node in r.shadows:
                        r.shadows[part.node].take(part)

    def _reserve(self, job: JobRequest, eligible: list[NodeFree]) -> Reason:
        """Reserve the earliest time and nodes the job fits, releasing jobs as their limits end.

        Earlier reservations hold their parts on their nodes from now until their own end (start
        plus time limit), so a later reservation never takes what an earlier one will use."""
        future = {node.name: node.copy() for node in eligible}
        holds: dict[str, list[tuple[float, AllocatedPart]]] = {}
        lifts = []
        for r in self.reservations:
            end = r.start_at + r.job.time_limit_s if r.job.time_limit_s is not None else math.inf
            lifts.append(end)
            for name, node in r.shadows.items():
                if name in future:
                    holds.setdefault(name, []).append((end, make_part(node, r.job, ())))

        def held_at(name: str, t: float) -> list[AllocatedPart]:
            return [part for end, part in holds.get(name, ()) if end > t]

        def fits(name: str, t: float) -> bool:
            held = held_at(name, t)
            node = future[name]
            if held:
                node = node.copy()
                if not _take_held(node, held):
                    return False
            return not reasons_unfit(node, job)

        start_at = self.state.now
        fitting = {name for name in future if fits(name, start_at)}
        events = sorted(list(self.ends) + [(end, -1, ()) for end in lifts if end < math.inf],
                        key=lambda e: (e[0], e[1]))
        i = 0
        while len(fitting) < job.nodes and i < len(events):
            start_at = events[i][0]
            touched = set()
            while i < len(events) and events[i][0] == start_at:
                if events[i][1] == -1:
                    touched.update(holds)
                for part in events[i][2]:
                    if part.node in future:
                        future[part.node].take(part, -1)
                        touched.add(part.node)
                i += 1
            fitting.update(name for name in touched if name in future and fits(name, start_at))
        fits_at = [(future[name], pick_gpus(future[name], job.gpu_milli, self.policy.smart_gpus))
                   for name in sorted(fitting)]
        shadows = {node.name: node for node, _ in self._choose(job, fits_at)}
        if len(fitting) < job.nodes:
            start_at = math.inf
        new = _Reservation(job, start_at, shadows, {name: held_at(name, start_at) for name in shadows
                                                    if held_at(name, start_at)})
        # A new reservation that starts before an earlier one and runs into it is held in the
        # earlier one's shadow, so backfill checks against the earlier one see it.
        end_new = start_at + job.time_limit_s if job.time_limit_s is not None else math.inf
        for r in self.reservations:
            if start_at < r.start_at < end_new:
                for name, node in shadows.items():
                    if name in r.shadows:
                        r.holds.setdefault(name, []).append(make_part(node, job, ()))
        self.reservations.append(new)
        return Reason.of(RESERVED, node_names=tuple(shadows),
                         start_in_s=None if start_at == math.inf else start_at - self.state.now)


def _take_held(node: NodeFree, parts: list[AllocatedPart]) -> bool:
    """Take reserved parts that have no GPU indices yet from a scratch copy of a node: whole GPUs
    from the untouched ones, shares best fit. False when they do not all fit."""
    for part in parts:
        node.cpu_milli -= part.cpu_milli
        node.memory_mib -= part.memory_mib
        if node.cpu_milli < 0 or node.memory_mib < 0:
            return False
        if part.gpu_milli >= WHOLE_GPU:
            k = part.gpu_milli // WHOLE_GPU
            free = sorted(i for i, v in node.gpu_free.items() if v == WHOLE_GPU)
            if len(free) < k:
                return False
            for idx in free[:k]:
                node.gpu_free[idx] = 0
        elif part.gpu_milli:
            fit = [i for i, v in node.gpu_free.items() if v >= part.gpu_milli]
            if not fit:
                return False
            idx = min(fit, key=lambda i: (node.gpu_free[i], i))
            node.gpu_free[idx] -= part.gpu_milli
    node.refresh()
    return True
