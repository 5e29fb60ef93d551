"""Plain, frozen inputs and outputs of the placement core.

Everything the core knows arrives in these dataclasses; nothing else is read. Units are integers
so that sums are exact: CPU in milli-cores, memory in MiB, GPU in milli-GPUs (1000 = one whole GPU).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Pending:
    job_id: int
    position: int  # 1-based place in the queue order
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    placements: tuple[Placement, ...] = ()
    reservations: tuple[Reservation, ...] = ()
    pending: tuple[Pending, ...] = ()
