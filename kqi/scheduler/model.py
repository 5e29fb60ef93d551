"""Plain, frozen inputs and outputs of the placement core.

Everything the core knows arrives in these dataclasses; nothing else is read. Units are integers
so that sums are exact: CPU in milli-cores, memory in MiB, GPU in milli-GPUs (1000 = one whole GPU).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

WHOLE_GPU = 1000


@dataclass(frozen=True)
class GpuView:
    index: int
    model: str = ""
    group: int = 0  # topology group (NVLink island / PCIe switch); GPUs in one group are linked
    busy: bool = False  # used by a process kqi did not start: never scheduled


@dataclass(frozen=True)
class NodeView:
    name: str
    cpu_milli: int  # capacity
    memory_mib: int  # capacity
    gpus: tuple[GpuView, ...] = ()
    labels: frozenset[str] = frozenset()  # partitions, e.g. the GPU model
    schedulable: bool = True  # False: draining, offline, disabled
    tenants: frozenset[str] | None = None  # None: public; else only these tenants may use it
    features: frozenset[str] = frozenset()  # what the node allows beyond plain jobs (a kind's name)


@dataclass(frozen=True)
class JobRequest:
    """One queued job. Resources are per part; a gang job has `nodes` parts."""

    job_id: int
    tenant: str
    submit_time: float
    cpu_milli: int
    memory_mib: int
    gpu_milli: int = 0  # < 1000: a share of one GPU; otherwise a multiple of 1000 (whole GPUs)
    partition: str | None = None
    priority: int = 0  # higher runs first
    time_limit_s: float | None = None
    nodes: int = 1  # gang: all parts start together or none do
    needs: frozenset[str] = frozenset()  # node features every node of the job must have


@dataclass(frozen=True)
class AllocatedPart:
    node: str
    cpu_milli: int
    memory_mib: int
    gpu_indices: tuple[int, ...] = ()
    gpu_milli: int = 0  # total for this part: 250 on one index = a quarter share


@dataclass(frozen=True)
class RunningJob:
    job_id: int
    tenant: str
    parts: tuple[AllocatedPart, ...]
    started_at: float
    time_limit_s: float | None = None  # None: runs until it ends (no known end for backfill)
    priority: int = 0


@dataclass(frozen=True)
class Quota:
    cpu_milli: int | None = None  # None: unlimited
    memory_mib: int | None = None
    gpu_milli: int | None = None


@dataclass(frozen=True)
class ClusterState:
    now: float
    nodes: tuple[NodeView, ...]
    running: tuple[RunningJob, ...]
    queue: tuple[JobRequest, ...]
    quotas: Mapping[str, Quota] = field(default_factory=dict)
    usage: Mapping[str, float] = field(default_factory=dict)  # decayed recent use per tenant


@dataclass(frozen=True)
class Placement:
    job_id: int
    parts: tuple[AllocatedPart, ...]  # in rank order; parts[0] is the gang master


@dataclass(frozen=True)
class Reservation:
    job_id: int
    start_at: float
    nodes: tuple[str, ...]


# Why a job waits: Reason.code is one of these, with the params CODES lists. Resources are in the
# core's units (cpu_milli, memory_mib, gpu_milli); kqi/scheduler/reasons.py words them.
# Per-node reasons, counted over the nodes that could hold the job; when_idle: counted over those
# nodes as if nothing ran there, so the job will never fit on them:
INSUFFICIENT_CPU = "insufficient_cpu"
INSUFFICIENT_MEMORY = "insufficient_memory"
INSUFFICIENT_GPUS = "insufficient_gpus"  # whole GPUs
INSUFFICIENT_GPU_SHARE = "insufficient_gpu_share"  # no single GPU with that much free
NODE_UNSCHEDULABLE = "node_unschedulable"  # draining, offline or disabled
TENANT_NOT_ALLOWED = "tenant_not_allowed"  # the node is closed to the job's tenant
# Per-job reasons:
INVALID_GPU_REQUEST = "invalid_gpu_request"  # neither a share below 1000 nor whole GPUs
INVALID_GANG_SIZE = "invalid_gang_size"
GANG_SHORT = "gang_short"  # fewer nodes than parts can hold one part
NO_NODES = "no_nodes"  # the cluster has none
PARTITION_EMPTY = "partition_empty"
NODE_FEATURE_MISSING = "node_feature_missing"  # no node (of the partition; None: of any) has the feature
QUOTA = "quota"  # the tenant's use plus the job (all its parts) is over its limit of that resource
RESERVED = "reserved"  # this job holds a reservation; start_in_s None: unknown (a running job has no limit)
DELAYS_RESERVATION = "delays_reservation"  # it fits now only on nodes where it would delay that job
BLOCKED_BEHIND = "blocked_behind"  # fifo and spread stop at the first blocked job
CODES: dict[str, tuple[str, ...]] = {  # code -> the names of its params
    INSUFFICIENT_CPU: ("nodes", "when_idle"),
    INSUFFICIENT_MEMORY: ("nodes", "when_idle"),
    INSUFFICIENT_GPUS: ("nodes", "when_idle"),
    INSUFFICIENT_GPU_SHARE: ("nodes", "when_idle"),
    NODE_UNSCHEDULABLE: ("nodes",),
    TENANT_NOT_ALLOWED: ("nodes",),
    INVALID_GPU_REQUEST: ("gpu_milli",),
    INVALID_GANG_SIZE: ("parts",),
    GANG_SHORT: ("nodes", "parts", "when_idle"),
    NO_NODES: (),
    PARTITION_EMPTY: ("partition",),
    NODE_FEATURE_MISSING: ("feature", "partition"),
    QUOTA: ("asked", "limit", "resource", "used"),  # resource: "cpu_milli", "memory_mib" or "gpu_milli"
    RESERVED: ("node_names", "start_in_s"),
    DELAYS_RESERVATION: ("job", "nodes"),
    BLOCKED_BEHIND: ("job",),
}
# Per-node reasons with equal counts are listed in this order (their words' alphabetical order).
PER_NODE_ORDER = (INSUFFICIENT_CPU, INSUFFICIENT_GPUS, INSUFFICIENT_MEMORY, INSUFFICIENT_GPU_SHARE,
                  TENANT_NOT_ALLOWED, NODE_UNSCHEDULABLE)


@dataclass(frozen=True)
class Reason:
    """One reason a job waits: a code and its parameters, as (name, value) pairs sorted by name so
    that equal reasons compare and hash equal however they were built. Values are None, bools,
    numbers, strings or tuples of strings."""

    code: str
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, code: str, **params: Any) -> Reason:
        return cls(code, tuple(sorted(params.items())))


@dataclass(frozen=True)
class Pending:
    job_id: int
    position: int  # 1-based place in the queue order
    reasons: tuple[Reason, ...]


@dataclass(frozen=True)
class Plan:
    placements: tuple[Placement, ...] = ()
    reservations: tuple[Reservation, ...] = ()
    pending: tuple[Pending, ...] = ()
