"""Per-node feasibility, node scoring and GPU choice.

`NodeFree` is the planner's scratch copy of one node's free capacity. It is mutable on purpose:
a planning pass places hundreds of jobs and copying frozen records per placement would dominate
the run time. It never leaves the pass; the public inputs and outputs stay frozen.
"""
from __future__ import annotations

from dataclasses import dataclass

from kqi.scheduler.model import (
    INSUFFICIENT_CPU,
    INSUFFICIENT_GPU_SHARE,
    INSUFFICIENT_GPUS,
    INSUFFICIENT_MEMORY,
    INVALID_GPU_REQUEST,
    WHOLE_GPU,
    AllocatedPart,
    JobRequest,
    NodeView,
)


def is_share(gpu_milli: int) -> bool:
    return 0 < gpu_milli < WHOLE_GPU


def whole_gpus(gpu_milli: int) -> int:
    return gpu_milli // WHOLE_GPU if gpu_milli >= WHOLE_GPU else 0


def valid_gpu_request(gpu_milli: int) -> bool:
    return gpu_milli >= 0 and (gpu_milli < WHOLE_GPU or gpu_milli % WHOLE_GPU == 0)


@dataclass
class NodeFree:
    """Free capacity of one node, plus summaries kept in step so that a fit check is O(1)."""

    name: str
    cpu_capacity: int
    memory_capacity: int
    cpu_milli: int
    memory_mib: int
    gpu_free: dict[int, int]  # usable (not busy) GPU index -> free milli
    gpu_group: dict[int, int]
    whole_free: int = 0  # GPUs with nothing on them
    max_gpu_free: int = 0  # the largest free amount on one GPU: the biggest share that fits
    drain_at: float = 0.0  # when the last job on it reaches its time limit (inf: never known)

    @classmethod
    def of(cls, node: NodeView) -> NodeFree:
        usable = [g for g in node.gpus if not g.busy]
        free = cls(node.name, node.cpu_milli, node.memory_mib, node.cpu_milli, node.memory_mib,
                   {g.index: WHOLE_GPU for g in usable}, {g.index: g.group for g in usable})
        free.refresh()
        return free

    def copy(self) -> NodeFree:
        return NodeFree(self.name, self.cpu_capacity, self.memory_capacity, self.cpu_milli,
                        self.memory_mib, dict(self.gpu_free), self.gpu_group,
                        self.whole_free, self.max_gpu_free, self.drain_at)

    def refresh(self) -> None:
        values = self.gpu_free.values()
        self.whole_free = sum(1 for v in values if v == WHOLE_GPU)
        self.max_gpu_free = max(values, default=0)

    def take(self, part: AllocatedPart, sign: int = 1) -> None:
        """Subtract a part (sign=1) or give it back (sign=-1); refuses to go negative."""
        self.cpu_milli -= sign * part.cpu_milli
        self.memory_mib -= sign * part.memory_mib
        per_gpu = part.gpu_milli // len(part.gpu_indices) if part.gpu_indices else 0
        for index in part.gpu_indices:
            if index in self.gpu_free:  # a busy GPU is not ours to count
                self.gpu_free[index] -= sign * per_gpu
        self.refresh()
        if self.cpu_milli < 0 or self.memory_mib < 0 or any(v < 0 for v in self.gpu_free.values()):
            raise ValueError(f"node {self.name} over-allocated: cpu {self.cpu_milli}, "
                             f"memory {self.memory_mib}, gpus {self.gpu_free}")

    def gpu_capacity(self) -> int:
        return WHOLE_GPU * len(self.gpu_free)

    def allocated_fraction(self) -> float:
        """Mean of the used fractions of cpu, memory and GPUs (GPU-less nodes count cpu+memory)."""
        parts = [1 - self.cpu_milli / self.cpu_capacity if self.cpu_capacity else 1.0,
                 1 - self.memory_mib / self.memory_capacity if self.memory_capacity else 1.0]
        if self.gpu_free:
            parts.append(1 - sum(self.gpu_free.values()) / self.gpu_capacity())
        return sum(parts) / len(parts)


def reasons_unfit(node: NodeFree, req: JobRequest) -> list[str]:
    """Every reason one part of `req` does not fit in `node` now, as reason codes (the planner
    counts them over nodes); empty when it fits."""
    reasons = []
    if req.cpu_milli > node.cpu_milli:
        reasons.append(INSUFFICIENT_CPU)
    if req.memory_mib > node.memory_mib:
        reasons.append(INSUFFICIENT_MEMORY)
    gpu = req.gpu_milli
    if not valid_gpu_request(gpu):
        reasons.append(INVALID_GPU_REQUEST)
    elif is_share(gpu):
        if node.max_gpu_free < gpu:
            reasons.append(INSUFFICIENT_GPU_SHARE)
    elif node.whole_free < whole_gpus(gpu):
        reasons.append(INSUFFICIENT_GPUS)
    return reasons


def pick_gpus(node: NodeFree, gpu_milli: int, smart: bool) -> tuple[int, ...]:
    """GPU indices for one part that fits (callers check `reasons_unfit` first).

    smart=False is textbook first fit: the lowest indices that fit.
    smart=True packs a share onto the fullest GPU it fits on (best fit), so that whole GPUs stay
    whole, and gives whole-GPU parts the tightest same-group, contiguous block, so that large
    blocks stay free for later multi-GPU jobs.
    """
    if gpu_milli == 0:
        return ()
    if is_share(gpu_milli):
        fits = [i for i, free in node.gpu_free.items() if free >= gpu_milli]
        if not smart:
            return (min(fits),)
        whole_in_group = _whole_per_group(node)
        # Fullest GPU first; among equals the group with the fewest whole GPUs left.
        return (min(fits, key=lambda i: (node.gpu_free[i], whole_in_group.get(node.gpu_group[i], 0), i)),)
    count = whole_gpus(gpu_milli)
    free = sorted(i for i, v in node.gpu_free.items() if v == WHOLE_GPU)
    if not smart:
        return tuple(free[:count])
    groups: dict[int, list[int]] = {}
    for i in free:
        groups.setdefault(node.gpu_group[i], []).append(i)
    hosting = [g for g, members in groups.items() if len(members) >= count]
    if hosting:  # the smallest group that holds the whole part: best fit, big groups stay whole
        group = min(hosting, key=lambda g: (len(groups[g]), g))
        return _tightest_run(groups[group], count)
    # No group is large enough: fill the smallest groups first, leaving the large ones intact.
    chosen: list[int] = []
    for group in sorted(groups, key=lambda g: (len(groups[g]), g)):
        chosen.extend(groups[group][:count - len(chosen)])
        if len(chosen) == count:
            break
    return tuple(sorted(chosen))


def _whole_per_group(node: NodeFree) -> dict[int, int]:
    counts: dict[int, int] = {}
    for i, v in node.gpu_free.items():
        if v == WHOLE_GPU:
            counts[node.gpu_group[i]] = counts.get(node.gpu_group[i], 0) + 1
    return counts


def _tightest_run(indices: list[int], count: int) -> tuple[int, ...]:
    """`count` indices from the shortest run of consecutive indices that holds them."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    fitting = [r for r in runs if len(r) >= count]
    if not fitting:
        return tuple(indices[:count])
    return tuple(min(fitting, key=lambda r: (len(r), r[0]))[:count])


def score(node: NodeFree, req: JobRequest, gpus: tuple[int, ...], end: float) -> tuple[float, ...]:
    """MostAllocated-style score of placing one part of `req` on `gpus` of `node`; higher is better.

    1. a share prefers the GPU it fills the most (least free left over on that GPU);
    2. then the node whose GPUs end up the most used: whole-GPU parts go where few whole GPUs
       remain, keeping empty nodes for 8-GPU jobs, and CPU-only work goes to GPU-less or
       GPU-busy nodes (a GPU-less node counts as fully GPU-allocated) so it does not strand GPUs;
    3. then the most used cpu and memory.
    """
    leftover = node.gpu_free[gpus[0]] - req.gpu_milli if is_share(req.gpu_milli) else 0
    if node.gpu_free:
        capacity = node.gpu_capacity()
        gpu_after = (capacity - sum(node.gpu_free.values()) + req.gpu_milli) / capacity
    else:
        gpu_after = 1.0
    cpu_after = 1 - (node.cpu_milli - req.cpu_milli) / node.cpu_capacity if node.cpu_capacity else 1.0
    memory_after = (1 - (node.memory_mib - req.memory_mib) / node.memory_capacity
                    if node.memory_capacity else 1.0)
    extension = 0.0 if end <= node.drain_at else end - node.drain_at
    return (-leftover / WHOLE_GPU, -extension, gpu_after, (cpu_after + memory_after) / 2)


def make_part(node: NodeFree, req: JobRequest, gpus: tuple[int, ...]) -> AllocatedPart:
    return AllocatedPart(node=node.name, cpu_milli=req.cpu_milli, memory_mib=req.memory_mib,
                         gpu_indices=gpus, gpu_milli=req.gpu_milli)
